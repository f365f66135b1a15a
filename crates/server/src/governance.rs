//! Governance for the DPO: the records of processing (Art. 30) as they stood on any date, the
//! archive of consent notices, the data inventory, and the compliance checks with their
//! evidence.
//!
//! The server records a version of the register and archives the banner's notice at start
//! ([`record_versions`]); both are kept only when they changed, so every node may do it. The
//! register depends on the store too (campaign destinations, the sources that supplied each
//! trait), so a version is also taken when a campaign is saved, when the register is read as
//! it stands now, and daily with the retention job: a version's identity is the hash of the
//! catalog *and* the register it produced.
//! [`compliance_report`] gathers the facts from the store and lets
//! `confiance_core::governance::compliance` judge them; the command line runs the same function.

use crate::auth::Staff;
use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use confiance_core::ErrorCode;
use confiance_core::activate::{Campaign, Channel};
use confiance_core::catalog::Catalog;
use confiance_core::consent::Status;
use confiance_core::governance::compliance::{self, BreachFacts, Facts, Report, SentMessage};
use confiance_core::governance::inventory::{self, Inventory, Observed, Reader};
use confiance_core::governance::records::{Destination, Flows, Register, host_of};
use confiance_store::{Access, Store, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

/// The governance routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/records", get(records))
        .route("/api/v1/records/versions", get(versions))
        .route("/api/v1/notices", get(notices))
        .route("/api/v1/inventory", get(inventory))
        .route("/api/v1/compliance", get(compliance_check))
}

/// The catalog's JSON and its SHA-256.
pub fn catalog_fingerprint(catalog: &Catalog) -> (Value, String) {
    let json = serde_json::to_value(catalog).unwrap_or(Value::Null);
    let hash = hex::encode(Sha256::digest(json.to_string().as_bytes()));
    (json, hash)
}

/// Where data comes from and goes to, from the store: every campaign sending to a webhook (its
/// host only), the registered sources and which of them supplied which trait.
pub async fn flows(store: &Store) -> Result<Flows, StoreError> {
    let mut destinations = Vec::new();
    for row in store.campaigns().await? {
        // A campaign the store holds was checked when saved; one that no longer reads is not
        // a destination anyone can send to.
        let Ok(c) = serde_json::from_value::<Campaign>(row.doc) else {
            continue;
        };
        if c.channel != Channel::Webhook {
            continue;
        }
        if let Some(host) = c.webhook_url.as_deref().and_then(host_of) {
            destinations.push((
                c.purpose,
                Destination {
                    host,
                    channel: c.channel.as_str().to_owned(),
                    campaign: c.name,
                },
            ));
        }
    }
    let sources = store
        .list_sources()
        .await?
        .into_iter()
        .map(|s| (s.name.to_string(), s.kind))
        .collect();
    let (by_source, _) = store.trait_counts().await?;
    let supplied = by_source
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(name, source, _)| (name, source))
        .collect();
    Ok(Flows {
        destinations,
        sources,
        supplied,
    })
}

/// Keeps a dated version of the register when the catalog or what the store says of sources
/// and destinations changed, and archives the banner's notice when it is new. Returns the
/// version in force.
pub async fn record_versions(app: &AppState) -> Result<i64, StoreError> {
    let now = app.clock.now();
    let (json, catalog_hash) = catalog_fingerprint(&app.catalog);
    let register = serde_json::to_value(Register::of(&app.catalog, &flows(&app.store).await?)).unwrap_or(Value::Null);
    let hash = hex::encode(Sha256::digest(format!("{catalog_hash}\n{register}").as_bytes()));
    let (version, new) = app.store.record_catalog_version(&hash, json, register, now).await?;
    if new {
        tracing::info!(
            version,
            "the catalog, a source or a destination changed: a new version of the records of processing"
        );
    }
    let text = app.banner_config().to_string();
    app.store
        .record_notice(&app.catalog.consent.notice_version, app.notice_hash(), &text, now)
        .await?;
    Ok(version)
}

/// Which version of the records, in which format.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RecordsQuery {
    /// The date (`2026-11-01`) or instant the register is shown as it stood at; now when absent.
    pub at: Option<String>,
    /// `json` (the default), `csv` or `html`.
    pub format: Option<String>,
}

