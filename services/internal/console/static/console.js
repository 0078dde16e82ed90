// infergate console: progressive enhancement only. Every page works
// without this script; it makes dialogs modal, fills the Copy buttons,
// keeps deployment statuses live and auto-submits the project switcher.
(function () {
  "use strict";

  // A page that shows a result of a POST (a key's secret, a receipt)
  // must not be re-posted by a reload: make the entry a plain GET of the
  // page's own address (data-url), which shows no secret.
  if (history.replaceState) {
    history.replaceState(null, "", document.body.getAttribute("data-url") || location.href);
  }

  // Dialogs the server rendered open become modal (focus trapped,
  // Escape closes them).
  document.querySelectorAll("dialog[data-modal][open]").forEach(function (d) {
    d.close();
    d.showModal();
    var f = d.querySelector("[autofocus]");
    if (f) f.focus();
  });
  document.querySelectorAll("dialog").forEach(function (d) {
    d.addEventListener("cancel", function (e) {
      var c = d.querySelector("[data-close]");
      if (c) { e.preventDefault(); location.href = c.href; }
    });
  });

  // After a refused submit, the cursor goes to the first field in error.
  var invalid = document.querySelector('dialog[open] [aria-invalid="true"], main [aria-invalid="true"]');
  if (invalid && invalid.focus) {
    var target = invalid.matches("fieldset") ? invalid.querySelector("input") : invalid;
    if (target) target.focus();
  }

  // Buttons that open a dialog on this page instead of loading it.
  document.querySelectorAll("[data-dialog]").forEach(function (a) {
    a.addEventListener("click", function (e) {
      var d = document.getElementById(a.getAttribute("data-dialog"));
      if (!d || !d.showModal) return;
      e.preventDefault();
      d.showModal();
      var f = d.querySelector("[autofocus]");
      if (f) f.focus();
    });
  });

  // Copy buttons.
  document.querySelectorAll("[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var el = document.getElementById(b.getAttribute("data-copy"));
      var text = el.value !== undefined ? el.value : el.textContent;
      var status = document.getElementById("copy-status");
      function done(ok) {
        b.textContent = ok ? "Copied" : "Copy";
        if (status) status.textContent = ok ? "Copied to the clipboard." : "Select the text and copy it (Ctrl+C).";
      }
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(text).then(function () { done(true); }, function () { fallback(); });
      } else {
        fallback();
      }
      function fallback() {
        if (el.select) { el.select(); } else {
          var r = document.createRange(); r.selectNodeContents(el);
          var s = getSelection(); s.removeAllRanges(); s.addRange(r);
        }
        var ok = false;
        try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
        done(ok);
      }
    });
  });

  // An error shown at a field goes once the field is edited.
  document.addEventListener("input", function (e) {
    var el = e.target.closest('[aria-invalid="true"]');
    if (!el) return;
    el.removeAttribute("aria-invalid");
    var err = document.getElementById(el.getAttribute("aria-describedby") || "");
    if (err && err.classList.contains("field-error")) err.hidden = true;
  });

  // The project switcher goes on choosing.
  document.querySelectorAll("[data-autosubmit]").forEach(function (s) {
    s.addEventListener("change", function () { s.form.submit(); });
  });

  // Deployment statuses move from Deploying on their own.
  var rows = document.querySelector("[data-poll]");
  if (rows) {
    var poll = function () {
      if (!rows.querySelector('[data-status="deploying"]')) return;
      fetch(rows.getAttribute("data-poll"), { credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          // Signed out meanwhile: show the page the server sends instead.
          if (r.redirected) { location.reload(); return Promise.reject(0); }
          return r.ok ? r.text() : Promise.reject(r.status);
        })
        .then(function (html) { rows.innerHTML = html; })
        .catch(function () {})
        .finally(function () { setTimeout(poll, 1000); });
    };
    setTimeout(poll, 1000);
  }
})();
