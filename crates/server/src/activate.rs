//! Campaigns: the API, the scheduler that turns triggers into occurrences and sends their
//! steps through the guards, the channels, vouchers, happenings and one-click unsubscribe.
//!
//! # Design
//!
//! The scheduler is a loop any number of nodes may run ([`run_campaigns`], one [`tick`] at a
//! time). A tick first *enqueues*: each active campaign's trigger is scanned from its cursor
//! (an instant for date triggers, a feed position for events and segment entries) and every
//! person it selects becomes an occurrence under a unique key — a second node scanning the same
//! window inserts nothing. It then *sends*: due steps are claimed with a lease, decided by
//! `core::activate::guard` with the facts of that moment (consent, objection, restriction,
//! suppression, caps, quiet hours), delivered, and recorded with the next step in one
//! transaction. Every decision, sent or not, is a row of the sends log with its reason: the
//! campaign's figures and the person's timeline read it.
//!
//! Date triggers never scan everyone: the audience index keeps each date field by day of the
//! year, so the day's candidates are one bitmap.

use crate::auth::{Marketing, Viewer};
use crate::error::ApiError;
use crate::segments::{facts_of, resolver};
use crate::{AppState, Shared};
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use confiance_core::ErrorCode;
use confiance_core::activate::guard::{self, Decision, Facts, Reason, Rules};
use confiance_core::activate::suggest::{CoPurchase, Product, products_of};
use confiance_core::activate::template::{self, Context, Links, MessageTemplate, VoucherView};
use confiance_core::activate::trigger::{DateTrigger, due_in_index, zone_of};
use confiance_core::activate::{Campaign, Channel, StepCondition, Trigger};
use confiance_core::catalog::LegalBasis;
use confiance_core::consent::{Decision as ConsentDecision, Method, Status, Subject};
use confiance_core::segment::index::property_matches;
use confiance_core::unify::identifier::Identifier;
use confiance_store::{CampaignRow, NewOccurrence, Next, Occurrence, SendRecord, Unredeemable, Voucher};
use jiff::{SignedDuration, Timestamp};
use roaring::RoaringBitmap;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How far ahead date triggers are scanned: the widest time-zone offset plus a day.
const LOOKAHEAD_HOURS: i64 = 40;
/// Steps claimed per batch: few enough to be sent well within the lease even through a slow
/// relay.
const CLAIM: usize = 50;
/// How long a claimed step is reserved to its node.
const LEASE_SECS: i64 = 600;
/// How often the scheduler runs when idle.
const TICK: Duration = Duration::from_secs(1);

/// The campaigns routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/campaigns", post(create).get(list))
        .route("/api/v1/campaigns/{id}", get(show).put(update))
        .route("/api/v1/campaigns/{id}/preview", post(preview))
        .route("/api/v1/campaigns/{id}/sends", get(sends))
        .route("/api/v1/campaigns/{id}/mailing-list", get(mailing_list))
        .route("/api/v1/happenings", post(happening))
        .route("/api/v1/vouchers/redeem", post(redeem))
        .route("/api/v1/profiles/{id}/suggestions", get(suggestions))
        .route("/unsubscribe", get(unsubscribe_page).post(unsubscribe))
        .route("/c/{token}", get(click))
        .route("/o/{token}", get(open))
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the body is malformed: {e}")))
}

fn campaign_of(row: &CampaignRow) -> Result<Campaign, ApiError> {
    serde_json::from_value(row.doc.clone())
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("stored campaign: {e}")))
}

impl AppState {
    /// Checks a campaign and its templates against the catalog, and the segments it names.
    async fn check_campaign(&self, c: &Campaign) -> Result<(), ApiError> {
        c.check(&self.catalog)
            .map_err(|e| ApiError::new(ErrorCode::InvalidField, e.to_string()).with("field", json!(e.field)))?;
        let allowed = c.allowed_traits(&self.catalog);
        for (i, step) in c.steps.iter().enumerate() {
            let t: MessageTemplate = serde_json::from_value(step.template.clone()).map_err(|e| {
                ApiError::new(ErrorCode::InvalidField, format!("steps[{i}].template: {e}"))
                    .with("field", json!(format!("steps[{i}].template")))
            })?;
            template::check(&t, &allowed).map_err(|e| {
                ApiError::new(ErrorCode::InvalidField, format!("steps[{i}].template: {e}"))
                    .with("field", json!(format!("steps[{i}].template")))
            })?;
        }
        let saved = self.store.segments().await?;
        let named = [
            match &c.trigger {
                Trigger::EnteredSegment { segment } | Trigger::LeftSegment { segment } => {
                    Some(("trigger.segment", segment))
                }
                _ => None,
            },
            c.audience.as_ref().map(|a| ("audience", a)),
        ];
        for (field, name) in named.into_iter().flatten() {
            if !saved.iter().any(|s| &s.name == name) {
                return Err(
                    ApiError::new(ErrorCode::InvalidField, format!("no saved segment named {name:?}"))
                        .with("field", json!(field)),
                );
            }
        }
        Ok(())
    }

    async fn campaign_row(&self, id: i64) -> Result<CampaignRow, ApiError> {
        self.store
            .campaigns()
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no campaign {id}")))
    }

    /// Where a new campaign's trigger starts: now, or the current end of its feed, so that a
    /// new campaign does not message people for what happened before it existed.
    async fn starting_cursor(&self, c: &Campaign) -> Result<i64, ApiError> {
        Ok(match &c.trigger {
            Trigger::Date(_) => self.clock.now().as_microsecond(),
            Trigger::Event { .. } => self.store.unify_status().await?.0,
            Trigger::EnteredSegment { .. } | Trigger::LeftSegment { .. } => self
                .store
                .transitions(0, None, usize::MAX >> 1)
                .await?
                .last()
                .map_or(0, |t| t.seq),
            Trigger::Happening { .. } => 0,
        })
    }

