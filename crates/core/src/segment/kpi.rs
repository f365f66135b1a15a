//! KPIs and the journey map: conversion, repurchase, basket, questionnaire response and consent
//! rates, counted over the audience index and placed on the catalog's touchpoints.
//!
//! # Definitions
//!
//! Every figure counts the events of the *period* (`from` included, `to` excluded) that match
//! the *filters*: the source that sent the event, the channel of the touchpoint it happened at,
//! and the members of a segment.
//!
//! - A **visitor** is a profile with at least one event the person started themself (a page
//!   view, a search, an order, an answer: the catalog's `subject_initiated`) that matches the
//!   filters. A questionnaire sent or a parcel delivered does not make a visitor.
//! - A visitor has **converted** when they completed an order in the period, *from any source
//!   and channel*: orders mostly come from the shop's back end or a till, never from the web
//!   tag, so counting only the filtered orders would make "conversion of web visitors" zero.
//!   **Conversion rate** = converted visitors / visitors.
//! - An **order** is an `Order Completed` event that matches the filters; a **customer** a
//!   profile with at least one. **Repurchase rate** = customers with two orders or more /
//!   customers. **Average basket** = sum of the orders' `total` (else `revenue`, else 0, as
//!   for the `average_basket` trait) / orders.
//! - **Response rate** = questionnaires answered / questionnaires offered, per touchpoint and
//!   per journey phase. The shop does not always *send* a questionnaire: the tastes pop-in is
//!   shown on the site. The demo and the catalog record both as `Questionnaire Sent` (sent by
//!   email, or shown), so *offered* is that event; and since a form can also be filled in
//!   without one (always on the page, or offered before the period), a person's offers at a
//!   touchpoint count as `max(sent, answered)`: an answer proves an offer, and the rate never
//!   exceeds 1.
//! - Rates are `None` (JSON `null`) when nothing was there to divide by, never a misleading 0.
//!
//! # Where an event happened
//!
//! The touchpoint an event names in its `touchpoint` property, when the catalog declares it.
//! Otherwise one of the touchpoints the catalog declares for the event (for page and screen
//! views, which declare none, any touchpoint), narrowed to those its source covers (an order
//! from the tills is at `store_till`, from the back end at `checkout`), then to the phase its
//! `phase` property names; the first left wins. Page views from the web tag thus land on the
//! web source's first touchpoint, as their consent decisions do at collection. An event whose
//! name the catalog no longer declares is not counted (minimisation: it may not be used).
//!
//! # Journey map
//!
//! Per phase and touchpoint: events there, profiles reached (any event there, including the
//! questionnaires the shop sends), questionnaire response where questionnaires apply (the
//! catalog declares a questionnaire event there, or one happened there), and conversion: the
//! share of the profiles reached who completed an order (from any source) at or after their
//! first touch in the period.
//!
//! # Design
//!
//! One pass over each candidate profile's events, oldest first, with the period cut by binary
//! search (events are kept sorted). Where an event happened is remembered per (event, source,
//! phase hint), so placing it costs a table look-up whatever the catalog's size. These functions
//! only read, and return counts, sums and rates: no identifier nor record leaves, which is what
//! lets any token read them. Using stored events for aggregate statistics is the further
//! processing GDPR Art. 5(1)(b) and 89(1) allow.
//!
//! Consent rates come from the ledger's current decisions (one per subject and purpose), which
//! carry the source and touchpoint of the decision but no profile nor date of the period: the
//! period and segment filters do not apply to them, the source and channel filters do.

use super::index::{AudienceIndex, EventRow, Prop};
use super::{PAGE_VIEWED, SCREEN_VIEWED};
use crate::catalog::{Catalog, Phase, Touchpoint};
use crate::consent::Status;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use roaring::RoaringBitmap;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The event of a completed order.
pub const ORDER_COMPLETED: &str = "Order Completed";
/// The event of a questionnaire sent by the shop, or shown to the person.
pub const QUESTIONNAIRE_SENT: &str = "Questionnaire Sent";
/// The event of a questionnaire answered.
pub const QUESTIONNAIRE_ANSWERED: &str = "Questionnaire Answered";
/// The journey's phases, in order.
pub const PHASES: [Phase; 3] = [Phase::Discovery, Phase::Purchase, Phase::PostPurchase];
/// The most periods a time series may have: a year of days, twenty years of weeks.
pub const MAX_PERIODS: usize = 1_000;

/// Which events count.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter<'a> {
    /// From this instant, included.
    pub from: Option<Timestamp>,
    /// Up to this instant, excluded.
    pub to: Option<Timestamp>,
    /// Only events sent by this source (its name).
    pub source: Option<&'a str>,
    /// Only events at touchpoints of this channel (`web`, `store`, `email`…).
    pub channel: Option<&'a str>,
    /// Only these profiles (index slots), say a segment's members.
    pub members: Option<&'a RoaringBitmap>,
}

/// The length of a period of a time series, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// Calendar days.
    Day,
    /// ISO weeks, from Monday.
    Week,
    /// Calendar months.
    Month,
}

impl Bucket {
    /// `day`, `week` or `month`.
    pub fn parse(s: &str) -> Option<Bucket> {
        match s {
            "day" => Some(Bucket::Day),
            "week" => Some(Bucket::Week),
            "month" => Some(Bucket::Month),
            _ => None,
        }
    }

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Day => "day",
            Bucket::Week => "week",
            Bucket::Month => "month",
        }
    }

    /// The start (Unix seconds) of the period holding `at`.
    pub fn start(self, at: i64) -> i64 {
        const DAY: i64 = 86_400;
        let day = at.div_euclid(DAY);
        match self {
            Bucket::Day => day * DAY,
            // 1970-01-01 was a Thursday: day 4 of its ISO week.
            Bucket::Week => ((day + 3).div_euclid(7) * 7 - 3) * DAY,
            Bucket::Month => {
                let date = Timestamp::from_second(day * DAY)
                    .map_or(Timestamp::UNIX_EPOCH, |t| t)
                    .to_zoned(TimeZone::UTC)
                    .date();
                month_start(date.first_of_month())
            }
        }
    }

    /// The start of the period after the one starting at `start`.
    pub fn next(self, start: i64) -> i64 {
        match self {
            Bucket::Day => start + 86_400,
            Bucket::Week => start + 7 * 86_400,
            Bucket::Month => {
                let date = Timestamp::from_second(start)
                    .map_or(Timestamp::UNIX_EPOCH, |t| t)
                    .to_zoned(TimeZone::UTC)
                    .date();
                date.checked_add(jiff::Span::new().months(1))
                    .map_or(i64::MAX, month_start)
            }
        }
    }
}

