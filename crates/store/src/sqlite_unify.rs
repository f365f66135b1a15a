//! SQLite's side of identity resolution and profile reads.

use crate::sqlite::SqliteStore;
use crate::unify::{GraphTx, LogEvent, NewMerge, Resolved, resolve_batch, run_now};
use crate::vault::Vault;
use crate::{MergeRow, ProfileRow, Result, StoreError, StoredEvent};
use confiance_core::catalog::Catalog;
use confiance_core::privacy::audit::AuditEvent;
use confiance_core::unify::graph::{Guards, components};
use confiance_core::unify::identifier::Identifier;
use rusqlite::{OptionalExtension, Transaction, params};
use std::collections::BTreeSet;
use std::sync::Arc;

struct SqliteGraph<'a, 'b> {
    tx: &'a Transaction<'b>,
    vault: &'a Vault,
}

impl GraphTx for SqliteGraph<'_, '_> {
    async fn cursor(&mut self) -> Result<i64> {
        Ok(self
            .tx
            .query_row("SELECT seq FROM processor_cursors WHERE name = 'unify'", [], |r| {
                r.get(0)
            })?)
    }

    async fn set_cursor(&mut self, seq: i64) -> Result<()> {
        self.tx
            .execute("UPDATE processor_cursors SET seq = ?1 WHERE name = 'unify'", [seq])?;
        Ok(())
    }

    async fn events_after(&mut self, seq: i64, limit: usize) -> Result<Vec<LogEvent>> {
        let sql = format!(
            "SELECT {} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            crate::sqlite::EVENT_COLUMNS
        );
        let events = crate::sqlite::query_events(self.tx, self.vault, &sql, params![seq, limit as i64])?;
        Ok(events.into_iter().map(LogEvent::from).collect())
    }

    async fn is_rejected(&mut self, source_id: i64, message_id: &str) -> Result<bool> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM rejected_links WHERE source_id = ?1 AND message_id = ?2)")?;
        Ok(stmt.query_row(params![source_id, message_id], |r| r.get(0))?)
    }

    async fn owners(&mut self, keys: &[String]) -> Result<Vec<(String, i64)>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT profile_id FROM identities WHERE identifier = ?1")?;
        let mut out = Vec::new();
        for k in keys {
            if let Some(p) = stmt.query_row([self.vault.at_rest(k)], |r| r.get(0)).optional()? {
                out.push((k.clone(), p));
            }
        }
        Ok(out)
    }

    async fn profile_identifiers(&mut self, profile: i64) -> Result<Vec<String>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT identifier FROM identities WHERE profile_id = ?1")?;
        let mut keys = stmt
            .query_map([profile], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        crate::sqlite::reveal(self.tx, self.vault, &mut keys)?;
        Ok(keys)
    }

    async fn new_profile(&mut self, seq: i64, at: i64) -> Result<i64> {
        self.tx
            .prepare_cached("INSERT INTO profiles (created_seq, created_at) VALUES (?1, ?2)")?
            .execute(params![seq, at])?;
        Ok(self.tx.last_insert_rowid())
    }

    async fn attach(&mut self, key: &str, kind: &str, profile: i64, seq: i64) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO identities (identifier, kind, profile_id, origin_profile, first_seq) VALUES (?1, ?2, ?3, ?3, ?4)",
            )?
            .execute(params![self.vault.at_rest(key), kind, profile, seq])?;
        Ok(())
    }

    async fn absorb(&mut self, survivor: i64, absorbed: i64) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE identities SET profile_id = ?1 WHERE profile_id = ?2")?
            .execute(params![survivor, absorbed])?;
        self.tx
            .prepare_cached("UPDATE profiles SET merged_into = ?1 WHERE id = ?2 OR merged_into = ?2")?
            .execute(params![survivor, absorbed])?;
        Ok(())
    }

    async fn add_link(
        &mut self,
        a: &str,
        b: &str,
        seq: i64,
        source_id: Option<i64>,
        message_id: Option<&str>,
        at: i64,
        origin: &str,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO identity_links (a, b, seq, source_id, message_id, at, origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                self.vault.at_rest(a),
                self.vault.at_rest(b),
                seq,
                source_id,
                message_id,
                at,
                origin
            ])?;
        Ok(())
    }

    async fn add_merge(&mut self, m: NewMerge<'_>) -> Result<i64> {
        self.tx
            .prepare_cached(
                "INSERT INTO merges (survivor, absorbed, via, seq, source_id, message_id, at, origin, evidence)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                m.survivor,
                m.absorbed,
                self.vault.at_rest(m.via),
                m.seq,
                m.source_id,
                m.message_id,
                m.at,
                m.origin,
                m.evidence.to_string()
            ])?;
        Ok(self.tx.last_insert_rowid())
    }

    async fn add_audit(&mut self, event: AuditEvent) -> Result<()> {
        crate::sqlite::append_audit(self.tx, jiff::Timestamp::now(), vec![event])
    }

    async fn add_left_out(&mut self, seq: i64, key: &str, reason: &str) -> Result<()> {
        self.tx
            .prepare_cached("INSERT INTO left_out (seq, identifier, reason) VALUES (?1, ?2, ?3)")?
            .execute(params![seq, self.vault.at_rest(key), reason])?;
        Ok(())
    }

    async fn keep_values(&mut self, keys: &[String]) -> Result<()> {
        let new = crate::sqlite::without_values(self.tx, self.vault, keys)?;
        crate::sqlite::keep_values(self.tx, &self.vault.seal_values_blocking(&new)?)
    }
}

