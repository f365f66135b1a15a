//! The consent API: record decisions with their proof, read a subject's state and history,
//! export consent receipts, count decisions, and sign preference-centre links.

use crate::auth::Staff;
use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use confiance_core::catalog::LegalBasis;
use confiance_core::consent::{Decision, IdKind, LedgerEntry, Method, Notice, Status, Subject, receipt::receipt};
use confiance_core::source::SourceName;
use confiance_core::{Error, ErrorCode};
use confiance_store::Access;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The consent API routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/consents", post(record).get(state_and_history))
        .route("/api/v1/consents/receipts", get(receipts))
        .route("/api/v1/consent/stats", get(stats))
        .route("/api/v1/preference-links", post(preference_link))
}

/// A subject as the API names it: `{"type": "email", "value": "…"}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SubjectInput {
    /// `email`, `phone`, `user_id` or `anonymous_id`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The identifier.
    pub value: String,
}

impl SubjectInput {
    /// Parses into a normalised subject.
    pub fn parse(&self) -> Result<Subject, Error> {
        let kind = IdKind::parse(&self.kind).ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidField,
                format!(
                    "unknown subject type `{}`: expected email, phone, user_id or anonymous_id",
                    self.kind
                ),
            )
        })?;
        Subject::parse(kind, &self.value)
    }
}

/// The notice a person saw.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NoticeInput {
    /// Version label.
    pub version: String,
    /// SHA-256 (hex) of its text.
    pub hash: String,
}

/// One consent decision to record, with its proof.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ConsentInput {
    /// Who decided.
    pub subject: SubjectInput,
    /// Purpose id from the catalog.
    pub purpose: String,
    /// `granted`, `denied` or `withdrawn`.
    pub status: String,
    /// How: banner, form, preference_centre, api (default), import, tc_string, gpc, signal.
    pub method: Option<String>,
    /// The notice shown.
    pub notice: Option<NoticeInput>,
    /// Name of the source it came through.
    pub source: Option<String>,
    /// Journey touchpoint id from the catalog.
    pub touchpoint: Option<String>,
    /// IP address of the person (only a keyed hash is kept).
    pub ip: Option<String>,
    /// User agent of the person (only a keyed hash is kept).
    pub user_agent: Option<String>,
    /// Any further proof (form id, recording reference…), kept as is.
    #[schema(value_type = Option<Object>)]
    pub proof: Option<Value>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidField, message)
}

impl AppState {
    /// Turns an API input into a decision recorded now, or says what is wrong with it.
    async fn decision_from(&self, input: ConsentInput) -> Result<Decision, ApiError> {
        let subject = input.subject.parse()?;
        let purpose = self
            .catalog
            .purposes
            .get(&input.purpose)
            .ok_or_else(|| invalid(format!("unknown purpose `{}`", input.purpose)))?;
        let status = Status::parse(&input.status).ok_or_else(|| invalid("`status` is granted, denied or withdrawn"))?;
        if status == Status::Granted && purpose.legal_basis != LegalBasis::Consent {
            return Err(invalid(format!(
                "purpose `{}` is not based on consent; there is nothing to grant",
                purpose.id
            ))
            .into());
        }
        let method = match input.method.as_deref() {
            None => Method::Api,
            Some(m) => Method::parse(m).ok_or_else(|| invalid(format!("unknown method `{m}`")))?,
        };
        if method == Method::Gpc && status == Status::Granted {
            return Err(invalid("a Global Privacy Control signal is never a consent").into());
        }
        if let Some(t) = &input.touchpoint
            && !self.catalog.touchpoints.contains_key(t)
        {
            return Err(invalid(format!("unknown touchpoint `{t}`")).into());
        }
        let source_id = match &input.source {
            None => None,
            Some(name) => {
                let name = SourceName::parse(name)?;
                let source = self
                    .store
                    .source_by_name(&name)
                    .await?
                    .ok_or_else(|| invalid(format!("unknown source `{name}`")))?;
                Some(source.id)
            }
        };
        let secret = self.secret().await?;
        // A person who asked to be erased is not added back from an old list: only their own new
        // act (a form, the banner, the preference centre) can grant again.
        if status == Status::Granted
            && matches!(method, Method::Api | Method::Import)
            && self
                .store
                .suppressed(vec![self.suppression_hash(secret, &subject.key())])
                .await?
        {
            return Err(invalid("this person asked to be erased: only their own new consent can add them back").into());
        }
        Ok(Decision {
            subject,
            purpose: purpose.id.clone(),
            status,
            method,
            recorded_at: self.clock.now(),
            notice: input.notice.map(|n| Notice {
                version: n.version,
                hash: n.hash,
            }),
            source_id,
            touchpoint: input.touchpoint,
            ip_hash: input.ip.map(|ip| self.hash_ip(secret, &ip)),
            ua_hash: input.user_agent.map(|ua| self.hash_ua(secret, &ua)),
            proof: input.proof.unwrap_or(Value::Null),
        })
    }
}

