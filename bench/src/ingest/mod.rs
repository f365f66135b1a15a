//! The ingestion benchmark: `/v1/batch` throughput of Confiance against the bound of the machine.
//!
//! # Design
//!
//! The bound is a minimal axum server whose `/v1/batch` handler only parses the body into a
//! `serde_json::Value` and counts the messages: no authentication, no normalisation, no store.
//! Confiance cannot ingest faster than the same HTTP stack reads and parses the same bytes on
//! the same cores, so the ratio of the two rates is a figure that means the same thing on any
//! machine, which an absolute rate does not.
//!
//! Both servers run in this process, on the same multi-thread tokio runtime as the load
//! generator, one after the other with the same bodies, connections and durations: on a
//! two-core machine the generator takes its share of the CPU from both alike. Confiance runs
//! its real router, state and store (SQLite in a fresh temporary directory, with its group
//! commits each synced to disk before it is answered; optionally a fresh PostgreSQL database),
//! and afterwards the benchmark checks that the store holds exactly the events that were
//! acknowledged: a rate of events that were not kept would be no rate at all.
//!
//! Confiance runs twice more on SQLite: with consent enforcement switched off, a switch that
//! exists only for this, to tell what applying consent at collection costs; and with the
//! identity resolver following the log beside the server, as `confiance serve` runs it, to
//! tell what ingestion keeps of its rate when the rest of the pipeline runs too.
//!
//! Next to each rate the table gives the CPU cores the process kept busy: a server that uses
//! less than the machine's cores while requests wait is held up by something serial (a lock,
//! a single writer), not by work. The [`stages`] measured alone afterwards say which stage.

mod stages;

use crate::bodies::Bodies;
use crate::load::{self, Outcome, Plan};
use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use confiance_core::catalog::Catalog;
use confiance_core::clock::SystemClock;
use confiance_core::source::{SourceKind, SourceName, WriteKey};
use confiance_server::AppState;
use confiance_store::Store;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// Events per request, as the issue sets it.
const BATCH_SIZE: usize = 100;

/// Requests appended when the store is measured alone.
const STORE_REQUESTS: u64 = 400;

/// How the benchmark runs.
pub struct Options {
    /// Seconds measured per server.
    pub seconds: u64,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// A PostgreSQL server to also measure, as a URL of a database to connect to first.
    pub database_url: Option<String>,
}

/// A figure of the table: a measured outcome, or why there is none.
enum Row {
    /// With, on SQLite, the largest size the write-ahead log file reached during the run.
    Measured(Outcome, Option<u64>),
    Unavailable(String),
}

