//! PostgreSQL's side of identity resolution and profile reads. The cursor row is locked for the
//! whole run, so several nodes resolve one after the other, never the same event twice.

use crate::postgres::PgStore;
use crate::unify::{GraphTx, LogEvent, NewMerge, Resolved, resolve_batch};
use crate::vault::Vault;
use crate::{MergeRow, ProfileRow, Result, StoreError, StoredEvent, from_micros};
use confiance_core::catalog::Catalog;
use confiance_core::privacy::audit::AuditEvent;
use confiance_core::unify::graph::{Guards, components};
use confiance_core::unify::identifier::Identifier;
use deadpool_postgres::Transaction;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

struct PgGraph<'a, 'b> {
    tx: &'a Transaction<'b>,
    vault: &'a Arc<Vault>,
}

impl GraphTx for PgGraph<'_, '_> {
    async fn cursor(&mut self) -> Result<i64> {
        let row = self
            .tx
            .query_one("SELECT seq FROM processor_cursors WHERE name = 'unify' FOR UPDATE", &[])
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn set_cursor(&mut self, seq: i64) -> Result<()> {
        self.tx
            .execute("UPDATE processor_cursors SET seq = $1 WHERE name = 'unify'", &[&seq])
            .await?;
        Ok(())
    }

    async fn events_after(&mut self, seq: i64, limit: usize) -> Result<Vec<LogEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .tx
            .query(
                &format!(
                    "SELECT {} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                    crate::postgres::EVENT_COLUMNS
                ),
                &[&seq, &limit],
            )
            .await?;
        let reads = rows
            .iter()
            .map(crate::postgres::row_to_event)
            .collect::<Result<Vec<_>>>()?;
        let events = self.vault.open_async(reads).await?;
        Ok(events.into_iter().map(LogEvent::from).collect())
    }

    async fn is_rejected(&mut self, source_id: i64, message_id: &str) -> Result<bool> {
        let row = self
            .tx
            .query_one(
                "SELECT EXISTS(SELECT 1 FROM rejected_links WHERE source_id = $1 AND message_id = $2)",
                &[&source_id, &message_id],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn owners(&mut self, keys: &[String]) -> Result<Vec<(String, i64)>> {
        let kept: HashMap<String, &String> = keys.iter().map(|k| (self.vault.at_rest(k), k)).collect();
        let wanted: Vec<&String> = kept.keys().collect();
        let rows = self
            .tx
            .query(
                "SELECT identifier, profile_id FROM identities WHERE identifier = ANY($1)",
                &[&wanted],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let at_rest: String = r.try_get(0)?;
                Ok((
                    kept.get(&at_rest).map_or(at_rest.clone(), |k| (*k).clone()),
                    r.try_get(1)?,
                ))
            })
            .collect()
    }

    async fn profile_identifiers(&mut self, profile: i64) -> Result<Vec<String>> {
        let rows = self
            .tx
            .query("SELECT identifier FROM identities WHERE profile_id = $1", &[&profile])
            .await?;
        let mut keys = rows
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect::<Result<Vec<String>>>()?;
        crate::postgres::reveal(self.tx, self.vault, &mut keys).await?;
        Ok(keys)
    }

    async fn new_profile(&mut self, seq: i64, at: i64) -> Result<i64> {
        let row = self
            .tx
            .query_one(
                "INSERT INTO profiles (created_seq, created_at) VALUES ($1, $2) RETURNING id",
                &[&seq, &at],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn attach(&mut self, key: &str, kind: &str, profile: i64, seq: i64) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO identities (identifier, kind, profile_id, origin_profile, first_seq) VALUES ($1, $2, $3, $3, $4)",
                &[&self.vault.at_rest(key), &kind, &profile, &seq],
            )
            .await?;
        Ok(())
    }

    async fn absorb(&mut self, survivor: i64, absorbed: i64) -> Result<()> {
        self.tx
            .execute(
                "UPDATE identities SET profile_id = $1 WHERE profile_id = $2",
                &[&survivor, &absorbed],
            )
            .await?;
        self.tx
            .execute(
                "UPDATE profiles SET merged_into = $1 WHERE id = $2 OR merged_into = $2",
                &[&survivor, &absorbed],
            )
            .await?;
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
            .execute(
                "INSERT INTO identity_links (a, b, seq, source_id, message_id, at, origin) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &self.vault.at_rest(a),
                    &self.vault.at_rest(b),
                    &seq,
                    &source_id,
                    &message_id,
                    &at,
                    &origin,
                ],
            )
            .await?;
        Ok(())
    }

