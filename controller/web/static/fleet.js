// The one-time agent configuration: save the text shown on the page as a file.
"use strict";
(function () {
  const button = document.getElementById("download-config");
  const text = document.getElementById("agent-config");
  if (!button || !text) return;
  button.addEventListener("click", function () {
    const blob = new Blob([text.textContent], { type: "application/toml" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = button.dataset.filename;
    document.body.appendChild(link);
    link.click();
    link.remove();
    URL.revokeObjectURL(link.href);
  });
})();
