/*! Confiance consent banner (confiance.js v1). Served at /consent.js with its configuration.
 *
 * Design:
 * - Nothing is stored and nothing is sent before the visitor chooses: no cookie, no
 *   localStorage, no request. Tracking calls made before the choice wait in memory and are
 *   sent or dropped once the choice is known.
 * - The choice is recorded by the server (POST /consent/choice), which keeps the proof and sets
 *   the first-party cookie. This script only ever reads that cookie: cookies written by scripts
 *   are capped at 7 days by Safari, and the server's copy is the one that counts.
 * - Refusing is exactly as easy and as visible as accepting (CNIL délibération 2020-091): the
 *   two buttons share one element type and one style. Closing the banner is not a choice.
 * - The banner overlays the page (position: fixed) so it never moves the page's content; the
 *   per-purpose panel is a modal dialog that traps focus until it is closed.
 */
(function () {
  "use strict";
  var CONFIG = __CONFIANCE_CONFIG__;
  if (window.Confiance && window.Confiance.version) return;

  var script = document.currentScript || {};
  var data = script.dataset || {};
  var writeKey = data.writeKey || CONFIG.writeKey || null;
  var base = String(CONFIG.base || "").replace(/\/+$/, "");
  var categories = CONFIG.categories || [];
  var lang = /^en/i.test(data.lang || document.documentElement.lang || "") ? "en" : "fr";

  var TEXT = {
    fr: {
      title: "Vos choix sur les cookies",
      intro: "Avec votre accord, nous utilisons des cookies et traceurs pour : ",
      intro2: ". Vous pouvez accepter, refuser ou choisir, et changer d'avis à tout moment avec le lien « Cookies » en bas de page. Refuser n'a aucune conséquence sur votre navigation.",
      refuse: "Tout refuser",
      accept: "Tout accepter",
      choose: "Personnaliser",
      panelTitle: "Personnaliser mes choix",
      panelIntro: "Activez uniquement ce que vous acceptez. Rien n'est activé par défaut.",
      collects: "Données collectées : ",
      recipients: "Destinataires : ",
      necessary: "Strictement nécessaire : le cookie « %s » mémorise votre choix pendant %d jours. Il ne sert à rien d'autre.",
      save: "Enregistrer mes choix",
      close: "Fermer",
      manage: "Gérer mes préférences",
      failed: "Le lien n'a pas pu être obtenu. Réessayez plus tard.",
      on: "activé",
      off: "désactivé"
    },
    en: {
      title: "Your cookie choices",
      intro: "With your agreement, we use cookies and trackers for: ",
      intro2: ". You can accept, refuse or choose, and change your mind at any time with the “Cookies” link at the bottom of the page. Refusing has no effect on your browsing.",
      refuse: "Refuse all",
      accept: "Accept all",
      choose: "Choose",
      panelTitle: "Choose what you accept",
      panelIntro: "Turn on only what you accept. Nothing is on by default.",
      collects: "Data collected: ",
      recipients: "Recipients: ",
      necessary: "Strictly necessary: the cookie “%s” remembers your choice for %d days. It is used for nothing else.",
      save: "Save my choices",
      close: "Close",
      manage: "Manage my preferences",
      failed: "The link could not be obtained. Please try again later.",
      on: "on",
      off: "off"
    }
  }[lang];

  // ---- state: read from the server's cookie only ---------------------------------------------

  function readCookie() {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) !== CONFIG.cookie) continue;
      try {
        var b64 = parts[i].slice(eq + 1).replace(/-/g, "+").replace(/_/g, "/");
        while (b64.length % 4) b64 += "=";
        var bin = atob(b64);
        var bytes = new Uint8Array(bin.length);
        for (var j = 0; j < bin.length; j++) bytes[j] = bin.charCodeAt(j);
        var value = JSON.parse(new TextDecoder().decode(bytes));
        return value && typeof value === "object" ? value : null;
      } catch (e) {
        return null;
      }
    }
    return null;
  }

  // The stored record, if any (even stale: its anonymous id is reused for the next choice).
  var record = readCookie();

  function isCurrent(r) {
    if (!r || r.v !== CONFIG.notice.version || typeof r.t !== "number" || !r.c) return false;
    return Date.now() / 1000 - r.t < CONFIG.validityDays * 86400;
  }

  // The visitor's current choice ({id: bool}) or null when there is none valid for this notice.
  var choice = isCurrent(record) ? toChoice(record.c) : null;
  var anonymousId = choice ? record.a : null;
  var userId = null;

  function toChoice(c) {
    var out = {};
    for (var i = 0; i < categories.length; i++) out[categories[i].id] = !!(c && c[categories[i].id]);
    return out;
  }

  function copy(o) {
    return o ? JSON.parse(JSON.stringify(o)) : null;
  }

  function uuid() {
    var b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    var h = "";
    for (var i = 0; i < 16; i++) {
      h += (b[i] + 256).toString(16).slice(1);
      if (i === 3 || i === 5 || i === 7 || i === 9) h += "-";
    }
    return h;
  }

  // ---- Google Consent Mode v2 -----------------------------------------------------------------

  function gcm(kind) {
    if (typeof window.gtag !== "function") return;
    var ads = choice && choice.advertising ? "granted" : "denied";
    window.gtag("consent", kind, {
      ad_storage: ads,
      ad_user_data: ads,
      ad_personalization: ads,
      analytics_storage: choice && choice.analytics ? "granted" : "denied"
    });
  }
  gcm("default");

  // ---- tracking, gated by consent -------------------------------------------------------------

  var queue = [];
  var deciding = false;
  var listeners = [];
  var consentPurposes = CONFIG.consentPurposes || [];

  function allowed(purposes) {
    for (var i = 0; i < purposes.length; i++) {
      if (consentPurposes.indexOf(purposes[i]) < 0 || (choice && choice[purposes[i]] === true)) return true;
    }
    return false;
  }

  function purposesOf(msg) {
    if (msg.type === "page") return CONFIG.pagePurposes || [];
    if (msg.type === "identify") return null;
    return (CONFIG.events || {})[msg.event] || [];
  }

  function pageContext() {
    return {
      path: location.pathname,
      url: location.href,
      title: document.title,
      referrer: document.referrer
    };
  }

  function send(msg) {
    var purposes = purposesOf(msg);
    if (!writeKey || (purposes && !allowed(purposes))) return;
    msg.writeKey = writeKey;
    msg.anonymousId = anonymousId;
    if (userId !== null) msg.userId = userId;
    msg.context.consent = { categoryPreferences: copy(choice) };
    var url = base + "/v1/" + msg.type.charAt(0);
    var body = JSON.stringify(msg);
    if (msg.type === "page" && navigator.sendBeacon) {
      try {
        if (navigator.sendBeacon(url, body)) return;
      } catch (e) {
        /* falls back to fetch */
      }
    }
    fetch(url, {
      method: "POST",
      keepalive: true,
      credentials: "omit",
      headers: { "content-type": "text/plain" },
      body: body
    }).catch(function () {});
  }

  function call(type, fields) {
    var msg = {
      type: type,
      messageId: uuid(),
      timestamp: new Date().toISOString(),
      context: {
        library: { name: "confiance.js", version: "1" },
        page: pageContext(),
        locale: navigator.language || lang,
        userAgent: navigator.userAgent
      }
    };
    for (var k in fields) if (fields[k] !== undefined) msg[k] = fields[k];
    // While a choice is being recorded, calls wait for it: the server must know the choice
    // before it receives what the choice allows.
    if (choice && !deciding) send(msg);
    else if (queue.length < 100) queue.push(msg);
  }

  // ---- recording a choice ---------------------------------------------------------------------

  function decide(choices) {
    var next = {};
    for (var i = 0; i < categories.length; i++) next[categories[i].id] = choices[categories[i].id] === true;
    var anon = (record && record.a) || uuid();
    var payload = {
      anonymousId: anon,
      userId: userId,
      choices: next,
      notice: { version: CONFIG.notice.version, hash: CONFIG.notice.hash },
      language: lang,
      touchpoint: "site_visit",
      writeKey: writeKey
    };
    deciding = true;
    var done = fetch(base + "/consent/choice", {
      method: "POST",
      credentials: "include",
      headers: { "content-type": "text/plain" },
      body: JSON.stringify(payload)
    })
      .then(function (r) {
        return r.ok ? r.json() : null;
      })
      .catch(function () {
        return null;
      })
      .then(function (answer) {
        // The answer is what the server wrote in the cookie; when the server could not be reached
        // the visitor's choice still holds for this page (and the banner returns on the next).
        record = (answer && answer.consent) || { a: anon, c: next };
        anonymousId = record.a || anon;
        choice = toChoice(record.c);
        deciding = false;
        gcm("update");
        var pending = queue;
        queue = [];
        for (var j = 0; j < pending.length; j++) send(pending[j]);
        for (var k = 0; k < listeners.length; k++) {
          try {
            listeners[k](copy(choice));
          } catch (e) {
            setTimeout(function () { throw e; });
          }
        }
        return copy(choice);
      });
    closeAll();
    return done;
  }

  // ---- the interface --------------------------------------------------------------------------

  var CSS =
    "#cf-bar,#cf-modal{all:initial;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1b1b1b;box-sizing:border-box}" +
    "#cf-bar *,#cf-modal *{box-sizing:border-box;font:inherit;color:inherit;margin:0;padding:0}" +
    "#cf-bar{display:block;position:fixed;left:0;right:0;bottom:0;z-index:2147483000;background:#fff;border-top:1px solid #c9c9c9;box-shadow:0 -4px 24px rgba(0,0,0,.18);padding:20px}" +
    "#cf-bar .cf-in{max-width:960px;margin:0 auto}" +
    "#cf-bar h2,#cf-modal h2{font-size:19px;font-weight:700;margin-bottom:6px}" +
    "#cf-bar p{font-size:15px;margin-bottom:14px}" +
    ".cf-row{display:flex;flex-wrap:wrap;gap:12px}" +
    ".cf-row .cf-b{flex:1 1 0;min-width:150px}" +
    "#cf-bar .cf-b,#cf-modal .cf-b{display:inline-block;cursor:pointer;border:2px solid #1d3557;background:#1d3557;color:#fff;border-radius:6px;padding:10px 18px;font-size:16px;font-weight:600;text-align:center;line-height:1.4}" +
    "#cf-bar .cf-b:hover,#cf-modal .cf-b:hover{background:#14253d;border-color:#14253d}" +
    "#cf-bar .cf-choose{margin-top:10px;background:#fff;color:#1d3557;border:2px solid #1d3557;border-radius:6px;padding:8px 16px;cursor:pointer;font-weight:600}" +
    "#cf-bar .cf-choose:hover{background:#eef2f8}" +
    "#cf-modal{position:fixed;inset:0;z-index:2147483001;background:rgba(0,0,0,.55);display:flex;align-items:center;justify-content:center;padding:16px}" +
    "#cf-modal .cf-dlg{background:#fff;border-radius:10px;max-width:640px;width:100%;max-height:calc(100vh - 32px);overflow:auto;padding:24px;position:relative}" +
    "#cf-modal .cf-x{position:absolute;top:12px;right:12px;width:40px;height:40px;border:0;background:#fff;border-radius:6px;cursor:pointer;font-size:26px;line-height:1}" +
    "#cf-modal .cf-intro{font-size:15px;margin-bottom:12px}" +
    "#cf-modal .cf-cat{border-top:1px solid #d6d6d6;padding:14px 0}" +
    "#cf-modal label{display:flex;align-items:center;gap:12px;font-weight:700;cursor:pointer}" +
    "#cf-modal input{appearance:auto;width:22px;height:22px;margin:0;accent-color:#1d3557;cursor:pointer;flex:none}" +
    "#cf-modal .cf-cat p,#cf-modal .cf-note{font-size:14px;margin-top:4px;color:#3d3d3d}" +
    "#cf-modal .cf-note{border-top:1px solid #d6d6d6;padding-top:12px}" +
    "#cf-modal .cf-link{background:none;border:0;color:#0b4fb3;text-decoration:underline;cursor:pointer;margin:12px 0;font-size:15px}" +
    "#cf-modal .cf-err{color:#a4161a;font-size:14px}" +
    "#cf-modal .cf-row{margin-top:12px}" +
    "#cf-modal h2{padding-right:44px}" +
    "@media (max-width:480px){#cf-bar{padding:14px}#cf-bar p{font-size:14px}#cf-bar .cf-row .cf-b{min-width:0;padding:10px 8px}#cf-modal .cf-dlg{padding:18px}}" +
    "#cf-bar :focus-visible,#cf-modal :focus-visible{outline:3px solid #0b57d0;outline-offset:2px}" +
    "#cf-bar:focus,#cf-modal .cf-dlg:focus{outline:none}";

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    for (var k in attrs) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "onclick") e.addEventListener("click", attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    for (var i = 0; children && i < children.length; i++) if (children[i]) e.appendChild(children[i]);
    return e;
  }

  function loc(v) {
    return v && typeof v === "object" ? v[lang] || v.fr || v.en || "" : v || "";
  }

  function all(granted) {
    var out = {};
    for (var i = 0; i < categories.length; i++) out[categories[i].id] = granted;
    return out;
  }

  function pair() {
    return el("div", { "class": "cf-row" }, [
      el("button", { type: "button", "class": "cf-b", "data-cf": "refuse", text: TEXT.refuse, onclick: function () { decide(all(false)); } }),
      el("button", { type: "button", "class": "cf-b", "data-cf": "accept", text: TEXT.accept, onclick: function () { decide(all(true)); } })
    ]);
  }

  var bar = null;
  var modal = null;
  var barReturn = null;
  var modalReturn = null;

  function styles() {
    if (document.getElementById("cf-style")) return;
    document.head.appendChild(el("style", { id: "cf-style", text: CSS }));
  }

  function focusables(root) {
    return Array.prototype.filter.call(
      root.querySelectorAll("button,input,a[href],[tabindex]:not([tabindex='-1'])"),
      function (e) { return !e.disabled && e.getClientRects().length > 0; }
    );
  }

  function showBar() {
    if (bar) return;
    styles();
    var names = [];
    for (var i = 0; i < categories.length; i++) names.push(loc(categories[i].name).toLowerCase());
    barReturn = document.activeElement;
    bar = el("div", { id: "cf-bar", role: "dialog", "aria-modal": "false", "aria-labelledby": "cf-bar-t", "aria-describedby": "cf-bar-d", tabindex: "-1", lang: lang }, [
      el("div", { "class": "cf-in" }, [
        el("h2", { id: "cf-bar-t", text: TEXT.title }),
        el("p", { id: "cf-bar-d", text: TEXT.intro + names.join(", ") + TEXT.intro2 }),
        pair(),
        el("button", { type: "button", "class": "cf-choose", "data-cf": "choose", "aria-haspopup": "dialog", text: TEXT.choose, onclick: function () { openModal(); } })
      ])
    ]);
    document.body.appendChild(bar);
    bar.focus({ preventScroll: true });
  }

  function openModal() {
    if (modal) return;
    styles();
    modalReturn = document.activeElement;
    var cats = [];
    for (var i = 0; i < categories.length; i++) {
      var c = categories[i];
      var recipients = c.recipients || [];
      cats.push(el("div", { "class": "cf-cat" }, [
        el("label", {}, [
          el("input", { type: "checkbox", role: "switch", id: "cf-c-" + c.id, "data-category": c.id, "aria-describedby": "cf-c-" + c.id + "-d" }),
          el("span", { text: loc(c.name) })
        ]),
        el("div", { id: "cf-c-" + c.id + "-d" }, [
          el("p", { text: loc(c.description) }),
          loc(c.collects) ? el("p", { text: TEXT.collects + loc(c.collects) }) : null,
          recipients.length ? el("p", { text: TEXT.recipients + (Array.isArray(recipients) ? recipients.join(", ") : loc(recipients)) }) : null
        ])
      ]));
    }
    var err = el("p", { "class": "cf-err", role: "status" });
    var manage = choice
      ? el("button", { type: "button", "class": "cf-link", "data-cf": "manage", text: TEXT.manage, onclick: function () { preferences(err); } })
      : null;
    var dlg = el("div", { "class": "cf-dlg", role: "dialog", "aria-modal": "true", "aria-labelledby": "cf-m-t", "aria-describedby": "cf-m-d", tabindex: "-1", lang: lang }, [
      el("h2", { id: "cf-m-t", text: TEXT.panelTitle }),
      el("p", { id: "cf-m-d", "class": "cf-intro", text: TEXT.panelIntro }),
      el("div", {}, cats),
      el("p", { "class": "cf-note", text: TEXT.necessary.replace("%s", CONFIG.cookie).replace("%d", CONFIG.validityDays) }),
      manage,
      err,
      el("div", { "class": "cf-row" }, [
        el("button", { type: "button", "class": "cf-b", "data-cf": "refuse", text: TEXT.refuse, onclick: function () { decide(all(false)); } }),
        el("button", { type: "button", "class": "cf-b", "data-cf": "accept", text: TEXT.accept, onclick: function () { decide(all(true)); } }),
        el("button", { type: "button", "class": "cf-b", "data-cf": "save", text: TEXT.save, onclick: function () {
          var picked = {};
          var boxes = dlg.querySelectorAll("input[data-category]");
          for (var j = 0; j < boxes.length; j++) picked[boxes[j].getAttribute("data-category")] = boxes[j].checked;
          decide(picked);
        } })
      ]),
      el("button", { type: "button", "class": "cf-x", "data-cf": "close", "aria-label": TEXT.close, text: "×", onclick: closeModal })
    ]);
    // A previous choice is shown as it was made; a first visit starts with nothing ticked.
    var boxes = dlg.querySelectorAll("input[data-category]");
    for (var b = 0; b < boxes.length; b++) boxes[b].checked = !!(choice && choice[boxes[b].getAttribute("data-category")]);
    modal = el("div", { id: "cf-modal" }, [dlg]);
    modal.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape") {
        ev.preventDefault();
        closeModal();
      } else if (ev.key === "Tab") {
        var list = focusables(dlg);
        var at = list.indexOf(document.activeElement);
        if (ev.shiftKey && at <= 0) {
          ev.preventDefault();
          list[list.length - 1].focus();
        } else if (!ev.shiftKey && (at === list.length - 1 || at < 0)) {
          ev.preventDefault();
          list[0].focus();
        }
      }
    });
    document.body.appendChild(modal);
    document.addEventListener("focusin", keepFocus, true);
    dlg.focus({ preventScroll: true });
  }

  function keepFocus(ev) {
    if (modal && !modal.contains(ev.target)) modal.firstChild.focus({ preventScroll: true });
  }

  function restore(target) {
    if (target && target !== document.body && document.contains(target) && target.focus) target.focus({ preventScroll: true });
    else if (document.activeElement && document.activeElement.blur) document.activeElement.blur();
  }

  function closeModal() {
    if (!modal) return;
    document.removeEventListener("focusin", keepFocus, true);
    modal.parentNode.removeChild(modal);
    modal = null;
    restore(modalReturn);
  }

  // After a choice everything closes and focus goes back to where it was before the banner.
  function closeAll() {
    var target = bar ? barReturn : modalReturn;
    if (modal) {
      document.removeEventListener("focusin", keepFocus, true);
      modal.parentNode.removeChild(modal);
      modal = null;
    }
    if (bar) {
      bar.parentNode.removeChild(bar);
      bar = null;
    }
    restore(target);
  }

  function preferences(err) {
    err.textContent = "";
    fetch(base + "/consent/link", { method: "POST", credentials: "include" })
      .then(function (r) {
        return r.ok ? r.json() : null;
      })
      .then(function (answer) {
        if (!answer || !answer.url) throw new Error("no url");
        location.assign(answer.url);
      })
      .catch(function () {
        err.textContent = TEXT.failed;
      });
  }

  window.Confiance = {
    version: "1",
    consent: function () {
      return copy(choice);
    },
    set: function (choices) {
      return decide(choices || {});
    },
    open: function () {
      openModal();
    },
    onChange: function (fn) {
      listeners.push(fn);
      return function () {
        var i = listeners.indexOf(fn);
        if (i >= 0) listeners.splice(i, 1);
      };
    },
    page: function (name, properties) {
      var props = pageContext();
      for (var k in properties || {}) props[k] = properties[k];
      call("page", { name: name || undefined, properties: props });
    },
    track: function (event, properties) {
      call("track", { event: event, properties: properties || {} });
    },
    identify: function (id, traits) {
      if (id !== undefined && id !== null) userId = String(id);
      call("identify", { traits: traits || {} });
    }
  };

  function start() {
    if (!choice) showBar();
  }
  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
