//! The breach register as a DPO uses it: declaring a breach counts whom it touched, the 72-hour
//! clock warns on the (manual) clock, the CNIL draft carries Art. 33(3), the Art. 34 decision
//! gates the letters, and the letters reach people by email whatever their marketing choices —
//! as a background task that resumes after a restart without telling anyone twice.

use crate::support::{ADMIN_TOKEN, Server, SmtpSink, TestApp, read};
use confiance_core::clock::Clock;
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

/// Waits until the notification task `job` of breach `id` has ended, and returns it.
async fn finished(app: &TestApp, id: i64, job: &Value) -> Value {
    let path = format!("/api/v1/breaches/{id}/notify-people/{}", job["id"]);
    for _ in 0..400 {
        let (status, j) = call(app, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{j}");
        if j["status"] == "succeeded" || j["status"] == "failed" {
            return j;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the notification task {job} did not end");
}

/// Asks for the people of breach `id` to be told; the answer is a task.
async fn notify(app: &TestApp, id: i64) -> Value {
    let path = format!("/api/v1/breaches/{id}/notify-people");
    let (status, job) = call(app, reqwest::Method::POST, &path, Some(json!({}))).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["breach_id"], id, "{job}");
    assert!(
        ["enqueued", "processing"].contains(&job["status"].as_str().unwrap()),
        "{job}"
    );
    job
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
    let notify_path = format!("/api/v1/breaches/{id}/notify-people");
    let (status, _) = call(&app, reqwest::Method::POST, &notify_path, Some(json!({}))).await;
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

    let job = notify(&app, id).await;
    let done = finished(&app, id, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        (done["people"].as_i64(), done["already_told"].as_i64()),
        (Some(2), Some(0)),
        "{done}"
    );
    assert_eq!(
        done["progress"],
        json!({"pending": 0, "sent": 2, "failed": 0}),
        "{done}"
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

    // Each person is recorded, the progress shows on the breach; telling again tells nobody
    // twice.
    let (_, shown) = call(&app, reqwest::Method::GET, &format!("/api/v1/breaches/{id}"), None).await;
    let notices = shown["notices"].as_array().unwrap();
    assert_eq!(notices.len(), 2, "{shown}");
    assert!(
        notices.iter().all(|n| n["channel"] == "email" && n["status"] == "sent"),
        "{shown}"
    );
    let progress = &shown["people_notification"];
    assert_eq!(
        (
            progress["pending"].as_i64(),
            progress["sent"].as_i64(),
            progress["failed"].as_i64()
        ),
        (Some(0), Some(2), Some(0)),
        "{shown}"
    );
    assert_eq!(progress["jobs"][0]["id"], job["id"], "{shown}");
    let again = notify(&app, id).await;
    assert_ne!(again["id"], job["id"]);
    let again = finished(&app, id, &again).await;
    assert_eq!(
        (again["already_told"].as_i64(), again["progress"]["sent"].as_i64()),
        (Some(2), Some(2)),
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

/// Three people whose emails came from the web in March, a breach on them declared on
/// 1 April, and a decision that they must be told.
async fn breach_on_three(app: &TestApp) -> i64 {
    let web = app.write_key.clone();
    app.clock.set(at("2026-03-02T10:00:00Z"));
    for user in ["ana", "bruno", "chloe"] {
        identify(app, &web, user, json!({"email": format!("{user}@example.org")})).await;
    }
    app.resolved().await;
    app.clock.set(at("2026-04-01T09:00:00Z"));
    let declared = json!({
        "aware_at": "2026-04-01T08:00:00Z",
        "scope": {"traits": ["email"], "to": "2026-03-10T00:00:00Z"},
        "wording": {"nature": "Un export des inscriptions a été laissé en accès public."}
    });
    let (status, b) = call(app, reqwest::Method::POST, "/api/v1/breaches", Some(declared)).await;
    assert_eq!(status, 201, "{b}");
    let id = b["id"].as_i64().unwrap();
    let (status, b) = call(
        app,
        reqwest::Method::POST,
        &format!("/api/v1/breaches/{id}/decision"),
        Some(json!({"high_risk": true, "reasons": "Adresses en clair."})),
    )
    .await;
    assert_eq!(b["people_must_be_told"], true, "{status} {b}");
    id
}

async fn profile_id(app: &TestApp, user: &str) -> i64 {
    let (_, p) = call(
        app,
        reqwest::Method::GET,
        &format!("/api/v1/profiles/lookup?type=user_id&value={user}"),
        None,
    )
    .await;
    p["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telling_people_resumes_after_a_restart_without_telling_anyone_twice() {
    use confiance_store::NoticePlan;
    let smtp = SmtpSink::start();
    let mailer = Mailer::new(&format!("smtp://127.0.0.1:{}", smtp.port), "dpo@vinyles.example").unwrap();
    let app = TestApp::spawn_with(Options {
        mailer: Some(mailer),
        ..Options::default()
    })
    .await;
    let id = breach_on_three(&app).await;
    let (ana, bruno, chloe) = (
        profile_id(&app, "ana").await,
        profile_id(&app, "bruno").await,
        profile_id(&app, "chloe").await,
    );

    // The node goes down: the request is kept, enqueued, and nobody works it.
    app.stop_workers();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let job = notify(&app, id).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, shown) = call(&app, reqwest::Method::GET, &format!("/api/v1/breaches/{id}"), None).await;
    assert_eq!(shown["people_notification"]["jobs"][0]["status"], "enqueued", "{shown}");

    // Another node took the task, told ana, and died while telling bruno.
    let now = app.clock.now();
    let claimed = app
        .store
        .claim_breach_job(now, now + jiff::SignedDuration::from_mins(10))
        .await
        .unwrap()
        .expect("the enqueued task is claimed");
    assert_eq!(claimed.id, job["id"].as_i64().unwrap());
    let plan = NoticePlan {
        notices: [ana, bruno, chloe].map(|p| (p, "email".to_owned())).to_vec(),
        people: 3,
        ..NoticePlan::default()
    };
    app.store.plan_breach_job(&claimed, plan, now).await.unwrap();
    for p in [ana, bruno] {
        assert!(app.store.start_breach_notice(id, p, "email", now).await.unwrap());
    }
    let told = confiance_store::BreachNotice {
        profile_id: ana,
        channel: "email".into(),
        status: "sent".into(),
        detail: None,
        at: now,
    };
    app.store.record_breach_notice(id, &told).await.unwrap();

    // Restarted after the dead node's lease ran out: only chloe is told now; bruno's outcome
    // is unknown, so he is not told again automatically.
    app.clock.set(now + jiff::SignedDuration::from_mins(11));
    app.start_breach_worker();
    let done = finished(&app, id, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["progress"],
        json!({"pending": 0, "sent": 2, "failed": 1}),
        "{done}"
    );
    assert!(smtp.message(1).contains("To: chloe@example.org"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(smtp.messages().len(), 1, "ana was told before the restart");
    let (_, shown) = call(&app, reqwest::Method::GET, &format!("/api/v1/breaches/{id}"), None).await;
    let bruno_notice = shown["notices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["profile_id"] == bruno)
        .unwrap()
        .clone();
    assert_eq!(bruno_notice["status"], "failed", "{shown}");
    assert_eq!(bruno_notice["detail"], confiance_store::INTERRUPTED);

    // Asking again retries only what was not sent.
    let again = notify(&app, id).await;
    let again = finished(&app, id, &again).await;
    assert_eq!(
        (again["already_told"].as_i64(), again["progress"]["sent"].as_i64()),
        (Some(2), Some(3)),
        "{again}"
    );
    assert!(smtp.message(2).contains("To: bruno@example.org"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(smtp.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_people_told_of_a_breach_see_it_in_their_access_archive_and_erasure_removes_it() {
    let smtp = SmtpSink::start();
    let mailer = Mailer::new(&format!("smtp://127.0.0.1:{}", smtp.port), "dpo@vinyles.example").unwrap();
    let app = TestApp::spawn_with(Options {
        mailer: Some(mailer),
        ..Options::default()
    })
    .await;
    let id = breach_on_three(&app).await;
    let ana = profile_id(&app, "ana").await;
    let done = finished(&app, id, &notify(&app, id).await).await;
    assert_eq!(done["progress"]["sent"], 3, "{done}");

    let request = |kind: &str| json!({"type": kind, "subject": {"type": "email", "value": "ana@example.org"}});
    let (status, access) = call(&app, reqwest::Method::POST, "/api/v1/requests", Some(request("access"))).await;
    assert_eq!(status, 201, "{access}");
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/requests/{}/process", access["id"]),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, archive) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/requests/{}/archive", access["id"]),
        None,
    )
    .await;
    let notices = archive["breach_notices"]
        .as_array()
        .expect("breach notices in the archive");
    assert_eq!(notices.len(), 1, "{archive}");
    assert_eq!(
        (
            notices[0]["breach"].as_i64(),
            notices[0]["channel"].as_str(),
            notices[0]["status"].as_str()
        ),
        (Some(id), Some("email"), Some("sent"))
    );
    assert!(notices[0]["nature"].as_str().unwrap().contains("accès public"));
    let resp = app
        .http
        .get(app.url(&format!(
            "/api/v1/requests/{}/archive?format=csv&kind=breach_notices",
            access["id"]
        )))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let csv = resp.text().await.unwrap();
    assert!(
        csv.starts_with("breach,nature,channel,status,at") && csv.contains(",email,sent,"),
        "{csv}"
    );

    let (_, erasure) = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/requests",
        Some(request("erasure")),
    )
    .await;
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/requests/{}/process", erasure["id"]),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = call(&app, reqwest::Method::GET, &format!("/api/v1/breaches/{id}"), None).await;
    let told: Vec<i64> = shown["notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["profile_id"].as_i64().unwrap())
        .collect();
    assert_eq!(told.len(), 2, "{shown}");
    assert!(!told.contains(&ana), "the erased person's notice is gone: {shown}");
    assert!(app.store.breach_notices_of(ana).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_last_day_before_the_deadline_shows_in_the_register_and_the_compliance_check() {
    let app = TestApp::spawn().await;
    app.clock.set(at("2026-04-01T09:00:00Z"));
    let declared = json!({
        "aware_at": "2026-04-01T08:00:00Z",
        "scope": {"traits": ["email"], "to": "2026-03-10T00:00:00Z"},
        "wording": {"nature": "Ordinateur portable volé."}
    });
    let (status, b) = call(&app, reqwest::Method::POST, "/api/v1/breaches", Some(declared)).await;
    assert_eq!(status, 201, "{b}");
    let id = b["id"].as_i64().unwrap();
    let pushed = |now: &'static str| {
        let app = &app;
        async move {
            app.clock.set(at(now));
            let (_, list) = call(app, reqwest::Method::GET, "/api/v1/breaches", None).await;
            let (_, report) = call(app, reqwest::Method::GET, "/api/v1/compliance", None).await;
            let rule = report["rules"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["rule"] == "breaches_notified_in_72h")
                .unwrap()
                .clone();
            (list["warnings"].clone(), rule)
        }
    };

    let (warnings, rule) = pushed("2026-04-03T07:59:59Z").await;
    assert_eq!((warnings, rule["evidence"]["due_soon"].clone()), (json!([]), json!([])));
    let (warnings, rule) = pushed("2026-04-03T08:00:00Z").await;
    assert_eq!(warnings.as_array().unwrap().len(), 1, "{warnings}");
    assert_eq!(
        (warnings[0]["breach"].as_i64(), warnings[0]["warning"].as_str()),
        (Some(id), Some("twenty_four_hours"))
    );
    assert_eq!(warnings[0]["deadline"], "2026-04-04T08:00:00Z");
    assert_eq!(rule["outcome"], "pass", "not late yet: {rule}");
    assert_eq!(rule["evidence"]["due_soon"][0]["breach"], format!("breach:{id}"));
    assert_eq!(rule["evidence"]["due_soon"][0]["warning"], "twenty_four_hours");

    let (warnings, rule) = pushed("2026-04-03T20:00:00Z").await;
    assert_eq!(warnings[0]["warning"], "twelve_hours");
    assert_eq!(rule["evidence"]["due_soon"][0]["warning"], "twelve_hours");
    assert_eq!(warning(&app, id, "2026-04-03T20:00:00Z").await, "twelve_hours");

    let (status, _) = call(
        &app,
        reqwest::Method::PUT,
        &format!("/api/v1/breaches/{id}"),
        Some(json!({"phase": "initial", "authority_notified_at": "2026-04-03T21:00:00Z"})),
    )
    .await;
    assert_eq!(status, 200);
    let (warnings, rule) = pushed("2026-04-03T22:00:00Z").await;
    assert_eq!((warnings, rule["evidence"]["due_soon"].clone()), (json!([]), json!([])));
}

#[tokio::test]
async fn the_server_logs_a_breach_entering_its_last_day_without_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let server = Server::start(&["--data-dir", &data_dir], &[("CONFIANCE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let now = Timestamp::now();
    let nature = "Le fichier de zoe.secret@example.org a fuité";
    let declared = json!({
        "aware_at": (now - jiff::SignedDuration::from_hours(50)).to_string(),
        "scope": {"traits": ["email"], "to": now.to_string()},
        "wording": {"nature": nature}
    });
    let (status, b) = read(
        reqwest::Client::new()
            .post(server.url("/api/v1/breaches"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&declared)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{b}");
    let line = 'found: {
        for _ in 0..100 {
            if let Some(line) = server.log().lines().find(|l| l.contains("the deadline is near")) {
                break 'found line.to_owned();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no warning logged:\n{}", server.log());
    };
    assert!(
        line.contains("WARN") && line.contains(&format!("breach={}", b["id"])) && line.contains("twenty_four_hours"),
        "{line}"
    );
    assert!(line.contains("hours_left=21"), "{line}");
    let log = server.log();
    assert!(!log.contains("zoe.secret") && !log.contains("a fuité"), "{log}");
    assert_eq!(
        log.matches("the deadline is near").count(),
        1,
        "warned once per level: {log}"
    );
}

/// Declares, on 1 April, a breach of the emails received before 10 March from `sources` (every
/// source when empty); returns the breach.
async fn declare_emails(app: &TestApp, sources: &[&str]) -> Value {
    app.clock.set(at("2026-04-01T09:00:00Z"));
    let declared = json!({
        "aware_at": "2026-04-01T08:00:00Z",
        "scope": {"traits": ["email"], "sources": sources, "to": "2026-03-10T00:00:00Z"},
        "wording": {"nature": "Un export des inscriptions a été laissé en accès public."}
    });
    let (status, b) = call(app, reqwest::Method::POST, "/api/v1/breaches", Some(declared)).await;
    assert_eq!(status, 201, "{b}");
    b
}

/// Whom the store's own statement over the whole log finds for [`declare_emails`], as the
/// register lists them.
async fn emails_by_the_store(app: &TestApp, sources: &[&str]) -> Value {
    let known = app.store.list_sources().await.unwrap();
    let whole = app
        .store
        .breach_touched(&confiance_store::TouchedQuery {
            traits: vec!["email".into()],
            sources: known
                .iter()
                .filter(|s| sources.is_empty() || sources.contains(&s.name.as_ref()))
                .map(|s| s.id)
                .collect(),
            from: None,
            to: at("2026-03-10T00:00:00Z"),
            after: None,
        })
        .await
        .unwrap();
    json!(
        whole
            .profiles
            .iter()
            .map(|(p, n)| json!({"id": p, "records": n}))
            .collect::<Vec<_>>()
    )
}

/// The register's figures come from the in-memory exposure index for what the change feed has
/// read and from the store for the rest: declared while a merge is fresh and an event is not
/// yet indexed, the answer is the store's own count of the whole log, and follows the merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposure_index_and_the_log_after_it_count_as_the_store_does() {
    let app = TestApp::spawn().await;
    let web = app.write_key.clone();
    let tills = app.add_source("tills", SourceKind::Store).await;
    app.clock.set(at("2026-03-02T10:00:00Z"));
    // A visitor leaves her work email in a form before having an account.
    let (status, body) = app
        .post_as(
            &web,
            "/v1/identify",
            &json!({"anonymousId": "visit-1", "traits": {"email": "eve.pro@example.org"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for user in ["eve", "farid", "gina"] {
        identify(&app, &web, user, json!({"email": format!("{user}@example.org")})).await;
    }
    identify(
        &app,
        &tills,
        "farid",
        json!({"email": "farid@example.org", "phone": "+33612345678"}),
    )
    .await;
    identify(&app, &web, "gina", json!({"first_name": "Gina"})).await;
    app.indexed().await;
    let visitor = app
        .store
        .profiles_of_keys(vec!["anonymous_id:visit-1".into()])
        .await
        .unwrap();
    assert_ne!(
        visitor,
        [profile_id(&app, "eve").await],
        "two profiles before she logs in"
    );

    // She logs in on the same browser (a merge), and one more email arrives: resolved into
    // profiles, but not necessarily read by the index when the breach is declared.
    let (status, body) = app
        .post_as(
            &web,
            "/v1/identify",
            &json!({"userId": "eve", "anonymousId": "visit-1", "traits": {"email": "eve@example.org"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    identify(&app, &web, "hugo", json!({"email": "hugo@example.org"})).await;
    app.resolved().await;

    let b = declare_emails(&app, &["web"]).await;
    let id = b["id"].as_i64().unwrap();
    let (_, s) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/breaches/{id}/subjects"),
        None,
    )
    .await;

    // The store's own statement over the whole log.
    let expected = emails_by_the_store(&app, &["web"]).await;
    assert_eq!(s["profiles"], expected, "{s}");
    let eve = profile_id(&app, "eve").await;
    assert!(
        expected.as_array().unwrap().contains(&json!({"id": eve, "records": 3})),
        "her form, her account and her login are one person: {s}"
    );
    assert_eq!(
        (b["affected"]["subjects"].as_u64(), b["affected"]["records"].as_u64()),
        (Some(4), Some(6)),
        "eve (3), farid, gina and hugo from the web; the tills and a first name are out: {b}"
    );
}

/// A profile with more events than a segment reads: the exposure index still holds every one
/// of them that carries traits (the rest read from the trait names kept beside the events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_with_more_events_than_a_segment_reads_is_counted_whole() {
    let app = TestApp::spawn().await;
    let web = app.write_key.clone();
    app.clock.set(at("2026-03-02T10:00:00Z"));
    let total = 20_500;
    for chunk in 0..total / 500 {
        let batch: Vec<Value> = (0..500)
            .map(|i| {
                let n = chunk * 500 + i;
                json!({"type": "identify", "userId": "till-regular", "messageId": format!("m{n}"),
                       "traits": {"email": "regular@example.org", "city": if n % 2 == 0 { "Lyon" } else { "Paris" }}})
            })
            .collect();
        let (status, body) = app.post_as(&web, "/v1/batch", &json!({"batch": batch})).await;
        assert_eq!(status, 200, "{body}");
    }
    app.indexed().await;
    let b = declare_emails(&app, &[]).await;
    assert_eq!(
        (b["affected"]["subjects"].as_u64(), b["affected"]["records"].as_u64()),
        (Some(1), Some(total as u64)),
        "{b}"
    );
}

/// More events than the server reads from the change feed before answering: the exposure index
/// counts up to its position, the store counts the rest, and together they are the store's
/// count of the whole log — nothing twice (the index already holds some later events of the
/// profiles it re-read), nothing missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_index_has_not_read_is_counted_by_the_store_once() {
    let app = TestApp::spawn().await;
    let web = app.write_key.clone();
    app.clock.set(at("2026-03-02T10:00:00Z"));
    identify(&app, &web, "ivy", json!({"email": "ivy@example.org"})).await;
    app.indexed().await;
    // The node's follower stops; 18,000 messages arrive and are resolved into profiles.
    app.stop_workers();
    let total = 18_000;
    for chunk in 0..total / 500 {
        let batch: Vec<Value> = (0..500)
            .map(|i| {
                let n = chunk * 500 + i;
                let user = ["ivy", "jon", "kim"][n % 3];
                let traits = if n % 4 == 0 {
                    json!({"first_name": "X"})
                } else {
                    json!({"email": format!("{user}@example.org")})
                };
                json!({"type": "identify", "userId": user, "messageId": format!("m{n}"), "traits": traits})
            })
            .collect();
        let (status, body) = app.post_as(&web, "/v1/batch", &json!({"batch": batch})).await;
        assert_eq!(status, 200, "{body}");
    }
    let state = &app.state;
    while app
        .store
        .resolve_pending(state.catalog.clone(), state.guards.clone(), 5_000)
        .await
        .unwrap()
        .events
        > 0
    {}

    let b = declare_emails(&app, &[]).await;
    let (status, audience) = call(&app, reqwest::Method::GET, "/api/v1/audience", None).await;
    assert_eq!(status, 200, "{audience}");
    let (_, head) = app.store.unify_status().await.unwrap();
    assert!(
        audience["feed"]["events"].as_i64().unwrap() < head,
        "the index has not read everything: {audience}"
    );
    let id = b["id"].as_i64().unwrap();
    let (_, s) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/breaches/{id}/subjects"),
        None,
    )
    .await;
    assert_eq!(s["profiles"], emails_by_the_store(&app, &[]).await, "{s}");
    assert_eq!(
        (b["affected"]["subjects"].as_u64(), b["affected"]["records"].as_u64()),
        (Some(3), Some(1 + total as u64 * 3 / 4)),
        "{b}"
    );
}
