//! The breach register over HTTP (GDPR Art. 33, 34): declaring a breach and counting whom it
//! touched, its 72-hour clock, the notification to the CNIL drafted in French and completed in
//! phases, the Art. 34 decision, and telling the people affected.
//!
//! Telling people of a breach is a legal obligation of the controller, not marketing: it goes
//! through every channel Confiance knows for them (their email addresses, their phone numbers)
//! whatever they chose about marketing, and each person's outcome is recorded per channel, so the
//! register proves who was told, when and how — and who could not be reached, for whom a public
//! communication (Art. 34(3)(c)) may be needed.

use crate::auth::Staff;
use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use confiance_core::ErrorCode;
use confiance_core::privacy::breach::{Affected, Breach, Decision, Declaration, Exemption, Phase, Scope, Wording};
use confiance_store::{Access, BreachNotice, Touched, TouchedQuery};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashSet;

/// The breach routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/breaches", post(declare).get(list))
        .route("/api/v1/breaches/{id}", get(show).put(update))
        .route("/api/v1/breaches/{id}/subjects", get(subjects))
        .route("/api/v1/breaches/{id}/notification", get(notification))
        .route("/api/v1/breaches/{id}/decision", post(decide))
        .route("/api/v1/breaches/{id}/notify-people", post(notify_people))
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the body is malformed: {e}")))
}

/// A breach as declared.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewBreach {
    /// When the business became aware of it (RFC 3339): the 72 hours run from here.
    pub aware_at: String,
    /// `{traits: […], categories: […], sources: […], from, to}`: the kinds of data, the sources
    /// (all when empty) and the reception window `[from, to)`.
    #[schema(value_type = Object)]
    pub scope: Scope,
    /// `{nature, consequences, measures}` in French.
    #[schema(value_type = Object)]
    pub wording: Wording,
    /// The same in English, for the English letter.
    #[schema(value_type = Option<Object>)]
    pub wording_en: Option<Wording>,
}

fn instant(field: &str, s: &str) -> Result<jiff::Timestamp, ApiError> {
    s.parse().map_err(|_| {
        ApiError::new(ErrorCode::InvalidField, format!("`{field}` is not an RFC 3339 instant"))
            .with("field", json!(field))
    })
}

impl AppState {
    /// Whom `scope` touches, from the event log.
    async fn touched(&self, scope: &Scope) -> Result<Touched, ApiError> {
        let traits = scope.trait_names(&self.catalog)?;
        let known = self.store.list_sources().await?;
        let sources = if scope.sources.is_empty() {
            known.iter().map(|s| s.id).collect()
        } else {
            let mut ids = Vec::new();
            let mut unknown = Vec::new();
            for name in &scope.sources {
                match known.iter().find(|s| s.name.as_ref() == name.as_str()) {
                    Some(s) => ids.push(s.id),
                    None => unknown.push(format!("`{name}`")),
                }
            }
            if !unknown.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    format!("no source named {}", unknown.join(", ")),
                )
                .with("field", json!("scope.sources")));
            }
            ids
        };
        let query = TouchedQuery {
            traits,
            sources,
            from: scope.from,
            to: scope.to,
        };
        Ok(self.store.breach_touched(&query).await?)
    }

    async fn figures(&self, scope: &Scope) -> Result<Affected, ApiError> {
        let t = self.touched(scope).await?;
        Ok(Affected {
            subjects: t.profiles.len() as u64,
            records: u64::try_from(t.records()).unwrap_or(0),
            unresolved_records: u64::try_from(t.unresolved_records).unwrap_or(0),
            computed_at: self.clock.now(),
        })
    }

    async fn load_breach(&self, id: i64) -> Result<Breach, ApiError> {
        self.store
            .breach(id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no breach {id}")))
    }

    fn breach_json(&self, b: &Breach) -> Value {
        let mut v = json!(b);
        v["clock"] = json!(b.clock(self.clock.now()));
        v["people_must_be_told"] = json!(b.people_must_be_told());
        v
    }
}

