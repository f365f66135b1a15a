//! The admin API: reading the event log and managing sources, behind an admin bearer token.

use crate::Shared;
use crate::auth::Admin;
use crate::error::ApiError;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use confiance_core::ErrorCode;
use confiance_core::source::{Source, SourceKind, SourceName, WriteKey};
use confiance_store::{Access, StoredEvent, Who};
use serde::{Deserialize, Serialize};

/// The admin routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/sources", get(list_sources).post(create_source))
}

/// Which events to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Events of this `userId`.
    pub user_id: Option<String>,
    /// Events of this `anonymousId`.
    pub anonymous_id: Option<String>,
    /// Only events after this log position (for paging).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Read for this purpose of the catalog: nothing unless the subject has a legal basis for
    /// it now, and only events collected for it. Without it, the read is administration.
    pub purpose: Option<String>,
}

/// A page of events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventsPage {
    /// Events, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<StoredEvent>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// Lists the stored events of one user or anonymous id.
#[utoipa::path(
    get, path = "/api/v1/events", tag = "admin", params(EventsQuery),
    responses(
        (status = 200, description = "Events, oldest first", body = EventsPage),
        (status = 400, description = "Neither or both of user_id and anonymous_id", body = crate::openapi::ErrorSchema),
        (status = 401, description = "Missing or unknown token", body = crate::openapi::ErrorSchema),
        (status = 403, description = "Not an admin token", body = crate::openapi::ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn list_events(
    Admin(caller): Admin,
    State(app): State<Shared>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let who = match (q.user_id, q.anonymous_id) {
        (Some(u), None) if !u.is_empty() => Who::UserId(u),
        (None, Some(a)) if !a.is_empty() => Who::AnonymousId(a),
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                "give exactly one of `user_id` and `anonymous_id`",
            ));
        }
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "`limit` is between 1 and 1000"));
    }
    let access = match q.purpose.as_deref() {
        None => Access::Administration,
        Some(id) => Access::Purpose(
            app.catalog
                .purposes
                .get(id)
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, format!("unknown purpose `{id}`")))?,
        ),
    };
    let events = app.store.events_of(access, &who, q.after.unwrap_or(0), limit).await?;
    let identifier = match &who {
        Who::UserId(v) => confiance_core::unify::identifier::Identifier::parse("user_id", v),
        Who::AnonymousId(v) => confiance_core::unify::identifier::Identifier::parse("anonymous_id", v),
    };
    let profile = app.profile_ref(identifier).await;
    let details = serde_json::json!({"by": match who { Who::UserId(_) => "user_id", Who::AnonymousId(_) => "anonymous_id" },
        "purpose": q.purpose, "events": events.len()});
    app.audit_read(&caller, "events.read", profile, details).await?;
    let next_after = (events.len() == limit).then(|| events.last().map(|e| e.seq)).flatten();
    Ok(Json(EventsPage { events, next_after }))
}

/// A source with its collection counters.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourceView {
    /// The source.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub source: Source,
    /// Counters: accepted, duplicate, `rejected.<code>`, `dropped.<reason>`.
    pub counters: std::collections::BTreeMap<String, i64>,
}

/// Lists sources with what collection did for each.
#[utoipa::path(
    get, path = "/api/v1/sources", tag = "admin",
    responses((status = 200, description = "Sources by name", body = Vec<SourceView>)),
    security(("bearer" = []))
)]
pub async fn list_sources(_: Admin, State(app): State<Shared>) -> Result<Json<Vec<SourceView>>, ApiError> {
    let mut out = Vec::new();
    for source in app.store.list_sources().await? {
        let counters = app.store.source_counters(source.id).await?.into_iter().collect();
        out.push(SourceView { source, counters });
    }
    Ok(Json(out))
}

/// A source to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewSource {
    /// Name: lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// web, server, form, account, store or support.
    pub kind: String,
}

/// The created source and its write key, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedSource {
    /// The source.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub source: Source,
    /// The write key; only its digest is kept.
    pub write_key: String,
}

/// Creates a source and returns its write key.
#[utoipa::path(
    post, path = "/api/v1/sources", tag = "admin", request_body = NewSource,
    responses(
        (status = 201, description = "Created", body = CreatedSource),
        (status = 400, description = "Invalid name or kind, or the name is taken", body = crate::openapi::ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn create_source(
    _: Admin,
    State(app): State<Shared>,
    body: Result<Json<NewSource>, axum::extract::rejection::JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<CreatedSource>), ApiError> {
    let Json(new) = body.map_err(|e| ApiError::new(ErrorCode::InvalidJson, e.body_text()))?;
    let name = SourceName::parse(&new.name)?;
    let kind: SourceKind = new.kind.parse()?;
    let key = WriteKey::generate();
    let source = app
        .store
        .create_source(&name, kind, &key.digest(), &key.prefix())
        .await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(CreatedSource {
            source,
            write_key: key.reveal().to_owned(),
        }),
    ))
}
