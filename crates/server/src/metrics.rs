//! Prometheus metrics: requests, what collection did with each message, store latency.
//!
//! Labels never carry personal data: routes are the matched route patterns (not the URIs, which
//! may hold ids in their query strings), sources are source names, reasons are error codes.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The metrics of one process.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_latency: Family<Labels, Histogram, fn() -> Histogram>,
    events: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    store_latency: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "confiance_http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let request_latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "confiance_http_request_duration_seconds",
            "HTTP request latency by route",
            request_latency.clone(),
        );
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "confiance_events",
            "Messages received, by source and outcome (accepted, duplicate, rejected) and reason",
            events.clone(),
        );
        let dropped = Family::<Labels, Counter>::default();
        registry.register(
            "confiance_fields_dropped",
            "Fields left out by data minimisation, by source and reason",
            dropped.clone(),
        );
        let store_latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "confiance_store_duration_seconds",
            "Store operation latency by operation and backend",
            store_latency.clone(),
        );
        Self {
            registry,
            requests,
            request_latency,
            events,
            dropped,
            store_latency,
        }
    }
}

impl Metrics {
    /// Counts one HTTP request.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&vec![("route", route.to_owned()), ("status", status.to_string())])
            .inc();
        self.request_latency
            .get_or_create(&vec![("route", route.to_owned())])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts messages of a source by outcome and reason.
    pub fn events(&self, source: &str, outcome: &'static str, reason: &str, n: u64) {
        if n > 0 {
            self.events
                .get_or_create(&vec![
                    ("source", source.to_owned()),
                    ("outcome", outcome.to_owned()),
                    ("reason", reason.to_owned()),
                ])
                .inc_by(n);
        }
    }

    /// Counts dropped fields of a source by reason.
    pub fn dropped(&self, source: &str, reason: &str, n: u64) {
        self.dropped
            .get_or_create(&vec![("source", source.to_owned()), ("reason", reason.to_owned())])
            .inc_by(n);
    }

    /// Observes one store operation.
    pub fn store(&self, op: &'static str, backend: &'static str, elapsed: Duration) {
        self.store_latency
            .get_or_create(&vec![("op", op.to_owned()), ("backend", backend.to_owned())])
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
