//! Telling the people of a breach as a persisted task, in both stores.
//!
//! # Design
//!
//! A request to tell people becomes a [`BreachJob`] row; a worker claims it under a lease (so
//! one node works it at a time, and another takes over when a node dies), then *plans* it: one
//! `pending` row in `breach_notices` per person and channel, in one transaction with the job's
//! planned figures. Each notice is then moved `pending` → `sending` by a conditional update
//! before the message goes, and to `sent` or `failed` after. Only the worker that won the update
//! sends, and a row left `sending` by a worker that died is marked failed ("outcome unknown")
//! rather than sent again: nobody is told twice automatically, and a DPO who asks again retries
//! every notice that is not `sent`.

use crate::breaches::BreachNotice;
use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Result, from_micros, to_micros};
use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use std::collections::BTreeMap;

/// Why a notice left `sending` by a worker that stopped is not sent again.
pub const INTERRUPTED: &str =
    "interrupted while sending: the outcome is unknown, so it was not sent again; ask again to retry";

/// A request to tell the people affected by a breach, worked in the background.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BreachJob {
    /// Task id.
    pub id: i64,
    /// The breach.
    pub breach_id: i64,
    /// `enqueued`, `processing`, `succeeded` or `failed`.
    pub status: String,
    /// The language of people whose own is not known.
    pub default_language: String,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub created_at: Timestamp,
    /// When a worker first took it.
    pub started_at: Option<Timestamp>,
    /// When the people to tell were listed.
    pub planned_at: Option<Timestamp>,
    /// How many people it concerns.
    pub people: Option<i64>,
    /// How many notices had already been sent by earlier requests.
    pub already_told: Option<i64>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// The notices a job plans: `(profile, channel)` to send, and profiles with no known channel.
#[derive(Clone, Debug, Default)]
pub struct NoticePlan {
    /// One notice per person and channel.
    pub notices: Vec<(i64, String)>,
    /// People no channel is known for (recorded as failed on channel `none`).
    pub unreachable: Vec<i64>,
    /// How many people the breach touched.
    pub people: i64,
    /// How many notices were already sent.
    pub already_told: i64,
}

const JOB_COLUMNS: &str = "id, breach_id, status, default_language, requested_by, created_at, started_at, planned_at, people, already_told, finished_at, error";

type JobParts = (
    i64,
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

fn job(
    (id, breach_id, status, lang, by, created, started, planned, people, told, finished, error): JobParts,
) -> BreachJob {
    BreachJob {
        id,
        breach_id,
        status,
        default_language: lang,
        requested_by: by,
        created_at: from_micros(created),
        started_at: started.map(from_micros),
        planned_at: planned.map(from_micros),
        people,
        already_told: told,
        finished_at: finished.map(from_micros),
        error,
    }
}

fn sqlite_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobParts> {
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
        r.get(11)?,
    ))
}

fn pg_job(r: &tokio_postgres::Row) -> Result<BreachJob> {
    Ok(job((
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
        r.try_get(11)?,
    )))
}

const UPSERT_NOTICE_SQLITE: &str = "INSERT INTO breach_notices (breach_id, profile_id, channel, status, detail, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT (breach_id, profile_id, channel) DO UPDATE SET status = excluded.status, detail = excluded.detail, at = excluded.at
     WHERE breach_notices.status <> 'sent'";

const UPSERT_NOTICE_PG: &str = "INSERT INTO breach_notices (breach_id, profile_id, channel, status, detail, at) VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (breach_id, profile_id, channel) DO UPDATE SET status = EXCLUDED.status, detail = EXCLUDED.detail, at = EXCLUDED.at
     WHERE breach_notices.status <> 'sent'";

