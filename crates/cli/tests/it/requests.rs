//! Data-subject requests as a DPO and a customer notice them: deadlines, access archives,
//! objection, restriction and rectification carried out and provable.

use crate::support::{ADMIN_TOKEN, TestApp, read};
use confiance_core::catalog::Catalog;
use confiance_core::consent::IdKind;
use confiance_store::{Access, Who};
use serde_json::{Value, json};

impl TestApp {
    async fn staff(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.unwrap()).await
    }

    async fn request(&self, kind: &str, email: &str, details: Value) -> Value {
        let (status, body) = self
            .staff(
                reqwest::Method::POST,
                "/api/v1/requests",
                Some(json!({"type": kind, "subject": {"type": "email", "value": email}, "details": details})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn process(&self, id: &Value) -> Value {
        let (status, body) = self
            .staff(reqwest::Method::POST, &format!("/api/v1/requests/{id}/process"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "done");
        body
    }
}

#[tokio::test]
async fn requests_follow_their_legal_deadlines() {
    let app = TestApp::spawn().await;
    app.clock.set("2026-01-31T09:00:00Z".parse().unwrap());
    let staff = app.request("access", "ana@example.org", Value::Null).await;
    assert_eq!(
        (staff["status"].as_str(), staff["verified"].as_bool()),
        (Some("in_progress"), Some(true)),
        "staff-entered counts as verified"
    );
    assert_eq!(
        staff["due_at"], "2026-02-28T09:00:00Z",
        "one calendar month, clamped to February's end"
    );
    let (status, public) = read(
        app.http
            .post(app.url("/api/v1/requests"))
            .json(&json!({"type": "erasure", "subject": {"type": "email", "value": "bob@example.org"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        public["status"], "verifying",
        "the subject must first prove who they are"
    );
    let (status, body) = read(
        app.http
            .post(app.url("/api/v1/requests"))
            .json(&json!({"type": "forget", "subject": {"type": "email", "value": "x@example.org"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_field")));

    let id = &staff["id"];
    app.clock.set("2026-02-10T09:00:00Z".parse().unwrap());
    let (status, _) = app
        .staff(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{id}/extend"),
            Some(json!({"until": "2026-04-30T08:00:00Z", "reason": "x"})),
        )
        .await;
    assert_eq!(status, 400, "an extension needs its reason");
    let (status, extended) = app
        .staff(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{id}/extend"),
            Some(json!({"until": "2026-04-30T08:00:00Z", "reason": "many requests after the data breach notice"})),
        )
        .await;
    assert_eq!(status, 200, "{extended}");
    assert_eq!(extended["due_at"], "2026-04-30T08:00:00Z");
    let (status, _) = app
        .staff(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{id}/extend"),
            Some(json!({"until": "2026-04-30T08:00:00Z", "reason": "once more, please"})),
        )
        .await;
    assert_eq!(status, 400, "only once");

    app.clock.set("2026-03-05T09:00:00Z".parse().unwrap());
    let (_, overdue) = app
        .staff(reqwest::Method::GET, "/api/v1/requests?urgency=overdue", None)
        .await;
    let ids: Vec<i64> = overdue["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [public["id"].as_i64().unwrap()],
        "the unverified erasure is overdue; the extended access is not"
    );
    app.clock.set("2026-04-25T09:00:00Z".parse().unwrap());
    let (_, soon) = app
        .staff(reqwest::Method::GET, "/api/v1/requests?urgency=due_soon", None)
        .await;
    assert_eq!(soon["requests"][0]["id"], *id);

    let (status, refused) = app
        .staff(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{}/refuse", public["id"]),
            Some(json!({"reason": "the requester never confirmed their identity"})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        refused["refusal"].as_str().unwrap().contains("CNIL"),
        "the right to complain is stated"
    );
    let (status, _) = app
        .staff(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{}/process", public["id"]),
            None,
        )
        .await;
    assert_eq!(status, 400, "a refused request is closed");
    let steps = app
        .staff(reqwest::Method::GET, &format!("/api/v1/requests/{id}"), None)
        .await
        .1["steps"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(steps, 2, "received, extended");
    let audit = app.store.audit_log(0, 100).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    for a in ["request.received", "request.extended", "request.refused"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
}

#[tokio::test]
async fn an_access_archive_holds_everything_held_about_the_subject() {
    let app = TestApp::spawn().await;
    let till = app.add_source("tills", confiance_core::source::SourceKind::Store).await;
    let consent = json!({"consent": {"categoryPreferences": {"Analytics": true}}});
    app.post("/v1/batch", &json!({"batch": [
        {"type": "page", "anonymousId": "b-1", "properties": {"path": "/"}, "context": consent},
        {"type": "identify", "userId": "vc-9", "anonymousId": "b-1", "traits": {"email": "ana@example.org", "first_name": "Ana"}},
    ]}))
    .await;
    app.post_as(
        &till,
        "/v1/track",
        &json!({"anonymousId": "VC-PAR-9", "event": "Order Completed",
        "properties": {"order_id": "T-9", "total": 20.0}, "context": {"traits": {"email": "ana@example.org"}}}),
    )
    .await;
    app.staff(
        reqwest::Method::POST,
        "/api/v1/consents",
        Some(json!({"subject": {"type": "email", "value": "ana@example.org"},
        "purpose": "marketing_email", "status": "granted", "method": "form"})),
    )
    .await;
    app.resolved().await;
    let request = app.request("access", "ana@example.org", Value::Null).await;
    app.process(&request["id"]).await;
    let id = &request["id"];
    let (status, archive) = app
        .staff(reqwest::Method::GET, &format!("/api/v1/requests/{id}/archive"), None)
        .await;
    assert_eq!(status, 200, "{archive}");

    // Every table that holds something about Ana is in the archive.
    let profile = app
        .store
        .profile_of(&confiance_core::unify::identifier::Identifier::parse("email", "ana@example.org").unwrap())
        .await
        .unwrap()
        .unwrap();
    let events = app
        .store
        .profile_events(Access::Administration, profile, 0, 1000)
        .await
        .unwrap();
    assert_eq!(archive["events"].as_array().unwrap().len(), events.len());
    assert_eq!(events.len(), 3, "web page, identify, till order");
    let row = app
        .store
        .profile(Access::Administration, profile)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(archive["identities"].as_array().unwrap().len(), row.identities.len());
    let mut ledger = 0;
    for (key, _) in &row.identities {
        if let Some(s) = confiance_core::unify::identifier::Identifier::from_key(key).and_then(|i| i.subject()) {
            ledger += app
                .store
                .consent_history(Access::Administration, &s)
                .await
                .unwrap()
                .len();
        }
    }
    assert_eq!(archive["consents"].as_array().unwrap().len(), ledger);
    assert!(ledger >= 2, "the analytics signal and the newsletter opt-in");
    assert_eq!(archive["requests"].as_array().unwrap().len(), 1);
    assert_eq!(
        archive["merges"].as_array().unwrap().len(),
        app.store.merges_of(profile).await.unwrap().len()
    );
    assert_eq!(archive["profile"]["traits"]["first_name"]["value"], "Ana");

    let csv = app
        .http
        .get(app.url(&format!("/api/v1/requests/{id}/archive?format=csv&kind=events")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    assert_eq!(csv.lines().count(), 4, "a header and one row per event");
    let sources: Vec<String> = app
        .store
        .list_sources()
        .await
        .unwrap()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    for row in csv.lines().skip(1) {
        assert!(
            sources.iter().any(|s| row.contains(&format!(",{s},"))) && row.contains("messageId"),
            "each row names its source and holds the message: {row}"
        );
    }
    let html = app
        .http
        .get(app.url(&format!("/api/v1/requests/{id}/archive?format=html")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for text in [
        "3 événements",
        "Base légale",
        "Conservation",
        "tills",
        "CNIL",
        "Offres par e-mail",
    ] {
        assert!(html.contains(text), "the summary says `{text}`");
    }
}

#[tokio::test]
async fn an_objection_to_marketing_removes_the_subject_from_every_marketing_read() {
    let app = TestApp::spawn().await;
    let catalog = Catalog::builtin();
    for email in ["ana@example.org", "bob@example.org"] {
        for purpose in ["marketing_email", "marketing_sms", "advertising"] {
            app.staff(
                reqwest::Method::POST,
                "/api/v1/consents",
                Some(json!({"subject": {"type": "email", "value": email}, "purpose": purpose, "status": "granted"})),
            )
            .await;
        }
    }
    app.post(
        "/v1/identify",
        &json!({"userId": "vc-1", "traits": {"email": "ana@example.org"}}),
    )
    .await;
    app.resolved().await;
    let emails = |purpose: &'static str| {
        let store = app.store.clone();
        let catalog = catalog.clone();
        async move {
            store
                .subjects_for(&catalog.purposes[purpose], IdKind::Email, "", 100)
                .await
                .unwrap()
                .iter()
                .map(|s| s.value().to_owned())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(emails("marketing_email").await, ["ana@example.org", "bob@example.org"]);
    let request = app.request("objection", "ana@example.org", Value::Null).await;
    let done = app.process(&request["id"]).await;
    assert!(
        done["steps"][1]["note"].as_str().unwrap().contains("marketing_postal"),
        "{done}"
    );
    for purpose in ["marketing_email", "marketing_sms", "advertising"] {
        assert_eq!(emails(purpose).await, ["bob@example.org"], "{purpose}");
    }
    assert_eq!(
        emails("marketing_postal").await,
        ["bob@example.org"],
        "a legitimate interest yields to the objection"
    );
    // A browser signal sent afterwards does not undo it.
    app.post("/v1/page", &json!({"userId": "vc-1", "context": {"consent": {"categoryPreferences": {"Advertising": true, "Analytics": true}}}})).await;
    let profile = app.lookup_profile("ana@example.org").await;
    assert_eq!(profile["consent"]["advertising"]["status"], "objected");
    assert_eq!(profile["consent"]["marketing_email"]["legal_basis"], false);
}

impl TestApp {
    async fn lookup_profile(&self, email: &str) -> Value {
        self.resolved().await;
        self.staff(
            reqwest::Method::GET,
            &format!("/api/v1/profiles/lookup?type=email&value={email}"),
            None,
        )
        .await
        .1
    }
}

#[tokio::test]
async fn restriction_keeps_the_data_but_stops_every_use_and_rectification_wins() {
    let app = TestApp::spawn().await;
    app.post(
        "/v1/identify",
        &json!({"userId": "vc-2", "traits": {"email": "carla@example.org", "city": "Lille"}}),
    )
    .await;
    app.post(
        "/v1/track",
        &json!({"userId": "vc-2", "event": "Order Completed", "properties": {"order_id": "W-1", "total": 12.0}}),
    )
    .await;
    let profile = app.lookup_profile("carla@example.org").await["id"].as_i64().unwrap();
    let catalog = Catalog::builtin();
    let service = Access::Purpose(&catalog.purposes["service"]);
    assert_eq!(
        app.store.profile_events(service, profile, 0, 100).await.unwrap().len(),
        2
    );

    let rectify = app
        .request(
            "rectification",
            "carla@example.org",
            json!({"traits": {"city": "Roubaix"}}),
        )
        .await;
    app.process(&rectify["id"]).await;
    let golden = app.lookup_profile("carla@example.org").await;
    assert_eq!(golden["traits"]["city"]["value"], "Roubaix");
    assert_eq!(golden["traits"]["city"]["why"], "rectified by the subject");
    assert_eq!(
        golden["lineage"]["city"].as_array().unwrap().len(),
        2,
        "the old value stays in the lineage"
    );
    let bad = app
        .request(
            "rectification",
            "carla@example.org",
            json!({"traits": {"shoe_size": 38}}),
        )
        .await;
    let (status, _) = app
        .staff(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{}/process", bad["id"]),
            None,
        )
        .await;
    assert_eq!(status, 400, "only declared traits are rectified");

    let restrict = app.request("restriction", "carla@example.org", Value::Null).await;
    app.process(&restrict["id"]).await;
    assert!(
        app.store
            .profile_events(service, profile, 0, 100)
            .await
            .unwrap()
            .is_empty(),
        "not even the contract reads it"
    );
    let kept = app
        .store
        .profile_events(Access::Administration, profile, 0, 100)
        .await
        .unwrap();
    assert_eq!(kept.len(), 3, "the data is kept");
}

fn files_contain(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            hits.push(path.display().to_string());
        }
    }
    hits
}

/// A consistent copy of the SQLite database at `from`, as a backup tool takes it.
fn backup(from: &std::path::Path, to: &std::path::Path) {
    let conn = rusqlite::Connection::open(from).unwrap();
    conn.execute("VACUUM INTO ?1", [to.to_str().unwrap()]).unwrap();
}

#[tokio::test]
async fn a_backup_taken_before_an_erasure_no_longer_opens_the_erased_subject() {
    let app = TestApp::spawn().await;
    app.post("/v1/batch", &json!({"batch": [
        {"type": "identify", "userId": "vc-shred-1", "traits": {"email": "apolline.shred@example.org", "first_name": "Apolline", "phone": "06 12 12 12 12"}},
        {"type": "track", "userId": "vc-shred-1", "event": "Order Completed", "properties": {"order_id": "SHRED-1", "total": 19.9}},
        {"type": "identify", "userId": "vc-shred-2", "traits": {"email": "berenice.keep@example.org", "first_name": "Bérénice"}},
    ]}))
    .await;
    app.resolved().await;

    // Last night's backups: the database, and the key vault on its own.
    let before = tempfile::tempdir().unwrap();
    backup(
        &app.data_dir().join("confiance.db"),
        &before.path().join("confiance.db"),
    );
    backup(
        &app.data_dir().join(confiance_store::VAULT_FILE),
        &before.path().join("vault-before.db"),
    );
    let backup_bytes = std::fs::read(before.path().join("confiance.db")).unwrap();
    for field in [
        "Apolline",
        "SHRED-1",
        "Bérénice",
        "06 12 12 12 12",
        "apolline.shred@example.org",
        "+33612121212",
    ] {
        assert!(
            !backup_bytes.windows(field.len()).any(|w| w == field.as_bytes()),
            "the backup holds `{field}` in plaintext"
        );
    }

    let erasure = app.request("erasure", "apolline.shred@example.org", Value::Null).await;
    let done = app.process(&erasure["id"]).await;
    assert_eq!(done["status"], "done", "{done}");
    // Her user id's key sealed her events, her email's and her phone's their values, and the
    // request's own key its record.
    assert!(done["steps"].to_string().contains(" 4 data key(s) shredded"), "{done}");

    // The backup restored beside the key vault as it is now: her events are there, sealed, and
    // nothing opens them; the other subject reads as before.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(before.path().join("confiance.db"), restored.path().join("confiance.db")).unwrap();
    backup(
        &app.data_dir().join(confiance_store::VAULT_FILE),
        &restored.path().join(confiance_store::VAULT_FILE),
    );
    let rows: i64 = rusqlite::Connection::open(restored.path().join("confiance.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM events WHERE user_id = 'vc-shred-1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(rows, 2, "the backup holds her two events");
    let store = confiance_store::Store::open_sqlite(restored.path()).await.unwrap();
    let hers = store
        .events_of(Access::Administration, &Who::UserId("vc-shred-1".into()), 0, 100)
        .await
        .unwrap();
    assert_eq!(hers.len(), 2, "her events are still listed, by position");
    assert!(
        hers.iter().all(|e| e.body.is_null()),
        "the erased subject's events opened: {hers:?}"
    );
    let kept = store
        .events_of(Access::Administration, &Who::UserId("vc-shred-2".into()), 0, 100)
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].body["traits"]["first_name"], "Bérénice");
    drop(store);

    // With the vault as it was before the erasure, the same backup opens: the key, and only
    // the key, is what the erasure destroyed.
    let control = tempfile::tempdir().unwrap();
    std::fs::copy(before.path().join("confiance.db"), control.path().join("confiance.db")).unwrap();
    std::fs::copy(
        before.path().join("vault-before.db"),
        control.path().join(confiance_store::VAULT_FILE),
    )
    .unwrap();
    let store = confiance_store::Store::open_sqlite(control.path()).await.unwrap();
    let hers = store
        .events_of(Access::Administration, &Who::UserId("vc-shred-1".into()), 0, 100)
        .await
        .unwrap();
    assert_eq!(hers.len(), 2);
    assert_eq!(hers[0].body["traits"]["first_name"], "Apolline");
}

#[tokio::test]
async fn erasure_leaves_no_plaintext_and_does_not_come_back() {
    let app = TestApp::spawn().await;
    let secrets = ["zoe.erasure@example.org", "Zoéline", "vc-erase-77", "VC-LYO-777"];
    let consent = json!({"consent": {"categoryPreferences": {"Analytics": true}}});
    app.post("/v1/batch", &json!({"batch": [
        {"type": "identify", "userId": "vc-erase-77", "anonymousId": "b-erase",
         "traits": {"email": "zoe.erasure@example.org", "first_name": "Zoéline", "phone": "06 98 76 54 32", "loyalty_card": "VC-LYO-777"}},
        {"type": "page", "anonymousId": "b-erase", "properties": {"path": "/"}, "context": consent},
        {"type": "track", "userId": "vc-erase-77", "event": "Order Completed", "properties": {"order_id": "Z-1", "total": 9.5}},
        {"type": "identify", "userId": "vc-keep-1", "traits": {"email": "keep.me@example.org", "first_name": "Gardée"}},
    ]}))
    .await;
    app.staff(
        reqwest::Method::POST,
        "/api/v1/consents",
        Some(json!({"subject": {"type": "email", "value": "zoe.erasure@example.org"},
        "purpose": "marketing_email", "status": "granted", "method": "import"})),
    )
    .await;
    let access = app.request("access", "zoe.erasure@example.org", Value::Null).await;
    app.resolved().await;
    app.process(&access["id"]).await;
    // Her user id keys the event log in plaintext. Everything else is sealed under keys of her
    // own, even now: what her messages say, her requests, and the values of her email, phone
    // and loyalty card, which the identity graph and the consent ledger hold as keyed hashes.
    assert!(
        !files_contain(app.data_dir(), "vc-erase-77").is_empty(),
        "her user id is stored before the erasure"
    );
    for s in ["Zoéline", "zoe.erasure@example.org", "+33698765432", "VC-LYO-777"] {
        assert_eq!(
            files_contain(app.data_dir(), s),
            Vec::<String>::new(),
            "`{s}` is stored in plaintext"
        );
    }
    // And every page still shows them.
    let profile = app.lookup_profile("zoe.erasure@example.org").await;
    let shown = profile.to_string();
    for s in ["zoe.erasure@example.org", "+33698765432", "VC-LYO-777"] {
        assert!(shown.contains(s), "the profile does not show `{s}`: {shown}");
    }

    let erasure = app.request("erasure", "zoe.erasure@example.org", Value::Null).await;
    let done = app.process(&erasure["id"]).await;
    let note = done["steps"][1]["note"].as_str().unwrap();
    assert!(note.contains("erased 3 event(s)"), "{note}");
    for s in secrets.iter().chain(&["+33698765432"]) {
        assert_eq!(
            files_contain(app.data_dir(), s),
            Vec::<String>::new(),
            "`{s}` is found in the database files after the erasure"
        );
    }
    assert!(
        !files_contain(app.data_dir(), "vc-keep-1").is_empty(),
        "other subjects are intact"
    );
    let kept = app.lookup_profile("keep.me@example.org").await;
    assert!(kept.to_string().contains("keep.me@example.org"), "{kept}");
    let (status, _) = app
        .staff(
            reqwest::Method::GET,
            "/api/v1/profiles/lookup?type=email&value=zoe.erasure@example.org",
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, kept) = app
        .staff(
            reqwest::Method::GET,
            &format!("/api/v1/requests/{}", erasure["id"]),
            None,
        )
        .await;
    assert_eq!(
        (kept["status"].as_str(), kept["subject_value"].as_str()),
        (Some("done"), Some("erased")),
        "the request record stays, pseudonymised"
    );
    assert!(
        app.store.verify_audit().await.unwrap().is_ok(),
        "the audit log still verifies"
    );

    // She comes back: a new message makes a new profile, without her old consent or history.
    app.post(
        "/v1/identify",
        &json!({"userId": "vc-erase-77", "traits": {"email": "zoe.erasure@example.org"}}),
    )
    .await;
    let again = app.lookup_profile("zoe.erasure@example.org").await;
    assert_eq!(again["events"], 1);
    assert_eq!(again["consent"]["marketing_email"]["status"], "not_asked");
    let (status, body) = app
        .staff(
            reqwest::Method::POST,
            "/api/v1/consents",
            Some(json!({"subject": {"type": "email", "value": "zoe.erasure@example.org"},
        "purpose": "marketing_email", "status": "granted", "method": "import"})),
        )
        .await;
    assert_eq!(status, 400, "an old list cannot add her back: {body}");
    let (status, _) = app
        .staff(
            reqwest::Method::POST,
            "/api/v1/consents",
            Some(json!({"subject": {"type": "email", "value": "zoe.erasure@example.org"},
        "purpose": "marketing_email", "status": "granted", "method": "form"})),
        )
        .await;
    assert_eq!(status, 201, "her own new consent can");
}

#[tokio::test]
async fn retention_erases_past_prospects_and_customers_and_trims_the_rest() {
    let app = TestApp::spawn().await;
    app.clock.set("2026-11-29T10:00:00Z".parse().unwrap());
    let analytics = json!({"consent": {"categoryPreferences": {"Analytics": true}}});
    let (status, body) = app.post("/v1/batch", &json!({"batch": [
        // A prospect last seen in 2023; a questionnaire we sent since does not count.
        {"type": "identify", "userId": "old-prospect", "timestamp": "2023-06-01T10:00:00Z", "traits": {"email": "old.prospect@example.org"}},
        {"type": "track", "userId": "old-prospect", "event": "Questionnaire Sent", "timestamp": "2026-10-01T10:00:00Z",
         "properties": {"questionnaire_id": "q1"}},
        // A customer whose relationship ended in early 2023.
        {"type": "track", "userId": "old-customer", "event": "Order Completed", "timestamp": "2023-01-10T10:00:00Z", "properties": {"order_id": "O-1", "total": 10.0}},
        // A customer of 2025, with an old page view and a birth announced long ago.
        {"type": "track", "userId": "recent", "event": "Order Completed", "timestamp": "2025-09-01T10:00:00Z", "properties": {"order_id": "O-2", "total": 20.0}},
        {"type": "page", "userId": "recent", "timestamp": "2024-01-05T10:00:00Z", "properties": {"path": "/"}, "context": analytics},
        {"type": "identify", "userId": "recent", "timestamp": "2025-01-05T10:00:00Z", "traits": {"household_birth": "2024-12-30", "city": "Nantes"}},
    ]}))
    .await;
    assert_eq!(status, 200, "{body}");
    app.resolved().await;
    let (status, dry) = app
        .staff(reqwest::Method::POST, "/api/v1/retention/run?dry_run=true", None)
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["people"], json!({"customers_erased": 1, "prospects_erased": 1}));
    assert_eq!(dry["events_deleted"], 1, "the page view past 25 months");
    assert_eq!(dry["traits_removed"], json!({"household_birth": 1}));
    assert_eq!(app.store.count_events().await.unwrap(), 6, "a dry run changes nothing");

    let (_, done) = app.staff(reqwest::Method::POST, "/api/v1/retention/run", None).await;
    assert_eq!(done["dry_run"], false);
    let left = app.store.events_page(0, 100).await.unwrap();
    let users: Vec<&str> = left.iter().filter_map(|e| e.user_id.as_deref()).collect();
    assert_eq!(
        users,
        ["recent", "recent"],
        "the past prospect and customer are gone; the old page view too"
    );
    let identify = left
        .iter()
        .find(|e| e.kind == confiance_core::collect::MessageType::Identify)
        .unwrap();
    assert_eq!(
        identify.body["traits"],
        json!({"city": "Nantes"}),
        "the expired trait is removed, the rest kept"
    );
    let actions: Vec<String> = app
        .store
        .audit_log(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        actions.contains(&"retention.applied".to_owned())
            && actions.iter().filter(|a| *a == "subject.erased").count() == 2
    );
}

#[tokio::test]
async fn a_request_made_from_the_preference_centre_is_already_verified() {
    let app = TestApp::spawn().await;
    let (_, link) = app
        .staff(
            reqwest::Method::POST,
            "/api/v1/preference-links",
            Some(json!({"subject": {"type": "email", "value": "ana@example.org"}})),
        )
        .await;
    let url = link["url"].as_str().unwrap().to_owned();
    let token = url.split("token=").nth(1).unwrap().to_owned();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(&url).send().await.unwrap().text().await.unwrap();
    for right in ["access", "portability", "objection", "restriction", "erasure"] {
        assert!(
            page.contains(&format!("data-right=\"{right}\"")),
            "{right} can be asked from the page"
        );
    }
    let resp = http
        .post(app.url(&format!("/preferences/rights?token={token}&lang=fr")))
        .form(&[("right", "access")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let id: i64 = location
        .split("requested=")
        .nth(1)
        .unwrap()
        .split('#')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let page = http.get(app.url(&location)).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains(&format!("enregistrée sous le numéro {id}")),
        "the page acknowledges it"
    );
    let (_, request) = app
        .staff(reqwest::Method::GET, &format!("/api/v1/requests/{id}"), None)
        .await;
    assert_eq!(
        (
            request["status"].as_str(),
            request["verified"].as_bool(),
            request["origin"].as_str()
        ),
        (Some("in_progress"), Some(true), Some("preference_centre"))
    );
    assert_eq!(request["subject_value"], "ana@example.org");
    let forged = http
        .post(app.url("/preferences/rights?token=forged.token"))
        .form(&[("right", "erasure")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let (_, all) = app.staff(reqwest::Method::GET, "/api/v1/requests?all=true", None).await;
    assert_eq!(
        all["requests"].as_array().unwrap().len(),
        1,
        "a refused link creates nothing"
    );
}

#[tokio::test]
async fn a_store_never_opens_under_another_master_key() {
    use confiance_core::privacy::vault::MasterKey;
    use confiance_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let ours = || Some(MasterKey::parse(&"ab".repeat(32)).unwrap());
    Store::open_sqlite_with(dir.path(), ours()).await.unwrap();
    // Under another key every body would seem erased: it refuses to start instead.
    let other = Store::open_sqlite_with(dir.path(), Some(MasterKey::parse(&"cd".repeat(32)).unwrap())).await;
    assert!(
        other.is_err_and(|e| e.to_string().contains("another master key")),
        "opened under another key"
    );
    let derived = Store::open_sqlite(dir.path()).await;
    assert!(derived.is_err(), "opened without the key it was made with");
    Store::open_sqlite_with(dir.path(), ours()).await.unwrap();
}
