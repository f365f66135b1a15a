//! Deduplicates synthetic records probabilistically and times each stage.
//!
//! ```text
//! cargo run --release -p confiance-core --example dedupe_1m -- 1000000 [threads]
//! ```
//!
//! Generates the records (2.5 per person on average), then runs the matching stages one by
//! one — preparation, blocking, comparison, model estimation (u from random pairs, m by EM),
//! scoring, clustering — and prints the time of each, the pairwise precision, recall and F1
//! against the generator's truth, and the peak resident memory (`VmHWM`, Linux only).

use confiance_core::unify::matching::synthetic::{PairwiseScores, SyntheticConfig, generate};
use confiance_core::unify::matching::{Candidates, Compared, MatchConfig, Model, Prepared, ReviewDecisions, cluster};
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let records: usize = args
        .next()
        .map(|a| a.parse().expect("the number of records"))
        .unwrap_or(1_000_000);
    let threads: usize = args
        .next()
        .map(|a| a.parse().expect("the number of threads"))
        .unwrap_or(0);
    let config = MatchConfig {
        threads,
        ..MatchConfig::default()
    };

    let started = Instant::now();
    let synthetic = generate(&SyntheticConfig {
        people: (records as f64 / 2.5).round() as usize,
        ..SyntheticConfig::default()
    });
    let generated = started.elapsed();
    println!(
        "generated {} records of {} people in {}",
        synthetic.records.len(),
        synthetic.people,
        secs(generated)
    );

    let mut stages = Vec::new();
    let mut stage = |name: &'static str, from: Instant| {
        let took = from.elapsed();
        println!("  {name:<11} {}", secs(took));
        stages.push(took);
    };
    let t = Instant::now();
    let prepared = Prepared::new(&synthetic.records, &config).expect("valid records");
    stage("prepare", t);
    let t = Instant::now();
    let candidates = Candidates::new(&prepared, &config);
    let candidate_pairs = candidates.len();
    stage("blocking", t);
    for rule in &candidates.by_rule {
        println!("    {:?}: {} pairs", rule.rule, rule.pairs);
    }
    let t = Instant::now();
    let compared = Compared::new(&prepared, candidates, &config);
    stage("comparing", t);
    let t = Instant::now();
    let model = Model::estimate(&prepared, &compared, &config);
    stage("EM", t);
    let t = Instant::now();
    let scored = model.score(&prepared, &compared, &config);
    stage("scoring", t);
    let t = Instant::now();
    let outcome = cluster(&prepared, compared, model, scored, &ReviewDecisions::default(), &config)
        .expect("no review decisions to check");
    stage("clustering", t);
    let total: Duration = stages.iter().sum();

    let scores = PairwiseScores::measure(&outcome.clusters, &synthetic.person);
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        threads
    };
    println!(
        "matched {} records in {} on {threads} thread{}: {} candidate pairs, {} merges, \
         {} for review, {} refused, {} skipped blocks",
        synthetic.records.len(),
        secs(total),
        if threads == 1 { "" } else { "s" },
        candidate_pairs,
        outcome.merges.len(),
        outcome.review.len(),
        outcome.refused.len(),
        outcome.report.blocking.skipped_blocks.len(),
    );
    println!(
        "pairwise precision {:.4}, recall {:.4}, F1 {:.4}",
        scores.precision, scores.recall, scores.f1
    );
    match peak_memory() {
        Some(peak) => println!("peak resident memory {peak}"),
        None => println!("peak resident memory unknown (no /proc/self/status)"),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `VmHWM` from `/proc/self/status`: the peak resident set of the process.
fn peak_memory() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().to_owned())
}