impl SqliteStore {
    pub(crate) async fn enqueue_breach_job(
        &self,
        breach: i64,
        lang: String,
        by: String,
        at: Timestamp,
    ) -> Result<(BreachJob, bool)> {
        self.write(move |tx| {
            let n = tx.execute(
                "INSERT INTO breach_jobs (breach_id, status, default_language, requested_by, created_at) VALUES (?1, 'enqueued', ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![breach, lang, by, to_micros(at)],
            )?;
            let parts = tx.query_row(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM breach_jobs WHERE breach_id = ?1 AND status IN ('enqueued', 'processing') ORDER BY id DESC LIMIT 1"
                ),
                [breach],
                sqlite_job,
            )?;
            Ok((job(parts), n == 1))
        })
        .await
    }

    pub(crate) async fn breach_jobs(&self, breach: i64) -> Result<Vec<BreachJob>> {
        self.read(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM breach_jobs WHERE breach_id = ?1 ORDER BY id"
            ))?;
            let rows = stmt
                .query_map([breach], sqlite_job)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().map(job).collect())
        })
        .await
    }

    pub(crate) async fn claim_breach_job(&self, now: Timestamp, lease_until: Timestamp) -> Result<Option<BreachJob>> {
        self.write(move |tx| {
            let now = to_micros(now);
            let id: Option<i64> = tx
                .query_row(
                    "SELECT id FROM breach_jobs WHERE status = 'enqueued' OR (status = 'processing' AND lease_until < ?1) ORDER BY id LIMIT 1",
                    [now],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            tx.execute(
                "UPDATE breach_jobs SET status = 'processing', lease_until = ?1, started_at = COALESCE(started_at, ?2) WHERE id = ?3",
                params![to_micros(lease_until), now, id],
            )?;
            let parts = tx.query_row(&format!("SELECT {JOB_COLUMNS} FROM breach_jobs WHERE id = ?1"), [id], sqlite_job)?;
            let claimed = job(parts);
            // Whoever held the job before stopped: what it was sending has an unknown outcome.
            tx.execute(
                "UPDATE breach_notices SET status = 'failed', detail = ?1, at = ?2 WHERE breach_id = ?3 AND status = 'sending'",
                params![INTERRUPTED, now, claimed.breach_id],
            )?;
            Ok(Some(claimed))
        })
        .await
    }

    pub(crate) async fn plan_breach_job(&self, id: i64, breach: i64, plan: NoticePlan, at: Timestamp) -> Result<()> {
        self.write(move |tx| {
            let at = to_micros(at);
            let mut upsert = tx.prepare(UPSERT_NOTICE_SQLITE)?;
            for (profile, channel) in &plan.notices {
                upsert.execute(params![breach, profile, channel, "pending", None::<String>, at])?;
            }
            for profile in &plan.unreachable {
                upsert.execute(params![breach, profile, "none", "failed", "no known channel", at])?;
            }
            tx.execute(
                "UPDATE breach_jobs SET planned_at = ?1, people = ?2, already_told = ?3 WHERE id = ?4",
                params![at, plan.people, plan.already_told, id],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn pending_breach_notices(&self, breach: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT profile_id, channel FROM breach_notices WHERE breach_id = ?1 AND status = 'pending' ORDER BY profile_id, channel LIMIT ?2",
            )?;
            Ok(stmt
                .query_map(params![breach, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub(crate) async fn end_breach_notice(&self, breach: i64, n: BreachNotice) -> Result<bool> {
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE breach_notices SET status = ?1, detail = ?2, at = ?3
                 WHERE breach_id = ?4 AND profile_id = ?5 AND channel = ?6 AND status = 'sending'",
                params![n.status, n.detail, to_micros(n.at), breach, n.profile_id, n.channel],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    pub(crate) async fn start_breach_notice(
        &self,
        breach: i64,
        profile: i64,
        channel: String,
        at: Timestamp,
    ) -> Result<bool> {
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE breach_notices SET status = 'sending', at = ?1 WHERE breach_id = ?2 AND profile_id = ?3 AND channel = ?4 AND status = 'pending'",
                params![to_micros(at), breach, profile, channel],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub(crate) async fn renew_breach_job(&self, id: i64, held: Timestamp, lease_until: Timestamp) -> Result<bool> {
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE breach_jobs SET lease_until = ?1 WHERE id = ?2 AND status = 'processing' AND lease_until = ?3",
                params![to_micros(lease_until), id, to_micros(held)],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub(crate) async fn finish_breach_job(
        &self,
        id: i64,
        held: Timestamp,
        error: Option<String>,
        at: Timestamp,
    ) -> Result<bool> {
        self.write(move |tx| {
            let status = if error.is_some() { "failed" } else { "succeeded" };
            let n = tx.execute(
                "UPDATE breach_jobs SET status = ?1, error = ?2, finished_at = ?3, lease_until = NULL
                 WHERE id = ?4 AND status = 'processing' AND lease_until = ?5",
                params![status, error, to_micros(at), id, to_micros(held)],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub(crate) async fn breach_notices_of(&self, profile: i64) -> Result<Vec<(i64, BreachNotice)>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT breach_id, profile_id, channel, status, detail, at FROM breach_notices WHERE profile_id = ?1 ORDER BY breach_id, channel",
            )?;
            let rows = stmt
                .query_map([profile], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        BreachNotice {
                            profile_id: r.get(1)?,
                            channel: r.get(2)?,
                            status: r.get(3)?,
                            detail: r.get(4)?,
                            at: from_micros(r.get(5)?),
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}

impl PgStore {
    pub(crate) async fn enqueue_breach_job(
        &self,
        breach: i64,
        lang: String,
        by: String,
        at: Timestamp,
    ) -> Result<(BreachJob, bool)> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "INSERT INTO breach_jobs (breach_id, status, default_language, requested_by, created_at) VALUES ($1, 'enqueued', $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&breach, &lang, &by, &to_micros(at)],
            )
            .await?;
        let row = tx
            .query_one(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM breach_jobs WHERE breach_id = $1 AND status IN ('enqueued', 'processing') ORDER BY id DESC LIMIT 1"
                ),
                &[&breach],
            )
            .await?;
        let out = pg_job(&row)?;
        tx.commit().await?;
        Ok((out, n == 1))
    }

    pub(crate) async fn breach_jobs(&self, breach: i64) -> Result<Vec<BreachJob>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                &format!("SELECT {JOB_COLUMNS} FROM breach_jobs WHERE breach_id = $1 ORDER BY id"),
                &[&breach],
            )
            .await?;
        rows.iter().map(pg_job).collect()
    }

    pub(crate) async fn claim_breach_job(&self, now: Timestamp, lease_until: Timestamp) -> Result<Option<BreachJob>> {
        let now = to_micros(now);
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE breach_jobs SET status = 'processing', lease_until = $1, started_at = COALESCE(started_at, $2)
                     WHERE id = (SELECT id FROM breach_jobs
                                 WHERE status = 'enqueued' OR (status = 'processing' AND lease_until < $2)
                                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING {JOB_COLUMNS}"
                ),
                &[&to_micros(lease_until), &now],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let claimed = pg_job(&row)?;
        tx.execute(
            "UPDATE breach_notices SET status = 'failed', detail = $1, at = $2 WHERE breach_id = $3 AND status = 'sending'",
            &[&INTERRUPTED, &now, &claimed.breach_id],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(claimed))
    }

    pub(crate) async fn plan_breach_job(&self, id: i64, breach: i64, plan: NoticePlan, at: Timestamp) -> Result<()> {
        let at = to_micros(at);
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let upsert = tx.prepare(UPSERT_NOTICE_PG).await?;
        for (profile, channel) in &plan.notices {
            tx.execute(&upsert, &[&breach, profile, channel, &"pending", &None::<String>, &at])
                .await?;
        }
        for profile in &plan.unreachable {
            tx.execute(
                &upsert,
                &[&breach, profile, &"none", &"failed", &Some("no known channel"), &at],
            )
            .await?;
        }
        tx.execute(
            "UPDATE breach_jobs SET planned_at = $1, people = $2, already_told = $3 WHERE id = $4",
            &[&at, &plan.people, &plan.already_told, &id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn pending_breach_notices(&self, breach: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT profile_id, channel FROM breach_notices WHERE breach_id = $1 AND status = 'pending' ORDER BY profile_id, channel LIMIT $2",
                &[&breach, &(limit as i64)],
            )
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub(crate) async fn end_breach_notice(&self, breach: i64, n: BreachNotice) -> Result<bool> {
        let changed = self
            .pool()
            .get()
            .await?
            .execute(
                "UPDATE breach_notices SET status = $1, detail = $2, at = $3
                 WHERE breach_id = $4 AND profile_id = $5 AND channel = $6 AND status = 'sending'",
                &[
                    &n.status,
                    &n.detail,
                    &to_micros(n.at),
                    &breach,
                    &n.profile_id,
                    &n.channel,
                ],
            )
            .await?;
        Ok(changed == 1)
    }

    pub(crate) async fn start_breach_notice(
        &self,
        breach: i64,
        profile: i64,
        channel: String,
        at: Timestamp,
    ) -> Result<bool> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "UPDATE breach_notices SET status = 'sending', at = $1 WHERE breach_id = $2 AND profile_id = $3 AND channel = $4 AND status = 'pending'",
                &[&to_micros(at), &breach, &profile, &channel],
            )
            .await?;
        Ok(n == 1)
    }

    pub(crate) async fn renew_breach_job(&self, id: i64, held: Timestamp, lease_until: Timestamp) -> Result<bool> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "UPDATE breach_jobs SET lease_until = $1 WHERE id = $2 AND status = 'processing' AND lease_until = $3",
                &[&to_micros(lease_until), &id, &to_micros(held)],
            )
            .await?;
        Ok(n == 1)
    }

    pub(crate) async fn finish_breach_job(
        &self,
        id: i64,
        held: Timestamp,
        error: Option<String>,
        at: Timestamp,
    ) -> Result<bool> {
        let status = if error.is_some() { "failed" } else { "succeeded" };
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "UPDATE breach_jobs SET status = $1, error = $2, finished_at = $3, lease_until = NULL
                 WHERE id = $4 AND status = 'processing' AND lease_until = $5",
                &[&status, &error, &to_micros(at), &id, &to_micros(held)],
            )
            .await?;
        Ok(n == 1)
    }

    pub(crate) async fn breach_notices_of(&self, profile: i64) -> Result<Vec<(i64, BreachNotice)>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT breach_id, profile_id, channel, status, detail, at FROM breach_notices WHERE profile_id = $1 ORDER BY breach_id, channel",
                &[&profile],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    BreachNotice {
                        profile_id: r.try_get(1)?,
                        channel: r.try_get(2)?,
                        status: r.try_get(3)?,
                        detail: r.try_get(4)?,
                        at: from_micros(r.try_get(5)?),
                    },
                ))
            })
            .collect()
    }
}

/// Telling the people of a breach, on whichever backend the store is.
impl crate::Store {
    /// Records a request to tell the people of `breach`, or returns the one still open; the
    /// flag says whether it is new.
    pub async fn enqueue_breach_job(
        &self,
        breach: i64,
        default_language: &str,
        requested_by: &str,
        at: Timestamp,
    ) -> Result<(BreachJob, bool)> {
        let (lang, by) = (default_language.to_owned(), requested_by.to_owned());
        match self {
            crate::Store::Sqlite(s) => s.enqueue_breach_job(breach, lang, by, at).await,
            crate::Store::Postgres(s) => s.enqueue_breach_job(breach, lang, by, at).await,
        }
    }

    /// Every request to tell the people of `breach`, oldest first.
    pub async fn breach_jobs(&self, breach: i64) -> Result<Vec<BreachJob>> {
        match self {
            crate::Store::Sqlite(s) => s.breach_jobs(breach).await,
            crate::Store::Postgres(s) => s.breach_jobs(breach).await,
        }
    }

    /// Takes the oldest job that is waiting, or whose worker's lease ran out, until
    /// `lease_until`; the notices its previous worker was sending are marked failed
    /// ([`INTERRUPTED`]), never sent again.
    pub async fn claim_breach_job(&self, now: Timestamp, lease_until: Timestamp) -> Result<Option<BreachJob>> {
        match self {
            crate::Store::Sqlite(s) => s.claim_breach_job(now, lease_until).await,
            crate::Store::Postgres(s) => s.claim_breach_job(now, lease_until).await,
        }
    }

    /// Records whom a job tells: a `pending` notice per person and channel (those already
    /// `sent` stay so), a failed one for people with no known channel, and the job's figures.
    pub async fn plan_breach_job(&self, job: &BreachJob, plan: NoticePlan, at: Timestamp) -> Result<()> {
        match self {
            crate::Store::Sqlite(s) => s.plan_breach_job(job.id, job.breach_id, plan, at).await,
            crate::Store::Postgres(s) => s.plan_breach_job(job.id, job.breach_id, plan, at).await,
        }
    }

    /// Up to `limit` notices of `breach` still to send, as `(profile, channel)`.
    pub async fn pending_breach_notices(&self, breach: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        match self {
            crate::Store::Sqlite(s) => s.pending_breach_notices(breach, limit).await,
            crate::Store::Postgres(s) => s.pending_breach_notices(breach, limit).await,
        }
    }

    /// Marks a pending notice as being sent; false when it is not pending (another worker took
    /// it, or the person was erased): then it must not be sent.
    pub async fn start_breach_notice(&self, breach: i64, profile: i64, channel: &str, at: Timestamp) -> Result<bool> {
        let channel = channel.to_owned();
        match self {
            crate::Store::Sqlite(s) => s.start_breach_notice(breach, profile, channel, at).await,
            crate::Store::Postgres(s) => s.start_breach_notice(breach, profile, channel, at).await,
        }
    }

    /// Records how sending a notice marked as being sent went. False when it is no longer being
    /// sent: the person was erased meanwhile (their row is gone and must not come back), or a
    /// worker that took the task over marked it failed.
    pub async fn end_breach_notice(&self, breach: i64, notice: &BreachNotice) -> Result<bool> {
        match self {
            crate::Store::Sqlite(s) => s.end_breach_notice(breach, notice.clone()).await,
            crate::Store::Postgres(s) => s.end_breach_notice(breach, notice.clone()).await,
        }
    }

    /// Extends the lease of a job being worked, from `held` (the lease its worker holds, which
    /// names the claim) to `lease_until`. False when the lease is no longer theirs: another
    /// worker took the job over after it ran out, and this one must stop.
    pub async fn renew_breach_job(&self, id: i64, held: Timestamp, lease_until: Timestamp) -> Result<bool> {
        match self {
            crate::Store::Sqlite(s) => s.renew_breach_job(id, held, lease_until).await,
            crate::Store::Postgres(s) => s.renew_breach_job(id, held, lease_until).await,
        }
    }

    /// Ends a job its worker still holds under `held`: succeeded, or failed with `error`. False
    /// when another worker took it over.
    pub async fn finish_breach_job(
        &self,
        id: i64,
        held: Timestamp,
        error: Option<String>,
        at: Timestamp,
    ) -> Result<bool> {
        match self {
            crate::Store::Sqlite(s) => s.finish_breach_job(id, held, error, at).await,
            crate::Store::Postgres(s) => s.finish_breach_job(id, held, error, at).await,
        }
    }

    /// Every breach notice about one person, as `(breach id, notice)`: for their access request.
    pub async fn breach_notices_of(&self, profile: i64) -> Result<Vec<(i64, BreachNotice)>> {
        match self {
            crate::Store::Sqlite(s) => s.breach_notices_of(profile).await,
            crate::Store::Postgres(s) => s.breach_notices_of(profile).await,
        }
    }
}

/// How many notices of a breach are in each status (`pending`, `sending`, `sent`, `failed`).
pub fn notice_counts(notices: &[BreachNotice]) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = ["pending", "sent", "failed"]
        .iter()
        .map(|s| ((*s).to_owned(), 0))
        .collect();
    for n in notices {
        *out.entry(n.status.clone()).or_default() += 1;
    }
    out
}
