//! The key vault: each subject's data key, wrapped by the master key, in a database of its own.
//!
//! # Design
//!
//! The rules are in `confiance_core::privacy::vault`; this is where the keys live. The vault is
//! deliberately *not* the store's database: SQLite keeps it in `vault.db` beside `confiance.db`,
//! PostgreSQL in a database of its own named after the store's (`<name>_vault`, created when
//! missing). A backup or a dump of the store's database therefore holds sealed bodies and no
//! keys; shredding a subject's key — one row, deleted with `secure_delete` and the vault's
//! write-ahead log truncated on SQLite, deleted and vacuumed on PostgreSQL — makes every copy of
//! their bodies unreadable, wherever it is, unless a copy of the vault made before survives too.
//!
//! The vault also keeps a check value of its master key, so that a store is never opened under
//! another key, and the tags it shredded, so that a body that does not open is told apart: the
//! body of an erased subject reads as JSON null, anything else is an error, never a silent loss.
//!
//! Keys are read far more often than written: opened keys are kept in memory for a minute, so
//! steady ingestion and reads cost no vault query. A shred forgets the keys at once in its own
//! process, and a fetch that overlapped it is not remembered. On PostgreSQL, where several nodes
//! share the vault, sealing always asks the vault, so no node seals with a key another one
//! shredded; reading may use the minute-old copy.

use crate::{Result, StoreError, StoredEvent};
use confiance_core::privacy::vault::{DataKey, MasterKey, Tag, subject_of};
use deadpool_postgres::Pool;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

/// How long an opened key is used without asking the vault again.
const CACHE_FOR: Duration = Duration::from_secs(60);
/// Keys kept in memory at most; past it the cache starts over.
const CACHE_MAX: usize = 200_000;

/// The advisory lock that serialises creating the vault's tables ("Confvalt").
const SCHEMA_LOCK: i64 = 0x436f_6e66_7661_6c74;

/// How a sealed value kept in a text column began before results were compressed: read only,
/// for archives made by earlier versions.
const SEALED_TEXT: &str = "sealed:";
/// The prefix of a text compressed (raw deflate) before it was sealed: large results, such as
/// access archives, whose events repeat the same field names thousands of times.
const SEALED_DEFLATED: &str = "sealed+deflate:";

/// The pieces in which a result goes to the thread that compresses it.
const PACK_CHUNK: usize = 256 << 10;

/// From how many events a read opens their bodies on two threads.
const PARALLEL_OPEN_FROM: usize = 2_000;

/// Identifier kinds kept as they are in the store's rows: the ids a shop's own systems assign
/// (a customer number, a browser's random id), by which the event log is indexed and the bodies
/// are sealed. Every other kind (email, phone, a loyalty card) is kept as a keyed hash.
pub(crate) const PLAIN_KINDS: [&str; 2] = ["user_id", "anonymous_id"];

/// What begins the hash of an identifier kept at rest, so that a value of 64 hex digits (a
/// hashed email is often a SHA-256 in hex) is never taken for a hash; a value that is `#` and
/// 64 hex digits would be, and is kept as it is.
const HASH_MARK: char = '#';

/// `text` compressed with the fastest deflate.
fn deflate(text: &str) -> Result<Vec<u8>> {
    let mut deflate =
        flate2::write::DeflateEncoder::new(Vec::with_capacity(text.len() / 8), flate2::Compression::fast());
    deflate
        .write_all(text.as_bytes())
        .map_err(|e| StoreError::Database(format!("compressing a result: {e}")))?;
    deflate
        .finish()
        .map_err(|e| StoreError::Database(format!("compressing a result: {e}")))
}

/// `bytes` sealed under `key` for `tag`, as text: `prefix` and the base64.
fn sealed_text(prefix: &str, tag: &Tag, key: &DataKey, bytes: &[u8]) -> String {
    use base64::Engine;
    let sealed = key.seal(tag, bytes);
    let mut out = String::with_capacity(prefix.len() + sealed.len() * 4 / 3 + 4);
    out.push_str(prefix);
    base64::engine::general_purpose::STANDARD.encode_string(sealed, &mut out);
    out
}