    /// Figures of a campaign: eligible, each outcome and skip reason, vouchers redeemed,
    /// conversions.
    async fn campaign_view(&self, row: &CampaignRow) -> Result<Value, ApiError> {
        let outcomes = self.store.campaign_outcomes(row.id).await?;
        let mut by_outcome: BTreeMap<String, i64> = BTreeMap::new();
        let mut skipped: BTreeMap<String, i64> = BTreeMap::new();
        for (outcome, reason, n) in &outcomes {
            *by_outcome.entry(outcome.clone()).or_default() += n;
            if outcome == "skipped" {
                skipped.insert(reason.clone().unwrap_or_default(), *n);
            }
        }
        let sends = self.store.sends(Some(row.id), None, 1_000_000).await?;
        let mut recipients: BTreeMap<i64, Timestamp> = BTreeMap::new();
        for s in sends.iter().filter(|s| s.record.outcome == "sent") {
            recipients.entry(s.profile_id).or_insert(s.record.at);
        }
        let eligible = sends
            .iter()
            .filter(|s| s.occurrence_id > 0)
            .map(|s| s.occurrence_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let converted = {
            let index = self.audience.read();
            let order = index.event_id("Order Completed");
            recipients
                .iter()
                .filter(|(p, at)| {
                    let (Some(slot), Some(order)) = (index.slot(**p), order) else {
                        return false;
                    };
                    let from = at.as_second();
                    let until = from + 30 * 86_400;
                    index
                        .events_of(slot)
                        .iter()
                        .any(|e| e.name == order && e.at >= from && e.at <= until)
                })
                .count()
        };
        let mut redeemed = 0;
        for s in sends.iter().filter(|s| s.step == 0 && s.record.outcome == "sent") {
            if let Some(v) = self.store.voucher_of(s.occurrence_id).await?
                && v.redeemed_at.is_some()
            {
                redeemed += 1;
            }
        }
        let mut out = json!({
            "id": row.id,
            "name": row.name,
            "active": row.active,
            "figures": {
                "eligible": eligible,
                "scheduled": self.store.pending_occurrences(row.id).await?,
                "sent": by_outcome.get("sent").copied().unwrap_or(0),
                "failed": by_outcome.get("failed").copied().unwrap_or(0),
                "delayed": by_outcome.get("delayed").copied().unwrap_or(0),
                "unsubscribed": by_outcome.get("unsubscribed").copied().unwrap_or(0),
                "clicks": by_outcome.get("clicked").copied().unwrap_or(0),
                "opened": sends.iter().filter(|s| s.record.outcome == "opened").map(|s| s.profile_id).collect::<std::collections::BTreeSet<_>>().len(),
                "skipped": skipped,
                "recipients": recipients.len(),
                "vouchers_redeemed": redeemed,
                "converted_within_30_days": converted,
            },
        });
        out["campaign"] = row.doc.clone();
        Ok(out)
    }
}

/// Creates a campaign; its trigger starts from now.
#[utoipa::path(
    post, path = "/api/v1/campaigns", tag = "campaigns",
    responses((status = 201, description = "The campaign with its figures"), (status = 400, description = "Invalid campaign or template", body = crate::openapi::ErrorSchema)),
    security(("bearer" = []))
)]
pub async fn create(
    _: Marketing,
    State(app): State<Shared>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let c: Campaign = json_body(&body)?;
    let id = define(&app, &c).await?;
    let row = app.campaign_row(id).await?;
    Ok((StatusCode::CREATED, Json(app.campaign_view(&row).await?)))
}

/// Checks and saves a new campaign, its trigger starting from now.
pub async fn define(app: &Shared, c: &Campaign) -> Result<i64, ApiError> {
    app.check_campaign(c).await?;
    let doc = serde_json::to_value(c).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let id = app.store.put_campaign(None, c.name.trim(), doc, true).await?;
    let cursor = app.starting_cursor(c).await?;
    app.store.advance_campaign(id, 0, cursor).await?;
    if c.channel == Channel::Webhook {
        // A new recipient of personal data: the records of processing show it from now. The
        // campaign is saved whatever happens here; the daily job takes the version otherwise.
        if let Err(e) = crate::governance::record_versions(app).await {
            tracing::warn!(error = %e, "could not take a new version of the records of processing");
        }
    }
    Ok(id)
}

/// Changes a campaign (or pauses it with `"active": false`).
#[utoipa::path(
    put, path = "/api/v1/campaigns/{id}", tag = "campaigns",
    responses((status = 200, description = "The campaign")), security(("bearer" = []))
)]
pub async fn update(
    _: Marketing,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let row = app.campaign_row(id).await?;
    let mut doc: Value = json_body(&body)?;
    let active = doc
        .as_object_mut()
        .and_then(|d| d.remove("active"))
        .and_then(|a| a.as_bool())
        .unwrap_or(row.active);
    let c: Campaign = serde_json::from_value(doc).map_err(|e| ApiError::new(ErrorCode::InvalidJson, e.to_string()))?;
    app.check_campaign(&c).await?;
    let doc = serde_json::to_value(&c).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let was_webhook = row.doc.get("channel").and_then(Value::as_str) == Some(Channel::Webhook.as_str());
    app.store.put_campaign(Some(id), c.name.trim(), doc, active).await?;
    if (was_webhook || c.channel == Channel::Webhook)
        && let Err(e) = crate::governance::record_versions(&app).await
    {
        tracing::warn!(error = %e, "could not take a new version of the records of processing");
    }
    let row = app.campaign_row(id).await?;
    Ok(Json(app.campaign_view(&row).await?))
}

/// Every campaign with its figures.
#[utoipa::path(get, path = "/api/v1/campaigns", tag = "campaigns", responses((status = 200, description = "Campaigns")), security(("bearer" = [])))]
pub async fn list(_: Viewer, State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for row in app.store.campaigns().await? {
        out.push(app.campaign_view(&row).await?);
    }
    Ok(Json(json!({ "campaigns": out })))
}

/// One campaign with its figures: eligible, sent, skipped by reason, delayed, failed, vouchers
/// redeemed, conversions.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "campaigns", responses((status = 200, description = "The campaign")), security(("bearer" = [])))]
pub async fn show(_: Viewer, State(app): State<Shared>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let row = app.campaign_row(id).await?;
    Ok(Json(app.campaign_view(&row).await?))
}

/// Every decision of a campaign: sent, skipped, delayed or failed, with its reason.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/sends", tag = "campaigns", responses((status = 200, description = "The sends log")), security(("bearer" = [])))]
pub async fn sends(_: Marketing, State(app): State<Shared>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    app.campaign_row(id).await?;
    let rows = app.store.sends(Some(id), None, 100_000).await?;
    Ok(Json(json!({ "sends": rows })))
}

/// A profile to preview a campaign's step for.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PreviewInput {
    /// The profile.
    pub profile_id: i64,
    /// The step (0 by default).
    #[serde(default)]
    pub step: usize,
}

