//! The retention job: deletes or anonymises what is past its time, daily, and reports what it
//! did; a dry run reports what it would do and changes nothing.

use crate::auth::Staff;
use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::extract::{Query, State};
use axum::routing::post;
use axum::{Json, Router};
use confiance_core::privacy::retention::{PersonVerdict, event_expired, expired_traits, person, subject_initiated};
use confiance_store::Access;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The retention routes.
pub fn routes() -> Router<Shared> {
    Router::new().route("/api/v1/retention/run", post(run))
}

/// Whether to change anything.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RunQuery {
    /// Report only.
    pub dry_run: Option<bool>,
}

/// Runs the retention rules now (a dry run with `?dry_run=true`).
#[utoipa::path(post, path = "/api/v1/retention/run", tag = "requests", params(RunQuery),
    responses((status = 200, description = "What was (or would be) deleted and anonymised")), security(("bearer" = [])))]
pub async fn run(_: Staff, State(app): State<Shared>, Query(q): Query<RunQuery>) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_retention(&app, q.dry_run.unwrap_or(false)).await?))
}

/// Applies (or, in a dry run, only measures) the catalog's retention rules.
pub async fn run_retention(app: &AppState, dry_run: bool) -> Result<Value, ApiError> {
    let now = app.clock.now();
    let catalog = &app.catalog;
    // People first: a person past their time goes whole.
    let mut people: BTreeMap<&str, u64> = BTreeMap::new();
    // Notices queued to the recipients of the people erased (Art. 19).
    let mut recipients_told: u64 = 0;
    // The identifiers of the people erased, so that their events are not counted twice.
    let mut gone: std::collections::HashSet<String> = std::collections::HashSet::new();
    for profile in app.store.profile_ids().await? {
        let events = app
            .store
            .profile_events(Access::Administration, profile, 0, 1_000_000)
            .await?;
        let last_contact = events
            .iter()
            .filter(|e| subject_initiated(e.kind, e.event.as_deref(), catalog))
            .map(|e| e.timestamp)
            .max();
        let last_order = events
            .iter()
            .filter(|e| e.event.as_deref() == Some("Order Completed"))
            .map(|e| e.timestamp)
            .max();
        let verdict = person(last_contact, last_order, catalog, now);
        let label = match verdict {
            PersonVerdict::Keep => continue,
            PersonVerdict::ExpiredProspect => "prospects_erased",
            PersonVerdict::ExpiredCustomer => "customers_erased",
        };
        *people.entry(label).or_default() += 1;
        if let Some(row) = app.store.profile(Access::Administration, profile).await? {
            let keys: Vec<String> = row.identities.into_iter().map(|(k, _)| k).collect();
            gone.extend(keys.iter().cloned());
            if dry_run {
                continue;
            }
            // Who received their data is read before the erasure deletes the record of it; the
            // erasure queues their notices (Art. 19) for the notice worker to send.
            let recipients = app.recipients_of(Some(profile)).await?;
            let notices = app.notices_for(
                &recipients,
                confiance_core::privacy::requests::Right::Erasure,
                None,
                profile,
            );
            recipients_told += notices.len() as u64;
            app.store
                .erase(confiance_store::Erasure {
                    keys,
                    profile: Some(profile),
                    suppression: Vec::new(),
                    at: now,
                    notices,
                })
                .await?;
        }
    }
    // Then events past their purposes' time, and traits past their own.
    let (mut delete, mut rewrite) = (Vec::new(), Vec::new());
    let mut by_purpose: BTreeMap<String, u64> = BTreeMap::new();
    let mut traits: BTreeMap<String, u64> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = app.store.events_page(after, 5_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page {
            let of_gone = e
                .user_id
                .as_ref()
                .is_some_and(|u| gone.contains(&format!("user_id:{u}")))
                || e.anonymous_id
                    .as_ref()
                    .is_some_and(|a| gone.contains(&format!("anonymous_id:{a}")));
            if of_gone {
                continue;
            }
            if event_expired(&e.purposes, e.timestamp, catalog, now) {
                *by_purpose.entry(e.purposes.join("+")).or_default() += 1;
                delete.push(e.seq);
                continue;
            }
            let expired = expired_traits(&e.body, e.timestamp, catalog, now);
            if !expired.is_empty() {
                let mut e = e.clone();
                let body = &mut e.body;
                for name in &expired {
                    *traits.entry(name.clone()).or_default() += 1;
                    for path in ["traits", "context"] {
                        let holder = if path == "traits" {
                            body.get_mut("traits")
                        } else {
                            body.pointer_mut("/context/traits")
                        };
                        if let Some(Value::Object(map)) = holder {
                            map.remove(name);
                        }
                    }
                }
                rewrite.push(e);
            }
        }
    }
    let report = json!({
        "dry_run": dry_run,
        "at": now,
        "people": people,
        "recipients_told": recipients_told,
        "events_deleted": delete.len(),
        "events_deleted_by_purposes": by_purpose,
        "traits_removed": traits,
    });
    if !dry_run {
        app.store.expire_events(delete, rewrite, now, report.clone()).await?;
    }
    tracing::info!(dry_run, events = report["events_deleted"].as_u64(), "retention ran");
    Ok(report)
}

/// Runs the retention job once a day until `stop` fires, and keeps a version of the records
/// of processing when the sources that supply data changed since the last one.
pub async fn run_daily(app: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Err(e) = run_retention(&app, false).await {
            tracing::warn!(error = %e.into_error(), "the retention job failed; it runs again tomorrow");
        }
        if let Err(e) = crate::governance::record_versions(&app).await {
            tracing::warn!(error = %e, "the records of processing could not be versioned; tried again tomorrow");
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(86_400)) => {}
            _ = stop.changed() => return,
        }
    }
}
