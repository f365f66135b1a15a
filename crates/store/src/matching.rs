//! Probabilistic merges and their review queue in both stores: a merge of two profiles decided
//! by matching (or by a reviewer), recorded with its evidence and a link between the two
//! profiles so that the identity graph stays the components of its links.

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Result, StoreError, from_micros};
use confiance_core::privacy::audit::AuditEvent;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

/// A pair of profiles waiting for (or given) a reviewer's decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Review {
    /// Id.
    pub id: i64,
    /// One profile.
    pub a: i64,
    /// The other.
    pub b: i64,
    /// Match probability.
    pub probability: f64,
    /// Per-field evidence.
    pub evidence: Value,
    /// pending, accepted or rejected.
    pub status: String,
    /// When it was queued.
    pub created_at: jiff::Timestamp,
    /// When it was decided.
    pub decided_at: Option<jiff::Timestamp>,
}

fn audit(survivor: i64, absorbed: i64, origin: &str, merge: i64) -> AuditEvent {
    AuditEvent::new(
        if origin == "review" { "staff" } else { "system" },
        "profile.merged",
        Some(format!("profile:{survivor}")),
        serde_json::json!({"absorbed": absorbed, "merge": merge, "rule": origin}),
    )
}

impl SqliteStore {
    pub(crate) async fn merge_profiles(
        &self,
        survivor: i64,
        absorbed: i64,
        evidence: Value,
        origin: String,
        at: i64,
    ) -> Result<Option<i64>> {
        self.write(move |tx| {
            let first = |p: i64| -> Result<Option<String>> {
                Ok(tx
                    .query_row("SELECT identifier FROM identities WHERE profile_id = ?1 ORDER BY first_seq, identifier LIMIT 1", [p], |r| r.get(0))
                    .optional()?)
            };
            let (Some(a), Some(b)) = (first(survivor)?, first(absorbed)?) else { return Ok(None) };
            tx.execute("UPDATE identities SET profile_id = ?1 WHERE profile_id = ?2", params![survivor, absorbed])?;
            tx.execute("UPDATE profiles SET merged_into = ?1 WHERE id = ?2 OR merged_into = ?2", params![survivor, absorbed])?;
            tx.execute(
                "INSERT INTO identity_links (a, b, seq, source_id, message_id, at, origin) VALUES (?1, ?2, 0, NULL, NULL, ?3, ?4)",
                params![a, b, at, origin],
            )?;
            tx.execute(
                "INSERT INTO merges (survivor, absorbed, via, seq, source_id, message_id, at, origin, evidence)
                 VALUES (?1, ?2, ?3, 0, NULL, NULL, ?4, ?5, ?6)",
                params![survivor, absorbed, b, at, origin, evidence.to_string()],
            )?;
            let merge = tx.last_insert_rowid();
            crate::sqlite::append_audit(tx, from_micros(at), vec![audit(survivor, absorbed, &origin, merge)])?;
            Ok(Some(merge))
        })
        .await
    }

    pub(crate) async fn queue_review(
        &self,
        a: i64,
        b: i64,
        probability: f64,
        evidence: Value,
        at: i64,
    ) -> Result<bool> {
        self.write(move |tx| {
            let known: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM match_reviews WHERE (a = ?1 AND b = ?2) OR (a = ?2 AND b = ?1))",
                params![a, b],
                |r| r.get(0),
            )?;
            if !known {
                tx.execute(
                    "INSERT INTO match_reviews (a, b, probability, evidence, status, created_at) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
                    params![a, b, probability, evidence.to_string(), at],
                )?;
            }
            Ok(!known)
        })
        .await
    }

    pub(crate) async fn reviews(&self, status: Option<String>) -> Result<Vec<Review>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, a, b, probability, evidence, status, created_at, decided_at FROM match_reviews
                 WHERE ?1 IS NULL OR status = ?1 ORDER BY probability DESC, id",
            )?;
            let rows = stmt.query_map([status], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get::<_, String>(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get::<_, Option<i64>>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, a, b, probability, evidence, status, created, decided) = row?;
                out.push(Review {
                    id,
                    a,
                    b,
                    probability,
                    evidence: serde_json::from_str(&evidence).map_err(|e| StoreError::Database(e.to_string()))?,
                    status,
                    created_at: from_micros(created),
                    decided_at: decided.map(from_micros),
                });
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn decide_review(&self, id: i64, status: String, at: i64) -> Result<bool> {
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE match_reviews SET status = ?1, decided_at = ?2 WHERE id = ?3 AND status = 'pending'",
                params![status, at, id],
            )?;
            Ok(n == 1)
        })
        .await
    }
}

