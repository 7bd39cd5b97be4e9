// Shared by every page: JSON POSTs with the CSRF token, the reviewer name, the question dialog.
"use strict";
const gasdb = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const who = () => document.getElementById("reviewer");

  function flash(text, isError) {
    const el = document.getElementById("flash");
    el.textContent = text;
    el.className = isError ? "error" : "";
  }

  async function act(pid, action, extra) {
    const body = Object.assign({}, extra || {});
    const name = (who().value || "").trim();
    if (name) body.by = name;
    const resp = await fetch(`/api/pair/${encodeURIComponent(pid)}/${action}`, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await resp.json(); } catch (e) { data = {error: `HTTP ${resp.status}`}; }
    if (!resp.ok || data.error) {
      flash(`${pid}: ${data.error || "HTTP " + resp.status}`, true);
      throw new Error(data.error || `HTTP ${resp.status}`);
    }
    return data;
  }

  // Ask for a short text (a reason, a note) in the page's dialog; resolves to the text or null.
  function ask(label, initial) {
    const dlg = document.getElementById("ask");
    const input = document.getElementById("ask-input");
    document.getElementById("ask-label").textContent = label;
    input.value = initial || "";
    return new Promise((resolve) => {
      dlg.addEventListener("close", () => {
        resolve(dlg.returnValue === "ok" && input.value.trim() ? input.value.trim() : null);
      }, {once: true});
      dlg.returnValue = "";
      dlg.showModal();
      input.focus();
    });
  }

  function updateCounts(counts) {
    if (!counts) return;
    for (const el of document.querySelectorAll("#counts .count")) {
      const key = el.dataset.status;
      if (key in counts) el.querySelector("b").textContent = counts[key];
    }
  }

  function typing(ev) {
    const t = ev.target;
    return ev.ctrlKey || ev.metaKey || ev.altKey || (t && (t.tagName === "INPUT" || t.tagName === "SELECT" ||
      t.tagName === "TEXTAREA")) || document.getElementById("ask").open;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const el = who();
    el.value = localStorage.getItem("gasdb-reviewer") || "";
    el.addEventListener("change", () => localStorage.setItem("gasdb-reviewer", el.value.trim()));
  });
  return {act, ask, flash, updateCounts, typing};
})();
