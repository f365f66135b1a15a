//! `confiance serve`: the HTTP server, with graceful shutdown.

use anyhow::{Context, Result};
use confiance_core::catalog::Catalog;
use confiance_core::clock::SystemClock;
use confiance_core::source::KeyDigest;
use confiance_server::{AppState, Options};
use confiance_store::{Role, Store};
use std::net::SocketAddr;
use std::sync::Arc;

/// Records the bootstrap admin token from `CONFIANCE_ADMIN_TOKEN` (hashed) in the store.
pub async fn bootstrap_admin(store: &Store) -> Result<()> {
    if let Ok(token) = std::env::var("CONFIANCE_ADMIN_TOKEN") {
        let token = token.trim();
        if token.len() < 16 {
            anyhow::bail!("CONFIANCE_ADMIN_TOKEN must be at least 16 characters");
        }
        store.put_token(&KeyDigest::of(token), Role::Admin, "bootstrap").await?;
    }
    Ok(())
}

/// Serves until SIGINT or SIGTERM, then finishes in-flight requests before returning.
pub async fn serve(
    store: Store,
    catalog: Catalog,
    listen: SocketAddr,
    options: Options,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let backend = store.backend();
    let state = AppState::with_options(store, catalog, Arc::new(SystemClock), options);
    let version = confiance_server::governance::record_versions(&state).await?;
    tracing::info!(catalog_version = version, "records of processing and notice archived");
    // Identity resolution follows the event log beside the HTTP server.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let resolver = tokio::spawn(confiance_server::profiles::run_resolver(state.clone(), stopped.clone()));
    let audience = tokio::spawn(confiance_server::segments::run_audience(state.clone(), stopped.clone()));
    let campaigns = tokio::spawn(confiance_server::activate::run_campaigns(
        state.clone(),
        stopped.clone(),
    ));
    let breaches = tokio::spawn(confiance_server::breaches::run_breach_work(
        state.clone(),
        stopped.clone(),
    ));
    let notices = tokio::spawn(confiance_server::notices::run_notice_work(
        state.clone(),
        stopped.clone(),
    ));
    let retention = tokio::spawn(confiance_server::retention::run_daily(state.clone(), stopped));
    let app = confiance_server::router(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, store = backend, "confiance is listening");
    on_ready(addr);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    let _ = stop.send(true);
    let _ = resolver.await;
    let _ = retention.await;
    let _ = audience.await;
    let _ = campaigns.await;
    let _ = breaches.await;
    let _ = notices.await;
    tracing::info!("stopped: in-flight requests finished");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
