//! Saved segments, their members and member exports, in both stores.
//!
//! The members table is what makes entered/exited transitions exactly-once across nodes: every
//! node follows the same change feed and evaluates the same segments, but a transition is
//! recorded only by the node whose insert (or delete) actually changed a row, in the same
//! transaction.

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Result, StoreError, from_micros, to_micros};
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

/// A saved segment: its id, unique name and document (purpose, query, description, times).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SegmentRow {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The rest, as the segment module defines it.
    pub doc: Value,
}

/// A profile entering or leaving a segment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Transition {
    /// Position in the transitions feed.
    pub seq: i64,
    /// Segment id.
    pub segment_id: i64,
    /// Profile id.
    pub profile_id: i64,
    /// Entered (else exited).
    pub entered: bool,
    /// When.
    pub at: jiff::Timestamp,
}

/// A members export task.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ExportRow {
    /// Task id.
    pub id: i64,
    /// Segment id.
    pub segment_id: i64,
    /// `csv` or `json`.
    pub format: String,
    /// `enqueued`, `processing`, `succeeded` or `failed`.
    pub status: String,
    /// When it was asked for.
    pub created_at: jiff::Timestamp,
    /// When it finished.
    pub finished_at: Option<jiff::Timestamp>,
    /// Members exported.
    pub rows: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The file, once done, as the store keeps it (sealed): [`crate::Store::export_file`]
    /// opens it, and [`crate::Store::export`] leaves it out.
    #[serde(skip)]
    pub body: Option<String>,
}

fn doc_text(doc: &Value) -> String {
    doc.to_string()
}

fn parse_doc(s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(|e| StoreError::Database(format!("corrupt segment: {e}")))
}

fn conflict(name: &str) -> StoreError {
    StoreError::Conflict(format!("a segment named {name:?}"))
}

