// Progressive touches; every page works without them.
"use strict";

// Regions marked data-refresh="N" reload themselves every N seconds while
// the tab is visible, replaced in place so focus and scroll stay put.
document.querySelectorAll("[data-refresh]").forEach(function (region) {
  var seconds = Number(region.getAttribute("data-refresh")) || 10;
  function refresh() {
    if (document.hidden) { return schedule(); }
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.redirected) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (!html) { return schedule(); }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(region.id);
        if (fresh) {
          region.innerHTML = fresh.innerHTML;
          if (!fresh.hasAttribute("data-refresh")) { return; }
        }
        schedule();
      })
      .catch(schedule);
  }
  function schedule() { window.setTimeout(refresh, seconds * 1000); }
  schedule();
});

// A purge button stays disabled until the confirmation is typed exactly;
// the server checks it again.
document.querySelectorAll("input[data-confirm]").forEach(function (input) {
  var button = input.form && input.form.querySelector("button[type=submit]");
  if (!button) { return; }
  function check() { button.disabled = input.value.trim() !== input.getAttribute("data-confirm"); }
  input.addEventListener("input", check);
  check();
});
