//! The Segment-compatible tracking API.
//!
//! Existing Segment (and RudderStack) SDKs switch to Confiance by changing one host name. The
//! contract is `../shared/SEGMENT-API.md`: the same endpoints, the three ways to pass a write
//! key, gzip bodies, explicit nulls, Segment's limits. Where Segment answers 200 to almost
//! everything, Confiance still stores every valid message of a batch but says precisely what it
//! rejected or dropped and why, so a developer sees minimisation at work.
//!
//! A 2xx is only sent once the store has committed the messages durably.

use crate::Shared;
use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, header};
use axum::routing::post;
use axum::{Json, Router};
use confiance_core::collect::envelope::{Batch, Single, parse_message};
use confiance_core::collect::{Dropped, MAX_REQUEST_BYTES, Message, MessageType, normalize};
use confiance_core::source::Source;
use confiance_core::{Error, ErrorCode};
use serde::Serialize;
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
    /// Fields not stored by data minimisation, with why.
    pub dropped: Vec<DroppedField>,
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
                .map_err(|_| {
                    ApiError::new(ErrorCode::InvalidEncoding, "the gzip body is corrupt")
                })?;
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

/// Stores the accepted messages and tallies everything, in the store and in the metrics.
async fn store(
    app: &Shared,
    source: &Source,
    messages: Vec<Message>,
    rejected: &[Error],
    dropped: &[Dropped],
) -> Result<(usize, usize), ApiError> {
    let mut counters: Vec<(String, i64)> = Vec::new();
    let mut tally = |name: String| match counters.iter_mut().find(|(n, _)| *n == name) {
        Some((_, v)) => *v += 1,
        None => counters.push((name, 1)),
    };
    for e in rejected {
        tally(format!("rejected.{}", e.code.name()));
    }
    for d in dropped {
        tally(format!("dropped.{}", d.reason.as_str()));
    }
    let total = messages.len();
    let started = Instant::now();
    let appended = if total == 0 && counters.is_empty() {
        Default::default()
    } else {
        app.store.append(source.id, messages, counters).await?
    };
    app.metrics
        .store("append", app.store.backend(), started.elapsed());
    let accepted = appended.stored_count();
    let name = source.name.as_ref();
    app.metrics.events(name, "accepted", "", accepted as u64);
    app.metrics
        .events(name, "duplicate", "", (total - accepted) as u64);
    for e in rejected {
        app.metrics.events(name, "rejected", e.code.name(), 1);
    }
    for d in dropped {
        app.metrics.dropped(name, d.reason.as_str(), 1);
    }
    Ok((accepted, total - accepted))
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
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CollectResponse>, ApiError> {
    let bytes = read_body(&headers, body).await?;
    let batch = Batch::parse(&bytes)?;
    let source = app
        .authenticate_source(&headers, batch.write_key.as_deref())
        .await?;
    let received_at = app.clock.now();
    let envelope = batch.envelope();
    let mut messages = Vec::with_capacity(batch.messages.len());
    let mut errors = Vec::new();
    let mut rejected = Vec::new();
    let mut dropped = Vec::new();
    let mut dropped_fields = Vec::new();
    for (index, raw) in batch.messages.iter().enumerate() {
        match parse_message(raw).and_then(|v| normalize(v, &envelope, &app.catalog, received_at)) {
            Ok(n) => {
                for d in n.dropped {
                    dropped_fields.push(DroppedField {
                        index,
                        field: d.field.clone(),
                        reason: d.reason.as_str().to_owned(),
                    });
                    dropped.push(d);
                }
                messages.push(n.message);
            }
            Err(e) => {
                rejected.push(RejectedMessage {
                    index,
                    code: e.code,
                    message: e.message.clone(),
                });
                errors.push(e);
            }
        }
    }
    let all_invalid = messages.is_empty() && !errors.is_empty();
    let (accepted, duplicates) = store(&app, &source, messages, &errors, &dropped).await?;
    if all_invalid {
        return Err(ApiError::new(
            ErrorCode::NoValidMessage,
            format!(
                "none of the {} messages of the batch is valid",
                errors.len()
            ),
        )
        .with(
            "rejected",
            serde_json::to_value(&rejected).unwrap_or_default(),
        ));
    }
    tracing::debug!(source = %source.name, accepted, duplicates, rejected = rejected.len(), "batch");
    Ok(Json(CollectResponse {
        success: true,
        accepted,
        duplicates,
        rejected,
        dropped: dropped_fields,
    }))
}

async fn single(
    app: Shared,
    kind: MessageType,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CollectResponse>, ApiError> {
    let bytes = read_body(&headers, body).await?;
    let single = Single::parse(&bytes)?;
    let source = app
        .authenticate_source(&headers, single.write_key.as_deref())
        .await?;
    let received_at = app.clock.now();
    let normalized = match normalize(
        single.message,
        &Single::envelope(kind),
        &app.catalog,
        received_at,
    ) {
        Ok(n) => n,
        Err(e) => {
            store(&app, &source, Vec::new(), std::slice::from_ref(&e), &[]).await?;
            return Err(e.into());
        }
    };
    let dropped_fields = normalized
        .dropped
        .iter()
        .map(|d| DroppedField {
            index: 0,
            field: d.field.clone(),
            reason: d.reason.as_str().to_owned(),
        })
        .collect();
    let (accepted, duplicates) = store(
        &app,
        &source,
        vec![normalized.message],
        &[],
        &normalized.dropped,
    )
    .await?;
    Ok(Json(CollectResponse {
        success: true,
        accepted,
        duplicates,
        rejected: Vec::new(),
        dropped: dropped_fields,
    }))
}

macro_rules! single_endpoint {
    ($name:ident, $kind:expr, $path:literal, $what:literal) => {
        #[doc = $what]
        #[utoipa::path(
            post, path = $path, tag = "tracking",
            request_body(content = Object, description = "One Segment message; `writeKey` may be in the body"),
            responses(
                (status = 200, description = "Stored durably (or already stored)", body = CollectResponse),
                (status = 400, description = "Invalid message, with the code naming the problem", body = crate::openapi::ErrorSchema),
                (status = 401, description = "Missing or unknown write key", body = crate::openapi::ErrorSchema),
            ),
            security(("writeKey" = []))
        )]
        pub async fn $name(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Result<Json<CollectResponse>, ApiError> {
            single(app, $kind, headers, body).await
        }
    };
}

single_endpoint!(
    identify,
    MessageType::Identify,
    "/v1/identify",
    "Who a user is, with traits."
);
single_endpoint!(
    track,
    MessageType::Track,
    "/v1/track",
    "Something a user did."
);
single_endpoint!(page, MessageType::Page, "/v1/page", "A page view.");
single_endpoint!(
    screen,
    MessageType::Screen,
    "/v1/screen",
    "An app screen view."
);
single_endpoint!(
    group,
    MessageType::Group,
    "/v1/group",
    "Membership of a group."
);
single_endpoint!(
    alias,
    MessageType::Alias,
    "/v1/alias",
    "Two ids are the same user."
);
