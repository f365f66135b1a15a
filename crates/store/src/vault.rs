//! The key vault: each subject's data key, wrapped by the master key, in a database of its own.
//!
//! # Design
//!
//! The rules are in `confiance_core::privacy::vault`; this is where the keys live. The vault is
//! deliberately *not* the store's database: SQLite keeps it in `vault.db` beside `confiance.db`,
//! PostgreSQL in a database of its own named after the store's (`<name>_vault`, created when
//! missing). A backup or a dump of the store's database therefore holds sealed bodies and no
//! keys, and shredding a subject's key — one row, deleted with `secure_delete` and the vault's
//! write-ahead log truncated — makes every copy of their bodies unreadable, wherever it is.
//!
//! Keys are read far more often than written: the store keeps opened keys in memory for a
//! minute, so steady ingestion and reads cost no vault query. The minute bounds how long another
//! process (a second node, an import beside the server) may still use a key another one shredded;
//! the process that shreds forgets it at once.

use crate::{Result, StoreError, StoredEvent};
use confiance_core::privacy::vault::{DataKey, MasterKey, Tag, subject_of};
use deadpool_postgres::Pool;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

/// How long an opened key is used without asking the vault again.
const CACHE_FOR: Duration = Duration::from_secs(60);
/// Keys kept in memory at most; past it the cache starts over.
const CACHE_MAX: usize = 200_000;

/// The advisory lock that serialises creating the vault's table ("Confvalt").
const SCHEMA_LOCK: i64 = 0x436f_6e66_7661_6c74;

/// How a sealed value kept in a text column begins.
const SEALED_TEXT: &str = "sealed:";

/// The file of the SQLite store's vault, beside the database.
pub const VAULT_FILE: &str = "vault.db";