/// The message a profile would get, rendered with the traits the purpose may use.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/preview", tag = "campaigns", request_body = PreviewInput, responses((status = 200, description = "`subject`, `body`, `lang`")), security(("bearer" = [])))]
pub async fn preview(
    Marketing(caller): Marketing,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let input: PreviewInput = json_body(&body)?;
    let row = app.campaign_row(id).await?;
    let c = campaign_of(&row)?;
    let step = c
        .steps
        .get(input.step)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidField, "no such step").with("field", json!("step")))?;
    let Some((facts, keys)) = facts_of(&app, input.profile_id).await? else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no profile {}", input.profile_id),
        ));
    };
    app.audit_read(
        &caller,
        "campaign.previewed",
        Some(input.profile_id),
        json!({"campaign": id}),
    )
    .await?;
    let traits = allowed(&app, &c, &facts.traits);
    let voucher = c.voucher.map(|v| VoucherView {
        code: "APERCU-0000".into(),
        value: v.value,
        currency: "EUR".into(),
        expires_at: (app.clock.now() + SignedDuration::from_hours(24 * i64::from(v.valid_days)))
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date(),
    });
    let links = links_for(&app, &keys, id).await?;
    let suggested = if step.template.to_string().contains("suggestions") {
        app.suggestions_for(input.profile_id, 3).await?
    } else {
        Vec::new()
    };
    let rendered = render(&c, step, &traits, voucher, links, suggested)?;
    Ok(Json(json!(rendered)))
}

fn allowed(app: &AppState, c: &Campaign, traits: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let allowed = c.allowed_traits(&app.catalog);
    traits
        .iter()
        .filter(|(k, _)| allowed.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn render(
    c: &Campaign,
    step: &confiance_core::activate::Step,
    traits: &BTreeMap<String, Value>,
    voucher: Option<VoucherView>,
    links: Links,
    suggestions: Vec<Value>,
) -> Result<template::Rendered, ApiError> {
    let t: MessageTemplate = serde_json::from_value(step.template.clone())
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("stored template: {e}")))?;
    let lang = traits
        .get("language")
        .and_then(Value::as_str)
        .unwrap_or("fr")
        .to_owned();
    let ctx = Context {
        traits: traits.clone(),
        voucher,
        suggestions,
        links,
        campaign: c.name.clone(),
    };
    template::render(&t, &lang, &ctx).map_err(|e| ApiError::new(ErrorCode::InvalidField, e.to_string()))
}

/// The preference-centre and unsubscribe links of a person, signed for their email (else
/// their first identifier).
async fn links_for(app: &AppState, keys: &[String], campaign: i64) -> Result<Links, ApiError> {
    let subject = keys
        .iter()
        .filter_map(|k| Subject::from_key(k))
        .min_by_key(|s| s.kind().as_str() != "email")
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "a profile without identifiers"))?;
    let (preferences, _) = app.preference_url(&HeaderMap::new(), &subject).await?;
    let token = preferences.rsplit_once("token=").map_or("", |(_, t)| t);
    let base = app.base_url(&HeaderMap::new());
    Ok(Links {
        unsubscribe: format!("{base}/unsubscribe?token={token}&campaign={campaign}"),
        preferences,
    })
}

