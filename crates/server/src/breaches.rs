//! The breach register over HTTP (GDPR Art. 33, 34): declaring a breach and counting whom it
//! touched, its 72-hour clock, the notification to the CNIL drafted in French and completed in
//! phases, the Art. 34 decision, and telling the people affected.
//!
//! Telling people of a breach is a legal obligation of the controller, not marketing: it goes
//! through every channel Confiance knows for them (their email addresses, their phone numbers)
//! whatever they chose about marketing, and each person's outcome is recorded per channel, so the
//! register proves who was told, when and how — and who could not be reached, for whom a public
//! communication (Art. 34(3)(c)) may be needed.
//!
//! Telling them is a persisted task (`confiance_store::BreachJob`): the request records it and
//! answers `202`; [`run_breach_work`], beside the campaign scheduler, works it under a lease,
//! one notice at a time, so a restart resumes where it stopped without telling anyone twice.
//! The same worker watches the 72-hour clocks and logs a warning (the breach id and its
//! deadline, nothing about people) when a breach enters its last 24 and 12 hours unnotified.

use crate::auth::Staff;
use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use confiance_core::ErrorCode;
use confiance_core::privacy::breach::{
    Affected, Breach, Decision, Declaration, Exemption, Phase, Scope, Warning, Wording,
};
use confiance_store::{Access, BreachJob, BreachNotice, NoticePlan, Touched, TouchedQuery, notice_counts};
use jiff::SignedDuration;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How long a worker holds a notification job before another node may take it over.
const LEASE: SignedDuration = SignedDuration::from_mins(10);
/// Notices read per round; the lease is renewed after each notice.
const BATCH: usize = 50;
/// How often the worker looks for work and at the clocks when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);

/// The breach routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/breaches", post(declare).get(list))
        .route("/api/v1/breaches/{id}", get(show).put(update))
        .route("/api/v1/breaches/{id}/subjects", get(subjects))
        .route("/api/v1/breaches/{id}/notification", get(notification))
        .route("/api/v1/breaches/{id}/decision", post(decide))
        .route("/api/v1/breaches/{id}/notify-people", post(notify_people))
        .route("/api/v1/breaches/{id}/notify-people/{job}", get(notify_job))
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
            after: None,
        };
        // The exposure index answers for what the follower has read, the store for the events
        // after it (all of them before the index is first built).
        let Some((upto, indexed)) = self.exposed(&query.traits, &query.sources, query.from, query.to).await else {
            return Ok(self.store.breach_touched(&query).await?);
        };
        let tail = TouchedQuery {
            after: Some(upto),
            ..query
        };
        Ok(self.store.breach_touched(&tail).await?.with_indexed(indexed))
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

/// A breach whose clock is in its last day, or past it, unnotified.
fn urgent(b: &Breach, now: jiff::Timestamp) -> Option<Value> {
    let clock = b.clock(now);
    clock.warning.is_urgent().then(|| {
        json!({"breach": b.id, "warning": clock.warning, "deadline": clock.deadline, "seconds_left": clock.seconds_left})
    })
}

fn job_json(j: &BreachJob) -> Value {
    json!(j)
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

/// The register: every breach, notified or not, latest awareness first, each with its clock;
/// `warnings` lists the unnotified ones with 24 hours or less left, or none.
#[utoipa::path(get, path = "/api/v1/breaches", tag = "breaches",
    responses((status = 200, description = "`{breaches: […], warnings: [{breach, warning, deadline, seconds_left}]}`")), security(("bearer" = [])))]
pub async fn list(_: Staff, State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let all = app.store.breaches().await?;
    let now = app.clock.now();
    let breaches: Vec<Value> = all.iter().map(|b| app.breach_json(b)).collect();
    let warnings: Vec<Value> = all.iter().filter_map(|b| urgent(b, now)).collect();
    Ok(Json(json!({"breaches": breaches, "warnings": warnings})))
}

