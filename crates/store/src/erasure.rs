//! Erasure (GDPR Art. 17) in both stores: everything about a person goes, in one transaction,
//! except what the law requires to keep — the request record, pseudonymised, and a suppression
//! entry (a keyed hash) that keeps them from being added back to marketing.
//!
//! On SQLite, `secure_delete` overwrites what is deleted and the write-ahead log is truncated
//! afterwards, so the plaintext does not linger in the database files; PostgreSQL's dumps carry
//! only live rows.

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::vault::{Kept, Vault};
use crate::{Result, StoreError, to_micros};
use confiance_core::privacy::audit::AuditEvent;
use confiance_core::privacy::requests::ERASED;
use rusqlite::params_from_iter;
use std::sync::Arc;

/// What to erase.
#[derive(Clone, Debug)]
pub struct Erasure {
    /// Every identifier (`kind:value`) of the person.
    pub keys: Vec<String>,
    /// Their profile, if one holds them.
    pub profile: Option<i64>,
    /// Keyed hashes of the identifiers, for the suppression list.
    pub suppression: Vec<String>,
    /// When.
    pub at: jiff::Timestamp,
    /// What to tell the recipients of their data (Art. 19), queued with the erasure.
    pub notices: Vec<crate::NewRecipientNotice>,
}

/// What an erasure removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    /// Events deleted from the log.
    pub events: u64,
    /// Consent decisions deleted from the ledger.
    pub consents: u64,
    /// Identifiers deleted from the identity graph.
    pub identities: u64,
    /// Requests whose subject was pseudonymised (their records are kept).
    pub requests: u64,
    /// Data keys destroyed in the key vault: every copy of what they sealed is now unreadable.
    pub keys: u64,
}

fn values(keys: &[String], prefix: &str) -> Vec<String> {
    keys.iter()
        .filter_map(|k| k.strip_prefix(prefix))
        .map(str::to_owned)
        .collect()
}

/// The requests of `rows` (`id`, kept document), each with its record redacted.
async fn redacted(vault: &Arc<Vault>, rows: Vec<(i64, String)>) -> Result<Vec<(i64, String)>> {
    let mut out = Vec::with_capacity(rows.len());
    for (id, stored) in rows {
        let text = crate::requests::open_doc(vault, id, stored).await?;
        out.push((id, redact(&text)?));
    }
    Ok(out)
}

/// The vault identifiers of the requests of `redacted`, shredded once the records are written.
fn request_keys(redacted: &[(i64, String)]) -> Vec<String> {
    redacted.iter().map(|(id, _)| crate::request_key(*id)).collect()
}

/// The person's keys and those of the export files the erasure deletes (they may list them).
fn with_exports(keys: &[String], exports: &[i64]) -> Vec<String> {
    keys.iter()
        .cloned()
        .chain(exports.iter().map(|id| crate::export_key(*id)))
        .collect()
}

fn redact(doc: &str) -> Result<String> {
    let mut v: serde_json::Value = serde_json::from_str(doc).map_err(|e| StoreError::Database(e.to_string()))?;
    v["subject_value"] = serde_json::json!(ERASED);
    // A rectification keeps which traits it corrected, not the values.
    if let Some(traits) = v
        .pointer_mut("/details/traits")
        .and_then(serde_json::Value::as_object_mut)
    {
        for value in traits.values_mut() {
            *value = serde_json::json!(ERASED);
        }
    }
    Ok(v.to_string())
}

fn audit(e: &Erasure, erased: &Erased) -> AuditEvent {
    AuditEvent::new(
        "staff",
        "subject.erased",
        e.profile.map(|p| format!("profile:{p}")),
        serde_json::json!({"events": erased.events, "consents": erased.consents, "identities": erased.identities, "requests": erased.requests, "keys": erased.keys}),
    )
}