type ExportParts = (
    i64,
    i64,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

fn export_row((id, segment_id, format, status, created, finished, rows, error, body): ExportParts) -> ExportRow {
    ExportRow {
        id,
        segment_id,
        format,
        status,
        created_at: from_micros(created),
        finished_at: finished.map(from_micros),
        rows,
        error,
        body,
    }
}

const EXPORT_COLUMNS: &str = "id, segment_id, format, status, created_at, finished_at, rows, error, body";

impl SqliteStore {
    pub(crate) async fn put_segment(&self, id: Option<i64>, name: String, doc: Value) -> Result<i64> {
        self.write(move |tx| {
            let taken: Option<i64> = tx
                .query_row("SELECT id FROM segments WHERE name = ?1", [&name], |r| r.get(0))
                .optional()?;
            if taken.is_some_and(|t| Some(t) != id) {
                return Err(conflict(&name));
            }
            match id {
                Some(id) => {
                    let n = tx.execute(
                        "UPDATE segments SET name = ?1, doc = ?2 WHERE id = ?3",
                        params![name, doc_text(&doc), id],
                    )?;
                    if n == 0 {
                        return Err(StoreError::Database(format!("no segment {id}")));
                    }
                    Ok(id)
                }
                None => {
                    tx.execute(
                        "INSERT INTO segments (name, doc) VALUES (?1, ?2)",
                        params![name, doc_text(&doc)],
                    )?;
                    Ok(tx.last_insert_rowid())
                }
            }
        })
        .await
    }

    pub(crate) async fn delete_segment(&self, id: i64) -> Result<bool> {
        self.write(move |tx| {
            tx.execute("DELETE FROM segment_members WHERE segment_id = ?1", [id])?;
            Ok(tx.execute("DELETE FROM segments WHERE id = ?1", [id])? == 1)
        })
        .await
    }

    pub(crate) async fn segments(&self) -> Result<Vec<SegmentRow>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT id, name, doc FROM segments ORDER BY id")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, name, doc)| {
                    Ok(SegmentRow {
                        id,
                        name,
                        doc: parse_doc(&doc)?,
                    })
                })
                .collect()
        })
        .await
    }

    pub(crate) async fn segment_members(&self, id: i64) -> Result<Vec<i64>> {
        self.read(move |c| {
            let mut stmt =
                c.prepare("SELECT profile_id FROM segment_members WHERE segment_id = ?1 ORDER BY profile_id")?;
            Ok(stmt
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?)
        })
        .await
    }

    pub(crate) async fn sync_members(
        &self,
        segment: i64,
        entered: Vec<i64>,
        exited: Vec<i64>,
        at: jiff::Timestamp,
        record: bool,
    ) -> Result<(usize, usize)> {
        self.write(move |tx| {
            let at = to_micros(at);
            let mut insert = tx.prepare_cached(
                "INSERT INTO segment_members (segment_id, profile_id, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT (segment_id, profile_id) DO NOTHING",
            )?;
            let mut delete =
                tx.prepare_cached("DELETE FROM segment_members WHERE segment_id = ?1 AND profile_id = ?2")?;
            let mut transition = tx.prepare_cached(
                "INSERT INTO segment_transitions (segment_id, profile_id, entered, at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let (mut ins, mut del) = (0, 0);
            for p in entered {
                if insert.execute(params![segment, p, at])? == 1 {
                    ins += 1;
                    if record {
                        transition.execute(params![segment, p, true, at])?;
                    }
                }
            }
            for p in exited {
                if delete.execute(params![segment, p])? == 1 {
                    del += 1;
                    if record {
                        transition.execute(params![segment, p, false, at])?;
                    }
                }
            }
            Ok((ins, del))
        })
        .await
    }

    pub(crate) async fn transitions(&self, after: i64, profile: Option<i64>, limit: usize) -> Result<Vec<Transition>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, segment_id, profile_id, entered, at FROM segment_transitions
                 WHERE seq > ?1 AND (?2 IS NULL OR profile_id = ?2) ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![after, profile, limit as i64], |r| {
                Ok(Transition {
                    seq: r.get(0)?,
                    segment_id: r.get(1)?,
                    profile_id: r.get(2)?,
                    entered: r.get(3)?,
                    at: from_micros(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub(crate) async fn create_export(&self, segment: i64, format: String, at: jiff::Timestamp) -> Result<i64> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO segment_exports (segment_id, format, status, created_at) VALUES (?1, ?2, 'enqueued', ?3)",
                params![segment, format, to_micros(at)],
            )?;
            Ok(tx.last_insert_rowid())
        })
        .await
    }

    pub(crate) async fn finish_export(
        &self,
        id: i64,
        outcome: std::result::Result<(i64, String), String>,
        at: jiff::Timestamp,
    ) -> Result<()> {
        self.write(move |tx| {
            let (status, rows, body, error) = match outcome {
                Ok((rows, body)) => ("succeeded", Some(rows), Some(body), None),
                Err(e) => ("failed", None, None, Some(e)),
            };
            tx.execute(
                "UPDATE segment_exports SET status = ?1, rows = ?2, body = ?3, error = ?4, finished_at = ?5 WHERE id = ?6",
                params![status, rows, body, error, to_micros(at), id],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn export(&self, id: i64) -> Result<Option<ExportRow>> {
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {EXPORT_COLUMNS} FROM segment_exports WHERE id = ?1"),
                [id],
                |r| {
                    Ok(export_row((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    )))
                },
            )
            .optional()?)
        })
        .await
    }

    pub(crate) async fn consent_changes(&self, after: i64, recent: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        let vault = self.vault.clone();
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, subject FROM consent_ledger WHERE seq > ?1 OR recorded_at > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let (seqs, mut subjects): (Vec<i64>, Vec<String>) = stmt
                .query_map(params![after, recent, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<(i64, String)>>>()?
                .into_iter()
                .unzip();
            crate::sqlite::reveal(c, &vault, &mut subjects)?;
            Ok(seqs.into_iter().zip(subjects).collect())
        })
        .await
    }
    pub(crate) async fn profiles_of_keys(&self, keys: Vec<String>) -> Result<Vec<i64>> {
        let keys: Vec<String> = keys.iter().map(|k| self.vault.at_rest(k)).collect();
        let keys = serde_json::to_string(&keys).map_err(|e| StoreError::Database(e.to_string()))?;
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT profile_id FROM identities WHERE identifier IN (SELECT value FROM json_each(?1))",
            )?;
            Ok(stmt
                .query_map([keys], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?)
        })
        .await
    }

    pub(crate) async fn feed_heads(&self) -> Result<(i64, i64)> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM consent_ledger), (SELECT COALESCE(MAX(seq), 0) FROM audit_log)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
    }
}