fn month_start(date: jiff::civil::Date) -> i64 {
    date.to_zoned(TimeZone::UTC)
        .map_or(i64::MAX, |z| z.timestamp().as_second())
}

/// Why KPIs cannot be computed as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KpiError {
    /// The time series would have too many points.
    #[error(
        "the period spans {count} {bucket}s, over the {MAX_PERIODS} a series may have: choose a longer bucket or a shorter period"
    )]
    TooManyPeriods {
        /// `day`, `week` or `month`.
        bucket: &'static str,
        /// Periods it would take (at least).
        count: usize,
    },
}

/// Questionnaires offered and answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Response {
    /// Offered: sent or shown (see the module's definitions).
    pub offered: u64,
    /// Answered.
    pub answered: u64,
    /// answered / offered.
    pub rate: Option<f64>,
}

impl Response {
    fn add(&mut self, sent: u64, answered: u64) {
        self.offered += sent.max(answered);
        self.answered += answered;
        self.rate = rate(self.answered, self.offered);
    }
}

/// Response in one phase.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhaseResponse {
    /// The phase.
    pub phase: Phase,
    /// Its questionnaires.
    #[serde(flatten)]
    pub response: Response,
}

/// Response at one touchpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TouchpointResponse {
    /// Touchpoint id.
    pub touchpoint: String,
    /// Its phase.
    pub phase: Phase,
    /// Its channel.
    pub channel: String,
    /// Its questionnaires.
    #[serde(flatten)]
    pub response: Response,
}

/// Questionnaire response, by phase (all three, in order) and by touchpoint (where
/// questionnaires apply).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Responses {
    /// Per phase.
    pub by_phase: Vec<PhaseResponse>,
    /// Per touchpoint.
    pub by_touchpoint: Vec<TouchpointResponse>,
}

/// One period of the time series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Period {
    /// When it starts.
    pub start: Timestamp,
    /// Visitors in the period.
    pub visitors: u64,
    /// Those who completed an order in the same period.
    pub converted: u64,
    /// converted / visitors.
    pub conversion_rate: Option<f64>,
    /// Orders.
    pub orders: u64,
    /// Sum of their totals.
    pub revenue: f64,
}

/// The KPIs of a period (see the module's definitions).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Kpis {
    /// Visitors.
    pub visitors: u64,
    /// Visitors who completed an order.
    pub converted: u64,
    /// converted / visitors.
    pub conversion_rate: Option<f64>,
    /// Profiles with an order.
    pub customers: u64,
    /// Customers with two orders or more.
    pub repeat_customers: u64,
    /// repeat_customers / customers.
    pub repurchase_rate: Option<f64>,
    /// Orders.
    pub orders: u64,
    /// Sum of the orders' totals.
    pub revenue: f64,
    /// revenue / orders.
    pub average_basket: Option<f64>,
    /// Questionnaire response.
    pub responses: Responses,
    /// The length of the series' periods.
    pub bucket: Bucket,
    /// Per period, oldest first, empty periods included.
    pub series: Vec<Period>,
}

/// One touchpoint of the journey map.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// Touchpoint id.
    pub touchpoint: String,
    /// Its channel.
    pub channel: String,
    /// What happens there.
    pub description: String,
    /// Events there.
    pub events: u64,
    /// Profiles with an event there.
    pub profiles: u64,
    /// Of those, who ordered at or after their first touch.
    pub converted: u64,
    /// converted / profiles.
    pub conversion_rate: Option<f64>,
    /// Questionnaire response, where questionnaires apply.
    pub response: Option<Response>,
}

/// One phase of the journey map.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JourneyPhase {
    /// The phase.
    pub phase: Phase,
    /// Events at its touchpoints.
    pub events: u64,
    /// Profiles with an event at one of its touchpoints.
    pub profiles: u64,
    /// Of those, who ordered at or after their first touch in the phase.
    pub converted: u64,
    /// converted / profiles.
    pub conversion_rate: Option<f64>,
    /// Questionnaire response, where questionnaires apply in the phase.
    pub response: Option<Response>,
    /// Its touchpoints (of the filtered channel, if any).
    pub touchpoints: Vec<Step>,
}

/// The journey map.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Journey {
    /// The three phases, in order.
    pub phases: Vec<JourneyPhase>,
}

fn rate(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn phase_rank(p: Phase) -> u8 {
    match p {
        Phase::Discovery => 0,
        Phase::Purchase => 1,
        Phase::PostPurchase => 2,
    }
}

fn phase_named(s: &str) -> Option<Phase> {
    PHASES.into_iter().find(|p| {
        let name = match p {
            Phase::Discovery => "discovery",
            Phase::Purchase => "purchase",
            Phase::PostPurchase => "post_purchase",
        };
        name == s
    })
}

/// The catalog's touchpoints in journey order: by phase, then id.
pub fn journey_order(catalog: &Catalog) -> Vec<&Touchpoint> {
    let mut out: Vec<&Touchpoint> = catalog.touchpoints.values().collect();
    out.sort_by_key(|t| phase_rank(t.phase));
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Order,
    Sent,
    Answered,
    Other,
}

/// What counting needs to know of an event name.
#[derive(Clone, Copy)]
struct EventInfo<'a> {
    role: Role,
    subject_initiated: bool,
    /// Declared touchpoints; `None` for page and screen views.
    declared: Option<&'a [String]>,
    /// Whether it may name its touchpoint and phase in its properties.
    names_place: bool,
}

/// Places events on touchpoints and applies the filters.
struct Counter<'a> {
    index: &'a AudienceIndex,
    catalog: &'a Catalog,
    touchpoints: Vec<&'a Touchpoint>,
    by_id: HashMap<&'a str, usize>,
    /// By the index's event id.
    events: Vec<Option<EventInfo<'a>>>,
    /// Per touchpoint: whether a questionnaire event is declared there.
    questionnaire: Vec<bool>,
    /// `None`: any source; `Some(None)`: a source that sent nothing.
    source: Option<Option<u32>>,
    channel: Option<&'a str>,
    from: i64,
    to: i64,
    /// Where events were placed, by event id, source id and phase hint (none last).
    places: Vec<Vec<[Option<Option<usize>>; 4]>>,
}

