//! Governance records in both stores: dated catalog versions, the notice archive, and the few
//! aggregate queries the compliance checks need.
//!
//! A catalog version is kept only when the catalog's hash changes, so restarting a node with
//! the same catalog adds nothing; on PostgreSQL the table is locked while a version is taken,
//! so two nodes starting together record a change once.

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Result, StoreError, from_micros, to_micros};
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

/// The catalog as it stood from `taken_at`, with the records of processing it produced.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CatalogVersion {
    /// 1, 2, 3… in order of change.
    pub version: i64,
    /// SHA-256 identifying the version (of the catalog and the register it produced).
    pub hash: String,
    /// When this version came into force.
    pub taken_at: jiff::Timestamp,
    /// The catalog, as JSON.
    pub catalog: Value,
    /// The records of processing (`confiance_core::governance::records::Register`), as JSON.
    pub register: Value,
}

/// A consent notice (the banner with its texts) as shown to people, with when.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Notice {
    /// Archive id.
    pub id: i64,
    /// The catalog's notice version.
    pub version: String,
    /// SHA-256 of what was shown: the hash consent proofs name.
    pub hash: String,
    /// The notice's text and configuration, as shown.
    pub text: String,
    /// First shown.
    pub published_from: jiff::Timestamp,
    /// Replaced by the next one, if it was.
    pub published_until: Option<jiff::Timestamp>,
}

fn parse_json(s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(|e| StoreError::Database(format!("corrupt catalog version: {e}")))
}

type VersionParts = (i64, String, i64, String, String);

fn version_row((version, hash, taken, catalog, register): VersionParts) -> Result<CatalogVersion> {
    Ok(CatalogVersion {
        version,
        hash,
        taken_at: from_micros(taken),
        catalog: parse_json(&catalog)?,
        register: parse_json(&register)?,
    })
}

type NoticeParts = (i64, String, String, String, i64, Option<i64>);

fn notice_row((id, version, hash, text, from, until): NoticeParts) -> Notice {
    Notice {
        id,
        version,
        hash,
        text,
        published_from: from_micros(from),
        published_until: until.map(from_micros),
    }
}

const VERSION_COLUMNS: &str = "version, hash, taken_at, catalog, register";
const NOTICE_COLUMNS: &str = "id, version, hash, text, published_from, published_until";

fn pg_time(t: jiff::Timestamp) -> std::time::SystemTime {
    std::time::SystemTime::from(from_micros(to_micros(t)))
}

/// The traits every message carries (the column written at collection, not the bodies), with
/// the profile of its sender (a negative log position when the sender is not resolved yet, so
/// that each such message counts once).
const SQLITE_TRAITS: &str = "WITH t AS (
        SELECT e.seq, e.source_id, e.user_id, e.anonymous_id, j.value AS name
        FROM events e, json_each('[\"' || replace(substr(e.traits, 2, length(e.traits) - 2), ',', '\",\"') || '\"]') j
        WHERE e.traits IS NOT NULL
    ), p AS (
        SELECT t.name, s.name AS source, COALESCE(i.profile_id, -t.seq) AS person
        FROM t JOIN sources s ON s.id = t.source_id
        LEFT JOIN identities i ON i.identifier = CASE WHEN t.user_id IS NOT NULL
            THEN 'user_id:' || t.user_id ELSE 'anonymous_id:' || t.anonymous_id END
    )";

const PG_TRAITS: &str = "WITH t AS (
        SELECT e.seq, e.source_id, e.user_id, e.anonymous_id, j.name
        FROM events e, unnest(string_to_array(trim(both ',' from e.traits), ',')) AS j(name)
        WHERE e.traits IS NOT NULL
    ), p AS (
        SELECT t.name, s.name AS source, COALESCE(i.profile_id, -t.seq) AS person
        FROM t JOIN sources s ON s.id = t.source_id
        LEFT JOIN identities i ON i.identifier = CASE WHEN t.user_id IS NOT NULL
            THEN 'user_id:' || t.user_id ELSE 'anonymous_id:' || t.anonymous_id END
    )";

/// The version a catalog with `hash` gets after `latest` (version, hash): the next one, or, as
/// `Err`, the latest itself when nothing changed.
fn next_version(latest: Option<(i64, String)>, hash: &str) -> std::result::Result<i64, i64> {
    match latest {
        Some((version, h)) if h == hash => Err(version),
        Some((version, _)) => Ok(version + 1),
        None => Ok(1),
    }
}

