//! Art. 19 notices to the recipients of a person's data, as persisted tasks, in both stores.
//!
//! # Design
//!
//! Carrying out a rectification, erasure or restriction queues one [`RecipientNotice`] per
//! recipient, `pending` and due at once. A worker claims a due notice by moving its `next_at`
//! to the end of a lease and counting the attempt, in one conditional update: only the worker
//! whose update matched sends. The outcome then ends it (`sent`, or `failed` once the attempts
//! are spent) or puts it back to `pending` at the time of the next try — again only if the lease
//! is still the one it took. A worker that dies mid-send leaves the notice due when its lease
//! ends, so it is sent again: the notice carries its id, and telling a recipient twice is
//! harmless where never telling it is not.
//!
//! A rectification notice holds the corrected values: its payload is sealed under the request's
//! key, which erasing the person shreds. Erasure also cancels the person's pending notices and
//! empties every payload they had, and queues its own notices in the same transaction: it
//! deletes the send log that says who received the data, so notices queued after it could not
//! be made again if queueing failed. Erasures by the retention rules queue theirs without a
//! request.

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Result, StoreError, from_micros, to_micros};
use confiance_core::secret::Secret;
use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};

/// Why a notice pending when its person was erased is not sent.
pub const SUPERSEDED: &str = "cancelled: the person was erased before it was sent";

/// Where a notice stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeStatus {
    /// Due at `next_at`, or being tried until then.
    Pending,
    /// The recipient acknowledged it.
    Sent,
    /// Its attempts are spent: staff tell the recipient another way, or queue it again.
    Failed,
    /// Not to be sent: its person was erased first.
    Cancelled,
}

impl NoticeStatus {
    /// Every status.
    pub const ALL: [NoticeStatus; 4] = [Self::Pending, Self::Sent, Self::Failed, Self::Cancelled];

    /// The name kept and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status of a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A notice to tell a recipient of a person's data that it was rectified, erased or restricted.
/// Its URL (which may hold a token) and what it carries never print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientNotice {
    /// Task id, also sent to the recipient.
    pub id: i64,
    /// The request carried out; none for an erasure by the retention rules.
    pub request_id: Option<i64>,
    /// Whose data it is.
    pub profile_id: i64,
    /// `rectification`, `erasure` or `restriction`.
    pub notice: String,
    /// The (first) campaign that sent the data there.
    pub campaign: String,
    /// Where the notice goes (shown by host only).
    pub url: Secret<String>,
    /// The JSON sent, as kept: sealed when it holds personal data, empty once sent or cancelled.
    pub payload: Secret<String>,
    /// Where it stands.
    pub status: NoticeStatus,
    /// Tries so far.
    pub attempts: i64,
    /// When it is next due (while pending), or the end of the lease of the try under way.
    pub next_at: Timestamp,
    /// What the last try got.
    pub outcome: Option<String>,
    /// When it was queued.
    pub created_at: Timestamp,
    /// When it ended.
    pub done_at: Option<Timestamp>,
}

/// A notice to queue.
#[derive(Clone, Debug)]
pub struct NewRecipientNotice {
    /// The request carried out; none for an erasure by the retention rules.
    pub request_id: Option<i64>,
    /// Whose data it is.
    pub profile_id: i64,
    /// `rectification`, `erasure` or `restriction`.
    pub notice: String,
    /// The (first) campaign that sent the data there.
    pub campaign: String,
    /// Where it goes.
    pub url: Secret<String>,
    /// The JSON to send.
    pub payload: Secret<String>,
    /// Whether it holds personal data: then it is kept sealed under the request's key (only a
    /// rectification does, and it always comes from a request).
    pub seal: bool,
}

/// How a try ended.
#[derive(Clone, Debug)]
pub enum NoticeEnd {
    /// The recipient acknowledged it.
    Sent,
    /// Tried again at this time.
    Retry(Timestamp),
    /// Given up: its attempts are spent.
    Failed,
}

const COLUMNS: &str = "id, request_id, profile_id, notice, campaign, url, payload, status, attempts, next_at, outcome, created_at, done_at";

type Parts = (
    i64,
    Option<i64>,
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    i64,
    Option<i64>,
);

