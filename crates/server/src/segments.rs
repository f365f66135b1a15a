//! The segments API and the audience index that answers it.
//!
//! # Design
//!
//! The index (`confiance_core::segment::index`) lives in memory beside the HTTP server. It is
//! built once from the store at start, then kept current by following the store's change feed:
//! the event log up to the identity resolver's cursor (an event belongs to a profile only once
//! resolved), the consent ledger (grants, withdrawals, objections, restrictions), and the audit
//! log (merges, splits, erasures, retention runs). Every profile a change touches is re-read
//! from the store and replaced in the index; nothing is rebuilt on a timer. Several nodes on one
//! PostgreSQL each follow the same feed, so each has the same index.
//!
//! Saved segments also keep their member list in the store, synchronised by the same follower:
//! the store records an entered/exited transition only when its insert or delete changed a row,
//! so triggers see each transition once even with several nodes. Members exports are tasks
//! (`202` and an id to poll), purpose-checked when they run.
//!
//! The same follower keeps the breach register's exposure index
//! (`confiance_core::privacy::exposure`): each profile re-read also replaces those of its events
//! that carry traits, without the cap on the events a segment reads. Only the follower writes
//! it, holding the feed, so that it always answers for the events up to the feed's position.

use crate::auth::{Marketing, Viewer};
use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use confiance_core::ErrorCode;
use confiance_core::consent::{Subject, has_basis};
use confiance_core::privacy::exposure::{Carry, Exposure};
use confiance_core::segment::index::{AudienceIndex, ProfileFacts};
use confiance_core::segment::query::{self, Query};
use confiance_core::segment::{self as seg, CheckError};
use confiance_core::unify::golden::EventView;
use confiance_store::{Access, SegmentRow, StoredEvent};
use roaring::RoaringBitmap;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

/// Events read per profile at most when indexing it.
const PROFILE_EVENTS: usize = 20_000;
/// Feed entries read per poll.
const FEED_PAGE: usize = 2_000;
/// Pages of the change feed read at most before a breach is counted from the exposure index.
const CATCH_UP_PAGES: usize = 8;
/// How often the follower polls the feed when idle.
const POLL: Duration = Duration::from_millis(250);
/// How often saved segments are fully re-synchronised, for conditions relative to now
/// (`last_order within 30 days`) that change with time alone.
const RESYNC: Duration = Duration::from_secs(600);

/// The audience index and where it stands in the change feed.
pub struct Audience {
    index: RwLock<AudienceIndex>,
    exposure: RwLock<Exposure>,
    feed: tokio::sync::Mutex<Feed>,
    /// Whether the first build is done: member lists are synchronised only after it.
    built: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Feed {
    built: bool,
    events: i64,
    ledger: i64,
    audit: i64,
}

impl Audience {
    /// An empty index over the catalog's fields.
    pub fn new(catalog: &confiance_core::catalog::Catalog) -> Audience {
        Audience {
            index: RwLock::new(AudienceIndex::new(seg::schema(catalog))),
            exposure: RwLock::new(Exposure::new()),
            feed: tokio::sync::Mutex::new(Feed::default()),
            built: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The index, for reading.
    pub fn read(&self) -> RwLockReadGuard<'_, AudienceIndex> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, AudienceIndex> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_exposure(&self) -> std::sync::RwLockWriteGuard<'_, Exposure> {
        self.exposure.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AppState {
    /// Whom a breach touched among the events the exposure index has read, and up to which
    /// position of the log that is; `None` before the first build. The index is brought up to
    /// date first (so recent merges are in), and the feed is held while reading, so the answer
    /// and the position agree.
    pub(crate) async fn exposed(
        &self,
        traits: &[String],
        sources: &[i64],
        from: Option<jiff::Timestamp>,
        to: jiff::Timestamp,
    ) -> Option<(i64, Vec<(i64, i64)>)> {
        if !self.audience.built.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        // Caught up page by page (a merge's survivor and the profile it absorbed are only both
        // settled once the audit entry of the merge is read), within reason: what is left after
        // is the store's to count.
        for _ in 0..CATCH_UP_PAGES {
            match follow(self).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e.into_error().message, "following the change feed failed; the store counts everything");
                    return None;
                }
            }
        }
        let feed = self.audience.feed.lock().await;
        let window = confiance_core::privacy::exposure::Window {
            traits,
            sources,
            from,
            to,
            upto: feed.events,
        };
        let touched = self
            .audience
            .exposure
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .touched(&window);
        Some((feed.events, touched))
    }
}

/// The segments routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/segments/preview", post(preview))
        .route("/api/v1/segments", post(create).get(list))
        .route("/api/v1/segments/{id}", get(show).put(update).delete(remove))
        .route("/api/v1/segments/{id}/exports", post(export))
        .route("/api/v1/segments/{id}/transitions", get(transitions))
        .route("/api/v1/exports/{id}", get(export_status))
        .route("/api/v1/exports/{id}/file", get(export_file))
        .route("/api/v1/audience", get(status))
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the body is malformed: {e}")))
}

/// A query as sent: the text language, or its JSON form.
fn parse_query(value: &Value) -> Result<(Query, Option<String>), ApiError> {
    match value {
        Value::String(text) => query::parse(text).map(|q| (q, Some(text.clone()))).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidSegment,
                format!("the query does not parse: {}", e.message),
            )
            .with("line", json!(e.line))
            .with("column", json!(e.column))
            .with("hint", json!(e.hint))
        }),
        Value::Object(_) => serde_json::from_value(value.clone()).map(|q| (q, None)).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidSegment,
                format!("the query's JSON form is invalid: {e}"),
            )
            .with(
                "hint",
                json!("see docs/segments.md for the JSON form, or send the text form as a string"),
            )
        }),
        Value::Null => Err(ApiError::new(ErrorCode::MissingField, "`query` is required")),
        _ => Err(ApiError::new(
            ErrorCode::InvalidSegment,
            "`query` is a text or a JSON object",
        )),
    }
}

