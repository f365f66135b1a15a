//! Data-subject requests in both stores: each request is one JSON document (its workflow lives
//! in `confiance_core::privacy::requests`), and every change to it is audited in the same
//! transaction.
//!
//! The document names the subject and may hold what they asked to correct, so it is kept
//! sealed under the subject's own key ([`Vault::seal_deflated`]), and the `subject` column as
//! rows keep identifiers ([`Vault::at_rest`]): an erasure that shreds the key leaves older
//! copies with nothing readable, and the record it keeps is redacted and plain.

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::vault::Vault;
use crate::{Result, StoreError, to_micros};
use confiance_core::privacy::audit::AuditEvent;
use confiance_core::privacy::requests::Request;
use rusqlite::{OptionalExtension, params};
use std::sync::Arc;

/// The subject value of a request whose subject was erased.
pub(crate) const ERASED: &str = "erased";

fn doc(r: &Request) -> Result<String> {
    serde_json::to_string(r).map_err(|e| StoreError::Database(e.to_string()))
}

fn parse(doc: &str) -> Result<Request> {
    serde_json::from_str(doc).map_err(|e| StoreError::Database(format!("corrupt request: {e}")))
}

/// The document as kept: sealed under its subject's key, or plain once the subject was erased.
async fn kept_doc(vault: &Arc<Vault>, r: &Request) -> Result<String> {
    let text = doc(r)?;
    if r.subject_value == ERASED {
        return Ok(text);
    }
    vault.seal_deflated(&subject_key(r), &text).await
}

/// The text of the document of request `id`, kept as `stored` with the subject column `kept`;
/// none while it is being erased (its key shredded, its record not yet redacted).
pub(crate) async fn open_doc(vault: &Arc<Vault>, id: i64, kept: &str, stored: String) -> Result<Option<String>> {
    vault.open_text_kept(kept, &format!("request {id}"), stored).await
}

/// Request `id` from its kept row; none while it is being erased.
async fn read_request(vault: &Arc<Vault>, (id, kept, stored): (i64, String, String)) -> Result<Option<Request>> {
    let Some(text) = open_doc(vault, id, &kept, stored).await? else {
        return Ok(None);
    };
    let mut r = parse(&text)?;
    r.id = id;
    Ok(Some(r))
}

async fn read_requests(vault: &Arc<Vault>, rows: Vec<(i64, String, String)>) -> Result<Vec<Request>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.extend(read_request(vault, row).await?);
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
        // The id is the row's: the document leaves it out.
        let stored = kept_doc(&self.vault, &r).await?;
        self.write(move |tx| {
            crate::sqlite::keep_values(tx, &subject.values)?;
            tx.execute(
                "INSERT INTO requests (status, due_at, subject, doc) VALUES (?1, ?2, ?3, ?4)",
                params![r.status.as_str(), to_micros(r.due_at), subject.keys[0], stored],
            )?;
            r.id = tx.last_insert_rowid();
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
        let row = self
            .read(move |c| {
                Ok(
                    c.query_row("SELECT id, subject, doc FROM requests WHERE id = ?1", [id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?,
                )
            })
            .await?;
        match row {
            Some(row) => read_request(&self.vault, row).await,
            None => Ok(None),
        }
    }

    pub(crate) async fn requests(&self, open_only: bool, limit: usize) -> Result<Vec<Request>> {
        let rows = self
            .read(move |c| {
                let sql = if open_only {
                    "SELECT id, subject, doc FROM requests WHERE status NOT IN ('done', 'refused') ORDER BY due_at, id LIMIT ?1"
                } else {
                    "SELECT id, subject, doc FROM requests ORDER BY due_at, id LIMIT ?1"
                };
                let mut stmt = c.prepare(sql)?;
                Ok(stmt
                    .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
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
        // The id is the row's: the document leaves it out.
        let stored = kept_doc(&self.vault, &r).await?;
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        crate::postgres::keep_values(&tx, &subject.values).await?;
        let row = tx
            .query_one(
                "INSERT INTO requests (status, due_at, subject, doc) VALUES ($1, $2, $3, $4) RETURNING id",
                &[&r.status.as_str(), &to_micros(r.due_at), &subject.keys[0], &stored],
            )
            .await?;
        r.id = row.try_get(0)?;
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
            .query_opt("SELECT id, subject, doc FROM requests WHERE id = $1", &[&id])
            .await?;
        drop(client);
        match row {
            Some(r) => read_request(&self.vault, (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)).await,
            None => Ok(None),
        }
    }

    pub(crate) async fn requests(&self, open_only: bool, limit: usize) -> Result<Vec<Request>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.pool().get().await?;
        let sql = if open_only {
            "SELECT id, subject, doc FROM requests WHERE status NOT IN ('done', 'refused') ORDER BY due_at, id LIMIT $1"
        } else {
            "SELECT id, subject, doc FROM requests ORDER BY due_at, id LIMIT $1"
        };
        let rows = client
            .query(sql, &[&limit])
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
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