    async fn add_merge(&mut self, m: NewMerge<'_>) -> Result<i64> {
        let evidence = m.evidence.to_string();
        let row = self
            .tx
            .query_one(
                "INSERT INTO merges (survivor, absorbed, via, seq, source_id, message_id, at, origin, evidence)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                &[
                    &m.survivor,
                    &m.absorbed,
                    &self.vault.at_rest(m.via),
                    &m.seq,
                    &m.source_id,
                    &m.message_id,
                    &m.at,
                    &m.origin,
                    &evidence,
                ],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn add_audit(&mut self, event: AuditEvent) -> Result<()> {
        crate::postgres::append_audit(self.tx, jiff::Timestamp::now(), vec![event]).await
    }

    async fn add_left_out(&mut self, seq: i64, key: &str, reason: &str) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO left_out (seq, identifier, reason) VALUES ($1, $2, $3)",
                &[&seq, &self.vault.at_rest(key), &reason],
            )
            .await?;
        Ok(())
    }

    async fn keep_values(&mut self, keys: &[String]) -> Result<()> {
        let new = crate::postgres::without_values(self.tx, self.vault, keys).await?;
        crate::postgres::keep_values(self.tx, &self.vault.seal_values(&new).await?).await
    }
}

const MERGE_COLUMNS: &str = "id, survivor, absorbed, via, seq, source_id, message_id, at, origin, evidence, undone_at";

fn merge_row(r: &tokio_postgres::Row) -> Result<MergeRow> {
    MergeRow::from_parts((
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
        r.try_get(6)?,
        r.try_get(7)?,
        r.try_get(8)?,
        r.try_get(9)?,
        r.try_get(10)?,
    ))
}

