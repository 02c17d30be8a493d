/*
 * cardvault hosted card fields: the script of the card form inside the iframe (/elements/v1/frame).
 *
 * It runs on the vault's own origin, so the storefront page around it cannot read what the shopper
 * types. It formats and checks the fields as they are typed, sends the card only to the vault
 * (POST /v1/tokens, same origin) and tells its parent page only a token id, the brand, the last four
 * digits and the expiry, or a checkout session's outcome. It talks to exactly one window, its parent,
 * and only at the one origin the vault served it for (checked against the agency's registered
 * origins on the server); every other message is refused with a console error.
 */
(function () {
  "use strict";

  var config = JSON.parse(document.body.getAttribute("data-config"));
  var PARENT_ORIGIN = config.parentOrigin;
  var SESSION_ID = /^cs_[0-9a-f]{32}$/;

  /* brand-table:start (mirrors BRAND_PREFIXES and BRAND_RULES in service/domain/cards.py; a test keeps them equal) */
  var BRANDS = {
    "prefixes": [
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
    ],
    "rules": {
      "visa": {"lengths": [13, 16, 19], "cvc": 3, "name": "Visa"},
      "mastercard": {"lengths": [16], "cvc": 3, "name": "Mastercard"},
      "amex": {"lengths": [15], "cvc": 4, "name": "American Express"},
      "discover": {"lengths": [16, 17, 18, 19], "cvc": 3, "name": "Discover"},
      "diners": {"lengths": [14, 15, 16, 17, 18, 19], "cvc": 3, "name": "Diners Club"},
      "jcb": {"lengths": [16, 17, 18, 19], "cvc": 3, "name": "JCB"},
      "unionpay": {"lengths": [16, 17, 18, 19], "cvc": 3, "name": "UnionPay"},
      "maestro": {"lengths": [12, 13, 14, 15, 16, 17, 18, 19], "cvc": 3, "name": "Maestro"}
    }
  };
  /* brand-table:end */

  var form = document.getElementById("cv-form");
  var number = document.getElementById("cv-number");
  var expiry = document.getElementById("cv-expiry");
  var cvc = document.getElementById("cv-cvc");
  var brandLabel = document.getElementById("cv-brand");
  var statusLine = document.getElementById("cv-status");
  var errors = {
    number: document.getElementById("cv-number-error"),
    expiry: document.getElementById("cv-expiry-error"),
    cvc: document.getElementById("cv-cvc-error")
  };
  var inputs = {number: number, expiry: expiry, cvc: cvc};
  var busy = false;

  // --- styles: only the vault-validated custom properties, set through the CSSOM (no CSS text) ---
  Object.keys(config.style || {}).forEach(function (name) {
    if (/^--cv-[a-z-]+$/.test(name)) {
      document.documentElement.style.setProperty(name, config.style[name]);
    }
  });
  (config.warnings || []).forEach(function (warning) {
    console.warn("cardvault: " + warning);
  });

  // --- card rules -----------------------------------------------------------------------
  function digitsOf(value) {
    return value.replace(/\D/g, "");
  }

  function detectBrand(digits) {
    var best = null;
    BRANDS.prefixes.forEach(function (range) {
      var width = range[0].length;
      if (digits.length >= width) {
        var head = digits.slice(0, width);
        if (range[0] <= head && head <= range[1] && (best === null || width > best[0].length)) {
          best = range;
        }
      }
    });
    return best === null ? null : best[2];
  }

  function luhnValid(digits) {
    var sum = 0;
    for (var i = 0; i < digits.length; i++) {
      var d = digits.charCodeAt(digits.length - 1 - i) - 48;
      if (i % 2 === 1) {
        d = d * 2;
        if (d > 9) d -= 9;
      }
      sum += d;
    }
    return sum % 10 === 0;
  }

  function groupsFor(brand, length) {
    if (brand === "amex") return [4, 6, 5];
    if (brand === "diners" && length <= 14) return [4, 6, 4];
    return [4, 4, 4, 4, 3];
  }

  function formatNumber(digits, brand) {
    var groups = groupsFor(brand, digits.length);
    var parts = [];
    var at = 0;
    for (var g = 0; g < groups.length && at < digits.length; g++) {
      parts.push(digits.slice(at, at + groups[g]));
      at += groups[g];
    }
    if (at < digits.length) parts.push(digits.slice(at));
    return parts.join(" ");
  }

  function maxLength(brand) {
    return brand ? Math.max.apply(null, BRANDS.rules[brand].lengths) : 19;
  }

  function cvcLength(brand) {
    return brand ? BRANDS.rules[brand].cvc : 3;
  }

  function readExpiry() {
    var d = digitsOf(expiry.value);
    if (d.length !== 4) return null;
    return {month: parseInt(d.slice(0, 2), 10), year: 2000 + parseInt(d.slice(2), 10)};
  }

  function numberProblem() {
    var digits = digitsOf(number.value);
    var brand = detectBrand(digits);
    if (digits.length === 0) return "Enter your card number.";
    if (digits.length < 12) return "The card number is incomplete.";
    if (!luhnValid(digits)) return "The card number is not valid; check for typos.";
    if (brand === null) return "This card brand is not accepted.";
    if (BRANDS.rules[brand].lengths.indexOf(digits.length) < 0) {
      return "The card number has the wrong number of digits for a " + BRANDS.rules[brand].name + " card.";
    }
    return null;
  }

  function expiryProblem() {
    if (digitsOf(expiry.value).length === 0) return "Enter the expiry date.";
    var exp = readExpiry();
    if (exp === null) return "Enter the expiry date as MM / YY.";
    if (exp.month < 1 || exp.month > 12) return "The expiry month must be 01 to 12.";
    var now = new Date();
    var thisYear = now.getUTCFullYear();
    if (exp.year < thisYear || (exp.year === thisYear && exp.month < now.getUTCMonth() + 1)) {
      return "The card has expired.";
    }
    if (exp.year > thisYear + 25) return "The expiry year is too far ahead.";
    return null;
  }

  function cvcProblem() {
    var wanted = cvcLength(detectBrand(digitsOf(number.value)));
    var d = cvc.value;
    if (d.length === 0) return "Enter the security code.";
    if (!/^[0-9]+$/.test(d) || d.length !== wanted) return "The security code has " + wanted + " digits.";
    return null;
  }

  var checks = {number: numberProblem, expiry: expiryProblem, cvc: cvcProblem};

  function showError(field, message) {
    errors[field].textContent = message || "";
    inputs[field].setAttribute("aria-invalid", message ? "true" : "false");
  }

  function check(field) {
    var problem = checks[field]();
    showError(field, problem);
    return problem;
  }

  function checkAll() {
    var first = null;
    ["number", "expiry", "cvc"].forEach(function (field) {
      if (check(field) && first === null) first = field;
    });
    if (first !== null) inputs[first].focus();
    return first === null;
  }

  function complete() {
    return numberProblem() === null && expiryProblem() === null && cvcProblem() === null;
  }

  // --- formatting as you type -----------------------------------------------------------------
  var lastBrand = null;

  function onNumberInput() {
    var caretDigits = digitsOf(number.value.slice(0, number.selectionStart || 0)).length;
    var digits = digitsOf(number.value);
    var brand = detectBrand(digits);
    digits = digits.slice(0, maxLength(brand));
    var formatted = formatNumber(digits, brand);
    number.value = formatted;
    var pos = 0;
    var seen = 0;
    while (pos < formatted.length && seen < caretDigits) {
      if (formatted.charAt(pos) !== " ") seen++;
      pos++;
    }
    number.setSelectionRange(pos, pos);
    brandLabel.textContent = brand ? BRANDS.rules[brand].name : "";
    cvc.maxLength = cvcLength(brand);
    if (brand !== lastBrand) {
      lastBrand = brand;
      if (cvc.value.length > cvc.maxLength) cvc.value = cvc.value.slice(0, cvc.maxLength);
    }
    if (errors.number.textContent) check("number");
    changed();
  }

  function onExpiryInput() {
    var d = digitsOf(expiry.value);
    if (d.length === 1 && d > "1") d = "0" + d;
    d = d.slice(0, 4);
    expiry.value = d.length > 2 ? d.slice(0, 2) + " / " + d.slice(2) : d;
    if (errors.expiry.textContent) check("expiry");
    changed();
  }

  function onCvcInput() {
    cvc.value = digitsOf(cvc.value).slice(0, cvc.maxLength);
    if (errors.cvc.textContent) check("cvc");
    changed();
  }

  number.addEventListener("input", onNumberInput);
  expiry.addEventListener("input", onExpiryInput);
  cvc.addEventListener("input", onCvcInput);
  Object.keys(inputs).forEach(function (field) {
    inputs[field].addEventListener("blur", function () {
      if (inputs[field].value !== "") check(field);
    });
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    send({type: "submit"});
  });

  // --- talking to the parent page: one window, one origin ----------------------------------
  function send(message) {
    message.source = "cardvault";
    message.v = 1;
    window.parent.postMessage(message, PARENT_ORIGIN);
  }

  function changed() {
    var brand = detectBrand(digitsOf(number.value));
    send({type: "change", brand: brand, complete: complete()});
  }

  function reportHeight() {
    send({type: "resize", height: Math.ceil(document.documentElement.scrollHeight)});
  }

  // --- the vault's API, same origin --------------------------------------------------------
  function randomKey() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  function api(method, path, body, headers) {
    var all = {"Authorization": "Bearer " + config.key, "Cardvault-Frame": config.proof};
    Object.keys(headers || {}).forEach(function (name) { all[name] = headers[name]; });
    if (body !== null) all["Content-Type"] = "application/json";
    return fetch(path, {
      method: method,
      headers: all,
      body: body === null ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer"
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        return {status: response.status, data: data};
      });
    });
  }

  var FIELD_OF = {"card.number": "number", "card.exp_month": "expiry", "card.exp_year": "expiry", "card.cvc": "cvc"};

  function problemOf(answer) {
    var data = answer.data || {};
    (data.errors || []).forEach(function (error) {
      if (FIELD_OF[error.field]) showError(FIELD_OF[error.field], error.message);
    });
    return {code: data.code || "http_" + answer.status, message: data.detail || data.title || "The request failed."};
  }

  var CONNECTION_LOST = {
    code: "connection_lost",
    message: "The connection was lost before the answer arrived. Your payment may have gone through: reload the " +
      "page to see its status. You will not be charged twice."
  };

  function publicSession(s) {
    var charge = s.charge ? {status: s.charge.status, brand: s.charge.brand, last4: s.charge.last4,
      decline_code: s.charge.decline_code} : null;
    return {
      id: s.id, status: s.status, payment_status: s.payment_status, amount: s.amount, currency: s.currency,
      order_reference: s.order_reference, description: s.description, success_url: s.success_url,
      cancel_url: s.cancel_url, expires_at: s.expires_at, charge: charge,
      last_payment_error: s.last_payment_error
    };
  }

  function setBusy(on, text) {
    busy = on;
    form.setAttribute("aria-busy", on ? "true" : "false");
    Object.keys(inputs).forEach(function (field) { inputs[field].readOnly = on; });
    statusLine.textContent = text || "";
  }

  function tokenize() {
    if (!checkAll()) {
      return Promise.resolve({ok: false, error: {code: "validation_failed", message: "Check the card details."}});
    }
    var exp = readExpiry();
    var card = {number: digitsOf(number.value), exp_month: exp.month, exp_year: exp.year, cvc: cvc.value};
    return api("POST", "/v1/tokens", {card: card}, null).then(function (answer) {
      if (answer.status !== 200 && answer.status !== 201) return {ok: false, error: problemOf(answer)};
      var t = answer.data;
      return {ok: true, token: {id: t.id, brand: t.card.brand, last4: t.card.last4,
        exp_month: t.card.exp_month, exp_year: t.card.exp_year}};
    }, function () {
      return {ok: false, error: {code: "connection_lost", message: "The connection was lost; try again."}};
    });
  }

  function sessionIdOf(clientSecret) {
    var id = String(clientSecret || "").split("_secret_")[0];
    return SESSION_ID.test(id) ? id : null;
  }

  function retrieve(clientSecret) {
    var id = sessionIdOf(clientSecret);
    if (id === null) return Promise.resolve({ok: false, error: {code: "client_secret_invalid", message: "Not a client secret."}});
    return api("GET", "/v1/checkout/sessions/" + id, null, {"Cardvault-Client-Secret": clientSecret}).then(
      function (answer) {
        if (answer.status !== 200) return {ok: false, error: problemOf(answer)};
        return {ok: true, session: publicSession(answer.data)};
      },
      function () { return {ok: false, error: CONNECTION_LOST}; }
    );
  }

  function clearCard() {
    number.value = "";
    expiry.value = "";
    cvc.value = "";
    brandLabel.textContent = "";
  }

  function pay(clientSecret) {
    var id = sessionIdOf(clientSecret);
    if (id === null) return Promise.resolve({ok: false, error: {code: "client_secret_invalid", message: "Not a client secret."}});
    return tokenize().then(function (tokenized) {
      if (!tokenized.ok) return tokenized;
      var body = {client_secret: clientSecret, token: tokenized.token.id};
      return api("POST", "/v1/checkout/sessions/" + id + "/complete", body, {"Idempotency-Key": "pay-" + randomKey()}).then(
        function (answer) {
          if (answer.status === 200 || answer.status === 202 || answer.status === 402) {
            var session = publicSession(answer.data);
            if (answer.status === 200) clearCard();
            return {ok: answer.status === 200, session: session,
              error: answer.status === 200 ? null : session.last_payment_error};
          }
          var error = problemOf(answer);
          if (answer.status === 409) {  // paid, in progress or expired already: show the real outcome
            return retrieve(clientSecret).then(function (current) {
              var paid = current.ok && current.session.status === "complete";
              if (paid) clearCard();
              return {ok: paid, session: current.ok ? current.session : null, error: paid ? null : error};
            });
          }
          return {ok: false, error: error};
        },
        function () { return {ok: false, error: CONNECTION_LOST}; }
      );
    });
  }

  var handlers = {
    tokenize: function () { return tokenize(); },
    pay: function (message) { return pay(message.clientSecret); },
    session: function (message) { return retrieve(message.clientSecret); }
  };

  window.addEventListener("message", function (event) {
    if (event.origin !== PARENT_ORIGIN || event.source !== window.parent) {
      console.error("cardvault: refused a message from " + event.origin + ": this card form answers only " +
        "its own parent page at " + PARENT_ORIGIN + ".");
      return;
    }
    var message = event.data;
    if (!message || message.source !== "cardvault" || typeof message.type !== "string") return;
    if (message.type === "focus") {
      number.focus();
      return;
    }
    var handler = handlers[message.type];
    if (!handler) return;
    var takesCard = message.type !== "session";  // reading a session leaves the fields alone
    if (takesCard && busy) {
      send({type: "result", id: message.id, ok: false, error: {code: "busy", message: "A request is already running."}});
      return;
    }
    if (takesCard) setBusy(true, message.type === "pay" ? "Processing payment…" : "");
    handler(message).then(function (result) {
      if (takesCard) setBusy(false, result.ok ? "" : (result.error && result.error.message) || "");
      result.type = "result";
      result.id = message.id;
      send(result);
    });
  });

  // Only inside a parent page: opened on its own the form does nothing.
  if (window.parent === window) {
    statusLine.textContent = "This card form works only inside an agency's checkout page.";
    form.hidden = true;
    return;
  }
  send({type: "ready"});
  reportHeight();
  if (typeof ResizeObserver === "function") new ResizeObserver(reportHeight).observe(document.body);
})();