impl<'a> Counter<'a> {
    fn new(index: &'a AudienceIndex, catalog: &'a Catalog, filter: &Filter<'a>) -> Counter<'a> {
        let touchpoints = journey_order(catalog);
        let by_id = touchpoints
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        let mut events: Vec<Option<EventInfo<'a>>> = Vec::new();
        let mut put = |id: u32, info| {
            let id = id as usize;
            if events.len() <= id {
                events.resize(id + 1, None);
            }
            events[id] = Some(info);
        };
        for (name, def) in &catalog.events {
            let Some(id) = index.event_id(name) else { continue };
            let role = match name.as_str() {
                ORDER_COMPLETED => Role::Order,
                QUESTIONNAIRE_SENT => Role::Sent,
                QUESTIONNAIRE_ANSWERED => Role::Answered,
                _ => Role::Other,
            };
            let info = EventInfo {
                role,
                subject_initiated: def.subject_initiated,
                declared: Some(&def.touchpoints),
                names_place: def.properties.contains_key("touchpoint") || def.properties.contains_key("phase"),
            };
            put(id, info);
        }
        for name in [PAGE_VIEWED, SCREEN_VIEWED] {
            if let Some(id) = index.event_id(name) {
                let info = EventInfo {
                    role: Role::Other,
                    subject_initiated: true,
                    declared: None,
                    names_place: catalog.page_properties.contains_key("touchpoint"),
                };
                put(id, info);
            }
        }
        let questionnaire = touchpoints
            .iter()
            .map(|t| {
                [QUESTIONNAIRE_SENT, QUESTIONNAIRE_ANSWERED]
                    .iter()
                    .filter_map(|e| catalog.events.get(*e))
                    .any(|e| e.touchpoints.contains(&t.id))
            })
            .collect();
        Counter {
            index,
            catalog,
            touchpoints,
            by_id,
            events,
            questionnaire,
            source: filter.source.map(|s| index.source_id(s)),
            channel: filter.channel,
            from: filter.from.map_or(i64::MIN, Timestamp::as_second),
            to: filter.to.map_or(i64::MAX, Timestamp::as_second),
            places: Vec::new(),
        }
    }

    fn info(&self, row: &EventRow) -> Option<EventInfo<'a>> {
        self.events.get(row.name as usize).copied().flatten()
    }

    /// The candidate profiles.
    fn slots(&self, filter: &Filter<'_>) -> RoaringBitmap {
        match filter.members {
            Some(m) => self.index.live() & m,
            None => self.index.live().clone(),
        }
    }

    /// The events of a slot in the period.
    fn window(&self, slot: u32) -> &'a [EventRow] {
        let rows = self.index.events_of(slot);
        let start = rows.partition_point(|r| r.at < self.from);
        let end = rows.partition_point(|r| r.at < self.to);
        &rows[start..end.max(start)]
    }

    /// The touchpoint (index into `touchpoints`) an event happened at.
    fn place(&mut self, row: &EventRow, info: EventInfo<'a>) -> Option<usize> {
        let mut hint = None;
        if info.names_place {
            let named = row.properties.get("touchpoint").and_then(Prop::as_str);
            if let Some(&i) = named.and_then(|t| self.by_id.get(t)) {
                return Some(i);
            }
            hint = row.properties.get("phase").and_then(Prop::as_str).and_then(phase_named);
        }
        let (name, source) = (row.name as usize, row.source as usize);
        if self.places.len() <= name {
            self.places.resize_with(name + 1, Vec::new);
        }
        if self.places[name].len() <= source {
            self.places[name].resize(source + 1, [None; 4]);
        }
        let hint_rank = hint.map_or(3, |h| phase_rank(h) as usize);
        if let Some(p) = self.places[name][source][hint_rank] {
            return p;
        }
        let covered: &[String] = self
            .index
            .source_name(row.source)
            .and_then(|s| self.catalog.sources.get(s))
            .map_or(&[], |s| &s.touchpoints);
        let candidates: Vec<&String> = match info.declared {
            Some(declared) => {
                let both: Vec<&String> = declared.iter().filter(|t| covered.contains(t)).collect();
                if both.is_empty() {
                    declared.iter().collect()
                } else {
                    both
                }
            }
            None => covered.iter().collect(),
        };
        let index = |t: &String| self.by_id.get(t.as_str()).copied();
        let place = candidates
            .iter()
            .filter_map(|t| index(t))
            .find(|&i| hint.is_none_or(|h| self.touchpoints[i].phase == h))
            .or_else(|| candidates.first().and_then(|t| index(t)));
        self.places[name][source][hint_rank] = Some(place);
        place
    }

    /// Whether an event placed at `place` passes the source and channel filters.
    fn kept(&self, row: &EventRow, place: Option<usize>) -> bool {
        let source = self.source.is_none_or(|s| s == Some(row.source));
        let channel = self
            .channel
            .is_none_or(|c| place.is_some_and(|p| self.touchpoints[p].channel == c));
        source && channel
    }

    /// Whether the channel filter lets a touchpoint be listed.
    fn listed(&self, place: usize) -> bool {
        self.channel.is_none_or(|c| self.touchpoints[place].channel == c)
    }
}

/// The amount of an order, as the `total_spent` trait counts it.
fn amount(row: &EventRow) -> f64 {
    row.properties
        .get("total")
        .or_else(|| row.properties.get("revenue"))
        .and_then(Prop::as_f64)
        .unwrap_or(0.0)
}

/// Questionnaires a person was sent and answered at each touchpoint.
#[derive(Default)]
struct Asked(Vec<(usize, u64, u64)>);

impl Asked {
    fn note(&mut self, place: usize, role: Role) {
        let i = match self.0.iter().position(|(p, _, _)| *p == place) {
            Some(i) => i,
            None => {
                self.0.push((place, 0, 0));
                self.0.len() - 1
            }
        };
        match role {
            Role::Sent => self.0[i].1 += 1,
            _ => self.0[i].2 += 1,
        }
    }
}

#[derive(Default)]
struct PeriodCount {
    visitors: u64,
    converted: u64,
    orders: u64,
    revenue: f64,
}

