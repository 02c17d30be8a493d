/* The demo storefront's own checkout script. It sees only what the card frame chooses to tell it:
   the brand as the shopper types, whether the form is complete, and the checkout session's outcome. */
(function () {
  "use strict";

  var root = document.getElementById("checkout");
  var button = document.getElementById("pay-button");
  var status = document.getElementById("pay-status");
  var brand = document.getElementById("card-brand");
  var clientSecret = root.getAttribute("data-client-secret");
  var fields = window.CardVault.mount("#card-fields", {
    publishableKey: root.getAttribute("data-publishable-key"),
    style: {font_family: "Georgia", color: "#1d3b2a", focus_color: "#2e7d32", border_radius: "6px"}
  });

  function show(text, kind) {
    status.textContent = text;
    status.className = "status " + (kind || "");
  }

  function finish(session) {
    show("Payment approved with " + session.charge.brand + " ending " + session.charge.last4 + ".", "ok");
    button.disabled = true;
    window.location.assign(session.success_url);
  }

  function explain(session) {
    if (session.status === "complete") return finish(session);
    if (session.status === "expired") {
      show("This checkout has expired. Start again from the licence list.", "error");
      return;
    }
    if (session.status === "processing") {
      show((session.last_payment_error && session.last_payment_error.message) || "Your payment is being confirmed.", "");
      return;
    }
    if (session.last_payment_error) show(session.last_payment_error.message, "error");
    button.disabled = false;
  }

  function pay() {
    if (button.disabled) return;
    button.disabled = true;
    show("Processing payment…", "");
    fields.pay(clientSecret).then(finish, function (error) {
      show(error.message, "error");
      if (error.session) explain(error.session);
      else button.disabled = false;
    });
  }

  fields.on("change", function (event) {
    brand.textContent = event.brand ? "Card: " + event.brand : "";
  });
  fields.on("submit", pay);
  fields.on("error", function (error) {
    show("The card form could not be loaded here. No payment can be taken.", "error");
    button.disabled = true;
  });
  button.addEventListener("click", pay);

  // Reopening the page resumes the same checkout and shows its real outcome.
  fields.retrieveSession(clientSecret).then(explain, function (error) {
    if (error.code !== "frame_refused") show(error.message, "error");  // the "error" event explains a refusal
  });
})();
