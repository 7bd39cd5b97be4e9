// Pair view: view modes, overlay opacity and boundary, review actions from keys and buttons.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const body = document.body;
  const pid = body.dataset.pid;
  const stage = document.getElementById("stage");
  const views = Array.from(stage.querySelectorAll(".gasdb-view"));
  const opacity = document.getElementById("opacity");
  const masks = () => stage.querySelectorAll(".gasdb-layer.mask");
  let shown = views.length - 1;

  function setOpacity() { for (const m of masks()) m.style.opacity = String(opacity.value / 100); }
  function setMode(mode) {
    stage.className = stage.className.replace(/\bmode-\w+/, `mode-${mode}`);
    for (const r of document.querySelectorAll('input[name="mode"]')) r.checked = r.value === mode;
    show(shown);
  }
  function show(i) {
    shown = (i + views.length) % views.length;
    views.forEach((v, j) => v.classList.toggle("shown", j === shown));
  }
  function go(which) {
    const a = document.getElementById(which);
    if (a && a.getAttribute("href")) location.href = a.href;
    return !!(a && a.getAttribute("href"));
  }
  function after(data, action) {
    gasdb.flash(`${pid}: ${action === "blacklist" ? "blacklisted" : action + "d"}`);
    if ((action === "approve" || action === "reject") && go("next")) return;
    location.reload();
  }
  async function run(action, extra) {
    const data = await gasdb.act(pid, action, extra);
    after(data, action);
  }
  const actions = {
    approve: () => run("approve"),
    reject: async () => { const note = await gasdb.ask("Reject: what should the annotator fix?"); if (note) await run("reject", {note}); },
    blacklist: async () => { const reason = await gasdb.ask("Blacklist: why is this pair kept out of the dataset?"); if (reason) await run("blacklist", {reason}); },
    unblacklist: () => run("unblacklist"),
    labelme: async () => {
      const data = await gasdb.act(pid, "labelme", {});
      const el = document.getElementById("labelme-cmd");
      el.hidden = false;
      el.textContent = (data.ok ? "LabelMe started: " : (data.error || "") + ": ") + (data.command || []).join(" ");
      gasdb.flash(data.ok ? "LabelMe started" : data.error, !data.ok);
    },
  };
  for (const [name, fn] of Object.entries(actions)) {
    document.getElementById(name).addEventListener("click", () => fn().catch(() => {}));
  }
  const base = document.getElementById("overlay-base");
  base.addEventListener("change", () => {
    const img = stage.querySelector('.gasdb-view[data-kind="overlay"] img.gasdb-base');
    img.src = img.src.replace(/\/img\/\w+\//, `/img/${base.value}/`);
    const label = stage.querySelector('.gasdb-view[data-kind="overlay"] figcaption');
    label.textContent = label.textContent.replace(/over \w+$/, `over ${base.value}`);
  });
  opacity.addEventListener("input", setOpacity);
  document.getElementById("show-boundary").addEventListener("change", (ev) => {
    stage.classList.toggle("no-boundary", !ev.target.checked);
  });
  for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener("change", () => setMode(r.value));
  document.addEventListener("keydown", (ev) => {
    if (gasdb.typing(ev)) return;
    const k = ev.key;
    const keys = {a: "approve", r: "reject", b: "blacklist", u: "unblacklist", l: "labelme"};
    if (keys[k]) { ev.preventDefault(); actions[keys[k]]().catch(() => {}); }
    else if (k === "ArrowRight" || k === "n") { ev.preventDefault(); go("next"); }
    else if (k === "ArrowLeft" || k === "p") { ev.preventDefault(); go("prev"); }
    else if (k === "g" || k === "Escape") { ev.preventDefault(); go("back"); }
    else if (k === "v") { setMode(stage.classList.contains("mode-side") ? "toggle" : "side"); }
    else if (/^[1-9]$/.test(k) && Number(k) <= views.length) { setMode("toggle"); show(Number(k) - 1); }
    else if (k === "[" || k === "]") { opacity.value = Number(opacity.value) + (k === "]" ? 10 : -10); setOpacity(); }
  });
  setOpacity();
  show(shown);
  body.dataset.ready = "1";
});
