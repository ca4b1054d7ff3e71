"""The stylesheet and script inlined into every HTML report (no network: no web fonts, no
external script or style)."""

from __future__ import annotations

CSS = """
:root { color-scheme: light; --ink: #1b1f23; --muted: #57606a; --line: #d0d7de;
  --bg: #ffffff; --panel: #f6f8fa; --crashed: #b71c1c; --hung: #e65100; --failed: #6a1b9a;
  --latent: #546e7a; --ok: #1b5e20; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans",
  "Liberation Sans", Arial, sans-serif; color: var(--ink); background: var(--bg); }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo,
  Consolas, monospace; font-size: 13px; }
header, main, footer { max-width: 1180px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; }
h1 { font-size: 26px; margin: 8px 0; }
h2 { font-size: 20px; margin: 28px 0 10px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 0 0 6px; }
a { color: #0550ae; }
a:focus, button:focus, summary:focus, .rc-edge-link:focus { outline: 3px solid #0969da;
  outline-offset: 2px; }
.skip { position: absolute; left: -9999px; }
.skip:focus { left: 12px; top: 8px; background: #fff; padding: 6px; z-index: 2; }
nav ul { list-style: none; display: flex; flex-wrap: wrap; gap: 14px; padding: 0; margin: 6px 0; }
.facts { display: flex; flex-wrap: wrap; gap: 8px 22px; color: var(--muted); margin: 0; }
.facts div { display: flex; gap: 6px; }
.facts dt { font-weight: 600; }
.facts dd { margin: 0; }
.map-wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px;
  background: var(--panel); }
.rc-map { display: block; }
.rc-dist-box { fill: #ffffff; stroke: #8c959f; }
.rc-dist-name { font-weight: 700; font-size: 14px; fill: var(--ink); }
.rc-copy-box { fill: #eef2f6; stroke: #c9d1d9; }
.rc-fam-openmp { fill: #e3f2fd; } .rc-fam-blas { fill: #e8f5e9; }
.rc-fam-libstdcxx, .rc-fam-libstdc\\+\\+ { fill: #fff3e0; } .rc-fam-none { fill: #f3e5f5; }
.rc-copy-name { font: 12px ui-monospace, "DejaVu Sans Mono", monospace; fill: var(--ink); }
.rc-copy-kind, .rc-legend, .rc-label-mode { font-size: 12px; fill: var(--muted); }
.rc-label-rule { font-size: 13px; font-weight: 700; }
.rc-badge { font-size: 11px; font-weight: 700; fill: #fff; }
.rc-edge-link:hover path, .rc-edge-link:focus path { stroke-width: 4.5; }
.cards { display: grid; gap: 16px; }
.card { border: 1px solid var(--line); border-left: 6px solid var(--crashed);
  border-radius: 8px; padding: 14px 16px; background: #fff; }
.card.hung { border-left-color: var(--hung); } .card.failed { border-left-color: var(--failed); }
.card.latent { border-left-color: var(--latent); }
.outcome { display: inline-block; padding: 0 8px; border-radius: 10px; color: #fff;
  font-size: 12px; font-weight: 700; background: var(--crashed); vertical-align: 2px; }
.outcome.hung { background: var(--hung); } .outcome.failed { background: var(--failed); }
.outcome.latent { background: var(--latent); }
.headline { margin: 6px 0; padding-left: 18px; }
.card dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px; margin: 8px 0; }
.card dt { font-weight: 600; color: var(--muted); }
.card dd { margin: 0; overflow-wrap: anywhere; }
.unsafe { color: var(--crashed); font-weight: 600; }
.verified { color: var(--ok); font-weight: 600; }
.notverified { color: var(--crashed); font-weight: 600; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: 10px; overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere;
  max-height: 420px; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
button { font: inherit; padding: 3px 12px; border: 1px solid #8c959f; border-radius: 6px;
  background: #fff; cursor: pointer; }
button:hover { background: var(--panel); }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--panel); }
.muted { color: var(--muted); }
footer { color: var(--muted); margin: 30px auto 20px; font-size: 13px; }
@media print {
  body { font-size: 11pt; }
  nav, button, .skip, #rc-data-section { display: none !important; }
  .map-wrap { border: none; background: none; overflow: visible; }
  .rc-map { max-width: 100%; height: auto; }
  .card { break-inside: avoid; border-left-width: 4px; }
  pre { max-height: none; white-space: pre-wrap; }
  a { color: inherit; text-decoration: none; }
  h2 { break-after: avoid; }
}
"""

# Copy buttons (clipboard API, with a selection fallback where it is unavailable, as on a
# file:// page in some browsers), printing with every folded section open, and the download of
# the embedded report as a JSON file (a Blob URL: no network).
SCRIPT = r"""
(function () {
  "use strict";
  var status = document.getElementById("rc-status");
  function say(text) { if (status) { status.textContent = text; } }
  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text; area.setAttribute("readonly", ""); area.style.position = "fixed";
    area.style.left = "-9999px"; document.body.appendChild(area); area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }
  function copy(button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) { return; }
    var text = target.textContent;
    var done = function () { say("Copied " + button.getAttribute("data-what") + "."); };
    var failed = function () {
      if (fallbackCopy(text)) { done(); } else { say("Copy failed: select the text and copy it."); }
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, failed);
    } else { failed(); }
  }
  var buttons = document.querySelectorAll("button[data-copy]");
  for (var i = 0; i < buttons.length; i++) {
    buttons[i].addEventListener("click", function (ev) { copy(ev.currentTarget); });
  }
  window.addEventListener("beforeprint", function () {
    var folded = document.querySelectorAll("details:not([open])");
    for (var j = 0; j < folded.length; j++) {
      folded[j].setAttribute("open", ""); folded[j].setAttribute("data-print-opened", "");
    }
  });
  window.addEventListener("afterprint", function () {
    var opened = document.querySelectorAll("details[data-print-opened]");
    for (var j = 0; j < opened.length; j++) {
      opened[j].removeAttribute("open"); opened[j].removeAttribute("data-print-opened");
    }
  });
  var data = null;
  try { data = JSON.parse(document.getElementById("rc-data").textContent); } catch (e) { data = null; }
  var info = document.getElementById("rc-data-info");
  var download = document.getElementById("rc-download");
  if (data && info) {
    info.textContent = "The report's data is embedded in this page: " +
      (data.scenarios || []).length + " run entries, schema " + data.schema + ".";
  }
  if (data && download) {
    download.hidden = false;
    download.addEventListener("click", function () {
      var blob = new Blob([JSON.stringify(data, null, 2)], {type: "application/json"});
      var link = document.createElement("a");
      link.href = URL.createObjectURL(blob); link.download = "runtime-conflicts.json";
      document.body.appendChild(link); link.click(); document.body.removeChild(link);
    });
  }
  document.documentElement.setAttribute("data-rc-script", data ? "ready" : "no-data");
})();
"""
