//! Telling the recipients of a person's data that it was rectified, erased or restricted
//! (GDPR Art. 19), until they acknowledge it.
//!
//! Carrying out the request queues one notice per recipient (`confiance_store::notices`; an
//! erasure, by request or by the retention rules, queues them in its own transaction) and tries
//! each at once; a recipient that refuses or cannot be reached is tried again later, ever
//! less often ([`notice_retry_after`]), by the worker of [`run_notice_work`], on whichever node
//! claims it. Once the attempts are spent the notice is `failed`: staff see it on the request
//! and in `GET /api/v1/recipient-notices?status=failed`, and may queue it again. Every try is
//! audited, naming the recipient's host, never its URL (which may hold a token).

use crate::auth::Staff;
use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use confiance_core::ErrorCode;
use confiance_core::privacy::requests::{NOTICE_ATTEMPTS, Request, Right, notice_retry_after};
use confiance_core::secret::Secret;
use confiance_store::{NewRecipientNotice, NoticeEnd, NoticeStatus, RecipientNotice};
use jiff::SignedDuration;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a worker holds a notice it is sending before another may try it.
const LEASE: SignedDuration = SignedDuration::from_secs(120);
/// How long a recipient has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often the worker looks for notices due again.
const TICK: Duration = Duration::from_secs(15);
/// Notices tried per round.
const BATCH: usize = 50;

/// The routes of Art. 19 notices.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/recipient-notices", get(list))
        .route("/api/v1/requests/{id}/notices/retry", post(retry))
        .route("/api/v1/recipient-notices/{id}/retry", post(retry_one))
}

/// A destination that received a subject's data: a campaign's webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The (first) campaign that sent it.
    pub campaign: String,
    /// Where it went (a URL may hold a token: never printed).
    pub url: Secret<String>,
    /// The traits its campaigns may send: a rectification tells it of these only.
    pub traits: BTreeSet<String>,
}

/// The host a URL points at, the only part shown in notes, listings and the audit log.
fn host(url: &str) -> String {
    confiance_core::governance::records::host_of(url).unwrap_or_else(|| "?".into())
}

/// A notice as staff see it: where it went by host, how it went, never what it carried.
pub fn notice_json(n: &RecipientNotice) -> Value {
    json!({
        "id": n.id, "request_id": n.request_id, "profile_id": n.profile_id, "notice": n.notice,
        "campaign": n.campaign, "host": host(n.url.expose()), "status": n.status.as_str(), "attempts": n.attempts,
        "next_at": (n.status == NoticeStatus::Pending).then_some(n.next_at), "outcome": n.outcome,
        "created_at": n.created_at, "done_at": n.done_at,
    })
}

/// How a try went, for the request's note and the audit log.
struct Tried {
    notice: RecipientNotice,
    outcome: String,
    end: NoticeEnd,
}

impl Tried {
    fn json(&self) -> Value {
        let mut v = json!({"notice_id": self.notice.id, "campaign": self.notice.campaign,
                           "host": host(self.notice.url.expose()), "attempt": self.notice.attempts + 1,
                           "outcome": self.outcome});
        if let NoticeEnd::Retry(at) = self.end {
            v["retry_at"] = json!(at);
        }
        v
    }

    fn summary(&self) -> String {
        let host = host(self.notice.url.expose());
        match self.end {
            NoticeEnd::Retry(at) => format!("{host} ({}; tried again from {at})", self.outcome),
            _ => format!("{host} ({})", self.outcome),
        }
    }
}

impl AppState {
    /// Every destination that received the profile's data, from the send log: the webhooks of
    /// the campaigns that delivered to them.
    pub async fn recipients_of(&self, profile: Option<i64>) -> Result<Vec<Recipient>, ApiError> {
        let Some(p) = profile else { return Ok(Vec::new()) };
        let campaigns: BTreeSet<i64> = self
            .store
            .sends(None, Some(p), 100_000)
            .await?
            .iter()
            .filter(|s| s.record.channel == "webhook" && s.record.outcome == "sent")
            .map(|s| s.campaign_id)
            .collect();
        if campaigns.is_empty() {
            return Ok(Vec::new());
        }
        // One recipient per address, with every trait any of its campaigns may send.
        let mut by_url: BTreeMap<String, Recipient> = BTreeMap::new();
        for c in self
            .store
            .campaigns()
            .await?
            .into_iter()
            .filter(|c| campaigns.contains(&c.id))
        {
            let Ok(campaign) = serde_json::from_value::<confiance_core::activate::Campaign>(c.doc.clone()) else {
                tracing::warn!(
                    campaign = c.id,
                    "a stored campaign does not parse: its recipient is not told"
                );
                continue;
            };
            let Some(url) = campaign.webhook_url.clone() else {
                continue;
            };
            let recipient = by_url.entry(url.clone()).or_insert_with(|| Recipient {
                campaign: c.name.clone(),
                url: Secret::new(url),
                traits: Default::default(),
            });
            recipient.traits.extend(campaign.allowed_traits(&self.catalog));
        }
        Ok(by_url.into_values().collect())
    }

