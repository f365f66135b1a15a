//! `confiance-bench`: benchmarks of Confiance, each against a baseline measured in the same run.
//!
//! An absolute rate says more about the machine than about Confiance, and this machine is
//! shared and noisy. So every benchmark measures, in the same process and the same minutes,
//! the simplest thing that does the same job (the bound Confiance cannot beat on this
//! machine) and reports Confiance's figure as a ratio of it. Benchmarks report; they do not
//! assert: the figures and their analysis go to `BENCHMARKS.md`.
//!
//! ```text
//! cargo run --release -p confiance-bench -- ingest [--seconds N] [--connections C] [--database-url URL]
//! cargo run --release -p confiance-bench -- consent-cost [--rounds N] [--seconds N]
//! ```

mod bodies;
mod ingest;
mod load;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks of Confiance against baselines measured in the same run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Throughput of `/v1/batch` (100 track events per request) against a parse-only server.
    Ingest {
        /// Seconds measured per server, after one second of warm-up.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        /// Concurrent keep-alive HTTP/1.1 connections.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
        connections: u64,
        /// Also measure PostgreSQL: a database URL to connect to, beside which a fresh database
        /// is created for the run and dropped afterwards.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// What consent enforcement costs ingestion: SQLite runs with and without it, interleaved.
    ConsentCost {
        /// Rounds, each one run with enforcement and one without.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        rounds: u64,
        /// Seconds measured per run, after one second of warm-up.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        /// Concurrent keep-alive HTTP/1.1 connections.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
        connections: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ingest {
            seconds,
            connections,
            database_url,
        } => {
            ingest::run(ingest::Options {
                seconds,
                connections: connections as usize,
                database_url,
            })
            .await
        }
        Command::ConsentCost {
            rounds,
            seconds,
            connections,
        } => {
            let options = ingest::Options {
                seconds,
                connections: connections as usize,
                database_url: None,
            };
            ingest::consent_cost(options, rounds as usize).await
        }
    }
}
