//! The HTTP edge of Confiance: a thin layer that parses requests into the core's types, calls
//! the core and the store, and maps results to responses.
//!
//! - [`collect`]: the Segment-compatible tracking API (`/v1/*`), what SDKs call.
//! - [`admin`]: the admin API (`/api/v1/*`), behind bearer tokens.
//! - [`ops`]: health, metrics, the OpenAPI document and the home page.
#![deny(missing_docs)]

pub mod activate;
pub mod admin;
pub mod auth;
pub mod banner;
pub mod breaches;
pub mod collect;
pub mod consent;
pub mod error;
pub mod governance;
pub mod kpis;
pub mod mail;
pub mod matching;
pub mod metrics;
pub mod notices;
pub mod openapi;
pub mod ops;
pub mod preferences;
pub mod profiles;
pub mod requests;
pub mod retention;
pub mod segments;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use confiance_core::catalog::Catalog;
use confiance_core::clock::Clock;
use confiance_core::source::{KeyDigest, Source};
use confiance_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// The allocator of every binary that serves (the `confiance` binary, the benchmarks, the
/// tests), set here once rather than in each of them: reads and ingestion allocate and free
/// millions of small JSON values, and glibc's allocator took about a quarter of the privacy
/// benchmark's samples (BENCHMARKS.md, Rights).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Callers by token digest, filled on first use.
    tokens: RwLock<HashMap<KeyDigest, auth::Caller>>,
    /// The instance secret (keys hashes, signs links), read from the store on first use.
    secret: tokio::sync::OnceCell<Vec<u8>>,
    /// The hash of the banner's notice, computed on first use.
    notice_hash: std::sync::OnceLock<String>,
    /// Deployment options.
    pub options: Options,
    /// Guards of identity resolution.
    pub guards: Arc<confiance_core::unify::graph::Guards>,
    /// Survivorship rules of golden records.
    pub survivorship: confiance_core::unify::golden::Survivorship,
    /// Signalled whenever ingestion stored something, to wake the resolver.
    pub stored: tokio::sync::Notify,
    /// Signalled when people are to be told of a breach, to wake the breach worker.
    pub breach_work: tokio::sync::Notify,
    /// The in-memory audience index, kept current from the change feed.
    pub audience: segments::Audience,
    /// The co-purchase model behind product suggestions.
    pub suggestion_model: activate::SuggestionModel,
}

/// Deployment options of the HTTP layer.
#[derive(Clone, Debug)]
pub struct Options {
    /// The public base URL (`https://cdp.shop.example`) used in links; when absent, links are
    /// built from the request's `Host` header.
    pub public_url: Option<String>,
    /// Whether collection applies consent. Always on in `confiance serve`; the switch exists so
    /// that a benchmark can measure what enforcement costs in the same run.
    pub enforce_consent: bool,
    /// The write key the demo shop page (`/demo/shop`) uses; the page is served only when set.
    pub shop_write_key: Option<String>,
    /// Where email goes (identity checks), when configured.
    pub mailer: Option<mail::Mailer>,
    /// Where text messages go (identity checks), when configured.
    pub sms: Option<mail::SmsProvider>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            public_url: None,
            enforce_consent: true,
            shop_write_key: None,
            mailer: None,
            sms: None,
        }
    }
}

/// The state shared by every handler.
pub type Shared = Arc<AppState>;

impl AppState {
    /// State over `store` with `catalog` and default options.
    pub fn new(store: Store, catalog: Catalog, clock: Arc<dyn Clock>) -> Shared {
        Self::with_options(store, catalog, clock, Options::default())
    }

    /// State over `store` with `catalog` and `options`.
    pub fn with_options(store: Store, catalog: Catalog, clock: Arc<dyn Clock>, options: Options) -> Shared {
        let catalog = Arc::new(catalog);
        Arc::new(Self {
            store,
            catalog: catalog.clone(),
            clock,
            metrics: metrics::Metrics::default(),
            sources: RwLock::default(),
            tokens: RwLock::default(),
            secret: tokio::sync::OnceCell::new(),
            notice_hash: std::sync::OnceLock::new(),
            options,
            guards: Arc::new(catalog.unify.guards.clone()),
            survivorship: catalog.unify.survivorship.clone(),
            stored: tokio::sync::Notify::new(),
            breach_work: tokio::sync::Notify::new(),
            audience: segments::Audience::new(&catalog),
            suggestion_model: activate::SuggestionModel::default(),
        })
    }

    /// The instance secret.
    pub async fn secret(&self) -> Result<&[u8], error::ApiError> {
        let secret = self
            .secret
            .get_or_try_init(|| async { self.store.instance_secret().await })
            .await?;
        Ok(secret)
    }

    /// Records in the audit log that `caller` read personal data, about a profile if known.
    pub async fn audit_read(
        &self,
        caller: &auth::Caller,
        action: &str,
        profile: Option<i64>,
        details: serde_json::Value,
    ) -> Result<(), error::ApiError> {
        let event = confiance_core::privacy::audit::AuditEvent::new(
            caller.actor(),
            action,
            profile.map(|p| format!("profile:{p}")),
            details,
        );
        self.store.audit(vec![event]).await?;
        Ok(())
    }

    /// The profile an identifier belongs to, for the audit log's pseudonymous subject.
    pub async fn profile_ref(&self, identifier: Option<confiance_core::unify::identifier::Identifier>) -> Option<i64> {
        self.store.profile_of(&identifier?).await.ok().flatten()
    }

    /// A keyed hash of an IP address, for consent proofs.
    pub fn hash_ip(&self, secret: &[u8], ip: &str) -> String {
        confiance_core::consent::link::keyed_hash(secret, "ip address", ip.trim())
    }

    /// A keyed hash of a user agent, for consent proofs.
    pub fn hash_ua(&self, secret: &[u8], user_agent: &str) -> String {
        confiance_core::consent::link::keyed_hash(secret, "user agent", user_agent)
    }

    /// The base URL links point to: the configured public URL, or the request's host.
    pub fn base_url(&self, headers: &axum::http::HeaderMap) -> String {
        if let Some(url) = &self.options.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .filter(|p| *p == "https")
            .unwrap_or("http");
        format!("{scheme}://{host}")
    }

    /// A signed preference-centre URL for `subject`, and when it expires.
    pub async fn preference_url(
        &self,
        headers: &axum::http::HeaderMap,
        subject: &confiance_core::consent::Subject,
    ) -> Result<(String, jiff::Timestamp), error::ApiError> {
        let now = self.clock.now();
        let expires = now
            .to_zoned(jiff::tz::TimeZone::UTC)
            .checked_add(self.catalog.consent.link_validity.span())
            .map_err(|e| error::ApiError::new(confiance_core::ErrorCode::Internal, e.to_string()))?
            .timestamp();
        let key = confiance_core::consent::link::LinkKey::derive(self.secret().await?);
        let token = key.sign(subject, expires);
        Ok((format!("{}/preferences?token={token}", self.base_url(headers)), expires))
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
        .merge(banner::routes())
        .merge(consent::routes())
        .merge(preferences::routes())
        .merge(profiles::routes())
        .merge(matching::routes())
        .merge(requests::routes())
        .merge(notices::routes())
        .merge(breaches::routes())
        .merge(retention::routes())
        .merge(segments::routes())
        .merge(activate::routes())
        .merge(kpis::routes())
        .merge(governance::routes())
        .merge(admin::routes())
        .merge(ops::routes())
        .layer(axum::middleware::from_fn(ops::json_rejections))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::middleware::from_fn(ops::security_headers))
        .with_state(state)
}