/// Declares a breach: records it and counts whom it touched from the event log.
#[utoipa::path(
    post, path = "/api/v1/breaches", tag = "breaches", request_body = NewBreach,
    responses((status = 201, description = "The breach with its `id`, `affected` figures and `clock`"),
        (status = 400, description = "Unknown trait, category or source; missing nature", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn declare(
    Staff(caller): Staff,
    State(app): State<Shared>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new: NewBreach = json_body(&body)?;
    let now = app.clock.now();
    let declaration = Declaration {
        aware_at: instant("aware_at", &new.aware_at)?,
        scope: new.scope,
        wording: new.wording,
        wording_en: new.wording_en,
    };
    let mut breach = Breach::declare(declaration, &app.catalog, &caller.actor(), now)?;
    breach.affected = app.figures(&breach.scope).await?;
    let breach = app.store.insert_breach(breach).await?;
    tracing::warn!(
        breach = breach.id,
        subjects = breach.affected.subjects,
        "breach declared"
    );
    Ok((StatusCode::CREATED, Json(app.breach_json(&breach))))
}

/// The register: every breach, notified or not, latest awareness first, each with its clock.
#[utoipa::path(get, path = "/api/v1/breaches", tag = "breaches",
    responses((status = 200, description = "`{breaches: […]}`")), security(("bearer" = [])))]
pub async fn list(_: Staff, State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let all = app.store.breaches().await?;
    let breaches: Vec<Value> = all.iter().map(|b| app.breach_json(b)).collect();
    Ok(Json(json!({"breaches": breaches})))
}

/// A breach with its 72-hour clock (deadline, seconds left, warning level) and who was told.
#[utoipa::path(get, path = "/api/v1/breaches/{id}", tag = "breaches", params(("id" = i64, Path, description = "Breach id")),
    responses((status = 200, description = "The breach, its `clock` and `notices`"), (status = 404, description = "No such breach", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn show(_: Staff, State(app): State<Shared>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let b = app.load_breach(id).await?;
    let notices = app.store.breach_notices(id).await?;
    let mut v = app.breach_json(&b);
    v["notices"] = json!(notices);
    Ok(Json(v))
}

/// A change to a breach, in a phase of the notification (Art. 33(4)).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BreachUpdate {
    /// initial, complementary or final.
    #[schema(value_type = String)]
    pub phase: Phase,
    /// What was learnt or done.
    #[serde(default)]
    pub note: String,
    /// New French wording, replacing the previous one.
    #[schema(value_type = Option<Object>)]
    pub wording: Option<Wording>,
    /// New English wording.
    #[schema(value_type = Option<Object>)]
    pub wording_en: Option<Wording>,
    /// A corrected scope: the figures are computed again.
    #[schema(value_type = Option<Object>)]
    pub scope: Option<Scope>,
    /// When the authority was notified (RFC 3339); stops the clock.
    pub authority_notified_at: Option<String>,
    /// Why the notification came after 72 hours; required then.
    pub delay_reasons: Option<String>,
}

/// Completes a breach in a phase: wording, scope (figures recomputed), notification to the
/// authority.
#[utoipa::path(put, path = "/api/v1/breaches/{id}", tag = "breaches", params(("id" = i64, Path, description = "Breach id")),
    request_body = BreachUpdate,
    responses((status = 200, description = "The breach"), (status = 400, description = "Invalid update", body = crate::openapi::ErrorSchema),
        (status = 404, description = "No such breach", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn update(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let u: BreachUpdate = json_body(&body)?;
    let mut b = app.load_breach(id).await?;
    let now = app.clock.now();
    let actor = caller.actor();
    if let Some(scope) = u.scope {
        b.affected = app.figures(&scope).await?;
        b.scope = scope;
    }
    if let Some(en) = u.wording_en {
        b.wording_en = Some(en);
    }
    b.update(u.phase, u.wording, u.note, &actor, now)?;
    if let Some(at) = u.authority_notified_at {
        b.notified(instant("authority_notified_at", &at)?, u.delay_reasons)?;
    }
    app.store.update_breach(&b, "breach.updated", &actor, now).await?;
    Ok(Json(app.breach_json(&b)))
}

/// Whom the breach touched: profile ids with their record counts (personal data: audited).
#[utoipa::path(get, path = "/api/v1/breaches/{id}/subjects", tag = "breaches", params(("id" = i64, Path, description = "Breach id")),
    responses((status = 200, description = "`{profiles: [{id, records}], unresolved_records}`"), (status = 404, description = "No such breach", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn subjects(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let b = app.load_breach(id).await?;
    let t = app.touched(&b.scope).await?;
    app.audit_read(
        &caller,
        "breach.subjects_read",
        None,
        json!({"breach": id, "profiles": t.profiles.len()}),
    )
    .await?;
    let profiles: Vec<Value> = t.profiles.iter().map(|(p, n)| json!({"id": p, "records": n})).collect();
    Ok(Json(
        json!({"profiles": profiles, "records": t.records(), "unresolved_records": t.unresolved_records}),
    ))
}

/// How to render the notification.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DraftQuery {
    /// `text` or `html`; JSON (the items) when absent.
    pub format: Option<String>,
}

/// The notification to the authority (CNIL), drafted in French with every item of Art. 33(3)
/// from the record and the computed figures.
#[utoipa::path(get, path = "/api/v1/breaches/{id}/notification", tag = "breaches",
    params(("id" = i64, Path, description = "Breach id"), DraftQuery),
    responses((status = 200, description = "`{language, phase, items: [{title, text}], text, html}`, or the text or HTML alone"),
        (status = 404, description = "No such breach", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn notification(
    _: Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    Query(q): Query<DraftQuery>,
) -> Result<Response, ApiError> {
    let b = app.load_breach(id).await?;
    Ok(match q.format.as_deref() {
        Some("text") => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            b.notification_text(&app.catalog),
        )
            .into_response(),
        Some("html") => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            b.notification_html(&app.catalog),
        )
            .into_response(),
        None => {
            let items: Vec<Value> = b
                .notification_items(&app.catalog)
                .into_iter()
                .map(|(title, text)| json!({"title": title, "text": text}))
                .collect();
            Json(json!({
                "language": "fr",
                "phase": b.phase,
                "items": items,
                "text": b.notification_text(&app.catalog),
                "html": b.notification_html(&app.catalog),
            }))
            .into_response()
        }
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("unknown format `{other}`: text or html"),
            )
            .with("field", json!("format")));
        }
    })
}

/// The Art. 34 decision as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DecisionInput {
    /// Whether the breach is likely to result in a high risk to people.
    pub high_risk: bool,
    /// encrypted, risk_removed or disproportionate (Art. 34(3)).
    #[schema(value_type = Option<String>)]
    pub exemption: Option<Exemption>,
    /// Why.
    pub reasons: String,
}

