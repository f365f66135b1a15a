//! Data-subject requests over HTTP: receiving them, following them against their legal
//! deadlines, and carrying them out — access and portability (one archive: JSON, a CSV per kind,
//! a plain-language HTML summary), rectification, restriction and objection.

use crate::auth::Staff;
use crate::consent::SubjectInput;
use crate::error::ApiError;
use crate::ops::escape;
use crate::{AppState, Shared};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use confiance_core::ErrorCode;
use confiance_core::catalog::LegalBasis;
use confiance_core::consent::{Decision, IdKind, Method, Status as ConsentStatus, Subject, direct_marketing_purposes};
use confiance_core::privacy::requests::{Request, Right, Status, Urgency, controller_tz, urgency};
use confiance_core::source::{SourceKind, SourceName, WriteKey};
use confiance_core::unify::identifier::Identifier;
use confiance_store::Access;
use serde::Deserialize;
use serde_json::{Value, json};

/// The name of the internal source rectifications are recorded under.
pub const RECTIFICATIONS: &str = "rectifications";

/// The requests routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/requests", post(receive).get(list))
        .route("/api/v1/requests/{id}", get(show))
        .route("/api/v1/requests/{id}/extend", post(extend))
        .route("/api/v1/requests/{id}/refuse", post(refuse))
        .route("/api/v1/requests/{id}/process", post(process))
        .route("/api/v1/requests/{id}/archive", get(archive))
        .route("/api/v1/requests/{id}/verify", post(verify))
}

/// A request as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewRequest {
    /// access, portability, rectification, erasure, restriction or objection.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whose data.
    pub subject: SubjectInput,
    /// For rectification `{"traits": {…}}`; for restriction and objection `{"purposes": […]}`
    /// (objection defaults to every direct-marketing purpose, restriction to every purpose).
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the body is malformed: {e}")))
}

/// Receives a request. Entered with an admin or DPO token it counts as verified and is in
/// progress at once; otherwise it waits for the subject to confirm who they are.
#[utoipa::path(
    post, path = "/api/v1/requests", tag = "requests", request_body = NewRequest,
    responses((status = 201, description = "The request with its `id`, `status` and `due_at`"), (status = 400, description = "Invalid type or subject", body = crate::openapi::ErrorSchema))
)]
pub async fn receive(
    State(app): State<Shared>,
    parts: axum::http::request::Parts,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Request>), ApiError> {
    let mut parts = parts;
    let staff = if parts.headers.contains_key(header::AUTHORIZATION) {
        Some(Staff::from_request_parts(&mut parts, &app).await?)
    } else {
        None
    };
    let new: NewRequest = json_body(&body)?;
    let right = Right::parse(&new.kind)?;
    let subject = new.subject.parse()?;
    let (origin, actor) = match &staff {
        Some(Staff(caller)) => ("staff", caller.actor()),
        None => ("api", "subject".to_owned()),
    };
    let request = Request::receive(
        right,
        &subject,
        origin,
        staff.is_some(),
        new.details.unwrap_or(Value::Null),
        &actor,
        app.clock.now(),
        &controller_tz(),
    );
    let mut request = app.store.insert_request(request).await?;
    if !request.verified {
        app.send_code(&mut request, &subject).await?;
    }
    tracing::info!(request = request.id, right = right.as_str(), "request received");
    Ok((StatusCode::CREATED, Json(request)))
}

/// A request and every step it took.
#[utoipa::path(get, path = "/api/v1/requests/{id}", tag = "requests", params(("id" = i64, Path, description = "Request id")),
    responses((status = 200, description = "The request"), (status = 404, description = "No such request", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn show(_: Staff, State(app): State<Shared>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let r = load(&app, id).await?;
    let notices = app.store.recipient_notices(Some(id), None, 1_000).await?;
    let mut v = json!(r);
    v["recipient_notices"] = notices.iter().map(crate::notices::notice_json).collect();
    v["urgency"] = json!(if r.status.is_final() {
        None
    } else {
        Some(urgency(r.due_at, app.clock.now(), 7))
    });
    Ok(Json(v))
}

pub(crate) async fn load(app: &AppState, id: i64) -> Result<Request, ApiError> {
    app.store
        .request(id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no request {id}")))
}

/// Which requests to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// `overdue` or `due_soon` (within 7 days); open requests only.
    pub urgency: Option<String>,
    /// Include closed requests.
    pub all: Option<bool>,
}

/// Requests by deadline; `?urgency=overdue` or `due_soon` for what needs attention.
#[utoipa::path(get, path = "/api/v1/requests", tag = "requests", params(ListQuery),
    responses((status = 200, description = "`{requests: […]}` by deadline")), security(("bearer" = [])))]