impl PgStore {
    pub(crate) async fn put_segment(&self, id: Option<i64>, name: String, doc: Value) -> Result<i64> {
        let client = self.pool().get().await?;
        let result = match id {
            Some(id) => client
                .execute(
                    "UPDATE segments SET name = $1, doc = $2 WHERE id = $3",
                    &[&name, &doc_text(&doc), &id],
                )
                .await
                .map(|n| if n == 1 { Some(id) } else { None }),
            None => client
                .query_one(
                    "INSERT INTO segments (name, doc) VALUES ($1, $2) RETURNING id",
                    &[&name, &doc_text(&doc)],
                )
                .await
                .and_then(|r| r.try_get(0).map(Some)),
        };
        match result {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(StoreError::Database(format!("no segment {id:?}"))),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Err(conflict(&name)),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn delete_segment(&self, id: i64) -> Result<bool> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM segment_members WHERE segment_id = $1", &[&id])
            .await?;
        let n = tx.execute("DELETE FROM segments WHERE id = $1", &[&id]).await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    pub(crate) async fn segments(&self) -> Result<Vec<SegmentRow>> {
        let client = self.pool().get().await?;
        let rows = client
            .query("SELECT id, name, doc FROM segments ORDER BY id", &[])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SegmentRow {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    doc: parse_doc(r.try_get(2)?)?,
                })
            })
            .collect()
    }

    pub(crate) async fn segment_members(&self, id: i64) -> Result<Vec<i64>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT profile_id FROM segment_members WHERE segment_id = $1 ORDER BY profile_id",
                &[&id],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    pub(crate) async fn sync_members(
        &self,
        segment: i64,
        entered: Vec<i64>,
        exited: Vec<i64>,
        at: jiff::Timestamp,
        record: bool,
    ) -> Result<(usize, usize)> {
        let at = to_micros(at);
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        // One statement each way; RETURNING says which rows this node changed.
        let inserted = tx
            .query(
                "INSERT INTO segment_members (segment_id, profile_id, since)
                 SELECT $1, p, $3 FROM unnest($2::bigint[]) AS p
                 ON CONFLICT (segment_id, profile_id) DO NOTHING RETURNING profile_id",
                &[&segment, &entered, &at],
            )
            .await?;
        let deleted = tx
            .query(
                "DELETE FROM segment_members WHERE segment_id = $1 AND profile_id = ANY($2) RETURNING profile_id",
                &[&segment, &exited],
            )
            .await?;
        if record {
            for (rows, entered) in [(&inserted, true), (&deleted, false)] {
                let ids: Vec<i64> = rows
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<std::result::Result<_, _>>()?;
                tx.execute(
                    "INSERT INTO segment_transitions (segment_id, profile_id, entered, at)
                     SELECT $1, p, $3, $4 FROM unnest($2::bigint[]) AS p",
                    &[&segment, &ids, &entered, &at],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok((inserted.len(), deleted.len()))
    }

    pub(crate) async fn transitions(&self, after: i64, profile: Option<i64>, limit: usize) -> Result<Vec<Transition>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT seq, segment_id, profile_id, entered, at FROM segment_transitions
                 WHERE seq > $1 AND ($2::bigint IS NULL OR profile_id = $2) ORDER BY seq LIMIT $3",
                &[&after, &profile, &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Transition {
                    seq: r.try_get(0)?,
                    segment_id: r.try_get(1)?,
                    profile_id: r.try_get(2)?,
                    entered: r.try_get(3)?,
                    at: from_micros(r.try_get(4)?),
                })
            })
            .collect()
    }

    pub(crate) async fn create_export(&self, segment: i64, format: String, at: jiff::Timestamp) -> Result<i64> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "INSERT INTO segment_exports (segment_id, format, status, created_at) VALUES ($1, $2, 'enqueued', $3)
                 RETURNING id",
                &[&segment, &format, &to_micros(at)],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    pub(crate) async fn finish_export(
        &self,
        id: i64,
        outcome: std::result::Result<(i64, String), String>,
        at: jiff::Timestamp,
    ) -> Result<()> {
        let (status, rows, body, error) = match outcome {
            Ok((rows, body)) => ("succeeded", Some(rows), Some(body), None),
            Err(e) => ("failed", None, None, Some(e)),
        };
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE segment_exports SET status = $1, rows = $2, body = $3, error = $4, finished_at = $5 WHERE id = $6",
                &[&status, &rows, &body, &error, &to_micros(at), &id],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn export(&self, id: i64) -> Result<Option<ExportRow>> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {EXPORT_COLUMNS} FROM segment_exports WHERE id = $1"),
                &[&id],
            )
            .await?;
        row.map(|r| {
            Ok(export_row((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
                r.try_get(6)?,
                r.try_get(7)?,
                r.try_get(8)?,
            )))
        })
        .transpose()
    }

    pub(crate) async fn consent_changes(&self, after: i64, recent: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT seq, subject FROM consent_ledger
                 WHERE seq > $1 OR recorded_at > to_timestamp($2::bigint / 1000000.0) ORDER BY seq LIMIT $3",
                &[&after, &recent, &(limit as i64)],
            )
            .await?;
        let (seqs, mut subjects): (Vec<i64>, Vec<String>) = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(i64, String)>>>()?
            .into_iter()
            .unzip();
        crate::postgres::reveal(&client, &self.vault, &mut subjects).await?;
        Ok(seqs.into_iter().zip(subjects).collect())
    }

    pub(crate) async fn profiles_of_keys(&self, keys: Vec<String>) -> Result<Vec<i64>> {
        let keys: Vec<String> = keys.iter().map(|k| self.vault.at_rest(k)).collect();
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT DISTINCT profile_id FROM identities WHERE identifier = ANY($1)",
                &[&keys],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    pub(crate) async fn feed_heads(&self) -> Result<(i64, i64)> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM consent_ledger), (SELECT COALESCE(MAX(seq), 0) FROM audit_log)",
                &[],
            )
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
}