    /// The notices telling each recipient of the profile's data that it was rectified, erased
    /// or restricted — by `request`, or by the retention rules (an erasure without one). A
    /// rectification tells each recipient the corrected values of what it may have received,
    /// nothing more; an erasure or a restriction carries no data.
    pub fn notices_for(
        &self,
        recipients: &[Recipient],
        right: Right,
        request: Option<&Request>,
        profile: i64,
    ) -> Vec<NewRecipientNotice> {
        let now = self.clock.now();
        recipients
            .iter()
            .map(|recipient| {
                let mut payload = json!({
                    "notice": right.as_str(),
                    "article": "GDPR Art. 19",
                    "profile_id": profile,
                    "request_id": request.map(|r| r.id),
                    "at": now,
                });
                if request.is_none() {
                    payload["reason"] = json!("retention period ended");
                }
                if let (Right::Rectification, Some(r)) = (right, request) {
                    let corrected: serde_json::Map<String, Value> = r
                        .details
                        .get("traits")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                        .filter(|(name, _)| recipient.traits.contains(*name))
                        .map(|(name, value)| (name.clone(), value.clone()))
                        .collect();
                    payload["traits"] = Value::Object(corrected);
                }
                NewRecipientNotice {
                    request_id: request.map(|r| r.id),
                    profile_id: profile,
                    notice: right.as_str().to_owned(),
                    campaign: recipient.campaign.clone(),
                    url: recipient.url.clone(),
                    payload: Secret::new(payload.to_string()),
                    seal: right == Right::Rectification,
                }
            })
            .collect()
    }

    /// Queues the notices of a rectification or restriction the request carried out, tries
    /// each at once, and says how it went for the request's note.
    pub async fn tell_recipients(
        &self,
        recipients: &[Recipient],
        request: &Request,
        profile: i64,
        actor: &str,
    ) -> Result<String, ApiError> {
        let notices = self.notices_for(recipients, request.right, Some(request), profile);
        let queued = self.store.queue_recipient_notices(notices, self.clock.now()).await?;
        self.try_now(queued, actor).await
    }

    /// Tries at once the notices of a request that are due (an erasure queues its own with
    /// it), and says how it went for the request's note.
    pub async fn try_request_notices(&self, request: i64, actor: &str) -> Result<String, ApiError> {
        let now = self.clock.now();
        let due: Vec<RecipientNotice> = self
            .store
            .recipient_notices(Some(request), Some(NoticeStatus::Pending), 1_000)
            .await?
            .into_iter()
            .filter(|n| n.next_at <= now)
            .collect();
        self.try_now(due, actor).await
    }

    async fn try_now(&self, queued: Vec<RecipientNotice>, actor: &str) -> Result<String, ApiError> {
        let tried = self.try_notices(queued.clone(), actor).await?;
        // A notice another node's worker took first is being sent there.
        let list: Vec<String> = queued
            .iter()
            .map(|n| match tried.iter().find(|t| t.notice.id == n.id) {
                Some(t) => t.summary(),
                None => format!("{} (being sent by another worker)", host(n.url.expose())),
            })
            .collect();
        Ok(format!(
            "told {} recipient(s) (Art. 19): {}",
            queued.len(),
            list.join(", ")
        ))
    }

    /// Tries the notices due now (a round of the worker); how many were tried.
    pub async fn retry_due_notices(&self) -> Result<usize, ApiError> {
        let due = self.store.due_recipient_notices(self.clock.now(), BATCH).await?;
        Ok(self.try_notices(due, "system").await?.len())
    }