pub async fn list(_: Staff, State(app): State<Shared>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let wanted = match q.urgency.as_deref() {
        None => None,
        Some("overdue") => Some(Urgency::Overdue),
        Some("due_soon") => Some(Urgency::DueSoon),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("unknown urgency `{other}`: overdue or due_soon"),
            ));
        }
    };
    let open_only = wanted.is_some() || !q.all.unwrap_or(false);
    let now = app.clock.now();
    let requests: Vec<Request> = app
        .store
        .requests(open_only, 10_000)
        .await?
        .into_iter()
        .filter(|r| wanted.is_none_or(|w| urgency(r.due_at, now, 7) == w))
        .collect();
    Ok(Json(json!({ "requests": requests })))
}

/// An extension to decide.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ExtendBody {
    /// The new deadline (at most two more months).
    pub until: String,
    /// Why, as told to the subject.
    pub reason: String,
}

/// Extends a request's deadline by up to two months, with its reason (Art. 12(3)).
#[utoipa::path(post, path = "/api/v1/requests/{id}/extend", tag = "requests", request_body = ExtendBody, params(("id" = i64, Path, description = "Request id")),
    responses((status = 200, description = "The request"), (status = 400, description = "Too late, too long, or no reason", body = crate::openapi::ErrorSchema)), security(("bearer" = [])))]
pub async fn extend(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Request>, ApiError> {
    let b: ExtendBody = json_body(&body)?;
    let until = confiance_core::collect::parse_time(&b.until)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidTimestamp, "`until` is not an ISO-8601 date-time"))?;
    let mut r = load(&app, id).await?;
    r.extend(until, &b.reason, &caller.actor(), app.clock.now(), &controller_tz())?;
    app.store.update_request(&r, "request.extended").await?;
    Ok(Json(r))
}

/// A refusal to record.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RefuseBody {
    /// Why, as told to the subject.
    pub reason: String,
}

/// Refuses a request with its reasons and the right to complain (Art. 12(4)).
#[utoipa::path(post, path = "/api/v1/requests/{id}/refuse", tag = "requests", request_body = RefuseBody, params(("id" = i64, Path, description = "Request id")),
    responses((status = 200, description = "The request")), security(("bearer" = [])))]
pub async fn refuse(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Request>, ApiError> {
    let b: RefuseBody = json_body(&body)?;
    let mut r = load(&app, id).await?;
    r.refuse(&b.reason, &caller.actor(), app.clock.now())?;
    app.store.update_request(&r, "request.refused").await?;
    Ok(Json(r))
}

/// Carries out a verified request and closes it.
#[utoipa::path(post, path = "/api/v1/requests/{id}/process", tag = "requests", params(("id" = i64, Path, description = "Request id")),
    responses((status = 200, description = "The request, done"), (status = 400, description = "Not verified, already closed, or not carried out automatically", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn process(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
) -> Result<Json<Request>, ApiError> {
    let mut r = load(&app, id).await?;
    if r.status != Status::InProgress {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!(
                "request {id} is {}: only a verified request in progress is carried out",
                r.status.as_str()
            ),
        ));
    }
    let subject = Subject::parse(r.subject_type, &r.subject_value)?;
    let actor = caller.actor();
    // Who received their data is read before an erasure deletes the record of it.
    let profile = app.store.profile_of(&Identifier::from(&subject)).await?;
    let recipients = match r.right {
        Right::Rectification | Right::Erasure | Right::Restriction => app.recipients_of(profile).await?,
        _ => Vec::new(),
    };
    let mut note = match r.right {
        Right::Access | Right::Portability => {
            app.keep_archive(&subject, &r).await?;
            "archive ready: JSON, a CSV per kind and a plain-language summary".to_owned()
        }
        Right::Objection | Right::Restriction => app.object_or_restrict(&subject, &r).await?,
        Right::Rectification => app.rectify(&subject, &r).await?,
        Right::Erasure => {
            // Its notices are queued with it: the erasure deletes the record of who received
            // the data.
            let notices = match profile {
                Some(p) => app.notices_for(&recipients, Right::Erasure, Some(&r), p),
                None => Vec::new(),
            };
            let note = app.erase(&subject, notices).await?;
            // The record of the request stays, without whom it was about.
            r.subject_value = confiance_core::privacy::requests::ERASED.into();
            note
        }
    };
    if let Some(p) = profile
        && !recipients.is_empty()
    {
        note.push_str("; ");
        let told = if r.right == Right::Erasure {
            app.try_request_notices(r.id, &actor).await?
        } else {
            app.tell_recipients(&recipients, &r, p, &actor).await?
        };
        note.push_str(&told);
    }
    r.advance(Status::Done, &actor, note, app.clock.now())?;
    app.store.update_request(&r, "request.done").await?;
    Ok(Json(r))
}

/// A confirmation code.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CodeBody {
    /// The code received.
    pub code: String,
}

