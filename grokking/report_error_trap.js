window.reportErrors = [];
window.addEventListener("error", function (event) {
  window.reportErrors.push(String(event.message || event));
  var status = document.getElementById("report-status");
  if (status) {
    status.setAttribute("data-errors", String(window.reportErrors.length));
    status.className = "error";
    status.textContent = "Report script error: " + window.reportErrors.join("; ");
  }
});
