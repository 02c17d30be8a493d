/* The staff order form: brand as you type, digit grouping, CVC length, no double submit, focus on errors.
 * BRAND_PREFIXES mirrors service/domain/brands.py (a test keeps them equal); the longest matching prefix wins.
 * The server checks everything again: this script only helps the person typing. It sends nothing anywhere. */
(function () {
  "use strict";
  var BRAND_PREFIXES = [
    ["4", "4", "visa"],
    ["51", "55", "mastercard"],
    ["2221", "2720", "mastercard"],
    ["34", "34", "amex"],
    ["37", "37", "amex"],
    ["6011", "6011", "discover"],
    ["644", "649", "discover"],
    ["65", "65", "discover"],
    ["622126", "622925", "discover"],
    ["300", "305", "diners"],
    ["3095", "3095", "diners"],
    ["36", "36", "diners"],
    ["38", "39", "diners"],
    ["3528", "3589", "jcb"],
    ["62", "62", "unionpay"],
    ["81", "81", "unionpay"],
    ["5018", "5018", "maestro"],
    ["5020", "5020", "maestro"],
    ["5038", "5038", "maestro"],
    ["5893", "5893", "maestro"],
    ["6304", "6304", "maestro"],
    ["6759", "6759", "maestro"],
    ["6761", "6763", "maestro"]
  ];
  var BRAND_NAMES = {
    visa: "Visa", mastercard: "Mastercard", amex: "American Express", discover: "Discover",
    diners: "Diners Club", jcb: "JCB", unionpay: "UnionPay", maestro: "Maestro"
  };

  function detectBrand(digits) {
    var best = null;
    for (var i = 0; i < BRAND_PREFIXES.length; i++) {
      var first = BRAND_PREFIXES[i][0], last = BRAND_PREFIXES[i][1], width = first.length;
      if (digits.length < width) continue;
      var head = digits.slice(0, width);
      if (first <= head && head <= last && (best === null || width > best[0].length)) best = BRAND_PREFIXES[i];
    }
    return best === null ? null : best[2];
  }

  function group(digits, brand) {
    var sizes = brand === "amex" ? [4, 6, 5] : (brand === "diners" && digits.length === 14 ? [4, 6, 4] : null);
    var out = [], at = 0;
    if (sizes) {
      for (var s = 0; s < sizes.length && at < digits.length; s++) { out.push(digits.slice(at, at + sizes[s])); at += sizes[s]; }
    } else {
      while (at < digits.length) { out.push(digits.slice(at, at + 4)); at += 4; }
    }
    return out.join(" ");
  }

  var number = document.getElementById("f-card_number");
  var badge = document.getElementById("card-brand");
  var cvc = document.getElementById("f-cvc");
  var form = document.getElementById("order-form");
  var lastBrand = null;

  if (number) {
    number.addEventListener("input", function () {
      var digits = number.value.replace(/\D/g, "").slice(0, 19);
      var brand = detectBrand(digits);
      var caretAtEnd = number.selectionStart === number.value.length;
      number.value = group(digits, brand);
      if (caretAtEnd) number.setSelectionRange(number.value.length, number.value.length);
      if (brand !== lastBrand) {
        badge.textContent = brand ? BRAND_NAMES[brand] : "";
        lastBrand = brand;
        if (cvc) cvc.maxLength = brand === "amex" ? 4 : 3;
      }
    });
  }
  if (form) {
    form.addEventListener("submit", function () {
      var button = document.getElementById("submit-order");
      // Let this submission through, then refuse a second one (the server refuses it too).
      window.setTimeout(function () { button.disabled = true; button.textContent = "Charging…"; }, 0);
    });
  }
})();
