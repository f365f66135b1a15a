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
//! cargo run --release -p confiance-bench -- seal-cost [--rounds N] [--seconds N]
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
        #[command(flatten)]
        runs: Runs,
    },
    /// What sealing bodies under per-subject keys costs ingestion: SQLite runs with and without.
    SealCost {
        #[command(flatten)]
        runs: Runs,
    },
}

/// Interleaved runs with a part of ingestion on and off.
#[derive(clap::Args)]
struct Runs {
    /// Rounds, each one run with the part on and one with it off.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Seconds measured per run, after one second of warm-up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Concurrent keep-alive HTTP/1.1 connections.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    connections: u64,
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
        Command::ConsentCost { runs } => runs.cost(ingest::Part::Consent).await,
        Command::SealCost { runs } => runs.cost(ingest::Part::Sealing).await,
    }
}

impl Runs {
    async fn cost(self, part: ingest::Part) -> anyhow::Result<()> {
        let options = ingest::Options {
            seconds: self.seconds,
            connections: self.connections as usize,
            database_url: None,
        };
        ingest::cost(options, self.rounds as usize, part).await
    }
}