/// Puts back the value of the identifier each merge went through.
fn reveal_via(c: &rusqlite::Connection, vault: &Vault, merges: &mut [MergeRow]) -> Result<()> {
    let mut via: Vec<String> = merges.iter().map(|m| m.via.clone()).collect();
    crate::sqlite::reveal(c, vault, &mut via)?;
    for (m, v) in merges.iter_mut().zip(via) {
        m.via = v;
    }
    Ok(())
}

fn merge_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<crate::MergeParts> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

impl SqliteStore {
    pub(crate) async fn resolve_pending(
        &self,
        catalog: Arc<Catalog>,
        guards: Arc<Guards>,
        limit: usize,
        now_us: i64,
    ) -> Result<Resolved> {
        let vault = self.vault.clone();
        self.write(move |tx| {
            run_now(resolve_batch(
                &mut SqliteGraph { tx, vault: &vault },
                &catalog,
                &guards,
                limit,
                now_us,
            ))
        })
        .await
    }

    pub(crate) async fn unify_status(&self) -> Result<(i64, i64)> {
        self.read(|c| {
            let cursor: i64 = c.query_row("SELECT seq FROM processor_cursors WHERE name = 'unify'", [], |r| {
                r.get(0)
            })?;
            let head: i64 = c.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
            Ok((cursor, head))
        })
        .await
    }

    pub(crate) async fn profile_of(&self, key: String) -> Result<Option<i64>> {
        let key = self.vault.at_rest(&key);
        self.read(move |c| {
            Ok(
                c.query_row("SELECT profile_id FROM identities WHERE identifier = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
        .await
    }

    pub(crate) async fn profile(&self, id: i64) -> Result<Option<ProfileRow>> {
        let vault = self.vault.clone();
        self.read(move |c| {
            let row: Option<(i64, i64, Option<i64>)> = c
                .query_row(
                    "SELECT id, created_at, merged_into FROM profiles WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((id, created_at, merged_into)) = row else {
                return Ok(None);
            };
            let mut stmt = c.prepare(
                "SELECT identifier, first_seq FROM identities WHERE profile_id = ?1 ORDER BY first_seq, identifier",
            )?;
            let mut identities = stmt
                .query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut keys: Vec<String> = identities.iter().map(|(k, _)| k.clone()).collect();
            crate::sqlite::reveal(c, &vault, &mut keys)?;
            for ((k, _), v) in identities.iter_mut().zip(keys) {
                *k = v;
            }
            // In the order of the values, as before they were hashed.
            identities.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
            Ok(Some(ProfileRow {
                id,
                created_at: crate::from_micros(created_at),
                merged_into,
                identities,
            }))
        })
        .await
    }

    pub(crate) async fn profile_events(
        &self,
        profile: i64,
        purpose: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let pattern = purpose.map_or_else(|| "%".to_owned(), |p| format!("%,{p},%"));
        let vault = self.vault.clone();
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM events
                 WHERE seq IN ({}) AND (purposes LIKE ?4 OR purposes = ',')
                 ORDER BY seq LIMIT ?3",
                crate::sqlite::EVENT_COLUMNS,
                crate::sqlite_log::profile_seqs()
            );
            crate::sqlite::query_events(c, &vault, &sql, params![profile, after, limit as i64, pattern])
        })
        .await
    }

    pub(crate) async fn merges_of(&self, profile: i64) -> Result<Vec<MergeRow>> {
        let vault = self.vault.clone();
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, survivor, absorbed, via, seq, source_id, message_id, at, origin, evidence, undone_at
                 FROM merges WHERE survivor = ?1 OR absorbed = ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map([profile], merge_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut merges = rows.into_iter().map(MergeRow::from_parts).collect::<Result<Vec<_>>>()?;
            reveal_via(c, &vault, &mut merges)?;
            Ok(merges)
        })
        .await
    }