/// People per trait and source, and per trait in all.
pub type TraitCounts = (Vec<(String, String, i64)>, Vec<(String, i64)>);

impl SqliteStore {
    pub(crate) async fn record_catalog_version(
        &self,
        hash: String,
        catalog: Value,
        register: Value,
        at: jiff::Timestamp,
    ) -> Result<(i64, bool)> {
        self.write(move |tx| {
            let latest: Option<(i64, String)> = tx
                .query_row(
                    "SELECT version, hash FROM catalog_versions ORDER BY version DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let version = match next_version(latest, &hash) {
                Ok(version) => version,
                Err(current) => return Ok((current, false)),
            };
            tx.execute(
                "INSERT INTO catalog_versions (version, hash, taken_at, catalog, register) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![version, hash, to_micros(at), catalog.to_string(), register.to_string()],
            )?;
            Ok((version, true))
        })
        .await
    }

    pub(crate) async fn catalog_versions(&self, at: Option<jiff::Timestamp>) -> Result<Vec<CatalogVersion>> {
        self.read(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM catalog_versions WHERE ?1 IS NULL OR taken_at <= ?1 ORDER BY version"
            ))?;
            let rows = stmt
                .query_map([at.map(to_micros)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<rusqlite::Result<Vec<VersionParts>>>()?;
            rows.into_iter().map(version_row).collect()
        })
        .await
    }

    pub(crate) async fn record_notice(
        &self,
        version: String,
        hash: String,
        text: String,
        at: jiff::Timestamp,
    ) -> Result<bool> {
        self.write(move |tx| {
            let at = to_micros(at);
            let n = tx.execute(
                "INSERT INTO notices (version, hash, text, published_from) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (hash) DO NOTHING",
                params![version, hash, text, at],
            )?;
            if n == 1 {
                tx.execute(
                    "UPDATE notices SET published_until = ?1 WHERE published_until IS NULL AND hash <> ?2",
                    params![at, hash],
                )?;
            }
            Ok(n == 1)
        })
        .await
    }

    pub(crate) async fn notices(&self) -> Result<Vec<Notice>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!("SELECT {NOTICE_COLUMNS} FROM notices ORDER BY id"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                })?
                .collect::<rusqlite::Result<Vec<NoticeParts>>>()?;
            Ok(rows.into_iter().map(notice_row).collect())
        })
        .await
    }

    pub(crate) async fn unproven_grants(&self, limit: usize) -> Result<Vec<i64>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT l.seq FROM consent_state s JOIN consent_ledger l ON l.seq = s.seq
                 WHERE s.status = 'granted' AND l.notice_hash IS NULL AND l.proof IN ('null', '{}')
                 ORDER BY l.seq LIMIT ?1",
            )?;
            Ok(stmt
                .query_map([limit as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?)
        })
        .await
    }

    pub(crate) async fn stale_choices(&self, before: jiff::Timestamp) -> Result<Vec<(String, String, i64)>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT purpose, status, COUNT(*) FROM consent_state WHERE recorded_at < ?1 GROUP BY 1, 2 ORDER BY 1, 2",
            )?;
            Ok(stmt
                .query_map([to_micros(before)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub(crate) async fn last_audit(&self, action: String) -> Result<Option<jiff::Timestamp>> {
        self.read(move |c| {
            let at: Option<i64> = c.query_row("SELECT MAX(at) FROM audit_log WHERE action = ?1", [action], |r| {
                r.get(0)
            })?;
            Ok(at.map(from_micros))
        })
        .await
    }

    pub(crate) async fn trait_counts(&self) -> Result<TraitCounts> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "{SQLITE_TRAITS} SELECT name, source, COUNT(DISTINCT person) FROM p GROUP BY 1, 2 ORDER BY 1, 2"
            ))?;
            let by_source = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut stmt = c.prepare(&format!(
                "{SQLITE_TRAITS} SELECT name, COUNT(DISTINCT person) FROM p GROUP BY 1 ORDER BY 1"
            ))?;
            let total = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((by_source, total))
        })
        .await
    }

    pub(crate) async fn sent_since(&self, since: jiff::Timestamp) -> Result<Vec<(i64, i64, jiff::Timestamp)>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT campaign_id, profile_id, at FROM sends WHERE outcome = 'sent' AND at >= ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map([to_micros(since)], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().map(|(c, p, at)| (c, p, from_micros(at))).collect())
        })
        .await
    }
}