/// Confirms who made a request with the code sent to them. A wrong, expired or exhausted code
/// is refused and the request stays as it was (a wrong one counts as an attempt).
#[utoipa::path(post, path = "/api/v1/requests/{id}/verify", tag = "requests", request_body = CodeBody, params(("id" = i64, Path, description = "Request id")),
    responses((status = 200, description = "Verified: the request is in progress"), (status = 403, description = "Wrong or expired code, or too many attempts", body = crate::openapi::ErrorSchema)))]
pub async fn verify(
    State(app): State<Shared>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Request>, ApiError> {
    let b: CodeBody = json_body(&body)?;
    let mut r = load(&app, id).await?;
    let hash = app.code_hash(app.secret().await?, r.id, b.code.trim());
    match r.verify(&hash, app.clock.now()) {
        Ok(()) => {
            app.store.update_request(&r, "request.verified").await?;
            Ok(Json(r))
        }
        Err(e) => {
            if e == confiance_core::privacy::requests::VerifyError::Wrong {
                app.store.update_request(&r, "request.verification_failed").await?;
            }
            Err(ApiError::new(ErrorCode::VerificationFailed, e.to_string()))
        }
    }
}

impl AppState {
    fn code_hash(&self, secret: &[u8], request: i64, code: &str) -> String {
        confiance_core::consent::link::keyed_hash(secret, "request code", &format!("{request}:{code}"))
    }

    /// Sends a one-time code to a channel already known for the subject: their email (or the
    /// one their profile holds), else their phone by SMS. Without one, staff must confirm the
    /// identity.
    async fn send_code(&self, r: &mut Request, subject: &Subject) -> Result<(), ApiError> {
        let (_, known) = self.subjects_of(subject).await?;
        let email = known
            .iter()
            .find(|s| s.kind() == IdKind::Email)
            .map(|s| s.value().to_owned());
        let phone = known
            .iter()
            .find(|s| s.kind() == IdKind::Phone)
            .map(|s| s.value().to_owned());
        let code = format!("{:06}", rand::random_range(0..1_000_000u32));
        let minutes = confiance_core::privacy::requests::CODE_MINUTES;
        let sent = match (email, &self.options.mailer, phone, &self.options.sms) {
            (Some(to), Some(mailer), _, _) => {
                let body = format!(
                    "Bonjour,\n\nNous avons reçu une demande d'exercice de vos droits ({}) auprès de {}.\n\
                     Pour confirmer qu'elle vient de vous, saisissez ce code : {code}\n\
                     Il est valable {minutes} minutes.\n\nSi vous n'êtes pas à l'origine de cette demande, ignorez ce message.\n",
                    r.right.as_str(),
                    self.catalog.controller.name,
                );
                mailer
                    .send(&to, "Votre code de confirmation", body)
                    .await
                    .is_ok()
                    .then_some("email")
            }
            (_, _, Some(to), Some(sms)) => {
                let text = format!(
                    "{} : votre code de confirmation est {code} (valable {minutes} min).",
                    self.catalog.controller.name
                );
                sms.send(&to, &text).await.is_ok().then_some("sms")
            }
            _ => None,
        };
        match sent {
            Some(channel) => {
                let hash = self.code_hash(self.secret().await?, r.id, &code);
                r.code_sent(hash, channel, self.clock.now());
                self.store.update_request(r, "request.code_sent").await?;
            }
            None => {
                // The request is kept and stays on its deadline. A provider's answer may quote
                // the address, so it is not logged.
                tracing::warn!(request = r.id, "no confirmation code could be sent");
                r.steps.push(confiance_core::privacy::requests::Step {
                    at: self.clock.now(),
                    status: r.status,
                    actor: "system".into(),
                    note: "no confirmation code could be sent to a known channel: staff must confirm the identity"
                        .into(),
                });
                self.store.update_request(r, "request.code_unsent").await?;
            }
        }
        Ok(())
    }

    /// Every identifier of the subject's profile that is a consent subject (or the subject
    /// alone when no profile holds it).
    async fn subjects_of(&self, subject: &Subject) -> Result<(Option<i64>, Vec<Subject>), ApiError> {
        let profile = self.store.profile_of(&Identifier::from(subject)).await?;
        let mut subjects = match profile {
            Some(p) => self.store.profile_subjects(p).await?,
            None => Vec::new(),
        };
        if !subjects.contains(subject) {
            subjects.push(subject.clone());
        }
        Ok((profile, subjects))
    }

    /// Erases the subject everywhere (Art. 17), keeping the request records, pseudonymised, and
    /// a suppression entry.
    async fn erase(
        &self,
        subject: &Subject,
        notices: Vec<confiance_store::NewRecipientNotice>,
    ) -> Result<String, ApiError> {
        let identifier = Identifier::from(subject);
        let profile = self.store.profile_of(&identifier).await?;
        let mut keys = vec![identifier.key()];
        if let Some(p) = profile
            && let Some(row) = self.store.profile(Access::DataSubject, p).await?
        {
            keys.extend(row.identities.into_iter().map(|(k, _)| k));
        }
        keys.sort();
        keys.dedup();
        let secret = self.secret().await?;
        let suppression = keys.iter().map(|k| self.suppression_hash(secret, k)).collect();
        let erasure = confiance_store::Erasure {
            keys,
            profile,
            suppression,
            at: self.clock.now(),
            notices,
        };
        let erased = self.store.erase(erasure).await?;
        Ok(format!(
            "erased {} event(s), {} consent decision(s), {} identifier(s); {} data key(s) shredded, so older copies no longer open; {} request record(s) kept, pseudonymised",
            erased.events, erased.consents, erased.identities, erased.keys, erased.requests
        ))
    }

    /// The keyed hash an erased identifier is remembered by on the suppression list.
    pub fn suppression_hash(&self, secret: &[u8], key: &str) -> String {
        confiance_core::consent::link::keyed_hash(secret, "suppression", key)
    }

    async fn object_or_restrict(&self, subject: &Subject, r: &Request) -> Result<String, ApiError> {
        let listed: Option<Vec<String>> = r
            .details
            .get("purposes")
            .and_then(|p| serde_json::from_value(p.clone()).ok());
        let purposes: Vec<String> = match (r.right, listed) {
            (_, Some(list)) => list,
            (Right::Objection, None) => direct_marketing_purposes(&self.catalog),
            _ => self.catalog.purposes.keys().cloned().collect(),
        };
        for p in &purposes {
            let purpose = self
                .catalog
                .purposes
                .get(p)
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidField, format!("unknown purpose `{p}`")))?;
            if r.right == Right::Objection
                && matches!(purpose.legal_basis, LegalBasis::Contract | LegalBasis::LegalObligation)
            {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    format!(
                        "purpose `{p}` rests on a contract or a legal obligation: objection does not apply (Art. 21)"
                    ),
                ));
            }
        }
        let status = if r.right == Right::Objection {
            ConsentStatus::Objected
        } else {
            ConsentStatus::Restricted
        };
        let (_, subjects) = self.subjects_of(subject).await?;
        let now = self.clock.now();
        let decisions: Vec<Decision> = subjects
            .iter()
            .flat_map(|s| {
                purposes.iter().map(move |p| Decision {
                    subject: s.clone(),
                    purpose: p.clone(),
                    status,
                    method: Method::Request,
                    recorded_at: now,
                    notice: None,
                    source_id: None,
                    touchpoint: None,
                    ip_hash: None,
                    ua_hash: None,
                    proof: json!({"request": r.id}),
                })
            })
            .collect();
        self.record_consents(decisions).await?;
        Ok(format!(
            "{} for {} on {} identifier(s): {}",
            status.as_str(),
            purposes.len(),
            subjects.len(),
            purposes.join(", ")
        ))
    }

    async fn rectify(&self, subject: &Subject, r: &Request) -> Result<String, ApiError> {
        let traits = r
            .details
            .get("traits")
            .and_then(Value::as_object)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::MissingField,
                    "a rectification names the traits to correct: `details.traits`",
                )
            })?;
        for (name, value) in traits {
            let def =
                self.catalog.traits.get(name).ok_or_else(|| {
                    ApiError::new(ErrorCode::InvalidField, format!("`{name}` is not a declared trait"))
                })?;
            if !def.value_type.accepts(value) {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    format!("`{name}` must be of type {}", def.value_type.name()),
                ));
            }
        }
        // The correction is a message in the log like any other, from a source of its own that
        // survivorship ranks above every other: the golden record shows it as rectified.
        let (profile, subjects) = self.subjects_of(subject).await?;
        let anchor = subjects
            .iter()
            .find(|s| s.kind() == IdKind::UserId)
            .or_else(|| subjects.iter().find(|s| s.kind() == IdKind::AnonymousId))
            .cloned();
        let mut message = json!({"type": "identify", "messageId": format!("rectification-{}", r.id), "traits": traits});
        match anchor {
            Some(a) if a.kind() == IdKind::UserId => message["userId"] = json!(a.value()),
            Some(a) => message["anonymousId"] = json!(a.value()),
            None => {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    "no profile holds this subject: there is nothing to rectify",
                ));
            }
        }
        let source = self.internal_source(RECTIFICATIONS).await?;
        let outcome = crate::collect::ingest_messages(self, &source, vec![message], self.clock.now()).await?;
        if outcome.accepted + outcome.duplicates == 0 {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                "the correction could not be recorded",
            ));
        }
        Ok(format!(
            "rectified {} trait(s) of profile {}",
            traits.len(),
            profile.map_or_else(|| "-".into(), |p| p.to_string())
        ))
    }

    /// An internal source (rectifications), created on first use. Its write key is never shown:
    /// nothing outside Confiance writes as it.
    async fn internal_source(&self, name: &str) -> Result<confiance_core::source::Source, ApiError> {
        let name = SourceName::parse(name)?;
        if let Some(s) = self.store.source_by_name(&name).await? {
            return Ok(s);
        }
        let key = WriteKey::generate();
        match self
            .store
            .create_source(&name, SourceKind::Account, &key.digest(), &key.prefix())
            .await
        {
            Ok(s) => Ok(s),
            // Another node created it meanwhile.
            Err(confiance_store::StoreError::Conflict(_)) => self
                .store
                .source_by_name(&name)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the rectification source vanished")),
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps everything held about a subject, for access (Art. 15) and portability (Art. 20),
    /// as the result of `r`: the text of `{json, html}`; the CSV files are rendered from the JSON
    /// when downloaded ([`csv_of`]), so the archive keeps each fact once. The events — nearly all
    /// of it — are written straight from what the store read, never copied into a JSON tree (and
    /// compressed as they are written, with sealing on).
    async fn keep_archive(&self, subject: &Subject, r: &Request) -> Result<(), ApiError> {
        let (profile, subjects) = self.subjects_of(subject).await?;
        let events = match profile {
            Some(p) => self.store.profile_events(Access::DataSubject, p, 0, 1_000_000).await?,
            None => Vec::new(),
        };
        // The golden record from the events just read, not read again.
        let row = match profile {
            Some(p) => self.store.profile(Access::DataSubject, p).await?,
            None => None,
        };
        let profile_view = match row {
            Some(row) => self.view_of(row, &events).await?,
            None => Value::Null,
        };
        let mut ledger = Vec::new();
        for s in &subjects {
            ledger.extend(self.store.consent_history(Access::DataSubject, s).await?);
        }
        let merges = match profile {
            Some(p) => self.store.merges_of(p).await?,
            None => Vec::new(),
        };
        let requests: Vec<Request> = self.store.requests_of(&subjects).await?;
        let sources: std::collections::BTreeMap<i64, String> = self
            .store
            .list_sources()
            .await?
            .into_iter()
            .map(|s| (s.id, s.name.to_string()))
            .collect();
        let purposes: Vec<Value> = self
            .catalog
            .purposes
            .values()
            .map(|p| {
                json!({"purpose": p.id, "name": p.name, "description": p.description, "legal_basis": p.legal_basis,
                            "retention": p.retention.to_string(), "recipients": p.recipients})
            })
            .collect();
        // Every campaign decision about them: sent, skipped, delayed or failed, with the reason.
        let messages = match profile {
            Some(p) => json!(self.store.sends(None, Some(p), 100_000).await?),
            None => json!([]),
        };
        let segments = match profile {
            Some(p) => self.segments_of(p).await?,
            None => json!({"current": [], "history": []}),
        };
        // Each breach they were told of (Art. 34), with what happened, how and when.
        let mut breach_notices = Vec::new();
        if let Some(p) = profile {
            for (breach, n) in self.store.breach_notices_of(p).await? {
                let nature = self.store.breach(breach).await?.map(|b| b.wording.nature);
                breach_notices.push(json!({"breach": breach, "nature": nature, "channel": n.channel,
                    "status": n.status, "detail": n.detail, "at": n.at}));
            }
        }
        // Whom their requests had told of a correction, erasure or restriction (Art. 19).
        let mut recipient_notices = Vec::new();
        for q in &requests {
            for n in self.store.recipient_notices(Some(q.id), None, 1_000).await? {
                recipient_notices.push(crate::notices::notice_json(&n));
            }
        }
        let identities: Vec<Value> = subjects
            .iter()
            .map(|s| json!({"type": s.kind().as_str(), "value": s.value()}))
            .collect();
        let html = self.summary_html(&events, &profile_view, ledger.len(), subjects.len(), &sources);
        let data = Archive {
            breach_notices: &breach_notices,
            consents: &ledger,
            events: &events,
            generated_at: self.clock.now(),
            identities: &identities,
            merges: &merges,
            messages_sent: &messages,
            profile: &profile_view,
            purposes: &purposes,
            recipient_notices: &recipient_notices,
            request: r.id,
            requests: &requests,
            segments: &segments,
            sources: &sources,
            subject: json!({"type": subject.kind().as_str(), "value": subject.value()}),
        };
        self.store
            .put_request_result_written(r.id, |out| {
                // serde_json writes a few bytes at a time: they go to this buffer, statically
                // dispatched, and reach the store's writer 64 KiB at a time.
                use std::io::Write;
                let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
                out.write_all(b"{\"json\":")?;
                serde_json::to_writer(&mut out, &data)?;
                out.write_all(b",\"html\":")?;
                serde_json::to_writer(&mut out, &html)?;
                out.write_all(b"}")?;
                out.flush()
            })
            .await?;
        // Freeing ten thousand parsed bodies takes a sixth of the time of an archive: it is done
        // off the request's path.
        tokio::task::spawn_blocking(move || drop(events));
        Ok(())
    }

    fn summary_html(
        &self,
        events: &[confiance_store::StoredEvent],
        profile: &Value,
        consents: usize,
        identities: usize,
        sources: &std::collections::BTreeMap<i64, String>,
    ) -> String {
        let mut used: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for e in events {
            let source = sources.get(&e.source_id).map_or("", String::as_str);
            *used.entry(source).or_default() += 1;
        }
        let mut rows = String::new();
        for p in self.catalog.purposes.values() {
            let basis = match p.legal_basis {
                LegalBasis::Consent => "votre consentement",
                LegalBasis::Contract => "le contrat qui nous lie (compte, commandes)",
                LegalBasis::LegalObligation => "une obligation légale",
                LegalBasis::LegitimateInterest => "notre intérêt légitime (vous pouvez vous y opposer)",
            };
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&p.name),
                escape(&p.description),
                basis,
                escape(&p.recipients.join(", ")),
                p.retention
            ));
        }
        let from: Vec<String> = used
            .iter()
            .map(|(s, n)| format!("{} ({n} événements)", escape(s)))
            .collect();
        let traits = profile["traits"].as_object().map_or(0, |t| t.len());
        format!(
            r#"<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>Vos données — {controller}</title></head><body>
<h1>Les données que nous détenons sur vous</h1>
<p>Nous conservons {events} événements (visites, commandes, échanges…), {traits} informations sur vous (nom, préférences…), {consents} décisions de consentement et {ids} identifiants qui vous désignent. Le détail complet est dans les fichiers JSON et CSV joints.</p>
<p>Ces données proviennent de : {from}.</p>
<h2>Pourquoi, sur quelle base, qui les reçoit, combien de temps</h2>
<table><thead><tr><th>Finalité</th><th>Ce que nous en faisons</th><th>Base légale</th><th>Destinataires</th><th>Conservation</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Vos droits</h2><p>Vous pouvez à tout moment demander la rectification ou l'effacement de vos données, en limiter l'usage, vous opposer à leur traitement (notamment à la prospection), et recevoir vos données dans un format lisible par machine. Vous pouvez aussi saisir la CNIL (www.cnil.fr). Contact : {dpo}.</p>
</body></html>"#,
            controller = escape(&self.catalog.controller.name),
            events = events.len(),
            ids = identities,
            from = if from.is_empty() {
                "aucune source".to_owned()
            } else {
                from.join(", ")
            },
            dpo = escape(&self.catalog.controller.dpo_contact),
        )
    }
}