    pub(crate) async fn merge(&self, id: i64) -> Result<Option<MergeRow>> {
        let vault = self.vault.clone();
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT id, survivor, absorbed, via, seq, source_id, message_id, at, origin, evidence, undone_at FROM merges WHERE id = ?1",
                    [id],
                    merge_row,
                )
                .optional()?;
            let mut merge: Vec<MergeRow> = row.map(MergeRow::from_parts).transpose()?.into_iter().collect();
            reveal_via(c, &vault, &mut merge)?;
            Ok(merge.pop())
        })
        .await
    }

    pub(crate) async fn undo_merge(&self, merge: MergeRow, at: i64) -> Result<Vec<i64>> {
        self.write(move |tx| {
            let (Some(source_id), Some(message_id)) = (merge.source_id, merge.message_id.clone()) else {
                return Err(StoreError::Conflict(
                    "a merge made by a reviewer is undone by a new review".into(),
                ));
            };
            tx.execute(
                "INSERT INTO rejected_links (source_id, message_id, at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![source_id, message_id, at],
            )?;
            tx.execute(
                "UPDATE identity_links SET active = 0 WHERE source_id = ?1 AND message_id = ?2",
                params![source_id, message_id],
            )?;
            tx.execute("UPDATE merges SET undone_at = ?1 WHERE id = ?2", params![at, merge.id])?;
            let profiles = split(tx, merge.survivor, at)?;
            let event = AuditEvent::new(
                "staff",
                "profile.split",
                Some(format!("profile:{}", merge.survivor)),
                serde_json::json!({"merge": merge.id, "profiles": profiles}),
            );
            crate::sqlite::append_audit(tx, crate::from_micros(at), vec![event])?;
            Ok(profiles)
        })
        .await
    }

    pub(crate) async fn profiles_snapshot(&self) -> Result<Vec<(i64, Vec<String>)>> {
        let vault = self.vault.clone();
        self.read(move |c| {
            let mut stmt =
                c.prepare("SELECT profile_id, identifier FROM identities ORDER BY profile_id, identifier")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            let mut out: Vec<(i64, Vec<String>)> = Vec::new();
            for row in rows {
                let (p, id) = row?;
                match out.last_mut() {
                    Some((last, ids)) if *last == p => ids.push(id),
                    _ => out.push((p, vec![id])),
                }
            }
            let mut keys: Vec<String> = out.iter().flat_map(|(_, ids)| ids.iter().cloned()).collect();
            crate::sqlite::reveal(c, &vault, &mut keys)?;
            crate::unify::put_back(&mut out, keys);
            Ok(out)
        })
        .await
    }

    pub(crate) async fn reset_profiles(&self) -> Result<()> {
        self.write(|tx| {
            tx.execute_batch(
                "DELETE FROM identities; DELETE FROM identity_links; DELETE FROM merges; DELETE FROM left_out;
                 DELETE FROM profiles; UPDATE processor_cursors SET seq = 0 WHERE name = 'unify';",
            )?;
            Ok(())
        })
        .await
    }
}

/// Recomputes the profiles of `profile`'s identifiers from its active links, after links were
/// switched off; returns the profiles that exist afterwards.
fn split(tx: &Transaction<'_>, profile: i64, at: i64) -> Result<Vec<i64>> {
    let mut stmt = tx.prepare("SELECT identifier, origin_profile, first_seq FROM identities WHERE profile_id = ?1")?;
    let members: Vec<(String, i64, i64)> = stmt
        .query_map([profile], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let ids: BTreeSet<Identifier> = members.iter().filter_map(|(k, _, _)| Identifier::from_key(k)).collect();
    let mut links = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT a, b FROM identity_links WHERE active = 1 AND a IN (SELECT identifier FROM identities WHERE profile_id = ?1)",
        )?;
        for row in stmt.query_map([profile], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (a, b) = row?;
            if let (Some(a), Some(b)) = (Identifier::from_key(&a), Identifier::from_key(&b)) {
                links.push((a, b));
            }
        }
    }
    let parts = components(&ids, &links);
    let origin = |id: &Identifier| members.iter().find(|(k, _, _)| *k == id.key()).map(|m| (m.1, m.2));
    // Each part goes back to the oldest profile one of its identifiers first joined; the part
    // holding the oldest identifier keeps `profile` if that is contested.
    let mut parts: Vec<(i64, i64, BTreeSet<Identifier>)> = parts
        .into_iter()
        .map(|part| {
            let (home, first) = part.iter().filter_map(origin).min().unwrap_or((profile, i64::MAX));
            (home, first, part)
        })
        .collect();
    parts.sort_by_key(|(home, first, _)| (*home, *first));
    let mut taken = BTreeSet::new();
    let mut result = Vec::new();
    for (home, first, part) in parts {
        let id = if taken.insert(home) {
            tx.execute(
                "INSERT INTO profiles (id, created_seq, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET merged_into = NULL",
                params![home, first, at],
            )?;
            home
        } else {
            tx.execute(
                "INSERT INTO profiles (created_seq, created_at) VALUES (?1, ?2)",
                params![first, at],
            )?;
            tx.last_insert_rowid()
        };
        for member in &part {
            tx.execute(
                "UPDATE identities SET profile_id = ?1 WHERE identifier = ?2",
                params![id, member.key()],
            )?;
        }
        result.push(id);
    }
    Ok(result)
}