fn notice(
    (id, request_id, profile_id, notice, campaign, url, payload, status, attempts, next_at, outcome, created, done): Parts,
) -> Result<RecipientNotice> {
    let status = NoticeStatus::parse(&status)
        .ok_or_else(|| StoreError::Database(format!("notice {id} has an unknown status `{status}`")))?;
    Ok(RecipientNotice {
        id,
        request_id,
        profile_id,
        notice,
        campaign,
        url: Secret::new(url),
        payload: Secret::new(payload),
        status,
        attempts,
        next_at: from_micros(next_at),
        outcome,
        created_at: from_micros(created),
        done_at: done.map(from_micros),
    })
}

fn sqlite_parts(r: &rusqlite::Row<'_>) -> rusqlite::Result<Parts> {
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
        r.get(12)?,
    ))
}

fn pg_notice(r: &tokio_postgres::Row) -> Result<RecipientNotice> {
    notice((
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
        r.try_get(12)?,
    ))
}

/// The columns an end sets: status, next_at, done_at.
fn end_values(end: &NoticeEnd, at: i64) -> (&'static str, Option<i64>, Option<i64>) {
    match end {
        NoticeEnd::Sent => (NoticeStatus::Sent.as_str(), None, Some(at)),
        NoticeEnd::Retry(next) => (NoticeStatus::Pending.as_str(), Some(to_micros(*next)), None),
        NoticeEnd::Failed => (NoticeStatus::Failed.as_str(), None, Some(at)),
    }
}

// One text per statement for both stores: SQLite numbers `$N` parameters in the order they
// first appear, which these keep.

const QUEUE: &str = "INSERT INTO recipient_notices (request_id, profile_id, notice, campaign, url, payload, status, next_at, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)";

const DUE: &str = "WHERE status = 'pending' AND next_at <= $1 ORDER BY next_at, id LIMIT $2";

/// Takes a notice for a try: only while it is pending at the time it was seen, and that time
/// has come (a notice being tried is pending until the end of its lease).
const CLAIM: &str = "UPDATE recipient_notices SET next_at = $1, attempts = attempts + 1
     WHERE id = $2 AND status = 'pending' AND next_at = $3 AND next_at <= $4";

/// Ends a try, if the lease is still the one taken. A notice sent keeps nothing of what it
/// carried; one that failed keeps it for staff to queue it again.
const END: &str =
    "UPDATE recipient_notices SET status = $1, next_at = COALESCE($2, next_at), done_at = $3, outcome = $4,
     payload = CASE WHEN $1 = 'sent' THEN '' ELSE payload END
     WHERE id = $5 AND status = 'pending' AND next_at = $6";

const RETRY: &str = "UPDATE recipient_notices SET status = 'pending', attempts = 0, next_at = $1, done_at = NULL
     WHERE request_id = $2 AND status = 'failed'";

/// The same for one notice (those of an erasure by the retention rules have no request).
const RETRY_ONE: &str = "UPDATE recipient_notices SET status = 'pending', attempts = 0, next_at = $1, done_at = NULL
     WHERE id = $2 AND status = 'failed'";

const CANCEL_OF_PROFILE: &str = "UPDATE recipient_notices SET payload = '',
     outcome = CASE WHEN status = 'pending' THEN $1 ELSE outcome END,
     done_at = CASE WHEN status = 'pending' THEN $2 ELSE done_at END,
     status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END
     WHERE profile_id = $3";