fn check_error(e: CheckError) -> ApiError {
    let field = match &e {
        CheckError::UnknownPurpose(_) => "purpose",
        _ => "query",
    };
    ApiError::new(ErrorCode::InvalidSegment, e.to_string()).with("field", json!(field))
}

/// A segment being edited or saved.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SegmentInput {
    /// Unique name (saving only).
    #[serde(default)]
    pub name: Option<String>,
    /// The purpose the segment serves: it decides what the query may read and who may be in it.
    #[serde(default)]
    pub purpose: Option<String>,
    /// The query: the text language, or its JSON form.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub query: Value,
    /// What it is for, in plain words.
    #[serde(default)]
    pub description: Option<String>,
}

/// The query of a saved segment (`None` if its stored document is unreadable).
pub(crate) fn query_of(row: &SegmentRow) -> Option<Query> {
    serde_json::from_value(row.doc["query"].clone()).ok()
}

/// The purpose a saved segment serves.
pub(crate) fn purpose_of(row: &SegmentRow) -> &str {
    row.doc["purpose"].as_str().unwrap_or_default()
}

/// Resolves `segment "name"` to saved queries.
pub(crate) fn resolver(saved: &[SegmentRow]) -> impl Fn(&str) -> Option<Query> + '_ {
    move |name| saved.iter().find(|s| s.name == name).and_then(query_of)
}

impl AppState {
    /// Parses and checks a segment against the catalog and the saved segments.
    fn validate(
        &self,
        input: &SegmentInput,
        saved: &[SegmentRow],
    ) -> Result<(Query, Option<String>, String), ApiError> {
        let purpose = input.purpose.clone().ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingField,
                "`purpose` is required: a segment serves one purpose",
            )
        })?;
        let (q, text) = parse_query(&input.query)?;
        seg::check(&self.catalog, &purpose, &q, &resolver(saved)).map_err(check_error)?;
        Ok((q, text, purpose))
    }

    /// Members of a checked query, now.
    pub(crate) fn members(&self, q: &Query, purpose: &str, saved: &[SegmentRow]) -> Result<RoaringBitmap, ApiError> {
        let index = self.audience.read();
        index
            .members(q, purpose, self.clock.now(), &resolver(saved))
            .map_err(|e| ApiError::new(ErrorCode::InvalidSegment, e.to_string()).with("field", json!("query")))
    }

    async fn segment_row(&self, id: i64) -> Result<(SegmentRow, Vec<SegmentRow>), ApiError> {
        let saved = self.store.segments().await?;
        let row = saved
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no segment {id}")))?;
        Ok((row, saved))
    }

    fn segment_view(&self, row: &SegmentRow, saved: &[SegmentRow]) -> Value {
        let purpose = purpose_of(row);
        let count = query_of(row)
            .and_then(|q| self.members(&q, purpose, saved).ok())
            .map(|m| m.len());
        let mut out = json!({"id": row.id, "name": row.name, "count": count});
        if let (Value::Object(out), Value::Object(doc)) = (&mut out, &row.doc) {
            out.extend(doc.clone());
        }
        out
    }
}

/// Where the audience index stands: profiles indexed and its positions in the change feed.
#[utoipa::path(
    get, path = "/api/v1/audience", tag = "segments",
    responses((status = 200, description = "`built`, `profiles`, `feed` positions (events, ledger, audit)")),
    security(("bearer" = []))
)]
pub async fn status(_: Viewer, State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let feed = *app.audience.feed.lock().await;
    let index = app.audience.read();
    let exposure = app.audience.exposure.read().unwrap_or_else(PoisonError::into_inner);
    Ok(Json(json!({
        "built": feed.built,
        "profiles": index.len(),
        "heap_bytes": index.heap_bytes(),
        "exposure": {
            "events": exposure.len(),
            "heap_bytes": exposure.heap_bytes(),
        },
        "feed": {"events": feed.events, "ledger": feed.ledger, "audit": feed.audit},
    })))
}

