/*
 * cardvault.js v1: the drop-in script for agency storefronts. No build step, no dependencies.
 *
 *   <script src="https://VAULT/elements/v1/cardvault.js" integrity="sha384-..." crossorigin="anonymous"></script>
 *   var fields = CardVault.mount("#card", {publishableKey: "pk_...", style: {color: "#1f2933"}});
 *   fields.tokenize()               -> Promise of {id, brand, last4, exp_month, exp_year}
 *   fields.pay(clientSecret)        -> Promise of the paid checkout session (rejects with .code, .session)
 *   fields.retrieveSession(secret)  -> Promise of the checkout session (to resume after a reload)
 *   fields.on("change" | "ready" | "submit", handler); fields.destroy()
 *
 * The card fields live in an iframe on the vault's origin: this page never sees the card number, the
 * expiry or the security code, only what the frame chooses to tell it. Messages are accepted only
 * from that iframe's window at the vault's origin, and sent only to that window at that origin.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var VAULT_ORIGIN = new URL(script.src).origin;
  var FRAME_PATH = "/elements/v1/frame";
  var LOAD_GRACE_MS = 2000;
  var TOKEN_FIELDS = ["id", "brand", "last4", "exp_month", "exp_year"];

  function CardVaultError(code, message, session) {
    var error = new Error(message);
    error.name = "CardVaultError";
    error.code = code;
    error.session = session || null;
    return error;
  }

  function pick(source, names) {
    var out = {};
    names.forEach(function (name) {
      if (source && Object.prototype.hasOwnProperty.call(source, name)) out[name] = source[name];
    });
    return out;
  }

  function mount(target, options) {
    options = options || {};
    var container = typeof target === "string" ? document.querySelector(target) : target;
    if (!container) throw CardVaultError("container_not_found", "cardvault: no element matches " + target);
    if (!/^pk_/.test(options.publishableKey || "")) {
      throw CardVaultError("publishable_key_required", "cardvault: mount() needs the agency's publishable key (pk_...)");
    }
    var params = new URLSearchParams();
    params.set("key", options.publishableKey);
    params.set("origin", window.location.origin);
    if (options.autocomplete === "off") params.set("autocomplete", "off");
    var style = options.style || {};
    Object.keys(style).forEach(function (name) { params.set(name, String(style[name])); });

    var iframe = document.createElement("iframe");
    iframe.src = VAULT_ORIGIN + FRAME_PATH + "?" + params.toString();
    iframe.title = options.title || "Secure card payment form";
    iframe.setAttribute("referrerpolicy", "no-referrer");
    iframe.setAttribute("allow", "payment 'none'");
    iframe.style.border = "0";
    iframe.style.width = "100%";
    iframe.style.height = "190px";
    container.appendChild(iframe);

    var ready = false;
    var refused = null;
    var nextId = 1;
    var pending = {};
    var queue = [];
    var listeners = {change: [], ready: [], submit: [], error: []};

    function emit(name, value) {
      listeners[name].forEach(function (handler) { handler(value); });
    }

    function refuse(code, message) {
      if (refused) return;
      refused = CardVaultError(code, message);
      console.error(message);
      Object.keys(pending).forEach(function (id) { pending[id].reject(refused); });
      pending = {};
      queue = [];
      emit("error", refused);
    }

    iframe.addEventListener("load", function () {
      setTimeout(function () {
        if (!ready) {
          refuse("frame_refused", "cardvault: the card form refused to load on this page (" + window.location.origin +
            "). The vault shows its card fields only on origins registered for the publishable key " +
            "(cardvault agency set-origins), and only with a valid publishable key. No card data can be taken here.");
        }
      }, LOAD_GRACE_MS);
    });

    function post(message) {
      message.source = "cardvault";
      message.v = 1;
      iframe.contentWindow.postMessage(message, VAULT_ORIGIN);
    }

    function request(type, extra) {
      if (refused) return Promise.reject(refused);
      return new Promise(function (resolve, reject) {
        var id = nextId++;
        pending[id] = {resolve: resolve, reject: reject};
        var message = extra || {};
        message.type = type;
        message.id = id;
        if (ready) post(message); else queue.push(message);
      });
    }

    function onMessage(event) {
      var data = event.data;
      var claimsCardvault = data && typeof data === "object" && data.source === "cardvault";
      if (event.source !== iframe.contentWindow) {
        if (claimsCardvault) {
          console.warn("cardvault: ignored a message from " + event.origin + " that pretends to come from the card form.");
        }
        return;
      }
      if (event.origin !== VAULT_ORIGIN) {
        console.warn("cardvault: ignored a message from the card frame at " + event.origin + ", not " + VAULT_ORIGIN + ".");
        return;
      }
      if (!claimsCardvault) return;
      if (data.type === "ready") {
        ready = true;
        queue.splice(0).forEach(post);
        emit("ready", {});
      } else if (data.type === "resize" && typeof data.height === "number") {
        iframe.style.height = Math.min(Math.max(data.height, 80), 600) + "px";
      } else if (data.type === "change") {
        emit("change", {brand: typeof data.brand === "string" ? data.brand : null, complete: data.complete === true});
      } else if (data.type === "submit") {
        emit("submit", {});
      } else if (data.type === "result" && pending[data.id]) {
        var waiting = pending[data.id];
        delete pending[data.id];
        var error = data.error ? CardVaultError(String(data.error.code), String(data.error.message), data.session) : null;
        if (data.ok) waiting.resolve(data.token ? pick(data.token, TOKEN_FIELDS) : data.session);
        else waiting.reject(error || CardVaultError("unknown", "The card form gave no answer."));
      }
    }
    window.addEventListener("message", onMessage);

    return {
      tokenize: function () { return request("tokenize"); },
      pay: function (clientSecret) { return request("pay", {clientSecret: clientSecret}); },
      retrieveSession: function (clientSecret) { return request("session", {clientSecret: clientSecret}); },
      focus: function () { if (ready) post({type: "focus"}); },
      on: function (name, handler) {
        if (!listeners[name]) throw CardVaultError("unknown_event", "cardvault: no event " + name);
        listeners[name].push(handler);
        return this;
      },
      destroy: function () {
        window.removeEventListener("message", onMessage);
        iframe.remove();
      }
    };
  }

  window.CardVault = {version: "1", origin: VAULT_ORIGIN, mount: mount};
})();