/// Runs the scheduler until `stop`.
pub async fn run_campaigns(app: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        match tick(&app).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e.into_error().message, "campaign scheduler failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One round: enqueue what the triggers selected, then decide and send what is due. Returns
/// how many steps were decided.
pub async fn tick(app: &Shared) -> Result<usize, ApiError> {
    let rows = app.store.campaigns().await?;
    let mut campaigns: HashMap<i64, Campaign> = HashMap::new();
    for row in &rows {
        let c = campaign_of(row)?;
        if row.active {
            enqueue(app, row, &c).await?;
        }
        campaigns.insert(row.id, c);
    }
    let now = app.clock.now();
    let due = app
        .store
        .claim_due(now, now + SignedDuration::from_secs(LEASE_SECS), CLAIM)
        .await?;
    let n = due.len();
    let started = std::time::Instant::now();
    for o in due {
        // Never send under a lease about to run out: another node could claim the step and
        // send it too. What is left is claimed again once the lease expires.
        if started.elapsed() > Duration::from_secs(LEASE_SECS as u64 / 2) {
            tracing::warn!("a batch of campaign steps took half its lease; the rest waits for the next claim");
            break;
        }
        let active = rows.iter().any(|r| r.id == o.campaign_id && r.active);
        let campaign = campaigns.get(&o.campaign_id).filter(|_| active);
        let occurrence = o.id;
        // One failing step does not hold up the others; its lease expires and it is tried again.
        if let Err(e) = process(app, o, campaign).await {
            tracing::warn!(occurrence, error = %e.into_error().message, "a campaign step failed; it will be retried");
        }
    }
    Ok(n)
}

/// Turns what a campaign's trigger selected since its cursor into occurrences.
async fn enqueue(app: &Shared, row: &CampaignRow, c: &Campaign) -> Result<(), ApiError> {
    let first_delay = SignedDuration::from_hours(i64::from(c.steps[0].delay_hours));
    let mut new = Vec::new();
    let cursor = match &c.trigger {
        Trigger::Date(d) => {
            let after = Timestamp::from_microsecond(row.cursor).unwrap_or(Timestamp::UNIX_EPOCH);
            let upto = app.clock.now() + SignedDuration::from_hours(LOOKAHEAD_HOURS);
            if upto <= after {
                return Ok(());
            }
            for (profile, key, due) in date_occurrences(app, d, c.audience.as_deref(), &c.purpose, after, upto).await? {
                new.push(NewOccurrence {
                    campaign_id: row.id,
                    profile_id: profile,
                    key,
                    due_at: due + first_delay,
                });
            }
            upto.as_microsecond()
        }
        Trigger::Event { event, filter } => {
            let (resolved, _) = app.store.unify_status().await?;
            if resolved <= row.cursor {
                return Ok(());
            }
            let page = app.store.events_page(row.cursor, 1_000).await?;
            let mut last = row.cursor;
            for e in page.iter().take_while(|e| e.seq <= resolved) {
                last = e.seq;
                if e.event.as_deref() != Some(event.as_str()) {
                    continue;
                }
                let props = e.body.get("properties").cloned().unwrap_or(Value::Null);
                let now = app.clock.now();
                if !filter
                    .iter()
                    .all(|c| property_matches(c, props.get(&c.field).unwrap_or(&Value::Null), now))
                {
                    continue;
                }
                let keys: Vec<String> = [
                    e.user_id.as_ref().map(|u| format!("user_id:{u}")),
                    e.anonymous_id.as_ref().map(|a| format!("anonymous_id:{a}")),
                ]
                .into_iter()
                .flatten()
                .collect();
                for profile in app.store.profiles_of_keys(keys).await?.into_iter().take(1) {
                    new.push(NewOccurrence {
                        campaign_id: row.id,
                        profile_id: profile,
                        key: format!("event:{}", e.seq),
                        due_at: e.timestamp.max(e.received_at.min(now)) + first_delay,
                    });
                }
            }
            last
        }
        Trigger::EnteredSegment { segment } | Trigger::LeftSegment { segment } => {
            let entering = matches!(c.trigger, Trigger::EnteredSegment { .. });
            let saved = app.store.segments().await?;
            let Some(seg) = saved.iter().find(|s| &s.name == segment) else {
                return Ok(());
            };
            let page = app.store.transitions(row.cursor, None, 1_000).await?;
            let Some(last) = page.last().map(|t| t.seq) else {
                return Ok(());
            };
            for t in page.iter().filter(|t| t.segment_id == seg.id && t.entered == entering) {
                new.push(NewOccurrence {
                    campaign_id: row.id,
                    profile_id: t.profile_id,
                    key: format!("{}:{}", if entering { "entered" } else { "left" }, t.seq),
                    due_at: t.at + first_delay,
                });
            }
            last
        }
        Trigger::Happening { .. } => return Ok(()),
    };
    let found = !new.is_empty();
    app.store.add_occurrences(new, app.clock.now()).await?;
    // A date scan that found nobody keeps its cursor (rescanning a wider window is a few
    // bitmap operations, a write is a commit) until the window is a week long. Another node
    // may have moved the cursor meanwhile: its occurrences are the same ones.
    let idle_date_scan = matches!(c.trigger, Trigger::Date(_)) && !found && cursor - row.cursor < 7 * 86_400_000_000;
    if !idle_date_scan {
        app.store.advance_campaign(row.id, row.cursor, cursor).await?;
    }
    Ok(())
}

/// The people whose yearly date falls due in `(after, upto]`, with the occurrence key (the
/// anniversary's year) and the instant, in each person's time zone.
async fn date_occurrences(
    app: &Shared,
    d: &DateTrigger,
    audience: Option<&str>,
    purpose: &str,
    after: Timestamp,
    upto: Timestamp,
) -> Result<Vec<(i64, String, Timestamp)>, ApiError> {
    let saved = app.store.segments().await?;
    let audience_query = audience.and_then(resolver(&saved));
    let index = app.audience.read();
    let members = match &audience_query {
        // Only the audience; consent is checked again when each message goes.
        Some(q) => Some(
            index
                .members(q, purpose, app.clock.now(), &resolver(&saved))
                .map_err(|e| ApiError::new(ErrorCode::InvalidSegment, e.to_string()))?,
        ),
        None => None,
    };
    Ok(due_in_index(&index, d, members.as_ref(), after, upto, &shop_zone())
        .into_iter()
        .map(|(profile, year, due)| (profile, year.to_string(), due))
        .collect())
}

/// Decides one claimed step and records it.
async fn process(app: &Shared, o: Occurrence, campaign: Option<&Campaign>) -> Result<(), ApiError> {
    let now = app.clock.now();
    let Some(c) = campaign else {
        let record = record("none", "skipped", Some(Reason::CampaignEnded), json!({}), now);
        app.store.finish_step(o, record, Next::Done).await?;
        return Ok(());
    };
    let channel = c.channel.as_str();
    let Some(step) = c.steps.get(o.step as usize) else {
        app.store
            .finish_step(
                o,
                record(channel, "skipped", Some(Reason::CampaignEnded), json!({}), now),
                Next::Done,
            )
            .await?;
        return Ok(());
    };
    let Some((facts, keys)) = facts_of(app, o.profile_id).await? else {
        // Merged into another profile or erased: nothing to send, nothing personal to keep.
        app.store
            .finish_step(
                o,
                record(
                    channel,
                    "skipped",
                    Some(Reason::NoAddress),
                    json!({"profile": "gone"}),
                    now,
                ),
                Next::Done,
            )
            .await?;
        return Ok(());
    };
    let subjects: Vec<Subject> = keys.iter().filter_map(|k| Subject::from_key(k)).collect();
    let view = app.store.consent_view(&subjects).await?;
    let purpose = app.catalog.purposes.get(&c.purpose);
    let state = view.effective(&subjects, &c.purpose);
    let status = state.map(|s| s.status);
    let mut lawful = facts.lawful.contains(&c.purpose);
    // Soft opt-in (CPCE L34-5): an existing customer who never refused, when the shop enables it.
    if !lawful
        && c.soft_opt_in
        && matches!(c.channel, Channel::Email | Channel::Sms)
        && purpose.is_some_and(|p| p.legal_basis == LegalBasis::Consent)
        && status.is_none()
        && facts.traits.get("orders").and_then(Value::as_f64).unwrap_or(0.0) >= 1.0
    {
        lawful = true;
    }
    let secret = app.secret().await?;
    let hashes = keys.iter().map(|k| app.suppression_hash(secret, k)).collect();
    let suppressed = app.store.suppressed(hashes).await?;
    let address = c
        .channel
        .address_trait()
        .map(|t| facts.traits.get(t).cloned().unwrap_or(Value::Null));
    let has_address = address.as_ref().is_none_or(|a| !a.is_null());
    let window = c.frequency_cap.map_or(0, |cap| cap.days);
    let recent = app
        .store
        .recent_sends(
            o.profile_id,
            channel,
            now - SignedDuration::from_hours(24 * i64::from(window.max(1))),
        )
        .await?;
    let default_tz = shop_zone();
    let tz = zone_of(facts.traits.get("timezone").and_then(Value::as_str), &default_tz);
    let mut decision = guard::decide(
        &Facts {
            now,
            ends_at: c.ends_at,
            lawful,
            objected: status == Some(Status::Objected),
            restricted: status == Some(Status::Restricted),
            suppressed,
            has_address,
            recent_sends: &recent,
            tz: &tz,
        },
        &Rules {
            cap: c.frequency_cap,
            quiet: c.quiet_hours,
        },
    );
    // The audience is checked again now, and a later step's condition.
    if decision == Decision::Send && !in_audience(app, c, o.profile_id).await? {
        decision = Decision::Skip {
            reason: Reason::NoLegalBasis,
        };
    }
    if decision == Decision::Send
        && let Some(condition) = step.only_if
        && !condition_holds(app, condition, &o, &facts).await?
    {
        app.store
            .finish_step(
                o,
                record(channel, "skipped", None, json!({"condition": condition}), now),
                Next::Done,
            )
            .await?;
        return Ok(());
    }
    match decision {
        Decision::Skip { reason } => {
            app.store
                .finish_step(o, record(channel, "skipped", Some(reason), json!({}), now), Next::Done)
                .await?;
        }
        Decision::Delay { until, reason } => {
            app.store
                .finish_step(
                    o,
                    record(channel, "delayed", Some(reason), json!({"until": until}), now),
                    Next::Retry(until),
                )
                .await?;
        }
        Decision::Send => send(app, o, c, step, &facts, &keys, address).await?,
    }
    Ok(())
}

/// The time zone of people who gave none: the shop's, in France.
fn shop_zone() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Europe/Paris").unwrap_or(jiff::tz::TimeZone::UTC)
}