/// What recording consents did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Recorded {
    /// Recorded decisions: their position in the request and in the ledger.
    pub recorded: Vec<RecordedItem>,
    /// Decisions not recorded, with why.
    pub rejected: Vec<crate::collect::RejectedMessage>,
}

/// One recorded decision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordedItem {
    /// Position in the request.
    pub index: usize,
    /// Position in the ledger.
    pub seq: i64,
}

/// Records one decision (`{subject, purpose, status, …proof}`) or many (`{"consents": […]}`).
/// The server's clock dates every decision; an invalid item is rejected alone.
#[utoipa::path(
    post, path = "/api/v1/consents", tag = "consent",
    request_body(content = ConsentInput, description = "One decision, or `{\"consents\": [decision…]}`"),
    responses(
        (status = 201, description = "Recorded durably; invalid items listed", body = Recorded),
        (status = 400, description = "Nothing valid to record", body = crate::openapi::ErrorSchema),
        (status = 401, description = "Missing or unknown token", body = crate::openapi::ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn record(
    _: Staff,
    State(app): State<Shared>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Recorded>), ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON: {e}")))?;
    let items = match value {
        Value::Object(mut o) if o.contains_key("consents") => match o.remove("consents") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(ApiError::new(ErrorCode::InvalidField, "`consents` must be an array"));
            }
        },
        other @ Value::Object(_) => vec![other],
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidJson,
                "the body is a decision object or `{\"consents\": [...]}`",
            ));
        }
    };
    let mut decisions = Vec::new();
    let mut indexes = Vec::new();
    let mut rejected = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let parsed = serde_json::from_value::<ConsentInput>(item)
            .map_err(|e| ApiError::from(Error::new(ErrorCode::InvalidField, format!("malformed decision: {e}"))));
        match match parsed {
            Ok(input) => app.decision_from(input).await,
            Err(e) => Err(e),
        } {
            Ok(d) => {
                decisions.push(d);
                indexes.push(index);
            }
            Err(e) => rejected.push(crate::collect::RejectedMessage::from_api(index, e)),
        }
    }
    if decisions.is_empty() {
        let first = rejected
            .first()
            .map_or_else(|| "no decision in the request".to_owned(), |r| r.message.clone());
        return Err(ApiError::new(ErrorCode::NoValidMessage, first)
            .with("rejected", serde_json::to_value(&rejected).unwrap_or_default()));
    }
    let seqs = app.record_consents(decisions).await?;
    let recorded = indexes
        .into_iter()
        .zip(seqs)
        .map(|(index, seq)| RecordedItem { index, seq })
        .collect();
    Ok((StatusCode::CREATED, Json(Recorded { recorded, rejected })))
}

/// Which subject to read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SubjectQuery {
    /// `email`, `phone`, `user_id` or `anonymous_id`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The identifier.
    pub value: String,
}

/// The current state per purpose, derived from a ledger (the latest decision by server time).
pub fn current_state(history: &[LedgerEntry]) -> BTreeMap<String, &LedgerEntry> {
    let mut state: BTreeMap<String, &LedgerEntry> = BTreeMap::new();
    for e in history {
        let newer = state
            .get(&e.purpose)
            .is_none_or(|cur| (e.recorded_at, e.seq) > (cur.recorded_at, cur.seq));
        if newer {
            state.insert(e.purpose.clone(), e);
        }
    }
    state
}

/// A subject's current consent state per purpose and its whole history.
#[utoipa::path(
    get, path = "/api/v1/consents", tag = "consent", params(SubjectQuery),
    responses((status = 200, description = "`{subject, state: {purpose: decision}, history: [decision…]}`")),
    security(("bearer" = []))
)]
pub async fn state_and_history(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Query(q): Query<SubjectQuery>,
) -> Result<Json<Value>, ApiError> {
    let (subject, history) = app.read_ledger(&caller, q, "consent.read").await?;
    let state = current_state(&history);
    Ok(Json(json!({
        "subject": {"type": subject.kind().as_str(), "value": subject.value()},
        "state": state,
        "history": history,
    })))
}

impl AppState {
    /// A subject's ledger, read by staff and audited as `action`.
    async fn read_ledger(
        &self,
        caller: &crate::auth::Caller,
        q: SubjectQuery,
        action: &str,
    ) -> Result<(Subject, Vec<LedgerEntry>), ApiError> {
        let subject = SubjectInput {
            kind: q.kind,
            value: q.value,
        }
        .parse()?;
        let history = self.store.consent_history(Access::Administration, &subject).await?;
        let profile = self.profile_ref(Some((&subject).into())).await;
        self.audit_read(caller, action, profile, json!({"entries": history.len()}))
            .await?;
        Ok((subject, history))
    }
}

