//! The load generator: keep-alive HTTP/1.1 connections posting batches as fast as answered.
//!
//! # Design
//!
//! Each of the `C` connections is its own task with its own one-connection client, so "16
//! connections" means sixteen TCP connections each with one request in flight, as sixteen busy
//! SDK instances would open; a shared client could open more or fewer. A connection posts
//! the next body as soon as the previous answer is read (a closed loop), so the rate measured
//! is what the server sustains, not what the generator offers.
//!
//! Before the connections start, one connection posts each distinct batch once, one request at
//! a time ([`Plan::prime`]): every visitor of the bodies is then known to the server, with
//! their consent on record, and the measurement sees the steady state of returning visitors
//! rather than the one-off recording of first choices.
//!
//! Everything then runs for the warm-up plus the measured time; only the requests *answered*
//! inside the measured window count towards the rate and the latencies, so connection
//! set-up, the first allocations and the tail of requests still in flight at the end fall
//! outside it. The acknowledged total over the whole run is kept as well, to compare with
//! what the store holds afterwards.

use crate::bodies::Bodies;
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What to load and how.
pub struct Plan {
    /// The batch endpoint, e.g. `http://127.0.0.1:4000/v1/batch`.
    pub url: String,
    /// The write key, sent as `Authorization: Basic base64(key:)`.
    pub write_key: Option<String>,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests posted one at a time before the connections start.
    pub prime: u64,
    /// Time before measuring starts.
    pub warm_up: Duration,
    /// Time measured.
    pub measured: Duration,
}

/// What a load run observed.
#[derive(Default)]
pub struct Outcome {
    /// Events acknowledged by answers received inside the measured window.
    pub window_events: u64,
    /// The measured window.
    pub window: Duration,
    /// Events acknowledged over the whole run, warm-up and tail included.
    pub acknowledged: u64,
    /// Requests answered inside the measured window.
    pub window_requests: u64,
    /// Requests that failed (transport error, non-200, or fewer events accepted than sent).
    pub errors: u64,
    /// The first failure, to show what went wrong.
    pub first_error: Option<String>,
    /// Fields the server reported dropping: non-zero means the bodies are not what they claim.
    pub dropped_fields: u64,
    /// CPU cores the whole process kept busy on average over the measured window: servers,
    /// store and load generator together, out of the machine's cores.
    pub cpu: f64,
    /// Latencies of the requests answered inside the measured window, sorted.
    latencies: Vec<Duration>,
}

impl Outcome {
    /// Acknowledged events per second over the measured window.
    pub fn events_per_second(&self) -> f64 {
        self.window_events as f64 / self.window.as_secs_f64()
    }

    /// The `p`-th percentile (0–100) of request latency, by nearest rank.
    pub fn latency(&self, p: f64) -> Option<Duration> {
        let n = self.latencies.len();
        let rank = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n.max(1));
        self.latencies.get(rank - 1).copied()
    }

    fn merge(&mut self, other: Outcome) {
        self.window_events += other.window_events;
        self.acknowledged += other.acknowledged;
        self.window_requests += other.window_requests;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.dropped_fields += other.dropped_fields;
        self.latencies.extend(other.latencies);
    }
}

/// The part of an answer the generator checks. The baseline only says `success`; Confiance
/// also says how many events it stored and which fields it dropped.
#[derive(Deserialize)]
struct Answer {
    accepted: Option<u64>,
    #[serde(default)]
    dropped: Vec<IgnoredAny>,
}

/// Runs the plan against a server and gathers what every connection saw.
pub async fn run(plan: &Plan, bodies: Arc<Bodies>) -> anyhow::Result<Outcome> {
    let next_request = Arc::new(AtomicU64::new(0));
    let connect = || -> anyhow::Result<Connection> {
        Ok(Connection {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .no_proxy()
                .no_gzip()
                .build()?,
            url: plan.url.clone(),
            write_key: plan.write_key.clone(),
            bodies: bodies.clone(),
            next_request: next_request.clone(),
        })
    };
    let primed = connect()?.prime(plan.prime).await?;

    let started = Instant::now();
    let window_start = started + plan.warm_up;
    let end = window_start + plan.measured;
    let mut tasks = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        tasks.push(tokio::spawn(connect()?.run(window_start, end)));
    }
    tokio::time::sleep_until(window_start.into()).await;
    let cpu_before = process_cpu_time();
    tokio::time::sleep_until(end.into()).await;
    let cpu = process_cpu_time().zip(cpu_before).map(|(after, before)| after - before);
    let mut outcome = Outcome {
        window: plan.measured,
        acknowledged: primed,
        cpu: cpu.map_or(f64::NAN, |c| c.as_secs_f64() / plan.measured.as_secs_f64()),
        ..Outcome::default()
    };
    for task in tasks {
        outcome.merge(task.await?);
    }
    outcome.latencies.sort_unstable();
    Ok(outcome)
}

/// CPU time this process has used so far, user and system, from `/proc/self/stat` (Linux,
/// whose clock ticks are 1/100 s for user space).
fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: the state
    // is field 3, utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

struct Connection {
    client: reqwest::Client,
    url: String,
    write_key: Option<String>,
    bodies: Arc<Bodies>,
    next_request: Arc<AtomicU64>,
}

impl Connection {
    /// Posts `requests` requests one after the other; returns the events acknowledged.
    async fn prime(self, requests: u64) -> anyhow::Result<u64> {
        let mut acknowledged = 0;
        for _ in 0..requests {
            let n = self.next_request.fetch_add(1, Ordering::Relaxed);
            let answer = self
                .post(self.bodies.request(n))
                .await
                .map_err(|e| anyhow::anyhow!("priming request {n} failed: {e}"))?;
            acknowledged += answer.accepted.unwrap_or(self.bodies.batch_size as u64);
        }
        Ok(acknowledged)
    }

    async fn run(self, window_start: Instant, end: Instant) -> Outcome {
        let mut outcome = Outcome::default();
        while Instant::now() < end {
            let n = self.next_request.fetch_add(1, Ordering::Relaxed);
            let body = self.bodies.request(n);
            let sent = Instant::now();
            let result = self.post(body).await;
            let answered = Instant::now();
            let in_window = answered >= window_start && answered <= end;
            match result {
                Ok(answer) => {
                    outcome.dropped_fields += answer.dropped.len() as u64;
                    let accepted = answer.accepted.unwrap_or(self.bodies.batch_size as u64);
                    outcome.acknowledged += accepted;
                    if accepted != self.bodies.batch_size as u64 {
                        outcome.errors += 1;
                        outcome
                            .first_error
                            .get_or_insert_with(|| format!("accepted {accepted} of {} events", self.bodies.batch_size));
                    }
                    if in_window {
                        outcome.window_events += accepted;
                        outcome.window_requests += 1;
                        outcome.latencies.push(answered - sent);
                    }
                }
                Err(e) => {
                    outcome.errors += 1;
                    outcome.first_error.get_or_insert(e);
                }
            }
        }
        outcome
    }

    async fn post(&self, body: Vec<u8>) -> Result<Answer, String> {
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.write_key {
            request = request.basic_auth(key, Some(""));
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.bytes().await.map_err(|e| e.to_string())?;
        if status != reqwest::StatusCode::OK {
            let text = String::from_utf8_lossy(&text);
            return Err(format!("HTTP {status}: {}", text.chars().take(300).collect::<String>()));
        }
        serde_json::from_slice(&text).map_err(|e| format!("unreadable answer: {e}"))
    }
}
