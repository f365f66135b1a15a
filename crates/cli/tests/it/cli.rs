//! The command line: sources, catalog checks and CSV imports.

use crate::support::{add_source, bin};
use std::io::Write;

#[test]
fn source_add_prints_only_the_key_and_refuses_a_taken_name() {
    let dir = tempfile::tempdir().unwrap();
    let key = add_source(dir.path(), "tills", "store");
    assert!(key.starts_with("wk_") && key.len() > 30);
    let again = bin()
        .args(["source", "add", "tills", "--kind", "store", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = bin()
        .args(["source", "add", "Tills!", "--kind", "till", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let list = bin()
        .args(["source", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.contains("tills") && list.contains("store"), "{list}");
    assert!(!list.contains(&key), "the full key is never shown again");
}

#[test]
fn catalog_check_reports_every_problem_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("confiance.toml");
    std::fs::write(
        &path,
        r#"[server]
listen = "127.0.0.1:9999"

[[purposes]]
id = "newsletter"
description = "Lettre d'information"
legal_basis = "consent"
retention = "3 years"

[[traits]]
name = "religion"
type = "string"
tier = "personal"
category = "religious_or_philosophical_beliefs"
purposes = ["newsletter"]

[[events]]
name = "Signed Up"
purposes = ["newsletter", "ads"]
properties = { plan = "text" }
"#,
    )
    .unwrap();
    let out = bin()
        .args(["catalog", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("confiance.toml:14:12: trait `religion` is special-category data"),
        "{err}"
    );
    assert!(
        err.contains(":11:8: trait `religion` is special-category data: state its `special_basis`"),
        "{err}"
    );
    assert!(
        err.contains(":19:27: event `Signed Up` names unknown purpose `ads`"),
        "{err}"
    );
    assert!(err.contains(":20:23: unknown type `text`"), "{err}");
    let ok = bin().args(["catalog", "check"]).output().unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("catalog OK"));
}

#[test]
fn csv_import_keeps_good_rows_once_and_lists_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    add_source(dir.path(), "tills", "store");
    let csv = dir.path().join("caisse.csv");
    let mut f = std::fs::File::create(&csv).unwrap();
    writeln!(f, "Ticket;Client;Email;Montant;Boutique;Date").unwrap();
    writeln!(f, "T-1;C-1;ana@example.org;12,50;Paris;31/01/2026 18:30").unwrap();
    writeln!(f, "T-2;C-2;bob@example.org;douze;Lyon;31/01/2026 18:31").unwrap();
    writeln!(f, "T-3;C-3;carla@example.org;30;Lyon;31/02/2026 10:00").unwrap();
    writeln!(f, "T-4;C-4;dan@example.org;8;Paris").unwrap();
    writeln!(f, "T-5;C-5;eve@example.org;45,00;Paris;01/02/2026 09:15").unwrap();
    drop(f);
    let mapping = dir.path().join("caisse.toml");
    std::fs::write(
        &mapping,
        r#"type = "track"
event = "Order Completed"
timestamp_format = "%d/%m/%Y %H:%M"
[columns]
Ticket = "messageId"
Client = "userId"
Email = "context.traits.email"
Montant = "properties.total"
Boutique = "properties.store"
Date = "timestamp"
"#,
    )
    .unwrap();
    let run = || {
        bin()
            .args(["import", "--source", "tills"])
            .arg(&csv)
            .arg("--mapping")
            .arg(&mapping)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let first = run();
    let stdout = String::from_utf8_lossy(&first.stdout);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(3), "some rows were rejected: {stderr}");
    assert!(
        stdout.contains("5 rows read: 2 stored, 0 already imported, 3 rejected"),
        "{stdout}"
    );
    assert!(
        stderr.contains("line 3: rejected: column `Montant` is not a number"),
        "{stderr}"
    );
    assert!(stderr.contains("line 4: rejected: column `Date`"), "{stderr}");
    assert!(
        stderr.contains("line 5: rejected: has 5 fields; the header has 6"),
        "{stderr}"
    );
    let second = run();
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        stdout.contains("5 rows read: 0 stored, 2 already imported, 3 rejected"),
        "{stdout}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = confiance_store::Store::open_sqlite(dir.path()).await.unwrap();
        assert_eq!(store.count_events().await.unwrap(), 2);
        let ana = store
            .events_of(
                confiance_store::Access::Administration,
                &confiance_store::Who::UserId("C-1".into()),
                0,
                10,
            )
            .await
            .unwrap();
        assert_eq!(ana.len(), 1);
        assert_eq!(ana[0].body["properties"]["total"], 12.5);
        assert_eq!(ana[0].body["properties"]["store"], "Paris");
        assert_eq!(ana[0].timestamp.to_string(), "2026-01-31T17:30:00Z");
    });
}

#[test]
fn audit_verify_names_the_first_altered_entry() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use confiance_core::consent::{Decision, IdKind, Method, Status, Subject};
        let store = confiance_store::Store::open_sqlite(dir.path()).await.unwrap();
        for i in 0..5 {
            let decision = Decision {
                subject: Subject::parse(IdKind::Email, &format!("p{i}@example.org")).unwrap(),
                purpose: "marketing_email".into(),
                status: Status::Granted,
                method: Method::Api,
                recorded_at: jiff::Timestamp::now(),
                notice: None,
                source_id: None,
                touchpoint: None,
                ip_hash: None,
                ua_hash: None,
                proof: serde_json::Value::Null,
            };
            store.record_consents(vec![decision]).await.unwrap();
        }
    });
    let verify = || {
        bin()
            .args(["audit", "verify", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(ok.status.success());
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "audit log verified: 5 entries, chain intact"
    );
    let db = rusqlite::Connection::open(dir.path().join("confiance.db")).unwrap();
    db.execute("UPDATE audit_log SET action = 'consent.deleted' WHERE seq = 3", [])
        .unwrap();
    let broken = verify();
    assert_eq!(broken.status.code(), Some(1));
    let out = String::from_utf8_lossy(&broken.stdout);
    assert!(out.contains("audit entry 3 does not verify"), "{out}");
}
