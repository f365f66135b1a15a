//! The PostgreSQL store, for several stateless nodes sharing one database.
//!
//! # Design
//!
//! PostgreSQL already does what the SQLite store builds by hand: it takes many writers at once
//! and makes each commit durable (`synchronous_commit = on`, its default). So there is no writer
//! thread here; each call takes a connection from a pool and runs at most one transaction.
//!
//! **Idempotency.** The event log is partitioned by month of `received_at`, and a unique
//! constraint on a partitioned table must include the partition key, so "a `messageId` is
//! stored once per source" cannot be a constraint of `events`. It lives in `message_ids`: an
//! append first inserts its `(source, messageId)` pairs there with `ON CONFLICT DO NOTHING`,
//! then writes to `events` only the messages whose pair came back, in the same transaction. Two
//! appends racing on one id both try the insert; the second waits for the first to commit, then
//! skips the id. Every append claims its ids, and adds its counters, in sorted order, so two
//! appends that share several rows always wait on each other in the same direction and never
//! deadlock.
//!
//! **Round trips.** An append costs the same number of round trips whatever its size: each
//! column travels as one array and `UNNEST` turns the arrays back into rows.
//!
//! **Instants** are `TIMESTAMPTZ`, which holds microseconds. They are cut to the microsecond
//! with [`to_micros`], as the SQLite store does, so an event reads back identical from either.
//!
//! **Schema changes** are versioned migrations recorded in `schema_migrations`. Several nodes
//! may start at once, so migrations and partition upkeep run under one transaction-scoped
//! advisory lock: the first node does the work, the others wait for it and find it done.
//!
//! **Partitions** are created ahead of time only: the current and the next month (UTC) when a
//! node connects, and again at most once an hour on the write path, so a node that runs for
//! months still creates each partition before its month begins. A row whose month has no
//! partition lands in the DEFAULT partition, and PostgreSQL refuses to create a partition for a
//! month that already has rows there. Such a month is left in DEFAULT, with a warning, rather
//! than moved: its rows stay readable, and creating partitions only ahead of time keeps this to
//! rows whose `received_at` is far from the server's clock.
//!
//! TLS is not compiled in (the features are trimmed): reach the database over a private network
//! or a Unix socket.

use crate::vault::{AtRest, Body, Read, Vault};
use crate::{
    Appended, ConsentCount, Counters, Result, Role, StoreError, StoredEvent, Who, decision_keys, from_micros,
    kind_from_str, ledger_entry, pg_error_text, purposes_column, purposes_from_column, source_kind_from_str,
    source_name_from_str, status_from_str, to_micros, traits_column,
};
use confiance_core::collect::Message;
use confiance_core::consent::{ConsentView, Decision, LedgerEntry, StateEntry};
use confiance_core::privacy::audit::{self, AuditEvent};
use confiance_core::privacy::vault::{MasterKey, Tag};
use confiance_core::source::{KeyDigest, Source, SourceKind, SourceName};
use deadpool_postgres::{Manager, Object, Pool, Runtime};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/postgres/0001_init.sql")),
    (2, "consent", include_str!("../migrations/postgres/0002_consent.sql")),
    (3, "unify", include_str!("../migrations/postgres/0003_unify.sql")),
    (4, "audit", include_str!("../migrations/postgres/0004_audit.sql")),
    (5, "requests", include_str!("../migrations/postgres/0005_requests.sql")),
    (6, "erasure", include_str!("../migrations/postgres/0006_erasure.sql")),
    (7, "segments", include_str!("../migrations/postgres/0007_segments.sql")),
    (8, "activate", include_str!("../migrations/postgres/0008_activate.sql")),
    (9, "breaches", include_str!("../migrations/postgres/0009_breaches.sql")),
    (
        10,
        "governance",
        include_str!("../migrations/postgres/0010_governance.sql"),
    ),
    (
        11,
        "events at rest",
        include_str!("../migrations/postgres/0011_events_at_rest.sql"),
    ),
    (
        12,
        "breach_jobs",
        include_str!("../migrations/postgres/0012_breach_jobs.sql"),
    ),
    (
        13,
        "recipient notices",
        include_str!("../migrations/postgres/0013_recipient_notices.sql"),
    ),
    (
        14,
        "identifier values",
        include_str!("../migrations/postgres/0014_identifier_values.sql"),
    ),
];