fn parse_at(s: &str) -> Result<jiff::Timestamp, ApiError> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.tomorrow().ok())
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp() - jiff::SignedDuration::from_micros(1))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidField,
                "`at` must be a date (2026-11-01) or an RFC 3339 instant",
            )
            .with("field", json!("at"))
        })
}

/// The records of processing (GDPR Art. 30), one entry per purpose, as they stood at `at` (the
/// end of that day for a date), as JSON, CSV or HTML laid out like the CNIL's template.
#[utoipa::path(get, path = "/api/v1/records", tag = "governance", params(RecordsQuery),
    responses((status = 200, description = "The register in the version in force at that date"),
        (status = 404, description = "No catalog version existed yet at that date")),
    security(("bearer" = [])))]
pub async fn records(_: Staff, State(app): State<Shared>, Query(q): Query<RecordsQuery>) -> Result<Response, ApiError> {
    let at = match &q.at {
        Some(s) => parse_at(s)?,
        None => app.clock.now(),
    };
    let format = q.format.as_deref().unwrap_or("json");
    if !["json", "csv", "html"].contains(&format) {
        return Err(
            ApiError::new(ErrorCode::InvalidField, "`format` must be json, csv or html").with("field", json!("format")),
        );
    }
    if q.at.is_none() {
        record_versions(&app).await?;
    }
    let Some(v) = app.store.catalog_versions(Some(at)).await?.pop() else {
        return Err(
            ApiError::new(ErrorCode::NotFound, "no catalog version was in force at that date").with("at", json!(at)),
        );
    };
    let register: Register = serde_json::from_value(v.register.clone())
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("stored register unreadable: {e}")))?;
    let version = v.version.to_string();
    let headers = |ct: &'static str| {
        [
            (header::CONTENT_TYPE, ct.to_owned()),
            (header::HeaderName::from_static("x-catalog-version"), version.clone()),
        ]
    };
    Ok(match format {
        "csv" => (headers("text/csv; charset=utf-8"), register.to_csv()).into_response(),
        "html" => (
            headers("text/html; charset=utf-8"),
            register.to_html(&format!(
                "{at} (catalog version {}, in force since {})",
                v.version, v.taken_at
            )),
        )
            .into_response(),
        _ => (
            headers("application/json"),
            Json(json!({
                "version": v.version,
                "hash": v.hash,
                "in_force_since": v.taken_at,
                "at": at,
                "register": register,
            })),
        )
            .into_response(),
    })
}

/// Every catalog version: number, hash and when it came into force.
#[utoipa::path(get, path = "/api/v1/records/versions", tag = "governance",
    responses((status = 200, description = "Catalog versions, oldest first")), security(("bearer" = [])))]
pub async fn versions(_: Staff, State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let versions: Vec<Value> = app
        .store
        .catalog_versions(None)
        .await?
        .into_iter()
        .map(|v| json!({"version": v.version, "hash": v.hash, "taken_at": v.taken_at}))
        .collect();
    Ok(Json(json!({ "versions": versions })))
}

/// Every consent notice shown to people: version, text, hash and publication dates.
#[utoipa::path(get, path = "/api/v1/notices", tag = "governance",
    responses((status = 200, description = "The notice archive, oldest first")), security(("bearer" = [])))]
pub async fn notices(_: Staff, State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "notices": app.store.notices().await? })))
}

/// The data inventory: each declared trait with its tier, category, sources, number of people,
/// the purposes that read it and its retention; traits never read are flagged (minimisation).
#[utoipa::path(get, path = "/api/v1/inventory", tag = "governance",
    responses((status = 200, description = "Every declared trait and the flagged ones")), security(("bearer" = [])))]
