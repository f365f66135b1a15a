//! The KPIs and journey map API: figures as JSON, and as SVG charts.
//!
//! `GET /api/v1/kpis` (conversion, repurchase, basket, questionnaire response by phase and
//! touchpoint, a time series, consent rates by touchpoint), `GET /api/v1/kpis/chart.svg` (one
//! of those drawn) and `GET /api/v1/journey` (per phase and touchpoint: volumes, response,
//! conversion). All take the same filters: `from` and `to` (a date, both days included, or an
//! instant, `to` excluded), `source`, `channel`, `segment` (a saved segment's id: its members
//! now) and `bucket` (`day`, `week`, `month`: the series' periods).
//!
//! # Design
//!
//! The handlers parse the query into a [`kpi::Filter`], call the core's pure functions
//! (`confiance_core::segment::kpi`, where every figure is defined) and shape the result. The
//! count walks every event of the candidate profiles, so it runs on a blocking thread: a
//! request over a large index must not stall the async workers serving collection.
//!
//! Figures are counts and rates, never people: any token may read them. Charts are drawn by
//! plotters into SVG with no font or bitmap support compiled in; text stays `<text>`, laid out
//! by the browser.

use crate::auth::Viewer;
use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use confiance_core::ErrorCode;
use confiance_core::catalog::Phase;
use confiance_core::segment::kpi::{self, Bucket, ConsentRow, Filter, Journey, Kpis, TouchpointConsent};
use jiff::Timestamp;
use plotters::coord::Shift;
use plotters::prelude::*;
use roaring::RoaringBitmap;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// The KPIs routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/kpis", get(kpis))
        .route("/api/v1/kpis/chart.svg", get(chart))
        .route("/api/v1/journey", get(journey))
}

/// The parameters of each route.
const KPIS: &[&str] = &["from", "to", "source", "channel", "segment", "bucket"];
const CHART: &[&str] = &["from", "to", "source", "channel", "segment", "bucket", "chart"];
const JOURNEY: &[&str] = &["from", "to", "source", "channel", "segment"];

fn bad(parameter: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, message).with("parameter", json!(parameter))
}

/// The filters of a request, parsed.
struct Asked {
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    source: Option<String>,
    channel: Option<String>,
    segment: Option<Segment>,
    bucket: Bucket,
    chart: Chart,
}

struct Segment {
    id: i64,
    name: String,
    purpose: String,
    members: RoaringBitmap,
}

#[derive(Clone, Copy)]
enum Chart {
    Conversion,
    Response,
    Consent,
}

/// A day (`2026-03-01`, midnight UTC; `next` gives the day after, to include the whole day in
/// an excluded end) or an instant.
fn instant(parameter: &str, value: &str, next: bool) -> Result<Timestamp, ApiError> {
    if let Ok(t) = value.parse::<Timestamp>() {
        return Ok(t);
    }
    let error = || {
        bad(
            parameter,
            format!("`{parameter}` is a date (2026-03-01) or an instant (2026-03-01T09:30:00Z)"),
        )
    };
    let date: jiff::civil::Date = value.parse().map_err(|_| error())?;
    let date = if next {
        date.tomorrow().map_err(|_| error())?
    } else {
        date
    };
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|_| error())
}

