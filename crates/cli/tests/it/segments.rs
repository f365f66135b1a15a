//! Segments as a marketer notices them: live counts that only ever include people with a legal
//! basis for the segment's purpose, precise errors while typing, members that follow
//! withdrawals and restrictions at once, entered/exited transitions, and members exports.

use crate::support::{ADMIN_TOKEN, TestApp, read};
use serde_json::{Value, json};

impl TestApp {
    async fn seg(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.unwrap()).await
    }

    async fn count(&self, query: Value, purpose: &str) -> u64 {
        let (status, body) = self
            .seg(
                reqwest::Method::POST,
                "/api/v1/segments/preview",
                Some(json!({"query": query, "purpose": purpose})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["count"].as_u64().unwrap()
    }

    /// One synthetic person: identified on the web with their traits and cookie choices.
    async fn person(&self, n: u32, gender: &str, birthday: &str, city: &str, hobbies: &[&str], personalised: bool) {
        let consent = json!({"consent": {"categoryPreferences": {"Personalization": personalised, "Analytics": true}}});
        let (status, body) = self
            .post(
                "/v1/identify",
                &json!({
                    "userId": format!("u{n}"),
                    "traits": {"email": format!("p{n}@example.org"), "gender": gender, "birthday": birthday, "city": city, "hobbies": hobbies},
                    "context": consent,
                }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    async fn withdraw(&self, n: u32, purpose: &str) {
        let (status, body) = self
            .seg(
                reqwest::Method::POST,
                "/api/v1/consents",
                Some(json!({"subject": {"type": "user_id", "value": format!("u{n}")}, "purpose": purpose, "status": "withdrawn"})),
            )
            .await;
        assert!(status < 300, "{body}");
    }

    async fn profile_id(&self, n: u32) -> i64 {
        let (status, body) = self
            .seg(
                reqwest::Method::GET,
                &format!("/api/v1/profiles/lookup?type=user_id&value=u{n}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["id"].as_i64().unwrap()
    }
}

const TARGET: &str = "gender = \"female\" and birthday between 35 years ago and 18 years ago\nand city = \"Paris\" and hobbies contains \"surf\"";

#[tokio::test]
async fn counts_only_lawful_people_and_follow_withdrawals_at_once() {
    let app = TestApp::spawn().await;
    app.clock.set("2026-06-01T10:00:00Z".parse().unwrap());
    for n in 0..3 {
        app.person(
            n,
            "female",
            &format!("1995-04-0{}", n + 1),
            "Paris",
            &["surf", "vinyl"],
            true,
        )
        .await;
    }
    app.person(3, "female", "1995-04-03", "Paris", &["surf"], false).await; // refused personalisation
    app.person(4, "female", "1980-04-03", "Paris", &["surf"], true).await; // 46
    app.person(5, "male", "1995-04-03", "Paris", &["surf"], true).await;
    app.person(6, "Female", "1995-04-03", "Lyon", &["surf"], true).await;
    app.person(7, "female", "1995-04-03", " paris ", &["jazz"], true).await;
    for (user, total) in [("u0", 30.0), ("u0", 45.5), ("u1", 12.0), ("u3", 60.0)] {
        let (status, body) = app
            .post(
                "/v1/track",
                &json!({"userId": user, "event": "Order Completed", "timestamp": "2026-05-20T12:00:00Z",
                        "properties": {"order_id": format!("{user}-{total}"), "total": total}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    app.indexed().await;

    // The founding target, typed, and in its JSON form: the same three people.
    assert_eq!(app.count(json!(TARGET), "personalisation").await, 3);
    let (_, preview) = app
        .seg(
            reqwest::Method::POST,
            "/api/v1/segments/preview",
            Some(json!({"query": TARGET, "purpose": "personalisation"})),
        )
        .await;
    assert_eq!(app.count(preview["query"].clone(), "personalisation").await, 3);
    assert_eq!(
        app.count(json!("city = \"paris\""), "personalisation").await,
        6,
        "case and spaces do not matter"
    );
    assert_eq!(
        app.count(
            json!("did \"Order Completed\" at least 2 times within 90 days where total > 20"),
            "personalisation"
        )
        .await,
        1
    );
    assert_eq!(
        app.count(
            json!("did \"Order Completed\" at least 1 time and orders >= 1"),
            "personalisation"
        )
        .await,
        2,
        "u3 ordered too, but refused personalisation"
    );
    assert_eq!(
        app.count(json!("not did \"Order Completed\""), "personalisation").await,
        5
    );

    // Typing mistakes say where and what; data the purpose may not use is refused by name.
    let (status, err) = app
        .seg(
            reqwest::Method::POST,
            "/api/v1/segments/preview",
            Some(json!({"query": "gender = \"female\" and\ncity ~ \"Paris\"", "purpose": "personalisation"})),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (400, Some("invalid_segment")), "{err}");
    assert_eq!(
        (err["line"].as_u64(), err["column"].as_u64()),
        (Some(2), Some(6)),
        "{err}"
    );
    assert!(err["hint"].as_str().unwrap().contains("="), "{err}");
    let (status, err) = app
        .seg(
            reqwest::Method::POST,
            "/api/v1/segments/preview",
            Some(json!({"query": TARGET, "purpose": "marketing_sms"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("`gender` may not be used for the purpose `marketing_sms`"),
        "{err}"
    );
    let (status, err) = app
        .seg(
            reqwest::Method::POST,
            "/api/v1/segments/preview",
            Some(json!({"query": "citty = \"Paris\"", "purpose": "personalisation"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        err["message"].as_str().unwrap().contains("did you mean `city`"),
        "{err}"
    );

    // A withdrawal takes the person out of the very next count.
    app.withdraw(1, "personalisation").await;
    assert_eq!(app.count(json!(TARGET), "personalisation").await, 2);

    // A restricted person is in no segment, whatever the purpose's basis.
    assert_eq!(
        app.count(json!("city = \"Paris\""), "service").await,
        7,
        "a contract needs no consent"
    );
    let (status, req) = app
        .seg(
            reqwest::Method::POST,
            "/api/v1/requests",
            Some(json!({"type": "restriction", "subject": {"type": "email", "value": "p2@example.org"}})),
        )
        .await;
    assert_eq!(status, 201, "{req}");
    let (status, done) = app
        .seg(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{}/process", req["id"]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(app.count(json!(TARGET), "personalisation").await, 1);
    assert_eq!(app.count(json!("city = \"Paris\""), "service").await, 6);
    assert_eq!(app.count(json!("city exists"), "analytics").await, 7);
}

#[tokio::test]
async fn saved_segments_record_who_enters_and_leaves_and_export_their_members() {
    let app = TestApp::spawn().await;
    app.clock.set("2026-06-01T10:00:00Z".parse().unwrap());
    app.person(0, "female", "1996-02-29", "Paris", &["surf"], true).await;
    app.person(1, "female", "1996-03-01", "Paris", &["surf"], false).await;
    app.indexed().await;
    let (status, seg) = app
        .seg(
            reqwest::Method::POST,
            "/api/v1/segments",
            Some(json!({"name": "Jeunes surfeuses parisiennes", "purpose": "personalisation", "query": TARGET})),
        )
        .await;
    assert_eq!(status, 201, "{seg}");
    assert_eq!(seg["count"], 1);
    let id = seg["id"].as_i64().unwrap();
    let (status, dup) = app
        .seg(
            reqwest::Method::POST,
            "/api/v1/segments",
            Some(json!({"name": "Jeunes surfeuses parisiennes", "purpose": "personalisation", "query": "city exists"})),
        )
        .await;
    assert_eq!(status, 400, "{dup}");
    // Another segment can build on it by name.
    let (status, vip) = app
        .seg(
            reqwest::Method::POST,
            "/api/v1/segments",
            Some(json!({"name": "Surfeuses fidèles", "purpose": "personalisation",
                        "query": "segment \"Jeunes surfeuses parisiennes\" and orders >= 1"})),
        )
        .await;
    assert_eq!((status, vip["count"].as_u64()), (201, Some(0)), "{vip}");
    let (status, _) = app
        .seg(reqwest::Method::DELETE, &format!("/api/v1/segments/{id}"), None)
        .await;
    assert_eq!(status, 400, "a segment another one names stays");

    // Someone new enters; someone who withdraws leaves.
    app.person(2, "female", "2000-01-01", "Paris", &["surf", "skate"], true)
        .await;
    app.indexed().await;
    let two = app.profile_id(2).await;
    let zero = app.profile_id(0).await;
    app.withdraw(0, "personalisation").await;
    let (_, feed) = app
        .seg(
            reqwest::Method::GET,
            &format!("/api/v1/segments/{id}/transitions"),
            None,
        )
        .await;
    let moves: Vec<(i64, bool)> = feed["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["profile_id"].as_i64().unwrap(), t["entered"].as_bool().unwrap()))
        .collect();
    assert_eq!(moves, vec![(two, true), (zero, false)], "{feed}");

    // The person is told which segments they are in, and since when (Art. 15).
    let (status, req) = app
        .seg(
            reqwest::Method::POST,
            "/api/v1/requests",
            Some(json!({"type": "access", "subject": {"type": "email", "value": "p2@example.org"}})),
        )
        .await;
    assert_eq!(status, 201, "{req}");
    let (status, _) = app
        .seg(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{}/process", req["id"]),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, archive) = app
        .seg(
            reqwest::Method::GET,
            &format!("/api/v1/requests/{}/archive", req["id"]),
            None,
        )
        .await;
    let current: Vec<&str> = archive["segments"]["current"]
        .as_array()
        .unwrap_or_else(|| panic!("{archive}"))
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(current, ["Jeunes surfeuses parisiennes"]);
    assert_eq!(
        archive["segments"]["history"][0]["entered"], true,
        "{}",
        archive["segments"]
    );

    // The export is a task; its file holds the members and the traits the purpose may use.
    let (status, task) = app
        .seg(
            reqwest::Method::POST,
            &format!("/api/v1/segments/{id}/exports"),
            Some(json!({"format": "csv"})),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let task_id = task["id"].as_i64().unwrap();
    let mut done = Value::Null;
    for _ in 0..200 {
        let (_, t) = app
            .seg(reqwest::Method::GET, &format!("/api/v1/exports/{task_id}"), None)
            .await;
        if t["status"] == "succeeded" || t["status"] == "failed" {
            done = t;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        (done["status"].as_str(), done["rows"].as_i64()),
        (Some("succeeded"), Some(1)),
        "{done}"
    );
    let csv = app
        .http
        .get(app.url(&format!("/api/v1/exports/{task_id}/file")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "profile_id");
    assert!(header.contains(&"city") && header.contains(&"hobbies"), "{csv}");
    assert!(
        !header.contains(&"email"),
        "email is not declared for personalisation: {csv}"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert!(
        rows[0].starts_with(&format!("{two},")) && rows[0].contains("surf;skate"),
        "{csv}"
    );
}