/// `text` with every occurrence of `needle`, in any case, replaced by `by`.
fn without(text: &str, needle: &str, by: &str) -> String {
    let (lower, wanted) = (text.to_lowercase(), needle.to_lowercase());
    // Lowercasing may change a text's length outside ASCII: then only the exact spelling goes.
    if lower.len() != text.len() {
        return text.replace(needle, by);
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(at) = lower[from..].find(&wanted) {
        out.push_str(&text[from..from + at]);
        out.push_str(by);
        from += at + wanted.len();
    }
    out.push_str(&text[from..]);
    out
}

fn record(channel: &str, outcome: &str, reason: Option<Reason>, detail: Value, at: Timestamp) -> SendRecord {
    SendRecord {
        channel: channel.to_owned(),
        outcome: outcome.to_owned(),
        reason: reason.map(|r| r.as_str().to_owned()),
        detail,
        at,
    }
}

async fn in_audience(app: &Shared, c: &Campaign, profile: i64) -> Result<bool, ApiError> {
    let Some(name) = &c.audience else { return Ok(true) };
    let saved = app.store.segments().await?;
    let Some(q) = resolver(&saved)(name) else {
        return Ok(false);
    };
    let index = app.audience.read();
    let Some(slot) = index.slot(profile) else {
        return Ok(false);
    };
    let one: RoaringBitmap = std::iter::once(slot).collect();
    Ok(index
        .members_within(&q, &c.purpose, app.clock.now(), &resolver(&saved), &one)
        .is_ok_and(|m| m.contains(slot)))
}

async fn condition_holds(
    app: &Shared,
    condition: StepCondition,
    o: &Occurrence,
    facts: &confiance_core::segment::index::ProfileFacts,
) -> Result<bool, ApiError> {
    Ok(match condition {
        StepCondition::VoucherUnused => app
            .store
            .voucher_of(o.id)
            .await?
            .is_some_and(|v| v.redeemed_at.is_none()),
        StepCondition::NoOrderSince => !facts
            .events
            .iter()
            .any(|e| e.name == "Order Completed" && e.at >= o.created_at),
    })
}

/// An unguessable voucher code: 60 random bits in Crockford's base 32, grouped for reading.
fn voucher_code() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let bits: u64 = rand::random();
    let chars: String = (0..12)
        .map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char)
        .collect();
    format!("{}-{}-{}", &chars[..4], &chars[4..8], &chars[8..])
}

async fn send(
    app: &Shared,
    o: Occurrence,
    c: &Campaign,
    step: &confiance_core::activate::Step,
    facts: &confiance_core::segment::index::ProfileFacts,
    keys: &[String],
    address: Option<Value>,
) -> Result<(), ApiError> {
    let now = app.clock.now();
    let channel = c.channel.as_str();
    let voucher = match (o.step, c.voucher) {
        (0, Some(spec)) => Some(
            app.store
                .create_voucher(Voucher {
                    code: voucher_code(),
                    campaign_id: o.campaign_id,
                    profile_id: o.profile_id,
                    occurrence_id: o.id,
                    value: spec.value,
                    expires_at: now + SignedDuration::from_hours(24 * i64::from(spec.valid_days)),
                    redeemed_at: None,
                    order_id: None,
                })
                .await?,
        ),
        _ => app.store.voucher_of(o.id).await?,
    };
    let view = voucher.as_ref().map(|v| VoucherView {
        code: v.code.clone(),
        value: v.value,
        currency: "EUR".into(),
        expires_at: v.expires_at.to_zoned(jiff::tz::TimeZone::UTC).date(),
    });
    let links = links_for(app, keys, o.campaign_id).await?;
    let unsubscribe = links.unsubscribe.clone();
    let traits = allowed(app, c, &facts.traits);
    // Suggestions are computed only for templates that show them.
    let suggested = if step.template.to_string().contains("suggestions") {
        app.suggestions_for(o.profile_id, 3).await?
    } else {
        Vec::new()
    };
    let mut rendered = render(c, step, &traits, view, links, suggested)?;
    // Clicks and opens are measured only for people who agreed to audience measurement; the
    // others get the links as written and a text-only email.
    let measured = facts.lawful.contains(MEASUREMENT_PURPOSE);
    if measured && matches!(c.channel, Channel::Email | Channel::Sms) {
        rendered.body = tracked_links(app, &rendered.body, &o).await?;
    }
    let html = if measured && c.channel == Channel::Email {
        Some(html_with_pixel(app, &rendered.body, &o).await?)
    } else {
        None
    };
    let message_id = format!("<occurrence-{}-step-{}@confiance>", o.id, o.step);
    let delivered: Result<Value, (bool, String)> = match c.channel {
        Channel::Email => {
            let to = address.as_ref().and_then(Value::as_str).unwrap_or_default();
            match &app.options.mailer {
                Some(mailer) => mailer
                    .send_campaign(
                        to,
                        &rendered.subject,
                        rendered.body.clone(),
                        html,
                        &message_id,
                        &unsubscribe,
                    )
                    .await
                    .map(|()| json!({"message_id": message_id}))
                    .map_err(|e| (e.transient, e.message)),
                None => Err((false, "no SMTP server is configured (CONFIANCE_SMTP_URL)".into())),
            }
        }
        Channel::Sms => {
            let to = address.as_ref().and_then(Value::as_str).unwrap_or_default();
            match &app.options.sms {
                Some(sms) => sms
                    .send_classified(to, &rendered.body)
                    .await
                    .map(|()| json!({}))
                    .map_err(|e| (e.transient, e.message)),
                None => Err((false, "no SMS provider is configured".into())),
            }
        }
        // A card is printed from the mailing list: recording it is delivering it.
        Channel::Postal => Ok(json!({"mailing_list": true})),
        Channel::Webhook => {
            let url = c.webhook_url.clone().unwrap_or_default();
            let body = json!({"campaign": c.name, "profile_id": o.profile_id, "step": o.step,
                              "subject": rendered.subject, "body": rendered.body, "traits": traits});
            match reqwest::Client::new().post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => Ok(json!({"status": r.status().as_u16()})),
                Ok(r) => Err((
                    r.status().is_server_error() || r.status() == 429,
                    format!("HTTP {}", r.status()),
                )),
                Err(e) => Err((true, e.to_string())),
            }
        }
    };
    match delivered {
        Ok(detail) => {
            let next = match c.steps.get(o.step as usize + 1) {
                Some(s) => Next::Step(o.step + 1, now + SignedDuration::from_hours(i64::from(s.delay_hours))),
                None => Next::Done,
            };
            app.store
                .finish_step(o, record(channel, "sent", None, detail, now), next)
                .await?;
        }
        Err((transient, message)) => {
            let failures = app
                .store
                .sends(Some(o.campaign_id), Some(o.profile_id), 10_000)
                .await?
                .iter()
                .filter(|s| s.occurrence_id == o.id && s.record.outcome == "failed")
                .count() as u32;
            // A server's refusal often quotes the address it refused: the record leaves it out.
            let message = match address.as_ref().and_then(Value::as_str) {
                Some(to) if !to.is_empty() => without(&message, to, "[recipient]"),
                _ => message,
            };
            let detail = json!({"error": message, "attempt": failures + 1});
            // Throttled or unreachable: back off (1 min, 2, 4… up to about 17 hours), then give up.
            let next = if transient && failures < 10 {
                Next::Retry(now + SignedDuration::from_secs(60 << failures))
            } else {
                Next::Done
            };
            let r = SendRecord {
                reason: Some(if transient { "provider_unavailable" } else { "rejected" }.into()),
                ..record(channel, "failed", None, detail, now)
            };
            app.store.finish_step(o, r, next).await?;
        }
    }
    Ok(())
}

