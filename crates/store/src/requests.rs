//! Data-subject requests in both stores: each request is one JSON document (its workflow lives
//! in `confiance_core::privacy::requests`), and every change to it is audited in the same
//! transaction.

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Result, StoreError, to_micros};
use confiance_core::privacy::audit::AuditEvent;
use confiance_core::privacy::requests::Request;
use rusqlite::{OptionalExtension, params};

fn doc(r: &Request) -> Result<String> {
    serde_json::to_string(r).map_err(|e| StoreError::Database(e.to_string()))
}

fn parse(doc: &str) -> Result<Request> {
    serde_json::from_str(doc).map_err(|e| StoreError::Database(format!("corrupt request: {e}")))
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
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO requests (status, due_at, subject, doc) VALUES (?1, ?2, ?3, '{}')",
                params![r.status.as_str(), to_micros(r.due_at), subject_key(&r)],
            )?;
            r.id = tx.last_insert_rowid();
            tx.execute("UPDATE requests SET doc = ?1 WHERE id = ?2", params![doc(&r)?, r.id])?;
            crate::sqlite::append_audit(tx, r.received_at, vec![audit_of(&r, "request.received")])?;
            Ok(r)
        })
        .await
    }

    pub(crate) async fn update_request(&self, r: Request, action: String) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE requests SET status = ?1, due_at = ?2, doc = ?3 WHERE id = ?4",
                params![r.status.as_str(), to_micros(r.due_at), doc(&r)?, r.id],
            )?;
            let at = r.steps.last().map_or_else(jiff::Timestamp::now, |s| s.at);
            crate::sqlite::append_audit(tx, at, vec![audit_of(&r, &action)])
        })
        .await
    }

    pub(crate) async fn request(&self, id: i64) -> Result<Option<Request>> {
        self.read(move |c| {
            let d: Option<String> = c
                .query_row("SELECT doc FROM requests WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            d.as_deref().map(parse).transpose()
        })
        .await
    }

    pub(crate) async fn requests(&self, open_only: bool, limit: usize) -> Result<Vec<Request>> {
        self.read(move |c| {
            let sql = if open_only {
                "SELECT doc FROM requests WHERE status NOT IN ('done', 'refused') ORDER BY due_at, id LIMIT ?1"
            } else {
                "SELECT doc FROM requests ORDER BY due_at, id LIMIT ?1"
            };
            let mut stmt = c.prepare(sql)?;
            let docs = stmt
                .query_map([limit as i64], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            docs.iter().map(|d| parse(d)).collect()
        })
        .await
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
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                "INSERT INTO requests (status, due_at, subject, doc) VALUES ($1, $2, $3, '{}') RETURNING id",
                &[&r.status.as_str(), &to_micros(r.due_at), &subject_key(&r)],
            )
            .await?;
        r.id = row.try_get(0)?;
        tx.execute("UPDATE requests SET doc = $1 WHERE id = $2", &[&doc(&r)?, &r.id])
            .await?;
        crate::postgres::append_audit(&tx, r.received_at, vec![audit_of(&r, "request.received")]).await?;
        tx.commit().await?;
        Ok(r)
    }

    pub(crate) async fn update_request(&self, r: Request, action: String) -> Result<()> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "UPDATE requests SET status = $1, due_at = $2, doc = $3 WHERE id = $4",
            &[&r.status.as_str(), &to_micros(r.due_at), &doc(&r)?, &r.id],
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
        row.map(|r| {
            r.try_get::<_, String>(0)
                .map_err(StoreError::from)
                .and_then(|d| parse(&d))
        })
        .transpose()
    }

    pub(crate) async fn requests(&self, open_only: bool, limit: usize) -> Result<Vec<Request>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.pool().get().await?;
        let sql = if open_only {
            "SELECT doc FROM requests WHERE status NOT IN ('done', 'refused') ORDER BY due_at, id LIMIT $1"
        } else {
            "SELECT doc FROM requests ORDER BY due_at, id LIMIT $1"
        };
        let rows = client.query(sql, &[&limit]).await?;
        rows.iter().map(|r| parse(&r.try_get::<_, String>(0)?)).collect()
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