/// Runs the benchmark and prints its table.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let catalog = Catalog::builtin();
    let bodies = Arc::new(Bodies::build(BATCH_SIZE, &catalog)?);
    let plan = |url: String, write_key: Option<String>| Plan {
        url,
        write_key,
        connections: options.connections,
        prime: bodies.templates(),
        warm_up: Duration::from_secs(1),
        measured: Duration::from_secs(options.seconds),
    };
    println!(
        "/v1/batch: {BATCH_SIZE} track events per request, {} bytes per event on average \
         ({} bytes per request), {} connections, {} s measured after 1 s of warm-up",
        bodies.event_bytes(),
        bodies.request_bytes(),
        options.connections,
        options.seconds
    );
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );

    eprintln!("measuring the baseline (parse only)…");
    let baseline = baseline(&plan, &bodies).await?;

    eprintln!("measuring Confiance on SQLite…");
    let dir = tempfile::tempdir()?;
    let store = Store::open_sqlite(dir.path()).await?;
    let sqlite = confiance(store, Setup::INGESTION, &plan, &bodies, &catalog).await?;

    eprintln!("measuring Confiance on SQLite without consent enforcement…");
    let dir = tempfile::tempdir()?;
    let store = Store::open_sqlite(dir.path()).await?;
    let setup = Setup {
        enforce_consent: false,
        ..Setup::INGESTION
    };
    let unenforced = confiance(store, setup, &plan, &bodies, &catalog).await?;

    eprintln!("measuring Confiance on SQLite with the identity resolver…");
    let dir = tempfile::tempdir()?;
    let store = Store::open_sqlite(dir.path()).await?;
    let setup = Setup {
        resolver: true,
        ..Setup::INGESTION
    };
    let resolving = confiance(store, setup, &plan, &bodies, &catalog).await?;

    let postgres = match &options.database_url {
        None => None,
        Some(url) => {
            eprintln!("measuring Confiance on PostgreSQL…");
            Some(postgres(url, &plan, &bodies, &catalog).await?)
        }
    };

    let mut rows = vec![
        ("baseline: axum + serde_json parse only", Row::Measured(baseline, None)),
        ("Confiance, SQLite (durable commits)", sqlite),
        ("  the same, consent not enforced", unenforced),
        ("  the same, identity resolver beside it", resolving),
    ];
    if let Some(row) = postgres {
        rows.push(("Confiance, PostgreSQL", row));
    }
    print!("{}", table(&rows));

    eprintln!("measuring the stages alone…");
    let normalise = stages::normalise_per_event(&bodies, &catalog)?;
    let dir = tempfile::tempdir()?;
    let store = Store::open_sqlite(dir.path()).await?;
    let store_rate = stages::store_rate(store, &bodies, &catalog, STORE_REQUESTS, options.connections).await?;
    println!("\nstages alone, without HTTP:");
    println!(
        "  parse + normalise: {:.1} µs per event on one thread ({:.0} events/s per core)",
        normalise.as_secs_f64() * 1e6,
        1.0 / normalise.as_secs_f64()
    );
    println!(
        "  SQLite append of normalised batches: {store_rate:.0} events/s from {} concurrent callers",
        options.connections
    );
    Ok(())
}

/// The baseline server: parses each body into a `Value` and counts the messages, nothing more.
async fn baseline(plan: &impl Fn(String, Option<String>) -> Plan, bodies: &Arc<Bodies>) -> anyhow::Result<Outcome> {
    let counted = Arc::new(AtomicU64::new(0));
    let counter = counted.clone();
    let app = Router::new().route(
        "/v1/batch",
        post(move |body: Bytes| {
            let counter = counter.clone();
            async move {
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    return axum::http::StatusCode::BAD_REQUEST.into_response();
                };
                let messages = value["batch"].as_array().map_or(0, Vec::len);
                counter.fetch_add(messages as u64, Ordering::Relaxed);
                ([(header::CONTENT_TYPE, "application/json")], r#"{"success":true}"#).into_response()
            }
        }),
    );
    let server = Server::start(app).await?;
    let outcome = load::run(&plan(server.url(), None), bodies.clone()).await?;
    server.stop().await;
    let counted = counted.load(Ordering::Relaxed);
    anyhow::ensure!(
        counted == outcome.acknowledged,
        "the baseline counted {counted} messages but acknowledged {}",
        outcome.acknowledged
    );
    Ok(outcome)
}

/// How Confiance runs in a measurement.
#[derive(Clone, Copy)]
struct Setup {
    /// Whether collection applies consent, as it always does in production; off only to tell,
    /// in the same run, what enforcement costs.
    enforce_consent: bool,
    /// Whether identity resolution follows the event log beside the server, as `confiance
    /// serve` runs it: it competes with ingestion for the cores and the store's writer.
    resolver: bool,
    /// Whether bodies are sealed under their subject's key, as they always are in production;
    /// off only to tell, in the same run, what encryption at rest costs.
    seal: bool,
}

impl Setup {
    /// Ingestion alone, as in production.
    const INGESTION: Setup = Setup {
        enforce_consent: true,
        resolver: false,
        seal: true,
    };
}

/// A part of ingestion whose cost [`cost`] measures by switching it off.
#[derive(Clone, Copy, Debug)]
pub enum Part {
    /// Consent enforcement at collection.
    Consent,
    /// Sealing each body under its subject's key.
    Sealing,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Consent => "consent enforcement",
            Part::Sealing => "per-subject encryption",
        }
    }

    fn setup(self, on: bool) -> Setup {
        match self {
            Part::Consent => Setup {
                enforce_consent: on,
                ..Setup::INGESTION
            },
            Part::Sealing => Setup {
                seal: on,
                ..Setup::INGESTION
            },
        }
    }
}