/// The period of each event. A profile's events come in order, so the calendar is consulted
/// once per period rather than once per event.
struct PeriodOf {
    bucket: Bucket,
    start: i64,
    end: i64,
}

impl PeriodOf {
    fn new(bucket: Bucket) -> PeriodOf {
        PeriodOf {
            bucket,
            start: i64::MAX,
            end: i64::MIN,
        }
    }

    fn at(&mut self, at: i64) -> i64 {
        if at < self.start || at >= self.end {
            self.start = self.bucket.start(at);
            self.end = self.bucket.next(self.start);
        }
        self.start
    }
}

/// Pushes `b` unless it is the last one (the values come in order).
fn push_new(v: &mut Vec<i64>, b: i64) {
    if v.last() != Some(&b) {
        v.push(b);
    }
}

/// The KPIs of the events matching `filter`, with a time series by `bucket`.
pub fn kpis(index: &AudienceIndex, catalog: &Catalog, filter: &Filter<'_>, bucket: Bucket) -> Result<Kpis, KpiError> {
    let mut c = Counter::new(index, catalog, filter);
    let mut k = Kpis {
        visitors: 0,
        converted: 0,
        conversion_rate: None,
        customers: 0,
        repeat_customers: 0,
        repurchase_rate: None,
        orders: 0,
        revenue: 0.0,
        average_basket: None,
        responses: Responses::default(),
        bucket,
        series: Vec::new(),
    };
    let mut periods: BTreeMap<i64, PeriodCount> = BTreeMap::new();
    let mut response = vec![Response::default(); c.touchpoints.len()];
    let (mut visited_in, mut ordered_in) = (Vec::new(), Vec::new());
    let mut period_of = PeriodOf::new(bucket);
    for slot in c.slots(filter) {
        let (mut visited, mut ordered, mut orders) = (false, false, 0u64);
        let mut asked = Asked::default();
        visited_in.clear();
        ordered_in.clear();
        for row in c.window(slot) {
            let Some(info) = c.info(row) else { continue };
            let place = c.place(row, info);
            let period = period_of.at(row.at);
            if info.role == Role::Order {
                ordered = true;
                push_new(&mut ordered_in, period);
            }
            if !c.kept(row, place) {
                continue;
            }
            if info.subject_initiated {
                visited = true;
                push_new(&mut visited_in, period);
            }
            match (info.role, place) {
                (Role::Order, _) => {
                    orders += 1;
                    let p = periods.entry(period).or_default();
                    p.orders += 1;
                    p.revenue += amount(row);
                    k.revenue += amount(row);
                }
                (Role::Sent | Role::Answered, Some(place)) => asked.note(place, info.role),
                _ => {}
            }
        }
        for &p in &visited_in {
            let count = periods.entry(p).or_default();
            count.visitors += 1;
            count.converted += u64::from(ordered_in.contains(&p));
        }
        k.visitors += u64::from(visited);
        k.converted += u64::from(visited && ordered);
        k.orders += orders;
        k.customers += u64::from(orders > 0);
        k.repeat_customers += u64::from(orders >= 2);
        for (place, sent, answered) in asked.0 {
            response[place].add(sent, answered);
        }
    }
    k.conversion_rate = rate(k.converted, k.visitors);
    k.repurchase_rate = rate(k.repeat_customers, k.customers);
    k.revenue = cents(k.revenue);
    k.average_basket = (k.orders > 0).then(|| cents(k.revenue / k.orders as f64));
    k.responses = responses(&c, &response);
    k.series = series(&c, bucket, periods)?;
    Ok(k)
}

fn responses(c: &Counter<'_>, response: &[Response]) -> Responses {
    let mut by_phase: Vec<PhaseResponse> = PHASES
        .iter()
        .map(|&phase| PhaseResponse {
            phase,
            response: Response::default(),
        })
        .collect();
    let mut by_touchpoint = Vec::new();
    for (i, t) in c.touchpoints.iter().enumerate() {
        let r = response[i];
        if !c.listed(i) || !(c.questionnaire[i] || r.offered > 0) {
            continue;
        }
        by_phase[phase_rank(t.phase) as usize]
            .response
            .add(r.offered, r.answered);
        by_touchpoint.push(TouchpointResponse {
            touchpoint: t.id.clone(),
            phase: t.phase,
            channel: t.channel.clone(),
            response: r,
        });
    }
    Responses {
        by_phase,
        by_touchpoint,
    }
}

/// Every period from the first to the last asked for (or seen), empty ones included.
fn series(c: &Counter<'_>, bucket: Bucket, mut periods: BTreeMap<i64, PeriodCount>) -> Result<Vec<Period>, KpiError> {
    let first = (c.from != i64::MIN)
        .then(|| bucket.start(c.from))
        .or_else(|| periods.keys().next().copied());
    let last = (c.to != i64::MAX)
        .then(|| bucket.start(c.to - 1))
        .or_else(|| periods.keys().next_back().copied());
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(Vec::new());
    };
    let mut starts = Vec::new();
    let mut at = first;
    while at <= last {
        if starts.len() == MAX_PERIODS {
            let rest = (last - at) / (bucket.next(at) - at).max(1);
            return Err(KpiError::TooManyPeriods {
                bucket: bucket.name(),
                count: MAX_PERIODS + rest as usize + 1,
            });
        }
        starts.push(at);
        at = bucket.next(at);
    }
    Ok(starts
        .into_iter()
        .map(|s| {
            let p = periods.remove(&s).unwrap_or_default();
            Period {
                start: Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH),
                visitors: p.visitors,
                converted: p.converted,
                conversion_rate: rate(p.converted, p.visitors),
                orders: p.orders,
                revenue: cents(p.revenue),
            }
        })
        .collect())
}

#[derive(Clone, Copy, Default)]
struct Reach {
    events: u64,
    profiles: u64,
    converted: u64,
}

impl Reach {
    fn touched(&mut self, first: i64, last_order: Option<i64>) {
        self.profiles += 1;
        self.converted += u64::from(last_order.is_some_and(|o| o >= first));
    }
}

