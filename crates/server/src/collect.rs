//! The Segment-compatible tracking API.
//!
//! Existing Segment (and RudderStack) SDKs switch to Confiance by changing one host name. The
//! contract is `../shared/SEGMENT-API.md`: the same endpoints, the three ways to pass a write
//! key, gzip bodies, explicit nulls, Segment's limits. Where Segment answers 200 to almost
//! everything, Confiance still stores every valid message of a batch but says precisely what it
//! rejected or dropped and why, so a developer sees minimisation at work.
//!
//! A 2xx is only sent once the store has committed the messages durably.

use crate::banner::ClientIp;
use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, header};
use axum::routing::post;
use axum::{Json, Router};
use confiance_core::collect::envelope::{Batch, Single, parse_message};
use confiance_core::collect::{
    DropReason, Dropped, MAX_REQUEST_BYTES, Message, MessageType, Normalized, at_path, normalize, normalize_incoming,
};
use confiance_core::consent::enforce::{Verdict, enforce};
use confiance_core::consent::{Decision, IdKind, StateEntry, Status, Subject, signals};
use confiance_core::source::Source;
use confiance_core::{Error, ErrorCode};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::Read;
use std::time::Instant;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// The tracking routes, with CORS open to any origin so that pages on the shop's own domain
/// (and `navigator.sendBeacon`) can post to Confiance.
pub fn routes() -> axum::Router<Shared> {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_credentials(true)
        .allow_methods([axum::http::Method::POST, axum::http::Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(std::time::Duration::from_secs(86_400));
    Router::new()
        .route("/v1/batch", post(batch))
        .route("/v1/b", post(batch))
        .route("/v1/identify", post(identify))
        .route("/v1/i", post(identify))
        .route("/v1/track", post(track))
        .route("/v1/t", post(track))
        .route("/v1/page", post(page))
        .route("/v1/p", post(page))
        .route("/v1/screen", post(screen))
        .route("/v1/s", post(screen))
        .route("/v1/group", post(group))
        .route("/v1/g", post(group))
        .route("/v1/alias", post(alias))
        .route("/v1/a", post(alias))
        // Bodies are read with our own limit, to answer oversize with a JSON error.
        .layer(DefaultBodyLimit::disable())
        .layer(cors)
}

/// A message of a batch that was not stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RejectedMessage {
    /// Position in the batch, from 0.
    pub index: usize,
    /// Error code from the error table.
    #[schema(value_type = String)]
    pub code: ErrorCode,
    /// What is wrong.
    pub message: String,
}

impl RejectedMessage {
    /// The rejection of the item at `index` by `error`.
    pub fn from_api(index: usize, error: ApiError) -> Self {
        let error = error.into_error();
        Self {
            index,
            code: error.code,
            message: error.message,
        }
    }
}

/// A field left out of a stored message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DroppedField {
    /// Position of the message in the batch (0 for single-message endpoints).
    pub index: usize,
    /// Path of the field, e.g. `properties.coupon_code`.
    pub field: String,
    /// `undeclared_trait`, `undeclared_property` or `wrong_type`.
    pub reason: String,
}

/// What the tracking API did with a request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CollectResponse {
    /// Always true on a 2xx, as Segment answers.
    pub success: bool,
    /// Messages stored now.
    pub accepted: usize,
    /// Messages whose `messageId` was already stored for this source (not stored again).
    pub duplicates: usize,
    /// Messages not stored, with why.
    pub rejected: Vec<RejectedMessage>,
    /// Valid messages not stored because none of their purposes has a legal basis (no
    /// consent); only counted, anonymously, per source.
    pub withheld: Vec<WithheldMessage>,
    /// Fields not stored (data minimisation, or no legal basis), with why.
    pub dropped: Vec<DroppedField>,
}

/// A valid message that was not stored for lack of a legal basis.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WithheldMessage {
    /// Position in the batch, from 0.
    pub index: usize,
    /// `no_legal_basis`.
    pub reason: String,
    /// What it means.
    pub message: String,
}

/// Reads the body with the 500 KB limit, inflating gzip.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::RequestTooLarge,
            format!("the request body is over {MAX_REQUEST_BYTES} bytes (500 KB)"),
        )
    };
    let raw = axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|_| too_large())?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            let mut inflated = Vec::with_capacity(raw.len() * 4);
            flate2::read::GzDecoder::new(&raw[..])
                .take(MAX_REQUEST_BYTES as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|_| ApiError::new(ErrorCode::InvalidEncoding, "the gzip body is corrupt"))?;
            if inflated.len() > MAX_REQUEST_BYTES {
                return Err(too_large());
            }
            Ok(inflated.into())
        }
        Some(other) => Err(ApiError::new(
            ErrorCode::InvalidEncoding,
            format!("Content-Encoding `{other}` is not supported; send identity or gzip"),
        )),
    }
}

