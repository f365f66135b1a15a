//! The HTTP edge of Confiance: a thin layer that parses requests into the core's types, calls
//! the core and the store, and maps results to responses.
//!
//! - [`collect`]: the Segment-compatible tracking API (`/v1/*`), what SDKs call.
//! - [`admin`]: the admin API (`/api/v1/*`), behind bearer tokens.
//! - [`ops`]: health, metrics, the OpenAPI document and the home page.
#![deny(missing_docs)]

pub mod admin;
pub mod auth;
pub mod collect;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod ops;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use confiance_core::catalog::Catalog;
use confiance_core::clock::Clock;
use confiance_core::source::{KeyDigest, Source};
use confiance_store::{Role, Store};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Everything a request handler may need.
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The validated data catalog.
    pub catalog: Arc<Catalog>,
    /// The clock ("now" is injectable in tests).
    pub clock: Arc<dyn Clock>,
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
    /// Sources by write-key digest, filled on first use.
    sources: RwLock<HashMap<KeyDigest, Source>>,
    /// Token roles by digest, filled on first use.
    tokens: RwLock<HashMap<KeyDigest, Role>>,
}

/// The state shared by every handler.
pub type Shared = Arc<AppState>;

impl AppState {
    /// State over `store` with `catalog`.
    pub fn new(store: Store, catalog: Catalog, clock: Arc<dyn Clock>) -> Shared {
        Arc::new(Self {
            store,
            catalog: Arc::new(catalog),
            clock,
            metrics: metrics::Metrics::default(),
            sources: RwLock::default(),
            tokens: RwLock::default(),
        })
    }
}

/// Counts and times every request by its route pattern. Logs carry the route, never the URI:
/// query strings may hold identifiers.
async fn observe(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    app.metrics.request(&route, status, elapsed);
    tracing::debug!(%method, route, status, micros = elapsed.as_micros() as u64, "request");
    response
}

/// The whole application.
pub fn router(state: Shared) -> Router {
    Router::new()
        .merge(collect::routes())
        .merge(admin::routes())
        .merge(ops::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::middleware::from_fn(ops::security_headers))
        .with_state(state)
}