/// Something that happened outside the shop.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct HappeningInput {
    /// `tour`, `release`, …: matched against campaigns' happening triggers.
    pub kind: String,
    /// What it is about (the artist), matched against the campaign's list trait.
    pub about: String,
    /// Where (tour cities), for campaigns that only want people nearby.
    #[serde(default)]
    pub cities: Vec<String>,
    /// When (dates), for the record and the occurrence key.
    #[serde(default)]
    pub dates: Vec<String>,
    /// A name for it.
    #[serde(default)]
    pub name: Option<String>,
}

/// Announces a happening (a tour): every active campaign waiting for its kind takes in the
/// people whose list trait holds it (and who live in one of its cities, when asked).
#[utoipa::path(post, path = "/api/v1/happenings", tag = "campaigns", request_body = HappeningInput, responses((status = 200, description = "How many people entered each campaign")), security(("bearer" = [])))]
pub async fn happening(
    _: Marketing,
    State(app): State<Shared>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let h: HappeningInput = json_body(&body)?;
    if h.about.trim().is_empty() {
        return Err(ApiError::new(ErrorCode::MissingField, "`about` is required").with("field", json!("about")));
    }
    let key = format!(
        "happening:{}:{}:{}",
        h.kind,
        h.about.trim().to_lowercase(),
        h.name.clone().or_else(|| h.dates.first().cloned()).unwrap_or_default()
    );
    let now = app.clock.now();
    let mut entered = Vec::new();
    for row in app.store.campaigns().await?.into_iter().filter(|r| r.active) {
        let c = campaign_of(&row)?;
        let Trigger::Happening { kind, field, near } = &c.trigger else {
            continue;
        };
        if *kind != h.kind {
            continue;
        }
        let profiles: Vec<i64> = {
            let index = app.audience.read();
            let mut fans = index.with_value(field, &h.about);
            if *near {
                let mut nearby = RoaringBitmap::new();
                for city in &h.cities {
                    nearby |= index.with_value("city", city);
                }
                fans &= nearby;
            }
            fans.iter().map(|s| index.profile(s)).collect()
        };
        let delay = SignedDuration::from_hours(i64::from(c.steps[0].delay_hours));
        let new: Vec<NewOccurrence> = profiles
            .iter()
            .map(|p| NewOccurrence {
                campaign_id: row.id,
                profile_id: *p,
                key: key.clone(),
                due_at: now + delay,
            })
            .collect();
        let n = app.store.add_occurrences(new, now).await?;
        entered.push(json!({"campaign": row.id, "name": row.name, "matched": profiles.len(), "entered": n}));
    }
    Ok(Json(json!({"happening": key, "campaigns": entered})))
}

/// A voucher used at checkout.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RedeemInput {
    /// The code.
    pub code: String,
    /// The order it is used for.
    #[serde(default)]
    pub order_id: Option<String>,
}

/// Uses a voucher once; the redemption is attributed to its campaign.
#[utoipa::path(post, path = "/api/v1/vouchers/redeem", tag = "campaigns", request_body = RedeemInput,
    responses((status = 200, description = "The voucher, redeemed"), (status = 400, description = "Unknown, expired or already used (`reason`)", body = crate::openapi::ErrorSchema)),
    security(("bearer" = [])))]
pub async fn redeem(_: Marketing, State(app): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let input: RedeemInput = json_body(&body)?;
    let code = input.code.trim().to_uppercase();
    match app.store.redeem(&code, input.order_id, app.clock.now()).await? {
        Ok(v) => Ok(Json(json!(v))),
        Err(why) => {
            let message = match why {
                Unredeemable::Unknown => "no voucher has this code",
                Unredeemable::Expired => "the voucher has expired",
                Unredeemable::Used => "the voucher was already used",
            };
            let code = if why == Unredeemable::Unknown {
                ErrorCode::NotFound
            } else {
                ErrorCode::InvalidField
            };
            Err(ApiError::new(code, message).with("reason", json!(why)))
        }
    }
}

/// The print-ready mailing list of a postal campaign: one row per card sent, with the address
/// as the golden record holds it now.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/mailing-list", tag = "campaigns",
    params(("format" = Option<String>, Query, description = "csv (default) or labels (printable HTML)")),
    responses((status = 200, description = "CSV or printable labels")), security(("bearer" = [])))]
