//! The breach register as a DPO uses it: declaring a breach counts whom it touched, the 72-hour
//! clock warns on the (manual) clock, the CNIL draft carries Art. 33(3), the Art. 34 decision
//! gates the letters, and the letters reach people by email whatever their marketing choices.

use crate::support::{ADMIN_TOKEN, SmtpSink, TestApp, read};
use confiance_core::source::SourceKind;
use confiance_server::Options;
use confiance_server::mail::Mailer;
use jiff::Timestamp;
use serde_json::{Value, json};

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

async fn call(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    read(req.send().await.unwrap()).await
}

async fn identify(app: &TestApp, key: &str, user: &str, traits: Value) {
    let (status, body) = app
        .post_as(key, "/v1/identify", &json!({"userId": user, "traits": traits}))
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn warning(app: &TestApp, id: i64, now: &str) -> String {
    app.clock.set(at(now));
    let (status, b) = call(app, reqwest::Method::GET, &format!("/api/v1/breaches/{id}"), None).await;
    assert_eq!(status, 200, "{b}");
    b["clock"]["warning"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_is_counted_clocked_drafted_decided_and_told_to_the_people() {
    let smtp = SmtpSink::start();
    let mailer = Mailer::new(
        &format!("smtp://127.0.0.1:{}", smtp.port),
        "Vinyles & Cie <dpo@vinyles.example>",
    )
    .unwrap();
    let app = TestApp::spawn_with(Options {
        mailer: Some(mailer),
        ..Options::default()
    })
    .await;
    let web = app.write_key.clone();
    let tills = app.add_source("tills", SourceKind::Store).await;

    // Emails from the web in the first days of March; one later, one from the tills. Nobody
    // gave marketing consent.
    app.clock.set(at("2026-03-02T10:00:00Z"));
    identify(&app, &web, "ana", json!({"email": "ana@example.org", "language": "en"})).await;
    identify(&app, &web, "bruno", json!({"email": "bruno@example.org"})).await;
    identify(&app, &tills, "chloe", json!({"email": "chloe@example.org"})).await;
    app.clock.set(at("2026-03-20T10:00:00Z"));
    identify(&app, &web, "dan", json!({"email": "dan@example.org"})).await;
    app.resolved().await;

    // Aware on 1 April at 08:00; declared an hour later.
    app.clock.set(at("2026-04-01T09:00:00Z"));
    let declared = json!({
        "aware_at": "2026-04-01T08:00:00Z",
        "scope": {"traits": ["email"], "sources": ["web"], "from": "2026-03-01T00:00:00Z", "to": "2026-03-10T00:00:00Z"},
        "wording": {"nature": "Un export des inscriptions a été laissé en accès public.", "consequences": "Hameçonnage possible.", "measures": "Lien supprimé, journaux analysés."},
        "wording_en": {"nature": "An export of sign-ups was left publicly accessible.", "consequences": "Possible phishing.", "measures": "Link removed, logs analysed."}
    });
    let (status, b) = call(&app, reqwest::Method::POST, "/api/v1/breaches", Some(declared)).await;
    assert_eq!(status, 201, "{b}");
    let id = b["id"].as_i64().unwrap();
    assert_eq!(
        (b["affected"]["subjects"].as_u64(), b["affected"]["records"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(b["clock"]["deadline"], "2026-04-04T08:00:00Z");
    assert_eq!(b["clock"]["warning"], "running");

    let (_, s) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/breaches/{id}/subjects"),
        None,
    )
    .await;
    let mut expected = Vec::new();
    for user in ["ana", "bruno"] {
        let (_, p) = call(
            &app,
            reqwest::Method::GET,
            &format!("/api/v1/profiles/lookup?type=user_id&value={user}"),
            None,
        )
        .await;
        expected.push(json!({"id": p["id"], "records": 1}));
    }
    expected.sort_by_key(|v| v["id"].as_i64());
    assert_eq!(s["profiles"], json!(expected), "{s}");

    // The clock, walked on the manual clock.
    assert_eq!(warning(&app, id, "2026-04-02T07:59:59Z").await, "running");
    assert_eq!(warning(&app, id, "2026-04-02T08:00:00Z").await, "forty_eight_hours");
    assert_eq!(warning(&app, id, "2026-04-03T08:00:00Z").await, "twenty_four_hours");
    assert_eq!(warning(&app, id, "2026-04-04T08:00:01Z").await, "overdue");
    let (_, list) = call(&app, reqwest::Method::GET, "/api/v1/breaches", None).await;
    assert_eq!(list["breaches"][0]["clock"]["warning"], "overdue");

    // The draft for the CNIL: French, every item of Art. 33(3), the computed figures.
    let (status, draft) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/breaches/{id}/notification"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{draft}");
    let titles: Vec<&str> = draft["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    for t in [
        "Nature de la violation",
        "Catégories de données concernées",
        "Catégories et nombre approximatif de personnes concernées",
        "Nombre approximatif d'enregistrements concernés",
        "Point de contact (délégué à la protection des données)",
        "Conséquences probables",
        "Mesures prises ou envisagées",
    ] {
        assert!(titles.contains(&t), "missing {t}: {titles:?}");
    }
    let text = draft["text"].as_str().unwrap();
    assert!(
        text.contains("environ 2 personne(s)") && text.contains("Environ 2 enregistrement(s)"),
        "{text}"
    );
    assert!(
        text.contains("dpo@vinyles-et-cie.example") && text.contains("contact"),
        "{text}"
    );

    // Late: the reasons are owed; then the clock stops, and the phase shows in the draft.
    let late = json!({"phase": "complementary", "note": "Notifiée via le téléservice", "authority_notified_at": "2026-04-04T10:00:00Z"});
    let (status, _) = call(
        &app,
        reqwest::Method::PUT,
        &format!("/api/v1/breaches/{id}"),
        Some(late.clone()),
    )
    .await;
    assert_eq!(status, 400);
    let mut with_reasons = late;
    with_reasons["delay_reasons"] = json!("Périmètre établi par le prestataire le 4 avril.");
    let (status, b) = call(
        &app,
        reqwest::Method::PUT,
        &format!("/api/v1/breaches/{id}"),
        Some(with_reasons),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["clock"]["warning"], "notified_late");
    let (_, draft) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/breaches/{id}/notification?format=text"),
        None,
    )
    .await;
    let text = draft.as_str().expect("plain text, not JSON");
    assert!(
        text.contains("notification complémentaire") && text.contains("Motifs du retard"),
        "{text}"
    );

    // No letters before a decision that calls for them; encryption exempts.
    let notify = format!("/api/v1/breaches/{id}/notify-people");
    let (status, _) = call(&app, reqwest::Method::POST, &notify, Some(json!({}))).await;
    assert_eq!(status, 409);
    let decision = format!("/api/v1/breaches/{id}/decision");
    let (_, b) = call(&app, reqwest::Method::POST, &decision, Some(json!({"high_risk": true, "exemption": "encrypted", "reasons": "Fichier chiffré (AES-256), clé non compromise."}))).await;
    assert_eq!(b["people_must_be_told"], false, "{b}");
    let (_, b) = call(
        &app,
        reqwest::Method::POST,
        &decision,
        Some(json!({"high_risk": true, "reasons": "Adresses en clair, hameçonnage probable."})),
    )
    .await;
    assert_eq!(b["people_must_be_told"], true, "{b}");

    let (status, told) = call(&app, reqwest::Method::POST, &notify, Some(json!({}))).await;
    assert_eq!(status, 200, "{told}");
    assert_eq!(
        (told["people"].as_u64(), told["sent"].as_u64()),
        (Some(2), Some(2)),
        "{told}"
    );
    let mut mails = [smtp.message(1), smtp.message(2)];
    mails.sort_by_key(|m| !m.contains("ana@example.org"));
    assert!(
        mails[0].contains("To: ana@example.org") && mails[0].contains("security incident"),
        "{}",
        mails[0]
    );
    assert!(
        mails[1].contains("To: bruno@example.org") && mails[1].contains("incident de s"),
        "{}",
        mails[1]
    );

    // Each person is recorded; telling again tells nobody twice.
    let (_, shown) = call(&app, reqwest::Method::GET, &format!("/api/v1/breaches/{id}"), None).await;
    let notices = shown["notices"].as_array().unwrap();
    assert_eq!(notices.len(), 2, "{shown}");
    assert!(
        notices.iter().all(|n| n["channel"] == "email" && n["status"] == "sent"),
        "{shown}"
    );
    let (_, again) = call(&app, reqwest::Method::POST, &notify, None).await;
    assert_eq!(
        (again["sent"].as_u64(), again["already_told"].as_u64()),
        (Some(0), Some(2)),
        "{again}"
    );
    assert_eq!(smtp.messages().len(), 2);

    // An unknown scope is refused with every problem named.
    let (status, e) = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/breaches",
        Some(json!({"aware_at": "2026-04-01T08:00:00Z", "scope": {"traits": ["shoe_size"], "to": "2026-03-10T00:00:00Z"}, "wording": {"nature": "?"}})),
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid_field")), "{e}");
}