impl SqliteStore {
    pub(crate) async fn erase(&self, e: Erasure) -> Result<Erased> {
        let kept: Vec<String> = e.keys.iter().map(|k| self.vault.at_rest(k)).collect();
        let keys = serde_json::to_string(&kept).map_err(|x| StoreError::Database(x.to_string()))?;
        let rows: Vec<(i64, String)> = self
            .read(move |c| {
                let mut stmt =
                    c.prepare("SELECT id, doc FROM requests WHERE subject IN (SELECT value FROM json_each(?1))")?;
                Ok(stmt
                    .query_map([keys], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await?;
        let redacted = redacted(&self.vault, rows).await?;
        let at = to_micros(e.at);
        let exports: Vec<i64> = self
            .read(move |c| {
                let mut stmt = c.prepare("SELECT id FROM segment_exports WHERE created_at <= ?1")?;
                Ok(stmt.query_map([at], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?)
            })
            .await?;
        let later = request_keys(&redacted);
        // The person's keys go first, with those of the export files that may list them: from
        // then on, every copy of their bodies, their identifiers' values and those files is
        // unreadable, whatever happens to the rest.
        let shredded = self.vault.shred(&with_exports(&e.keys, &exports)).await?;
        let mut erased = self
            .write(move |tx| {
                let keys = serde_json::to_string(&kept).map_err(|x| StoreError::Database(x.to_string()))?;
                let sql = format!(
                    "DELETE FROM events WHERE seq IN ({})",
                    crate::sqlite_log::seqs_of("SELECT value FROM json_each(?1)", "0")
                );
                let mut out = Erased {
                    events: tx.execute(&sql, [&keys])? as u64,
                    keys: shredded,
                    ..Erased::default()
                };
                out.consents = tx.execute("DELETE FROM consent_ledger WHERE subject IN (SELECT value FROM json_each(?1))", [&keys])? as u64;
                tx.execute("DELETE FROM consent_state WHERE subject IN (SELECT value FROM json_each(?1))", [&keys])?;
                // The deletion listed the person's keys as changes for the readers of consent
                // states; blanked, so that no key outlives the erasure, they tell readers to
                // forget everything.
                tx.execute("UPDATE consent_state_changes SET subject = '' WHERE subject IN (SELECT value FROM json_each(?1))", [&keys])?;
                tx.execute(
                    "DELETE FROM identity_links WHERE a IN (SELECT value FROM json_each(?1)) OR b IN (SELECT value FROM json_each(?1))",
                    [&keys],
                )?;
                tx.execute("DELETE FROM left_out WHERE identifier IN (SELECT value FROM json_each(?1))", [&keys])?;
                tx.execute("UPDATE merges SET via = 'erased' WHERE via IN (SELECT value FROM json_each(?1))", [&keys])?;
                out.identities = tx.execute("DELETE FROM identities WHERE identifier IN (SELECT value FROM json_each(?1))", [&keys])? as u64;
                tx.execute("DELETE FROM identifier_values WHERE identifier IN (SELECT value FROM json_each(?1))", [&keys])?;
                for (id, doc) in &redacted {
                    tx.execute(
                        "UPDATE requests SET subject = ?1, doc = ?2 WHERE id = ?3",
                        rusqlite::params![format!("erased:{id}"), doc, id],
                    )?;
                    tx.execute("DELETE FROM request_results WHERE request_id = ?1", [id])?;
                }
                out.requests = redacted.len() as u64;
                if let Some(profile) = e.profile {
                    tx.execute("DELETE FROM segment_members WHERE profile_id = ?1", [profile])?;
                    tx.execute("DELETE FROM segment_transitions WHERE profile_id = ?1", [profile])?;
                    // Breach notices name the person by profile: who was told of a breach goes with them.
                    for table in ["sends", "occurrences", "vouchers", "breach_notices"] {
                        tx.execute(&format!("DELETE FROM {table} WHERE profile_id = ?1"), [profile])?;
                    }
                    crate::notices::erase_sqlite(tx, profile, &e.notices, to_micros(e.at))?;
                }
                // A members export made before the erasure may hold the person: it goes too.
                tx.execute("DELETE FROM segment_exports WHERE created_at <= ?1", [to_micros(e.at)])?;
                let mut insert = tx.prepare("INSERT INTO suppression (hash, at) VALUES (?1, ?2) ON CONFLICT (hash) DO NOTHING")?;
                for h in &e.suppression {
                    insert.execute(rusqlite::params![h, to_micros(e.at)])?;
                }
                crate::sqlite::append_audit(tx, e.at, vec![audit(&e, &out)])?;
                Ok(out)
            })
            .await?;
        // Their requests' keys go last, once the records are redacted: until then, an erasure
        // that failed half-way is run again from its request, which still opens.
        erased.keys += self.vault.shred(&later).await?;
        // Old pages of the erased rows stay in the write-ahead log until it is checkpointed and
        // truncated, which waits for readers of older snapshots to finish: retry briefly.
        for _ in 0..200 {
            let busy: i64 = self
                .read(|c| Ok(c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?))
                .await?;
            if busy == 0 {
                return Ok(erased);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(StoreError::Database(
            "erased, but the write-ahead log could not be truncated: readers kept it busy; run the erasure again"
                .into(),
        ))
    }

    pub(crate) async fn suppressed(&self, hashes: Vec<String>) -> Result<bool> {
        if hashes.is_empty() {
            return Ok(false);
        }
        self.read(move |c| {
            let sql = format!(
                "SELECT EXISTS(SELECT 1 FROM suppression WHERE hash IN ({}))",
                vec!["?"; hashes.len()].join(",")
            );
            Ok(c.query_row(&sql, params_from_iter(hashes.iter()), |r| r.get(0))?)
        })
        .await
    }
}

impl PgStore {
    pub(crate) async fn erase(&self, e: Erasure) -> Result<Erased> {
        let kept: Vec<String> = e.keys.iter().map(|k| self.vault.at_rest(k)).collect();
        let rows: Vec<(i64, String)> = self
            .pool()
            .get()
            .await?
            .query("SELECT id, doc FROM requests WHERE subject = ANY($1)", &[&kept])
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?;
        let redacted = redacted(&self.vault, rows).await?;
        let exports: Vec<i64> = self
            .pool()
            .get()
            .await?
            .query(
                "SELECT id FROM segment_exports WHERE created_at <= $1",
                &[&to_micros(e.at)],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        let later = request_keys(&redacted);
        // The person's keys and the exports' first, their requests' last, as on SQLite.
        let shredded = self.vault.shred(&with_exports(&e.keys, &exports)).await?;
        let users = values(&e.keys, "user_id:");
        let anons = values(&e.keys, "anonymous_id:");
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let mut out = Erased {
            events: tx
                .execute(
                    "DELETE FROM events WHERE user_id = ANY($1) OR anonymous_id = ANY($2)",
                    &[&users, &anons],
                )
                .await?,
            keys: shredded,
            ..Erased::default()
        };
        out.consents = tx
            .execute("DELETE FROM consent_ledger WHERE subject = ANY($1)", &[&kept])
            .await?;
        tx.execute("DELETE FROM consent_state WHERE subject = ANY($1)", &[&kept])
            .await?;
        tx.execute("DELETE FROM identity_links WHERE a = ANY($1) OR b = ANY($1)", &[&kept])
            .await?;
        tx.execute("DELETE FROM left_out WHERE identifier = ANY($1)", &[&kept])
            .await?;
        tx.execute("UPDATE merges SET via = 'erased' WHERE via = ANY($1)", &[&kept])
            .await?;
        out.identities = tx
            .execute("DELETE FROM identities WHERE identifier = ANY($1)", &[&kept])
            .await?;
        tx.execute("DELETE FROM identifier_values WHERE identifier = ANY($1)", &[&kept])
            .await?;
        for (id, doc) in &redacted {
            tx.execute(
                "UPDATE requests SET subject = $1, doc = $2 WHERE id = $3",
                &[&format!("erased:{id}"), doc, id],
            )
            .await?;
            tx.execute("DELETE FROM request_results WHERE request_id = $1", &[id])
                .await?;
        }
        out.requests = redacted.len() as u64;
        if let Some(profile) = e.profile {
            tx.execute("DELETE FROM segment_members WHERE profile_id = $1", &[&profile])
                .await?;
            tx.execute("DELETE FROM segment_transitions WHERE profile_id = $1", &[&profile])
                .await?;
            // Breach notices name the person by profile: who was told of a breach goes with them.
            for table in ["sends", "occurrences", "vouchers", "breach_notices"] {
                tx.execute(&format!("DELETE FROM {table} WHERE profile_id = $1"), &[&profile])
                    .await?;
            }
            crate::notices::erase_pg(&tx, profile, &e.notices, to_micros(e.at)).await?;
        }
        tx.execute(
            "DELETE FROM segment_exports WHERE created_at <= $1",
            &[&to_micros(e.at)],
        )
        .await?;
        for h in &e.suppression {
            tx.execute(
                "INSERT INTO suppression (hash, at) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
                &[h, &to_micros(e.at)],
            )
            .await?;
        }
        crate::postgres::append_audit(&tx, e.at, vec![audit(&e, &out)]).await?;
        tx.commit().await?;
        out.keys += self.vault.shred(&later).await?;
        Ok(out)
    }

    pub(crate) async fn suppressed(&self, hashes: Vec<String>) -> Result<bool> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "SELECT EXISTS(SELECT 1 FROM suppression WHERE hash = ANY($1))",
                &[&hashes],
            )
            .await?;
        Ok(row.try_get(0)?)
    }
}

impl SqliteStore {
    pub(crate) async fn events_page(&self, after: i64, limit: usize) -> Result<Vec<crate::StoredEvent>> {
        let vault = self.vault.clone();
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                crate::sqlite::EVENT_COLUMNS
            );
            crate::sqlite::query_events(c, &vault, &sql, rusqlite::params![after, limit as i64])
        })
        .await
    }

    pub(crate) async fn expire_events(
        &self,
        delete: Vec<i64>,
        rewrite: Vec<crate::StoredEvent>,
        at: jiff::Timestamp,
        report: serde_json::Value,
    ) -> Result<()> {
        let rewrite = crate::rewritten(&self.vault, rewrite).await?;
        self.write(move |tx| {
            for seq in &delete {
                tx.execute("DELETE FROM events WHERE seq = ?1", [seq])?;
            }
            for (seq, body, traits) in rewrite {
                let body = match body {
                    Kept::Sealed(sealed) => rusqlite::types::Value::Blob(sealed),
                    Kept::Plain(plain) => rusqlite::types::Value::Text(plain.to_string()),
                };
                tx.execute(
                    "UPDATE events SET body = ?1, traits = ?2 WHERE seq = ?3",
                    rusqlite::params![body, traits, seq],
                )?;
            }
            crate::sqlite::append_audit(
                tx,
                at,
                vec![AuditEvent::new("system", "retention.applied", None, report)],
            )
        })
        .await
    }

    pub(crate) async fn profile_ids(&self) -> Result<Vec<i64>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT DISTINCT profile_id FROM identities ORDER BY profile_id")?;
            Ok(stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?)
        })
        .await
    }
}

