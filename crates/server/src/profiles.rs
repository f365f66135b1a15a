//! The profiles API: the golden record of a person, their identities and timeline, and why two
//! records were merged — with the way to undo a wrong merge.
//!
//! Golden values are computed on read from the profile's events (see
//! `confiance_core::unify::golden`), so they always agree with the log; the identity graph the
//! processor maintains says which events are the profile's.

use crate::auth::Staff;
use crate::consent::SubjectInput;
use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use confiance_core::ErrorCode;
use confiance_core::catalog::LegalBasis;
use confiance_core::source::SourceKind;
use confiance_core::unify::golden::{Computed, EventView, GoldenValue, Observation, computed, observations, survive};
use confiance_core::unify::identifier::Identifier;
use confiance_store::{Access, StoredEvent};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// Events read to build a golden record at most.
const GOLDEN_EVENTS: usize = 20_000;

/// The profiles routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/profiles/lookup", get(lookup))
        .route("/api/v1/profiles/{id}", get(profile))
        .route("/api/v1/profiles/{id}/merges", get(merges))
        .route("/api/v1/merges/{id}/undo", post(undo))
        .route("/api/v1/unify/status", get(status))
}

/// A lookup by identifier.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LookupQuery {
    /// `email`, `phone`, `user_id`, `anonymous_id`, or an identifier trait (`loyalty_card`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The identifier.
    pub value: String,
}

impl AppState {
    pub(crate) async fn source_kinds(&self) -> Result<HashMap<i64, (String, SourceKind)>, ApiError> {
        Ok(self
            .store
            .list_sources()
            .await?
            .into_iter()
            .map(|s| (s.id, (s.name.to_string(), s.kind)))
            .collect())
    }

    /// The full view of a profile: golden record with lineage, identities, consent, history
    /// traits.
    pub(crate) async fn profile_view(&self, id: i64) -> Result<Value, ApiError> {
        let row = self
            .store
            .profile(Access::Administration, id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no profile {id}")))?;
        if let Some(into) = row.merged_into {
            return Ok(json!({"id": id, "merged_into": into}));
        }
        let events = self
            .store
            .profile_events(Access::Administration, id, 0, GOLDEN_EVENTS)
            .await?;
        self.view_of(row, &events).await
    }

    /// The lineage, golden values and history traits of a profile's events.
    pub(crate) fn history(
        &self,
        views: &[EventView<'_>],
    ) -> (
        BTreeMap<String, Vec<Observation>>,
        BTreeMap<String, GoldenValue>,
        Computed,
    ) {
        let mut lineage: BTreeMap<String, Vec<Observation>> = BTreeMap::new();
        for v in views {
            for (name, o) in observations(v, v.source == crate::requests::RECTIFICATIONS) {
                lineage.entry(name).or_default().push(o);
            }
        }
        let golden = survive(&lineage, &self.survivorship);
        (lineage, golden, computed(views))
    }

    /// The view of a profile from events already read.
    pub(crate) async fn view_of(
        &self,
        row: confiance_store::ProfileRow,
        events: &[StoredEvent],
    ) -> Result<Value, ApiError> {
        let id = row.id;
        let sources = self.source_kinds().await?;
        let views: Vec<EventView<'_>> = events.iter().filter_map(|e| view(e, &sources)).collect();
        let (lineage, golden, history) = self.history(&views);
        let subjects = self.store.profile_subjects(id).await?;
        let view = self.store.consent_view(&subjects).await?;
        let consent: BTreeMap<&str, Value> = self
            .catalog
            .purposes
            .values()
            .map(|p| {
                let state = view.effective(&subjects, &p.id);
                let basis = confiance_core::consent::has_basis(p, state);
                let status = match (p.legal_basis, state) {
                    (LegalBasis::Consent, Some(s)) => s.status.as_str(),
                    (LegalBasis::Consent, None) => "not_asked",
                    _ => "not_needed",
                };
                (
                    p.id.as_str(),
                    json!({"status": status, "legal_basis": basis, "since": state.map(|s| s.recorded_at)}),
                )
            })
            .collect();
        let identities: Vec<Value> = row
            .identities
            .iter()
            .map(|(key, seq)| {
                let (kind, value) = key.split_once(':').unwrap_or((key, ""));
                json!({"type": kind, "value": value, "first_seq": seq})
            })
            .collect();
        Ok(json!({
            "id": row.id,
            "created_at": row.created_at,
            "identities": identities,
            "traits": golden,
            "lineage": lineage,
            "computed": history,
            "consent": consent,
            "events": events.len(),
            "campaigns": self.store.sends(None, Some(id), 200).await?,
        }))
    }
}

pub(crate) fn view<'a>(e: &'a StoredEvent, sources: &'a HashMap<i64, (String, SourceKind)>) -> Option<EventView<'a>> {
    let (name, kind) = sources.get(&e.source_id)?;
    Some(EventView {
        kind: e.kind,
        event: e.event.as_deref(),
        body: &e.body,
        timestamp: e.timestamp,
        seq: e.seq,
        source: name,
        source_kind: *kind,
    })
}

/// The profile of an identifier: golden record (with why each value won), identities, lineage,
/// consent state across all identities, history traits.
#[utoipa::path(
    get, path = "/api/v1/profiles/lookup", tag = "profiles", params(LookupQuery),
    responses(
        (status = 200, description = "The golden record"),
        (status = 404, description = "No profile holds this identifier", body = crate::openapi::ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn lookup(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Query(q): Query<LookupQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = Identifier::parse(&q.kind, &q.value).ok_or_else(|| {
        ApiError::from(
            SubjectInput {
                kind: q.kind.clone(),
                value: q.value.clone(),
            }
            .parse()
            .err()
            .unwrap_or_else(|| {
                confiance_core::Error::new(
                    ErrorCode::InvalidQuery,
                    format!("`{}` is not an identifier type", q.kind),
                )
            }),
        )
    })?;
    let profile = app
        .store
        .profile_of(&id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no profile holds this identifier (yet)"))?;
    let view = app.profile_view(profile).await?;
    app.audit_read(&caller, "profile.read", Some(profile), json!({"by": id.kind()}))
        .await?;
    Ok(Json(view))
}

/// Paging of a timeline.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TimelineQuery {
    /// Events after this log position.
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// A profile with its golden record and a page of its event timeline.
#[utoipa::path(
    get, path = "/api/v1/profiles/{id}", tag = "profiles", params(("id" = i64, Path, description = "Profile id"), TimelineQuery),
    responses((status = 200, description = "The profile and `timeline`; a merged profile says `merged_into`")),
    security(("bearer" = []))
)]
pub async fn profile(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    Query(q): Query<TimelineQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "`limit` is between 1 and 1000"));
    }
    let mut view = app.profile_view(id).await?;
    if view.get("merged_into").is_none() {
        let timeline = app
            .store
            .profile_events(Access::Administration, id, q.after.unwrap_or(0), limit)
            .await?;
        let next = (timeline.len() == limit)
            .then(|| timeline.last().map(|e| e.seq))
            .flatten();
        app.audit_read(&caller, "profile.read", Some(id), json!({"timeline": timeline.len()}))
            .await?;
        view["timeline"] = json!(timeline);
        view["next_after"] = json!(next);
    }
    Ok(Json(view))
}

