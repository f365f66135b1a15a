//! The real binary as an operator runs it: durability under kill -9, logs without personal
//! data, graceful shutdown, the demo.

use crate::support::{ADMIN_TOKEN, Server, SmtpSink, add_source, bin, message_ids_via_api};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let key = add_source(dir.path(), "backend", "server");
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let mut server = Server::start(&["--data-dir", &data_dir], &[("CONFIANCE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut streams = Vec::new();
    for task in 0..4 {
        let (url, key, acked) = (server.url("/v1/batch"), key.clone(), acked.clone());
        streams.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 0.. {
                let ids: Vec<String> = (0..20).map(|i| format!("t{task}-{n}-{i}")).collect();
                let batch: Vec<_> = ids
                    .iter()
                    .map(|id| {
                        json!({"type": "track", "messageId": id, "userId": format!("stream-{task}"),
                                     "event": "Order Delivered", "properties": {"order_id": id}})
                    })
                    .collect();
                let sent = http
                    .post(&url)
                    .basic_auth(&key, Some(""))
                    .json(&json!({"batch": batch}))
                    .send()
                    .await;
                match sent {
                    Ok(resp) if resp.status() == 200 => acked.lock().unwrap().extend(ids),
                    _ => return n,
                }
            }
            unreachable!()
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.child.kill().unwrap(); // SIGKILL: no chance to flush anything.
    server.child.wait().unwrap();
    for s in streams {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 200,
        "the stream was too short to test anything: {}",
        acked.len()
    );

    let server = Server::start(&["--data-dir", &data_dir], &[("CONFIANCE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let mut stored = Vec::new();
    for task in 0..4 {
        stored.extend(message_ids_via_api(&server.base, &format!("stream-{task}")).await);
    }
    let stored_set: HashSet<String> = stored.iter().cloned().collect();
    assert_eq!(stored_set.len(), stored.len(), "no message stored twice");
    let lost: Vec<&String> = acked.difference(&stored_set).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test]
async fn logs_hold_no_personal_data_and_shutdown_is_graceful() {
    let dir = tempfile::tempdir().unwrap();
    let key = add_source(dir.path(), "web", "web");
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let server = Server::start(
        &["--data-dir", &data_dir],
        &[("CONFIANCE_ADMIN_TOKEN", ADMIN_TOKEN), ("CONFIANCE_LOG", "trace")],
    );
    let secrets = [
        "zephyrine.quasimodo@example.org",
        "+33 6 11 22 33 44",
        "Zéphyrine",
        "203.0.113.77",
        "user-zephyrine-77",
        &key,
    ];
    let http = reqwest::Client::new();
    let batch = json!({"batch": [
        {"type": "identify", "userId": "user-zephyrine-77", "traits": {"email": secrets[0], "phone": secrets[1],
         "first_name": secrets[2], "nickname": secrets[2]}, "context": {"ip": secrets[3]}},
        {"type": "track", "userId": "user-zephyrine-77", "event": "Unknown", "properties": {"email": secrets[0]}},
        {"type": "track", "userId": "user-zephyrine-77", "event": "Order Completed", "timestamp": secrets[0]},
    ]});
    let resp = http
        .post(server.url("/v1/batch"))
        .basic_auth(&key, Some(""))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .post(server.url("/v1/batch"))
        .basic_auth("wk_zephyrine", Some(""))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(server.url("/api/v1/events"))
        .query(&[("user_id", "user-zephyrine-77")])
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let pid = server.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let mut server = server;
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "SIGTERM ends the server cleanly: {exit}");
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log();
    assert!(log.contains("in-flight requests finished"), "{log}");
    assert!(log.contains("request"), "trace logs were produced: {log}");
    for secret in secrets {
        assert!(!log.contains(secret), "the log leaks `{secret}`:\n{log}");
    }
}

#[test]
fn a_bad_configuration_stops_before_serving_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[server]\nlisten = \"nowhere\"\n").unwrap();
    let out = bin().args(["serve", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[server]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args(["serve", "--data-dir", "x", "--database-url", "postgres://localhost/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn the_demo_builds_a_fresh_shop_and_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("precious.txt"), "not the demo's").unwrap();
    let refused = bin()
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a directory the demo did not make is left alone"
    );
    assert!(data_dir.join("precious.txt").exists());
    std::fs::remove_file(data_dir.join("precious.txt")).unwrap();

    let mut cmd = bin();
    cmd.args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("CONFIANCE_ADMIN_TOKEN", ADMIN_TOKEN);
    let demo = Server::spawn(cmd, "confiance is listening");
    let log = demo.log();
    assert!(log.contains("messages generated for 10,000 customers"), "{log}");
    let http = reqwest::Client::new();
    let home = http.get(demo.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("Vinyles &amp; Cie"));
    for event in [
        "Order Completed",
        "Order Delivered",
        "Support Ticket Opened",
        "Questionnaire Answered",
        "Account Created",
    ] {
        assert!(home.contains(event), "the home page counts {event}");
    }
    let shop = http
        .get(demo.url("/demo/shop"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        shop.contains("/consent.js") && shop.contains("wk_"),
        "the shop page embeds the banner with the web key"
    );
    let stats = demo.admin_get("/api/v1/consent/stats").await;
    let purposes: Vec<&str> = stats["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["purpose"].as_str().unwrap())
        .collect();
    for p in ["analytics", "advertising", "marketing_email"] {
        assert!(purposes.contains(&p), "{p} in {purposes:?}");
    }
    let sources = demo.admin_get("/api/v1/sources").await;
    let names: Vec<&str> = sources
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["accounts", "backend", "forms", "helpdesk", "tills", "web"]);
    let customers = sources
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["counters"]["accepted"].as_i64().unwrap_or(0))
        .sum::<i64>();
    assert!(customers > 100_000, "the demo holds its events: {customers}");

    // Its saved segments fill once the audience index has caught up with identity resolution.
    for _ in 0..1_200 {
        let (unify, audience) = (
            demo.admin_get("/api/v1/unify/status").await,
            demo.admin_get("/api/v1/audience").await,
        );
        if unify["lag"] == 0 && audience["feed"]["events"] == unify["head"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let segments = demo.admin_get("/api/v1/segments").await;
    let counts: Vec<(&str, u64)> = segments["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts.len(), 4, "{segments}");
    assert!(counts.iter().all(|(_, n)| *n > 0), "{counts:?}");
    // Its birthday-card campaign schedules the cards of the birthdays a week ahead.
    let mut scheduled = 0;
    for _ in 0..300 {
        let figures = demo.admin_get("/api/v1/campaigns/1").await;
        scheduled =
            figures["figures"]["scheduled"].as_i64().unwrap_or(0) + figures["figures"]["sent"].as_i64().unwrap_or(0);
        if scheduled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(scheduled > 0, "birthday cards in the next days");
}

/// A fresh PostgreSQL database for one test, dropped afterwards.
struct PgDatabase {
    admin: tokio_postgres::Client,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> PgDatabase {
        let admin_url = std::env::var("CONFIANCE_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let (admin, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL is unreachable at {admin_url}: {e}; run the tests with scripts/test")
            });
        tokio::spawn(conn);
        let name = format!(
            "confiance_it_{}_{}",
            std::process::id(),
            jiff::Timestamp::now().as_microsecond() % 1_000_000_000
        );
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let base = admin_url.rsplit_once('/').unwrap().0;
        PgDatabase {
            url: format!("{base}/{name}"),
            admin,
            name,
        }
    }

    async fn drop_it(self) {
        // The store's key vault is a database of its own beside it.
        // One statement per query: several in one string run as one transaction, which DROP
        // DATABASE refuses.
        for name in [self.name.clone(), format!("{}_vault", self.name)] {
            let _ = self
                .admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgresql_resolve_like_one() {
    let db = PgDatabase::create().await;
    let out = bin()
        .args(["source", "add", "web", "--kind", "web", "--database-url", &db.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let envs = [("CONFIANCE_ADMIN_TOKEN", ADMIN_TOKEN)];
    let nodes = [
        Server::start(&["--database-url", &db.url], &envs),
        Server::start(&["--database-url", &db.url], &envs),
    ];

    // The same people reach both nodes at once: browsing on one, signing up and logging in on
    // the other, with shared family emails and devices.
    let http = reqwest::Client::new();
    let mut sends = Vec::new();
    for round in 0..8 {
        for (n, node) in nodes.iter().enumerate() {
            let mut batch = Vec::new();
            for i in 0..25 {
                let person = (round * 25 + i) % 120;
                batch.push(if n == 0 {
                    json!({"type": "identify", "anonymousId": format!("b{person}-{round}"), "userId": format!("u{person}")})
                } else {
                    json!({"type": "identify", "userId": format!("u{}", person), "anonymousId": format!("b{}-{}", person / 2, round),
                           "traits": {"email": format!("family{}@example.org", person / 3)}})
                });
            }
            let request = http
                .post(node.url("/v1/batch"))
                .basic_auth(&key, Some(""))
                .json(&json!({"batch": batch}))
                .send();
            sends.push(request);
        }
    }
    for response in futures_join(sends).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    // Both nodes follow the log; wait until it is resolved.
    nodes[0].resolved().await;
    // Each node's audience index follows the same change feed and counts the same people.
    let (_, head) = confiance_store::Store::connect_postgres(&db.url)
        .await
        .unwrap()
        .unify_status()
        .await
        .unwrap();
    let count = |node: usize, purpose: &'static str| {
        let url = nodes[node].url("/api/v1/segments/preview");
        let http = http.clone();
        async move {
            let body: Value = http
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"query": "first_seen exists", "purpose": purpose}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["count"].as_u64().unwrap_or_else(|| panic!("{body}"))
        }
    };
    for node in &nodes {
        for _ in 0..500 {
            let status = node.admin_get("/api/v1/audience").await;
            if status["feed"]["events"].as_i64() >= Some(head) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let (a, b) = (count(0, "service").await, count(1, "service").await);
    assert!(a > 30 && a == b, "the same count on both nodes: {a} and {b}");
    assert_eq!(count(1, "analytics").await, 0, "nobody consented to analytics");
    let granted = http
        .post(nodes[0].url("/api/v1/consents"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"subject": {"type": "email", "value": "family7@example.org"}, "purpose": "analytics", "status": "granted"}))
        .send()
        .await
        .unwrap();
    assert!(granted.status().is_success());
    assert_eq!(count(0, "analytics").await, 1, "at once on the node that recorded it");
    let mut seen = 0;
    for _ in 0..100 {
        seen = count(1, "analytics").await;
        if seen == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 1, "the other node follows the consent ledger");
    drop(nodes);
    let store = confiance_store::Store::connect_postgres(&db.url).await.unwrap();
    let concurrent = store.profiles_snapshot().await.unwrap();
    assert!(concurrent.len() > 10, "{}", concurrent.len());
    store.reset_profiles().await.unwrap();
    let catalog = std::sync::Arc::new(confiance_core::catalog::Catalog::builtin());
    let guards = std::sync::Arc::new(catalog.unify.guards.clone());
    while store
        .resolve_pending(catalog.clone(), guards.clone(), 1000)
        .await
        .unwrap()
        .events
        > 0
    {}
    let alone = store.profiles_snapshot().await.unwrap();
    db.drop_it().await;
    assert_eq!(concurrent, alone, "no lost merge, no duplicate profile");
}

async fn futures_join<F: std::future::Future + Send + 'static>(futures: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_erasure_a_postgresql_dump_holds_no_plaintext_of_the_subject() {
    let db = PgDatabase::create().await;
    let out = bin()
        .args(["source", "add", "web", "--kind", "web", "--database-url", &db.url])
        .output()
        .unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let server = Server::start(&["--database-url", &db.url], &[("CONFIANCE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let http = reqwest::Client::new();
    let batch = json!({"batch": [
        {"type": "identify", "userId": "vc-pg-erase", "traits": {"email": "pg.erasure@example.org", "first_name": "Philomène", "phone": "06 11 22 33 99"}},
        {"type": "track", "userId": "vc-pg-erase", "event": "Order Completed", "properties": {"order_id": "P-1", "total": 5.0}},
        {"type": "identify", "userId": "vc-pg-keep", "traits": {"email": "pg.keep@example.org"}},
    ]});
    let resp = http
        .post(server.url("/v1/batch"))
        .basic_auth(&key, Some(""))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.resolved().await;
    // Before the erasure, a dump holds her user id (it keys the event log) but neither what her
    // messages say nor her email or phone: bodies and the values of those identifiers are sealed
    // under keys that live in another database, and the identity graph holds keyed hashes.
    let before = std::process::Command::new("pg_dump")
        .args(["--data-only", &db.url])
        .output()
        .unwrap();
    assert!(before.status.success(), "{}", String::from_utf8_lossy(&before.stderr));
    let before = String::from_utf8_lossy(&before.stdout).into_owned();
    assert!(before.contains("vc-pg-erase"));
    for field in [
        "Philomène",
        "P-1",
        "06 11 22 33 99",
        "pg.erasure@example.org",
        "+33611223399",
    ] {
        assert!(!before.contains(field), "the dump holds `{field}` in plaintext");
    }
    let request: serde_json::Value = http
        .post(server.url("/api/v1/requests"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"type": "erasure", "subject": {"type": "email", "value": "pg.erasure@example.org"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let done = http
        .post(server.url(&format!("/api/v1/requests/{}/process", request["id"])))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());
    drop(server);
    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", &db.url])
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let text = String::from_utf8_lossy(&dump.stdout).into_owned();
    db.drop_it().await;
    assert!(text.contains("vc-pg-keep"), "the dump holds the other subject");
    for secret in ["pg.erasure@example.org", "Philomène", "vc-pg-erase", "+33611223399"] {
        assert!(!text.contains(secret), "the dump still holds `{secret}`");
    }
}

fn code_in(mail: &str) -> String {
    let decoded = mail.replace("=\r\n", "").replace("=\n", "");
    decoded
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no code in {mail}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_confirmed_with_a_code_sent_by_email() {
    let smtp = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let key = add_source(dir.path(), "web", "web");
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let server = Server::start(
        &["--data-dir", &data_dir],
        &[
            ("CONFIANCE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("CONFIANCE_SMTP_URL", &smtp_url),
        ],
    );
    let http = reqwest::Client::new();
    http.post(server.url("/v1/identify"))
        .basic_auth(&key, Some(""))
        .json(&json!({"userId": "vc-mail", "traits": {"email": "mail.me@example.org"}}))
        .send()
        .await
        .unwrap();
    let ask = |subject: serde_json::Value| {
        let (http, url) = (http.clone(), server.url("/api/v1/requests"));
        async move {
            let r: serde_json::Value = http
                .post(url)
                .json(&json!({"type": "access", "subject": subject}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r
        }
    };
    let verify = |id: serde_json::Value, code: String| {
        let (http, url) = (http.clone(), server.url(&format!("/api/v1/requests/{id}/verify")));
        async move {
            let resp = http.post(url).json(&json!({"code": code})).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap())
        }
    };

    let first = ask(json!({"type": "email", "value": "mail.me@example.org"})).await;
    assert_eq!(first["status"], "verifying", "{first}");
    let mail = smtp.message(1);
    assert!(mail.contains("To: mail.me@example.org"), "{mail}");
    let code = code_in(&mail);
    let wrong = if code == "000000" {
        "111111".to_owned()
    } else {
        "000000".to_owned()
    };
    let (status, body) = verify(first["id"].clone(), wrong.clone()).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("verification_failed")));
    let (status, done) = verify(first["id"].clone(), code).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["status"].as_str(), done["verified"].as_bool()),
        (Some("in_progress"), Some(true))
    );

    // Asked under the user id, the code goes to the email the profile holds; five wrong codes
    // exhaust it.
    server.resolved().await;
    let second = ask(json!({"type": "user_id", "value": "vc-mail"})).await;
    let code = code_in(&smtp.message(2));
    for _ in 0..5 {
        assert_eq!(verify(second["id"].clone(), wrong.clone()).await.0, 403);
    }
    let (status, body) = verify(second["id"].clone(), code).await;
    assert_eq!(status, 403, "too many attempts: {body}");
    let state = server.admin_get(&format!("/api/v1/requests/{}", second["id"])).await;
    assert_eq!(state["status"], "verifying", "the request is unchanged");
}

/// What the stand-in SMS gateway was asked to send: the authorization header and the body.
type Outbox = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_email_the_code_goes_by_sms_through_the_provider() {
    // A stand-in for the provider's HTTP gateway: it keeps what it is asked to send.
    let sent: Outbox = Arc::default();
    let keep = sent.clone();
    let gateway = axum::Router::new().route(
        "/sms",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::Json<serde_json::Value>| {
                let keep = keep.clone();
                async move {
                    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
                    keep.lock().unwrap().push((auth, body.0));
                    "queued"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sms_url = format!("http://{}/sms", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, gateway).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let key = add_source(dir.path(), "tills", "store");
    let server = Server::start(
        &["--data-dir", &data_dir],
        &[
            ("CONFIANCE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("CONFIANCE_SMS_URL", &sms_url),
            ("CONFIANCE_SMS_TOKEN", "gateway-secret"),
        ],
    );
    let http = reqwest::Client::new();
    http.post(server.url("/v1/identify"))
        .basic_auth(&key, Some(""))
        .json(&json!({"anonymousId": "VC-PAR-5", "traits": {"phone": "06 12 34 56 78", "loyalty_card": "VC-PAR-5"}}))
        .send()
        .await
        .unwrap();
    let request: serde_json::Value = http
        .post(server.url("/api/v1/requests"))
        .json(&json!({"type": "portability", "subject": {"type": "phone", "value": "+33 6 12 34 56 78"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(request["status"], "verifying");
    let (auth, message) = sent.lock().unwrap().first().cloned().expect("a text was sent");
    assert_eq!(auth.as_deref(), Some("Bearer gateway-secret"));
    assert_eq!(message["to"], "+33612345678");
    let code = code_in(message["text"].as_str().unwrap());
    let resp = http
        .post(server.url(&format!("/api/v1/requests/{}/verify", request["id"])))
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn two_schedulers_on_one_postgresql_send_each_message_once() {
    let smtp = SmtpSink::start();
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let db = PgDatabase::create().await;
    let out = bin()
        .args(["source", "add", "web", "--kind", "web", "--database-url", &db.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let envs = [
        ("CONFIANCE_ADMIN_TOKEN", ADMIN_TOKEN),
        ("CONFIANCE_SMTP_URL", smtp_url.as_str()),
    ];
    let nodes = [
        Server::start(&["--database-url", &db.url], &envs),
        Server::start(&["--database-url", &db.url], &envs),
    ];
    let http = reqwest::Client::new();
    let fans = 30;
    let batch: Vec<Value> = (0..fans)
        .map(|n| {
            json!({"type": "identify", "userId": format!("fan{n}"),
                        "traits": {"email": format!("fan{n}@example.org"), "favorite_artists": ["Air"]},
                        "context": {"consent": {"categoryPreferences": {"Personalization": true}}}})
        })
        .collect();
    let resp = http
        .post(nodes[0].url("/v1/batch"))
        .basic_auth(&key, Some(""))
        .json(&json!({"batch": batch}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for n in 0..fans {
        let r = http
            .post(nodes[n % 2].url("/api/v1/consents"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"subject": {"type": "user_id", "value": format!("fan{n}")}, "purpose": "marketing_email", "status": "granted"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    nodes[0].resolved().await;
    let (_, head) = confiance_store::Store::connect_postgres(&db.url)
        .await
        .unwrap()
        .unify_status()
        .await
        .unwrap();
    for node in &nodes {
        for _ in 0..500 {
            if node.admin_get("/api/v1/audience").await["feed"]["events"].as_i64() >= Some(head) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let campaign = http
        .post(nodes[0].url("/api/v1/campaigns"))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({"name": "Air en tournée", "purpose": "marketing_email", "channel": "email",
                      "trigger": {"happening": {"kind": "tour", "field": "favorite_artists"}},
                      "steps": [{"template": {"subject": {"fr": "Air en tournée"}, "body": {"fr": "Bonjour !"}}}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(campaign.status(), 201);
    // The same announcement reaches both nodes; both schedulers run.
    for node in &nodes {
        let r: Value = http
            .post(node.url("/api/v1/happenings"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"kind": "tour", "about": "Air", "name": "Tournée 2027"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["campaigns"][0]["matched"], fans, "{r}");
    }
    let mut received = 0;
    for _ in 0..300 {
        received = smtp.messages().len();
        if received >= fans {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both schedulers keep ticking a while longer: nothing more arrives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = smtp.messages();
    let recipients: HashSet<String> = mails
        .iter()
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("To: ").map(str::to_owned)))
        .collect();
    assert_eq!(
        (received, mails.len(), recipients.len()),
        (fans, fans, fans),
        "each fan exactly once"
    );
    drop(nodes);
    db.drop_it().await;
}