/// Confiance's whole router over `store`, with one source; checks the store afterwards.
async fn confiance(
    store: Store,
    setup: Setup,
    plan: &impl Fn(String, Option<String>) -> Plan,
    bodies: &Arc<Bodies>,
    catalog: &Catalog,
) -> anyhow::Result<Row> {
    store.set_sealing(setup.seal);
    let key = WriteKey::generate();
    let name = SourceName::parse("bench-web")?;
    store
        .create_source(&name, SourceKind::Web, &key.digest(), &key.prefix())
        .await
        .context("creating the source")?;
    let options = confiance_server::Options {
        enforce_consent: setup.enforce_consent,
        ..confiance_server::Options::default()
    };
    let state = AppState::with_options(store.clone(), catalog.clone(), Arc::new(SystemClock), options);
    let (stop_resolver, stopped) = tokio::sync::watch::channel(false);
    let resolver = setup
        .resolver
        .then(|| tokio::spawn(confiance_server::profiles::run_resolver(state.clone(), stopped)));
    let server = Server::start(confiance_server::router(state)).await?;
    let wal = match &store {
        Store::Sqlite(s) => Some(WalWatch::start(s.path())),
        _ => None,
    };
    let outcome = load::run(&plan(server.url(), Some(key.reveal().to_owned())), bodies.clone()).await;
    server.stop().await;
    let wal = match wal {
        Some(w) => Some(w.stop().await),
        None => None,
    };
    // Aborted, not signalled: with a backlog it would work through all of it before looking at
    // the signal, and what it did not resolve during the measurement does not matter here. The
    // signal is kept open until then, as its closing would stop the resolver at once.
    if let Some(resolver) = resolver {
        resolver.abort();
    }
    drop(stop_resolver);
    let outcome = outcome?;
    let stored = store.count_events().await.context("counting the events")?;
    anyhow::ensure!(
        stored == outcome.acknowledged as i64,
        "the store holds {stored} events but {} were acknowledged",
        outcome.acknowledged
    );
    eprintln!(
        "  stored events: {stored}, acknowledged: {} (equal)",
        outcome.acknowledged
    );
    Ok(Row::Measured(outcome, wal))
}

/// Samples the size of a SQLite store's write-ahead log file while a run lasts: the
/// checkpoints must keep it bounded under sustained load.
struct WalWatch {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<u64>,
}

impl WalWatch {
    fn start(db: &std::path::Path) -> Self {
        let mut file = db.as_os_str().to_owned();
        file.push("-wal");
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut largest = 0;
            loop {
                let size = std::fs::metadata(&file).map_or(0, |m| m.len());
                largest = largest.max(size);
                tokio::select! {
                    _ = &mut stopped => return largest,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        });
        Self { stop, task }
    }

    /// The largest size seen, in bytes.
    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(0)
    }
}