/// The journey map of the events matching `filter`.
pub fn journey(index: &AudienceIndex, catalog: &Catalog, filter: &Filter<'_>) -> Journey {
    let mut c = Counter::new(index, catalog, filter);
    let n = c.touchpoints.len();
    let mut steps = vec![Reach::default(); n];
    let mut phases = [Reach::default(); 3];
    let mut response = vec![Response::default(); n];
    let mut first_touch: Vec<Option<i64>> = vec![None; n];
    for slot in c.slots(filter) {
        let mut last_order = None;
        let mut asked = Asked::default();
        first_touch.iter_mut().for_each(|f| *f = None);
        for row in c.window(slot) {
            let Some(info) = c.info(row) else { continue };
            let place = c.place(row, info);
            if info.role == Role::Order {
                last_order = Some(row.at);
            }
            let Some(place) = place.filter(|_| c.kept(row, place)) else {
                continue;
            };
            steps[place].events += 1;
            phases[phase_rank(c.touchpoints[place].phase) as usize].events += 1;
            first_touch[place].get_or_insert(row.at);
            if matches!(info.role, Role::Sent | Role::Answered) {
                asked.note(place, info.role);
            }
        }
        let mut phase_first: [Option<i64>; 3] = [None; 3];
        for (place, first) in first_touch.iter().enumerate() {
            let Some(first) = *first else { continue };
            steps[place].touched(first, last_order);
            let f = &mut phase_first[phase_rank(c.touchpoints[place].phase) as usize];
            *f = Some(f.map_or(first, |f| f.min(first)));
        }
        for (phase, first) in phase_first.iter().enumerate() {
            if let Some(first) = *first {
                phases[phase].touched(first, last_order);
            }
        }
        for (place, sent, answered) in asked.0 {
            response[place].add(sent, answered);
        }
    }
    let responses = responses(&c, &response);
    let response_at = |i: usize| {
        responses
            .by_touchpoint
            .iter()
            .find(|r| r.touchpoint == c.touchpoints[i].id)
            .map(|r| r.response)
    };
    let phases = PHASES
        .iter()
        .zip(phases)
        .map(|(&phase, reach)| {
            let touchpoints: Vec<Step> = (0..n)
                .filter(|&i| c.touchpoints[i].phase == phase && c.listed(i))
                .map(|i| {
                    let t = c.touchpoints[i];
                    Step {
                        touchpoint: t.id.clone(),
                        channel: t.channel.clone(),
                        description: t.description.clone(),
                        events: steps[i].events,
                        profiles: steps[i].profiles,
                        converted: steps[i].converted,
                        conversion_rate: rate(steps[i].converted, steps[i].profiles),
                        response: response_at(i),
                    }
                })
                .collect();
            let asked = touchpoints.iter().any(|s| s.response.is_some());
            JourneyPhase {
                phase,
                events: reach.events,
                profiles: reach.profiles,
                converted: reach.converted,
                conversion_rate: rate(reach.converted, reach.profiles),
                response: asked.then(|| responses.by_phase[phase_rank(phase) as usize].response),
                touchpoints,
            }
        })
        .collect();
    Journey { phases }
}

/// A count of the consent ledger's current decisions (see the store's `consent_counts`).
#[derive(Clone, Copy, Debug)]
pub struct ConsentRow<'a> {
    /// Purpose id.
    pub purpose: &'a str,
    /// Current status.
    pub status: Status,
    /// Source of the decision, by name.
    pub source: Option<&'a str>,
    /// Touchpoint of the decision.
    pub touchpoint: Option<&'a str>,
    /// How many subjects.
    pub count: u64,
}

/// Decisions by status, with rates over all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Decisions {
    /// Granted.
    pub granted: u64,
    /// Denied.
    pub denied: u64,
    /// Withdrawn.
    pub withdrawn: u64,
    /// Objected to (Art. 21).
    pub objected: u64,
    /// Restricted (Art. 18).
    pub restricted: u64,
    /// All decisions.
    pub total: u64,
    /// granted / total.
    pub granted_rate: Option<f64>,
    /// denied / total.
    pub denied_rate: Option<f64>,
    /// withdrawn / total.
    pub withdrawn_rate: Option<f64>,
}

impl Decisions {
    fn add(&mut self, status: Status, n: u64) {
        *match status {
            Status::Granted => &mut self.granted,
            Status::Denied => &mut self.denied,
            Status::Withdrawn => &mut self.withdrawn,
            Status::Objected => &mut self.objected,
            Status::Restricted => &mut self.restricted,
        } += n;
        self.total += n;
        self.granted_rate = rate(self.granted, self.total);
        self.denied_rate = rate(self.denied, self.total);
        self.withdrawn_rate = rate(self.withdrawn, self.total);
    }
}

/// Decisions about one purpose.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PurposeDecisions {
    /// Purpose id.
    pub purpose: String,
    /// Its decisions.
    #[serde(flatten)]
    pub decisions: Decisions,
}

/// Consent decisions taken at one touchpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TouchpointConsent {
    /// Touchpoint id; `None` for decisions recorded without one (an API call, an import).
    pub touchpoint: Option<String>,
    /// Its phase, when the catalog declares it.
    pub phase: Option<Phase>,
    /// Its channel, when the catalog declares it.
    pub channel: Option<String>,
    /// Every purpose together.
    pub all: Decisions,
    /// Per purpose.
    pub purposes: Vec<PurposeDecisions>,
}

