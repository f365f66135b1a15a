//! The official Segment SDKs (analytics-python and @segment/analytics-node), unchanged,
//! pointed at `confiance serve`: every message they send is stored exactly once, also when a
//! batch is sent again. `scripts/test` installs them and sets the variables read here.

use crate::support::{ADMIN_TOKEN, Server, add_source, events_via_api};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

fn required_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test, which installs the SDKs"))
}

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients")
}

/// Runs an SDK client script and returns the messages it reports sending.
fn run_client(program: &str, script: &str, args: &[&str]) -> (Vec<Value>, String) {
    let out = Command::new(program)
        .arg(clients_dir().join(script))
        .args(args)
        .env(
            "NODE_PATH",
            std::env::var("CONFIANCE_TEST_NODE_MODULES").unwrap_or_default(),
        )
        .current_dir(clients_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{script} {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let messages = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (messages, stdout)
}

/// Sends with one SDK (plain, gzip, then the gzip batch again) and checks the store.
fn sdk_round_trip(program: &str, script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let key = add_source(dir.path(), "backend", "server");
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let server = Server::start(&["--data-dir", &data_dir], &[("CONFIANCE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let common = ["--host", &server.base, "--write-key", &key];
    // The shop's visitors agreed to measurement and recommendations before being tracked, as
    // the cookie banner would have recorded; without it, page views and product views would be
    // withheld (see the consent tests).
    let prefix = if script.ends_with(".py") { "py" } else { "node" };
    let mut consents = Vec::new();
    for run in ["plain", "gz"] {
        for i in 0..4 {
            for (kind, id) in [
                ("user_id", format!("{prefix}-user-{run}-{i}")),
                ("anonymous_id", format!("{prefix}-anon-{run}-{i}")),
            ] {
                for purpose in ["analytics", "personalisation"] {
                    consents.push(
                        serde_json::json!({"subject": {"type": kind, "value": id}, "purpose": purpose,
                        "status": "granted", "method": "banner", "touchpoint": "site_visit"}),
                    );
                }
            }
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(server.url("/api/v1/consents"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "consents": consents }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    });

    let (plain, _) = run_client(
        program,
        script,
        &[&common[..], &["--run-id", "plain", "--count", "3"]].concat(),
    );
    let (gzipped, output) = run_client(
        program,
        script,
        &[&common[..], &["--run-id", "gz", "--count", "4", "--gzip"]].concat(),
    );
    let resend_file = dir.path().join("sent.jsonl");
    std::fs::write(&resend_file, output).unwrap();
    let resend = resend_file.to_str().unwrap();
    let (resent, _) = run_client(
        program,
        script,
        &[&common[..], &["--resend-file", resend, "--gzip"]].concat(),
    );
    assert_eq!(resent.len(), gzipped.len());

    let sent: Vec<&Value> = plain.iter().chain(&gzipped).collect();
    let types: Vec<&str> = sent.iter().map(|m| m["type"].as_str().unwrap()).collect();
    for t in ["identify", "track", "page", "screen", "group", "alias"] {
        assert!(types.contains(&t), "the SDK sent no {t}");
    }

    let stored: HashMap<String, Vec<Value>> = rt.block_on(async {
        let mut by_id: HashMap<String, Vec<Value>> = HashMap::new();
        let mut seen_lookups = std::collections::HashSet::new();
        for m in &sent {
            let lookup = match m["userId"].as_str() {
                Some(u) => ("user_id", u.to_owned()),
                None => ("anonymous_id", m["anonymousId"].as_str().unwrap().to_owned()),
            };
            if !seen_lookups.insert(lookup.clone()) {
                continue;
            }
            for e in events_via_api(&server.base, lookup.0, &lookup.1).await {
                // An event with both ids is found by its user id; skip it on an anonymous
                // lookup so it is not counted twice.
                if lookup.0 == "anonymous_id" && !e["user_id"].is_null() {
                    continue;
                }
                by_id
                    .entry(e["message_id"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(e);
            }
        }
        by_id
    });
    for m in &sent {
        let id = m["messageId"].as_str().unwrap();
        let copies = stored.get(id).map_or(0, Vec::len);
        assert_eq!(copies, 1, "message {id} ({}) stored {copies} times", m["type"]);
        let e = &stored[id][0];
        assert_eq!(e["type"], m["type"]);
        if let Some(event) = m["event"].as_str() {
            assert_eq!(e["event"], event);
            assert_eq!(
                e["body"]["properties"], m["properties"],
                "declared properties kept as sent"
            );
        }
        if m["type"] == "identify" {
            assert_eq!(e["body"]["traits"], m["traits"]);
        }
        if m["type"] == "alias" {
            assert_eq!(e["body"]["previousId"], m["previousId"]);
        }
    }
    assert_eq!(stored.len(), sent.len(), "nothing else was stored");
}

#[test]
fn the_official_python_sdk_is_stored_exactly_once() {
    sdk_round_trip(&required_env("CONFIANCE_TEST_PYTHON"), "send_python.py");
}

#[test]
fn the_official_node_sdk_is_stored_exactly_once() {
    let node = std::env::var("CONFIANCE_TEST_NODE").unwrap_or_else(|_| "node".into());
    required_env("CONFIANCE_TEST_NODE_MODULES");
    sdk_round_trip(&node, "send_node.mjs");
}
