//! Data-subject requests in both stores: each request is one JSON document (its workflow lives
//! in `confiance_core::privacy::requests`), and every change to it is audited in the same
//! transaction.
//!
//! The document names the subject and may hold what they asked to correct, so it is kept
//! sealed under the request's own key ([`Vault::seal_deflated`]), the key its result is sealed
//! under, and the `subject` column as rows keep identifiers ([`Vault::at_rest`]). An erasure
//! redacts the records of the person's requests, keeps them plain, and then shreds their keys:
//! older copies hold nothing readable.

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::vault::Vault;
use crate::{Result, StoreError, to_micros};
use confiance_core::privacy::audit::AuditEvent;
use confiance_core::privacy::requests::{ERASED, Request};
use rusqlite::{OptionalExtension, params};
use std::sync::Arc;

fn doc(r: &Request) -> Result<String> {
    serde_json::to_string(r).map_err(|e| StoreError::Database(e.to_string()))
}

fn parse(doc: &str) -> Result<Request> {
    serde_json::from_str(doc).map_err(|e| StoreError::Database(format!("corrupt request: {e}")))
}

/// The document of `r` as kept: sealed under the request's key, or plain once its subject was
/// erased.
async fn kept_doc(vault: &Arc<Vault>, r: &Request) -> Result<String> {
    let text = doc(r)?;
    if r.subject_value == ERASED {
        return Ok(text);
    }
    vault.seal_deflated(&crate::request_key(r.id), &text).await
}

/// The text of the document of request `id`, kept as `stored`.
pub(crate) async fn open_doc(vault: &Arc<Vault>, id: i64, stored: String) -> Result<String> {
    vault
        .open_text(&crate::request_key(id), stored)
        .await?
        .ok_or_else(|| StoreError::Database(format!("request {id} was sealed under a key since shredded")))
}

async fn read_requests(vault: &Arc<Vault>, rows: Vec<(i64, String)>) -> Result<Vec<Request>> {
    let mut out = Vec::with_capacity(rows.len());
    for (id, stored) in rows {
        out.push(parse(&open_doc(vault, id, stored).await?)?);
    }
    Ok(out)
}

fn audit_of(r: &Request, action: &str) -> AuditEvent {
    let actor = r.steps.last().map_or_else(|| "system".to_owned(), |s| s.actor.clone());
    AuditEvent::new(
        actor,
        action,
        Some(format!("request:{}", r.id)),
        serde_json::json!({"type": r.right.as_str(), "status": r.status.as_str(), "due_at": r.due_at.to_string()}),
    )
}

fn subject_key(r: &Request) -> String {
    format!("{}:{}", r.subject_type.as_str(), r.subject_value)
}

impl SqliteStore {
    pub(crate) async fn insert_request(&self, mut r: Request) -> Result<Request> {
        let subject = self.vault.to_rest(&[subject_key(&r)]).await?;
        let vault = self.vault.clone();
        self.write(move |tx| {
            crate::sqlite::keep_values(tx, &subject.values)?;
            tx.execute(
                "INSERT INTO requests (status, due_at, subject, doc) VALUES (?1, ?2, ?3, '{}')",
                params![r.status.as_str(), to_micros(r.due_at), subject.keys[0]],
            )?;
            r.id = tx.last_insert_rowid();
            // Its key is made here, in the writer: requests are few.
            let stored = vault.seal_deflated_blocking(&crate::request_key(r.id), &doc(&r)?)?;
            tx.execute("UPDATE requests SET doc = ?1 WHERE id = ?2", params![stored, r.id])?;
            crate::sqlite::append_audit(tx, r.received_at, vec![audit_of(&r, "request.received")])?;
            Ok(r)
        })
        .await
    }

    pub(crate) async fn update_request(&self, r: Request, action: String) -> Result<()> {
        let stored = kept_doc(&self.vault, &r).await?;
        self.write(move |tx| {
            tx.execute(
                "UPDATE requests SET status = ?1, due_at = ?2, doc = ?3 WHERE id = ?4",
                params![r.status.as_str(), to_micros(r.due_at), stored, r.id],
            )?;
            let at = r.steps.last().map_or_else(jiff::Timestamp::now, |s| s.at);
            crate::sqlite::append_audit(tx, at, vec![audit_of(&r, &action)])
        })
        .await
    }