/// The JSON part of an access archive: everything held about the subject.
#[derive(serde::Serialize)]
struct Archive<'a> {
    breach_notices: &'a [Value],
    consents: &'a [confiance_core::consent::LedgerEntry],
    events: &'a [confiance_store::StoredEvent],
    generated_at: jiff::Timestamp,
    identities: &'a [Value],
    merges: &'a [confiance_store::MergeRow],
    messages_sent: &'a Value,
    profile: &'a Value,
    purposes: &'a [Value],
    recipient_notices: &'a [Value],
    request: i64,
    requests: &'a [Request],
    segments: &'a Value,
    /// Source names by id, as they were when the archive was made.
    sources: &'a std::collections::BTreeMap<i64, String>,
    subject: Value,
}

/// The CSV file of one kind of an archive, from its JSON part; `None` for an unknown kind.
fn csv_of(data: &Value, kind: &str) -> Option<String> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    fn list(v: &Value) -> &[Value] {
        v.as_array().map_or(&[], Vec::as_slice)
    }
    Some(match kind {
        "events" => to_csv(
            &[
                "seq",
                "timestamp",
                "type",
                "event",
                "source",
                "message_id",
                "purposes",
                "body",
            ],
            list(&data["events"]).iter().map(|e| {
                let purposes: Vec<String> = list(&e["purposes"]).iter().map(text).collect();
                vec![
                    e["seq"].to_string(),
                    text(&e["timestamp"]),
                    text(&e["type"]),
                    text(&e["event"]),
                    text(&data["sources"][e["source_id"].to_string()]),
                    text(&e["message_id"]),
                    purposes.join(" "),
                    e["body"].to_string(),
                ]
            }),
        ),
        "consents" => to_csv(
            &[
                "seq",
                "recorded_at",
                "identifier_type",
                "identifier",
                "purpose",
                "status",
                "method",
                "touchpoint",
            ],
            list(&data["consents"]).iter().map(|c| {
                vec![
                    c["seq"].to_string(),
                    text(&c["recorded_at"]),
                    text(&c["subject_type"]),
                    text(&c["subject_value"]),
                    text(&c["purpose"]),
                    text(&c["status"]),
                    text(&c["method"]),
                    text(&c["touchpoint"]),
                ]
            }),
        ),
        "messages" => to_csv(
            &["campaign", "step", "channel", "outcome", "reason", "at"],
            list(&data["messages_sent"]).iter().map(|m| {
                vec![
                    m["campaign_id"].to_string(),
                    m["step"].to_string(),
                    text(&m["channel"]),
                    text(&m["outcome"]),
                    text(&m["reason"]),
                    text(&m["at"]),
                ]
            }),
        ),
        "segments" => to_csv(
            &["segment", "entered", "at"],
            list(&data["segments"]["history"])
                .iter()
                .map(|t| vec![text(&t["segment"]), t["entered"].to_string(), text(&t["at"])]),
        ),
        "breach_notices" => to_csv(
            &["breach", "nature", "channel", "status", "at"],
            list(&data["breach_notices"]).iter().map(|n| {
                vec![
                    n["breach"].to_string(),
                    text(&n["nature"]),
                    text(&n["channel"]),
                    text(&n["status"]),
                    text(&n["at"]),
                ]
            }),
        ),
        "recipient_notices" => to_csv(
            &[
                "request",
                "notice",
                "recipient",
                "status",
                "attempts",
                "created_at",
                "done_at",
            ],
            list(&data["recipient_notices"]).iter().map(|n| {
                vec![
                    n["request_id"].to_string(),
                    text(&n["notice"]),
                    text(&n["host"]),
                    text(&n["status"]),
                    n["attempts"].to_string(),
                    text(&n["created_at"]),
                    text(&n["done_at"]),
                ]
            }),
        ),
        "identities" => to_csv(
            &["type", "value"],
            list(&data["identities"])
                .iter()
                .map(|i| vec![text(&i["type"]), text(&i["value"])]),
        ),
        "traits" => to_csv(
            &["trait", "value", "source", "observed_at"],
            data["profile"]["traits"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, g)| vec![name.clone(), g["value"].to_string(), text(&g["source"]), text(&g["at"])]),
        ),
        _ => return None,
    })
}

