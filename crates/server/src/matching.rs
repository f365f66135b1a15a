//! Probabilistic matching over the profiles, and the review queue.
//!
//! # Design
//!
//! Deterministic resolution links what shares an identifier, as messages arrive. Records that
//! share none — a till customer known by name, postcode and birth date, a CRM import — are
//! matched as a batch job (as Splink does): every profile's golden name, birth date, address,
//! email and phone go through `confiance_core::unify::matching` (Fellegi–Sunter, m and u learnt
//! by EM). Pairs above the auto-merge threshold are merged with their per-field evidence; pairs
//! in the grey zone wait for a reviewer, whose decisions the next runs respect.

use crate::auth::Staff;
use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use confiance_core::ErrorCode;
use confiance_core::unify::matching::{MatchConfig, MatchRecord, ReviewDecisions, match_records};
use serde::Deserialize;
use serde_json::{Value, json};

/// The matching routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/unify/match", post(run))
        .route("/api/v1/merge-reviews", get(reviews))
        .route("/api/v1/merge-reviews/{id}/accept", post(accept))
        .route("/api/v1/merge-reviews/{id}/reject", post(reject))
}

fn text(golden: &Value, name: &str) -> Option<String> {
    golden.get(name).and_then(|g| g["value"].as_str()).map(str::to_owned)
}

impl AppState {
    /// The match record of a profile: its golden traits and first identifiers.
    async fn match_record(&self, profile: i64) -> Result<Option<MatchRecord>, ApiError> {
        let view = self.profile_view(profile).await?;
        if view.get("merged_into").is_some() {
            return Ok(None);
        }
        let traits = &view["traits"];
        let ids = view["identities"].as_array().cloned().unwrap_or_default();
        let id_of = |kind: &str| {
            ids.iter()
                .find(|i| i["type"] == kind)
                .and_then(|i| i["value"].as_str())
                .map(str::to_owned)
        };
        let address = traits.get("address").and_then(|a| a.get("value")).and_then(|a| {
            a.get("street")
                .or_else(|| a.get("line1"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        Ok(Some(MatchRecord {
            id: profile as u64,
            first_name: text(traits, "first_name"),
            last_name: text(traits, "last_name"),
            birth_date: text(traits, "birthday").and_then(|b| b.parse().ok()),
            postcode: text(traits, "postal_code"),
            city: text(traits, "city"),
            address,
            email: id_of("email").or_else(|| text(traits, "email")),
            phone: id_of("phone").or_else(|| text(traits, "phone")),
            user_id: id_of("user_id"),
        }))
    }
}

/// Matches every profile; merges what is above the threshold, queues the grey zone.
pub async fn run_matching(app: &AppState, config: MatchConfig) -> Result<Value, ApiError> {
    let mut records = Vec::new();
    for profile in app.store.profile_ids().await? {
        if let Some(r) = app.match_record(profile).await? {
            records.push(r);
        }
    }
    let mut decisions = ReviewDecisions::default();
    for r in app.store.reviews(None).await? {
        let pair = (r.a as u64, r.b as u64);
        match r.status.as_str() {
            "accepted" => decisions.accepted.push(pair),
            "rejected" => decisions.rejected.push(pair),
            _ => {}
        }
    }
    let count = records.len();
    let outcome = tokio::task::spawn_blocking(move || match_records(&records, &config, &decisions))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| ApiError::new(ErrorCode::InvalidField, e.to_string()))?;
    let now = app.clock.now();
    let mut merged = 0;
    for cluster in &outcome.clusters {
        let survivor = cluster[0] as i64;
        for &other in &cluster[1..] {
            let evidence = outcome
                .merges
                .iter()
                .find(|p| p.a == other || p.b == other)
                .map_or(Value::Null, |p| json!({"rule": "probabilistic", "probability": p.probability, "weight": p.weight, "fields": p.evidence}));
            if app
                .store
                .merge_profiles(survivor, other as i64, evidence, "matching", now)
                .await?
                .is_some()
            {
                merged += 1;
            }
        }
    }
    let mut queued = 0;
    for p in &outcome.review {
        let evidence =
            json!({"rule": "probabilistic", "probability": p.probability, "weight": p.weight, "fields": p.evidence});
        if app
            .store
            .queue_review(p.a as i64, p.b as i64, p.probability, evidence, now)
            .await?
        {
            queued += 1;
        }
    }
    Ok(json!({
        "profiles": count,
        "compared_pairs": outcome.report.compared_pairs,
        "merged": merged,
        "queued_for_review": queued,
        "refused": outcome.refused.len(),
        "skipped_blocks": outcome.report.blocking,
    }))
}

/// Runs probabilistic matching now.
#[utoipa::path(post, path = "/api/v1/unify/match", tag = "profiles",
    responses((status = 200, description = "`{profiles, compared_pairs, merged, queued_for_review, refused}`")), security(("bearer" = [])))]
pub async fn run(_: Staff, State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_matching(&app, MatchConfig::default()).await?))
}

/// Which reviews to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ReviewQuery {
    /// pending (default), accepted, rejected or all.
    pub status: Option<String>,
}

/// The review queue: pairs of profiles that may be one person, with their evidence.
#[utoipa::path(get, path = "/api/v1/merge-reviews", tag = "profiles", params(ReviewQuery),
    responses((status = 200, description = "`{reviews: […]}`, most probable first")), security(("bearer" = [])))]
pub async fn reviews(
    _: Staff,
    State(app): State<Shared>,
    Query(q): Query<ReviewQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        None => Some("pending"),
        Some("all") => None,
        Some(s @ ("pending" | "accepted" | "rejected")) => Some(s),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("unknown status `{other}`"),
            ));
        }
    };
    Ok(Json(json!({ "reviews": app.store.reviews(status).await? })))
}

async fn decide(app: &AppState, id: i64, accepted: bool) -> Result<Value, ApiError> {
    let review = app
        .store
        .reviews(Some("pending"))
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no pending review {id}")))?;
    let now = app.clock.now();
    if !app.store.decide_review(id, accepted, now).await? {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("review {id} was decided meanwhile"),
        ));
    }
    let merge = if accepted {
        let (survivor, absorbed) = (review.a.min(review.b), review.a.max(review.b));
        let mut evidence = review.evidence.clone();
        evidence["decided_by"] = json!("review");
        app.store
            .merge_profiles(survivor, absorbed, evidence, "review", now)
            .await?
    } else {
        None
    };
    Ok(json!({"review": id, "accepted": accepted, "merge": merge}))
}

/// Accepts a review: the two profiles are one person and are merged, with the evidence.
#[utoipa::path(post, path = "/api/v1/merge-reviews/{id}/accept", tag = "profiles", params(("id" = i64, Path, description = "Review id")),
    responses((status = 200, description = "`{review, accepted, merge}`")), security(("bearer" = [])))]
pub async fn accept(_: Staff, State(app): State<Shared>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    Ok(Json(decide(&app, id, true).await?))
}

/// Rejects a review: two people; later runs never put them together.
#[utoipa::path(post, path = "/api/v1/merge-reviews/{id}/reject", tag = "profiles", params(("id" = i64, Path, description = "Review id")),
    responses((status = 200, description = "`{review, accepted}`")), security(("bearer" = [])))]
pub async fn reject(_: Staff, State(app): State<Shared>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    Ok(Json(decide(&app, id, false).await?))
}