/// Confiance on a fresh PostgreSQL database, created beside the one `url` names and dropped
/// afterwards. A store that cannot run is reported in the table instead of a figure.
async fn postgres(
    url: &str,
    plan: &impl Fn(String, Option<String>) -> Plan,
    bodies: &Arc<Bodies>,
    catalog: &Catalog,
) -> anyhow::Result<Row> {
    let (admin, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    let database = format!("confiance_bench_{}", std::process::id());
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .context("creating the benchmark database")?;
    let row = match Store::connect_postgres(&with_database(url, &database)).await {
        Ok(store) => confiance(store, Setup::INGESTION, plan, bodies, catalog)
            .await
            .unwrap_or_else(|e| Row::Unavailable(format!("{e:#}"))),
        Err(e) => Row::Unavailable(format!("the store did not open: {e}")),
    };
    // One statement per query: several in one string run as one transaction, which DROP
    // DATABASE refuses.
    for db in [database.clone(), format!("{database}_vault")] {
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await
            .context("dropping the benchmark database")?;
    }
    Ok(row)
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A server running in this process on a free port of the loopback interface.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(app: Router) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self { addr, stop, task })
    }

    fn url(&self) -> String {
        format!("http://{}/v1/batch", self.addr)
    }

    /// Stops accepting and waits for the open connections, which the load generator has
    /// closed by dropping its clients.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The one-minute load average, to tell a run on an idle machine from one on a busy machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn table(rows: &[(&str, Row)]) -> String {
    let baseline = match rows.first() {
        Some((_, Row::Measured(o, _))) => o.events_per_second(),
        _ => f64::NAN,
    };
    let ms = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1e3));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<40} {:>10} {:>12} {:>7} {:>7} {:>9} {:>7} {:>5}",
        "server", "events/s", "of baseline", "p50 ms", "p99 ms", "requests", "errors", "CPU"
    );
    for (name, row) in rows {
        match row {
            Row::Measured(o, wal) => {
                let _ = writeln!(
                    out,
                    "{:<40} {:>10.0} {:>11.1}% {:>7} {:>7} {:>9} {:>7} {:>5.2}",
                    name,
                    o.events_per_second(),
                    100.0 * o.events_per_second() / baseline,
                    ms(o.latency(50.0)),
                    ms(o.latency(99.0)),
                    o.window_requests,
                    o.errors,
                    o.cpu
                );
                if let Some(e) = &o.first_error {
                    let _ = writeln!(out, "    first error: {e}");
                }
                if let Some(bytes) = wal {
                    let _ = writeln!(out, "    largest write-ahead log file: {:.1} MB", *bytes as f64 / 1e6);
                }
                if o.dropped_fields > 0 {
                    let _ = writeln!(
                        out,
                        "    warning: {} fields were dropped by data minimisation",
                        o.dropped_fields
                    );
                }
            }
            Row::Unavailable(why) => {
                let _ = writeln!(out, "{name:<40} not measured: {why}");
            }
        }
    }
    out
}

/// What a part of ingestion costs: runs with and without it, interleaved (on, off, on, off…) so
/// that a change of load on the shared machine hits both alike, each on a fresh SQLite store;
/// reports the median of each and the cost.
pub async fn cost(options: Options, rounds: usize, part: Part) -> anyhow::Result<()> {
    let catalog = Catalog::builtin();
    let bodies = Arc::new(Bodies::build(BATCH_SIZE, &catalog)?);
    let plan = |url: String, write_key: Option<String>| Plan {
        url,
        write_key,
        connections: options.connections,
        prime: bodies.templates(),
        warm_up: Duration::from_secs(1),
        measured: Duration::from_secs(options.seconds),
    };
    println!(
        "{} on and off, interleaved: {rounds} rounds of {} s each, {} connections, load average {}",
        part.name(),
        options.seconds,
        options.connections,
        load_average()
    );
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for switched_on in [true, false] {
            let dir = tempfile::tempdir()?;
            let store = Store::open_sqlite(dir.path()).await?;
            let Row::Measured(outcome, _) = confiance(store, part.setup(switched_on), &plan, &bodies, &catalog).await?
            else {
                anyhow::bail!("a run could not be measured");
            };
            let rate = outcome.events_per_second();
            eprintln!(
                "  round {}: {} {}: {rate:.0} events/s",
                round + 1,
                part.name(),
                if switched_on { "on " } else { "off" }
            );
            if switched_on { on.push(rate) } else { off.push(rate) }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on_median, off_median) = (median(&mut on), median(&mut off));
    println!(
        "on:  median {on_median:.0} events/s  (runs: {})",
        on.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "off: median {off_median:.0} events/s  (runs: {})",
        off.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "cost of {}: {:.1}% of the throughput",
        part.name(),
        (1.0 - on_median / off_median) * 100.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        let cases = [
            ("postgres://u@h:5432/postgres", "postgres://u@h:5432/b"),
            ("postgres://u@h/db?sslmode=disable", "postgres://u@h/b?sslmode=disable"),
            ("postgresql://u:p@h", "postgresql://u:p@h/b"),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "b"), expected);
        }
    }
}