/// The statement of a listing: one request's notices, or every notice in one status, or both.
fn list_sql(request: bool, status: bool) -> String {
    let mut clauses = Vec::new();
    if request {
        clauses.push(format!("request_id = ${}", clauses.len() + 1));
    }
    if status {
        clauses.push(format!("status = ${}", clauses.len() + 1));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    format!(
        "SELECT {COLUMNS} FROM recipient_notices {filter} ORDER BY id DESC LIMIT ${}",
        clauses.len() + 1
    )
}

/// Notices queued by an erasure carry no personal data: nothing of theirs is sealed.
fn unsealed(notices: &[NewRecipientNotice]) -> Result<()> {
    if notices.iter().any(|n| n.seal) {
        return Err(StoreError::Database(
            "an erasure's notices carry no personal data: none is sealed".into(),
        ));
    }
    Ok(())
}

/// Inside an erasure: cancels the person's pending notices, empties every payload they had, and
/// queues the erasure's own notices, so that the erasure and telling its recipients commit
/// together.
pub(crate) fn erase_sqlite(
    tx: &rusqlite::Transaction<'_>,
    profile: i64,
    notices: &[NewRecipientNotice],
    at: i64,
) -> Result<()> {
    unsealed(notices)?;
    tx.execute(CANCEL_OF_PROFILE, params![SUPERSEDED, at, profile])?;
    let mut insert = tx.prepare(QUEUE)?;
    for n in notices {
        insert.execute(params![
            n.request_id,
            n.profile_id,
            n.notice,
            n.campaign,
            n.url.expose(),
            n.payload.expose(),
            at
        ])?;
    }
    Ok(())
}

/// The same, on PostgreSQL.
pub(crate) async fn erase_pg(
    tx: &tokio_postgres::Transaction<'_>,
    profile: i64,
    notices: &[NewRecipientNotice],
    at: i64,
) -> Result<()> {
    unsealed(notices)?;
    tx.execute(CANCEL_OF_PROFILE, &[&SUPERSEDED, &at, &profile]).await?;
    for n in notices {
        tx.execute(
            QUEUE,
            &[
                &n.request_id,
                &n.profile_id,
                &n.notice,
                &n.campaign,
                n.url.expose(),
                n.payload.expose(),
                &at,
            ],
        )
        .await?;
    }
    Ok(())
}

impl SqliteStore {
    pub(crate) async fn queue_recipient_notices(
        &self,
        notices: Vec<NewRecipientNotice>,
        at: Timestamp,
    ) -> Result<Vec<RecipientNotice>> {
        self.write(move |tx| {
            let at = to_micros(at);
            let mut insert = tx.prepare(&format!("{QUEUE} RETURNING {COLUMNS}"))?;
            let mut queued = Vec::with_capacity(notices.len());
            for n in &notices {
                let parts = insert.query_row(
                    params![
                        n.request_id,
                        n.profile_id,
                        n.notice,
                        n.campaign,
                        n.url.expose(),
                        n.payload.expose(),
                        at
                    ],
                    sqlite_parts,
                )?;
                queued.push(notice(parts)?);
            }
            Ok(queued)
        })
        .await
    }

    pub(crate) async fn due_recipient_notices(&self, now: Timestamp, limit: usize) -> Result<Vec<RecipientNotice>> {
        self.read(move |c| {
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM recipient_notices {DUE}"))?;
            let rows = stmt
                .query_map(params![to_micros(now), limit as i64], sqlite_parts)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(notice).collect()
        })
        .await
    }

    pub(crate) async fn recipient_notices(
        &self,
        request: Option<i64>,
        status: Option<NoticeStatus>,
        limit: usize,
    ) -> Result<Vec<RecipientNotice>> {
        self.read(move |c| {
            let sql = list_sql(request.is_some(), status.is_some());
            let mut values: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(r) = request {
                values.push(r.into());
            }
            if let Some(s) = status {
                values.push(s.as_str().to_owned().into());
            }
            values.push((limit as i64).into());
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), sqlite_parts)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(notice).collect()
        })
        .await
    }

    pub(crate) async fn claim_recipient_notice(
        &self,
        id: i64,
        seen: Timestamp,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<bool> {
        self.write(move |tx| {
            Ok(tx.execute(
                CLAIM,
                params![to_micros(lease_until), id, to_micros(seen), to_micros(now)],
            )? == 1)
        })
        .await
    }

    pub(crate) async fn end_recipient_notice(
        &self,
        id: i64,
        lease_until: Timestamp,
        end: NoticeEnd,
        outcome: String,
        at: Timestamp,
    ) -> Result<bool> {
        self.write(move |tx| {
            let (status, next, done) = end_values(&end, to_micros(at));
            Ok(tx.execute(END, params![status, next, done, outcome, id, to_micros(lease_until)])? == 1)
        })
        .await
    }

    pub(crate) async fn retry_recipient_notices(&self, request: i64, at: Timestamp) -> Result<u64> {
        self.write(move |tx| Ok(tx.execute(RETRY, params![to_micros(at), request])? as u64))
            .await
    }

    pub(crate) async fn retry_recipient_notice(&self, id: i64, at: Timestamp) -> Result<bool> {
        self.write(move |tx| Ok(tx.execute(RETRY_ONE, params![to_micros(at), id])? == 1))
            .await
    }

    pub(crate) async fn recipient_notice(&self, id: i64) -> Result<Option<RecipientNotice>> {
        self.read(move |c| {
            let parts = c
                .query_row(
                    &format!("SELECT {COLUMNS} FROM recipient_notices WHERE id = $1"),
                    [id],
                    sqlite_parts,
                )
                .optional()?;
            parts.map(notice).transpose()
        })
        .await
    }
}