/// A subject's ledger as consent receipts (Kantara v1.1 fields with ISO/IEC TS 27560 record
/// fields).
#[utoipa::path(
    get, path = "/api/v1/consents/receipts", tag = "consent", params(SubjectQuery),
    responses((status = 200, description = "`{receipts: [receipt…]}`, oldest first")),
    security(("bearer" = []))
)]
pub async fn receipts(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Query(q): Query<SubjectQuery>,
) -> Result<Json<Value>, ApiError> {
    let (_, history) = app.read_ledger(&caller, q, "consent.receipts").await?;
    let receipts: Vec<Value> = history.iter().map(|e| receipt(e, &app.catalog)).collect();
    Ok(Json(json!({ "receipts": receipts })))
}

/// Counts of one purpose: overall, by source, by touchpoint.
#[derive(Default)]
struct PurposeTally {
    all: Tally,
    by_source: BTreeMap<String, Tally>,
    by_touchpoint: BTreeMap<String, Tally>,
}

#[derive(Default, Serialize)]
struct Tally {
    granted: i64,
    denied: i64,
    withdrawn: i64,
    objected: i64,
    restricted: i64,
}

impl Tally {
    fn add(&mut self, status: Status, n: i64) {
        match status {
            Status::Granted => self.granted += n,
            Status::Denied => self.denied += n,
            Status::Withdrawn => self.withdrawn += n,
            Status::Objected => self.objected += n,
            Status::Restricted => self.restricted += n,
        }
    }

    fn view(&self) -> Value {
        let total = self.granted + self.denied + self.withdrawn + self.objected + self.restricted;
        let rate = |n: i64| {
            if total == 0 { 0.0 } else { n as f64 / total as f64 }
        };
        json!({
            "granted": self.granted, "denied": self.denied, "withdrawn": self.withdrawn,
            "objected": self.objected, "restricted": self.restricted, "total": total,
            "granted_rate": rate(self.granted), "denied_rate": rate(self.denied), "withdrawn_rate": rate(self.withdrawn),
        })
    }
}

/// Current decisions per purpose — granted, denied, withdrawn, with rates — overall, by source
/// and by touchpoint of the latest decision. Counts only: no personal data.
#[utoipa::path(
    get, path = "/api/v1/consent/stats", tag = "consent",
    responses((status = 200, description = "`{purposes: [{purpose, granted, denied, withdrawn, total, *_rate, by_source, by_touchpoint}]}`")),
    security(("bearer" = []))
)]
pub async fn stats(_: Staff, State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let counts = app.store.consent_counts().await?;
    let sources: BTreeMap<i64, String> = app
        .store
        .list_sources()
        .await?
        .into_iter()
        .map(|s| (s.id, s.name.to_string()))
        .collect();
    let mut per: BTreeMap<&str, PurposeTally> = BTreeMap::new();
    for c in &counts {
        let entry = per.entry(c.purpose.as_str()).or_default();
        entry.all.add(c.status, c.count);
        let source = c
            .source_id
            .and_then(|id| sources.get(&id).cloned())
            .unwrap_or_else(|| "(none)".into());
        entry.by_source.entry(source).or_default().add(c.status, c.count);
        let touchpoint = c.touchpoint.clone().unwrap_or_else(|| "(none)".into());
        entry
            .by_touchpoint
            .entry(touchpoint)
            .or_default()
            .add(c.status, c.count);
    }
    let breakdown = |tallies: &BTreeMap<String, Tally>, key: &str| -> Value {
        tallies
            .iter()
            .map(|(name, t)| {
                let mut x = t.view();
                x[key] = json!(name);
                x
            })
            .collect()
    };
    let purposes: Vec<Value> = per
        .into_iter()
        .map(|(purpose, tally)| {
            let mut v = tally.all.view();
            v["purpose"] = json!(purpose);
            v["by_source"] = breakdown(&tally.by_source, "source");
            v["by_touchpoint"] = breakdown(&tally.by_touchpoint, "touchpoint");
            v
        })
        .collect();
    Ok(Json(json!({ "purposes": purposes })))
}

/// A preference-centre link to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LinkRequest {
    /// Whose preferences.
    pub subject: SubjectInput,
}

/// A signed preference-centre link for one subject, to put in a message.
#[utoipa::path(
    post, path = "/api/v1/preference-links", tag = "consent", request_body = LinkRequest,
    responses((status = 200, description = "`{url, expires_at}`")),
    security(("bearer" = []))
)]
pub async fn preference_link(
    _: Staff,
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Json<LinkRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::new(ErrorCode::InvalidJson, e.body_text()))?;
    let subject = req.subject.parse()?;
    let (url, expires) = app.preference_url(&headers, &subject).await?;
    Ok(Json(json!({"url": url, "expires_at": expires.to_string()})))
}