pub async fn inventory(_: Staff, State(app): State<Shared>) -> Result<Json<Inventory>, ApiError> {
    let (by_source, totals) = app.store.trait_counts().await?;
    let mut observed: BTreeMap<String, Observed> = BTreeMap::new();
    for (name, subjects) in totals {
        observed.entry(name).or_default().subjects = subjects;
    }
    for (name, source, n) in by_source {
        observed.entry(name).or_default().sources.insert(source, n);
    }
    let mut readers = Vec::new();
    for s in app.store.segments().await? {
        readers.push(Reader {
            what: format!("segment:{}", s.id),
            purpose: purpose_of(&s.doc),
            text: s.doc.to_string(),
        });
    }
    for c in app.store.campaigns().await? {
        readers.push(Reader {
            what: format!("campaign:{}", c.id),
            purpose: purpose_of(&c.doc),
            text: c.doc.to_string(),
        });
    }
    Ok(Json(inventory::build(&app.catalog, &observed, &readers)))
}

fn purpose_of(doc: &Value) -> String {
    doc.get("purpose").and_then(Value::as_str).unwrap_or("?").to_owned()
}

/// Runs every compliance rule: a pass or fail each, with its evidence. `200` either way; the
/// body's `passed` says whether any rule failed.
#[utoipa::path(get, path = "/api/v1/compliance", tag = "governance",
    responses((status = 200, description = "Each rule's outcome and evidence")), security(("bearer" = [])))]
pub async fn compliance_check(_: Staff, State(app): State<Shared>) -> Result<Json<Report>, ApiError> {
    Ok(Json(
        compliance_report(&app.store, &app.catalog, app.clock.now()).await?,
    ))
}

/// Gathers the facts the compliance rules judge, and judges them.
pub async fn compliance_report(store: &Store, catalog: &Catalog, now: jiff::Timestamp) -> Result<Report, StoreError> {
    let open_requests = store
        .requests(true, 100_000)
        .await?
        .into_iter()
        .map(|r| (r.id, r.due_at))
        .collect();
    let audit = match store.verify_audit().await? {
        Ok(n) => Ok(n),
        Err(broken) => Err(broken.to_string()),
    };
    let facts = Facts {
        now,
        unproven_grants: store.unproven_grants(1_000).await?,
        open_requests,
        last_retention: store.last_audit("retention.applied").await?,
        stale_choices: store
            .stale_choices(compliance::validity_cutoff(now, catalog.consent.validity))
            .await?,
        breaches: store
            .breaches()
            .await?
            .into_iter()
            .map(|b| BreachFacts {
                id: b.id,
                aware_at: b.aware_at,
                notified_at: b.authority_notified_at,
                reason: b.delay_reasons,
            })
            .collect(),
        sent: sent_messages(store, now).await?,
        audit,
    };
    Ok(compliance::evaluate(catalog, &facts))
}

/// Messages sent within the checked window, each with whether the ledger held a consent for
/// the campaign's purpose at that instant.
async fn sent_messages(store: &Store, now: jiff::Timestamp) -> Result<Vec<SentMessage>, StoreError> {
    let since = now - compliance::SEND_WINDOW;
    let sent = store.sent_since(since).await?;
    if sent.is_empty() {
        return Ok(Vec::new());
    }
    let purposes: HashMap<i64, Option<String>> = store
        .campaigns()
        .await?
        .into_iter()
        .map(|c| (c.id, c.doc.get("purpose").and_then(Value::as_str).map(str::to_owned)))
        .collect();
    let mut histories: HashMap<i64, Vec<confiance_core::consent::LedgerEntry>> = HashMap::new();
    let mut out = Vec::with_capacity(sent.len());
    for (campaign, profile, at) in sent {
        let purpose = purposes.get(&campaign).cloned().flatten();
        if let Entry::Vacant(slot) = histories.entry(profile) {
            let mut entries = Vec::new();
            for subject in store.profile_subjects(profile).await? {
                entries.extend(store.consent_history(Access::Administration, &subject).await?);
            }
            // The latest decision across the person's identifiers is the one in force.
            entries.sort_by_key(|e| (e.recorded_at, e.seq));
            slot.insert(entries);
        }
        let consented = purpose.as_deref().is_some_and(|p| {
            histories[&profile]
                .iter()
                .rfind(|e| e.purpose == p && e.recorded_at <= at)
                .is_some_and(|e| e.status == Status::Granted)
        });
        out.push(SentMessage {
            campaign,
            profile,
            purpose,
            at,
            consented,
        });
    }
    Ok(out)
}