impl PgStore {
    pub(crate) async fn queue_recipient_notices(
        &self,
        notices: Vec<NewRecipientNotice>,
        at: Timestamp,
    ) -> Result<Vec<RecipientNotice>> {
        let at = to_micros(at);
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let insert = tx.prepare(&format!("{QUEUE} RETURNING {COLUMNS}")).await?;
        let mut queued = Vec::with_capacity(notices.len());
        for n in &notices {
            let row = tx
                .query_one(
                    &insert,
                    &[
                        &n.request_id,
                        &n.profile_id,
                        &n.notice,
                        &n.campaign,
                        n.url.expose(),
                        n.payload.expose(),
                        &at,
                    ],
                )
                .await?;
            queued.push(pg_notice(&row)?);
        }
        tx.commit().await?;
        Ok(queued)
    }

    pub(crate) async fn due_recipient_notices(&self, now: Timestamp, limit: usize) -> Result<Vec<RecipientNotice>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .pool()
            .get()
            .await?
            .query(
                &format!("SELECT {COLUMNS} FROM recipient_notices {DUE}"),
                &[&to_micros(now), &limit],
            )
            .await?;
        rows.iter().map(pg_notice).collect()
    }

    pub(crate) async fn recipient_notices(
        &self,
        request: Option<i64>,
        status: Option<NoticeStatus>,
        limit: usize,
    ) -> Result<Vec<RecipientNotice>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = list_sql(request.is_some(), status.is_some());
        let status = status.map(NoticeStatus::as_str);
        let mut values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        if let Some(r) = &request {
            values.push(r);
        }
        if let Some(s) = &status {
            values.push(s);
        }
        values.push(&limit);
        let rows = self.pool().get().await?.query(&sql, &values).await?;
        rows.iter().map(pg_notice).collect()
    }

    pub(crate) async fn claim_recipient_notice(
        &self,
        id: i64,
        seen: Timestamp,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<bool> {
        let changed = self
            .pool()
            .get()
            .await?
            .execute(
                CLAIM,
                &[&to_micros(lease_until), &id, &to_micros(seen), &to_micros(now)],
            )
            .await?;
        Ok(changed == 1)
    }

    pub(crate) async fn end_recipient_notice(
        &self,
        id: i64,
        lease_until: Timestamp,
        end: NoticeEnd,
        outcome: String,
        at: Timestamp,
    ) -> Result<bool> {
        let (status, next, done) = end_values(&end, to_micros(at));
        let changed = self
            .pool()
            .get()
            .await?
            .execute(END, &[&status, &next, &done, &outcome, &id, &to_micros(lease_until)])
            .await?;
        Ok(changed == 1)
    }

    pub(crate) async fn retry_recipient_notices(&self, request: i64, at: Timestamp) -> Result<u64> {
        Ok(self
            .pool()
            .get()
            .await?
            .execute(RETRY, &[&to_micros(at), &request])
            .await?)
    }

    pub(crate) async fn retry_recipient_notice(&self, id: i64, at: Timestamp) -> Result<bool> {
        Ok(self
            .pool()
            .get()
            .await?
            .execute(RETRY_ONE, &[&to_micros(at), &id])
            .await?
            == 1)
    }

    pub(crate) async fn recipient_notice(&self, id: i64) -> Result<Option<RecipientNotice>> {
        let row = self
            .pool()
            .get()
            .await?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM recipient_notices WHERE id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(pg_notice).transpose()
    }
}