pub async fn mailing_list(
    Marketing(caller): Marketing,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    QueryParams(q): QueryParams<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let row = app.campaign_row(id).await?;
    let c = campaign_of(&row)?;
    if c.channel != Channel::Postal {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "only postal campaigns have a mailing list",
        ));
    }
    app.audit_read(&caller, "campaign.mailing_list", None, json!({"campaign": id}))
        .await?;
    let mut cards = Vec::new();
    for s in app.store.sends(Some(id), None, 1_000_000).await? {
        if s.record.outcome != "sent" {
            continue;
        }
        let Some((facts, _)) = facts_of(&app, s.profile_id).await? else {
            continue;
        };
        let t = |k: &str| {
            facts
                .traits
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let address = facts.traits.get("address").cloned().unwrap_or(Value::Null);
        let line = |k: &str| address.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        cards.push([
            format!("{} {}", t("first_name"), t("last_name")).trim().to_owned(),
            line("street"),
            if line("postalCode").is_empty() {
                t("postal_code")
            } else {
                line("postalCode")
            },
            if line("city").is_empty() {
                t("city")
            } else {
                line("city")
            },
            if line("country").is_empty() {
                t("country")
            } else {
                line("country")
            },
        ]);
    }
    if q.get("format").map(String::as_str) == Some("labels") {
        let mut html = String::from(
            "<!doctype html><meta charset=utf-8><title>Étiquettes</title><style>@page{size:A4;margin:10mm}\
             body{font:11pt sans-serif;display:grid;grid-template-columns:repeat(3,1fr);gap:4mm}\
             .l{border:1px dashed #bbb;padding:4mm;height:30mm;break-inside:avoid}</style>",
        );
        for card in &cards {
            html.push_str(&format!(
                "<div class=l>{}<br>{}<br>{} {}<br>{}</div>",
                escape(&card[0]),
                escape(&card[1]),
                escape(&card[2]),
                escape(&card[3]),
                escape(&card[4])
            ));
        }
        return Ok(Html(html).into_response());
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_error = |e: csv::Error| ApiError::new(ErrorCode::Internal, e.to_string());
    w.write_record(["name", "street", "postal_code", "city", "country"])
        .map_err(csv_error)?;
    for card in &cards {
        w.write_record(card).map_err(csv_error)?;
    }
    let body = w
        .into_inner()
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The link in a message.
#[derive(Debug, Deserialize)]
pub struct UnsubscribeQuery {
    token: Option<String>,
    campaign: Option<i64>,
}

/// The page an unsubscribe link opens: one button.
pub async fn unsubscribe_page(QueryParams(q): QueryParams<UnsubscribeQuery>) -> Html<String> {
    let action = format!(
        "/unsubscribe?token={}&campaign={}",
        escape(q.token.as_deref().unwrap_or_default()),
        q.campaign.unwrap_or_default()
    );
    Html(format!(
        "<!doctype html><html lang=fr><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>Se désinscrire</title><main><h1>Ne plus recevoir ces messages</h1>\
         <form method=post action=\"{action}\"><button name=List-Unsubscribe value=One-Click>Me désinscrire</button></form>\
         </main></html>"
    ))
}

/// One-click unsubscribe (RFC 8058): the POST a mail client sends, or the page's button.
/// Withdraws consent to the campaign's purpose (an objection, for a legitimate interest).
pub async fn unsubscribe(
    State(app): State<Shared>,
    QueryParams(q): QueryParams<UnsubscribeQuery>,
) -> Result<Html<String>, ApiError> {
    let key = confiance_core::consent::link::LinkKey::derive(app.secret().await?);
    let now = app.clock.now();
    let subject = q
        .token
        .as_deref()
        .and_then(|t| key.verify(t, now).ok())
        .ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "this link is invalid or has expired"))?;
    let row = app.campaign_row(q.campaign.unwrap_or_default()).await?;
    let c = campaign_of(&row)?;
    let purpose = app
        .catalog
        .purposes
        .get(&c.purpose)
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the campaign's purpose left the catalog"))?;
    let status = match purpose.legal_basis {
        LegalBasis::Consent => Status::Withdrawn,
        _ => Status::Objected,
    };
    let subject_key = subject.key();
    app.record_consents(vec![ConsentDecision {
        subject,
        purpose: purpose.id.clone(),
        status,
        method: Method::PreferenceCentre,
        recorded_at: now,
        notice: None,
        source_id: None,
        touchpoint: None,
        ip_hash: None,
        ua_hash: None,
        proof: json!({"campaign": row.id, "one_click": true}),
    }])
    .await?;
    if let Some(profile) = app.profile_ref(Identifier::from_key(&subject_key)).await {
        let r = record(
            c.channel.as_str(),
            "unsubscribed",
            None,
            json!({"status": status.as_str()}),
            now,
        );
        app.store.log_campaign_event(row.id, profile, r).await?;
    }
    Ok(Html(format!(
        "<!doctype html><html lang=fr><meta charset=utf-8><title>Désinscription</title><main><h1>C'est fait</h1>\
         <p>Vous ne recevrez plus de messages « {} ».</p></main></html>",
        escape(&purpose.name)
    )))
}

/// The co-purchase model behind suggestions, learnt from every `Order Completed` of the log and
/// kept for ten minutes: purchase patterns move slowly, and reading the log is not free.
#[derive(Default)]
pub struct SuggestionModel {
    cached: tokio::sync::Mutex<Option<(std::time::Instant, std::sync::Arc<CoPurchase>)>>,
}

const MODEL_TTL: Duration = Duration::from_secs(600);

impl AppState {
    async fn co_purchase(&self) -> Result<std::sync::Arc<CoPurchase>, ApiError> {
        let mut cached = self.suggestion_model.cached.lock().await;
        if let Some((at, model)) = cached.as_ref()
            && at.elapsed() < MODEL_TTL
        {
            return Ok(model.clone());
        }
        let mut owner: HashMap<String, i64> = HashMap::new();
        for (profile, keys) in self.store.profiles_snapshot().await? {
            for k in keys {
                owner.insert(k, profile);
            }
        }
        let mut orders: Vec<(i64, Vec<Product>)> = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.events_page(after, 5_000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in page.iter().filter(|e| e.event.as_deref() == Some("Order Completed")) {
                let profile = e
                    .user_id
                    .as_ref()
                    .and_then(|u| owner.get(&format!("user_id:{u}")))
                    .or_else(|| {
                        e.anonymous_id
                            .as_ref()
                            .and_then(|a| owner.get(&format!("anonymous_id:{a}")))
                    });
                if let Some(p) = profile {
                    orders.push((*p, products_of(e.body.get("properties").unwrap_or(&Value::Null))));
                }
            }
        }
        let model = std::sync::Arc::new(CoPurchase::build(orders));
        *cached = Some((std::time::Instant::now(), model.clone()));
        Ok(model)
    }

