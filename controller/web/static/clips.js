// Clip upload with progress: XMLHttpRequest's upload events drive the bar; the
// session's CSRF token goes in the X-CSRF-Token header (CSP forbids inline script).
"use strict";
(function () {
  const form = document.getElementById("upload");
  if (!form) return;
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  function show(text, isError) {
    status.textContent = text;
    status.className = isError ? "error" : "";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const file = form.elements.file.files[0];
    if (file && file.size > Number(form.dataset.maxBytes)) {
      show(form.dataset.tooLarge, true);
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    bar.hidden = false;
    bar.value = 0;
    show("", false);
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
    });
    xhr.upload.addEventListener("load", function () {
      bar.value = 100;
      show(form.dataset.preparing, false);
    });
    xhr.addEventListener("load", function () {
      if (xhr.status === 201) {
        window.location.assign("/clips?done=added");
        return;
      }
      let message = xhr.statusText;
      try {
        const body = JSON.parse(xhr.responseText);
        message = document.documentElement.lang === "en" ? body.en : body.vi;
        message += " / " + (document.documentElement.lang === "en" ? body.vi : body.en);
      } catch (ignored) { /* not JSON: keep the status text */ }
      bar.hidden = true;
      show(message, true);
    });
    xhr.addEventListener("error", function () {
      bar.hidden = true;
      show(xhr.statusText || "network error / lỗi mạng", true);
    });
    xhr.send(new FormData(form));
  });
})();
