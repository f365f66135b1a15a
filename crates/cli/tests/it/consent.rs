//! Consent as a user notices it: the ledger with its proof, the preference centre, the banner's
//! choice endpoint, and collection that keeps only what a legal basis allows.

use crate::support::{ADMIN_TOKEN, TestApp, read};
use serde_json::{Value, json};

impl TestApp {
    async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        read(
            self.http
                .post(self.url(path))
                .bearer_auth(ADMIN_TOKEN)
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn admin_get(&self, path: &str) -> (u16, Value) {
        read(
            self.http
                .get(self.url(path))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn history(&self, kind: &str, value: &str) -> Value {
        let (status, body) = self
            .admin_get(&format!("/api/v1/consents?type={kind}&value={value}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn link_for(&self, kind: &str, value: &str) -> String {
        let (status, body) = self
            .admin_post(
                "/api/v1/preference-links",
                &json!({"subject": {"type": kind, "value": value}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["url"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn decisions_are_recorded_with_their_proof_and_bad_ones_are_named() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .admin_post(
            "/api/v1/consents",
            &json!({"consents": [
                {"subject": {"type": "email", "value": "Ana@Example.org"}, "purpose": "marketing_email", "status": "granted",
                 "method": "form", "touchpoint": "newsletter_signup", "source": "web", "ip": "203.0.113.9",
                 "user_agent": "Mozilla/5.0", "notice": {"version": "form-3", "hash": "c0ffee"}, "proof": {"form_id": "footer"}},
                {"subject": {"type": "email", "value": "ana@example.org"}, "purpose": "nope", "status": "granted"},
                {"subject": {"type": "email", "value": "ana@example.org"}, "purpose": "marketing_sms", "status": "maybe"},
                {"subject": {"type": "email", "value": "not-an-email"}, "purpose": "marketing_sms", "status": "granted"},
                {"subject": {"type": "email", "value": "ana@example.org"}, "purpose": "service", "status": "granted"},
                {"subject": {"type": "phone", "value": "+33 6 12 34 56 78"}, "purpose": "marketing_sms", "status": "granted"},
                {"subject": {"type": "email", "value": "ana@example.org"}, "purpose": "advertising", "status": "granted", "method": "gpc"},
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let recorded: Vec<u64> = body["recorded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(recorded, [0, 5]);
    let rejected: Vec<(u64, String)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["message"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(rejected.len(), 5, "{rejected:?}");
    assert!(rejected[0].1.contains("unknown purpose `nope`"));
    assert!(rejected[1].1.contains("granted, denied or withdrawn"));
    assert!(rejected[2].1.contains("not an email address"));
    assert!(rejected[3].1.contains("not based on consent"));
    assert!(rejected[4].1.contains("never a consent"));

    let ana = app.history("email", "ana@example.org").await;
    let entry = &ana["history"][0];
    assert_eq!(ana["state"]["marketing_email"]["status"], "granted");
    assert_eq!(entry["method"], "form");
    assert_eq!(entry["touchpoint"], "newsletter_signup");
    assert_eq!(entry["notice_version"], "form-3");
    assert_eq!(entry["proof"], json!({"form_id": "footer"}));
    let ip_hash = entry["ip_hash"].as_str().unwrap();
    assert_eq!(ip_hash.len(), 64);
    assert!(!ip_hash.contains("203.0.113.9"));
    assert_eq!(entry["recorded_at"], app.clock_now(), "dated by the server's clock");

    let (_, receipts) = app
        .admin_get("/api/v1/consents/receipts?type=email&value=ana@example.org")
        .await;
    let r = &receipts["receipts"][0];
    assert_eq!(r["version"], "KI-CR-v1.1.0");
    assert_eq!(r["piiPrincipalId"], "ana@example.org");
    assert_eq!(r["collectionMethod"], "form");
    assert_eq!(r["state"], "given");
    assert_eq!(r["piiControllers"][0]["piiController"], "Vinyles & Cie SAS");
    assert_eq!(r["services"][0]["purposes"][0]["purposeId"], "marketing_email");
    assert_eq!(r["notice"]["version"], "form-3");

    let (status, body) = app
        .admin_post("/api/v1/consents", &json!({"consents": [{"purpose": "x"}]}))
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("no_valid_message")));
    let (status, _) = read(
        app.http
            .post(app.url("/api/v1/consents"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
}

impl TestApp {
    fn clock_now(&self) -> String {
        use confiance_core::clock::Clock;
        let t = self.clock.now();
        jiff::Timestamp::from_microsecond(t.as_microsecond())
            .unwrap()
            .to_string()
    }
}

#[tokio::test]
async fn stats_count_current_decisions_by_source_and_touchpoint() {
    let app = TestApp::spawn().await;
    let mut consents = Vec::new();
    for i in 0..10 {
        let status = if i < 6 { "granted" } else { "denied" };
        let touchpoint = if i % 2 == 0 { "newsletter_signup" } else { "contest" };
        consents.push(
            json!({"subject": {"type": "email", "value": format!("p{i}@example.org")},
            "purpose": "marketing_email", "status": status, "touchpoint": touchpoint, "source": "web"}),
        );
    }
    // One person changes their mind: only the latest decision counts.
    consents.push(
        json!({"subject": {"type": "email", "value": "p0@example.org"}, "purpose": "marketing_email",
        "status": "withdrawn", "touchpoint": "contest", "source": "web"}),
    );
    let (status, _) = app
        .admin_post("/api/v1/consents", &json!({ "consents": consents }))
        .await;
    assert_eq!(status, 201);
    let (_, stats) = app.admin_get("/api/v1/consent/stats").await;
    let m = stats["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["purpose"] == "marketing_email")
        .unwrap();
    assert_eq!(
        (m["granted"].as_i64(), m["denied"].as_i64(), m["withdrawn"].as_i64()),
        (Some(5), Some(4), Some(1))
    );
    assert_eq!(m["granted_rate"], 0.5);
    assert_eq!(m["by_source"][0]["source"], "web");
    let contest = m["by_touchpoint"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["touchpoint"] == "contest")
        .unwrap();
    // p1, p3, p5 granted at a contest; p7, p9 denied; p0 withdrew there.
    assert_eq!(
        (
            contest["granted"].as_i64(),
            contest["denied"].as_i64(),
            contest["withdrawn"].as_i64()
        ),
        (Some(3), Some(2), Some(1))
    );
}

#[tokio::test]
async fn preference_links_refuse_tampered_expired_and_forged_tokens_alike() {
    let app = TestApp::spawn().await;
    let ana = app.link_for("email", "ana@example.org").await;
    let bob = app.link_for("email", "bob@example.org").await;
    let page = |url: String| {
        let http = app.http.clone();
        async move {
            let resp = http.get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (status, html) = page(ana.clone()).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("a…@example.org"),
        "the page names whose preferences these are, masked"
    );
    assert!(!html.contains("ana@example.org"), "without spelling out the address");
    for purpose in ["marketing_email", "marketing_sms", "analytics", "advertising"] {
        assert!(
            html.contains(&format!("data-purpose=\"{purpose}\"")),
            "{purpose} can be changed"
        );
    }
    assert!(html.contains("Vos droits"));

    let token = |url: &str| url.split("token=").nth(1).unwrap().to_owned();
    let (ana_payload, ana_sig) = token(&ana)
        .split_once('.')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let bob_payload = token(&bob).split('.').next().unwrap().to_owned();
    let mut tampered = ana_payload.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let refused = [
        format!(
            "{}/preferences?token={}.{ana_sig}",
            app.base,
            String::from_utf8(tampered).unwrap()
        ),
        format!("{}/preferences?token={bob_payload}.{ana_sig}", app.base),
        format!("{}/preferences?token=garbage", app.base),
        format!("{}/preferences", app.base),
    ];
    let mut bodies = Vec::new();
    for url in refused {
        let (status, html) = page(url).await;
        assert_eq!(status, 403);
        assert!(!html.contains("example.org"));
        bodies.push(html);
    }
    app.clock.set(
        jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24 * 31))
            .unwrap(),
    );
    let (status, expired) = page(ana.clone()).await;
    assert_eq!(status, 403, "links expire after the configured 30 days");
    bodies.push(expired);
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every refusal reads the same: nothing is revealed"
    );

    // Posting with a refused token changes nothing.
    let resp = app
        .http
        .post(format!("{}/preferences?token={bob_payload}.{ana_sig}", app.base))
        .form(&[("purpose", "marketing_email"), ("action", "grant")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(
        app.history("email", "bob@example.org").await["history"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        app.history("email", "ana@example.org").await["history"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_choice_in_the_banner_then_a_withdrawal_in_the_preference_centre() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let script = http
        .get(app.url("/consent.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let config: Value = {
        let start = script.find("var CONFIG = ").unwrap() + "var CONFIG = ".len();
        let end = script[start..].find(";\n").unwrap() + start;
        serde_json::from_str(&script[start..end]).unwrap()
    };
    let version = config["notice"]["version"].as_str().unwrap().to_owned();
    let hash = config["notice"]["hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);
    let ids: Vec<&str> = config["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["advertising", "analytics", "personalisation"]);

    let choice = |notice: &str, choices: Value| {
        json!({"anonymousId": "browser-42", "choices": choices, "notice": {"version": notice, "hash": hash},
               "language": "fr", "touchpoint": "site_visit"})
    };
    let resp = http
        .post(app.url("/consent/choice"))
        .body(choice("1999", json!({"analytics": true})).to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("stale_notice")));
    let resp = http
        .post(app.url("/consent/choice"))
        .body(choice(&version, json!({"tracking": true})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let resp = http
        .post(app.url("/consent/choice"))
        .header("user-agent", "Mozilla/5.0 (test)")
        .body(choice(&version, json!({"analytics": true, "advertising": false})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("confiance_consent="));
    assert!(cookie.contains("Path=/") && cookie.contains("SameSite=Lax"));
    let max_age: i64 = cookie
        .split("Max-Age=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (181 * 86_400..=184 * 86_400).contains(&max_age),
        "six months: {max_age}"
    );
    let history = app.history("anonymous_id", "browser-42").await;
    let analytics = &history["state"]["analytics"];
    assert_eq!(analytics["status"], "granted");
    assert_eq!(analytics["method"], "banner");
    assert_eq!(analytics["notice_version"], version.as_str());
    assert_eq!(analytics["notice_hash"], hash.as_str());
    assert_eq!(
        history["state"]["personalisation"]["status"], "denied",
        "left out is refused"
    );
    assert!(analytics["ua_hash"].as_str().is_some());

    let page = json!({"type": "page", "anonymousId": "browser-42", "properties": {"path": "/"}});
    let (_, body) = app.post("/v1/page", &page).await;
    assert_eq!(body["accepted"], 1, "{body}");

    let cookie_pair = cookie.split(';').next().unwrap().to_owned();
    let link = http
        .post(app.url("/consent/link"))
        .header("cookie", &cookie_pair)
        .send()
        .await
        .unwrap();
    let (status, link) = read(link).await;
    assert_eq!(status, 200, "{link}");
    let url = link["url"].as_str().unwrap().to_owned();
    let forged = cookie_pair.replace("confiance_consent=", "confiance_consent=x");
    let refused = http
        .post(app.url("/consent/link"))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);

    let resp = http
        .post(&url)
        .header("cookie", &cookie_pair)
        .form(&[("purpose", "analytics"), ("action", "withdraw")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    // The browser's own cookie follows the withdrawal, so its script stops sending.
    let renewed = resp.headers()["set-cookie"].to_str().unwrap();
    let value = renewed
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("confiance_consent=");
    use base64::Engine as _;
    let consent: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).unwrap()).unwrap();
    assert_eq!(consent["c"]["analytics"], 0);
    assert_eq!(consent["a"], "browser-42");
    let page_again = http
        .get(app.url(resp.headers()["location"].to_str().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page_again.contains("Vos choix ont été enregistrés"));
    assert_eq!(
        app.history("anonymous_id", "browser-42").await["state"]["analytics"]["status"],
        "withdrawn"
    );

    let (status, body) = app
        .post(
            "/v1/page",
            &json!({"type": "page", "anonymousId": "browser-42", "properties": {"path": "/2"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["withheld"][0]["reason"], "no_legal_basis");
    let stored = app
        .store
        .events_of(
            confiance_store::Access::Administration,
            &confiance_store::Who::AnonymousId("browser-42".into()),
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "the event after the withdrawal is not stored");
}

#[tokio::test]
async fn consent_signals_in_messages_are_recorded_once_and_obeyed() {
    let app = TestApp::spawn().await;
    let page = |n: u32, prefs: Value| {
        json!({"type": "page", "messageId": format!("m{n}"), "anonymousId": "visitor-1", "properties": {"path": "/"},
               "context": {"consent": {"categoryPreferences": prefs}, "ip": "198.51.100.4"}})
    };
    let batch: Vec<Value> = (0..5)
        .map(|n| page(n, json!({"Analytics": true, "Advertising": false})))
        .collect();
    let (_, body) = app.post("/v1/batch", &json!({"batch": batch})).await;
    assert_eq!(body["accepted"], 5, "{body}");
    let history = app.history("anonymous_id", "visitor-1").await;
    let entries = history["history"].as_array().unwrap();
    assert_eq!(
        entries.len(),
        2,
        "one decision per purpose named, not one per message: {entries:?}"
    );
    assert_eq!(history["state"]["analytics"]["method"], "signal");
    assert_eq!(history["state"]["analytics"]["proof"]["message_id"], "m0");
    assert!(history["state"]["analytics"]["ip_hash"].as_str().is_some());

    // Segment's empty preferences mean no consent at all: a withdrawal, and the page is withheld.
    let (_, body) = app.post("/v1/batch", &json!({"batch": [page(9, json!({}))]})).await;
    assert_eq!(
        (body["accepted"].as_i64(), body["withheld"].as_array().unwrap().len()),
        (Some(0), 1)
    );
    assert_eq!(
        app.history("anonymous_id", "visitor-1").await["state"]["analytics"]["status"],
        "withdrawn"
    );

    // RudderStack's consent management.
    let rudder = json!({"type": "page", "anonymousId": "visitor-2", "properties": {"path": "/"},
        "context": {"consentManagement": {"provider": "custom", "allowedConsentIds": ["analytics"], "deniedConsentIds": ["advertising"]}}});
    let (_, body) = app.post("/v1/page", &rudder).await;
    assert_eq!(body["accepted"], 1);
    let v2 = app.history("anonymous_id", "visitor-2").await;
    assert_eq!(
        (
            v2["state"]["analytics"]["status"].as_str(),
            v2["state"]["advertising"]["status"].as_str()
        ),
        (Some("granted"), Some("denied"))
    );

    // Global Privacy Control refuses advertising whatever the message claims, and never grants.
    let resp = app
        .http
        .post(app.url("/v1/page"))
        .basic_auth(&app.write_key, Some(""))
        .header("sec-gpc", "1")
        .json(
            &json!({"type": "page", "anonymousId": "visitor-3", "properties": {"path": "/"},
                      "context": {"consent": {"categoryPreferences": {"Advertising": true, "Analytics": true}}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v3 = app.history("anonymous_id", "visitor-3").await;
    assert_eq!(v3["state"]["advertising"]["status"], "denied");
    assert_eq!(v3["state"]["advertising"]["method"], "gpc");
    assert_eq!(v3["state"]["analytics"]["status"], "granted");

    // A malformed TC string is reported and ignored.
    let (_, body) = app
        .post("/v1/page", &json!({"type": "page", "anonymousId": "visitor-4", "context": {"consent": {"tcString": "not a tc string"}}}))
        .await;
    assert_eq!(body["dropped"][0]["field"], "context.consent.tcString");
    assert_eq!(body["dropped"][0]["reason"], "invalid_consent_signal");
    assert_eq!(body["withheld"].as_array().unwrap().len(), 1);

    let sources = app.admin_get("/api/v1/sources").await.1;
    assert_eq!(
        sources[0]["counters"]["withheld.no_legal_basis"], 2,
        "withheld messages are counted anonymously"
    );
}