/// What the request says about the person beyond the messages: the Global Privacy Control
/// header, and the IP and user agent that consent proofs hash.
struct RequestInfo {
    gpc: bool,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl RequestInfo {
    fn of(headers: &HeaderMap, ip: Option<String>) -> Self {
        Self {
            gpc: headers.get("sec-gpc").and_then(|v| v.to_str().ok()).map(str::trim) == Some("1"),
            ip,
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }
}

/// What one request did, message by message.
#[derive(Default)]
struct Outcome {
    accepted: usize,
    duplicates: usize,
    rejected: Vec<RejectedMessage>,
    withheld: Vec<WithheldMessage>,
    dropped: Vec<DroppedField>,
}

impl Outcome {
    fn note_dropped(&mut self, index: usize, dropped: &[Dropped]) {
        self.dropped.extend(dropped.iter().map(|d| DroppedField {
            index,
            field: d.field.clone(),
            reason: d.reason.as_str().to_owned(),
        }));
    }
}

/// Where a consent decision carried by a message was expressed, as the ledger keeps it.
#[derive(Clone)]
struct Provenance {
    touchpoint: Option<String>,
    ip_hash: Option<String>,
    ua_hash: Option<String>,
}

impl Provenance {
    fn of(app: &AppState, source: &Source, request: &RequestInfo, message: &Message, secret: &[u8]) -> Self {
        let context = |field| at_path(&message.body, &["context", field]).and_then(Value::as_str);
        let ip = context("ip").or(request.ip.as_deref());
        let ua = context("userAgent").or(request.user_agent.as_deref());
        // The event's touchpoint, or for page views the first touchpoint the catalog gives the
        // source.
        let touchpoint = message
            .event
            .as_ref()
            .and_then(|e| app.catalog.events.get(e))
            .and_then(|d| d.touchpoints.first())
            .or_else(|| {
                app.catalog
                    .sources
                    .get(source.name.as_ref())
                    .and_then(|s| s.touchpoints.first())
            });
        Self {
            touchpoint: touchpoint.cloned(),
            ip_hash: ip.map(|ip| app.hash_ip(secret, ip)),
            ua_hash: ua.map(|ua| app.hash_ua(secret, ua)),
        }
    }
}

/// Applies consent to normalised messages: records the consent signals they carry (only the
/// ones that change a subject's state), then keeps each message, or part of it, only for the
/// purposes that have a legal basis. Returns the messages to store and the decisions to record;
/// fields left out go to the outcome.
async fn apply_consent(
    app: &AppState,
    source: &Source,
    request: &RequestInfo,
    items: Vec<(usize, Normalized)>,
    outcome: &mut Outcome,
) -> Result<(Vec<Message>, Vec<Decision>), ApiError> {
    if !app.options.enforce_consent {
        let mut messages = Vec::with_capacity(items.len());
        for (index, normalized) in items {
            outcome.note_dropped(index, &normalized.dropped);
            messages.push(normalized.message);
        }
        return Ok((messages, Vec::new()));
    }
    // Each message's subjects, read once.
    let of_message: Vec<Vec<Subject>> = items
        .iter()
        .map(|(_, n)| Subject::of_message(&n.message.body))
        .collect();
    let mut subjects: Vec<Subject> = of_message.iter().flatten().cloned().collect();
    subjects.sort_unstable();
    subjects.dedup();
    let mut view = app.store.consent_view(&subjects).await?;
    let secret = app.secret().await?;
    let mut decisions = Vec::new();
    let mut messages = Vec::with_capacity(items.len());
    for ((index, mut normalized), message_subjects) in items.into_iter().zip(of_message) {
        let keys: Vec<String> = message_subjects.iter().map(Subject::key).collect();
        let body = &normalized.message.body;
        let read = signals::read(body, &app.catalog, request.gpc);
        if read.invalid_tc_string.is_some() {
            normalized.dropped.push(Dropped {
                field: "context.consent.tcString".into(),
                reason: DropReason::InvalidConsentSignal,
            });
        }
        if !read.decisions.is_empty() {
            let at = normalized.message.received_at;
            // Worked out for the first decision recorded: most signals repeat a standing choice.
            let mut provenance = None;
            let ids = message_subjects
                .iter()
                .zip(&keys)
                .filter(|(s, _)| matches!(s.kind(), IdKind::UserId | IdKind::AnonymousId));
            for signal in &read.decisions {
                for (subject, key) in ids.clone() {
                    let current = view.get_by_key(key, signal.purpose).map(|s| s.status);
                    let status = match (signal.status, current) {
                        // A signal sent automatically never overrides an objection or a
                        // restriction the person asked for.
                        (_, Some(Status::Objected | Status::Restricted)) => continue,
                        (Status::Granted, Some(Status::Granted)) => continue,
                        (Status::Granted, _) => Status::Granted,
                        (_, Some(Status::Granted)) => Status::Withdrawn,
                        (_, Some(_)) => continue,
                        (_, None) => Status::Denied,
                    };
                    view.insert(
                        key,
                        signal.purpose,
                        // Not in the ledger yet: newer than anything stored at this instant.
                        StateEntry {
                            status,
                            recorded_at: at,
                            seq: i64::MAX,
                        },
                    );
                    let mut proof = signal.proof(body);
                    proof["message_id"] = json!(normalized.message.message_id);
                    let Provenance {
                        touchpoint,
                        ip_hash,
                        ua_hash,
                    } = provenance
                        .get_or_insert_with(|| Provenance::of(app, source, request, &normalized.message, secret))
                        .clone();
                    decisions.push(Decision {
                        subject: subject.clone(),
                        purpose: signal.purpose.to_owned(),
                        status,
                        method: signal.method,
                        recorded_at: at,
                        notice: None,
                        source_id: Some(source.id),
                        touchpoint,
                        ip_hash,
                        ua_hash,
                        proof,
                    });
                }
            }
        }
        let verdict = enforce(&mut normalized, &app.catalog, &view, &keys);
        outcome.note_dropped(index, &normalized.dropped);
        match verdict {
            Verdict::Keep => messages.push(normalized.message),
            Verdict::Drop => outcome.withheld.push(WithheldMessage {
                index,
                reason: DropReason::NoLegalBasis.as_str().to_owned(),
                message: "none of the purposes of this message has a legal basis for its subject (no consent): it is not stored".into(),
            }),
        }
    }
    Ok((messages, decisions))
}

/// Applies consent, stores what may be stored with the decisions it carried, and tallies
/// everything per source, in the store and in the metrics.
async fn ingest(
    app: &AppState,
    source: &Source,
    request: &RequestInfo,
    parsed: Vec<(usize, Result<Normalized, Error>)>,
) -> Result<Outcome, ApiError> {
    let mut outcome = Outcome::default();
    let mut items = Vec::with_capacity(parsed.len());
    for (index, result) in parsed {
        match result {
            Ok(n) => items.push((index, n)),
            Err(e) => outcome.rejected.push(RejectedMessage {
                index,
                code: e.code,
                message: e.message,
            }),
        }
    }
    let (messages, decisions) = apply_consent(app, source, request, items, &mut outcome).await?;

    let mut counters: Vec<(String, i64)> = Vec::new();
    let mut tally = |name: String| match counters.iter_mut().find(|(n, _)| *n == name) {
        Some((_, v)) => *v += 1,
        None => counters.push((name, 1)),
    };
    for r in &outcome.rejected {
        tally(format!("rejected.{}", r.code.name()));
    }
    for w in &outcome.withheld {
        tally(format!("withheld.{}", w.reason));
    }
    for d in &outcome.dropped {
        tally(format!("dropped.{}", d.reason));
    }
    let total = messages.len();
    let started = Instant::now();
    let appended = if total == 0 && counters.is_empty() && decisions.is_empty() {
        Default::default()
    } else {
        app.store
            .append_with_consent(source.id, messages, decisions, counters)
            .await?
    };
    app.metrics.store("append", app.store.backend(), started.elapsed());
    outcome.accepted = appended.stored_count();
    if outcome.accepted > 0 {
        app.stored.notify_one();
    }
    outcome.duplicates = total - outcome.accepted;
    let name = source.name.as_ref();
    app.metrics.events(name, "accepted", "", outcome.accepted as u64);
    app.metrics.events(name, "duplicate", "", outcome.duplicates as u64);
    for r in &outcome.rejected {
        app.metrics.events(name, "rejected", r.code.name(), 1);
    }
    app.metrics.events(
        name,
        "withheld",
        DropReason::NoLegalBasis.as_str(),
        outcome.withheld.len() as u64,
    );
    for d in &outcome.dropped {
        app.metrics.dropped(name, &d.reason, 1);
    }
    Ok(outcome)
}

impl From<Outcome> for CollectResponse {
    fn from(o: Outcome) -> Self {
        CollectResponse {
            success: true,
            accepted: o.accepted,
            duplicates: o.duplicates,
            rejected: o.rejected,
            withheld: o.withheld,
            dropped: o.dropped,
        }
    }
}

/// Takes a batch of messages of any type.
#[utoipa::path(
    post, path = "/v1/batch", tag = "tracking",
    request_body(content = Object, description = "`{\"batch\": [message…], \"writeKey\"?, \"sentAt\"?, \"context\"?, \"integrations\"?}`; gzip allowed"),
    responses(
        (status = 200, description = "Valid messages stored durably; the others listed", body = CollectResponse),
        (status = 400, description = "Invalid JSON, oversize, too many messages, or no valid message", body = crate::openapi::ErrorSchema),
        (status = 401, description = "Missing or unknown write key", body = crate::openapi::ErrorSchema),
        (status = 503, description = "Store unavailable; retry after `Retry-After`", body = crate::openapi::ErrorSchema),
    ),
    security(("writeKey" = []))
)]
pub async fn batch(
    State(app): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CollectResponse>, ApiError> {
    let bytes = read_body(&headers, body).await?;
    let batch = Batch::parse(&bytes)?;
    let source = app.authenticate_source(&headers, batch.write_key.as_deref()).await?;
    let received_at = app.clock.now();
    let envelope = batch.envelope();
    let parsed = batch
        .messages
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            (
                index,
                parse_message(raw).and_then(|m| normalize_incoming(m, &envelope, &app.catalog, received_at)),
            )
        })
        .collect();
    let outcome = ingest(&app, &source, &RequestInfo::of(&headers, ip), parsed).await?;
    let nothing_valid =
        outcome.accepted + outcome.duplicates == 0 && outcome.withheld.is_empty() && !outcome.rejected.is_empty();
    if nothing_valid {
        return Err(ApiError::new(
            ErrorCode::NoValidMessage,
            format!("none of the {} messages of the batch is valid", outcome.rejected.len()),
        )
        .with("rejected", serde_json::to_value(&outcome.rejected).unwrap_or_default()));
    }
    tracing::debug!(
        source = %source.name,
        accepted = outcome.accepted,
        duplicates = outcome.duplicates,
        rejected = outcome.rejected.len(),
        withheld = outcome.withheld.len(),
        "batch"
    );
    Ok(Json(outcome.into()))
}