impl PgStore {
    pub(crate) async fn events_page(&self, after: i64, limit: usize) -> Result<Vec<crate::StoredEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.pool().get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                    crate::postgres::EVENT_COLUMNS
                ),
                &[&after, &limit],
            )
            .await?;
        drop(client);
        self.open_events(&rows).await
    }

    pub(crate) async fn expire_events(
        &self,
        delete: Vec<i64>,
        rewrite: Vec<crate::StoredEvent>,
        at: jiff::Timestamp,
        report: serde_json::Value,
    ) -> Result<()> {
        let rewrite = crate::rewritten(&self.vault, rewrite).await?;
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM events WHERE seq = ANY($1)", &[&delete]).await?;
        for (seq, body, traits) in &rewrite {
            let (body, sealed) = match body {
                Kept::Sealed(sealed) => (serde_json::Value::Null, Some(sealed)),
                Kept::Plain(plain) => (plain.clone(), None),
            };
            tx.execute(
                "UPDATE events SET body = $1, sealed = $2, traits = $3 WHERE seq = $4",
                &[&body, &sealed, traits, seq],
            )
            .await?;
        }
        crate::postgres::append_audit(
            &tx,
            at,
            vec![AuditEvent::new("system", "retention.applied", None, report)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn profile_ids(&self) -> Result<Vec<i64>> {
        let client = self.pool().get().await?;
        let rows = client
            .query("SELECT DISTINCT profile_id FROM identities ORDER BY profile_id", &[])
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}