/// A breach with its 72-hour clock (deadline, seconds left, warning level), who was told, and
/// how telling the people is progressing.
#[utoipa::path(get, path = "/api/v1/breaches/{id}", tag = "breaches", params(("id" = i64, Path, description = "Breach id")),
    responses((status = 200, description = "The breach, its `clock`, `notices` and `people_notification`: `{pending, sent, failed, jobs}`"), (status = 404, description = "No such breach", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn show(_: Staff, State(app): State<Shared>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let b = app.load_breach(id).await?;
    let notices = app.store.breach_notices(id).await?;
    let jobs: Vec<Value> = app.store.breach_jobs(id).await?.iter().map(job_json).collect();
    let mut v = app.breach_json(&b);
    let mut progress = json!(notice_counts(&notices));
    progress["jobs"] = json!(jobs);
    v["people_notification"] = progress;
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

/// Asks for every affected person to be told through every channel known for them (email,
/// SMS), whatever their marketing choices, in their language (French or English): a task
/// worked in the background, each outcome recorded. People already told on a channel are not
/// told again there; only after a decision that they must be told. While a request is open,
/// asking again returns it.
#[utoipa::path(post, path = "/api/v1/breaches/{id}/notify-people", tag = "breaches", params(("id" = i64, Path, description = "Breach id")),
    request_body = NotifyInput,
    responses((status = 202, description = "The task: `{id, breach_id, status, …}`; follow it at `/api/v1/breaches/{id}/notify-people/{job}` or on the breach"),
        (status = 400, description = "Unknown default language", body = crate::openapi::ErrorSchema),
        (status = 409, description = "The decision does not call for telling people", body = crate::openapi::ErrorSchema),
        (status = 404, description = "No such breach", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn notify_people(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<Value>), ApiError> {
    let input: NotifyInput = if body.is_empty() {
        NotifyInput::default()
    } else {
        json_body(&body)?
    };
    let default_lang = input.default_language.unwrap_or_else(|| "fr".to_owned());
    if !["fr", "en"].contains(&default_lang.as_str()) {
        return Err(
            ApiError::new(ErrorCode::InvalidField, "`default_language` is `fr` or `en`")
                .with("field", json!("default_language")),
        );
    }
    let b = app.load_breach(id).await?;
    if !b.people_must_be_told() {
        return Err(ApiError::new(
            ErrorCode::StaleNotice,
            "the Art. 34 decision does not call for telling people: record a high-risk decision without exemption first",
        ));
    }
    let (job, new) = app
        .store
        .enqueue_breach_job(id, &default_lang, &caller.actor(), app.clock.now())
        .await?;
    if new {
        tracing::info!(breach = id, job = job.id, "telling the people of a breach: enqueued");
        app.breach_work.notify_one();
    }
    let location = format!("/api/v1/breaches/{id}/notify-people/{}", job.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(job_json(&job)),
    ))
}

/// A request to tell the people of a breach: its status and the breach's notices by status.
#[utoipa::path(get, path = "/api/v1/breaches/{id}/notify-people/{job}", tag = "breaches",
    params(("id" = i64, Path, description = "Breach id"), ("job" = i64, Path, description = "Task id")),
    responses((status = 200, description = "`{id, status, people, already_told, progress: {pending, sent, failed}}`"),
        (status = 404, description = "No such task", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn notify_job(
    _: Staff,
    State(app): State<Shared>,
    Path((id, job)): Path<(i64, i64)>,
) -> Result<Json<Value>, ApiError> {
    let found = app
        .store
        .breach_jobs(id)
        .await?
        .into_iter()
        .find(|j| j.id == job)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("breach {id} has no task {job}")))?;
    let notices = app.store.breach_notices(id).await?;
    let mut v = job_json(&found);
    v["progress"] = json!(notice_counts(&notices));
    Ok(Json(v))
}

/// Works the notification tasks and watches the 72-hour clocks until `stop`.
pub async fn run_breach_work(app: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut warned: HashMap<i64, Warning> = HashMap::new();
    loop {
        if let Err(e) = watch_clocks(&app, &mut warned).await {
            tracing::warn!(error = %e.into_error().message, "the breach clocks could not be read; retrying");
        }
        match work_one(&app).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e.into_error().message, "a breach notification task failed; it will be resumed")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = app.breach_work.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Logs, once per level and breach, that an unnotified breach entered its last 24 or 12 hours
/// or passed its deadline. Only the breach id and times: never what it concerns.
async fn watch_clocks(app: &AppState, warned: &mut HashMap<i64, Warning>) -> Result<(), ApiError> {
    let now = app.clock.now();
    for b in app.store.breaches().await? {
        let clock = b.clock(now);
        if !clock.warning.is_urgent() {
            warned.remove(&b.id);
            continue;
        }
        if warned.insert(b.id, clock.warning) == Some(clock.warning) {
            continue;
        }
        let hours_left = clock.seconds_left.unwrap_or(0) / 3600;
        match clock.warning {
            Warning::Overdue => tracing::warn!(
                breach = b.id,
                deadline = %clock.deadline,
                warning = clock.warning.as_str(),
                "a breach is past its 72 hours and the authority is not notified (Art. 33(1)): notify it with the reasons for the delay"
            ),
            _ => tracing::warn!(
                breach = b.id,
                deadline = %clock.deadline,
                hours_left,
                warning = clock.warning.as_str(),
                "a breach must be notified to the authority within 72 hours of awareness (Art. 33(1)); the deadline is near"
            ),
        }
    }
    Ok(())
}

/// Claims one notification task and works it to the end. Returns whether there was one.
pub async fn work_one(app: &AppState) -> Result<bool, ApiError> {
    let now = app.clock.now();
    // The lease this worker holds names its claim: renewing and finishing check it, so a worker
    // whose lease ran out and was taken over stops instead of working beside the new one.
    let mut held = now + LEASE;
    let Some(job) = app.store.claim_breach_job(now, held).await? else {
        return Ok(false);
    };
    let breach = match app.store.breach(job.breach_id).await? {
        Some(b) if b.people_must_be_told() => b,
        _ => {
            let error = "the Art. 34 decision no longer calls for telling people".to_owned();
            app.store
                .finish_breach_job(job.id, held, Some(error), app.clock.now())
                .await?;
            return Ok(true);
        }
    };
    if job.planned_at.is_none() {
        plan(app, &job, &breach).await?;
    }
    let mut languages: HashMap<i64, String> = HashMap::new();
    loop {
        let pending = app.store.pending_breach_notices(breach.id, BATCH).await?;
        if pending.is_empty() {
            break;
        }
        for (profile, channel) in pending {
            if !app
                .store
                .start_breach_notice(breach.id, profile, &channel, app.clock.now())
                .await?
            {
                continue;
            }
            let lang = match languages.get(&profile) {
                Some(l) => l.clone(),
                None => {
                    let l = app
                        .language_of(profile)
                        .await?
                        .unwrap_or_else(|| job.default_language.clone());
                    languages.insert(profile, l.clone());
                    l
                }
            };
            let outcome = tell(app, &breach, profile, &channel, &lang).await?;
            record(app, breach.id, profile, &channel, outcome).await?;
            let next = app.clock.now() + LEASE;
            if !app.store.renew_breach_job(job.id, held, next).await? {
                tracing::warn!(
                    job = job.id,
                    "the lease on a breach notification task ran out and another worker took it over: stopping"
                );
                return Ok(true);
            }
            held = next;
        }
    }
    let counts = notice_counts(&app.store.breach_notices(breach.id).await?);
    if !app.store.finish_breach_job(job.id, held, None, app.clock.now()).await? {
        tracing::warn!(
            job = job.id,
            "a breach notification task was taken over before it finished: leaving it to the other worker"
        );
        return Ok(true);
    }
    app.store
        .audit(vec![confiance_core::privacy::audit::AuditEvent::new(
            job.requested_by.clone(),
            "breach.people_notified",
            Some(format!("breach:{}", breach.id)),
            json!({"job": job.id, "people": job.people, "notices": counts}),
        )])
        .await?;
    tracing::info!(breach = breach.id, job = job.id, "telling the people of a breach: done");
    Ok(true)
}

/// Lists whom the job tells: every person the breach touched, on each channel known for them.
async fn plan(app: &AppState, job: &BreachJob, breach: &Breach) -> Result<(), ApiError> {
    let touched = app.touched(&breach.scope).await?;
    let sent: HashSet<(i64, String)> = app
        .store
        .breach_notices(breach.id)
        .await?
        .into_iter()
        .filter(|n| n.status == "sent")
        .map(|n| (n.profile_id, n.channel))
        .collect();
    let mut plan = NoticePlan {
        people: touched.profiles.len() as i64,
        ..NoticePlan::default()
    };
    for (profile, _) in &touched.profiles {
        let Some(row) = app.store.profile(Access::Administration, *profile).await? else {
            continue;
        };
        let channels: Vec<&str> = [("email", "email:"), ("sms", "phone:")]
            .into_iter()
            .filter(|(_, kind)| row.identities.iter().any(|(key, _)| key.starts_with(kind)))
            .map(|(channel, _)| channel)
            .collect();
        if channels.is_empty() {
            plan.unreachable.push(*profile);
        }
        for channel in channels {
            if sent.contains(&(*profile, channel.to_owned())) {
                plan.already_told += 1;
            } else {
                plan.notices.push((*profile, channel.to_owned()));
            }
        }
    }
    app.store.plan_breach_job(job, plan, app.clock.now()).await?;
    Ok(())
}

/// Sends the notice to every address of the person on `channel`; told through one is enough
/// for the record.
async fn tell(
    app: &AppState,
    b: &Breach,
    profile: i64,
    channel: &str,
    lang: &str,
) -> Result<Result<(), String>, ApiError> {
    let Some(row) = app.store.profile(Access::Administration, profile).await? else {
        return Ok(Err("the person is no longer known".to_owned()));
    };
    let kind = if channel == "email" { "email:" } else { "phone:" };
    let to: Vec<String> = row
        .identities
        .iter()
        .filter_map(|(key, _)| key.strip_prefix(kind).map(str::to_owned))
        .collect();
    let (subject, text) = b.notice(lang, &app.catalog);
    let mut outcome = Err(format!("no {channel} provider is configured"));
    if to.is_empty() {
        outcome = Err(format!("no {channel} address is known any more"));
    }
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
        if attempt.is_ok() || outcome.is_err() {
            outcome = attempt;
        }
    }
    Ok(outcome)
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
    app.store.end_breach_notice(breach, &notice).await?;
    Ok(())
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