/// Why a profile is what it is: every merge it took part in, with its evidence.
#[utoipa::path(
    get, path = "/api/v1/profiles/{id}/merges", tag = "profiles", params(("id" = i64, Path, description = "Profile id")),
    responses((status = 200, description = "`{merges: [{id, survivor, absorbed, via, message_id, evidence, undone_at…}]}`")),
    security(("bearer" = []))
)]
pub async fn merges(_: Staff, State(app): State<Shared>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let merges = app.store.merges_of(id).await?;
    Ok(Json(json!({ "merges": merges })))
}

/// Undoes a wrong merge: the profile is split along the links that remain, and the message
/// that linked them will not link them again, even when profiles are rebuilt from the log.
#[utoipa::path(
    post, path = "/api/v1/merges/{id}/undo", tag = "profiles", params(("id" = i64, Path, description = "Merge id")),
    responses(
        (status = 200, description = "`{profiles: [id…]}` after the split"),
        (status = 404, description = "No such merge", body = crate::openapi::ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn undo(_: Staff, State(app): State<Shared>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let merge = app
        .store
        .merge(id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no merge {id}")))?;
    if merge.undone_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("merge {id} is already undone"),
        ));
    }
    let profiles = app.store.undo_merge(merge, app.clock.now()).await?;
    tracing::info!(merge = id, profiles = profiles.len(), "merge undone");
    Ok(Json(json!({ "profiles": profiles })))
}

/// How far identity resolution has followed the event log.
#[utoipa::path(
    get, path = "/api/v1/unify/status", tag = "profiles",
    responses((status = 200, description = "`{cursor, head, lag}`")),
    security(("bearer" = []))
)]
pub async fn status(_: Staff, State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let (cursor, head) = app.store.unify_status().await?;
    Ok(Json(json!({"cursor": cursor, "head": head, "lag": head - cursor})))
}

/// Follows the event log and resolves identities until `stop` fires: wakes when ingestion
/// stores something, and every second in case another node did.
pub async fn run_resolver(app: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        match app
            .store
            .resolve_pending(app.catalog.clone(), app.guards.clone(), 500)
            .await
        {
            Ok(r) if r.events > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "identity resolution failed; retrying"),
        }
        tokio::select! {
            () = app.stored.notified() => {}
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}
