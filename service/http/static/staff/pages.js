/* Every staff page: move focus to the error summary when there is one; show the receipt's print button. */
(function () {
  "use strict";
  var button = document.getElementById("print-receipt");
  if (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  }
  var summary = document.getElementById("error-summary");
  if (summary) summary.focus();
})();