impl AppState {
    /// Parses the query string, which may only hold the `known` parameters.
    async fn asked(&self, q: &HashMap<String, String>, known: &[&str]) -> Result<Asked, ApiError> {
        if let Some(unknown) = q.keys().filter(|k| !known.contains(&k.as_str())).min() {
            return Err(bad(
                unknown,
                format!("unknown parameter `{unknown}`: expected {}", known.join(", ")),
            ));
        }
        let given = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let from = given("from").map(|v| instant("from", v, false)).transpose()?;
        let to = given("to").map(|v| instant("to", v, true)).transpose()?;
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err(bad("to", "`to` is before `from`: the period is empty"));
        }
        let source = match given("source") {
            Some(name) => {
                let mut names: Vec<String> = self
                    .store
                    .list_sources()
                    .await?
                    .into_iter()
                    .map(|s| s.name.to_string())
                    .chain(self.catalog.sources.keys().cloned())
                    .collect();
                names.sort();
                names.dedup();
                if !names.iter().any(|n| n == name) {
                    return Err(bad(
                        "source",
                        format!("unknown source `{name}`: expected one of {}", names.join(", ")),
                    ));
                }
                Some(name.to_owned())
            }
            None => None,
        };
        let channel = match given("channel") {
            Some(c) => {
                let mut channels: Vec<&str> = self.catalog.touchpoints.values().map(|t| t.channel.as_str()).collect();
                channels.sort();
                channels.dedup();
                if !channels.contains(&c) {
                    return Err(bad(
                        "channel",
                        format!(
                            "no touchpoint has the channel `{c}`: expected one of {}",
                            channels.join(", ")
                        ),
                    ));
                }
                Some(c.to_owned())
            }
            None => None,
        };
        let segment = match given("segment") {
            Some(id) => Some(self.segment_members(id).await?),
            None => None,
        };
        let bucket = match given("bucket") {
            Some(b) => Bucket::parse(b).ok_or_else(|| bad("bucket", "`bucket` is day, week or month"))?,
            None => Bucket::Month,
        };
        let chart = match given("chart") {
            None | Some("conversion") => Chart::Conversion,
            Some("response") => Chart::Response,
            Some("consent") => Chart::Consent,
            Some(_) => return Err(bad("chart", "`chart` is conversion, response or consent")),
        };
        Ok(Asked {
            from,
            to,
            source,
            channel,
            segment,
            bucket,
            chart,
        })
    }

    /// A saved segment and its members now (those with a legal basis for its purpose).
    async fn segment_members(&self, id: &str) -> Result<Segment, ApiError> {
        let id: i64 = id
            .parse()
            .map_err(|_| bad("segment", "`segment` is the id of a saved segment"))?;
        let saved = self.store.segments().await?;
        let row = saved
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| bad("segment", format!("no segment {id}")))?;
        let purpose = crate::segments::purpose_of(row).to_owned();
        let query = serde_json::from_value(row.doc["query"].clone())
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("segment {id} is stored unreadable: {e}")))?;
        let members = self.members(&query, &purpose, &saved)?;
        Ok(Segment {
            id,
            name: row.name.clone(),
            purpose,
            members,
        })
    }
}

impl Asked {
    fn filter(&self) -> Filter<'_> {
        Filter {
            from: self.from,
            to: self.to,
            source: self.source.as_deref(),
            channel: self.channel.as_deref(),
            members: self.segment.as_ref().map(|s| &s.members),
        }
    }

    /// The filters, echoed in every answer.
    fn view(&self) -> Value {
        json!({
            "from": self.from,
            "to": self.to,
            "source": self.source,
            "channel": self.channel,
            "segment": self.segment.as_ref().map(|s| json!({
                "id": s.id, "name": s.name, "purpose": s.purpose, "members": s.members.len(),
            })),
            "bucket": self.bucket,
        })
    }
}

/// Runs a count over the index on a blocking thread.
async fn counted<T: Send + 'static>(
    app: &Shared,
    asked: Asked,
    count: impl FnOnce(&AppState, &Asked) -> T + Send + 'static,
) -> Result<(T, Asked), ApiError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || (count(&app, &asked), asked))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("the count failed: {e}")))
}

fn kpis_of(app: &AppState, asked: &Asked) -> Result<Kpis, ApiError> {
    let index = app.audience.read();
    kpi::kpis(&index, &app.catalog, &asked.filter(), asked.bucket).map_err(|e| bad("bucket", e.to_string()))
}

/// Consent rates by touchpoint from the ledger's current decisions.
async fn consent(app: &AppState, asked: &Asked) -> Result<Vec<TouchpointConsent>, ApiError> {
    let counts = app.store.consent_counts().await?;
    let sources: BTreeMap<i64, String> = app
        .store
        .list_sources()
        .await?
        .into_iter()
        .map(|s| (s.id, s.name.to_string()))
        .collect();
    let rows: Vec<ConsentRow<'_>> = counts
        .iter()
        .map(|c| ConsentRow {
            purpose: &c.purpose,
            status: c.status,
            source: c.source_id.and_then(|id| sources.get(&id)).map(String::as_str),
            touchpoint: c.touchpoint.as_deref(),
            count: c.count.max(0) as u64,
        })
        .collect();
    Ok(kpi::consent_by_touchpoint(&app.catalog, &rows, &asked.filter()))
}