/// The advisory lock that serialises schema changes across nodes. Any constant would do; this
/// one spells "Confianc" in ASCII, so that another application sharing the database is unlikely
/// to pick it.
const SCHEMA_LOCK: i64 = 0x436f_6e66_6961_6e63;

/// Connections one node keeps. PostgreSQL allows 100 by default, so a few nodes fit.
const POOL_SIZE: usize = 16;
/// How long a call waits for a free connection before the store reports itself overloaded.
const WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a connection may take, unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the write path makes sure the monthly partitions exist, in microseconds.
const PARTITION_CHECK_EVERY_US: i64 = 3_600_000_000;

const CLAIM_IDS: &str = "INSERT INTO message_ids (source_id, message_id, received_at)
     SELECT $1, m.id, m.received_at FROM UNNEST($2::TEXT[], $3::TIMESTAMPTZ[]) AS m(id, received_at)
     ON CONFLICT (source_id, message_id) DO NOTHING
     RETURNING message_id";

// `UNNEST` yields the rows in array order and nothing reorders them, so `seq` follows the order of
// the call, as in SQLite.
const INSERT_EVENTS: &str = "INSERT INTO events
         (source_id, message_id, type, user_id, anonymous_id, event, timestamp, received_at, body, purposes, traits, sealed)
     SELECT $1, m.* FROM UNNEST($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[],
                                $7::TIMESTAMPTZ[], $8::TIMESTAMPTZ[], $9::JSONB[], $10::TEXT[], $11::TEXT[],
                                $12::BYTEA[]) AS m";

const INSERT_LEDGER: &str = "INSERT INTO consent_ledger
         (subject, purpose, status, method, recorded_at, notice_version, notice_hash,
          source_id, touchpoint, ip_hash, ua_hash, proof)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
     RETURNING seq";

// The state moves to a decision only if it is the latest by server time, then ledger position:
// two nodes recording for one subject at once end with the last one by the clock.
const UPSERT_STATE: &str = "INSERT INTO consent_state
         (subject, purpose, status, recorded_at, seq, method, source_id, touchpoint)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (subject, purpose) DO UPDATE SET
         status = EXCLUDED.status, recorded_at = EXCLUDED.recorded_at, seq = EXCLUDED.seq,
         method = EXCLUDED.method, source_id = EXCLUDED.source_id, touchpoint = EXCLUDED.touchpoint
     WHERE (EXCLUDED.recorded_at, EXCLUDED.seq) > (consent_state.recorded_at, consent_state.seq)";

// Summing first lets one call name a counter twice (SQLite adds them one by one), which a single
// `ON CONFLICT DO UPDATE` could not do for two rows with the same key.
const ADD_COUNTERS: &str = "INSERT INTO source_counters (source_id, counter, value)
     SELECT $1, c.counter, SUM(c.value)::BIGINT FROM UNNEST($2::TEXT[], $3::BIGINT[]) AS c(counter, value)
     GROUP BY c.counter ORDER BY c.counter COLLATE \"C\"
     ON CONFLICT (source_id, counter) DO UPDATE SET value = source_counters.value + EXCLUDED.value";

pub(crate) const EVENT_COLUMNS: &str =
    "seq, source_id, message_id, type, user_id, anonymous_id, event, timestamp, received_at, body, purposes, sealed";

const SOURCE_COLUMNS: &str = "id, name, kind, key_prefix, created_at";

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    pub(crate) vault: Arc<Vault>,
    /// When the write path next makes sure the monthly partitions exist, in Unix microseconds.
    next_partition_check: Arc<AtomicI64>,
}

/// An instant as a `TIMESTAMPTZ` parameter, cut to the microsecond as the SQLite store cuts it.
fn to_pg(t: Timestamp) -> SystemTime {
    SystemTime::from(from_micros(to_micros(t)))
}

