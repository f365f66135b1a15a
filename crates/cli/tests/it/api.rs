//! The tracking and admin APIs, in-process: every bad input gets its status and a JSON error
//! that names the problem, and the valid part of a request is never lost.

use crate::support::{ADMIN_TOKEN, TestApp, read};
use base64::Engine as _;
use serde_json::{Value, json};
use std::io::Write;

fn track(id: &str, user: &str) -> Value {
    json!({"type": "track", "messageId": id, "userId": user, "event": "Order Completed",
           "properties": {"order_id": id, "total": 19.9, "currency": "EUR"}})
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(body["link"], format!("https://confiance.dev/docs/errors#{code}"));
}

#[tokio::test]
async fn a_batch_stores_its_valid_messages_and_names_the_invalid_ones() {
    let app = TestApp::spawn().await;
    let big = json!({"type": "track", "messageId": "big", "userId": "ana", "event": "Products Searched",
                     "properties": {"query": "x".repeat(33 * 1024)}});
    let (status, body) = app
        .post(
            "/v1/batch",
            &json!({"batch": [
                track("m1", "ana"),
                {"type": "track", "userId": "ana"},
                big,
                {"type": "identify", "messageId": "m2", "userId": "ana", "traits": {"email": "ana@example.org", "shoe_size": 38}},
                {"type": "track", "messageId": "m3", "userId": "ana", "event": "Secret Event"},
                "not an object",
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    let rejected: Vec<(u64, &str)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rejected,
        vec![
            (1, "missing_field"),
            (2, "message_too_large"),
            (4, "undeclared_event"),
            (5, "invalid_json")
        ]
    );
    assert_eq!(
        body["dropped"],
        json!([{"index": 3, "field": "traits.shoe_size", "reason": "undeclared_trait"}])
    );
    let stored = app.events_of_user("ana").await;
    assert_eq!(stored.len(), 2);
    assert_eq!(
        stored[1].body["traits"],
        json!({"email": "ana@example.org"}),
        "undeclared trait not stored"
    );
}

#[tokio::test]
async fn envelope_errors_fail_the_whole_request_with_a_named_limit() {
    let app = TestApp::spawn().await;
    let resp = app
        .http
        .post(app.url("/v1/batch"))
        .basic_auth(&app.write_key, Some(""))
        .body("{\"batch\": [")
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_error(status, &body, 400, "invalid_json");

    let many: Vec<Value> = (0..2501).map(|i| track(&format!("m{i}"), "u")).collect();
    let (status, body) = app.post("/v1/batch", &json!({"batch": many})).await;
    assert_error(status, &body, 400, "batch_too_large");
    assert!(body["message"].as_str().unwrap().contains("2500"));

    let huge: Vec<Value> = (0..1000)
        .map(|i| track(&format!("{i:0>90}"), &"u".repeat(400)))
        .collect();
    let (status, body) = app.post("/v1/batch", &json!({"batch": huge})).await;
    assert_error(status, &body, 400, "request_too_large");
    assert_eq!(app.store.count_events().await.unwrap(), 0);

    let (status, body) = app
        .post("/v1/batch", &json!({"batch": [{"type": "track", "userId": "u"}]}))
        .await;
    assert_error(status, &body, 400, "no_valid_message");
    assert_eq!(body["rejected"][0]["code"], "missing_field");

    let (status, body) = app
        .post(
            "/v1/track",
            &json!({"userId": "u", "event": "Order Completed", "timestamp": "hier"}),
        )
        .await;
    assert_error(status, &body, 400, "invalid_timestamp");
    let (status, body) = app.post("/v1/track", &json!({"userId": "u", "properties": {}})).await;
    assert_error(status, &body, 400, "missing_field");
    let (status, body) = app.post("/nowhere", &json!({})).await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test]
async fn write_keys_are_accepted_in_every_form_segment_clients_use() {
    let app = TestApp::spawn().await;
    let key = app.write_key.clone();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let cases: Vec<(&str, Option<String>, Option<&str>)> = vec![
        ("basic-colon", Some(format!("Basic {}", b64(&format!("{key}:")))), None),
        ("basic-no-colon", Some(format!("Basic {}", b64(&key))), None),
        ("body-only", None, Some(&key)),
        ("bearer-and-body", Some("Bearer some-oauth-token".into()), Some(&key)),
    ];
    for (user, header, body_key) in cases {
        let mut body = json!({"batch": [track(&format!("id-{user}"), user)]});
        if let Some(k) = body_key {
            body["writeKey"] = json!(k);
        }
        let mut req = app.http.post(app.url("/v1/batch")).json(&body);
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let (status, resp) = read(req.send().await.unwrap()).await;
        assert_eq!(status, 200, "{user}: {resp}");
        assert_eq!(app.events_of_user(user).await.len(), 1, "{user}");
    }

    let (status, body) = read(
        app.http
            .post(app.url("/v1/batch"))
            .json(&json!({"batch": [track("x", "x")]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 401, "missing_write_key");
    let (status, body) = read(
        app.http
            .post(app.url("/v1/batch"))
            .basic_auth("wk_not_a_key", Some(""))
            .json(&json!({"batch": [track("x", "x")]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 401, "invalid_write_key");
}

#[tokio::test]
async fn gzip_bodies_explicit_nulls_batch_context_and_clock_skew() {
    let app = TestApp::spawn().await;
    let body = json!({
        "batch": [{
            "type": "page", "messageId": "p1", "userId": "léa", "anonymousId": null, "name": "Accueil",
            "properties": {"path": "/"}, "context": null, "integrations": null,
            "timestamp": "2020-01-01T00:00:00.000Z", "sentAt": null,
        }],
        "sentAt": "2020-01-01T00:00:10.000Z",
        "context": {"library": {"name": "analytics-python", "version": "2.3.4"},
                    "consent": {"categoryPreferences": {"Analytics": true}}},
        "integrations": {"All": true},
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.to_string().as_bytes()).unwrap();
    let resp = app
        .http
        .post(app.url("/v1/batch"))
        .basic_auth(&app.write_key, Some(""))
        .header("content-encoding", "gzip")
        .header("content-type", "application/json")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    let (status, resp) = read(resp).await;
    assert_eq!(status, 200, "{resp}");
    let stored = &app.events_of_user("léa").await[0];
    assert_eq!(stored.body["context"]["library"]["name"], "analytics-python");
    assert_eq!(stored.body["integrations"], json!({"All": true}));
    assert_eq!(stored.body["originalTimestamp"], "2020-01-01T00:00:00Z");
    // The client measured 10 s between the event and sending it: replayed on the server clock.
    let skew = stored.received_at.duration_since(stored.timestamp);
    assert_eq!(skew, jiff::SignedDuration::from_secs(10));
    assert_eq!(
        stored.received_at,
        micros(confiance_core::clock::Clock::now(&app.clock)),
        "the server's clock"
    );

    let resp = app
        .http
        .post(app.url("/v1/batch"))
        .basic_auth(&app.write_key, Some(""))
        .header("content-encoding", "gzip")
        .body("definitely not gzip")
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_error(status, &body, 400, "invalid_encoding");
    let resp = app
        .http
        .post(app.url("/v1/batch"))
        .basic_auth(&app.write_key, Some(""))
        .header("content-encoding", "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_error(status, &body, 400, "invalid_encoding");
}

#[tokio::test]
async fn a_resent_batch_stores_nothing_twice() {
    let app = TestApp::spawn().await;
    let batch = json!({"batch": (0..50).map(|i| track(&format!("m{i}"), "bob")).collect::<Vec<_>>()});
    let (_, first) = app.post("/v1/batch", &batch).await;
    let (status, second) = app.post("/v1/batch", &batch).await;
    assert_eq!(status, 200);
    assert_eq!(
        (first["accepted"].clone(), first["duplicates"].clone()),
        (json!(50), json!(0))
    );
    assert_eq!(
        (second["accepted"].clone(), second["duplicates"].clone()),
        (json!(0), json!(50))
    );
    let (_, single) = app.post("/v1/track", &track("m7", "bob")).await;
    assert_eq!(single["duplicates"], 1);
    assert_eq!(app.events_of_user("bob").await.len(), 50);
}

#[tokio::test]
async fn browsers_on_another_origin_can_post_and_beacon() {
    let app = TestApp::spawn().await;
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/v1/t"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,authorization")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));

    // navigator.sendBeacon posts a text/plain body with credentials and no custom header.
    let beacon = json!({"writeKey": app.write_key, "type": "track", "messageId": "b1", "anonymousId": "anon-1",
                        "event": "Product Viewed", "properties": {"product_id": "p1"},
                        "context": {"consent": {"categoryPreferences": {"Analytics": true}}}});
    let resp = app
        .http
        .post(app.url("/v1/t"))
        .header("origin", "https://shop.example")
        .header("content-type", "text/plain;charset=UTF-8")
        .body(beacon.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://shop.example");
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
    assert_eq!(resp.status(), 200);
    let events = app
        .store
        .events_of(
            confiance_store::Access::Administration,
            &confiance_store::Who::AnonymousId("anon-1".into()),
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn the_admin_api_needs_an_admin_token() {
    let app = TestApp::spawn().await;
    app.post(
        "/v1/batch",
        &json!({"batch": [track("a", "carla"), track("b", "carla"), track("c", "dan")]}),
    )
    .await;
    let get = |token: Option<&str>, query: &str| {
        let mut req = app.http.get(app.url(&format!("/api/v1/events?{query}")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { read(req.send().await.unwrap()).await }
    };
    let (status, body) = get(None, "user_id=carla").await;
    assert_error(status, &body, 401, "missing_token");
    let (status, body) = get(Some("wrong-token"), "user_id=carla").await;
    assert_error(status, &body, 401, "invalid_token");
    let (status, body) = get(Some(ADMIN_TOKEN), "").await;
    assert_error(status, &body, 400, "invalid_query");
    let (status, body) = get(Some(ADMIN_TOKEN), "user_id=carla&limit=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"][0]["message_id"], "a");
    let next = body["next_after"].as_i64().unwrap();
    let (_, body) = get(Some(ADMIN_TOKEN), &format!("user_id=carla&limit=1&after={next}")).await;
    assert_eq!(body["events"][0]["message_id"], "b");

    let resp = app
        .http
        .post(app.url("/api/v1/sources"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "tills", "kind": "store"}))
        .send()
        .await
        .unwrap();
    let (status, created) = read(resp).await;
    assert_eq!(status, 201, "{created}");
    assert!(created["write_key"].as_str().unwrap().starts_with("wk_"));
    let resp = app
        .http
        .get(app.url("/api/v1/sources"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let (_, sources) = read(resp).await;
    let web = sources.as_array().unwrap().iter().find(|s| s["name"] == "web").unwrap();
    assert_eq!(web["counters"]["accepted"], 3);
}

#[tokio::test]
async fn health_metrics_and_openapi_describe_the_service() {
    let app = TestApp::spawn().await;
    app.post(
        "/v1/batch",
        &json!({"batch": [track("a", "eve"), {"type": "track", "userId": "eve"},
        {"type": "identify", "userId": "eve", "traits": {"blood_type": "O"}}]}),
    )
    .await;
    let (status, health) = read(app.http.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, health["store"].as_str()), (200, Some("sqlite")));

    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"confiance_events_total{source="web",outcome="accepted",reason=""} 2"#,
        r#"confiance_events_total{source="web",outcome="rejected",reason="missing_field"} 1"#,
        r#"confiance_fields_dropped_total{source="web",reason="undeclared_trait"} 1"#,
        r#"confiance_http_requests_total{route="/v1/batch",status="200"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
    assert!(metrics.contains("confiance_store_duration_seconds_bucket"));

    let (status, doc) = read(app.http.get(app.url("/api/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for path in [
        "/v1/batch",
        "/v1/identify",
        "/v1/track",
        "/v1/page",
        "/v1/screen",
        "/v1/group",
        "/v1/alias",
        "/api/v1/events",
        "/api/v1/sources",
        "/healthz",
        "/metrics",
        "/api/openapi.json",
    ] {
        assert!(paths.contains(&path), "{path} missing from the OpenAPI document");
    }
}

fn micros(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(t.as_microsecond()).unwrap()
}

#[tokio::test]
async fn a_malformed_path_query_or_method_gets_the_json_error_too() {
    let app = TestApp::spawn().await;
    let call = |method: reqwest::Method, path: &'static str| {
        let req = app.http.request(method, app.url(path)).bearer_auth(ADMIN_TOKEN);
        async move { read(req.send().await.unwrap()).await }
    };
    let (status, body) = call(reqwest::Method::GET, "/api/v1/requests/not-a-number").await;
    assert_error(status, &body, 400, "invalid_path");
    assert!(body["message"].as_str().unwrap().contains("not-a-number"), "{body}");
    let (status, body) = call(reqwest::Method::GET, "/api/v1/events?user_id=carla&limit=many").await;
    assert_error(status, &body, 400, "invalid_query");
    assert!(body["message"].as_str().unwrap().contains("limit"), "{body}");
    let resp = app
        .http
        .delete(app.url("/api/v1/requests"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let allow = resp.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = read(resp).await;
    assert_error(status, &body, 405, "method_not_allowed");
    assert!(
        allow.is_some_and(|a| a.contains("POST")),
        "the methods it takes are named"
    );
    // From a page on another origin, the error stays readable (CORS headers kept).
    let resp = app
        .http
        .get(app.url("/v1/batch"))
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    let cors = resp
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = read(resp).await;
    assert_error(status, &body, 405, "method_not_allowed");
    assert_eq!(cors.as_deref(), Some("https://shop.example"));
}