/// KPIs of a period: conversion, repurchase, average basket, questionnaire response by phase
/// and touchpoint, a time series, and consent rates by touchpoint.
#[utoipa::path(
    get, path = "/api/v1/kpis", tag = "kpis",
    params(
        ("from" = Option<String>, Query, description = "Start: a date (included) or an instant (included)"),
        ("to" = Option<String>, Query, description = "End: a date (included) or an instant (excluded)"),
        ("source" = Option<String>, Query, description = "Only events sent by this source, and consent decisions taken through it"),
        ("channel" = Option<String>, Query, description = "Only events and consent decisions at touchpoints of this channel"),
        ("segment" = Option<i64>, Query, description = "Only the members (now) of this saved segment"),
        ("bucket" = Option<String>, Query, description = "Periods of the series: day, week or month (default)"),
    ),
    responses(
        (status = 200, description = "`filters`; `visitors`, `converted`, `conversion_rate`, `customers`, `repeat_customers`, `repurchase_rate`, `orders`, `revenue`, `average_basket`; `responses` {by_phase, by_touchpoint}; `series` per period; `consent` {by_touchpoint}. Rates are null when nothing was there to divide by."),
        (status = 400, description = "A parameter is invalid; `parameter` names it", body = crate::openapi::ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn kpis(
    _: Viewer,
    State(app): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let asked = app.asked(&q, KPIS).await?;
    let (kpis, asked) = counted(&app, asked, kpis_of).await?;
    let mut body = serde_json::to_value(kpis?).unwrap_or_default();
    body["filters"] = asked.view();
    body["consent"] = json!({
        "note": "current decisions of the consent ledger: the period and segment do not apply",
        "by_touchpoint": consent(&app, &asked).await?,
    });
    Ok(Json(body))
}

/// The journey map: per phase and touchpoint, events, profiles reached, questionnaire response
/// where questionnaires apply, and conversion (reached, then ordered).
#[utoipa::path(
    get, path = "/api/v1/journey", tag = "kpis",
    params(
        ("from" = Option<String>, Query, description = "Start: a date (included) or an instant (included)"),
        ("to" = Option<String>, Query, description = "End: a date (included) or an instant (excluded)"),
        ("source" = Option<String>, Query, description = "Only events sent by this source"),
        ("channel" = Option<String>, Query, description = "Only touchpoints of this channel"),
        ("segment" = Option<i64>, Query, description = "Only the members (now) of this saved segment"),
    ),
    responses(
        (status = 200, description = "`filters`; `phases`: [{phase, events, profiles, converted, conversion_rate, response, touchpoints: [{touchpoint, channel, description, events, profiles, converted, conversion_rate, response}]}]"),
        (status = 400, description = "A parameter is invalid; `parameter` names it", body = crate::openapi::ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn journey(
    _: Viewer,
    State(app): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let asked = app.asked(&q, JOURNEY).await?;
    let (journey, asked): (Journey, Asked) = counted(&app, asked, |app, asked| {
        let index = app.audience.read();
        kpi::journey(&index, &app.catalog, &asked.filter())
    })
    .await?;
    let mut body = serde_json::to_value(journey).unwrap_or_default();
    let mut filters = asked.view();
    if let Some(f) = filters.as_object_mut() {
        f.remove("bucket");
    }
    body["filters"] = filters;
    Ok(Json(body))
}

/// One KPI drawn as an SVG chart: `conversion` (rate per period), `response` (questionnaire
/// response per touchpoint) or `consent` (granted rate per touchpoint).
#[utoipa::path(
    get, path = "/api/v1/kpis/chart.svg", tag = "kpis",
    params(
        ("chart" = Option<String>, Query, description = "conversion (default), response or consent"),
        ("from" = Option<String>, Query, description = "Start: a date (included) or an instant (included)"),
        ("to" = Option<String>, Query, description = "End: a date (included) or an instant (excluded)"),
        ("source" = Option<String>, Query, description = "Only events sent by this source"),
        ("channel" = Option<String>, Query, description = "Only touchpoints of this channel"),
        ("segment" = Option<i64>, Query, description = "Only the members (now) of this saved segment"),
        ("bucket" = Option<String>, Query, description = "Periods of the conversion chart: day, week or month (default)"),
    ),
    responses(
        (status = 200, description = "The chart", content_type = "image/svg+xml"),
        (status = 400, description = "A parameter is invalid; `parameter` names it", body = crate::openapi::ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn chart(
    _: Viewer,
    State(app): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let asked = app.asked(&q, CHART).await?;
    let which = asked.chart;
    let drawn = match which {
        Chart::Consent => consent_chart(&consent(&app, &asked).await?),
        chart => {
            let (kpis, _) = counted(&app, asked, kpis_of).await?;
            let kpis = kpis?;
            match chart {
                Chart::Conversion => conversion_chart(&kpis),
                _ => response_chart(&kpis),
            }
        }
    };
    let svg = drawn.map_err(|e| ApiError::new(ErrorCode::Internal, format!("the chart could not be drawn: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")], svg).into_response())
}

type Drawn = Result<String, Box<dyn std::error::Error>>;

const SIZE: (u32, u32) = (960, 480);
const FONT: &str = "sans-serif";

fn phase_colour(phase: Option<Phase>) -> RGBColor {
    match phase {
        Some(Phase::Discovery) => RGBColor(52, 101, 164),
        Some(Phase::Purchase) => RGBColor(78, 154, 6),
        Some(Phase::PostPurchase) => RGBColor(206, 92, 0),
        None => RGBColor(136, 138, 133),
    }
}

fn phase_name(phase: Option<Phase>) -> &'static str {
    match phase {
        Some(Phase::Discovery) => "discovery",
        Some(Phase::Purchase) => "purchase",
        Some(Phase::PostPurchase) => "post-purchase",
        None => "no touchpoint",
    }
}

/// Draws a chart into an SVG text.
fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), Box<dyn std::error::Error>>) -> Drawn {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(out)
}

fn percent(y: &f64) -> String {
    format!("{y:.0} %")
}

/// The conversion rate per period: a line, broken where a period had no visitor (no rate,
/// which is not a rate of 0).
fn conversion_chart(k: &Kpis) -> Drawn {
    let labels: Vec<String> = k
        .series
        .iter()
        .map(|p| {
            let date = p.start.to_string();
            match k.bucket {
                Bucket::Month => date[..7].to_owned(),
                _ => date[..10].to_owned(),
            }
        })
        .collect();
    let n = labels.len().max(1) as i32;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Conversion rate by {}", k.bucket.name()), (FONT, 24))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..100f64)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(labels.len().clamp(1, 12))
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    labels.get(*i as usize).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .y_desc("visitors who ordered")
            .y_label_formatter(&percent)
            .draw()?;
        let colour = phase_colour(Some(Phase::Purchase));
        let mut run: Vec<(SegmentValue<i32>, f64)> = Vec::new();
        let points = k
            .series
            .iter()
            .enumerate()
            .map(|(i, p)| p.conversion_rate.map(|r| (SegmentValue::CenterOf(i as i32), r * 100.0)));
        for point in points.chain([None]) {
            match point {
                Some(p) => run.push(p),
                None if !run.is_empty() => {
                    chart.draw_series(LineSeries::new(run.clone(), colour.stroke_width(2)))?;
                    chart.draw_series(run.drain(..).map(|p| Circle::new(p, 4, colour.filled())))?;
                }
                None => {}
            }
        }
        Ok(())
    })
}