/// Counts a query while it is being edited: only profiles with a legal basis for the purpose
/// now, never a figure that ignores consent.
#[utoipa::path(
    post, path = "/api/v1/segments/preview", tag = "segments", request_body = SegmentInput,
    responses(
        (status = 200, description = "`count` (members with a legal basis), `lawful` (profiles with a basis for the purpose), `profiles` (indexed), the query's JSON form"),
        (status = 400, description = "The query does not parse (`line`, `column`, `hint`) or reads data its purpose may not use", body = crate::openapi::ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn preview(_: Viewer, State(app): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let input: SegmentInput = json_body(&body)?;
    let saved = app.store.segments().await?;
    let (q, _, purpose) = app.validate(&input, &saved)?;
    let started = Instant::now();
    let members = app.members(&q, &purpose, &saved)?;
    let micros = started.elapsed().as_micros() as u64;
    let index = app.audience.read();
    Ok(Json(json!({
        "count": members.len(),
        "purpose": purpose,
        "lawful": index.lawful(&purpose).len(),
        "profiles": index.len(),
        "query": q,
        "took_us": micros,
    })))
}

/// Saves a segment; its members are synchronised at once (no entered events for them: a new
/// definition is not people changing).
#[utoipa::path(
    post, path = "/api/v1/segments", tag = "segments", request_body = SegmentInput,
    responses((status = 201, description = "The segment with its `id` and `count`"), (status = 400, description = "Invalid name, purpose or query", body = crate::openapi::ErrorSchema)),
    security(("bearer" = []))
)]
pub async fn create(
    Marketing(caller): Marketing,
    State(app): State<Shared>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input: SegmentInput = json_body(&body)?;
    let id = save(&app, &caller.actor(), None, &input).await?;
    let (row, saved) = app.segment_row(id).await?;
    Ok((StatusCode::CREATED, Json(app.segment_view(&row, &saved))))
}

/// Changes a segment's name, purpose, query or description.
#[utoipa::path(
    put, path = "/api/v1/segments/{id}", tag = "segments", request_body = SegmentInput,
    responses((status = 200, description = "The segment"), (status = 404, description = "No such segment", body = crate::openapi::ErrorSchema)),
    security(("bearer" = []))
)]
pub async fn update(
    Marketing(caller): Marketing,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let input: SegmentInput = json_body(&body)?;
    app.segment_row(id).await?;
    save(&app, &caller.actor(), Some(id), &input).await?;
    let (row, saved) = app.segment_row(id).await?;
    Ok(Json(app.segment_view(&row, &saved)))
}

/// Saves a segment on behalf of `actor` (the API's caller, or the demo).
pub async fn save(app: &Shared, actor: &str, id: Option<i64>, input: &SegmentInput) -> Result<i64, ApiError> {
    let name = input
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 200)
        .ok_or_else(|| ApiError::new(ErrorCode::MissingField, "`name` is required (1 to 200 characters)"))?;
    let saved: Vec<SegmentRow> = app
        .store
        .segments()
        .await?
        .into_iter()
        .filter(|s| Some(s.id) != id)
        .collect();
    let (q, text, purpose) = app.validate(input, &saved)?;
    if matches!(&q, Query::Segment(n) if n == name) {
        return Err(ApiError::new(
            ErrorCode::InvalidSegment,
            "a segment cannot be only itself",
        ));
    }
    let now = app.clock.now();
    let doc = json!({
        "purpose": purpose,
        "query": q,
        "text": text,
        "description": input.description,
        "updated_at": now,
        "updated_by": actor,
    });
    let id = app.store.put_segment(id, name, doc).await?;
    let (row, saved) = app.segment_row(id).await?;
    sync_segment(app, &row, &saved, false).await?;
    Ok(id)
}

/// Every saved segment with its current count.
#[utoipa::path(
    get, path = "/api/v1/segments", tag = "segments",
    responses((status = 200, description = "The segments")), security(("bearer" = []))
)]
pub async fn list(_: Viewer, State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let saved = app.store.segments().await?;
    let segments: Vec<Value> = saved.iter().map(|s| app.segment_view(s, &saved)).collect();
    Ok(Json(json!({ "segments": segments })))
}

/// One segment with its current count.
#[utoipa::path(
    get, path = "/api/v1/segments/{id}", tag = "segments",
    responses((status = 200, description = "The segment"), (status = 404, description = "No such segment", body = crate::openapi::ErrorSchema)),
    security(("bearer" = []))
)]
pub async fn show(_: Viewer, State(app): State<Shared>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let (row, saved) = app.segment_row(id).await?;
    Ok(Json(app.segment_view(&row, &saved)))
}