/// Records the Art. 34 decision: high risk or not, and an exemption when one applies.
#[utoipa::path(post, path = "/api/v1/breaches/{id}/decision", tag = "breaches", params(("id" = i64, Path, description = "Breach id")),
    request_body = DecisionInput,
    responses((status = 200, description = "The breach, with `people_must_be_told`"), (status = 400, description = "Missing reasons", body = crate::openapi::ErrorSchema),
        (status = 404, description = "No such breach", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn decide(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let d: DecisionInput = json_body(&body)?;
    if d.reasons.trim().is_empty() {
        return Err(
            ApiError::new(ErrorCode::MissingField, "`reasons` says why the risk is or is not high")
                .with("field", json!("reasons")),
        );
    }
    let mut b = app.load_breach(id).await?;
    let now = app.clock.now();
    let actor = caller.actor();
    b.decision = Some(Decision {
        high_risk: d.high_risk,
        exemption: d.exemption.filter(|_| d.high_risk),
        reasons: d.reasons,
        by: actor.clone(),
        at: now,
    });
    app.store.update_breach(&b, "breach.decided", &actor, now).await?;
    Ok(Json(app.breach_json(&b)))
}

/// Who to tell.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct NotifyInput {
    /// The language for people whose own is not known: `fr` (default) or `en`.
    pub default_language: Option<String>,
}

/// Tells every affected person through every channel known for them (email, SMS), whatever
/// their marketing choices, in their language (French or English), and records each outcome.
/// People already told on a channel are not told again there; only after a decision that they
/// must be told.
#[utoipa::path(post, path = "/api/v1/breaches/{id}/notify-people", tag = "breaches", params(("id" = i64, Path, description = "Breach id")),
    request_body = NotifyInput,
    responses((status = 200, description = "`{people, sent, failed, unreachable, already_told}`"),
        (status = 409, description = "The decision does not call for telling people", body = crate::openapi::ErrorSchema),
        (status = 404, description = "No such breach", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn notify_people(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let input: NotifyInput = if body.is_empty() {
        NotifyInput::default()
    } else {
        json_body(&body)?
    };
    let default_lang = input.default_language.unwrap_or_else(|| "fr".to_owned());
    let b = app.load_breach(id).await?;
    if !b.people_must_be_told() {
        return Err(ApiError::new(
            ErrorCode::StaleNotice,
            "the Art. 34 decision does not call for telling people: record a high-risk decision without exemption first",
        ));
    }
    let touched = app.touched(&b.scope).await?;
    let done: HashSet<(i64, String)> = app
        .store
        .breach_notices(id)
        .await?
        .into_iter()
        .filter(|n| n.status == "sent")
        .map(|n| (n.profile_id, n.channel))
        .collect();
    let (mut sent, mut failed, mut unreachable, mut already) = (0, 0, 0, 0);
    for (profile, _) in &touched.profiles {
        let Some(row) = app.store.profile(Access::Administration, *profile).await? else {
            continue;
        };
        let lang = app.language_of(*profile).await?.unwrap_or_else(|| default_lang.clone());
        let (subject, text) = b.notice(&lang, &app.catalog);
        let addresses = |kind: &str| -> Vec<String> {
            row.identities
                .iter()
                .filter_map(|(key, _)| key.strip_prefix(kind).map(str::to_owned))
                .collect()
        };
        let channels = [("email", addresses("email:")), ("sms", addresses("phone:"))];
        if channels.iter().all(|(_, a)| a.is_empty()) {
            unreachable += 1;
            record(&app, id, *profile, "none", Err("no known channel".to_owned())).await?;
            continue;
        }
        for (channel, to) in channels {
            if to.is_empty() {
                continue;
            }
            if done.contains(&(*profile, channel.to_owned())) {
                already += 1;
                continue;
            }
            let mut outcome = Err(format!("no {channel} provider is configured"));
            for address in &to {
                let attempt = match channel {
                    "email" => match &app.options.mailer {
                        Some(m) => m.send(address, &subject, text.clone()).await,
                        None => continue,
                    },
                    _ => match &app.options.sms {
                        Some(s) => s.send(address, &format!("{subject}. {text}")).await,
                        None => continue,
                    },
                };
                // Told once through a channel is enough for the record; every address is tried.
                if attempt.is_ok() || outcome.is_err() {
                    outcome = attempt;
                }
            }
            if outcome.is_ok() {
                sent += 1;
            } else {
                failed += 1;
            }
            record(&app, id, *profile, channel, outcome).await?;
        }
    }
    app.store
        .audit(vec![confiance_core::privacy::audit::AuditEvent::new(
            caller.actor(),
            "breach.people_notified",
            Some(format!("breach:{id}")),
            json!({"people": touched.profiles.len(), "sent": sent, "failed": failed, "unreachable": unreachable}),
        )])
        .await?;
    Ok(Json(json!({
        "people": touched.profiles.len(),
        "sent": sent,
        "failed": failed,
        "unreachable": unreachable,
        "already_told": already,
    })))
}

async fn record(
    app: &AppState,
    breach: i64,
    profile: i64,
    channel: &str,
    outcome: Result<(), String>,
) -> Result<(), ApiError> {
    let notice = BreachNotice {
        profile_id: profile,
        channel: channel.to_owned(),
        status: if outcome.is_ok() { "sent" } else { "failed" }.to_owned(),
        detail: outcome.err(),
        at: app.clock.now(),
    };
    Ok(app.store.record_breach_notice(breach, &notice).await?)
}

impl AppState {
    /// A person's language (`fr` or `en`) from the golden value of the `language` trait.
    async fn language_of(&self, profile: i64) -> Result<Option<String>, ApiError> {
        let events = self
            .store
            .profile_events(Access::Administration, profile, 0, 20_000)
            .await?;
        let sources = self.source_kinds().await?;
        let views: Vec<_> = events
            .iter()
            .filter_map(|e| crate::profiles::view(e, &sources))
            .collect();
        let (_, golden, _) = self.history(&views);
        Ok(golden
            .get("language")
            .and_then(|g| g.value.as_str().map(str::to_lowercase))
            .map(|l| {
                if l.starts_with("en") {
                    "en".to_owned()
                } else {
                    "fr".to_owned()
                }
            }))
    }
}