/// One bar per touchpoint, coloured by phase, with its figure written above.
struct Bar {
    label: String,
    phase: Option<Phase>,
    rate: Option<f64>,
    note: String,
}

fn bar_chart(title: &str, y_desc: &str, bars: &[Bar]) -> Drawn {
    let n = bars.len().max(1) as i32;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..110f64)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars.len().max(1))
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    bars.get(*i as usize).map(|b| b.label.clone()).unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .x_label_style((FONT, 12))
            .y_desc(y_desc)
            .y_label_formatter(&percent)
            .draw()?;
        let phases = [
            Some(Phase::Discovery),
            Some(Phase::Purchase),
            Some(Phase::PostPurchase),
            None,
        ];
        for phase in phases {
            let colour = phase_colour(phase);
            let mine: Vec<(i32, f64)> = bars
                .iter()
                .enumerate()
                .filter(|(_, b)| b.phase == phase)
                .filter_map(|(i, b)| b.rate.map(|r| (i as i32, r * 100.0)))
                .collect();
            if mine.is_empty() {
                continue;
            }
            chart
                .draw_series(mine.into_iter().map(|(i, y)| {
                    let mut bar = Rectangle::new(
                        [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), y)],
                        colour.filled(),
                    );
                    bar.set_margin(0, 0, 12, 12);
                    bar
                }))?
                .label(phase_name(phase))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
        }
        chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
            let y = b.rate.map_or(0.0, |r| r * 100.0) + 3.0;
            Text::new(b.note.clone(), (SegmentValue::CenterOf(i as i32), y), (FONT, 13))
        }))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    })
}

/// Questionnaire response per touchpoint: when people are most receptive.
fn response_chart(k: &Kpis) -> Drawn {
    let bars: Vec<Bar> = k
        .responses
        .by_touchpoint
        .iter()
        .map(|t| Bar {
            label: t.touchpoint.clone(),
            phase: Some(t.phase),
            rate: t.response.rate,
            note: format!("{} / {}", t.response.answered, t.response.offered),
        })
        .collect();
    bar_chart("Questionnaire response rate by touchpoint", "answered / offered", &bars)
}

/// The share of consent decisions that are grants, per touchpoint, every purpose together.
fn consent_chart(touchpoints: &[TouchpointConsent]) -> Drawn {
    let bars: Vec<Bar> = touchpoints
        .iter()
        .map(|t| Bar {
            label: t.touchpoint.clone().unwrap_or_else(|| "(none)".into()),
            phase: t.phase,
            rate: t.all.granted_rate,
            note: format!("{} / {}", t.all.granted, t.all.total),
        })
        .collect();
    bar_chart("Consent granted rate by touchpoint", "granted / decisions", &bars)
}