/// Deletes a segment; one that another segment names cannot be deleted.
#[utoipa::path(
    delete, path = "/api/v1/segments/{id}", tag = "segments",
    responses((status = 204, description = "Deleted"), (status = 400, description = "Another segment names it", body = crate::openapi::ErrorSchema)),
    security(("bearer" = []))
)]
pub async fn remove(_: Marketing, State(app): State<Shared>, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    let (row, saved) = app.segment_row(id).await?;
    for other in saved.iter().filter(|s| s.id != id) {
        let Some(q) = query_of(other) else {
            continue;
        };
        let mut named = false;
        q.visit(&mut |r| named |= r == query::Ref::Segment(&row.name));
        if named {
            return Err(ApiError::new(
                ErrorCode::InvalidSegment,
                format!("segment {:?} names it: change that one first", other.name),
            ));
        }
    }
    app.store.delete_segment(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Entered/exited transitions of a segment, after a position.
#[utoipa::path(
    get, path = "/api/v1/segments/{id}/transitions", tag = "segments",
    params(("after" = Option<i64>, Query, description = "Last position seen")),
    responses((status = 200, description = "Transitions in order")), security(("bearer" = []))
)]
pub async fn transitions(
    _: Marketing,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    app.segment_row(id).await?;
    let after = match q.get("after") {
        Some(a) => a
            .parse()
            .map_err(|_| ApiError::new(ErrorCode::InvalidQuery, "`after` is a whole number"))?,
        None => 0,
    };
    let mut out = Vec::new();
    let mut cursor = after;
    // The feed is shared by every segment: page through it and keep this one's.
    loop {
        let page = app.store.transitions(cursor, None, 1_000).await?;
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        out.extend(page.into_iter().filter(|t| t.segment_id == id));
        if out.len() >= 1_000 {
            break;
        }
    }
    Ok(Json(json!({"transitions": out, "next": cursor})))
}

/// Asks for a members export (CSV or JSON): a task to poll.
#[utoipa::path(
    post, path = "/api/v1/segments/{id}/exports", tag = "segments",
    responses((status = 202, description = "The export task: `id`, `status`")), security(("bearer" = []))
)]
pub async fn export(
    Marketing(caller): Marketing,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    #[derive(Deserialize)]
    struct Input {
        #[serde(default)]
        format: Option<String>,
    }
    let input: Input = if body.is_empty() {
        Input { format: None }
    } else {
        json_body(&body)?
    };
    let format = input.format.unwrap_or_else(|| "csv".into());
    if format != "csv" && format != "json" {
        return Err(ApiError::new(ErrorCode::InvalidField, "`format` is csv or json").with("field", json!("format")));
    }
    let (row, _) = app.segment_row(id).await?;
    let task = app.store.create_export(id, &format, app.clock.now()).await?;
    app.audit_read(
        &caller,
        "segment.exported",
        None,
        json!({"segment": row.id, "export": task, "format": format}),
    )
    .await?;
    let worker = app.clone();
    tokio::spawn(async move {
        let outcome = run_export(&worker, &row, &format)
            .await
            .map_err(|e| e.into_error().message);
        if let Err(e) = worker.store.finish_export(task, outcome, worker.clock.now()).await {
            tracing::warn!(error = %e, export = task, "could not record the export's outcome");
        }
    });
    let row = app
        .store
        .export(task)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the export vanished"))?;
    Ok((StatusCode::ACCEPTED, Json(json!(row))))
}

/// The members of a segment with the traits its purpose may use: re-evaluated and
/// re-checked against each member's legal basis when the export runs.
async fn run_export(app: &Shared, row: &SegmentRow, format: &str) -> Result<(i64, String), ApiError> {
    let saved = app.store.segments().await?;
    let purpose = purpose_of(row).to_owned();
    let q: Query = serde_json::from_value(row.doc["query"].clone())
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("stored query: {e}")))?;
    seg::check(&app.catalog, &purpose, &q, &resolver(&saved)).map_err(check_error)?;
    let profiles: Vec<i64> = {
        let members = app.members(&q, &purpose, &saved)?;
        let index = app.audience.read();
        members.iter().map(|s| index.profile(s)).collect()
    };
    let columns: Vec<&str> = app
        .catalog
        .traits
        .values()
        .filter(|t| t.purposes.contains(&purpose))
        .map(|t| t.name.as_str())
        .collect();
    let mut rows: Vec<BTreeMap<&str, Value>> = Vec::new();
    for id in profiles {
        let Some((facts, _)) = facts_of(app, id).await? else {
            continue;
        };
        if !facts.lawful.contains(&purpose) {
            continue;
        }
        let mut r = BTreeMap::new();
        r.insert("profile_id", json!(id));
        for c in &columns {
            if let Some(v) = facts.traits.get(*c) {
                r.insert(*c, v.clone());
            }
        }
        rows.push(r);
    }
    let n = rows.len() as i64;
    let body = if format == "json" {
        serde_json::to_string(&json!({"segment": row.name, "purpose": purpose, "members": rows}))
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
    } else {
        let mut w = csv::Writer::from_writer(Vec::new());
        let header: Vec<&str> = std::iter::once("profile_id").chain(columns.iter().copied()).collect();
        let csv_error = |e: csv::Error| ApiError::new(ErrorCode::Internal, e.to_string());
        w.write_record(&header).map_err(csv_error)?;
        for r in &rows {
            w.write_record(header.iter().map(|h| {
                match r.get(h) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(";"),
                    Some(v) => v.to_string(),
                }
            }))
            .map_err(csv_error)?;
        }
        String::from_utf8(
            w.into_inner()
                .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?,
        )
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
    };
    Ok((n, body))
}