/// Consent rates by touchpoint, in journey order (undeclared touchpoints, then none, last),
/// for the decisions passing the source and channel filters.
pub fn consent_by_touchpoint(
    catalog: &Catalog,
    rows: &[ConsentRow<'_>],
    filter: &Filter<'_>,
) -> Vec<TouchpointConsent> {
    let order = journey_order(catalog);
    let rank = |t: Option<&str>| match t {
        Some(t) => order.iter().position(|o| o.id == t).unwrap_or(order.len()),
        None => order.len() + 1,
    };
    let mut by: BTreeMap<(usize, Option<&str>), BTreeMap<&str, Decisions>> = BTreeMap::new();
    for r in rows {
        let declared = r.touchpoint.and_then(|t| catalog.touchpoints.get(t));
        let channel_ok = filter.channel.is_none_or(|c| declared.is_some_and(|t| t.channel == c));
        if !channel_ok || filter.source.is_some_and(|s| r.source != Some(s)) {
            continue;
        }
        by.entry((rank(r.touchpoint), r.touchpoint))
            .or_default()
            .entry(r.purpose)
            .or_default()
            .add(r.status, r.count);
    }
    by.into_iter()
        .map(|((_, touchpoint), purposes)| {
            let declared = touchpoint.and_then(|t| catalog.touchpoints.get(t));
            let mut all = Decisions::default();
            for d in purposes.values() {
                for (status, n) in [
                    (Status::Granted, d.granted),
                    (Status::Denied, d.denied),
                    (Status::Withdrawn, d.withdrawn),
                    (Status::Objected, d.objected),
                    (Status::Restricted, d.restricted),
                ] {
                    all.add(status, n);
                }
            }
            TouchpointConsent {
                touchpoint: touchpoint.map(str::to_owned),
                phase: declared.map(|t| t.phase),
                channel: declared.map(|t| t.channel.clone()),
                all,
                purposes: purposes
                    .into_iter()
                    .map(|(purpose, decisions)| PurposeDecisions {
                        purpose: purpose.to_owned(),
                        decisions,
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Five people, counted by hand (times are UTC; 2026-03-02 is a Monday):
    //!
    //! | profile | events |
    //! | ------- | ------ |
    //! | 1 | 03-02 page and product on the web; order 40 (back end); 03-05 post-purchase survey sent and answered; 03-20 order 60 |
    //! | 2 | 03-03 page; tastes pop-in shown, not answered |
    //! | 3 | 04-10 order 25 at a till; 04-12 survey sent, not answered |
    //! | 4 | 03-10 page; pop-in shown and answered; 03-11 order 35 |
    //! | 5 | 04-02 page; a tastes form answered unprompted (phase only, no touchpoint, no "sent") |

    use super::*;
    use crate::collect::MessageType;
    use crate::segment::index::{EventFact, ProfileFacts};
    use crate::segment::{event_fact, schema};
    use crate::source::SourceKind;
    use crate::unify::golden::EventView;
    use serde_json::json;

    fn at(s: &str) -> Timestamp {
        format!("2026-{s}:00Z").parse().unwrap()
    }

    /// An event as the server indexes it, through [`event_fact`].
    fn ev(catalog: &Catalog, name: &str, source: &str, when: &str, properties: serde_json::Value) -> EventFact {
        let kind = if name == PAGE_VIEWED {
            MessageType::Page
        } else {
            MessageType::Track
        };
        let body = json!({ "properties": properties });
        let view = EventView {
            kind,
            event: Some(name).filter(|_| kind == MessageType::Track),
            body: &body,
            timestamp: at(when),
            seq: 0,
            source,
            source_kind: SourceKind::Web,
        };
        event_fact(catalog, &view).unwrap()
    }

    fn fixture() -> (Catalog, AudienceIndex) {
        let c = Catalog::builtin();
        let pre =
            json!({"questionnaire_id": "gouts", "phase": "discovery", "touchpoint": "pre_purchase_questionnaire"});
        let post = json!({"questionnaire_id": "satisfaction", "phase": "post_purchase", "touchpoint": "post_purchase_questionnaire"});
        let order = |total: f64| json!({"order_id": format!("o{total}"), "total": total});
        let people = vec![
            vec![
                ev(&c, PAGE_VIEWED, "web", "03-02T10:00", json!({"path": "/"})),
                ev(&c, "Product Viewed", "web", "03-02T10:05", json!({"product_id": "p1"})),
                ev(&c, ORDER_COMPLETED, "backend", "03-02T10:30", order(40.0)),
                ev(&c, QUESTIONNAIRE_SENT, "forms", "03-05T10:00", post.clone()),
                ev(&c, QUESTIONNAIRE_ANSWERED, "forms", "03-05T12:00", post.clone()),
                ev(&c, ORDER_COMPLETED, "backend", "03-20T09:00", order(60.0)),
            ],
            vec![
                ev(&c, PAGE_VIEWED, "web", "03-03T09:00", json!({"path": "/"})),
                ev(&c, QUESTIONNAIRE_SENT, "forms", "03-03T09:01", pre.clone()),
            ],
            vec![
                ev(&c, ORDER_COMPLETED, "tills", "04-10T15:00", order(25.0)),
                ev(&c, QUESTIONNAIRE_SENT, "forms", "04-12T10:00", post),
            ],
            vec![
                ev(&c, PAGE_VIEWED, "web", "03-10T08:00", json!({"path": "/"})),
                ev(&c, QUESTIONNAIRE_SENT, "forms", "03-10T08:05", pre.clone()),
                ev(&c, QUESTIONNAIRE_ANSWERED, "forms", "03-10T08:10", pre),
                ev(&c, ORDER_COMPLETED, "backend", "03-11T18:00", order(35.0)),
            ],
            vec![
                ev(&c, PAGE_VIEWED, "web", "04-02T10:00", json!({"path": "/"})),
                ev(
                    &c,
                    QUESTIONNAIRE_ANSWERED,
                    "forms",
                    "04-02T10:10",
                    json!({"phase": "discovery"}),
                ),
            ],
        ];
        let mut index = AudienceIndex::new(schema(&c));
        for (i, events) in people.into_iter().enumerate() {
            let facts = ProfileFacts {
                events,
                ..ProfileFacts::default()
            };
            index.upsert(i as i64 + 1, &facts);
        }
        (c, index)
    }

    /// (visitors, converted, customers, repeat customers, orders, revenue).
    fn counts(k: &Kpis) -> (u64, u64, u64, u64, u64, f64) {
        (
            k.visitors,
            k.converted,
            k.customers,
            k.repeat_customers,
            k.orders,
            k.revenue,
        )
    }

    /// (touchpoint, offered, answered) of each listed touchpoint.
    fn asked(k: &Kpis) -> Vec<(&str, u64, u64)> {
        k.responses
            .by_touchpoint
            .iter()
            .map(|r| (r.touchpoint.as_str(), r.response.offered, r.response.answered))
            .collect()
    }

    fn run(filter: Filter<'_>) -> Kpis {
        let (c, index) = fixture();
        kpis(&index, &c, &filter, Bucket::Month).unwrap()
    }

    #[test]
    fn whole_history() {
        let k = run(Filter::default());
        assert_eq!(counts(&k), (5, 3, 3, 1, 4, 160.0));
        assert_eq!(k.conversion_rate, Some(0.6));
        assert_eq!(k.repurchase_rate, Some(1.0 / 3.0));
        assert_eq!(k.average_basket, Some(40.0));
        assert_eq!(
            asked(&k),
            [
                ("pre_purchase_questionnaire", 3, 2),
                ("post_purchase_questionnaire", 2, 1)
            ],
            "the unprompted answer counts as offered once; an unanswered survey as offered"
        );
        let phases: Vec<(Phase, Option<f64>)> = k
            .responses
            .by_phase
            .iter()
            .map(|p| (p.phase, p.response.rate))
            .collect();
        assert_eq!(
            phases,
            [
                (Phase::Discovery, Some(2.0 / 3.0)),
                (Phase::Purchase, None),
                (Phase::PostPurchase, Some(0.5))
            ]
        );
        let months: Vec<(String, u64, u64, Option<f64>, u64, f64)> = k
            .series
            .iter()
            .map(|p| {
                (
                    p.start.to_string(),
                    p.visitors,
                    p.converted,
                    p.conversion_rate,
                    p.orders,
                    p.revenue,
                )
            })
            .collect();
        assert_eq!(
            months,
            [
                ("2026-03-01T00:00:00Z".into(), 3, 2, Some(2.0 / 3.0), 3, 135.0),
                ("2026-04-01T00:00:00Z".into(), 2, 1, Some(0.5), 1, 25.0),
            ]
        );
    }

    #[test]
    fn weekly_series_keeps_empty_weeks() {
        let (c, index) = fixture();
        let k = kpis(&index, &c, &Filter::default(), Bucket::Week).unwrap();
        let weeks: Vec<(String, u64, u64, u64)> = k
            .series
            .iter()
            .map(|p| (p.start.to_string()[..10].to_owned(), p.visitors, p.converted, p.orders))
            .collect();
        let expected = [
            ("2026-03-02", 2, 1, 1),
            ("2026-03-09", 1, 1, 1),
            ("2026-03-16", 1, 1, 1),
            ("2026-03-23", 0, 0, 0),
            ("2026-03-30", 1, 0, 0),
            ("2026-04-06", 1, 1, 1),
        ];
        let expected: Vec<(String, u64, u64, u64)> = expected
            .iter()
            .map(|(d, v, c, o)| ((*d).to_owned(), *v, *c, *o))
            .collect();
        assert_eq!(weeks, expected);
        assert_eq!(k.series[3].conversion_rate, None, "no visitor, no rate");
    }

    #[test]
    fn period_filter() {
        let k = run(Filter {
            from: Some(at("03-09T00:00")),
            to: Some(at("04-01T00:00")),
            ..Filter::default()
        });
        assert_eq!(counts(&k), (2, 2, 2, 0, 2, 95.0));
        assert_eq!(
            (k.conversion_rate, k.repurchase_rate, k.average_basket),
            (Some(1.0), Some(0.0), Some(47.5))
        );
        assert_eq!(
            asked(&k),
            [
                ("pre_purchase_questionnaire", 1, 1),
                ("post_purchase_questionnaire", 0, 0)
            ]
        );
        assert_eq!(k.responses.by_touchpoint[1].response.rate, None);
        assert_eq!(k.series.len(), 1, "March only: `to` is excluded");
    }

    #[test]
    fn source_filter() {
        let web = run(Filter {
            source: Some("web"),
            ..Filter::default()
        });
        assert_eq!(
            counts(&web),
            (4, 2, 0, 0, 0, 0.0),
            "web visitors convert through orders from the back end"
        );
        assert_eq!(
            (web.conversion_rate, web.repurchase_rate, web.average_basket),
            (Some(0.5), None, None)
        );
        let backend = run(Filter {
            source: Some("backend"),
            ..Filter::default()
        });
        assert_eq!(counts(&backend), (2, 2, 2, 1, 3, 135.0));
        assert_eq!(backend.average_basket, Some(45.0));
        let nothing = run(Filter {
            source: Some("crm"),
            ..Filter::default()
        });
        assert_eq!(counts(&nothing), (0, 0, 0, 0, 0, 0.0));
    }

    #[test]
    fn channel_filter() {
        let store = run(Filter {
            channel: Some("store"),
            ..Filter::default()
        });
        assert_eq!(counts(&store), (1, 1, 1, 0, 1, 25.0), "a till order is at the store");
        let web = run(Filter {
            channel: Some("web"),
            ..Filter::default()
        });
        assert_eq!(counts(&web), (4, 2, 2, 1, 3, 135.0));
        assert_eq!(asked(&web), [("pre_purchase_questionnaire", 3, 2)]);
        let email = run(Filter {
            channel: Some("email"),
            ..Filter::default()
        });
        assert_eq!(
            counts(&email),
            (1, 1, 0, 0, 0, 0.0),
            "answering is a visit, being sent a survey is not"
        );
        assert_eq!(asked(&email), [("post_purchase_questionnaire", 2, 1)]);
    }

    #[test]
    fn segment_filter() {
        let (c, index) = fixture();
        let members: RoaringBitmap = [1, 3].iter().map(|p| index.slot(*p).unwrap()).collect();
        let filter = Filter {
            members: Some(&members),
            ..Filter::default()
        };
        let k = kpis(&index, &c, &filter, Bucket::Month).unwrap();
        assert_eq!(counts(&k), (2, 2, 2, 1, 3, 125.0));
        assert_eq!(k.average_basket, Some(41.67));
        assert_eq!(
            asked(&k),
            [
                ("pre_purchase_questionnaire", 0, 0),
                ("post_purchase_questionnaire", 2, 1)
            ]
        );
    }

    #[test]
    fn too_many_periods() {
        let (c, index) = fixture();
        let filter = Filter {
            from: Some("2020-01-01T00:00:00Z".parse().unwrap()),
            to: Some("2026-01-01T00:00:00Z".parse().unwrap()),
            ..Filter::default()
        };
        assert!(matches!(
            kpis(&index, &c, &filter, Bucket::Day),
            Err(KpiError::TooManyPeriods {
                bucket: "day",
                count: 2192
            })
        ));
        assert_eq!(kpis(&index, &c, &filter, Bucket::Month).unwrap().series.len(), 72);
    }

    /// (touchpoint, events, profiles, converted, offered/answered where asked).
    type Row = (String, u64, u64, u64, Option<(u64, u64)>);

    fn rows(j: &Journey) -> Vec<Vec<Row>> {
        j.phases
            .iter()
            .map(|p| {
                p.touchpoints
                    .iter()
                    .filter(|s| s.events > 0 || s.response.is_some())
                    .map(|s| {
                        (
                            s.touchpoint.clone(),
                            s.events,
                            s.profiles,
                            s.converted,
                            s.response.map(|r| (r.offered, r.answered)),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn row(t: &str, events: u64, profiles: u64, converted: u64, asked: Option<(u64, u64)>) -> Row {
        (t.to_owned(), events, profiles, converted, asked)
    }

    /// (phase, events, profiles, converted, conversion rate, response rate).
    type PhaseRow = (Phase, u64, u64, u64, Option<f64>, Option<f64>);

    #[test]
    fn journey_map() {
        let (c, index) = fixture();
        let j = journey(&index, &c, &Filter::default());
        assert_eq!(
            rows(&j),
            [
                vec![
                    row("pre_purchase_questionnaire", 4, 3, 1, Some((3, 2))),
                    row("site_visit", 5, 4, 2, None),
                ],
                vec![row("checkout", 3, 2, 2, None), row("store_till", 1, 1, 1, None)],
                vec![row("post_purchase_questionnaire", 3, 2, 1, Some((2, 1)))],
            ]
        );
        let phases: Vec<PhaseRow> = j
            .phases
            .iter()
            .map(|p| {
                (
                    p.phase,
                    p.events,
                    p.profiles,
                    p.converted,
                    p.conversion_rate,
                    p.response.and_then(|r| r.rate),
                )
            })
            .collect();
        assert_eq!(
            phases,
            [
                (Phase::Discovery, 9, 4, 2, Some(0.5), Some(2.0 / 3.0)),
                (Phase::Purchase, 4, 3, 3, Some(1.0), None),
                (Phase::PostPurchase, 3, 2, 1, Some(0.5), Some(0.5)),
            ],
            "profile 3 was surveyed after their only order: not converted there"
        );
        let ids: Vec<&str> = j.phases[0].touchpoints.iter().map(|s| s.touchpoint.as_str()).collect();
        assert_eq!(
            ids,
            [
                "contest",
                "newsletter_signup",
                "pre_purchase_questionnaire",
                "site_visit"
            ],
            "every declared touchpoint is listed, by phase then id"
        );
        assert_eq!(j.phases[0].touchpoints[0].conversion_rate, None);
        assert_eq!(j.phases[0].touchpoints[0].response, None);
    }

    #[test]
    fn journey_filters() {
        let (c, index) = fixture();
        let march = journey(
            &index,
            &c,
            &Filter {
                from: Some(at("03-09T00:00")),
                to: Some(at("04-01T00:00")),
                ..Filter::default()
            },
        );
        assert_eq!(
            rows(&march),
            [
                vec![
                    row("pre_purchase_questionnaire", 2, 1, 1, Some((1, 1))),
                    row("site_visit", 1, 1, 1, None),
                ],
                vec![row("checkout", 2, 2, 2, None)],
                vec![row("post_purchase_questionnaire", 0, 0, 0, Some((0, 0)))],
            ]
        );
        let email = journey(
            &index,
            &c,
            &Filter {
                channel: Some("email"),
                ..Filter::default()
            },
        );
        let listed: Vec<usize> = email.phases.iter().map(|p| p.touchpoints.len()).collect();
        assert_eq!(listed, [0, 0, 1], "only the email touchpoints");
        assert_eq!(email.phases[2].conversion_rate, Some(0.5));
    }

    #[test]
    fn consent_rates_by_touchpoint() {
        let c = Catalog::builtin();
        let row = |purpose, status, source, touchpoint, count| ConsentRow {
            purpose,
            status,
            source,
            touchpoint,
            count,
        };
        let rows = [
            row("analytics", Status::Granted, Some("web"), Some("site_visit"), 3),
            row("analytics", Status::Denied, Some("web"), Some("site_visit"), 1),
            row(
                "marketing_email",
                Status::Granted,
                Some("web"),
                Some("newsletter_signup"),
                2,
            ),
            row(
                "marketing_email",
                Status::Withdrawn,
                Some("web"),
                Some("newsletter_signup"),
                2,
            ),
            row(
                "satisfaction",
                Status::Objected,
                Some("forms"),
                Some("post_purchase_questionnaire"),
                1,
            ),
            row("personalisation", Status::Granted, None, None, 4),
        ];
        let all = consent_by_touchpoint(&c, &rows, &Filter::default());
        let summary: Vec<(Option<&str>, Option<f64>, u64)> = all
            .iter()
            .map(|t| (t.touchpoint.as_deref(), t.all.granted_rate, t.all.total))
            .collect();
        assert_eq!(
            summary,
            [
                (Some("newsletter_signup"), Some(0.5), 4),
                (Some("site_visit"), Some(0.75), 4),
                (Some("post_purchase_questionnaire"), Some(0.0), 1),
                (None, Some(1.0), 4),
            ]
        );
        let site = &all[1].purposes[0];
        assert_eq!(
            (
                site.purpose.as_str(),
                site.decisions.denied_rate,
                site.decisions.withdrawn_rate
            ),
            ("analytics", Some(0.25), Some(0.0))
        );
        assert_eq!(all[0].purposes[0].decisions.withdrawn_rate, Some(0.5));
        assert_eq!(all[2].channel.as_deref(), Some("email"));

        let web = consent_by_touchpoint(
            &c,
            &rows,
            &Filter {
                channel: Some("web"),
                ..Filter::default()
            },
        );
        assert_eq!(web.len(), 2);
        let forms = consent_by_touchpoint(
            &c,
            &rows,
            &Filter {
                source: Some("forms"),
                ..Filter::default()
            },
        );
        assert_eq!(forms.len(), 1);
        assert_eq!(forms[0].all.objected, 1);
    }

    #[test]
    fn buckets() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap().as_second();
        assert_eq!(Bucket::Week.start(t("2026-03-08T23:59:59Z")), t("2026-03-02T00:00:00Z"));
        assert_eq!(Bucket::Week.start(t("2026-03-09T00:00:00Z")), t("2026-03-09T00:00:00Z"));
        assert_eq!(
            Bucket::Month.start(t("2026-02-28T12:00:00Z")),
            t("2026-02-01T00:00:00Z")
        );
        assert_eq!(Bucket::Month.next(t("2026-12-01T00:00:00Z")), t("2027-01-01T00:00:00Z"));
        assert_eq!(Bucket::Day.start(t("1969-12-31T23:00:00Z")), t("1969-12-31T00:00:00Z"));
    }
}