fn to_csv(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(header);
    for row in rows {
        let _ = w.write_record(&row);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// Which part of an archive.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ArchiveQuery {
    /// `json` (default), `html`, or `csv` with `kind`.
    pub format: Option<String>,
    /// For CSV: `events`, `consents`, `identities`, `traits`, `messages`, `segments`,
    /// `breach_notices` or `recipient_notices`.
    pub kind: Option<String>,
}

/// The archive of a completed access or portability request.
#[utoipa::path(get, path = "/api/v1/requests/{id}/archive", tag = "requests", params(("id" = i64, Path, description = "Request id"), ArchiveQuery),
    responses((status = 200, description = "JSON, HTML or CSV"), (status = 404, description = "No archive for this request", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn archive(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    Query(q): Query<ArchiveQuery>,
) -> Result<Response, ApiError> {
    let raw = app
        .store
        .request_result(id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("request {id} has no archive (yet)")))?;
    let archive: Value = serde_json::from_str(&raw).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    app.audit_read(
        &caller,
        "request.archive.read",
        None,
        json!({"request": id, "format": q.format}),
    )
    .await?;
    Ok(match q.format.as_deref().unwrap_or("json") {
        "json" => Json(archive["json"].clone()).into_response(),
        "html" => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            archive["html"].as_str().unwrap_or_default().to_owned(),
        )
            .into_response(),
        "csv" => {
            let kind = q.kind.as_deref().unwrap_or("events");
            // Archives made before the CSV files were rendered on download keep them beside.
            let body = match archive["csv"][kind].as_str() {
                Some(kept) => Some(kept.to_owned()),
                None => csv_of(&archive["json"], kind),
            };
            let body = body.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!(
                        "no CSV `{kind}`: events, consents, identities, traits, messages, segments, breach_notices or recipient_notices"
                    ),
                )
            })?;
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
        }
        other => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("unknown format `{other}`: json, html or csv"),
            ));
        }
    })
}
