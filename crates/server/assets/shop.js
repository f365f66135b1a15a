// The demo shop's own script (served at /demo/shop.js; the page's CSP forbids inline scripts).
// It runs in <head>, before the consent banner, so that `?lang=en` switches the page language
// the banner reads; it then wires the page to window.Confiance once the document is parsed.
(function () {
  "use strict";
  var english = /^en/i.test(new URLSearchParams(location.search).get("lang") || "");
  if (english) document.documentElement.lang = "en";

  function confiance() {
    return window.Confiance || null;
  }

  function product(card) {
    return {
      product_id: card.getAttribute("data-product-id"),
      name: card.getAttribute("data-name"),
      artist: card.getAttribute("data-artist"),
      price: Number(card.getAttribute("data-price")),
      currency: "EUR"
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (english) {
      var texts = document.querySelectorAll("[data-en]");
      for (var i = 0; i < texts.length; i++) texts[i].textContent = texts[i].getAttribute("data-en");
      document.title = "Vinyles & Cie — online record shop";
    }
    var count = 0;
    document.querySelector(".grid").addEventListener("click", function (ev) {
      var card = ev.target.closest(".record");
      if (!card || !confiance()) return;
      if (ev.target.closest(".cover")) {
        confiance().track("Product Viewed", product(card));
      } else if (ev.target.closest(".add")) {
        var added = product(card);
        added.quantity = 1;
        confiance().track("Product Added", added);
        document.getElementById("cart-count").textContent = String(++count);
      }
    });
    document.getElementById("cookies-link").addEventListener("click", function (ev) {
      ev.preventDefault();
      if (confiance()) confiance().open();
    });
    if (confiance()) confiance().page(english ? "Home" : "Accueil");
  });
})();
