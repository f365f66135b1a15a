//! The real binary as an operator runs it: durability under kill -9, logs without personal
//! data, graceful shutdown, the demo.

use crate::support::{ADMIN_TOKEN, Server, add_source, bin, message_ids_via_api};
use serde_json::json;
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
    let stats: serde_json::Value = http
        .get(demo.url("/api/v1/consent/stats"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let purposes: Vec<&str> = stats["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["purpose"].as_str().unwrap())
        .collect();
    for p in ["analytics", "advertising", "marketing_email"] {
        assert!(purposes.contains(&p), "{p} in {purposes:?}");
    }
    let sources: serde_json::Value = http
        .get(demo.url("/api/v1/sources"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
}
