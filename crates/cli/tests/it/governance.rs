//! Governance: the records of processing (Art. 30) and their dated versions, the notice
//! archive, and the compliance checks — each rule failing on a seeded violation and passing
//! once it is fixed.

use crate::support::{ADMIN_TOKEN, TestApp, bin, read};
use confiance_core::catalog::{Catalog, Retention};
use confiance_core::clock::Clock;
use confiance_server::AppState;
use confiance_server::governance::{compliance_report, record_versions};
use confiance_store::{NewOccurrence, Next, SendRecord};
use serde_json::{Value, json};
use std::sync::Arc;

impl TestApp {
    async fn get_as_staff(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    async fn get_text(&self, path: &str) -> (u16, String, String) {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        (status, kind, resp.text().await.unwrap())
    }

    async fn staff_post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    /// One rule of `GET /api/v1/compliance`.
    async fn rule(&self, id: &str) -> Value {
        let (status, report) = self.get_as_staff("/api/v1/compliance").await;
        assert_eq!(status, 200, "{report}");
        let rule = report["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == id)
            .unwrap_or_else(|| panic!("no rule {id} in {report}"))
            .clone();
        if rule["outcome"] == "fail" {
            assert_eq!(report["passed"], false, "a failed rule fails the check");
        }
        rule
    }

    /// The same store served with another catalog, as after a restart with a new one.
    fn with_catalog(&self, catalog: Catalog) -> confiance_server::Shared {
        AppState::new(self.store.clone(), catalog, Arc::new(self.clock.clone()))
    }
}

fn days(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(24 * n)
}

#[tokio::test]
async fn the_records_hold_every_purpose_with_every_required_field() {
    let app = TestApp::spawn().await;
    let catalog = Catalog::builtin();
    assert_eq!(record_versions(&app.state).await.unwrap(), 1);

    let (status, body) = app.get_as_staff("/api/v1/records?format=json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
    let register = &body["register"];
    assert_eq!(register["controller"], catalog.controller.name);
    assert_eq!(register["dpo_contact"], catalog.controller.dpo_contact);
    let processings = register["processings"].as_array().unwrap();
    let ids: Vec<&str> = processings.iter().map(|p| p["purpose"].as_str().unwrap()).collect();
    assert_eq!(ids, catalog.purposes.keys().map(String::as_str).collect::<Vec<_>>());
    for p in processings {
        let purpose = &catalog.purposes[p["purpose"].as_str().unwrap()];
        for field in ["name", "description", "legal_basis", "retention"] {
            assert!(!p[field].as_str().unwrap().is_empty(), "{field} of {p}");
        }
        for field in ["subjects", "recipients", "security"] {
            assert!(!p[field].as_array().unwrap().is_empty(), "{field} of {p}");
        }
        for field in [
            "data_categories",
            "events",
            "special_categories",
            "transfers",
            "sources",
        ] {
            assert!(p[field].is_array(), "{field} of {p}");
        }
        assert_eq!(p["retention"], purpose.retention.to_string());
        assert_eq!(p["recipients"], json!(purpose.recipients));
    }
    // The data categories are the catalog's traits that name the purpose.
    let service = processings.iter().find(|p| p["purpose"] == "service").unwrap();
    let listed = service["data_categories"].to_string();
    for t in catalog
        .traits
        .values()
        .filter(|t| t.purposes.iter().any(|p| p == "service"))
    {
        assert!(listed.contains(&t.name), "{} missing from {listed}", t.name);
    }

    let (status, kind, csv) = app.get_text("/api/v1/records?format=csv").await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/csv"), "{kind}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), catalog.purposes.len() + 1, "{csv}");
    assert!(lines[0].starts_with("controller,address,dpo_contact,purpose,name,description,legal_basis,subjects"));
    for id in catalog.purposes.keys() {
        assert!(
            lines.iter().any(|l| l.contains(&format!(",{id},"))),
            "{id} not in the CSV"
        );
    }

    let (status, kind, html) = app.get_text("/api/v1/records?format=html").await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/html"), "{kind}");
    for id in catalog.purposes.keys() {
        assert!(html.contains(&format!("<section id=\"{id}\">")), "{id} not in the HTML");
    }
    for heading in [
        "Data protection officer",
        "Legal basis",
        "Categories of data subjects",
        "Categories of personal data",
        "Recipients",
        "Transfers outside the EU and safeguards",
        "Retention (erasure time limit)",
        "Security measures",
    ] {
        assert_eq!(html.matches(heading).count().min(1), 1, "{heading} not in the HTML");
    }

    let (status, body) = app.get_as_staff("/api/v1/records?format=pdf").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_field")), "{body}");
}

#[tokio::test]
async fn a_catalog_change_is_a_new_version_and_the_old_one_stays_retrievable() {
    let app = TestApp::spawn().await;
    let t0 = app.clock.now();
    assert_eq!(record_versions(&app.state).await.unwrap(), 1);
    // A restart with the same catalog keeps the same version.
    assert_eq!(record_versions(&app.with_catalog(Catalog::builtin())).await.unwrap(), 1);

    app.clock.set(t0 + days(10));
    let mut changed = Catalog::builtin();
    changed.purposes.get_mut("analytics").unwrap().retention = Retention {
        years: 0,
        months: 13,
        days: 0,
    };
    changed
        .purposes
        .get_mut("analytics")
        .unwrap()
        .recipients
        .push("agence web".into());
    assert_eq!(record_versions(&app.with_catalog(changed)).await.unwrap(), 2);

    let (_, versions) = app.get_as_staff("/api/v1/records/versions").await;
    let versions = versions["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_ne!(versions[0]["hash"], versions[1]["hash"]);

    let analytics = |body: &Value| {
        body["register"]["processings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["purpose"] == "analytics")
            .unwrap()
            .clone()
    };
    let day = |t: jiff::Timestamp| t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string();
    let (status, old) = app
        .get_as_staff(&format!("/api/v1/records?at={}", day(t0 + days(1))))
        .await;
    assert_eq!(status, 200, "{old}");
    assert_eq!(old["version"], 1);
    assert_eq!(analytics(&old)["retention"], "25 months");
    assert!(!analytics(&old)["recipients"].to_string().contains("agence web"));

    let (_, new) = app
        .get_as_staff(&format!("/api/v1/records?at={}", day(t0 + days(10))))
        .await;
    assert_eq!(new["version"], 2);
    assert_eq!(analytics(&new)["retention"], "13 months");
    assert!(analytics(&new)["recipients"].to_string().contains("agence web"));

    // The old version also renders as it stood, in every format.
    let (_, _, csv) = app
        .get_text(&format!("/api/v1/records?at={}&format=csv", day(t0)))
        .await;
    assert!(csv.contains("25 months") && !csv.contains("agence web"), "{csv}");

    let (status, before) = app
        .get_as_staff(&format!("/api/v1/records?at={}", day(t0 - days(2))))
        .await;
    assert_eq!((status, before["code"].as_str()), (404, Some("not_found")), "{before}");
    let (status, bad) = app.get_as_staff("/api/v1/records?at=yesterday").await;
    assert_eq!((status, bad["field"].as_str()), (400, Some("at")), "{bad}");
}

#[tokio::test]
async fn every_notice_shown_is_archived_with_its_hash_and_publication_dates() {
    let app = TestApp::spawn().await;
    let t0 = app.clock.now();
    record_versions(&app.state).await.unwrap();
    record_versions(&app.state).await.unwrap();
    app.clock.set(t0 + days(30));
    let mut next = Catalog::builtin();
    next.consent.notice_version = "2026-12-01".into();
    next.purposes.get_mut("analytics").unwrap().description = "Mesurer l'audience du site.".into();
    let second = app.with_catalog(next);
    record_versions(&second).await.unwrap();

    let (status, body) = app.get_as_staff("/api/v1/notices").await;
    assert_eq!(status, 200, "{body}");
    let notices = body["notices"].as_array().unwrap();
    assert_eq!(notices.len(), 2, "{body}");
    assert_eq!(notices[0]["version"], "2026-11-01");
    assert_eq!(notices[0]["hash"], app.state.notice_hash());
    assert_eq!(notices[1]["hash"], second.notice_hash());
    assert_ne!(notices[0]["hash"], notices[1]["hash"]);
    assert!(
        notices[1]["text"]
            .as_str()
            .unwrap()
            .contains("Mesurer l'audience du site.")
    );
    let ts = |v: &Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    assert_eq!(
        ts(&notices[0]["published_from"]),
        t0.round(jiff::Unit::Microsecond).unwrap()
    );
    assert_eq!(ts(&notices[0]["published_until"]), ts(&notices[1]["published_from"]));
    assert!(notices[1]["published_until"].is_null());
}

#[tokio::test]
async fn purposes_without_retention_or_basis_fail_until_fixed() {
    let app = TestApp::spawn().await;
    let now = app.clock.now();
    let mut catalog = Catalog::builtin();
    catalog.purposes.get_mut("contests").unwrap().retention = Retention::default();
    catalog
        .traits
        .values_mut()
        .next()
        .unwrap()
        .purposes
        .push("profiling".into());
    let report = compliance_report(&app.store, &catalog, now).await.unwrap();
    let rule = report
        .rules
        .iter()
        .find(|r| r.rule == "purposes_have_basis_and_retention")
        .unwrap();
    assert_eq!(serde_json::to_value(rule.outcome).unwrap(), "fail");
    assert_eq!(rule.evidence["without_retention"], json!(["contests"]));
    assert!(rule.evidence["undeclared_purposes"].to_string().contains("profiling"));

    let rule = app.rule("purposes_have_basis_and_retention").await;
    assert_eq!(rule["outcome"], "pass", "{rule}");
    assert_eq!(
        rule["evidence"]["purposes"]["accounting"]["legal_basis"],
        "legal_obligation"
    );
}

#[tokio::test]
async fn special_category_data_without_its_flag_fails_until_fixed() {
    let app = TestApp::spawn().await;
    let now = app.clock.now();
    let mut catalog = Catalog::builtin();
    let name = catalog.traits.keys().next().unwrap().clone();
    let t = catalog.traits.get_mut(&name).unwrap();
    t.category = "health".into();
    t.special_basis = None;
    let report = compliance_report(&app.store, &catalog, now).await.unwrap();
    let rule = report
        .rules
        .iter()
        .find(|r| r.rule == "special_categories_flagged")
        .unwrap();
    assert_eq!(serde_json::to_value(rule.outcome).unwrap(), "fail");
    assert_eq!(rule.evidence["without_basis"], json!([format!("{name} (health)")]));
    assert!(!report.passed);

    catalog.traits.get_mut(&name).unwrap().special_basis = Some(confiance_core::catalog::SpecialBasis::ExplicitConsent);
    let report = compliance_report(&app.store, &catalog, now).await.unwrap();
    let rule = report
        .rules
        .iter()
        .find(|r| r.rule == "special_categories_flagged")
        .unwrap();
    assert_eq!(serde_json::to_value(rule.outcome).unwrap(), "pass");
    assert_eq!(rule.evidence["special_traits"], json!([name]));
}

#[tokio::test]
async fn a_granted_consent_without_proof_fails_until_recorded_with_one() {
    let app = TestApp::spawn().await;
    assert_eq!(app.rule("granted_consents_have_proof").await["outcome"], "pass");
    let subject = json!({"type": "email", "value": "ana@example.org"});
    let (status, body) = app
        .staff_post(
            "/api/v1/consents",
            json!({"subject": subject, "purpose": "marketing_email", "status": "granted"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let rule = app.rule("granted_consents_have_proof").await;
    assert_eq!(rule["outcome"], "fail", "{rule}");
    assert_eq!(rule["evidence"]["ledger"].as_array().unwrap().len(), 1);
    assert!(rule["evidence"]["ledger"][0].as_str().unwrap().starts_with("ledger:"));
    assert!(
        !rule.to_string().contains("ana@example.org"),
        "evidence is pseudonymous"
    );

    app.staff_post(
        "/api/v1/consents",
        json!({"subject": subject, "purpose": "marketing_email", "status": "granted",
               "proof": {"form": "newsletter-signup", "checkbox": "unticked by default"}}),
    )
    .await;
    assert_eq!(app.rule("granted_consents_have_proof").await["outcome"], "pass");
}

#[tokio::test]
async fn an_overdue_rights_request_fails_until_answered() {
    let app = TestApp::spawn().await;
    let (status, request) = app
        .staff_post(
            "/api/v1/requests",
            json!({"type": "access", "subject": {"type": "email", "value": "bob@example.org"}}),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    let rule = app.rule("no_overdue_requests").await;
    assert_eq!(
        (rule["outcome"].as_str(), rule["evidence"]["open"].as_i64()),
        (Some("pass"), Some(1))
    );

    app.clock.set(app.clock.now() + days(32));
    let rule = app.rule("no_overdue_requests").await;
    assert_eq!(rule["outcome"], "fail", "{rule}");
    assert_eq!(
        rule["evidence"]["overdue"][0]["request"],
        format!("request:{}", request["id"])
    );

    let (status, body) = app
        .staff_post(
            &format!("/api/v1/requests/{}/refuse", request["id"]),
            json!({"reason": "no data is held about this address"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.rule("no_overdue_requests").await["outcome"], "pass");
}

#[tokio::test]
async fn the_retention_job_must_have_run_within_a_day() {
    let app = TestApp::spawn().await;
    let rule = app.rule("retention_job_ran").await;
    assert_eq!(rule["outcome"], "fail", "{rule}");
    assert!(rule["evidence"]["last_run"].is_null());

    let (status, _) = app.staff_post("/api/v1/retention/run", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(app.rule("retention_job_ran").await["outcome"], "pass");

    app.clock.set(app.clock.now() + jiff::SignedDuration::from_hours(25));
    assert_eq!(app.rule("retention_job_ran").await["outcome"], "fail");
    app.staff_post("/api/v1/retention/run", json!({})).await;
    assert_eq!(app.rule("retention_job_ran").await["outcome"], "pass");
}

#[tokio::test]
async fn consents_older_than_the_validity_period_fail_until_asked_again() {
    let app = TestApp::spawn().await;
    let grant = |who: &str, status: &str| {
        json!({"subject": {"type": "email", "value": who}, "purpose": "analytics", "status": status,
               "proof": {"banner": "test"}})
    };
    app.staff_post("/api/v1/consents", grant("ana@example.org", "granted"))
        .await;
    app.staff_post("/api/v1/consents", grant("bob@example.org", "denied"))
        .await;
    assert_eq!(app.rule("stale_choices_reasked").await["outcome"], "pass");

    app.clock.set(app.clock.now() + days(190));
    let rule = app.rule("stale_choices_reasked").await;
    assert_eq!(rule["outcome"], "fail", "{rule}");
    assert_eq!(rule["evidence"]["to_reask"], 2);
    assert_eq!(rule["evidence"]["stale_consents"], 1);
    assert_eq!(rule["evidence"]["validity"], "6 months");

    // Asked again: the consent is renewed; the old refusal is still counted for re-asking.
    app.staff_post("/api/v1/consents", grant("ana@example.org", "granted"))
        .await;
    let rule = app.rule("stale_choices_reasked").await;
    assert_eq!(rule["outcome"], "pass", "{rule}");
    assert_eq!(rule["evidence"]["to_reask"], 1);
}

#[tokio::test]
async fn a_breach_past_72_hours_unnotified_without_a_reason_fails_until_notified() {
    use confiance_core::privacy::breach::{Breach, Declaration, Scope, Wording};
    let app = TestApp::spawn().await;
    let now = app.clock.now();
    let declaration = Declaration {
        aware_at: now - days(4),
        scope: Scope {
            traits: vec!["email".into()],
            to: now,
            ..Scope::default()
        },
        wording: Wording {
            nature: "Sauvegarde perdue".into(),
            ..Wording::default()
        },
        wording_en: None,
    };
    let breach = Breach::declare(declaration, &Catalog::builtin(), "admin:test", now).unwrap();
    let mut breach = app.store.insert_breach(breach).await.unwrap();
    let rule = app.rule("breaches_notified_in_72h").await;
    assert_eq!(rule["outcome"], "fail", "{rule}");
    assert_eq!(rule["evidence"]["late"][0]["breach"], format!("breach:{}", breach.id));

    breach
        .notified(now, Some("the scope took four days to establish".into()))
        .unwrap();
    app.store
        .update_breach(&breach, "breach.notified", "dpo:test", now)
        .await
        .unwrap();
    let rule = app.rule("breaches_notified_in_72h").await;
    assert_eq!(rule["outcome"], "pass", "{rule}");
    assert_eq!(rule["evidence"]["breaches"], 1);
}

#[tokio::test]
async fn a_marketing_message_sent_without_consent_fails_the_send_log_check() {
    let app = TestApp::spawn().await;
    for (user, email) in [("u-ana", "ana@example.org"), ("u-bob", "bob@example.org")] {
        let (status, body) = app
            .post("/v1/identify", &json!({"userId": user, "traits": {"email": email}}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    app.resolved().await;
    let profile = |user: &str| {
        let id = confiance_core::unify::identifier::Identifier::parse("user_id", user).unwrap();
        let store = app.store.clone();
        async move { store.profile_of(&id).await.unwrap().unwrap() }
    };
    let (ana, bob) = (profile("u-ana").await, profile("u-bob").await);
    app.staff_post(
        "/api/v1/consents",
        json!({"subject": {"type": "user_id", "value": "u-ana"}, "purpose": "marketing_email",
               "status": "granted", "proof": {"form": "signup"}}),
    )
    .await;

    let campaign = app
        .store
        .put_campaign(None, "nouveautés", json!({"purpose": "marketing_email"}), true)
        .await
        .unwrap();
    let send = |profile: i64, key: &str| {
        let (store, now) = (app.store.clone(), app.clock.now());
        let key = key.to_owned();
        async move {
            store
                .add_occurrences(
                    vec![NewOccurrence {
                        campaign_id: campaign,
                        profile_id: profile,
                        key,
                        due_at: now,
                    }],
                    now,
                )
                .await
                .unwrap();
            let claimed = store.claim_due(now, now + days(1), 10).await.unwrap();
            let record = SendRecord {
                channel: "email".into(),
                outcome: "sent".into(),
                reason: None,
                detail: json!({}),
                at: now,
            };
            store.finish_step(claimed[0].clone(), record, Next::Done).await.unwrap();
        }
    };
    send(ana, "1").await;
    let rule = app.rule("marketing_sent_with_basis").await;
    assert_eq!(
        (rule["outcome"].as_str(), rule["evidence"]["sent"].as_i64()),
        (Some("pass"), Some(1)),
        "{rule}"
    );

    send(bob, "2").await;
    let rule = app.rule("marketing_sent_with_basis").await;
    assert_eq!(rule["outcome"], "fail", "{rule}");
    let unlawful = rule["evidence"]["without_basis"].as_array().unwrap();
    assert_eq!(unlawful.len(), 1, "{rule}");
    assert_eq!(unlawful[0]["profile"], format!("profile:{bob}"));
    assert_eq!(unlawful[0]["reason"], "no consent at send time");

    // A consent given after the send does not make it lawful.
    app.clock.set(app.clock.now() + jiff::SignedDuration::from_hours(1));
    app.staff_post(
        "/api/v1/consents",
        json!({"subject": {"type": "user_id", "value": "u-bob"}, "purpose": "marketing_email",
               "status": "granted", "proof": {"form": "signup"}}),
    )
    .await;
    assert_eq!(app.rule("marketing_sent_with_basis").await["outcome"], "fail");
    // The check reads the last 30 days of the log, as a daily cron job does.
    app.clock.set(app.clock.now() + days(31));
    assert_eq!(app.rule("marketing_sent_with_basis").await["outcome"], "pass");
}

#[tokio::test]
async fn a_tampered_audit_chain_fails_until_restored() {
    let app = TestApp::spawn().await;
    app.staff_post("/api/v1/retention/run", json!({})).await;
    let rule = app.rule("audit_chain_verifies").await;
    assert_eq!(rule["outcome"], "pass", "{rule}");

    let db = rusqlite::Connection::open(app.data_dir().join("confiance.db")).unwrap();
    let action: String = db
        .query_row("SELECT action FROM audit_log WHERE seq = 1", [], |r| r.get(0))
        .unwrap();
    db.execute("UPDATE audit_log SET action = 'nothing.happened' WHERE seq = 1", [])
        .unwrap();
    let rule = app.rule("audit_chain_verifies").await;
    assert_eq!(rule["outcome"], "fail", "{rule}");
    assert!(
        rule["evidence"]["broken"].as_str().unwrap().contains("audit entry 1"),
        "{rule}"
    );

    db.execute("UPDATE audit_log SET action = ?1 WHERE seq = 1", [action])
        .unwrap();
    assert_eq!(app.rule("audit_chain_verifies").await["outcome"], "pass");
}

#[test]
fn compliance_check_exits_non_zero_on_a_failure_for_cron_and_ci() {
    let dir = tempfile::tempdir().unwrap();
    let check = || {
        bin()
            .args(["compliance", "check", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("FAIL retention_job_ran: the retention job never ran"),
        "{stdout}"
    );
    assert!(stdout.contains("PASS audit_chain_verifies"), "{stdout}");
    assert!(stdout.contains("PASS breaches_notified_in_72h"), "{stdout}");
    assert!(stdout.contains("evidence:"), "{stdout}");

    let run = bin()
        .args(["retention", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("PASS retention_job_ran") && stdout.contains("9 rules, 0 failed"),
        "{stdout}"
    );

    let json = bin()
        .args(["compliance", "check", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["passed"], true);
    assert_eq!(report["rules"].as_array().unwrap().len(), 9);
}

#[tokio::test]
async fn the_inventory_counts_people_per_trait_and_flags_what_no_purpose_reads() {
    let app = TestApp::spawn().await;
    for (user, city) in [("u1", "Lyon"), ("u2", "Paris")] {
        let (status, body) = app
            .post(
                "/v1/identify",
                &json!({"userId": user, "traits": {"email": format!("{user}@example.org"), "city": city, "country": "FR"}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let tills = app.add_source("tills", confiance_core::source::SourceKind::Store).await;
    let (status, body) = app
        .post_as(
            &tills,
            "/v1/identify",
            &json!({"userId": "u1", "traits": {"city": "Lyon"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.resolved().await;
    let segment = app
        .store
        .put_segment(
            None,
            "lyonnais",
            json!({"purpose": "service", "query": "city = 'Lyon'"}),
        )
        .await
        .unwrap();

    let (status, inventory) = app.get_as_staff("/api/v1/inventory").await;
    assert_eq!(status, 200, "{inventory}");
    let entry = |name: &str| {
        inventory["traits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()
            .clone()
    };
    let city = entry("city");
    assert_eq!(city["subjects"], 2, "{city}");
    assert_eq!(city["sources"], json!({"tills": 1, "web": 2}));
    assert_eq!(city["used_by"]["service"], json!([format!("segment:{segment}")]));
    assert_eq!(city["flags"], json!([]));
    assert_eq!(city["tier"], "identity");
    assert!(city["retention"].as_str().unwrap().contains("year"), "{city}");

    let country = entry("country");
    assert_eq!(country["subjects"], 2);
    assert_eq!(country["flags"], json!(["never_used", "collected_never_read"]));
    assert!(
        inventory["collected_never_read"]
            .as_array()
            .unwrap()
            .contains(&json!("country"))
    );

    let gender = entry("gender");
    assert_eq!(
        (gender["subjects"].as_i64(), gender["flags"].clone()),
        (Some(0), json!(["never_used"]))
    );
    assert!(
        !inventory["collected_never_read"]
            .as_array()
            .unwrap()
            .contains(&json!("gender"))
    );

    let email = entry("email");
    assert_eq!(email["flags"], json!([]), "identifiers are read by identity resolution");
    assert_eq!(inventory["undeclared_observed"], json!([]));
}

#[tokio::test]
async fn the_records_list_the_real_destinations_and_the_sources_that_supplied_each_purpose() {
    let app = TestApp::spawn().await;
    // A till the catalog does not declare: the register still names it, with its kind.
    let till = app
        .add_source("caisse-paris", confiance_core::source::SourceKind::Store)
        .await;
    let (status, body) = app
        .post(
            "/v1/identify",
            &json!({"userId": "u1", "traits": {"email": "u1@example.org"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .post_as(
            &till,
            "/v1/identify",
            &json!({"userId": "u2", "traits": {"email": "u2@example.org", "city": "Paris"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.resolved().await;
    let t0 = app.clock.now();
    assert_eq!(record_versions(&app.state).await.unwrap(), 1);
    let processing = |body: &Value, id: &str| {
        body["register"]["processings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["purpose"] == id)
            .unwrap()
            .clone()
    };
    let catalog = Catalog::builtin();
    let (_, before) = app.get_as_staff("/api/v1/records").await;
    let email = processing(&before, "marketing_email");
    assert_eq!(
        email["recipients"],
        json!(catalog.purposes["marketing_email"].recipients)
    );
    assert_eq!(email["destinations"], json!([]));
    assert_eq!(
        email["sources"],
        json!(["caisse-paris (store): email", "web (web): email"]),
        "{email}"
    );
    assert_eq!(
        processing(&before, "service")["sources"],
        json!(["caisse-paris (store): city, email", "web (web): email"])
    );

    // A campaign of the marketing_email purpose starts sending to a partner's CRM.
    app.clock.set(t0 + days(1));
    let (status, campaign) = app
        .staff_post(
            "/api/v1/campaigns",
            json!({
                "name": "Relance CRM", "purpose": "marketing_email", "channel": "webhook",
                "webhook_url": "https://hook:tok3n@CRM.partner.example:8443/in/SECRET-PATH?key=abc",
                "trigger": {"happening": {"kind": "tour", "field": "favorite_artists"}},
                "steps": [{"template": {"subject": {"fr": "Tournée"}, "body": {"fr": "En tournée."}}}]
            }),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    let (_, after) = app.get_as_staff("/api/v1/records").await;
    assert_eq!(after["version"], 2, "the new recipient is a new version");
    let email = processing(&after, "marketing_email");
    assert_eq!(
        email["destinations"],
        json!([{"host": "crm.partner.example", "channel": "webhook", "campaign": "Relance CRM"}])
    );
    let recipients = email["recipients"].as_array().unwrap();
    assert_eq!(
        recipients.len(),
        catalog.purposes["marketing_email"].recipients.len() + 1
    );
    assert!(
        recipients
            .last()
            .unwrap()
            .as_str()
            .unwrap()
            .starts_with("crm.partner.example (webhook"),
        "{email}"
    );
    assert_eq!(processing(&after, "analytics")["destinations"], json!([]));
    let whole = after.to_string();
    for secret in ["tok3n", "SECRET-PATH", "key=abc", "8443", "hook:"] {
        assert!(!whole.contains(secret), "{secret} leaked into the register");
    }
    let (_, _, csv) = app.get_text("/api/v1/records?format=csv").await;
    assert!(
        csv.contains("crm.partner.example") && !csv.contains("SECRET-PATH"),
        "{csv}"
    );
    let (_, _, html) = app.get_text("/api/v1/records?format=html").await;
    assert!(html.contains("crm.partner.example") && html.contains("caisse-paris (store)"));

    // The register as it stood before the campaign does not have it.
    let (_, old) = app.get_as_staff(&format!("/api/v1/records?at={t0}")).await;
    assert_eq!(old["version"], 1, "{old}");
    assert_eq!(processing(&old, "marketing_email")["destinations"], json!([]));
    assert!(!old.to_string().contains("crm.partner.example"));
}
