// Gallery: keyboard focus over the cards and review actions on the focused card.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const cards = () => Array.from(document.querySelectorAll("#grid .card"));
  const body = document.body;

  function focusCard(i) {
    const all = cards();
    if (!all.length) return;
    i = Math.max(0, Math.min(all.length - 1, i));
    all.forEach((c) => c.classList.remove("focused"));
    all[i].classList.add("focused");
    all[i].focus({preventScroll: true});
    all[i].scrollIntoView({block: "nearest"});
  }
  const current = () => {
    const all = cards();
    const i = all.findIndex((c) => c.classList.contains("focused"));
    return i < 0 ? 0 : i;
  };
  function columns() {
    const all = cards();
    if (all.length < 2) return 1;
    const top = all[0].offsetTop;
    const n = all.findIndex((c) => c.offsetTop !== top);
    return n < 0 ? all.length : n;
  }
  function render(card, pair) {
    card.className = card.className.replace(/\bst-\w+/, `st-${pair.status}`);
    card.classList.toggle("excluded", !!pair.excluded);
    const status = card.querySelector('[data-role="status"]');
    status.textContent = pair.status;
    status.className = `badge st-${pair.status}`;
    let ex = card.querySelector('[data-role="excluded"]');
    if (pair.excluded && !ex) {
      ex = document.createElement("span");
      ex.dataset.role = "excluded";
      ex.className = "badge excl";
      status.after(ex);
    }
    if (ex) {
      if (pair.excluded) { ex.textContent = pair.blacklisted ? "blacklisted" : "excluded"; ex.title = pair.excluded; }
      else ex.remove();
    }
    const img = card.querySelector("img");
    img.src = img.src.replace(/\?v=.*$/, `?v=${pair.version}`);
  }
  async function run(action, extra) {
    const all = cards();
    if (!all.length) return;
    const i = current();
    const card = all[i];
    const pid = card.dataset.pid;
    const data = await gasdb.act(pid, action, extra);
    render(card, data.pair);
    gasdb.updateCounts(data.counts);
    gasdb.flash(`${pid}: ${action === "blacklist" ? "blacklisted" : action + "d"}`);
    if (action !== "unblacklist") focusCard(i + 1);
  }

  document.addEventListener("keydown", async (ev) => {
    if (gasdb.typing(ev)) return;
    const i = current();
    const k = ev.key;
    try {
      if (k === "ArrowRight" || k === "j") { focusCard(i + 1); ev.preventDefault(); }
      else if (k === "ArrowLeft" || k === "k") { focusCard(i - 1); ev.preventDefault(); }
      else if (k === "ArrowDown") { focusCard(i + columns()); ev.preventDefault(); }
      else if (k === "ArrowUp") { focusCard(i - columns()); ev.preventDefault(); }
      else if (k === "Enter" || k === "o") { const c = cards()[i]; if (c) { ev.preventDefault(); location.href = c.href; } }
      else if (k === "a") { ev.preventDefault(); await run("approve"); }
      else if (k === "r") {
        ev.preventDefault();
        const note = await gasdb.ask("Reject: what should the annotator fix?");
        if (note) await run("reject", {note});
      } else if (k === "b") {
        ev.preventDefault();
        const reason = await gasdb.ask("Blacklist: why is this pair kept out of the dataset?");
        if (reason) await run("blacklist", {reason});
      } else if (k === "u") { ev.preventDefault(); await run("unblacklist"); }
      else if (k === "n") { const a = document.getElementById("next-page"); if (a) location.href = a.href; }
      else if (k === "p") { const a = document.getElementById("prev-page"); if (a) location.href = a.href; }
    } catch (e) { /* shown by gasdb.act */ }
  });
  for (const sel of document.querySelectorAll("#filters select")) {
    sel.addEventListener("change", () => document.getElementById("filters").submit());
  }
  const wanted = location.hash.startsWith("#card-") ? document.getElementById(location.hash.slice(1)) : null;
  focusCard(wanted ? cards().indexOf(wanted) : 0);
  body.dataset.ready = "1";
});