/// The file of the SQLite store's vault, beside the database.
pub const VAULT_FILE: &str = "vault.db";

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subject_keys (
    tag BLOB PRIMARY KEY,
    wrapped BLOB NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shredded (tag BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS master_check (id INTEGER PRIMARY KEY CHECK (id = 1), value BLOB NOT NULL);";

const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subject_keys (
    tag BYTEA PRIMARY KEY,
    wrapped BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS shredded (tag BYTEA PRIMARY KEY, at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS master_check (id INTEGER PRIMARY KEY CHECK (id = 1), value BYTEA NOT NULL);";

const WRONG_MASTER: &str = "the key vault was made under another master key: give the one the data was written with (CONFIANCE_MASTER_KEY or --master-key-file, or none if it never had one)";

enum Backend {
    Sqlite(Mutex<Connection>),
    Postgres(Pool),
}

/// A stored body as read from the log: plain JSON (written before sealing, or with sealing
/// off), or sealed under its subject's key.
pub(crate) enum Body {
    Plain(serde_json::Value),
    Sealed(Vec<u8>),
}

/// An event read from the log whose body may still be sealed.
pub(crate) struct Read {
    pub(crate) event: StoredEvent,
    pub(crate) body: Body,
}

/// A body as it is kept: sealed bytes, or the plain JSON of an event whose subject has no key.
pub(crate) enum Kept {
    Sealed(Vec<u8>),
    Plain(serde_json::Value),
}

/// Identifier keys ready to write: each as rows keep it ([`Vault::at_rest`]), and the sealed
/// values of those kept as hashes, for `identifier_values`.
#[derive(Default)]
pub(crate) struct AtRest {
    pub(crate) keys: Vec<String>,
    pub(crate) values: Vec<(String, Vec<u8>)>,
}

/// The events whose bodies did not open, by position, with their subject's tag.
type Closed = Vec<(usize, Tag)>;

/// The vault of one store.
pub(crate) struct Vault {
    master: MasterKey,
    backend: Backend,
    seal: AtomicBool,
    cache: Mutex<HashMap<Tag, (DataKey, Instant)>>,
    /// How many shreds this process ran: a fetch that saw it change is not remembered.
    shreds: AtomicU64,
}

fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

fn tag_of_row(bytes: Vec<u8>) -> Result<Tag> {
    Ok(Tag(bytes.try_into().map_err(|_| {
        StoreError::Database("a key vault tag is not 32 bytes".into())
    })?))
}

impl Vault {
    /// Opens (creating) the SQLite vault in `dir`, checking it was made under `master`.
    pub(crate) fn open_sqlite(dir: &Path, master: MasterKey) -> Result<Self> {
        let conn = crate::sqlite::open_in_wal_mode(&dir.join(VAULT_FILE))?;
        // Keys are found by tag, at random: a page cache of 32 MB (SQLite's default is 2 MB)
        // keeps making the keys of many new identifiers from reading pages back one by one.
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             PRAGMA secure_delete = ON;
             PRAGMA cache_size = -32768;",
        )?;
        conn.execute_batch(SQLITE_SCHEMA)?;
        conn.execute(
            "INSERT INTO master_check (id, value) VALUES (1, ?1) ON CONFLICT (id) DO NOTHING",
            [master.check_value()],
        )?;
        let check: Vec<u8> = conn.query_row("SELECT value FROM master_check WHERE id = 1", [], |r| r.get(0))?;
        if !master.checks(&check) {
            return Err(StoreError::Database(WRONG_MASTER.into()));
        }
        Ok(Self::new(master, Backend::Sqlite(Mutex::new(conn))))
    }

    /// Connects to (creating) the PostgreSQL vault beside the store's database `store`,
    /// checking it was made under `master`.
    pub(crate) async fn connect_postgres(
        store: &tokio_postgres::Config,
        store_pool: &Pool,
        master: MasterKey,
    ) -> Result<Self> {
        // As libpq: without a database name, the user's.
        let base = store.get_dbname().or(store.get_user()).unwrap_or("postgres");
        let name = format!("{base}_vault");
        let client = store_pool.get().await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists
            && let Err(e) = client
                .batch_execute(&format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")))
                .await
            && e.code() != Some(&SqlState::DUPLICATE_DATABASE)
            && e.code() != Some(&SqlState::UNIQUE_VIOLATION)
        {
            return Err(StoreError::Database(format!(
                "cannot create the key vault database {name}: {}",
                crate::pg_error_text(&e)
            )));
        }
        let mut config = store.clone();
        config.dbname(&name);
        let pool = Pool::builder(deadpool_postgres::Manager::new(config, tokio_postgres::NoTls))
            .max_size(4)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let mut client = pool.get().await?;
        // Nodes starting together would race on `IF NOT EXISTS`: a lock makes them take turns.
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await?;
        tx.batch_execute(PG_SCHEMA).await?;
        tx.execute(
            "INSERT INTO master_check (id, value) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            &[&master.check_value()],
        )
        .await?;
        let check: Vec<u8> = tx
            .query_one("SELECT value FROM master_check WHERE id = 1", &[])
            .await?
            .try_get(0)?;
        tx.commit().await?;
        if !master.checks(&check) {
            return Err(StoreError::Database(WRONG_MASTER.into()));
        }
        drop(client);
        Ok(Self::new(master, Backend::Postgres(pool)))
    }

    fn new(master: MasterKey, backend: Backend) -> Self {
        Self {
            master,
            backend,
            seal: AtomicBool::new(true),
            cache: Mutex::new(HashMap::new()),
            shreds: AtomicU64::new(0),
        }
    }

    /// Whether new bodies are sealed (on unless switched off, to measure what sealing costs).
    pub(crate) fn seals(&self) -> bool {
        self.seal.load(Ordering::Relaxed)
    }

    pub(crate) fn set_sealing(&self, on: bool) {
        self.seal.store(on, Ordering::Relaxed);
    }

    /// How the identifier `key` (`kind:value`) is kept in the store's rows: as it is for the
    /// kinds in [`PLAIN_KINDS`], else as its kind, `#` and the hex of its tag, a keyed hash that
    /// joins and lookups compare like the value itself. Its value is kept apart, sealed under
    /// its own key ([`Vault::seal_values`]), so that shredding that key leaves every older copy
    /// of the rows, in a backup or a page not yet reused, with nothing but the hash.
    pub(crate) fn at_rest(&self, key: &str) -> String {
        if Self::is_hashed(key) {
            // Already in its form at rest: what a reveal could not open (an erasure retried).
            return key.to_owned();
        }
        match key.split_once(':') {
            Some((kind, value)) if !value.is_empty() && !PLAIN_KINDS.contains(&kind) => {
                format!("{kind}:{HASH_MARK}{}", hex::encode(self.master.tag(key).0))
            }
            _ => key.to_owned(),
        }
    }

    /// The tag a key kept at rest was made from, when it is one ([`Vault::at_rest`]).
    fn tag_at_rest(kept: &str) -> Option<Tag> {
        let (kind, hash) = kept.split_once(':')?;
        let hash = hash.strip_prefix(HASH_MARK)?;
        if PLAIN_KINDS.contains(&kind) {
            return None;
        }
        let mut tag = [0u8; 32];
        hex::decode_to_slice(hash, &mut tag).ok()?;
        Some(Tag(tag))
    }

    /// Whether `kept`, a key as rows keep it, is a hash ([`Vault::at_rest`]).
    pub(crate) fn is_hashed(kept: &str) -> bool {
        Self::tag_at_rest(kept).is_some()
    }

    /// The identifiers among `keys` that rows keep as hashes, by their form at rest.
    pub(crate) fn by_hash<'a>(&self, keys: &'a [String]) -> HashMap<String, &'a String> {
        keys.iter()
            .map(|k| (self.at_rest(k), k))
            .filter(|(kept, _)| Self::is_hashed(kept))
            .collect()
    }

    /// The tags of the identifiers among `keys` that are kept as hashes, each once.
    fn value_tags(&self, keys: &[String]) -> Vec<(String, Tag)> {
        let mut seen = HashSet::new();
        keys.iter()
            .filter(|k| seen.insert(k.as_str()) && !Self::is_hashed(k))
            .filter_map(|k| {
                let kept = self.at_rest(k);
                Self::tag_at_rest(&kept).map(|tag| (k.clone(), tag))
            })
            .collect()
    }

    fn sealed_values(&self, wanted: Vec<(String, Tag)>, keys: &HashMap<Tag, DataKey>) -> Vec<(String, Vec<u8>)> {
        wanted
            .into_iter()
            .filter_map(|(key, tag)| {
                let sealed = keys.get(&tag)?.seal(&tag, key.as_bytes());
                Some((self.at_rest(&key), sealed))
            })
            .collect()
    }

    /// The values of the identifiers among `keys` kept as hashes, each sealed under its own key
    /// (made where missing): `(key at rest, sealed value)` rows for `identifier_values`.
    pub(crate) async fn seal_values(self: &Arc<Self>, keys: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
        let wanted = self.value_tags(keys);
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let made = self.keys(wanted.iter().map(|(_, t)| *t).collect(), true).await?;
        Ok(self.sealed_values(wanted, &made))
    }

    /// `keys` as rows keep them, with the sealed values of those kept as hashes.
    pub(crate) async fn to_rest(self: &Arc<Self>, keys: &[String]) -> Result<AtRest> {
        Ok(AtRest {
            keys: keys.iter().map(|k| self.at_rest(k)).collect(),
            values: self.seal_values(keys).await?,
        })
    }

    /// [`Vault::seal_values`] on the SQLite vault, from a blocking thread.
    pub(crate) fn seal_values_blocking(&self, keys: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
        let wanted = self.value_tags(keys);
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let made = self.keys_blocking(&wanted.iter().map(|(_, t)| *t).collect::<Vec<_>>(), true)?;
        Ok(self.sealed_values(wanted, &made))
    }

    /// The values of `rows` that open with `keys`, and the tags of those that do not.
    fn opened_values(
        rows: Vec<(String, Vec<u8>)>,
        keys: &HashMap<Tag, DataKey>,
    ) -> Result<(HashMap<String, String>, Vec<Tag>)> {
        let mut opened = HashMap::with_capacity(rows.len());
        let mut closed = Vec::new();
        for (kept, sealed) in rows {
            let Some(tag) = Self::tag_at_rest(&kept) else { continue };
            match keys.get(&tag).map(|key| key.open(&tag, &sealed)) {
                Some(Ok(plain)) => {
                    let value = String::from_utf8(plain).map_err(|e| StoreError::Database(e.to_string()))?;
                    opened.insert(kept, value);
                }
                _ => closed.push(tag),
            }
        }
        Ok((opened, closed))
    }

    /// An error unless every tag of `closed` was shredded: a value that does not open is an
    /// erased person's, or a fault, never a silent loss.
    fn settle_values(closed: &[Tag], shredded: &HashSet<Tag>) -> Result<()> {
        match closed.iter().find(|t| !shredded.contains(t)) {
            Some(_) => Err(StoreError::Database(
                "an identifier's value does not open and its key was never shredded: is this the vault the data was written with?".into(),
            )),
            None => Ok(()),
        }
    }

    /// Opens `identifier_values` rows: each key at rest with its value; a value whose key was
    /// shredded (the person is being erased) is left out.
    pub(crate) async fn open_values(self: &Arc<Self>, rows: Vec<(String, Vec<u8>)>) -> Result<HashMap<String, String>> {
        let tags: Vec<Tag> = rows.iter().filter_map(|(k, _)| Self::tag_at_rest(k)).collect();
        let keys = self.keys(tags, false).await?;
        let (opened, closed) = Self::opened_values(rows, &keys)?;
        if !closed.is_empty() {
            Self::settle_values(&closed, &self.shredded(closed.clone()).await?)?;
        }
        Ok(opened)
    }

    /// [`Vault::open_values`] on the SQLite vault, from a blocking thread.
    pub(crate) fn open_values_blocking(&self, rows: Vec<(String, Vec<u8>)>) -> Result<HashMap<String, String>> {
        let tags: Vec<Tag> = rows.iter().filter_map(|(k, _)| Self::tag_at_rest(k)).collect();
        let keys = self.keys_blocking(&tags, false)?;
        let (opened, closed) = Self::opened_values(rows, &keys)?;
        if !closed.is_empty() {
            Self::settle_values(&closed, &self.shredded_blocking(&closed)?)?;
        }
        Ok(opened)
    }

    /// The tag of the subject whose key seals a message from these ids.
    pub(crate) fn tag_of(&self, user_id: Option<&str>, anonymous_id: Option<&str>) -> Option<Tag> {
        subject_of(user_id, anonymous_id).map(|s| self.master.tag(&s))
    }

    /// The tag of each sender `(user id, anonymous id)`, each distinct one computed once (a tag
    /// is an HMAC, and a batch or a person's history repeats one sender many times).
    fn tags_for<'a>(&self, senders: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>) -> Vec<Option<Tag>> {
        let mut known: HashMap<(Option<&str>, Option<&str>), Option<Tag>> = HashMap::new();
        senders
            .map(|(user_id, anonymous_id)| {
                *known
                    .entry((user_id, anonymous_id))
                    .or_insert_with(|| self.tag_of(user_id, anonymous_id))
            })
            .collect()
    }

    /// The tag of each message's subject, from its `(user id, anonymous id)`, and the keys that
    /// seal them, made where missing; no tags when sealing is off.
    pub(crate) async fn sealing_keys<'a>(
        self: &Arc<Self>,
        senders: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
    ) -> Result<(Vec<Option<Tag>>, HashMap<Tag, DataKey>)> {
        let tags: Vec<Option<Tag>> = if self.seals() {
            self.tags_for(senders)
        } else {
            senders.map(|_| None).collect()
        };
        let keys = if tags.iter().any(Option::is_some) {
            self.keys(tags.iter().flatten().copied().collect(), true).await?
        } else {
            HashMap::new()
        };
        Ok((tags, keys))
    }

    /// The keys of `tags` found in memory, and the tags to ask the vault for (each once).
    fn cached(&self, tags: &[Tag], use_cache: bool) -> (HashMap<Tag, DataKey>, Vec<Tag>) {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        let mut asked = HashSet::new();
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for tag in tags {
            if found.contains_key(tag) || !asked.insert(*tag) {
                continue;
            }
            match cache.get(tag) {
                Some((key, at)) if use_cache && at.elapsed() < CACHE_FOR => {
                    found.insert(*tag, key.clone());
                }
                _ => missing.push(*tag),
            }
        }
        (found, missing)
    }

    /// Keeps `keys` in memory, unless a shred ran since the fetch began (`shreds_before`).
    fn remember(&self, keys: &HashMap<Tag, DataKey>, shreds_before: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if self.shreds.load(Ordering::SeqCst) != shreds_before {
            return;
        }
        if cache.len() + keys.len() > CACHE_MAX {
            cache.clear();
        }
        let now = Instant::now();
        for (tag, key) in keys {
            cache.insert(*tag, (key.clone(), now));
        }
    }

    fn unwrap_all(&self, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<HashMap<Tag, DataKey>> {
        rows.into_iter()
            .map(|(tag, wrapped)| {
                let tag = tag_of_row(tag)?;
                let key = self
                    .master
                    .unwrap_key(&tag, &wrapped)
                    .map_err(|_| StoreError::Database(WRONG_MASTER.into()))?;
                Ok((tag, key))
            })
            .collect()
    }

    /// The keys of `tags`, from memory or the SQLite vault; with `create`, the missing ones are
    /// made and kept (durably, before they seal anything).
    pub(crate) fn keys_blocking(&self, tags: &[Tag], create: bool) -> Result<HashMap<Tag, DataKey>> {
        let (mut found, missing) = self.cached(tags, true);
        if missing.is_empty() {
            return Ok(found);
        }
        let Backend::Sqlite(conn) = &self.backend else {
            return Err(StoreError::Database("the key vault is not SQLite".into()));
        };
        let shreds_before = self.shreds.load(Ordering::SeqCst);
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        // Reading takes no write lock; making keys takes it at once.
        let behavior = if create {
            rusqlite::TransactionBehavior::Immediate
        } else {
            rusqlite::TransactionBehavior::Deferred
        };
        let tx = conn.transaction_with_behavior(behavior)?;
        let mut rows = Vec::new();
        {
            let mut select = tx.prepare_cached("SELECT wrapped FROM subject_keys WHERE tag = ?1")?;
            let mut insert =
                tx.prepare_cached("INSERT INTO subject_keys (tag, wrapped, created_at) VALUES (?1, ?2, ?3)")?;
            for tag in &missing {
                match select.query_row([&tag.0[..]], |r| r.get::<_, Vec<u8>>(0)).optional()? {
                    Some(wrapped) => rows.push((tag.0.to_vec(), wrapped)),
                    None if create => {
                        let (key, wrapped) = self.master.new_data_key(tag);
                        insert.execute(params![&tag.0[..], wrapped, now_us()])?;
                        found.insert(*tag, key);
                    }
                    None => {}
                }
            }
        }
        tx.commit()?;
        found.extend(self.unwrap_all(rows)?);
        self.remember(&found, shreds_before);
        Ok(found)
    }

    /// The keys of `tags`, as [`Vault::keys_blocking`], from any backend.
    pub(crate) async fn keys(self: &Arc<Self>, tags: Vec<Tag>, create: bool) -> Result<HashMap<Tag, DataKey>> {
        let Backend::Postgres(pool) = &self.backend else {
            // Keys all in memory need no trip to a blocking thread.
            let (found, missing) = self.cached(&tags, true);
            if missing.is_empty() {
                return Ok(found);
            }
            let vault = self.clone();
            return tokio::task::spawn_blocking(move || vault.keys_blocking(&tags, create))
                .await
                .map_err(|e| StoreError::Database(e.to_string()))?;
        };
        // Sealing asks the vault itself: another node may have shredded a key this one holds.
        let (mut found, missing) = self.cached(&tags, !create);
        if missing.is_empty() {
            return Ok(found);
        }
        let shreds_before = self.shreds.load(Ordering::SeqCst);
        let client = pool.get().await?;
        let wanted: Vec<&[u8]> = missing.iter().map(|t| &t.0[..]).collect();
        if create {
            let made: Vec<(Tag, Vec<u8>)> = missing.iter().map(|t| (*t, self.master.new_data_key(t).1)).collect();
            let tags: Vec<&[u8]> = made.iter().map(|(t, _)| &t.0[..]).collect();
            let wrapped: Vec<&[u8]> = made.iter().map(|(_, w)| &w[..]).collect();
            // Two nodes may make a key for one new subject at once: the first one kept wins,
            // and both read it back below.
            client
                .execute(
                    "INSERT INTO subject_keys (tag, wrapped, created_at)
                     SELECT t, w, $3 FROM UNNEST($1::BYTEA[], $2::BYTEA[]) AS k(t, w)
                     ON CONFLICT (tag) DO NOTHING",
                    &[&tags, &wrapped, &now_us()],
                )
                .await?;
        }
        let rows = client
            .query("SELECT tag, wrapped FROM subject_keys WHERE tag = ANY($1)", &[&wanted])
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(Vec<u8>, Vec<u8>)>>>()?;
        found.extend(self.unwrap_all(rows)?);
        self.remember(&found, shreds_before);
        Ok(found)
    }

    /// Which of `tags` were shredded, from the SQLite vault.
    fn shredded_blocking(&self, tags: &[Tag]) -> Result<HashSet<Tag>> {
        let Backend::Sqlite(conn) = &self.backend else {
            return Err(StoreError::Database("the key vault is not SQLite".into()));
        };
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached("SELECT 1 FROM shredded WHERE tag = ?1")?;
        let mut out = HashSet::new();
        for tag in tags {
            if stmt.exists([&tag.0[..]])? {
                out.insert(*tag);
            }
        }
        Ok(out)
    }

    /// Which of `tags` were shredded, from any backend.
    async fn shredded(self: &Arc<Self>, tags: Vec<Tag>) -> Result<HashSet<Tag>> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let vault = self.clone();
                tokio::task::spawn_blocking(move || vault.shredded_blocking(&tags))
                    .await
                    .map_err(|e| StoreError::Database(e.to_string()))?
            }
            Backend::Postgres(pool) => {
                let wanted: Vec<&[u8]> = tags.iter().map(|t| &t.0[..]).collect();
                pool.get()
                    .await?
                    .query("SELECT tag FROM shredded WHERE tag = ANY($1)", &[&wanted])
                    .await?
                    .into_iter()
                    .map(|r| tag_of_row(r.try_get(0)?))
                    .collect()
            }
        }
    }

    /// Destroys the keys of `identifiers`: every body they sealed, in any copy made without the
    /// vault, becomes unreadable. Returns how many keys there were.
    pub(crate) async fn shred(self: &Arc<Self>, identifiers: &[String]) -> Result<u64> {
        let tags: Vec<Tag> = identifiers
            .iter()
            .map(|i| Self::tag_at_rest(i).unwrap_or_else(|| self.master.tag(i)))
            .collect();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            self.shreds.fetch_add(1, Ordering::SeqCst);
            for tag in &tags {
                cache.remove(tag);
            }
        }
        match &self.backend {
            Backend::Sqlite(_) => {
                let vault = self.clone();
                tokio::task::spawn_blocking(move || vault.shred_blocking(&tags))
                    .await
                    .map_err(|e| StoreError::Database(e.to_string()))?
            }
            Backend::Postgres(pool) => {
                let wanted: Vec<&[u8]> = tags.iter().map(|t| &t.0[..]).collect();
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                tx.execute(
                    "INSERT INTO shredded (tag, at) SELECT t, $2 FROM UNNEST($1::BYTEA[]) AS s(t) ON CONFLICT (tag) DO NOTHING",
                    &[&wanted, &now_us()],
                )
                .await?;
                let n = tx
                    .execute("DELETE FROM subject_keys WHERE tag = ANY($1)", &[&wanted])
                    .await?;
                tx.commit().await?;
                // The deleted rows stay in the table's pages until vacuumed.
                client.batch_execute("VACUUM subject_keys").await?;
                Ok(n)
            }
        }
    }

    fn shred_blocking(&self, tags: &[Tag]) -> Result<u64> {
        let Backend::Sqlite(conn) = &self.backend else {
            return Err(StoreError::Database("the key vault is not SQLite".into()));
        };
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut n = 0;
        for tag in tags {
            tx.execute(
                "INSERT INTO shredded (tag, at) VALUES (?1, ?2) ON CONFLICT (tag) DO NOTHING",
                params![&tag.0[..], now_us()],
            )?;
            n += tx.execute("DELETE FROM subject_keys WHERE tag = ?1", [&tag.0[..]])? as u64;
        }
        tx.commit()?;
        // The old pages stay in the write-ahead log until it is checkpointed and truncated,
        // which waits for another process reading the vault (an import beside the server).
        for _ in 0..200 {
            let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            if busy == 0 {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(StoreError::Database(
            "the keys were shredded, but the key vault's write-ahead log could not be truncated: another process kept it busy; erase again".into(),
        ))
    }

    /// Seals `text` under the key of `identifier` (made if missing), compressed first (fast
    /// deflate), as text: `sealed+deflate:` and the base64 of the sealed bytes. With sealing off,
    /// the text stays as it is.
    pub(crate) async fn seal_deflated(self: &Arc<Self>, identifier: &str, text: &str) -> Result<String> {
        if !self.seals() {
            return Ok(text.to_owned());
        }
        self.seal_as(identifier, SEALED_DEFLATED, &deflate(text)?).await
    }

    /// [`Vault::seal_deflated`] on the SQLite vault, from a blocking thread.
    pub(crate) fn seal_deflated_blocking(&self, identifier: &str, text: &str) -> Result<String> {
        if !self.seals() {
            return Ok(text.to_owned());
        }
        let tag = self.master.tag(identifier);
        let keys = self.keys_blocking(&[tag], true)?;
        Ok(sealed_text(SEALED_DEFLATED, &tag, &keys[&tag], &deflate(text)?))
    }

    /// [`Vault::seal_deflated`] for a text that `write` writes out. With sealing on, it is
    /// compressed on a second thread while `write` renders it, and never held whole (an access
    /// archive runs to megabytes); with sealing off it is kept as written. A failure of `write`
    /// is [`StoreError::Writer`].
    pub(crate) async fn seal_written(
        self: &Arc<Self>,
        identifier: &str,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<String> {
        if !self.seals() {
            let mut text = Vec::new();
            write(&mut text).map_err(|e| StoreError::Writer(e.to_string()))?;
            return String::from_utf8(text).map_err(|e| StoreError::Writer(format!("a result is not text: {e}")));
        }
        let packed = deflate_written(write)?;
        self.seal_as(identifier, SEALED_DEFLATED, &packed).await
    }

    async fn seal_as(self: &Arc<Self>, identifier: &str, prefix: &str, bytes: &[u8]) -> Result<String> {
        let tag = self.master.tag(identifier);
        let keys = self.keys(vec![tag], true).await?;
        Ok(sealed_text(prefix, &tag, &keys[&tag], bytes))
    }

    /// Opens what [`Vault::seal_deflated`] sealed (or, uncompressed, `sealed:` and the base64, as
    /// results were kept before); none when the key was shredded. A text stored plain (sealing
    /// off) is returned as it is.
    pub(crate) async fn open_text(self: &Arc<Self>, identifier: &str, stored: String) -> Result<Option<String>> {
        use base64::Engine;
        let (encoded, deflated) = if let Some(rest) = stored.strip_prefix(SEALED_DEFLATED) {
            (rest, true)
        } else if let Some(rest) = stored.strip_prefix(SEALED_TEXT) {
            (rest, false)
        } else {
            return Ok(Some(stored));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| StoreError::Database(format!("a sealed value is not base64: {e}")))?;
        let tag = self.master.tag(identifier);
        let keys = self.keys(vec![tag], false).await?;
        let opened = keys.get(&tag).map(|key| key.open(&tag, &bytes));
        match opened {
            Some(Ok(plain)) if deflated => {
                use std::io::Read;
                let mut text = String::with_capacity(plain.len() * 8);
                flate2::read::DeflateDecoder::new(plain.as_slice())
                    .read_to_string(&mut text)
                    .map_err(|e| StoreError::Database(format!("a sealed result does not inflate: {e}")))?;
                Ok(Some(text))
            }
            Some(Ok(plain)) => String::from_utf8(plain)
                .map(Some)
                .map_err(|e| StoreError::Database(e.to_string())),
            _ if self.shredded(vec![tag]).await?.contains(&tag) => Ok(None),
            _ => Err(StoreError::Database(format!(
                "the sealed text of {identifier} does not open and its key was never shredded"
            ))),
        }
    }

    /// Seals a body for its subject with the keys given: sealed bytes, or the body itself when
    /// it has no subject or sealing is off (`tag` none). `None` when the subject's key is
    /// missing: it was shredded, and the body must not be kept.
    pub(crate) fn keep(
        &self,
        tag: Option<&Tag>,
        keys: &HashMap<Tag, DataKey>,
        body: serde_json::Value,
    ) -> Result<Option<Kept>> {
        let Some(tag) = tag else {
            return Ok(Some(Kept::Plain(body)));
        };
        let Some(key) = keys.get(tag) else { return Ok(None) };
        let text = serde_json::to_vec(&body).map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(Some(Kept::Sealed(key.seal(tag, &text))))
    }

    /// Seals a body for its subject with the keys given; a message with no subject stays plain.
    pub(crate) fn seal(&self, tag: Option<&Tag>, keys: &HashMap<Tag, DataKey>, body: &[u8]) -> Option<Vec<u8>> {
        let tag = tag?;
        keys.get(tag).map(|k| k.seal(tag, body))
    }

    /// The tag of each read whose body is sealed.
    fn tags_of(&self, reads: &[Read]) -> Vec<Option<Tag>> {
        let sealed = self.tags_for(
            reads
                .iter()
                .map(|r| (r.event.user_id.as_deref(), r.event.anonymous_id.as_deref())),
        );
        sealed
            .into_iter()
            .zip(reads)
            .map(|(tag, r)| tag.filter(|_| matches!(r.body, Body::Sealed(_))))
            .collect()
    }

    /// The distinct tags among `tags`.
    fn distinct(tags: &[Option<Tag>]) -> Vec<Tag> {
        let mut out: Vec<Tag> = tags.iter().flatten().copied().collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Opens the bodies of `reads` with `keys`, `tags` being theirs. Returns the events, and the
    /// tags whose bodies did not open (the key missing, or another key made since): `settle`
    /// decides about those.
    fn try_open(
        &self,
        mut reads: Vec<Read>,
        mut tags: Vec<Option<Tag>>,
        keys: &HashMap<Tag, DataKey>,
    ) -> Result<(Vec<StoredEvent>, Closed)> {
        // A long history (an access archive, a profile with years of events) is opened on two
        // threads: parsing the bodies is most of the time of reading them.
        if reads.len() < PARALLEL_OPEN_FROM {
            return Self::open_part(reads, tags, keys, 0);
        }
        let half = reads.len() / 2;
        let (later, later_tags) = (reads.split_off(half), tags.split_off(half));
        let (first, second) = std::thread::scope(|scope| {
            let second = scope.spawn(|| Self::open_part(later, later_tags, keys, half));
            (Self::open_part(reads, tags, keys, 0), second.join())
        });
        let (mut events, mut closed) = first?;
        let (more, more_closed) =
            second.map_err(|_| StoreError::Database("opening event bodies panicked".into()))??;
        events.extend(more);
        closed.extend(more_closed);
        Ok((events, closed))
    }

    /// Opens `reads`, the first at position `offset` of the whole read.
    fn open_part(
        reads: Vec<Read>,
        tags: Vec<Option<Tag>>,
        keys: &HashMap<Tag, DataKey>,
        offset: usize,
    ) -> Result<(Vec<StoredEvent>, Closed)> {
        let mut out = Vec::with_capacity(reads.len());
        let mut closed = Vec::new();
        for (r, tag) in reads.into_iter().zip(tags) {
            let Read { mut event, body } = r;
            match (body, tag) {
                (Body::Plain(v), _) => event.body = v,
                (Body::Sealed(bytes), Some(tag)) => match keys.get(&tag).map(|k| k.open(&tag, &bytes)) {
                    Some(Ok(plain)) => {
                        event.body = serde_json::from_slice(&plain).map_err(|e| StoreError::Database(e.to_string()))?;
                    }
                    _ => closed.push((offset + out.len(), tag)),
                },
                (Body::Sealed(_), None) => {
                    return Err(StoreError::Database(format!(
                        "event {} is sealed but names no subject",
                        event.seq
                    )));
                }
            }
            out.push(event);
        }
        Ok((out, closed))
    }

    /// The events of `reads` whose bodies did not open: null for a subject whose key was
    /// shredded (an erased person's event, read from an older copy, or sent as they were being
    /// erased), an error for any other.
    fn settle(events: &[StoredEvent], closed: &[(usize, Tag)], shredded: &HashSet<Tag>) -> Result<()> {
        for (i, tag) in closed {
            if !shredded.contains(tag) {
                return Err(StoreError::Database(format!(
                    "the body of event {} does not open and its subject's key was never shredded: is this the vault the data was written with?",
                    events[*i].seq
                )));
            }
        }
        Ok(())
    }

    /// Opens the bodies of `reads`, on the SQLite vault, from a blocking thread.
    pub(crate) fn open_blocking(&self, reads: Vec<Read>) -> Result<Vec<StoredEvent>> {
        let tags = self.tags_of(&reads);
        let keys = self.keys_blocking(&Self::distinct(&tags), false)?;
        let (events, closed) = self.try_open(reads, tags, &keys)?;
        if !closed.is_empty() {
            let tags: Vec<Tag> = closed.iter().map(|(_, t)| *t).collect();
            Self::settle(&events, &closed, &self.shredded_blocking(&tags)?)?;
        }
        Ok(events)
    }

    /// Opens the bodies of `reads`, from any backend.
    pub(crate) async fn open_async(self: &Arc<Self>, reads: Vec<Read>) -> Result<Vec<StoredEvent>> {
        let tags = self.tags_of(&reads);
        let keys = self.keys(Self::distinct(&tags), false).await?;
        let (events, closed) = self.try_open(reads, tags, &keys)?;
        if !closed.is_empty() {
            let tags: Vec<Tag> = closed.iter().map(|(_, t)| *t).collect();
            Self::settle(&events, &closed, &self.shredded(tags).await?)?;
        }
        Ok(events)
    }
}

/// Runs `write` on this thread while a second one compresses what it writes (fast raw deflate):
/// the two halves of the work overlap, and what was written is never held whole.
fn deflate_written(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<Vec<u8>> {
    let (pieces, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    std::thread::scope(|scope| {
        let packer = scope.spawn(move || {
            let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            for piece in received {
                deflate.write_all(&piece)?;
            }
            deflate.finish()
        });
        let mut out = Pieces {
            piece: Vec::new(),
            pieces,
        };
        let written = write(&mut out).and_then(|()| out.flush());
        // The channel closes: the packer finishes what it has.
        drop(out);
        // A packer that failed is the cause of the writer's "stopped": its error comes first.
        let packed = packer
            .join()
            .map_err(|_| StoreError::Database("the compressing thread panicked".into()))?
            .map_err(|e| StoreError::Database(format!("compressing a result: {e}")))?;
        written.map_err(|e| StoreError::Writer(e.to_string()))?;
        Ok(packed)
    })
}

/// A writer that hands what it is given to another thread, a piece of [`PACK_CHUNK`] at a time.
struct Pieces {
    piece: Vec<u8>,
    pieces: SyncSender<Vec<u8>>,
}

impl Write for Pieces {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.piece.capacity() == 0 {
            self.piece.reserve(PACK_CHUNK);
        }
        self.piece.extend_from_slice(bytes);
        if self.piece.len() >= PACK_CHUNK {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.piece.is_empty() {
            self.pieces
                .send(std::mem::take(&mut self.piece))
                .map_err(|_| std::io::Error::other("the compressing thread stopped"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn what_is_written_comes_back_inflated_whole_and_in_order() {
        // Many pieces' worth, written a few bytes at a time as a serializer does.
        let lines: Vec<String> = (0..100_000).map(|i| format!("{{\"seq\":{i}}}\n")).collect();
        let packed = deflate_written(|out| lines.iter().try_for_each(|l| out.write_all(l.as_bytes()))).unwrap();
        let mut text = String::new();
        flate2::read::DeflateDecoder::new(&packed[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, lines.concat());
        assert!(
            packed.len() < text.len() / 2,
            "{} bytes packed from {}",
            packed.len(),
            text.len()
        );
    }

    #[test]
    fn a_writer_that_fails_fails_the_whole_result() {
        let failed = deflate_written(|out| {
            out.write_all(&[b'x'; PACK_CHUNK * 2])?;
            Err(std::io::Error::other("the archive could not be rendered"))
        });
        assert!(
            matches!(&failed, Err(StoreError::Writer(why)) if why == "the archive could not be rendered"),
            "{failed:?}"
        );
    }
}
