//! `confiance`: the one binary of Confiance, a self-hosted, consent-first customer data
//! platform. See the README for what each command does.

mod config;
mod demo;
mod import;
mod serve;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use confiance_core::governance::compliance::Outcome;
use confiance_core::source::{SourceKind, SourceName, WriteKey};
use config::{Config, StoreArgs};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "confiance", version, about = "Consent-first customer data platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the tracking and admin APIs.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "CONFIANCE_LISTEN")]
        listen: Option<SocketAddr>,
        /// Public base URL used in links (preference centre); default: the request's host.
        #[arg(long, env = "CONFIANCE_PUBLIC_URL")]
        public_url: Option<String>,
        /// SMTP relay for email (identity checks), as smtp://host:port.
        #[arg(long, env = "CONFIANCE_SMTP_URL")]
        smtp_url: Option<String>,
        /// SMS provider endpoint (identity checks): receives `POST {"to", "text"}`.
        #[arg(long, env = "CONFIANCE_SMS_URL")]
        sms_url: Option<String>,
        /// Bearer token for the SMS provider.
        #[arg(long, env = "CONFIANCE_SMS_TOKEN", hide_env_values = true)]
        sms_token: Option<String>,
        /// Sender of email, `Name <address>`.
        #[arg(long, env = "CONFIANCE_MAIL_FROM", default_value = "Confiance <no-reply@localhost>")]
        mail_from: String,
        /// Write key the demo shop page (`/demo/shop`) sends with; the page is off without it.
        #[arg(long, env = "CONFIANCE_SHOP_WRITE_KEY", hide = true)]
        shop_write_key: Option<String>,
    },
    /// Builds the demo shop (10,000 synthetic customers) in a fresh data directory and serves it.
    Demo {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Directory of the demo's store, rebuilt on each run [default: ./confiance-demo].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Manages sources and their write keys.
    Source {
        #[command(subcommand)]
        command: SourceCommand,
    },
    /// Imports a CSV export (till, CRM, helpdesk) into the event log.
    Import {
        /// Name of the source the rows come from.
        #[arg(long)]
        source: String,
        /// The CSV file.
        file: PathBuf,
        /// A TOML mapping of columns to message fields (guessed from the header when absent).
        #[arg(long)]
        mapping: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Applies the retention rules now (the server also runs them daily).
    Retention {
        /// Report what would be deleted or anonymised, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Works with the tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Works with the data catalog.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Runs the compliance checks (for cron and CI).
    Compliance {
        #[command(subcommand)]
        command: ComplianceCommand,
    },
}

#[derive(Subcommand)]
enum ComplianceCommand {
    /// Runs every rule and prints its outcome and evidence; exit status 1 when one fails.
    Check {
        /// Print the whole report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum SourceCommand {
    /// Creates a source; prints its write key as the only line of standard output.
    Add {
        /// Name: lowercase letters, digits, `-` and `_`.
        name: String,
        /// Kind of touchpoint.
        #[arg(long, value_parser = parse_kind)]
        kind: SourceKind,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lists sources with their collection counters.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Checks the whole hash chain; names the first entry that does not verify (exit status 1).
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Validates the catalog of a configuration file and reports every problem.
    Check {
        /// Configuration file holding the catalog (the built-in catalog when absent).
        #[arg(long, env = "CONFIANCE_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn parse_kind(s: &str) -> Result<SourceKind, String> {
    s.parse().map_err(|e: confiance_core::Error| e.message)
}

fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CONFIANCE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve {
            store,
            listen,
            public_url,
            smtp_url,
            sms_url,
            sms_token,
            mail_from,
            shop_write_key,
        } => {
            init_logs();
            let config = Config::load(&store)?;
            let listen = listen
                .or(config.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
            let mailer = match smtp_url.or(config.smtp_url.clone()) {
                Some(url) => Some(confiance_server::mail::Mailer::new(&url, &mail_from).map_err(anyhow::Error::msg)?),
                None => None,
            };
            let sms = match sms_url {
                Some(url) => {
                    Some(confiance_server::mail::SmsProvider::new(&url, sms_token).map_err(anyhow::Error::msg)?)
                }
                None => None,
            };
            let options = confiance_server::Options {
                public_url: public_url.or(config.public_url.clone()),
                shop_write_key,
                mailer,
                sms,
                ..Default::default()
            };
            let store = config.open_store().await?;
            serve::bootstrap_admin(&store).await?;
            serve::serve(store, config.catalog, listen, options, |_| {}).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { listen, data_dir } => {
            init_logs();
            let dir = data_dir.unwrap_or_else(|| PathBuf::from("./confiance-demo"));
            let listen = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
            demo::run(&dir, listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Source { command } => match command {
            SourceCommand::Add { name, kind, store } => {
                let config = Config::load(&store)?;
                let name = SourceName::parse(&name)?;
                let store = config.open_store().await?;
                let key = WriteKey::generate();
                store
                    .create_source(&name, kind, &key.digest(), &key.prefix())
                    .await
                    .with_context(|| format!("creating source `{name}`"))?;
                println!("{}", key.reveal());
                Ok(ExitCode::SUCCESS)
            }
            SourceCommand::List { store } => {
                let config = Config::load(&store)?;
                let store = config.open_store().await?;
                println!(
                    "{:<20} {:<8} {:<10} {:>10} {:>10} {:>9} {:>9}  created",
                    "name", "kind", "key", "accepted", "duplicate", "rejected", "dropped"
                );
                for source in store.list_sources().await? {
                    let counters = store.source_counters(source.id).await?;
                    let sum = |prefix: &str| -> i64 {
                        counters
                            .iter()
                            .filter(|(n, _)| n.starts_with(prefix))
                            .map(|(_, v)| v)
                            .sum()
                    };
                    println!(
                        "{:<20} {:<8} {:<10} {:>10} {:>10} {:>9} {:>9}  {}",
                        source.name.as_ref(),
                        source.kind.as_str(),
                        format!("{}…", source.key_prefix),
                        sum("accepted"),
                        sum("duplicate"),
                        sum("rejected."),
                        sum("dropped."),
                        source.created_at.strftime("%Y-%m-%d %H:%M"),
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Import {
            source,
            file,
            mapping,
            store,
        } => {
            let config = Config::load(&store)?;
            let db = config.open_store().await?;
            let app = confiance_server::AppState::new(
                db,
                config.catalog,
                std::sync::Arc::new(confiance_core::clock::SystemClock),
            );
            let show_progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report = import::run(&app, &source, &file, mapping.as_deref(), show_progress).await?;
            for (line, reason) in &report.rejected {
                eprintln!("line {line}: rejected: {reason}");
            }
            if !report.withheld.is_empty() {
                eprintln!(
                    "not stored, no legal basis (no consent) for any of their purposes: {} row(s), lines {}",
                    report.withheld.len(),
                    report
                        .withheld
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for ((field, reason), rows) in &report.dropped {
                eprintln!("not stored: {field} ({reason}) in {rows} row(s)");
            }
            println!(
                "{} rows read: {} stored, {} already imported, {} rejected, {} withheld",
                report.rows,
                report.stored,
                report.already,
                report.rejected.len(),
                report.withheld.len()
            );
            Ok(if report.rejected.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Retention { dry_run, store } => {
            let config = Config::load(&store)?;
            let db = config.open_store().await?;
            let app = confiance_server::AppState::new(
                db,
                config.catalog,
                std::sync::Arc::new(confiance_core::clock::SystemClock),
            );
            let report = confiance_server::retention::run_retention(&app, dry_run)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.into_error()))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Verify { store },
        } => {
            let config = Config::load(&store)?;
            let store = config.open_store().await?;
            match store.verify_audit().await? {
                Ok(n) => {
                    println!("audit log verified: {n} entries, chain intact");
                    Ok(ExitCode::SUCCESS)
                }
                Err(broken) => {
                    println!("audit log BROKEN: {broken}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Compliance {
            command: ComplianceCommand::Check { json, store },
        } => {
            let config = Config::load(&store)?;
            let db = config.open_store().await?;
            let now = jiff::Timestamp::now();
            let report = confiance_server::governance::compliance_report(&db, &config.catalog, now).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for rule in &report.rules {
                    let outcome = match rule.outcome {
                        Outcome::Pass => "PASS",
                        Outcome::Fail => "FAIL",
                    };
                    println!("{outcome} {}: {}", rule.rule, rule.summary);
                    if rule.outcome == Outcome::Fail {
                        println!("     evidence: {}", rule.evidence);
                    }
                }
                let failed = report.rules.iter().filter(|r| r.outcome == Outcome::Fail).count();
                println!("{} rules, {failed} failed", report.rules.len());
            }
            Ok(if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Catalog {
            command: CatalogCommand::Check { config },
        } => {
            let args = StoreArgs {
                config,
                ..StoreArgs::default()
            };
            match Config::load(&args) {
                Ok(c) => {
                    println!(
                        "catalog OK: {} purposes, {} traits, {} events, {} touchpoints, {} sources",
                        c.catalog.purposes.len(),
                        c.catalog.traits.len(),
                        c.catalog.events.len(),
                        c.catalog.touchpoints.len(),
                        c.catalog.sources.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e:#}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}