async fn single(
    app: Shared,
    kind: MessageType,
    ip: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CollectResponse>, ApiError> {
    let bytes = read_body(&headers, body).await?;
    let single = Single::parse(&bytes)?;
    let source = app.authenticate_source(&headers, single.write_key.as_deref()).await?;
    let received_at = app.clock.now();
    let parsed = normalize(single.message, &Single::envelope(kind), &app.catalog, received_at);
    let mut outcome = ingest(&app, &source, &RequestInfo::of(&headers, ip), vec![(0, parsed)]).await?;
    if let Some(r) = outcome.rejected.pop() {
        return Err(Error::new(r.code, r.message).into());
    }
    Ok(Json(outcome.into()))
}

macro_rules! single_endpoint {
    ($name:ident, $kind:expr, $path:literal, $what:literal) => {
        #[doc = $what]
        #[utoipa::path(
            post, path = $path, tag = "tracking",
            request_body(content = Object, description = "One Segment message; `writeKey` may be in the body"),
            responses(
                (status = 200, description = "Stored durably (or already stored, or withheld for lack of consent)", body = CollectResponse),
                (status = 400, description = "Invalid message, with the code naming the problem", body = crate::openapi::ErrorSchema),
                (status = 401, description = "Missing or unknown write key", body = crate::openapi::ErrorSchema),
            ),
            security(("writeKey" = []))
        )]
        pub async fn $name(
            State(app): State<Shared>,
            ClientIp(ip): ClientIp,
            headers: HeaderMap,
            body: Body,
        ) -> Result<Json<CollectResponse>, ApiError> {
            single(app, $kind, ip, headers, body).await
        }
    };
}