impl PgStore {
    pub(crate) async fn record_catalog_version(
        &self,
        hash: String,
        catalog: Value,
        register: Value,
        at: jiff::Timestamp,
    ) -> Result<(i64, bool)> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        tx.execute("LOCK TABLE catalog_versions IN EXCLUSIVE MODE", &[]).await?;
        let latest = tx
            .query_opt(
                "SELECT version, hash FROM catalog_versions ORDER BY version DESC LIMIT 1",
                &[],
            )
            .await?;
        let latest: Option<(i64, String)> = match latest {
            Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
            None => None,
        };
        let version = match next_version(latest, &hash) {
            Ok(version) => version,
            Err(current) => return Ok((current, false)),
        };
        tx.execute(
            "INSERT INTO catalog_versions (version, hash, taken_at, catalog, register) VALUES ($1, $2, $3, $4, $5)",
            &[
                &version,
                &hash,
                &to_micros(at),
                &catalog.to_string(),
                &register.to_string(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok((version, true))
    }

    pub(crate) async fn catalog_versions(&self, at: Option<jiff::Timestamp>) -> Result<Vec<CatalogVersion>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM catalog_versions WHERE $1::bigint IS NULL OR taken_at <= $1 ORDER BY version"
                ),
                &[&at.map(to_micros)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                version_row((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                ))
            })
            .collect()
    }

    pub(crate) async fn record_notice(
        &self,
        version: String,
        hash: String,
        text: String,
        at: jiff::Timestamp,
    ) -> Result<bool> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let at = to_micros(at);
        let n = tx
            .execute(
                "INSERT INTO notices (version, hash, text, published_from) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (hash) DO NOTHING",
                &[&version, &hash, &text, &at],
            )
            .await?;
        if n == 1 {
            tx.execute(
                "UPDATE notices SET published_until = $1 WHERE published_until IS NULL AND hash <> $2",
                &[&at, &hash],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    pub(crate) async fn notices(&self) -> Result<Vec<Notice>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(&format!("SELECT {NOTICE_COLUMNS} FROM notices ORDER BY id"), &[])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(notice_row((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                )))
            })
            .collect()
    }

    pub(crate) async fn unproven_grants(&self, limit: usize) -> Result<Vec<i64>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT l.seq FROM consent_state s JOIN consent_ledger l ON l.seq = s.seq
                 WHERE s.status = 'granted' AND l.notice_hash IS NULL
                   AND (l.proof = 'null'::jsonb OR l.proof = '{}'::jsonb)
                 ORDER BY l.seq LIMIT $1",
                &[&(limit as i64)],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    pub(crate) async fn stale_choices(&self, before: jiff::Timestamp) -> Result<Vec<(String, String, i64)>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT purpose, status, COUNT(*) FROM consent_state WHERE recorded_at < $1 GROUP BY 1, 2 ORDER BY 1, 2",
                &[&pg_time(before)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    pub(crate) async fn last_audit(&self, action: String) -> Result<Option<jiff::Timestamp>> {
        let client = self.pool().get().await?;
        let row = client
            .query_one("SELECT MAX(at) FROM audit_log WHERE action = $1", &[&action])
            .await?;
        Ok(row.try_get::<_, Option<i64>>(0)?.map(from_micros))
    }

    pub(crate) async fn trait_counts(&self) -> Result<TraitCounts> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                &format!("{PG_TRAITS} SELECT name, source, COUNT(DISTINCT person) FROM p GROUP BY 1, 2 ORDER BY 1, 2"),
                &[],
            )
            .await?;
        let by_source = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<_>>>()?;
        let rows = client
            .query(
                &format!("{PG_TRAITS} SELECT name, COUNT(DISTINCT person) FROM p GROUP BY 1 ORDER BY 1"),
                &[],
            )
            .await?;
        let total = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok((by_source, total))
    }

    pub(crate) async fn sent_since(&self, since: jiff::Timestamp) -> Result<Vec<(i64, i64, jiff::Timestamp)>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT campaign_id, profile_id, at FROM sends WHERE outcome = 'sent' AND at >= $1 ORDER BY id",
                &[&to_micros(since)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, from_micros(r.try_get(2)?))))
            .collect()
    }
}