impl PgStore {
    pub(crate) async fn resolve_pending(
        &self,
        catalog: Arc<Catalog>,
        guards: Arc<Guards>,
        limit: usize,
        now_us: i64,
    ) -> Result<Resolved> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let resolved = resolve_batch(
            &mut PgGraph {
                tx: &tx,
                vault: &self.vault,
            },
            &catalog,
            &guards,
            limit,
            now_us,
        )
        .await?;
        tx.commit().await?;
        Ok(resolved)
    }

    pub(crate) async fn unify_status(&self) -> Result<(i64, i64)> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "SELECT (SELECT seq FROM processor_cursors WHERE name = 'unify'), COALESCE((SELECT MAX(seq) FROM events), 0)",
                &[],
            )
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    pub(crate) async fn profile_of(&self, key: String) -> Result<Option<i64>> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT profile_id FROM identities WHERE identifier = $1",
                &[&self.vault.at_rest(&key)],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub(crate) async fn profile(&self, id: i64) -> Result<Option<ProfileRow>> {
        let client = self.pool().get().await?;
        let Some(row) = client
            .query_opt("SELECT id, created_at, merged_into FROM profiles WHERE id = $1", &[&id])
            .await?
        else {
            return Ok(None);
        };
        let rows = client
            .query(
                "SELECT identifier, first_seq FROM identities WHERE profile_id = $1 ORDER BY first_seq, identifier COLLATE \"C\"",
                &[&id],
            )
            .await?;
        let mut identities = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(String, i64)>>>()?;
        let mut keys: Vec<String> = identities.iter().map(|(k, _)| k.clone()).collect();
        crate::postgres::reveal(&client, &self.vault, &mut keys).await?;
        for ((k, _), v) in identities.iter_mut().zip(keys) {
            *k = v;
        }
        // In the order of the values, as before they were hashed.
        identities.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        Ok(Some(ProfileRow {
            id: row.try_get(0)?,
            created_at: from_micros(row.try_get(1)?),
            merged_into: row.try_get(2)?,
            identities,
        }))
    }

    pub(crate) async fn profile_events(
        &self,
        profile: i64,
        purpose: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let pattern = purpose.map_or_else(|| "%".to_owned(), |p| format!("%,{p},%"));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.pool().get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM events
                     WHERE (user_id IN (SELECT substr(identifier, 9) FROM identities WHERE profile_id = $1 AND kind = 'user_id')
                         OR anonymous_id IN (SELECT substr(identifier, 14) FROM identities WHERE profile_id = $1 AND kind = 'anonymous_id'))
                       AND seq > $2 AND (purposes LIKE $4 OR purposes = ',')
                     ORDER BY seq LIMIT $3",
                    crate::postgres::EVENT_COLUMNS
                ),
                &[&profile, &after, &limit, &pattern],
            )
            .await?;
        drop(client);
        self.open_events(&rows).await
    }

    pub(crate) async fn merges_of(&self, profile: i64) -> Result<Vec<MergeRow>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                &format!("SELECT {MERGE_COLUMNS} FROM merges WHERE survivor = $1 OR absorbed = $1 ORDER BY id"),
                &[&profile],
            )
            .await?;
        let mut merges = rows.iter().map(merge_row).collect::<Result<Vec<_>>>()?;
        self.reveal_via(&client, &mut merges).await?;
        Ok(merges)
    }

    /// Puts back the value of the identifier each merge went through.
    async fn reveal_via(&self, client: &deadpool_postgres::Client, merges: &mut [MergeRow]) -> Result<()> {
        let mut via: Vec<String> = merges.iter().map(|m| m.via.clone()).collect();
        crate::postgres::reveal(client, &self.vault, &mut via).await?;
        for (m, v) in merges.iter_mut().zip(via) {
            m.via = v;
        }
        Ok(())
    }

    pub(crate) async fn merge(&self, id: i64) -> Result<Option<MergeRow>> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(&format!("SELECT {MERGE_COLUMNS} FROM merges WHERE id = $1"), &[&id])
            .await?;
        let mut merge: Vec<MergeRow> = row.as_ref().map(merge_row).transpose()?.into_iter().collect();
        self.reveal_via(&client, &mut merge).await?;
        Ok(merge.pop())
    }

    pub(crate) async fn undo_merge(&self, merge: MergeRow, at: i64) -> Result<Vec<i64>> {
        let (Some(source_id), Some(message_id)) = (merge.source_id, merge.message_id.clone()) else {
            return Err(StoreError::Conflict(
                "a merge made by a reviewer is undone by a new review".into(),
            ));
        };
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        // The processor's lock: no resolution runs while the profile is being split.
        tx.query_one("SELECT seq FROM processor_cursors WHERE name = 'unify' FOR UPDATE", &[])
            .await?;
        tx.execute(
            "INSERT INTO rejected_links (source_id, message_id, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&source_id, &message_id, &at],
        )
        .await?;
        tx.execute(
            "UPDATE identity_links SET active = 0 WHERE source_id = $1 AND message_id = $2",
            &[&source_id, &message_id],
        )
        .await?;
        tx.execute("UPDATE merges SET undone_at = $1 WHERE id = $2", &[&at, &merge.id])
            .await?;
        let profile = merge.survivor;
        let members: Vec<(String, i64, i64)> = tx
            .query(
                "SELECT identifier, origin_profile, first_seq FROM identities WHERE profile_id = $1",
                &[&profile],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_>>()?;
        let ids: BTreeSet<Identifier> = members.iter().filter_map(|(k, _, _)| Identifier::from_key(k)).collect();
        let links: Vec<(Identifier, Identifier)> = tx
            .query(
                "SELECT a, b FROM identity_links WHERE active = 1 AND a IN (SELECT identifier FROM identities WHERE profile_id = $1)",
                &[&profile],
            )
            .await?
            .iter()
            .filter_map(|r| {
                let (a, b): (String, String) = (r.try_get(0).ok()?, r.try_get(1).ok()?);
                Some((Identifier::from_key(&a)?, Identifier::from_key(&b)?))
            })
            .collect();
        let origin = |id: &Identifier| members.iter().find(|(k, _, _)| *k == id.key()).map(|m| (m.1, m.2));
        let mut parts: Vec<(i64, i64, BTreeSet<Identifier>)> = components(&ids, &links)
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
            let id: i64 = if taken.insert(home) {
                tx.execute(
                    "INSERT INTO profiles (id, created_seq, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET merged_into = NULL",
                    &[&home, &first, &at],
                )
                .await?;
                home
            } else {
                tx.query_one(
                    "INSERT INTO profiles (created_seq, created_at) VALUES ($1, $2) RETURNING id",
                    &[&first, &at],
                )
                .await?
                .try_get(0)?
            };
            let keys: Vec<String> = part.iter().map(Identifier::key).collect();
            tx.execute(
                "UPDATE identities SET profile_id = $1 WHERE identifier = ANY($2)",
                &[&id, &keys],
            )
            .await?;
            result.push(id);
        }
        let event = AuditEvent::new(
            "staff",
            "profile.split",
            Some(format!("profile:{profile}")),
            serde_json::json!({"merge": merge.id, "profiles": result}),
        );
        crate::postgres::append_audit(&tx, from_micros(at), vec![event]).await?;
        tx.commit().await?;
        Ok(result)
    }

    pub(crate) async fn profiles_snapshot(&self) -> Result<Vec<(i64, Vec<String>)>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT profile_id, array_agg(identifier ORDER BY identifier COLLATE \"C\") FROM identities GROUP BY profile_id ORDER BY profile_id",
                &[],
            )
            .await?;
        let mut profiles = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(i64, Vec<String>)>>>()?;
        let mut keys: Vec<String> = profiles.iter().flat_map(|(_, ids)| ids.iter().cloned()).collect();
        crate::postgres::reveal(&client, &self.vault, &mut keys).await?;
        crate::unify::put_back(&mut profiles, keys);
        Ok(profiles)
    }

    pub(crate) async fn reset_profiles(&self) -> Result<()> {
        let client = self.pool().get().await?;
        client
            .batch_execute(
                "BEGIN;
                 SELECT seq FROM processor_cursors WHERE name = 'unify' FOR UPDATE;
                 TRUNCATE identities, identity_links, merges, left_out, profiles RESTART IDENTITY;
                 UPDATE processor_cursors SET seq = 0 WHERE name = 'unify';
                 COMMIT;",
            )
            .await?;
        Ok(())
    }
}