/// The inverse of [`to_pg`], with the SQLite store's answer for instants out of range.
fn from_pg(t: SystemTime) -> Timestamp {
    Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A calendar month in UTC, the unit of partitioning.
#[derive(Clone, Copy)]
struct Month {
    year: i16,
    month: i8,
}

impl Month {
    fn of(t: Timestamp) -> Self {
        let date = t.to_zoned(TimeZone::UTC).date();
        Self {
            year: date.year(),
            month: date.month(),
        }
    }

    fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    fn partition(self) -> String {
        format!("events_{:04}_{:02}", self.year, self.month)
    }

    fn start(self) -> String {
        format!("{:04}-{:02}-01 00:00:00+00", self.year, self.month)
    }
}

async fn migrate(client: &mut Object) -> Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
    )
    .await?;
    let current: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
        .await?
        .try_get(0)?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StoreError::Migration(format!(
            "the database is at schema version {current}, newer than this binary's {latest}"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Migration(format!("{version} {name}: {}", pg_error_text(&e))))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[version, name, &to_pg(Timestamp::now())],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Creates the partitions of the month of `now` and of the next one, if they are missing.
async fn ensure_partitions(client: &mut Object, now: Timestamp) -> Result<()> {
    let mut tx = client.transaction().await?;
    // Creating a partition locks the whole event log; better to give up and try again later
    // than to queue every append behind a long query.
    tx.batch_execute("SET LOCAL lock_timeout = '5s'").await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await?;
    let this_month = Month::of(now);
    for month in [this_month, this_month.next()] {
        let table = month.partition();
        let exists: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await?
            .try_get(0)?;
        if exists {
            continue;
        }
        let create = format!(
            "CREATE TABLE {table} PARTITION OF events FOR VALUES FROM ('{}') TO ('{}')",
            month.start(),
            month.next().start()
        );
        let savepoint = tx.savepoint("partition").await?;
        match savepoint.batch_execute(&create).await {
            Ok(()) => savepoint.commit().await?,
            Err(e) if e.code() == Some(&SqlState::CHECK_VIOLATION) => {
                savepoint.rollback().await?;
                tracing::warn!(
                    partition = %table,
                    "the DEFAULT partition of the event log already holds rows of this month, \
                     so they stay there and the month gets no partition of its own"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    tx.commit().await?;
    Ok(())
}

fn row_to_source(row: &tokio_postgres::Row) -> Result<Source> {
    Ok(Source {
        id: row.try_get(0)?,
        name: source_name_from_str(row.try_get(1)?)?,
        kind: source_kind_from_str(row.try_get(2)?)?,
        key_prefix: row.try_get(3)?,
        created_at: from_pg(row.try_get(4)?),
    })
}

/// Reads the [`EVENT_COLUMNS`] of a row: an event whose body may still be sealed.
pub(crate) fn row_to_event(row: &tokio_postgres::Row) -> Result<Read> {
    let sealed: Option<Vec<u8>> = row.try_get(11)?;
    Ok(Read {
        event: StoredEvent {
            seq: row.try_get(0)?,
            source_id: row.try_get(1)?,
            message_id: row.try_get(2)?,
            kind: kind_from_str(row.try_get(3)?)?,
            user_id: row.try_get(4)?,
            anonymous_id: row.try_get(5)?,
            event: row.try_get(6)?,
            timestamp: from_pg(row.try_get(7)?),
            received_at: from_pg(row.try_get(8)?),
            body: serde_json::Value::Null,
            purposes: purposes_from_column(row.try_get(10)?),
        },
        body: match sealed {
            Some(bytes) => Body::Sealed(bytes),
            None => Body::Plain(row.try_get(9)?),
        },
    })
}

/// The instance's secret, made on first use.
async fn instance_secret_of(pool: &Pool) -> Result<String> {
    let mut fresh = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut fresh);
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO settings (key, value) VALUES ('instance_secret', $1) ON CONFLICT (key) DO NOTHING",
            &[&hex::encode(fresh)],
        )
        .await?;
    let row = client
        .query_one("SELECT value FROM settings WHERE key = 'instance_secret'", &[])
        .await?;
    Ok(row.try_get(0)?)
}

/// The advisory lock that serialises appends to the audit chain ("Confaudt").
const AUDIT_LOCK: i64 = 0x436f_6e66_6175_6474;

/// Puts back the value of each identifier of `kept` that is kept as a hash
/// ([`Vault::at_rest`]); one whose value is gone (its person is being erased) stays a hash.
pub(crate) async fn reveal(
    client: &impl deadpool_postgres::GenericClient,
    vault: &Arc<Vault>,
    kept: &mut [String],
) -> Result<()> {
    let hashed: Vec<&str> = kept
        .iter()
        .map(String::as_str)
        .filter(|k| Vault::is_hashed(k))
        .collect();
    if hashed.is_empty() {
        return Ok(());
    }
    let rows = client
        .query(
            "SELECT identifier, value FROM identifier_values WHERE identifier = ANY($1)",
            &[&hashed],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(String, Vec<u8>)>>>()?;
    let values = vault.open_values(rows).await?;
    for k in kept.iter_mut() {
        if let Some(v) = values.get(k.as_str()) {
            k.clone_from(v);
        }
    }
    Ok(())
}

/// The keys among `keys` whose values `identifier_values` does not hold yet: sealing a value
/// costs a key from the vault, and most identifiers of a message are known already.
pub(crate) async fn without_values(
    client: &impl deadpool_postgres::GenericClient,
    vault: &Vault,
    keys: &[String],
) -> Result<Vec<String>> {
    let hashed = vault.by_hash(keys);
    if hashed.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: Vec<&String> = hashed.keys().collect();
    let known = client
        .query(
            "SELECT identifier FROM identifier_values WHERE identifier = ANY($1)",
            &[&wanted],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<HashSet<String>, _>>()?;
    Ok(hashed
        .into_iter()
        .filter(|(kept, _)| !known.contains(kept))
        .map(|(_, k)| k.clone())
        .collect())
}

/// Keeps the sealed values `rows` ([`Vault::seal_values`]) in `identifier_values`.
pub(crate) async fn keep_values(
    client: &impl deadpool_postgres::GenericClient,
    rows: &[(String, Vec<u8>)],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let kept: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    let sealed: Vec<&[u8]> = rows.iter().map(|(_, v)| v.as_slice()).collect();
    client
        .execute(
            "INSERT INTO identifier_values (identifier, value)
             SELECT k, v FROM UNNEST($1::TEXT[], $2::BYTEA[]) AS r(k, v) ON CONFLICT DO NOTHING",
            &[&kept, &sealed],
        )
        .await?;
    Ok(())
}

/// Appends events to the audit chain; the lock, held until commit, keeps the chain's head from
/// moving under another node's transaction.
pub(crate) async fn append_audit(
    tx: &deadpool_postgres::Transaction<'_>,
    at: Timestamp,
    events: Vec<AuditEvent>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK]).await?;
    let head = tx
        .query_opt("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", &[])
        .await?;
    let (mut seq, mut prev) = match head {
        Some(r) => (r.try_get::<_, i64>(0)?, r.try_get::<_, String>(1)?),
        None => (0, audit::GENESIS.to_owned()),
    };
    let insert = tx
        .prepare_cached(
            "INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    for event in events {
        let e = audit::chain(seq, &prev, at, event);
        let details = e.details.to_string();
        tx.execute(
            &insert,
            &[
                &e.seq,
                &to_micros(e.at),
                &e.actor,
                &e.action,
                &e.subject,
                &details,
                &e.prev_hash,
                &e.hash,
            ],
        )
        .await?;
        seq = e.seq;
        prev = e.hash;
    }
    Ok(())
}

/// Appends decisions to the ledger and moves the current state to each one that is the latest.
async fn insert_decisions(
    tx: &deadpool_postgres::Transaction<'_>,
    decisions: &[Decision],
    subjects: &AtRest,
) -> Result<Vec<i64>> {
    if decisions.is_empty() {
        return Ok(Vec::new());
    }
    keep_values(tx, &subjects.values).await?;
    let ledger = tx.prepare_cached(INSERT_LEDGER).await?;
    let state = tx.prepare_cached(UPSERT_STATE).await?;
    // One order for every transaction — by subject, then purpose — so that two writers recording
    // for the same people lock their state rows in the same order and never deadlock. The sort
    // is stable: decisions about one subject and purpose keep their order.
    let mut order: Vec<usize> = (0..decisions.len()).collect();
    order.sort_by_cached_key(|&i| (subjects.keys[i].clone(), decisions[i].purpose.clone()));
    let mut seqs = vec![0i64; decisions.len()];
    for i in order {
        let d = &decisions[i];
        let key = &subjects.keys[i];
        let at = to_pg(d.recorded_at);
        let (version, hash) = d
            .notice
            .as_ref()
            .map_or((None, None), |n| (Some(&n.version), Some(&n.hash)));
        let row = tx
            .query_one(
                &ledger,
                &[
                    &key,
                    &d.purpose,
                    &d.status.as_str(),
                    &d.method.as_str(),
                    &at,
                    &version,
                    &hash,
                    &d.source_id,
                    &d.touchpoint,
                    &d.ip_hash,
                    &d.ua_hash,
                    &d.proof,
                ],
            )
            .await?;
        let seq: i64 = row.try_get(0)?;
        tx.execute(
            &state,
            &[
                &key,
                &d.purpose,
                &d.status.as_str(),
                &at,
                &seq,
                &d.method.as_str(),
                &d.source_id,
                &d.touchpoint,
            ],
        )
        .await?;
        seqs[i] = seq;
    }
    let audits = decisions
        .iter()
        .zip(&seqs)
        .map(|(d, seq)| crate::consent_audit(d, *seq))
        .collect();
    append_audit(tx, Timestamp::now(), audits).await?;
    Ok(seqs)
}

impl PgStore {
    /// The connection pool.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Connects to the database at `url` (a `postgres://` URL or `key=value` pairs), applies the
    /// migrations it lacks and creates the partitions of this month and the next. Its key vault
    /// is the database `<name>_vault` on the same server (created when missing), under `master`,
    /// or under a master key derived from the instance's secret when none is given.
    pub async fn connect(url: &str, master: Option<MasterKey>) -> Result<Self> {
        let mut config: tokio_postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let pool = Pool::builder(Manager::new(config.clone(), NoTls))
            .max_size(POOL_SIZE)
            .wait_timeout(Some(WAIT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let mut client = pool.get().await?;
        migrate(&mut client).await?;
        let now = Timestamp::now();
        ensure_partitions(&mut client, now).await?;
        drop(client);
        let master = match master {
            Some(m) => m,
            None => MasterKey::derived_from(instance_secret_of(&pool).await?.as_bytes()),
        };
        let vault = Arc::new(Vault::connect_postgres(&config, &pool, master).await?);
        crate::identifiers::rewrite_pg(&pool, &vault).await?;
        Ok(Self {
            pool,
            vault,
            next_partition_check: Arc::new(AtomicI64::new(to_micros(now) + PARTITION_CHECK_EVERY_US)),
        })
    }

    /// Makes sure the coming month has its partition, at most once an hour per node. A failure
    /// only delays the check: the append goes on, since the rows it writes are safe in any
    /// partition.
    async fn keep_partitions_ahead(&self) {
        let now = Timestamp::now();
        let due = self.next_partition_check.load(Ordering::Relaxed);
        if to_micros(now) < due {
            return;
        }
        // One caller per period does the work; the others go on without waiting for it.
        let next = to_micros(now) + PARTITION_CHECK_EVERY_US;
        if self
            .next_partition_check
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let outcome = async {
            let mut client = self.pool.get().await?;
            ensure_partitions(&mut client, now).await
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "could not create the coming partitions of the event log; will try again within the hour");
        }
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        self.pool.get().await?.batch_execute("SELECT 1").await?;
        Ok(())
    }

    pub(crate) async fn create_source(
        &self,
        name: &SourceName,
        kind: SourceKind,
        key: &KeyDigest,
        prefix: &str,
    ) -> Result<Source> {
        // Kept to the microsecond, as stored, so the source returned equals the one read back.
        let created_at = from_micros(to_micros(Timestamp::now()));
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "INSERT INTO sources (name, kind, key_digest, key_prefix, created_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name) DO NOTHING
                 RETURNING id",
                &[
                    &name.as_ref(),
                    &kind.as_str(),
                    &key.to_hex(),
                    &prefix,
                    &to_pg(created_at),
                ],
            )
            .await?;
        let Some(row) = row else {
            return Err(StoreError::Conflict(format!("source `{name}`")));
        };
        Ok(Source {
            id: row.try_get(0)?,
            name: name.clone(),
            kind,
            key_prefix: prefix.to_owned(),
            created_at,
        })
    }

    pub(crate) async fn list_sources(&self) -> Result<Vec<Source>> {
        let client = self.pool.get().await?;
        // Byte order, as SQLite sorts, whatever the database's collation.
        let sql = format!("SELECT {SOURCE_COLUMNS} FROM sources ORDER BY name COLLATE \"C\"");
        client.query(&sql, &[]).await?.iter().map(row_to_source).collect()
    }

    async fn source_where(&self, column: &'static str, value: &str) -> Result<Option<Source>> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE {column} = $1"))
            .await?;
        client
            .query_opt(&statement, &[&value])
            .await?
            .as_ref()
            .map(row_to_source)
            .transpose()
    }

    pub(crate) async fn source_by_key(&self, key: &KeyDigest) -> Result<Option<Source>> {
        self.source_where("key_digest", &key.to_hex()).await
    }

    pub(crate) async fn source_by_name(&self, name: &SourceName) -> Result<Option<Source>> {
        self.source_where("name", name.as_ref()).await
    }

    pub(crate) async fn append(
        &self,
        source_id: i64,
        messages: Vec<Message>,
        decisions: Vec<Decision>,
        counters: Counters,
    ) -> Result<Appended> {
        self.keep_partitions_ahead().await;
        let vault = &self.vault;
        let subjects = vault.to_rest(&decision_keys(&decisions)).await?;
        let (tags, keys) = vault
            .sealing_keys(
                messages
                    .iter()
                    .map(|m| (m.user_id.as_deref(), m.anonymous_id.as_deref())),
            )
            .await?;

        // A messageId repeated within the call is a duplicate of its first copy, as in SQLite
        // where the first insert makes the later ones conflict.
        let mut seen = HashSet::with_capacity(messages.len());
        let first: Vec<bool> = messages.iter().map(|m| seen.insert(m.message_id.as_str())).collect();
        let mut claims: Vec<&Message> = messages
            .iter()
            .zip(&first)
            .filter(|(_, f)| **f)
            .map(|(m, _)| m)
            .collect();
        // One order for every append, so that appends sharing ids cannot deadlock.
        claims.sort_unstable_by(|a, b| a.message_id.cmp(&b.message_id));

        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        insert_decisions(&tx, &decisions, &subjects).await?;
        let claimed: HashSet<String> = if claims.is_empty() {
            HashSet::new()
        } else {
            let ids: Vec<&str> = claims.iter().map(|m| m.message_id.as_str()).collect();
            let received: Vec<SystemTime> = claims.iter().map(|m| to_pg(m.received_at)).collect();
            let statement = tx.prepare_cached(CLAIM_IDS).await?;
            tx.query(&statement, &[&source_id, &ids, &received])
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<std::result::Result<_, _>>()?
        };
        let stored: Vec<bool> = messages
            .iter()
            .zip(&first)
            .map(|(m, first)| *first && claimed.contains(&m.message_id))
            .collect();

        let (fresh, fresh_tags): (Vec<&Message>, Vec<Option<&Tag>>) = messages
            .iter()
            .zip(&tags)
            .zip(&stored)
            .filter(|(_, s)| **s)
            .map(|((m, t), _)| (m, t.as_ref()))
            .unzip();
        if !fresh.is_empty() {
            let ids: Vec<&str> = fresh.iter().map(|m| m.message_id.as_str()).collect();
            let kinds: Vec<&str> = fresh.iter().map(|m| m.kind.as_str()).collect();
            let user_ids: Vec<Option<&str>> = fresh.iter().map(|m| m.user_id.as_deref()).collect();
            let anonymous_ids: Vec<Option<&str>> = fresh.iter().map(|m| m.anonymous_id.as_deref()).collect();
            let events: Vec<Option<&str>> = fresh.iter().map(|m| m.event.as_deref()).collect();
            let timestamps: Vec<SystemTime> = fresh.iter().map(|m| to_pg(m.timestamp)).collect();
            let received: Vec<SystemTime> = fresh.iter().map(|m| to_pg(m.received_at)).collect();
            // A sealed body leaves JSON null in `body`.
            let mut bodies: Vec<&serde_json::Value> = Vec::with_capacity(fresh.len());
            let mut sealed: Vec<Option<Vec<u8>>> = Vec::with_capacity(fresh.len());
            for (m, tag) in fresh.iter().zip(&fresh_tags) {
                let text = serde_json::to_vec(&m.body).map_err(|e| StoreError::Database(e.to_string()))?;
                match vault.seal(*tag, &keys, &text) {
                    Some(bytes) => {
                        bodies.push(&serde_json::Value::Null);
                        sealed.push(Some(bytes));
                    }
                    None => {
                        bodies.push(&m.body);
                        sealed.push(None);
                    }
                }
            }
            let purposes: Vec<String> = fresh.iter().map(|m| purposes_column(&m.purposes)).collect();
            let traits: Vec<Option<String>> = fresh.iter().map(|m| traits_column(m)).collect();
            let statement = tx.prepare_cached(INSERT_EVENTS).await?;
            tx.execute(
                &statement,
                &[
                    &source_id,
                    &ids,
                    &kinds,
                    &user_ids,
                    &anonymous_ids,
                    &events,
                    &timestamps,
                    &received,
                    &bodies,
                    &purposes,
                    &traits,
                    &sealed,
                ],
            )
            .await?;
        }

        let accepted = fresh.len() as i64;
        let counted = [("accepted", accepted), ("duplicate", stored.len() as i64 - accepted)];
        // A counter that did not move gets no row, as in SQLite.
        let counters: Vec<(&str, i64)> = counters
            .iter()
            .map(|(name, value)| (name.as_str(), *value))
            .chain(counted)
            .filter(|(_, value)| *value != 0)
            .collect();
        if !counters.is_empty() {
            let names: Vec<&str> = counters.iter().map(|(name, _)| *name).collect();
            let values: Vec<i64> = counters.iter().map(|(_, value)| *value).collect();
            let statement = tx.prepare_cached(ADD_COUNTERS).await?;
            tx.execute(&statement, &[&source_id, &names, &values]).await?;
        }
        tx.commit().await?;
        Ok(Appended { stored })
    }

    pub(crate) async fn source_counters(&self, source_id: i64) -> Result<Counters> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT counter, value FROM source_counters WHERE source_id = $1 ORDER BY counter COLLATE \"C\"",
                &[&source_id],
            )
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub(crate) async fn events_of(
        &self,
        who: &Who,
        purpose: Option<&str>,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let (column, value) = match who {
            Who::UserId(v) => ("user_id", v),
            Who::AnonymousId(v) => ("anonymous_id", v),
        };
        // Without a purpose every event is seen; with one, the events collected for it and
        // those that only link identifiers.
        let pattern = purpose.map_or_else(|| "%".to_owned(), |p| format!("%,{p},%"));
        // SQLite reads a limit too large for it as no limit; so does this.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE {column} = $1 AND seq > $2
                 AND (purposes LIKE $4 OR purposes = ',') ORDER BY seq LIMIT $3"
            ))
            .await?;
        let rows = client.query(&statement, &[value, &after_seq, &limit, &pattern]).await?;
        drop(client);
        self.open_events(&rows).await
    }

    pub(crate) async fn record_consents(&self, decisions: Vec<Decision>) -> Result<Vec<i64>> {
        let subjects = self.vault.to_rest(&decision_keys(&decisions)).await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let seqs = insert_decisions(&tx, &decisions, &subjects).await?;
        tx.commit().await?;
        Ok(seqs)
    }

    pub(crate) async fn consent_view(&self, keys: Vec<String>) -> Result<ConsentView> {
        let asked: HashMap<String, String> = keys.into_iter().map(|k| (self.vault.at_rest(&k), k)).collect();
        let kept: Vec<&String> = asked.keys().collect();
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT subject, purpose, status, recorded_at, seq FROM consent_state WHERE subject = ANY($1)",
                &[&kept],
            )
            .await?;
        let mut view = ConsentView::default();
        for row in rows {
            let status: &str = row.try_get(2)?;
            let subject: &str = row.try_get(0)?;
            view.insert(
                asked.get(subject).map_or(subject, String::as_str),
                row.try_get(1)?,
                StateEntry {
                    status: status_from_str(status)?,
                    recorded_at: from_pg(row.try_get(3)?),
                    seq: row.try_get(4)?,
                },
            );
        }
        Ok(view)
    }

    pub(crate) async fn consent_history(&self, key: String) -> Result<Vec<LedgerEntry>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT seq, subject, purpose, status, method, recorded_at, notice_version, notice_hash,
                        source_id, touchpoint, ip_hash, ua_hash, proof
                 FROM consent_ledger WHERE subject = $1 ORDER BY recorded_at, seq",
                &[&self.vault.at_rest(&key)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                ledger_entry(
                    r.try_get(0)?,
                    &key,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    from_pg(r.try_get(5)?),
                    (r.try_get(6)?, r.try_get(7)?),
                    r.try_get(8)?,
                    r.try_get(9)?,
                    (r.try_get(10)?, r.try_get(11)?),
                    r.try_get(12)?,
                )
            })
            .collect()
    }

    pub(crate) async fn consent_counts(&self) -> Result<Vec<ConsentCount>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT purpose, status, source_id, touchpoint, COUNT(*) FROM consent_state
                 GROUP BY 1, 2, 3, 4
                 ORDER BY purpose COLLATE \"C\", status COLLATE \"C\", source_id NULLS FIRST, touchpoint COLLATE \"C\" NULLS FIRST",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ConsentCount {
                    purpose: r.try_get(0)?,
                    status: status_from_str(r.try_get(1)?)?,
                    source_id: r.try_get(2)?,
                    touchpoint: r.try_get(3)?,
                    count: r.try_get(4)?,
                })
            })
            .collect()
    }

    pub(crate) async fn subjects_for(
        &self,
        purpose: String,
        granted_only: bool,
        prefix: String,
        after: String,
        limit: usize,
    ) -> Result<Vec<String>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.pool.get().await?;
        let sql = if granted_only {
            "SELECT subject FROM consent_state
             WHERE purpose = $1 AND status = 'granted' AND subject COLLATE \"C\" > $3 AND starts_with(subject, $2)
             ORDER BY subject COLLATE \"C\" LIMIT $4"
        } else {
            "SELECT DISTINCT subject COLLATE \"C\" AS subject FROM consent_state
             WHERE subject COLLATE \"C\" > $3 AND starts_with(subject, $2)
               AND subject NOT IN (SELECT subject FROM consent_state WHERE purpose = $1 AND status IN ('objected', 'restricted'))
             ORDER BY subject LIMIT $4"
        };
        let rows = client
            .query(sql, &[&purpose, &prefix, &self.vault.at_rest(&after), &limit])
            .await?;
        let mut subjects = rows
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect::<Result<Vec<String>>>()?;
        reveal(&client, &self.vault, &mut subjects).await?;
        Ok(subjects)
    }

    pub(crate) async fn instance_secret(&self) -> Result<String> {
        instance_secret_of(&self.pool).await
    }

    /// Opens the bodies of rows that select the [`EVENT_COLUMNS`].
    pub(crate) async fn open_events(&self, rows: &[tokio_postgres::Row]) -> Result<Vec<StoredEvent>> {
        let reads = rows.iter().map(row_to_event).collect::<Result<Vec<_>>>()?;
        self.vault.open_async(reads).await
    }

    pub(crate) async fn count_events(&self) -> Result<i64> {
        let client = self.pool.get().await?;
        Ok(client.query_one("SELECT COUNT(*) FROM events", &[]).await?.try_get(0)?)
    }

    pub(crate) async fn event_summary(&self) -> Result<Vec<(i64, String, Option<String>, i64)>> {
        let client = self.pool.get().await?;
        // Sorted as SQLite sorts: bytewise, and the missing names first.
        let rows = client
            .query(
                "SELECT source_id, type, name, COUNT(*)
                 FROM (SELECT source_id, type, CASE WHEN type = 'track' THEN event END AS name FROM events) AS e
                 GROUP BY source_id, type, name
                 ORDER BY source_id, type COLLATE \"C\", name COLLATE \"C\" NULLS FIRST",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect()
    }

    pub(crate) async fn put_token(&self, digest: &KeyDigest, role: Role, name: &str) -> Result<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO api_tokens (digest, role, name, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (digest) DO UPDATE SET role = EXCLUDED.role, name = EXCLUDED.name",
                &[&digest.to_hex(), &role.as_str(), &name, &to_pg(Timestamp::now())],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn token(&self, digest: &KeyDigest) -> Result<Option<(Role, String)>> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached("SELECT role, name FROM api_tokens WHERE digest = $1")
            .await?;
        let row = client.query_opt(&statement, &[&digest.to_hex()]).await?;
        let Some(row) = row else { return Ok(None) };
        let (role, name): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        Ok(Role::parse(&role).map(|r| (r, name)))
    }
}

impl PgStore {
    pub(crate) async fn audit(&self, events: Vec<AuditEvent>) -> Result<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        append_audit(&tx, Timestamp::now(), events).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn audit_log(&self, after: i64, limit: usize) -> Result<Vec<audit::AuditEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let details: String = r.try_get(5)?;
                Ok(audit::AuditEntry {
                    seq: r.try_get(0)?,
                    at: from_micros(r.try_get(1)?),
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    subject: r.try_get(4)?,
                    details: serde_json::from_str(&details).map_err(|e| StoreError::Database(e.to_string()))?,
                    prev_hash: r.try_get(6)?,
                    hash: r.try_get(7)?,
                })
            })
            .collect()
    }
}