single_endpoint!(
    identify,
    MessageType::Identify,
    "/v1/identify",
    "Who a user is, with traits."
);
single_endpoint!(track, MessageType::Track, "/v1/track", "Something a user did.");
single_endpoint!(page, MessageType::Page, "/v1/page", "A page view.");
single_endpoint!(screen, MessageType::Screen, "/v1/screen", "An app screen view.");
single_endpoint!(group, MessageType::Group, "/v1/group", "Membership of a group.");
single_endpoint!(alias, MessageType::Alias, "/v1/alias", "Two ids are the same user.");

/// Runs messages from a trusted in-process producer — a CSV import, the demo — through the same
/// pipeline as the tracking API: normalisation against the catalog, consent signals and
/// enforcement, durable storage, counters. `raw` are Segment-shaped messages.
pub async fn ingest_messages(
    app: &AppState,
    source: &Source,
    raw: Vec<Value>,
    received_at: jiff::Timestamp,
) -> Result<CollectResponse, ApiError> {
    let envelope = confiance_core::collect::Envelope::default();
    let parsed = raw
        .into_iter()
        .enumerate()
        .map(|(index, v)| (index, normalize(v, &envelope, &app.catalog, received_at)))
        .collect();
    let request = RequestInfo {
        gpc: false,
        ip: None,
        user_agent: None,
    };
    Ok(ingest(app, source, &request, parsed).await?.into())
}