    pub(crate) async fn request(&self, id: i64) -> Result<Option<Request>> {
        let stored: Option<String> = self
            .read(move |c| {
                Ok(
                    c.query_row("SELECT doc FROM requests WHERE id = ?1", [id], |r| r.get(0))
                        .optional()?,
                )
            })
            .await?;
        match stored {
            Some(stored) => Ok(Some(parse(&open_doc(&self.vault, id, stored).await?)?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn requests(&self, open_only: bool, limit: usize) -> Result<Vec<Request>> {
        let rows = self
            .read(move |c| {
                let sql = if open_only {
                    "SELECT id, doc FROM requests WHERE status NOT IN ('done', 'refused') ORDER BY due_at, id LIMIT ?1"
                } else {
                    "SELECT id, doc FROM requests ORDER BY due_at, id LIMIT ?1"
                };
                let mut stmt = c.prepare(sql)?;
                Ok(stmt
                    .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        read_requests(&self.vault, rows).await
    }

    pub(crate) async fn requests_of(&self, kept: Vec<String>) -> Result<Vec<Request>> {
        let kept = serde_json::to_string(&kept).map_err(|e| StoreError::Database(e.to_string()))?;
        let rows = self
            .read(move |c| {
                let mut stmt = c.prepare(
                    "SELECT id, doc FROM requests WHERE subject IN (SELECT value FROM json_each(?1)) ORDER BY due_at, id",
                )?;
                Ok(stmt
                    .query_map([kept], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        read_requests(&self.vault, rows).await
    }

    pub(crate) async fn put_request_result(&self, id: i64, result: String) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO request_results (request_id, result) VALUES (?1, ?2)
                 ON CONFLICT (request_id) DO UPDATE SET result = excluded.result",
                params![id, result],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn request_result(&self, id: i64) -> Result<Option<String>> {
        self.read(move |c| {
            Ok(
                c.query_row("SELECT result FROM request_results WHERE request_id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
        .await
    }
}

impl PgStore {
    pub(crate) async fn insert_request(&self, mut r: Request) -> Result<Request> {
        let subject = self.vault.to_rest(&[subject_key(&r)]).await?;
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        crate::postgres::keep_values(&tx, &subject.values).await?;
        let row = tx
            .query_one(
                "INSERT INTO requests (status, due_at, subject, doc) VALUES ($1, $2, $3, '{}') RETURNING id",
                &[&r.status.as_str(), &to_micros(r.due_at), &subject.keys[0]],
            )
            .await?;
        r.id = row.try_get(0)?;
        tx.execute(
            "UPDATE requests SET doc = $1 WHERE id = $2",
            &[&kept_doc(&self.vault, &r).await?, &r.id],
        )
        .await?;
        crate::postgres::append_audit(&tx, r.received_at, vec![audit_of(&r, "request.received")]).await?;
        tx.commit().await?;
        Ok(r)
    }

    pub(crate) async fn update_request(&self, r: Request, action: String) -> Result<()> {
        let stored = kept_doc(&self.vault, &r).await?;
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "UPDATE requests SET status = $1, due_at = $2, doc = $3 WHERE id = $4",
            &[&r.status.as_str(), &to_micros(r.due_at), &stored, &r.id],
        )
        .await?;
        let at = r.steps.last().map_or_else(jiff::Timestamp::now, |s| s.at);
        crate::postgres::append_audit(&tx, at, vec![audit_of(&r, &action)]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn request(&self, id: i64) -> Result<Option<Request>> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt("SELECT doc FROM requests WHERE id = $1", &[&id])
            .await?;
        drop(client);
        match row {
            Some(r) => Ok(Some(parse(&open_doc(&self.vault, id, r.try_get(0)?).await?)?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn requests(&self, open_only: bool, limit: usize) -> Result<Vec<Request>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = if open_only {
            "SELECT id, doc FROM requests WHERE status NOT IN ('done', 'refused') ORDER BY due_at, id LIMIT $1"
        } else {
            "SELECT id, doc FROM requests ORDER BY due_at, id LIMIT $1"
        };
        self.query_requests(sql, &[&limit]).await
    }

    pub(crate) async fn requests_of(&self, kept: Vec<String>) -> Result<Vec<Request>> {
        self.query_requests(
            "SELECT id, doc FROM requests WHERE subject = ANY($1) ORDER BY due_at, id",
            &[&kept],
        )
        .await
    }

    /// The requests `sql` selects as `(id, doc)`, opened.
    async fn query_requests(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Request>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(sql, params)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>>>()?;
        drop(client);
        read_requests(&self.vault, rows).await
    }

    pub(crate) async fn put_request_result(&self, id: i64, result: String) -> Result<()> {
        let client = self.pool().get().await?;
        client
            .execute(
                "INSERT INTO request_results (request_id, result) VALUES ($1, $2)
                 ON CONFLICT (request_id) DO UPDATE SET result = EXCLUDED.result",
                &[&id, &result],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn request_result(&self, id: i64) -> Result<Option<String>> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt("SELECT result FROM request_results WHERE request_id = $1", &[&id])
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}