/// An export task's status.
#[utoipa::path(
    get, path = "/api/v1/exports/{id}", tag = "segments",
    responses((status = 200, description = "`status`: enqueued, processing, succeeded or failed; `rows`; `error`")),
    security(("bearer" = []))
)]
pub async fn export_status(
    _: Marketing,
    State(app): State<Shared>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let row = app
        .store
        .export(id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no export {id}")))?;
    Ok(Json(json!(row)))
}

/// The file of a finished export.
#[utoipa::path(
    get, path = "/api/v1/exports/{id}/file", tag = "segments",
    responses((status = 200, description = "CSV or JSON"), (status = 404, description = "No such export, or not finished", body = crate::openapi::ErrorSchema)),
    security(("bearer" = []))
)]
pub async fn export_file(
    Marketing(caller): Marketing,
    State(app): State<Shared>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let format = app.store.export(id).await?.map(|r| r.format);
    let Some((body, format)) = app.store.export_file(id).await?.zip(format) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("export {id} has no file (yet)"),
        ));
    };
    app.audit_read(&caller, "segment.export_downloaded", None, json!({"export": id}))
        .await?;
    let kind = if format == "json" {
        "application/json"
    } else {
        "text/csv; charset=utf-8"
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"segment-export-{id}.{format}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Subjects (identifiers) of a profile from its identity keys.
fn subjects_of(keys: &[String]) -> Vec<Subject> {
    keys.iter().filter_map(|k| Subject::from_key(k)).collect()
}

/// The facts of one profile as the store holds it now; `None` when it is gone or merged.
pub(crate) async fn facts_of(app: &AppState, id: i64) -> Result<Option<(ProfileFacts, Vec<String>)>, ApiError> {
    Ok(read_profile(app, id).await?.map(|(facts, keys, _)| (facts, keys)))
}

/// [`facts_of`], with the first events of the profile it was computed from.
async fn read_profile(
    app: &AppState,
    id: i64,
) -> Result<Option<(ProfileFacts, Vec<String>, Vec<StoredEvent>)>, ApiError> {
    let Some(row) = app.store.profile(Access::Administration, id).await? else {
        return Ok(None);
    };
    if row.merged_into.is_some() || row.identities.is_empty() {
        return Ok(None);
    }
    let events = app
        .store
        .profile_events(Access::Administration, id, 0, PROFILE_EVENTS)
        .await?;
    let keys: Vec<String> = row.identities.iter().map(|(k, _)| k.clone()).collect();
    let subjects = subjects_of(&keys);
    let view = app.store.consent_view(&subjects).await?;
    let sources = app.source_kinds().await?;
    Ok(Some((
        facts_from(app, &events, &sources, &subjects, &view),
        keys,
        events,
    )))
}

/// The exposure entry of an event, when it carries traits.
fn carry_of(e: &StoredEvent) -> Option<Carry> {
    let traits = confiance_core::collect::carried_traits(e.kind, &e.body);
    (!traits.is_empty()).then(|| Carry {
        seq: e.seq,
        source: e.source_id,
        received_at: e.received_at,
        traits: traits.into_iter().map(str::to_owned).collect(),
    })
}

/// Every event of profile `id` that carries traits, `first` being its first page of events (the
/// rest, when there is more, is read from the trait names kept beside the events: no body).
///
/// An event belongs to the profile of its `userId` when that identifier is known, else to the
/// profile of its `anonymousId`, as the store counts it: an event sent under this profile's
/// anonymous id with another profile's user id is theirs.
async fn carries_of(app: &AppState, id: i64, keys: &[String], first: &[StoredEvent]) -> Result<Vec<Carry>, ApiError> {
    let mut read: Vec<(Option<&str>, Carry)> = first
        .iter()
        .filter_map(|e| carry_of(e).map(|c| (e.user_id.as_deref(), c)))
        .collect();
    let rest = match first.last() {
        Some(last) if first.len() >= PROFILE_EVENTS => app.store.profile_carries(id, last.seq).await?,
        _ => Vec::new(),
    };
    read.extend(rest.iter().map(|e| (e.user_id.as_deref(), e.carry.clone())));
    let mut carries = Vec::new();
    let mut elsewhere: BTreeMap<String, Vec<Carry>> = BTreeMap::new();
    for (user, carry) in read {
        match user {
            Some(u) if !keys.iter().any(|k| k.strip_prefix("user_id:") == Some(u)) => {
                elsewhere.entry(format!("user_id:{u}")).or_default().push(carry);
            }
            _ => carries.push(carry),
        }
    }
    for (key, mut foreign) in elsewhere {
        if app.store.profiles_of_keys(vec![key]).await?.is_empty() {
            carries.append(&mut foreign);
        }
    }
    Ok(carries)
}

/// Re-reads one profile into the audience index, and into the exposure index when `exposure`
/// (only the follower does, holding the feed, so that the exposure index and its position
/// agree), or removes it from them.
async fn reindex(app: &AppState, id: i64, exposure: bool) -> Result<(), ApiError> {
    match read_profile(app, id).await? {
        Some((facts, keys, events)) => {
            if exposure {
                let carries = carries_of(app, id, &keys, &events).await?;
                app.audience.write_exposure().upsert(id, carries);
            }
            app.audience.write().upsert(id, &facts);
        }
        None => {
            app.audience.write().remove(id);
            if exposure {
                app.audience.write_exposure().remove(id);
            }
        }
    }
    Ok(())
}

fn facts_from(
    app: &AppState,
    events: &[StoredEvent],
    sources: &HashMap<i64, (String, confiance_core::source::SourceKind)>,
    subjects: &[Subject],
    view: &confiance_core::consent::ConsentView,
) -> ProfileFacts {
    let views: Vec<EventView<'_>> = events
        .iter()
        .filter_map(|e| crate::profiles::view(e, sources))
        .collect();
    let (_, golden, computed) = app.history(&views);
    let lawful: BTreeSet<String> = app
        .catalog
        .purposes
        .values()
        .filter(|p| has_basis(p, view.effective(subjects, &p.id)))
        .map(|p| p.id.clone())
        .collect();
    seg::facts(&app.catalog, &golden, &computed, &views, lawful)
}

/// Builds the index from a snapshot of the store, then follows the change feed until `stop`.
pub async fn run_audience(app: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut last_resync = Instant::now();
    loop {
        let outcome = follow(&app).await;
        let busy = match outcome {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(error = %e.into_error().message, "following the change feed failed; retrying");
                false
            }
        };
        if last_resync.elapsed() >= RESYNC {
            last_resync = Instant::now();
            if let Err(e) = resync_all(&app).await {
                tracing::warn!(error = %e.into_error().message, "segment resynchronisation failed");
            }
        }
        if busy {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Brings the index up to the store's current state: a full build the first time, then the
/// changes since. Returns how many profiles were re-read.
pub async fn follow(app: &AppState) -> Result<usize, ApiError> {
    let mut feed = app.audience.feed.lock().await;
    if !feed.built {
        let started = Instant::now();
        let n = build(app, &mut feed).await?;
        tracing::info!(
            profiles = n,
            millis = started.elapsed().as_millis() as u64,
            "audience index built"
        );
        resync_all(app).await?;
        return Ok(n);
    }
    // The positions move only once every profile they cover is in: a failure part-way leaves
    // them where they were, and the next poll reads the same changes again.
    let mut next = *feed;
    let mut touched: BTreeSet<i64> = BTreeSet::new();
    let mut rebuild = false;
    // Events, up to what identity resolution has placed in profiles.
    let (resolved, _) = app.store.unify_status().await?;
    if resolved > next.events {
        let page = app.store.events_page(next.events, FEED_PAGE).await?;
        let mut keys = BTreeSet::new();
        for e in page.iter().take_while(|e| e.seq <= resolved) {
            next.events = e.seq;
            if let Some(u) = &e.user_id {
                keys.insert(format!("user_id:{u}"));
            }
            if let Some(a) = &e.anonymous_id {
                keys.insert(format!("anonymous_id:{a}"));
            }
        }
        if page.iter().all(|e| e.seq <= resolved) && page.len() < FEED_PAGE {
            next.events = resolved;
        }
        touched.extend(app.store.profiles_of_keys(keys.into_iter().collect()).await?);
    }
    // Consent decisions, with a short look-back for late commits on PostgreSQL.
    let recent = app.clock.now() - jiff::SignedDuration::from_secs(2);
    let changes = app.store.consent_changes(next.ledger, recent, FEED_PAGE).await?;
    let keys: Vec<String> = changes.iter().map(|(_, k)| k.clone()).collect();
    if let Some(last) = changes.iter().map(|(s, _)| *s).max() {
        next.ledger = next.ledger.max(last);
    }
    touched.extend(app.store.profiles_of_keys(keys).await?);
    // Merges, splits, erasures and retention runs.
    for entry in app.store.audit_log(next.audit, FEED_PAGE).await? {
        next.audit = entry.seq;
        let subject_profile = entry
            .subject
            .as_deref()
            .and_then(|s| s.strip_prefix("profile:"))
            .and_then(|p| p.parse::<i64>().ok());
        match entry.action.as_str() {
            "profile.merged" | "profile.split" | "subject.erased" => {
                touched.extend(subject_profile);
                touched.extend(entry.details["absorbed"].as_i64());
                if let Some(Value::Array(ids)) = entry.details.get("profiles") {
                    touched.extend(ids.iter().filter_map(Value::as_i64));
                }
            }
            "retention.applied" => rebuild = true,
            _ => {}
        }
    }
    if rebuild {
        // Retention removes events of many profiles at once: read everything again.
        build(app, &mut feed).await?;
        resync_all(app).await?;
        return Ok(1);
    }
    if touched.is_empty() {
        *feed = next;
        return Ok(0);
    }
    // The feed stays locked until the profiles are in: a reader of the positions knows
    // everything before them is indexed.
    for id in &touched {
        reindex(app, *id, true).await?;
    }
    *feed = next;
    drop(feed);
    sync_touched(app, &touched).await?;
    Ok(touched.len())
}

/// Reads every profile into a fresh index and swaps it in.
async fn build(app: &AppState, feed: &mut Feed) -> Result<usize, ApiError> {
    // Positions first: whatever changes while the snapshot is read is replayed after.
    let (resolved, _) = app.store.unify_status().await?;
    let (ledger, audit) = app.store.feed_heads().await?;
    let snapshot = app.store.profiles_snapshot().await?;
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for (i, (_, keys)) in snapshot.iter().enumerate() {
        for k in keys {
            owner.insert(k.as_str(), i);
        }
    }
    let mut events: Vec<Vec<StoredEvent>> = vec![Vec::new(); snapshot.len()];
    let mut exposure = Exposure::new();
    let mut after = 0;
    while after < resolved {
        let page = app.store.events_page(after, 5_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page {
            if e.seq > resolved {
                continue;
            }
            let by_user = e
                .user_id
                .as_ref()
                .and_then(|u| owner.get(format!("user_id:{u}").as_str()));
            let by_anon = e
                .anonymous_id
                .as_ref()
                .and_then(|a| owner.get(format!("anonymous_id:{a}").as_str()));
            let Some(&i) = by_user.or(by_anon) else { continue };
            if let Some(carry) = carry_of(&e) {
                exposure.push(snapshot[i].0, carry);
            }
            if events[i].len() < PROFILE_EVENTS {
                events[i].push(e);
            }
        }
    }
    let all_keys: Vec<Subject> = snapshot.iter().flat_map(|(_, keys)| subjects_of(keys)).collect();
    let mut view = confiance_core::consent::ConsentView::default();
    for chunk in all_keys.chunks(5_000) {
        view.extend(app.store.consent_view(chunk).await?);
    }
    let sources = app.source_kinds().await?;
    let mut index = AudienceIndex::new(seg::schema(&app.catalog));
    for ((id, keys), events) in snapshot.iter().zip(&events) {
        let facts = facts_from(app, events, &sources, &subjects_of(keys), &view);
        index.upsert(*id, &facts);
    }
    exposure.shrink();
    let n = snapshot.len();
    *app.audience.write() = index;
    *app.audience.write_exposure() = exposure;
    app.audience.built.store(true, std::sync::atomic::Ordering::Release);
    *feed = Feed {
        built: true,
        events: resolved,
        ledger,
        audit,
    };
    Ok(n)
}

/// Synchronises one segment's stored members with the index, in full.
///
/// Nothing happens before the index is first built; a segment's first synchronisation fills its
/// list silently (a new definition is not people changing), later ones record transitions when
/// `record`.
async fn sync_segment(app: &AppState, row: &SegmentRow, saved: &[SegmentRow], record: bool) -> Result<(), ApiError> {
    if !app.audience.built.load(std::sync::atomic::Ordering::Acquire) {
        return Ok(());
    }
    let first = row.doc.get("synced_at").is_none();
    let record = record && !first;
    let purpose = purpose_of(row);
    let Some(q) = query_of(row) else {
        return Ok(());
    };
    let members: BTreeSet<i64> = {
        let bits = app.members(&q, purpose, saved)?;
        let index = app.audience.read();
        bits.iter().map(|s| index.profile(s)).collect()
    };
    let stored: BTreeSet<i64> = app.store.segment_members(row.id).await?.into_iter().collect();
    let entered: Vec<i64> = members.difference(&stored).copied().collect();
    let exited: Vec<i64> = stored.difference(&members).copied().collect();
    if !entered.is_empty() || !exited.is_empty() {
        app.store
            .sync_members(row.id, entered, exited, app.clock.now(), record)
            .await?;
    }
    if first {
        let mut doc = row.doc.clone();
        doc["synced_at"] = json!(app.clock.now());
        app.store.put_segment(Some(row.id), &row.name, doc).await?;
    }
    Ok(())
}

async fn resync_all(app: &AppState) -> Result<(), ApiError> {
    let saved = app.store.segments().await?;
    for row in &saved {
        sync_segment(app, row, &saved, true).await?;
    }
    Ok(())
}

/// Synchronises the touched profiles' membership of every saved segment, recording
/// transitions.
async fn sync_touched(app: &AppState, touched: &BTreeSet<i64>) -> Result<(), ApiError> {
    let saved = app.store.segments().await?;
    if saved.is_empty() {
        return Ok(());
    }
    // A segment not yet filled is filled whole, silently, by `sync_segment`.
    for row in saved.iter().filter(|r| r.doc.get("synced_at").is_some()) {
        let purpose = purpose_of(row);
        let Some(q) = query_of(row) else {
            continue;
        };
        let (entered, exited) = {
            let index = app.audience.read();
            let slots: RoaringBitmap = touched.iter().filter_map(|p| index.slot(*p)).collect();
            let members = index
                .members_within(&q, purpose, app.clock.now(), &resolver(&saved), &slots)
                .map_err(|e| ApiError::new(ErrorCode::InvalidSegment, e.to_string()))?;
            let entered: Vec<i64> = members.iter().map(|s| index.profile(s)).collect();
            let exited: Vec<i64> = touched
                .iter()
                .copied()
                .filter(|p| index.slot(*p).is_none_or(|s| !members.contains(s)))
                .collect();
            (entered, exited)
        };
        app.store
            .sync_members(row.id, entered, exited, app.clock.now(), true)
            .await?;
    }
    Ok(())
}

impl AppState {
    /// Records consent decisions, then re-reads the profiles they concern into the audience
    /// index at once: a withdrawal counts from the next preview, not from the next poll.
    pub(crate) async fn record_consents(
        &self,
        decisions: Vec<confiance_core::consent::Decision>,
    ) -> Result<Vec<i64>, ApiError> {
        let keys: Vec<String> = decisions.iter().map(|d| d.subject.key()).collect();
        let seqs = self.store.record_consents(decisions).await?;
        if let Err(e) = self.refresh(keys).await {
            // The follower will pick the change up from the ledger.
            tracing::warn!(error = %e.into_error().message, "could not refresh the audience index at once");
        }
        Ok(seqs)
    }

    /// Re-reads the profiles holding these identifiers into the audience index (not the
    /// exposure index: a consent decision changes no one's exposure).
    pub(crate) async fn refresh(&self, keys: Vec<String>) -> Result<(), ApiError> {
        let touched: BTreeSet<i64> = self.store.profiles_of_keys(keys).await?.into_iter().collect();
        for id in &touched {
            // Consent decisions change no exposure; the follower, under the feed, keeps it.
            reindex(self, *id, false).await?;
        }
        sync_touched(self, &touched).await
    }
}

impl AppState {
    /// The saved segments a profile is in now, and its entered/exited history: part of what a
    /// person is told under GDPR Art. 15.
    pub(crate) async fn segments_of(&self, profile: i64) -> Result<Value, ApiError> {
        let saved = self.store.segments().await?;
        let mut current = Vec::new();
        for row in &saved {
            let purpose = purpose_of(row);
            let Some(q) = query_of(row) else {
                continue;
            };
            let member = {
                let index = self.audience.read();
                let Some(slot) = index.slot(profile) else { break };
                let one: RoaringBitmap = std::iter::once(slot).collect();
                index
                    .members_within(&q, purpose, self.clock.now(), &resolver(&saved), &one)
                    .is_ok_and(|m| m.contains(slot))
            };
            if member {
                current.push(
                    json!({"id": row.id, "name": row.name, "purpose": purpose, "description": row.doc["description"]}),
                );
            }
        }
        let names: HashMap<i64, &str> = saved.iter().map(|s| (s.id, s.name.as_str())).collect();
        let history: Vec<Value> = self
            .store
            .transitions(0, Some(profile), 10_000)
            .await?
            .iter()
            .map(|t| {
                json!({"segment": names.get(&t.segment_id).copied().unwrap_or("(deleted)"), "entered": t.entered, "at": t.at})
            })
            .collect();
        Ok(json!({"current": current, "history": history}))
    }
}
