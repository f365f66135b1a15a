//! Unify as a user notices it: one golden record per person from every source, merges that are
//! explained and can be undone, and consent that a merge never widens.

use crate::support::{ADMIN_TOKEN, TestApp, read};
use confiance_core::source::SourceKind;
use serde_json::{Value, json};

impl TestApp {
    async fn get_json(&self, path: &str) -> (u16, Value) {
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

    async fn lookup(&self, kind: &str, value: &str) -> Value {
        self.resolved().await;
        let (status, body) = self
            .get_json(&format!("/api/v1/profiles/lookup?type={kind}&value={value}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

#[tokio::test]
async fn one_golden_record_from_every_source_with_its_reasons() {
    let app = TestApp::spawn().await;
    let account = app.add_source("accounts", SourceKind::Account).await;
    let till = app.add_source("tills", SourceKind::Store).await;
    // The web guessed Paris recently; the account says Lyon; a till sells twice by email.
    let consent = json!({"consent": {"categoryPreferences": {"Analytics": true, "Personalization": true}}});
    app.post("/v1/batch", &json!({"batch": [
        {"type": "page", "anonymousId": "b-1", "timestamp": "2026-01-02T10:00:00Z", "properties": {"path": "/"}, "context": consent},
        {"type": "identify", "userId": "vc-1", "anonymousId": "b-1", "timestamp": "2026-06-01T10:00:00Z",
         "traits": {"city": "Paris", "favorite_style": "jazz"}, "context": consent},
    ]})).await;
    app.post_as(
        &account,
        "/v1/identify",
        &json!({"userId": "vc-1", "timestamp": "2026-01-05T10:00:00Z",
        "traits": {"email": "Ana.Martin@example.org", "city": "Lyon", "first_name": "Ana", "phone": "06 12 34 56 78"}}),
    )
    .await;
    for (i, total) in [(1, 30.0), (2, 12.5)] {
        let (status, body) = app
            .post_as(
                &till,
                "/v1/track",
                &json!({"anonymousId": format!("VC-PAR-{i}"), "event": "Order Completed",
                "timestamp": format!("2026-0{}-10T15:00:00Z", i + 6),
                "properties": {"order_id": format!("T-{i}"), "total": total, "currency": "EUR", "channel": "store",
                               "products": [{"category": "vinyle"}]},
                "context": {"traits": {"email": "ana.martin@example.org"}}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    let by_email = app.lookup("email", "ana.martin@example.org").await;
    let by_phone = app.lookup("phone", "+33612345678").await;
    let by_browser = app.lookup("anonymous_id", "b-1").await;
    assert_eq!(by_email["id"], by_phone["id"]);
    assert_eq!(
        by_email["id"], by_browser["id"],
        "web, account and tills are one person"
    );
    let kinds: Vec<&str> = by_email["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    for k in ["user_id", "anonymous_id", "email", "phone"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let city = &by_email["traits"]["city"];
    assert_eq!(city["value"], "Lyon", "the account wins over a newer web value");
    assert_eq!(city["source"], "accounts");
    assert!(city["why"].as_str().unwrap().contains("from account"), "{city}");
    assert_eq!(
        by_email["lineage"]["city"].as_array().unwrap().len(),
        2,
        "every value seen is kept"
    );
    assert_eq!(by_email["traits"]["favorite_style"]["value"], "jazz");
    let computed = &by_email["computed"];
    assert_eq!(
        (computed["orders"].as_u64(), computed["total_spent"].as_f64()),
        (Some(2), Some(42.5))
    );
    assert_eq!(computed["favourite_category"], "vinyle");
    assert_eq!(computed["journey_phase"], "purchase");
    assert_eq!(computed["first_seen"], "2026-01-02T10:00:00Z");
    assert_eq!(by_email["consent"]["marketing_email"]["status"], "not_asked");
    assert_eq!(by_email["consent"]["analytics"]["status"], "granted");

    let id = by_email["id"].as_i64().unwrap();
    let (status, profile) = app.get_json(&format!("/api/v1/profiles/{id}?limit=2")).await;
    assert_eq!(status, 200);
    assert_eq!(profile["timeline"].as_array().unwrap().len(), 2);
    assert!(profile["next_after"].as_i64().is_some());
    let (status, _) = app
        .get_json("/api/v1/profiles/lookup?type=email&value=nobody@example.org")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_wrong_merge_is_explained_and_undone() {
    let app = TestApp::spawn().await;
    app.post(
        "/v1/batch",
        &json!({"batch": [
            {"type": "identify", "messageId": "m1", "anonymousId": "tablet", "traits": {"email": "ana@example.org"}},
            {"type": "identify", "messageId": "m2", "anonymousId": "phone-b", "traits": {"phone": "+33 6 12 34 56 78"}},
        ]}),
    )
    .await;
    let ana = app.lookup("email", "ana@example.org").await["id"].as_i64().unwrap();
    let bob = app.lookup("anonymous_id", "phone-b").await["id"].as_i64().unwrap();
    assert_ne!(ana, bob);
    app.post(
        "/v1/identify",
        &json!({"messageId": "m3", "anonymousId": "tablet", "traits": {"phone": "06 12 34 56 78"}}),
    )
    .await;
    assert_eq!(app.lookup("anonymous_id", "phone-b").await["id"], ana);
    let (_, merges) = app.get_json(&format!("/api/v1/profiles/{ana}/merges")).await;
    let merge = &merges["merges"][0];
    assert_eq!(
        (merge["survivor"].as_i64(), merge["absorbed"].as_i64()),
        (Some(ana), Some(bob))
    );
    assert_eq!(merge["message_id"], "m3");
    assert_eq!(
        merge["via"], "anonymous_id:tablet",
        "the identifier that brought the other profile in"
    );
    let (_, absorbed) = app.get_json(&format!("/api/v1/profiles/{bob}")).await;
    assert_eq!(absorbed["merged_into"], ana);

    let resp = app
        .http
        .post(app.url(&format!("/api/v1/merges/{}/undo", merge["id"])))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.lookup("anonymous_id", "phone-b").await["id"],
        bob,
        "bob has his profile back"
    );
    let ana_again = app.lookup("email", "ana@example.org").await;
    assert_eq!(ana_again["id"], ana);
    assert!(
        ana_again["traits"]
            .get("phone")
            .is_none_or(|p| p["value"] == "+33 6 12 34 56 78" || p.is_object())
    );
    let (status, again) = read(
        app.http
            .post(app.url(&format!("/api/v1/merges/{}/undo", merge["id"])))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{again}");
}

#[tokio::test]
async fn a_merge_never_widens_consent() {
    let app = TestApp::spawn().await;
    let grant = |subject: Value, status: &str| json!({"subject": subject, "purpose": "analytics", "status": status});
    let browser = json!({"type": "anonymous_id", "value": "b-7"});
    let email = json!({"type": "email", "value": "carla@example.org"});
    // The browser said yes in January; the person, known by email, withdrew in March.
    app.clock.set("2026-01-10T00:00:00Z".parse().unwrap());
    let post = |body: Value| {
        let http = app.http.clone();
        let url = app.url("/api/v1/consents");
        async move {
            read(
                http.post(url)
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    post(grant(browser.clone(), "granted")).await;
    app.clock.set("2026-03-10T00:00:00Z".parse().unwrap());
    post(grant(email.clone(), "withdrawn")).await;
    app.clock.set("2026-04-10T00:00:00Z".parse().unwrap());
    let (_, page) = app
        .post("/v1/page", &json!({"anonymousId": "b-7", "properties": {"path": "/"}}))
        .await;
    assert_eq!(page["accepted"], 1, "{page}");
    app.post(
        "/v1/identify",
        &json!({"anonymousId": "b-7", "traits": {"email": "carla@example.org"}}),
    )
    .await;
    let profile = app.lookup("email", "carla@example.org").await;
    assert_eq!(
        profile["consent"]["analytics"]["status"], "withdrawn",
        "the withdrawal anywhere wins"
    );
    assert_eq!(profile["consent"]["analytics"]["legal_basis"], false);
    let id = profile["id"].as_i64().unwrap();
    let catalog = confiance_core::catalog::Catalog::builtin();
    let analytics = confiance_store::Access::Purpose(&catalog.purposes["analytics"]);
    assert!(
        app.store
            .profile_events(analytics, id, 0, 100)
            .await
            .unwrap()
            .is_empty(),
        "the page view is not read for analytics"
    );
    let admin = app
        .store
        .profile_events(confiance_store::Access::Administration, id, 0, 100)
        .await
        .unwrap();
    assert_eq!(admin.len(), 2);

    // A later explicit grant, on any identifier, is the latest decision.
    app.clock.set("2026-05-10T00:00:00Z".parse().unwrap());
    post(grant(browser, "granted")).await;
    assert_eq!(
        app.lookup("email", "carla@example.org").await["consent"]["analytics"]["status"],
        "granted"
    );
    let seen = app.store.profile_events(analytics, id, 0, 100).await.unwrap();
    assert_eq!(
        seen.len(),
        1,
        "the page view, not the identify collected for other purposes"
    );
    assert_eq!(seen[0].event, None);
    assert_eq!(seen[0].purposes, ["analytics"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probabilistic_matching_merges_with_evidence_and_queues_the_grey_zone() {
    use confiance_core::unify::matching::synthetic::{SyntheticConfig, generate};
    let app = TestApp::spawn().await;
    let till = app.add_source("tills", SourceKind::Store).await;
    // Records of synthetic people from tills and CRMs, sharing no identifier: each its own
    // profile until matching looks at names, birth dates and addresses.
    let data = generate(&SyntheticConfig {
        people: 400,
        records_per_person: 2.5,
        seed: 7,
    });
    let mut batch = Vec::new();
    for r in &data.records {
        let mut traits = serde_json::Map::new();
        for (name, value) in [
            ("first_name", &r.first_name),
            ("last_name", &r.last_name),
            ("postal_code", &r.postcode),
            ("city", &r.city),
        ] {
            if let Some(v) = value {
                traits.insert(name.into(), json!(v));
            }
        }
        if let Some(b) = r.birth_date {
            traits.insert("birthday".into(), json!(b.to_string()));
        }
        batch.push(json!({"type": "identify", "anonymousId": format!("rec-{}", r.id), "traits": traits}));
    }
    for chunk in batch.chunks(500) {
        let (status, body) = app.post_as(&till, "/v1/batch", &json!({ "batch": chunk })).await;
        assert_eq!(status, 200, "{body}");
    }
    app.resolved().await;
    let before = app.store.profiles_snapshot().await.unwrap().len();
    assert_eq!(before, data.records.len());

    let resp = app
        .http
        .post(app.url("/api/v1/unify/match"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let (status, report) = read(resp).await;
    assert_eq!(status, 200, "{report}");
    let merged = report["merged"].as_u64().unwrap();
    assert!(merged as usize > data.records.len() / 4, "{report}");
    assert!(
        report["queued_for_review"].as_u64().unwrap() > 0,
        "a grey zone to review: {report}"
    );
    let after = app.store.profiles_snapshot().await.unwrap();
    assert_eq!(after.len(), before - merged as usize);

    // No profile mixes two synthetic people, and the merges say why.
    let person = |key: &str| -> u32 {
        let id: u64 = key.trim_start_matches("anonymous_id:rec-").parse().unwrap();
        data.person[data.records.iter().position(|r| r.id == id).unwrap()]
    };
    let mixed = after
        .iter()
        .filter(|(_, ids)| ids.iter().any(|k| person(k) != person(&ids[0])))
        .count();
    assert!(
        mixed * 100 <= after.len(),
        "at most 1% of profiles mix people: {mixed} of {}",
        after.len()
    );
    let (profile, _) = after.iter().find(|(_, ids)| ids.len() > 1).unwrap();
    let (_, merges) = app.get_json(&format!("/api/v1/profiles/{profile}/merges")).await;
    let evidence = &merges["merges"][0]["evidence"];
    assert_eq!(evidence["rule"], "probabilistic");
    assert!(evidence["probability"].as_f64().unwrap() >= 0.99);
    assert!(
        evidence["fields"].as_array().unwrap().len() >= 4,
        "per-field weights: {evidence}"
    );

    let (_, queue) = app.get_json("/api/v1/merge-reviews").await;
    let pending = queue["reviews"].as_array().unwrap().clone();
    {
        let [first, second, ..] = pending.as_slice() else {
            panic!("two pending reviews at least")
        };
        let decide = |id: &Value, verb: &str| {
            let url = app.url(&format!("/api/v1/merge-reviews/{id}/{verb}"));
            let http = app.http.clone();
            async move { read(http.post(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap()).await }
        };
        let (status, accepted) = decide(&first["id"], "accept").await;
        assert_eq!(status, 200, "{accepted}");
        assert!(accepted["merge"].as_i64().is_some() || accepted["merge"].is_null());
        let (status, _) = decide(&second["id"], "reject").await;
        assert_eq!(status, 200);
        let (status, _) = decide(&second["id"], "reject").await;
        assert_eq!(status, 404, "decided once");
        let (_, rejected) = app.get_json("/api/v1/merge-reviews?status=rejected").await;
        assert_eq!(rejected["reviews"][0]["id"], second["id"]);
    }
}