const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS subject_keys (
    tag BLOB PRIMARY KEY,
    wrapped BLOB NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID";

const PG_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS subject_keys (
    tag BYTEA PRIMARY KEY,
    wrapped BYTEA NOT NULL,
    created_at BIGINT NOT NULL
)";

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

impl Read {
    fn tag(&self, master: &MasterKey) -> Option<Tag> {
        match self.body {
            Body::Sealed(_) => {
                subject_of(self.event.user_id.as_deref(), self.event.anonymous_id.as_deref()).map(|s| master.tag(&s))
            }
            Body::Plain(_) => None,
        }
    }
}

/// The vault of one store.
pub(crate) struct Vault {
    master: MasterKey,
    backend: Backend,
    seal: AtomicBool,
    cache: Mutex<HashMap<Tag, (DataKey, Instant)>>,
}

fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

impl Vault {
    /// Opens (creating) the SQLite vault in `dir`.
    pub(crate) fn open_sqlite(dir: &Path, master: MasterKey) -> Result<Self> {
        let conn = Connection::open(dir.join(VAULT_FILE))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA secure_delete = ON;",
        )?;
        conn.execute_batch(SQLITE_SCHEMA)?;
        Ok(Self::new(master, Backend::Sqlite(Mutex::new(conn))))
    }

    /// Connects to (creating) the PostgreSQL vault beside the store's database `store`.
    pub(crate) async fn connect_postgres(
        store: &tokio_postgres::Config,
        store_pool: &Pool,
        master: MasterKey,
    ) -> Result<Self> {
        let name = format!("{}_vault", store.get_dbname().unwrap_or("postgres"));
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
        // Nodes starting together would race on `IF NOT EXISTS`: a lock makes them take turns.
        pool.get()
            .await?
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {PG_SCHEMA}; COMMIT;"
            ))
            .await?;
        Ok(Self::new(master, Backend::Postgres(pool)))
    }

    fn new(master: MasterKey, backend: Backend) -> Self {
        Self {
            master,
            backend,
            seal: AtomicBool::new(true),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether new bodies are sealed (on unless switched off, to measure what sealing costs).
    pub(crate) fn seals(&self) -> bool {
        self.seal.load(Ordering::Relaxed)
    }

    pub(crate) fn set_sealing(&self, on: bool) {
        self.seal.store(on, Ordering::Relaxed);
    }

    /// The tag of the subject whose key seals a message from these ids.
    pub(crate) fn tag_of(&self, user_id: Option<&str>, anonymous_id: Option<&str>) -> Option<Tag> {
        subject_of(user_id, anonymous_id).map(|s| self.master.tag(&s))
    }

    /// The tag of each message's subject, from its `(user id, anonymous id)`, and the keys that
    /// seal them, made where missing; no tags when sealing is off.
    pub(crate) async fn sealing_keys<'a>(
        self: &Arc<Self>,
        senders: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
    ) -> Result<(Vec<Option<Tag>>, HashMap<Tag, DataKey>)> {
        let seals = self.seals();
        let tags: Vec<Option<Tag>> = senders
            .map(|(user_id, anonymous_id)| seals.then(|| self.tag_of(user_id, anonymous_id)).flatten())
            .collect();
        let keys = if tags.iter().any(Option::is_some) {
            self.keys(tags.iter().flatten().copied().collect(), true).await?
        } else {
            HashMap::new()
        };
        Ok((tags, keys))
    }

    fn cached(&self, tags: &[Tag]) -> (HashMap<Tag, DataKey>, Vec<Tag>) {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for tag in tags {
            if found.contains_key(tag) || missing.contains(tag) {
                continue;
            }
            match cache.get(tag) {
                Some((key, at)) if at.elapsed() < CACHE_FOR => {
                    found.insert(*tag, key.clone());
                }
                _ => missing.push(*tag),
            }
        }
        (found, missing)
    }

    fn remember(&self, keys: &HashMap<Tag, DataKey>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
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
                let tag = Tag(tag
                    .try_into()
                    .map_err(|_| StoreError::Database("a key vault tag is not 32 bytes".into()))?);
                let key = self.master.unwrap_key(&tag, &wrapped).map_err(|_| {
                    StoreError::Database(
                        "a key of the vault does not open with this master key: is CONFIANCE_MASTER_KEY the one the data was written with?"
                            .into(),
                    )
                })?;
                Ok((tag, key))
            })
            .collect()
    }

    /// The keys of `tags`, from memory or the SQLite vault; with `create`, the missing ones are
    /// made and kept (durably, before they seal anything).
    pub(crate) fn keys_blocking(&self, tags: &[Tag], create: bool) -> Result<HashMap<Tag, DataKey>> {
        let (mut found, missing) = self.cached(tags);
        if missing.is_empty() {
            return Ok(found);
        }
        let Backend::Sqlite(conn) = &self.backend else {
            return Err(StoreError::Database("the key vault is not SQLite".into()));
        };
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
        let opened = self.unwrap_all(rows)?;
        found.extend(opened);
        self.remember(&found);
        Ok(found)
    }

    /// The keys of `tags`, as [`Vault::keys_blocking`], from any backend.
    pub(crate) async fn keys(self: &Arc<Self>, tags: Vec<Tag>, create: bool) -> Result<HashMap<Tag, DataKey>> {
        let (mut found, missing) = self.cached(&tags);
        if missing.is_empty() {
            return Ok(found);
        }
        match &self.backend {
            Backend::Sqlite(_) => {
                let vault = self.clone();
                tokio::task::spawn_blocking(move || vault.keys_blocking(&tags, create))
                    .await
                    .map_err(|e| StoreError::Database(e.to_string()))?
            }
            Backend::Postgres(pool) => {
                let client = pool.get().await?;
                let wanted: Vec<&[u8]> = missing.iter().map(|t| &t.0[..]).collect();
                if create {
                    let made: Vec<(Tag, DataKey, Vec<u8>)> = missing
                        .iter()
                        .map(|t| {
                            let (key, wrapped) = self.master.new_data_key(t);
                            (*t, key, wrapped)
                        })
                        .collect();
                    let tags: Vec<&[u8]> = made.iter().map(|(t, _, _)| &t.0[..]).collect();
                    let wrapped: Vec<&[u8]> = made.iter().map(|(_, _, w)| &w[..]).collect();
                    // Two nodes may make a key for one new subject at once: the first one kept
                    // wins, and both read it back below.
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
                self.remember(&found);
                Ok(found)
            }
        }
    }

    /// Destroys the keys of `identifiers`: every body they sealed, in any copy, becomes
    /// unreadable. Returns how many keys there were.
    pub(crate) async fn shred(self: &Arc<Self>, identifiers: &[String]) -> Result<u64> {
        let tags: Vec<Tag> = identifiers.iter().map(|i| self.master.tag(i)).collect();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for tag in &tags {
                cache.remove(tag);
            }
        }
        match &self.backend {
            Backend::Sqlite(_) => {
                let vault = self.clone();
                tokio::task::spawn_blocking(move || {
                    let Backend::Sqlite(conn) = &vault.backend else {
                        unreachable!()
                    };
                    let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                    let mut n = 0;
                    for tag in &tags {
                        n += conn.execute("DELETE FROM subject_keys WHERE tag = ?1", [&tag.0[..]])? as u64;
                    }
                    // The vault has no other reader: the checkpoint always completes, and the
                    // log that held the deleted rows is emptied.
                    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
                    Ok(n)
                })
                .await
                .map_err(|e| StoreError::Database(e.to_string()))?
            }
            Backend::Postgres(pool) => {
                let wanted: Vec<&[u8]> = tags.iter().map(|t| &t.0[..]).collect();
                let n = pool
                    .get()
                    .await?
                    .execute("DELETE FROM subject_keys WHERE tag = ANY($1)", &[&wanted])
                    .await?;
                Ok(n)
            }
        }
    }

    /// Seals `text` under the key of `identifier` (made if missing), as text: `sealed:` and the
    /// base64 of the sealed bytes. With sealing off, the text stays as it is.
    pub(crate) async fn seal_text(self: &Arc<Self>, identifier: &str, text: &str) -> Result<String> {
        use base64::Engine;
        if !self.seals() {
            return Ok(text.to_owned());
        }
        let tag = self.master.tag(identifier);
        let keys = self.keys(vec![tag], true).await?;
        let sealed = keys[&tag].seal(&tag, text.as_bytes());
        Ok(format!(
            "{SEALED_TEXT}{}",
            base64::engine::general_purpose::STANDARD.encode(sealed)
        ))
    }

    /// Opens what [`Vault::seal_text`] sealed; none when the key was shredded.
    pub(crate) async fn open_text(self: &Arc<Self>, identifier: &str, stored: String) -> Result<Option<String>> {
        use base64::Engine;
        let Some(encoded) = stored.strip_prefix(SEALED_TEXT) else {
            return Ok(Some(stored));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| StoreError::Database(format!("a sealed value is not base64: {e}")))?;
        let tag = self.master.tag(identifier);
        let keys = self.keys(vec![tag], false).await?;
        let Some(key) = keys.get(&tag) else { return Ok(None) };
        let plain = key
            .open(&tag, &bytes)
            .map_err(|e| StoreError::Database(e.to_string()))?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|e| StoreError::Database(e.to_string()))
    }

    /// Seals a body for its subject with the keys given; a message with no subject stays plain.
    pub(crate) fn seal(&self, tag: Option<&Tag>, keys: &HashMap<Tag, DataKey>, body: &[u8]) -> Option<Vec<u8>> {
        let tag = tag?;
        keys.get(tag).map(|k| k.seal(tag, body))
    }

    /// The tags whose keys opening `reads` needs.
    pub(crate) fn tags_to_open(&self, reads: &[Read]) -> Vec<Tag> {
        let mut tags: Vec<Tag> = reads.iter().filter_map(|r| r.tag(&self.master)).collect();
        tags.sort_unstable();
        tags.dedup();
        tags
    }

    /// Opens the bodies of `reads` with `keys`. A body whose key was shredded — the event of an
    /// erased subject, read from a copy made before the erasure — cannot be read and is left
    /// out.
    pub(crate) fn open(&self, reads: Vec<Read>, keys: &HashMap<Tag, DataKey>) -> Result<Vec<StoredEvent>> {
        let mut out = Vec::with_capacity(reads.len());
        for r in reads {
            let tag = r.tag(&self.master);
            let Read { mut event, body } = r;
            match body {
                Body::Plain(v) => event.body = v,
                Body::Sealed(bytes) => {
                    let Some(key) = tag.as_ref().and_then(|t| keys.get(t)) else {
                        continue;
                    };
                    let plain = key
                        .open(tag.as_ref().expect("a key was found for it"), &bytes)
                        .map_err(|e| StoreError::Database(format!("event {}: {e}", event.seq)))?;
                    event.body = serde_json::from_slice(&plain).map_err(|e| StoreError::Database(e.to_string()))?;
                }
            }
            out.push(event);
        }
        Ok(out)
    }

    /// [`Vault::open`] after fetching the keys, on the SQLite vault, from a blocking thread.
    pub(crate) fn open_blocking(&self, reads: Vec<Read>) -> Result<Vec<StoredEvent>> {
        let keys = self.keys_blocking(&self.tags_to_open(&reads), false)?;
        self.open(reads, &keys)
    }

    /// [`Vault::open`] after fetching the keys, from any backend.
    pub(crate) async fn open_async(self: &Arc<Self>, reads: Vec<Read>) -> Result<Vec<StoredEvent>> {
        let keys = self.keys(self.tags_to_open(&reads), false).await?;
        self.open(reads, &keys)
    }
}