    /// Products to suggest to a profile after its purchases, best first.
    pub(crate) async fn suggestions_for(&self, profile: i64, k: usize) -> Result<Vec<Value>, ApiError> {
        let events = self
            .store
            .profile_events(confiance_store::Access::Administration, profile, 0, 20_000)
            .await?;
        let bought: Vec<String> = events
            .iter()
            .filter(|e| e.event.as_deref() == Some("Order Completed"))
            .flat_map(|e| products_of(e.body.get("properties").unwrap_or(&Value::Null)))
            .map(|p| p.product_id)
            .collect();
        if bought.is_empty() {
            return Ok(Vec::new());
        }
        let model = self.co_purchase().await?;
        Ok(model
            .suggest(&bought, k)
            .into_iter()
            .filter_map(|s| serde_json::to_value(s).ok())
            .collect())
    }
}

/// Products to suggest to a person after their purchases ("people who bought this also
/// bought"), never what they already have.
#[utoipa::path(get, path = "/api/v1/profiles/{id}/suggestions", tag = "campaigns",
    params(("k" = Option<usize>, Query, description = "How many (5 by default, at most 50)")),
    responses((status = 200, description = "`suggestions`, best first, each with its `score` and the purchase it comes `because` of")),
    security(("bearer" = [])))]
pub async fn suggestions(
    Marketing(caller): Marketing,
    State(app): State<Shared>,
    Path(id): Path<i64>,
    QueryParams(q): QueryParams<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let k = match q.get("k") {
        Some(k) => k
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=50).contains(k))
            .ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidQuery, "`k` is a whole number from 1 to 50")
                    .with("parameter", json!("k"))
            })?,
        None => 5,
    };
    if facts_of(&app, id).await?.is_none() {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no profile {id}")));
    }
    app.audit_read(&caller, "profile.suggestions", Some(id), json!({}))
        .await?;
    Ok(Json(
        json!({"profile": id, "suggestions": app.suggestions_for(id, k).await?}),
    ))
}

/// The purpose clicks and opens are measured for: audience measurement, so only people who
/// agreed to it are counted; everyone else's links go straight to the shop.
const MEASUREMENT_PURPOSE: &str = "analytics";

/// The HTML alternative of a text email: the same text, links clickable, and a one-pixel image
/// whose loading counts the open.
async fn html_with_pixel(app: &AppState, text: &str, o: &Occurrence) -> Result<String, ApiError> {
    let payload = format!("{}.{}.{}.open", o.campaign_id, o.profile_id, o.id);
    let mac = confiance_core::consent::link::keyed_hash(app.secret().await?, "campaign open", &payload);
    let token = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload);
    let base = app.base_url(&HeaderMap::new());
    let mut html = String::from("<!doctype html><html><body><p>");
    for word in escape(text).split_inclusive(char::is_whitespace) {
        let bare = word.trim_end();
        if bare.starts_with("http://") || bare.starts_with("https://") {
            html.push_str(&format!("<a href=\"{bare}\">{bare}</a>{}", &word[bare.len()..]));
        } else {
            html.push_str(word);
        }
    }
    let html = html.replace('\n', "<br>\n");
    Ok(format!(
        "{html}</p><img src=\"{base}/o/{token}.{}\" width=\"1\" height=\"1\" alt=\"\"></body></html>",
        &mac[..32]
    ))
}

/// The one-pixel image of an HTML email: counts the open (see [`html_with_pixel`]).
pub async fn open(State(app): State<Shared>, Path(token): Path<String>) -> Result<Response, ApiError> {
    let payload = verified(&app, &token, "campaign open").await?;
    let mut parts = payload.splitn(4, '.');
    let (Some(campaign), Some(profile)) = (parts.next(), parts.next()) else {
        return Err(ApiError::new(ErrorCode::NotFound, "this image is not one of ours"));
    };
    if let (Ok(campaign), Ok(profile)) = (campaign.parse::<i64>(), profile.parse::<i64>()) {
        let r = record("email", "opened", None, json!({}), app.clock.now());
        app.store.log_campaign_event(campaign, profile, r).await?;
    }
    // The smallest transparent GIF.
    const PIXEL: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    Ok((
        [(header::CONTENT_TYPE, "image/gif"), (header::CACHE_CONTROL, "no-store")],
        PIXEL,
    )
        .into_response())
}

/// The payload of a signed token `base64(payload).mac`, if the mac is ours for `label`.
async fn verified(app: &AppState, token: &str, label: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::new(ErrorCode::NotFound, "this link is not one of ours");
    let (encoded, mac) = token.rsplit_once('.').ok_or_else(invalid)?;
    let payload = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    let expected = confiance_core::consent::link::keyed_hash(app.secret().await?, label, &payload);
    if bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes().get(..32).unwrap_or_default(),
        mac.as_bytes(),
    )) {
        Ok(payload)
    } else {
        Err(invalid())
    }
}

/// The shop's links in a message, each turned into a signed redirect that counts the click.
/// The preference-centre and unsubscribe links are left alone.
async fn tracked_links(app: &AppState, body: &str, o: &Occurrence) -> Result<String, ApiError> {
    let secret = app.secret().await?;
    let base = app.base_url(&HeaderMap::new());
    let own = [format!("{base}/preferences"), format!("{base}/unsubscribe")];
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(start) = rest.find("http://").into_iter().chain(rest.find("https://")).min() {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find(|c: char| c.is_whitespace() || c == '>' || c == '"')
            .map_or(rest.len(), |e| start + e);
        let url = rest[start..end].trim_end_matches(['.', ',', ';', ')']);
        let end = start + url.len();
        if own.iter().any(|p| url.starts_with(p.as_str())) {
            out.push_str(url);
        } else {
            let payload = format!("{}.{}.{}.{url}", o.campaign_id, o.profile_id, o.id);
            let mac = confiance_core::consent::link::keyed_hash(secret, "campaign click", &payload);
            let token = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload);
            out.push_str(&format!("{base}/c/{token}.{}", &mac[..32]));
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A tracked link: counts the click in the campaign's log, then goes where the link pointed.
pub async fn click(State(app): State<Shared>, Path(token): Path<String>) -> Result<Response, ApiError> {
    let invalid = || ApiError::new(ErrorCode::NotFound, "this link is not one of ours");
    let payload = verified(&app, &token, "campaign click").await?;
    let mut parts = payload.splitn(4, '.');
    let (Some(campaign), Some(profile), Some(_), Some(url)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let (Ok(campaign), Ok(profile)) = (campaign.parse::<i64>(), profile.parse::<i64>()) else {
        return Err(invalid());
    };
    // The link itself is the shop's: keep where it led, without its query string.
    let target = url.split(['?', '#']).next().unwrap_or(url);
    let r = record("link", "clicked", None, json!({"url": target}), app.clock.now());
    app.store.log_campaign_event(campaign, profile, r).await?;
    Ok((StatusCode::FOUND, [(header::LOCATION, url.to_owned())]).into_response())
}