impl PgStore {
    pub(crate) async fn merge_profiles(
        &self,
        survivor: i64,
        absorbed: i64,
        evidence: Value,
        origin: String,
        at: i64,
    ) -> Result<Option<i64>> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        // The processor's lock: no resolution runs while profiles move.
        tx.query_one("SELECT seq FROM processor_cursors WHERE name = 'unify' FOR UPDATE", &[])
            .await?;
        let first = "SELECT identifier FROM identities WHERE profile_id = $1 ORDER BY first_seq, identifier COLLATE \"C\" LIMIT 1";
        let a: Option<String> = tx
            .query_opt(first, &[&survivor])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let b: Option<String> = tx
            .query_opt(first, &[&absorbed])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let (Some(a), Some(b)) = (a, b) else { return Ok(None) };
        tx.execute(
            "UPDATE identities SET profile_id = $1 WHERE profile_id = $2",
            &[&survivor, &absorbed],
        )
        .await?;
        tx.execute(
            "UPDATE profiles SET merged_into = $1 WHERE id = $2 OR merged_into = $2",
            &[&survivor, &absorbed],
        )
        .await?;
        tx.execute(
            "INSERT INTO identity_links (a, b, seq, source_id, message_id, at, origin) VALUES ($1, $2, 0, NULL, NULL, $3, $4)",
            &[&a, &b, &at, &origin],
        )
        .await?;
        let merge: i64 = tx
            .query_one(
                "INSERT INTO merges (survivor, absorbed, via, seq, source_id, message_id, at, origin, evidence)
                 VALUES ($1, $2, $3, 0, NULL, NULL, $4, $5, $6) RETURNING id",
                &[&survivor, &absorbed, &b, &at, &origin, &evidence.to_string()],
            )
            .await?
            .try_get(0)?;
        crate::postgres::append_audit(&tx, from_micros(at), vec![audit(survivor, absorbed, &origin, merge)]).await?;
        tx.commit().await?;
        Ok(Some(merge))
    }

    pub(crate) async fn queue_review(
        &self,
        a: i64,
        b: i64,
        probability: f64,
        evidence: Value,
        at: i64,
    ) -> Result<bool> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "INSERT INTO match_reviews (a, b, probability, evidence, status, created_at)
                 SELECT $1, $2, $3, $4, 'pending', $5
                 WHERE NOT EXISTS (SELECT 1 FROM match_reviews WHERE (a = $1 AND b = $2) OR (a = $2 AND b = $1))",
                &[&a, &b, &probability, &evidence.to_string(), &at],
            )
            .await?;
        Ok(n == 1)
    }

    pub(crate) async fn reviews(&self, status: Option<String>) -> Result<Vec<Review>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT id, a, b, probability, evidence, status, created_at, decided_at FROM match_reviews
                 WHERE $1::TEXT IS NULL OR status = $1 ORDER BY probability DESC, id",
                &[&status],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let evidence: String = r.try_get(4)?;
                Ok(Review {
                    id: r.try_get(0)?,
                    a: r.try_get(1)?,
                    b: r.try_get(2)?,
                    probability: r.try_get(3)?,
                    evidence: serde_json::from_str(&evidence).map_err(|e| StoreError::Database(e.to_string()))?,
                    status: r.try_get(5)?,
                    created_at: from_micros(r.try_get(6)?),
                    decided_at: r.try_get::<_, Option<i64>>(7)?.map(from_micros),
                })
            })
            .collect()
    }

    pub(crate) async fn decide_review(&self, id: i64, status: String, at: i64) -> Result<bool> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "UPDATE match_reviews SET status = $1, decided_at = $2 WHERE id = $3 AND status = 'pending'",
                &[&status, &at, &id],
            )
            .await?;
        Ok(n == 1)
    }
}