    /// Sends each notice this worker manages to claim and records how it went; each try is
    /// audited as soon as it is made.
    async fn try_notices(&self, notices: Vec<RecipientNotice>, actor: &str) -> Result<Vec<Tried>, ApiError> {
        if notices.is_empty() {
            return Ok(Vec::new());
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        let mut tried: Vec<Tried> = Vec::with_capacity(notices.len());
        for notice in notices {
            let now = self.clock.now();
            let lease = now + LEASE;
            if !self
                .store
                .claim_recipient_notice(notice.id, notice.next_at, now, lease)
                .await?
            {
                continue;
            }
            let attempt = u32::try_from(notice.attempts + 1).unwrap_or(NOTICE_ATTEMPTS);
            let (outcome, acknowledged) = match self.store.recipient_notice_payload(&notice).await {
                Ok(Some(payload)) => self.send_notice(&http, &notice, &payload).await,
                Ok(None) => (confiance_store::SUPERSEDED.to_owned(), false),
                Err(e) => {
                    tracing::warn!(notice = notice.id, error = %e, "an Art. 19 notice does not open");
                    ("not sent: the kept notice does not open".to_owned(), false)
                }
            };
            let end = match (acknowledged, notice_retry_after(attempt)) {
                (true, _) => NoticeEnd::Sent,
                (false, Some(wait)) => NoticeEnd::Retry(self.clock.now() + wait),
                (false, None) => NoticeEnd::Failed,
            };
            let recorded = self
                .store
                .end_recipient_notice(notice.id, lease, end.clone(), &outcome, self.clock.now())
                .await?;
            let t = Tried { notice, outcome, end };
            let mut details = json!({"request": t.notice.request_id, "notice": t.notice.notice,
                                     "recipients": [t.json()]});
            if !recorded {
                // Erased while it was being sent, or its lease ran out and another worker took
                // it over: what that one records stands, and this try is still on record.
                details["superseded"] = json!(true);
            }
            self.store
                .audit(vec![confiance_core::privacy::audit::AuditEvent::new(
                    actor,
                    "recipients.notified",
                    Some(format!("profile:{}", t.notice.profile_id)),
                    details,
                )])
                .await?;
            if recorded {
                tried.push(t);
            }
        }
        Ok(tried)
    }

    /// One POST of a notice, with its id added; the outcome and whether it was acknowledged.
    async fn send_notice(&self, http: &reqwest::Client, notice: &RecipientNotice, payload: &str) -> (String, bool) {
        let mut body: Value = match serde_json::from_str(payload) {
            Ok(v) => v,
            Err(_) => return ("not sent: the kept notice does not parse".to_owned(), false),
        };
        body["notice_id"] = json!(notice.id);
        match http.post(notice.url.expose()).json(&body).send().await {
            Ok(resp) if resp.status().is_success() => (format!("HTTP {}", resp.status().as_u16()), true),
            Ok(resp) => (format!("refused: HTTP {}", resp.status().as_u16()), false),
            Err(e) if e.is_timeout() => ("unreachable: timed out".to_owned(), false),
            Err(_) => ("unreachable".to_owned(), false),
        }
    }
}

/// Tries the notices due again, every few seconds, until stopped.
pub async fn run_notice_work(app: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        match app.retry_due_notices().await {
            Ok(n) if n >= BATCH && !*stop.borrow() => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e.into_error().message, "Art. 19 notices could not be retried; trying again")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Which notices to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// `pending`, `sent`, `failed` or `cancelled`; all when absent.
    pub status: Option<String>,
    /// One request's notices.
    pub request: Option<i64>,
}

/// Art. 19 notices, newest first: those still to send, those that failed for staff to tell the
/// recipient another way, or one request's.
#[utoipa::path(get, path = "/api/v1/recipient-notices", tag = "requests", params(ListQuery),
    responses((status = 200, description = "The notices, by host, without what they carry"),
              (status = 400, description = "Unknown status", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn list(_: Staff, State(app): State<Shared>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(NoticeStatus::parse(s).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("unknown status `{s}`: pending, sent, failed or cancelled"),
            )
        })?),
    };
    let notices = app.store.recipient_notices(q.request, status, 1_000).await?;
    Ok(Json(
        json!({"notices": notices.iter().map(notice_json).collect::<Vec<_>>()}),
    ))
}

/// Queues a request's failed notices again, with their attempts counted afresh, and tries them.
#[utoipa::path(post, path = "/api/v1/requests/{id}/notices/retry", tag = "requests", params(("id" = i64, Path, description = "Request id")),
    responses((status = 200, description = "How many were queued again, and the request's notices now"),
              (status = 404, description = "No such request", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn retry(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    crate::requests::load(&app, id).await?;
    let now = app.clock.now();
    let queued = app.store.retry_recipient_notices(id, now).await?;
    // Those just queued again; notices waiting for a later try keep their time.
    app.try_request_notices(id, &caller.actor()).await?;
    let notices = app.store.recipient_notices(Some(id), None, 1_000).await?;
    Ok(Json(
        json!({"queued": queued, "notices": notices.iter().map(notice_json).collect::<Vec<_>>()}),
    ))
}

/// Queues one failed notice again, with its attempts counted afresh, and tries it: the way to
/// retry the notices of an erasure by the retention rules, which no request holds.
#[utoipa::path(post, path = "/api/v1/recipient-notices/{id}/retry", tag = "requests", params(("id" = i64, Path, description = "Notice id")),
    responses((status = 200, description = "The notice, tried again"),
              (status = 404, description = "No failed notice with this id", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn retry_one(
    Staff(caller): Staff,
    State(app): State<Shared>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let now = app.clock.now();
    if !app.store.retry_recipient_notice(id, now).await? {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no failed notice {id}")));
    }
    if let Some(queued) = app.store.recipient_notice(id).await? {
        app.try_notices(vec![queued], &caller.actor()).await?;
    }
    let notice = app.store.recipient_notice(id).await?;
    Ok(Json(notice.as_ref().map(notice_json).unwrap_or(Value::Null)))
}
