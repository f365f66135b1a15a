//! Campaigns, occurrences, sends and vouchers in both stores.
//!
//! Exactly once is the store's job here. An occurrence is inserted under a unique
//! (campaign, person, key): a second node, a restart or a rescan inserts nothing. A due step is
//! *claimed* with a lease before it is sent (`claim_due`: one statement, `FOR UPDATE SKIP LOCKED`
//! on PostgreSQL), and its outcome is recorded with the next step in one transaction
//! (`finish_step`); a node that dies between the send and the record leaves the lease to expire,
//! which is the one window where a message could go twice, as with any provider that has no
//! idempotency key (the Message-ID is derived from the occurrence and step, so receivers can
//! tell).

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Result, StoreError, from_micros, to_micros};
use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

/// A saved campaign.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CampaignRow {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The campaign (`confiance_core::activate::Campaign`) as JSON.
    pub doc: Value,
    /// Whether it runs.
    pub active: bool,
    /// How far its trigger was scanned (an instant in microseconds, or a feed position).
    pub cursor: i64,
}

/// A moment a campaign fires for one person.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NewOccurrence {
    /// Campaign.
    pub campaign_id: i64,
    /// Person.
    pub profile_id: i64,
    /// What makes it unique for them (`2027`, `happening:4`, `event:1234`).
    pub key: String,
    /// When its first step is due.
    pub due_at: Timestamp,
}

/// An occurrence claimed for sending its current step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Occurrence {
    /// Id.
    pub id: i64,
    /// Campaign.
    pub campaign_id: i64,
    /// Person.
    pub profile_id: i64,
    /// Its key.
    pub key: String,
    /// The step due.
    pub step: i32,
    /// When it was due.
    pub due_at: Timestamp,
    /// When the trigger fired.
    pub created_at: Timestamp,
}

/// What was decided for one message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SendRecord {
    /// `email`, `sms`, `postal`, `webhook`.
    pub channel: String,
    /// `sent`, `skipped`, `delayed` or `failed`.
    pub outcome: String,
    /// Why, for all but `sent`.
    pub reason: Option<String>,
    /// Details without personal data (message id, delay, provider answer).
    pub detail: Value,
    /// When.
    pub at: Timestamp,
}

/// What comes after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The occurrence is over.
    Done,
    /// This step again, later (delayed, or a failure retried with backoff).
    Retry(Timestamp),
    /// The next step, when due.
    Step(i32, Timestamp),
}

/// A recorded send, as a person's timeline or a campaign report reads it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SendRow {
    /// Campaign.
    pub campaign_id: i64,
    /// Person.
    pub profile_id: i64,
    /// Occurrence.
    pub occurrence_id: i64,
    /// Step.
    pub step: i32,
    /// The decision.
    #[serde(flatten)]
    pub record: SendRecord,
}

/// A voucher.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Voucher {
    /// The unguessable code.
    pub code: String,
    /// Campaign.
    pub campaign_id: i64,
    /// Person.
    pub profile_id: i64,
    /// Occurrence it was given with.
    pub occurrence_id: i64,
    /// Value.
    pub value: f64,
    /// Last valid instant.
    pub expires_at: Timestamp,
    /// When it was used.
    pub redeemed_at: Option<Timestamp>,
    /// The order it was used for.
    pub order_id: Option<String>,
}

/// Why a voucher cannot be redeemed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unredeemable {
    /// No such code.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Already used.
    Used,
}

fn parse_doc(s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(|e| StoreError::Database(format!("corrupt campaign: {e}")))
}

type SendParts = (i64, i64, i64, i64, String, String, Option<String>, String, i64);

fn send_row(
    (campaign_id, profile_id, occurrence_id, step, channel, outcome, reason, detail, at): SendParts,
) -> Result<SendRow> {
    Ok(SendRow {
        campaign_id,
        profile_id,
        occurrence_id,
        step: step as i32,
        record: SendRecord {
            channel,
            outcome,
            reason,
            detail: serde_json::from_str(&detail).map_err(|e| StoreError::Database(e.to_string()))?,
            at: from_micros(at),
        },
    })
}

const SEND_COLUMNS: &str = "campaign_id, profile_id, occurrence_id, step, channel, outcome, reason, detail, at";
const VOUCHER_COLUMNS: &str = "code, campaign_id, profile_id, occurrence_id, value, expires_at, redeemed_at, order_id";

fn redeem_check(v: &Voucher, at: Timestamp) -> std::result::Result<(), Unredeemable> {
    if v.redeemed_at.is_some() {
        Err(Unredeemable::Used)
    } else if at > v.expires_at {
        Err(Unredeemable::Expired)
    } else {
        Ok(())
    }
}

impl SqliteStore {
    pub(crate) async fn put_campaign(&self, id: Option<i64>, name: String, doc: Value, active: bool) -> Result<i64> {
        self.write(move |tx| {
            let taken: Option<i64> = tx
                .query_row("SELECT id FROM campaigns WHERE name = ?1", [&name], |r| r.get(0))
                .optional()?;
            if taken.is_some_and(|t| Some(t) != id) {
                return Err(StoreError::Conflict(format!("a campaign named {name:?}")));
            }
            match id {
                Some(id) => {
                    tx.execute(
                        "UPDATE campaigns SET name = ?1, doc = ?2, active = ?3 WHERE id = ?4",
                        params![name, doc.to_string(), active, id],
                    )?;
                    Ok(id)
                }
                None => {
                    tx.execute(
                        "INSERT INTO campaigns (name, doc, active) VALUES (?1, ?2, ?3)",
                        params![name, doc.to_string(), active],
                    )?;
                    Ok(tx.last_insert_rowid())
                }
            }
        })
        .await
    }

    pub(crate) async fn campaigns(&self) -> Result<Vec<CampaignRow>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT id, name, doc, active, cursor FROM campaigns ORDER BY id")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, bool>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, name, doc, active, cursor)| {
                    Ok(CampaignRow {
                        id,
                        name,
                        doc: parse_doc(&doc)?,
                        active,
                        cursor,
                    })
                })
                .collect()
        })
        .await
    }

    pub(crate) async fn advance_campaign(&self, id: i64, from: i64, to: i64) -> Result<bool> {
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE campaigns SET cursor = ?3 WHERE id = ?1 AND cursor = ?2",
                params![id, from, to],
            )? == 1)
        })
        .await
    }

    pub(crate) async fn add_occurrences(&self, new: Vec<NewOccurrence>, at: Timestamp) -> Result<usize> {
        self.write(move |tx| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO occurrences (campaign_id, profile_id, key, due_at, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5) ON CONFLICT (campaign_id, profile_id, key) DO NOTHING",
            )?;
            let mut n = 0;
            for o in &new {
                n += insert.execute(params![
                    o.campaign_id,
                    o.profile_id,
                    o.key,
                    to_micros(o.due_at),
                    to_micros(at)
                ])?;
            }
            Ok(n)
        })
        .await
    }

    pub(crate) async fn claim_due(&self, now: Timestamp, lease: Timestamp, limit: usize) -> Result<Vec<Occurrence>> {
        // Most ticks find nothing due: ask a reader first and spare the writer a commit.
        let any: bool = self
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT EXISTS(SELECT 1 FROM occurrences WHERE status = 'pending' AND due_at <= ?1
                     AND (claimed_until IS NULL OR claimed_until < ?1))",
                    [to_micros(now)],
                    |r| r.get(0),
                )?)
            })
            .await?;
        if !any {
            return Ok(Vec::new());
        }
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE occurrences SET claimed_until = ?2
                 WHERE id IN (SELECT id FROM occurrences
                              WHERE status = 'pending' AND due_at <= ?1 AND (claimed_until IS NULL OR claimed_until < ?1)
                              ORDER BY due_at, id LIMIT ?3)
                 RETURNING id, campaign_id, profile_id, key, step, due_at, created_at",
            )?;
            let rows = stmt.query_map(params![to_micros(now), to_micros(lease), limit as i64], |r| {
                Ok(Occurrence {
                    id: r.get(0)?,
                    campaign_id: r.get(1)?,
                    profile_id: r.get(2)?,
                    key: r.get(3)?,
                    step: r.get(4)?,
                    due_at: from_micros(r.get(5)?),
                    created_at: from_micros(r.get(6)?),
                })
            })?;
            let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            out.sort_by_key(|o| (o.due_at, o.id));
            Ok(out)
        })
        .await
    }

    pub(crate) async fn finish_step(&self, o: Occurrence, record: SendRecord, next: Next) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                &format!("INSERT INTO sends ({SEND_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    o.campaign_id,
                    o.profile_id,
                    o.id,
                    o.step,
                    record.channel,
                    record.outcome,
                    record.reason,
                    record.detail.to_string(),
                    to_micros(record.at)
                ],
            )?;
            match next {
                Next::Done => tx.execute(
                    "UPDATE occurrences SET status = 'done', claimed_until = NULL WHERE id = ?1",
                    [o.id],
                )?,
                Next::Retry(due) => tx.execute(
                    "UPDATE occurrences SET due_at = ?2, claimed_until = NULL WHERE id = ?1",
                    params![o.id, to_micros(due)],
                )?,
                Next::Step(step, due) => tx.execute(
                    "UPDATE occurrences SET step = ?2, due_at = ?3, claimed_until = NULL WHERE id = ?1",
                    params![o.id, step, to_micros(due)],
                )?,
            };
            Ok(())
        })
        .await
    }

    pub(crate) async fn pending_occurrences(&self, campaign: i64) -> Result<i64> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM occurrences WHERE campaign_id = ?1 AND status = 'pending'",
                [campaign],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub(crate) async fn log_event(&self, campaign: i64, profile: i64, record: SendRecord) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                &format!("INSERT INTO sends ({SEND_COLUMNS}) VALUES (?1, ?2, 0, -1, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    campaign,
                    profile,
                    record.channel,
                    record.outcome,
                    record.reason,
                    record.detail.to_string(),
                    to_micros(record.at)
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn sends(
        &self,
        campaign: Option<i64>,
        profile: Option<i64>,
        limit: usize,
    ) -> Result<Vec<SendRow>> {
        self.read(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {SEND_COLUMNS} FROM sends WHERE (?1 IS NULL OR campaign_id = ?1) AND (?2 IS NULL OR profile_id = ?2)
                 ORDER BY id LIMIT ?3"
            ))?;
            let rows = stmt
                .query_map(params![campaign, profile, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
                })?
                .collect::<rusqlite::Result<Vec<SendParts>>>()?;
            rows.into_iter().map(send_row).collect()
        })
        .await
    }

    pub(crate) async fn recent_sends(&self, profile: i64, channel: String, since: Timestamp) -> Result<Vec<Timestamp>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT at FROM sends WHERE profile_id = ?1 AND channel = ?2 AND outcome = 'sent' AND at > ?3 ORDER BY at",
            )?;
            Ok(stmt
                .query_map(params![profile, channel, to_micros(since)], |r| r.get::<_, i64>(0))?
                .map(|r| r.map(from_micros))
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub(crate) async fn campaign_outcomes(&self, campaign: i64) -> Result<Vec<(String, Option<String>, i64)>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT outcome, reason, COUNT(*) FROM sends WHERE campaign_id = ?1 GROUP BY outcome, reason ORDER BY 1, 2",
            )?;
            Ok(stmt
                .query_map([campaign], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub(crate) async fn create_voucher(&self, v: Voucher) -> Result<Voucher> {
        self.write(move |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO vouchers ({VOUCHER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL)
                     ON CONFLICT (occurrence_id) DO NOTHING"
                ),
                params![
                    v.code,
                    v.campaign_id,
                    v.profile_id,
                    v.occurrence_id,
                    v.value,
                    to_micros(v.expires_at)
                ],
            )?;
            let kept = tx.query_row(
                &format!("SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE occurrence_id = ?1"),
                [v.occurrence_id],
                voucher_row,
            )?;
            Ok(kept)
        })
        .await
    }

    pub(crate) async fn voucher_of(&self, occurrence: i64) -> Result<Option<Voucher>> {
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE occurrence_id = ?1"),
                [occurrence],
                voucher_row,
            )
            .optional()?)
        })
        .await
    }

    pub(crate) async fn redeem(
        &self,
        code: String,
        order: Option<String>,
        at: Timestamp,
    ) -> Result<std::result::Result<Voucher, Unredeemable>> {
        self.write(move |tx| {
            let found = tx
                .query_row(
                    &format!("SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE code = ?1"),
                    [&code],
                    voucher_row,
                )
                .optional()?;
            let Some(mut v) = found else {
                return Ok(Err(Unredeemable::Unknown));
            };
            if let Err(e) = redeem_check(&v, at) {
                return Ok(Err(e));
            }
            tx.execute(
                "UPDATE vouchers SET redeemed_at = ?2, order_id = ?3 WHERE code = ?1 AND redeemed_at IS NULL",
                params![code, to_micros(at), order],
            )?;
            v.redeemed_at = Some(at);
            v.order_id = order;
            Ok(Ok(v))
        })
        .await
    }
}

fn voucher_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Voucher> {
    Ok(Voucher {
        code: r.get(0)?,
        campaign_id: r.get(1)?,
        profile_id: r.get(2)?,
        occurrence_id: r.get(3)?,
        value: r.get(4)?,
        expires_at: from_micros(r.get(5)?),
        redeemed_at: r.get::<_, Option<i64>>(6)?.map(from_micros),
        order_id: r.get(7)?,
    })
}

fn pg_voucher(r: &tokio_postgres::Row) -> Result<Voucher> {
    Ok(Voucher {
        code: r.try_get(0)?,
        campaign_id: r.try_get(1)?,
        profile_id: r.try_get(2)?,
        occurrence_id: r.try_get(3)?,
        value: r.try_get(4)?,
        expires_at: from_micros(r.try_get(5)?),
        redeemed_at: r.try_get::<_, Option<i64>>(6)?.map(from_micros),
        order_id: r.try_get(7)?,
    })
}

impl PgStore {
    pub(crate) async fn put_campaign(&self, id: Option<i64>, name: String, doc: Value, active: bool) -> Result<i64> {
        let client = self.pool().get().await?;
        let result = match id {
            Some(id) => client
                .execute(
                    "UPDATE campaigns SET name = $1, doc = $2, active = $3 WHERE id = $4",
                    &[&name, &doc.to_string(), &active, &id],
                )
                .await
                .map(|_| id),
            None => client
                .query_one(
                    "INSERT INTO campaigns (name, doc, active) VALUES ($1, $2, $3) RETURNING id",
                    &[&name, &doc.to_string(), &active],
                )
                .await
                .and_then(|r| r.try_get(0)),
        };
        match result {
            Ok(id) => Ok(id),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Err(StoreError::Conflict(format!("a campaign named {name:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn campaigns(&self) -> Result<Vec<CampaignRow>> {
        let client = self.pool().get().await?;
        let rows = client
            .query("SELECT id, name, doc, active, cursor FROM campaigns ORDER BY id", &[])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CampaignRow {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    doc: parse_doc(r.try_get(2)?)?,
                    active: r.try_get(3)?,
                    cursor: r.try_get(4)?,
                })
            })
            .collect()
    }

    pub(crate) async fn advance_campaign(&self, id: i64, from: i64, to: i64) -> Result<bool> {
        let client = self.pool().get().await?;
        Ok(client
            .execute(
                "UPDATE campaigns SET cursor = $3 WHERE id = $1 AND cursor = $2",
                &[&id, &from, &to],
            )
            .await?
            == 1)
    }

    pub(crate) async fn add_occurrences(&self, new: Vec<NewOccurrence>, at: Timestamp) -> Result<usize> {
        if new.is_empty() {
            return Ok(0);
        }
        let client = self.pool().get().await?;
        let campaigns: Vec<i64> = new.iter().map(|o| o.campaign_id).collect();
        let profiles: Vec<i64> = new.iter().map(|o| o.profile_id).collect();
        let keys: Vec<&str> = new.iter().map(|o| o.key.as_str()).collect();
        let dues: Vec<i64> = new.iter().map(|o| to_micros(o.due_at)).collect();
        let n = client
            .execute(
                "INSERT INTO occurrences (campaign_id, profile_id, key, due_at, status, created_at)
                 SELECT c, p, k, d, 'pending', $5 FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[]) AS t(c, p, k, d)
                 ON CONFLICT (campaign_id, profile_id, key) DO NOTHING",
                &[&campaigns, &profiles, &keys, &dues, &to_micros(at)],
            )
            .await?;
        Ok(n as usize)
    }

    pub(crate) async fn claim_due(&self, now: Timestamp, lease: Timestamp, limit: usize) -> Result<Vec<Occurrence>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "UPDATE occurrences SET claimed_until = $2
                 WHERE id IN (SELECT id FROM occurrences
                              WHERE status = 'pending' AND due_at <= $1 AND (claimed_until IS NULL OR claimed_until < $1)
                              ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING id, campaign_id, profile_id, key, step, due_at, created_at",
                &[&to_micros(now), &to_micros(lease), &(limit as i64)],
            )
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(Occurrence {
                    id: r.try_get(0)?,
                    campaign_id: r.try_get(1)?,
                    profile_id: r.try_get(2)?,
                    key: r.try_get(3)?,
                    step: r.try_get(4)?,
                    due_at: from_micros(r.try_get(5)?),
                    created_at: from_micros(r.try_get(6)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|o| (o.due_at, o.id));
        Ok(out)
    }

    pub(crate) async fn finish_step(&self, o: Occurrence, record: SendRecord, next: Next) -> Result<()> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            &format!("INSERT INTO sends ({SEND_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
            &[
                &o.campaign_id,
                &o.profile_id,
                &o.id,
                &o.step,
                &record.channel,
                &record.outcome,
                &record.reason,
                &record.detail.to_string(),
                &to_micros(record.at),
            ],
        )
        .await?;
        match next {
            Next::Done => {
                tx.execute(
                    "UPDATE occurrences SET status = 'done', claimed_until = NULL WHERE id = $1",
                    &[&o.id],
                )
                .await?
            }
            Next::Retry(due) => {
                tx.execute(
                    "UPDATE occurrences SET due_at = $2, claimed_until = NULL WHERE id = $1",
                    &[&o.id, &to_micros(due)],
                )
                .await?
            }
            Next::Step(step, due) => {
                tx.execute(
                    "UPDATE occurrences SET step = $2, due_at = $3, claimed_until = NULL WHERE id = $1",
                    &[&o.id, &step, &to_micros(due)],
                )
                .await?
            }
        };
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn pending_occurrences(&self, campaign: i64) -> Result<i64> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "SELECT COUNT(*) FROM occurrences WHERE campaign_id = $1 AND status = 'pending'",
                &[&campaign],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    pub(crate) async fn log_event(&self, campaign: i64, profile: i64, record: SendRecord) -> Result<()> {
        let client = self.pool().get().await?;
        client
            .execute(
                &format!("INSERT INTO sends ({SEND_COLUMNS}) VALUES ($1, $2, 0, -1, $3, $4, $5, $6, $7)"),
                &[
                    &campaign,
                    &profile,
                    &record.channel,
                    &record.outcome,
                    &record.reason,
                    &record.detail.to_string(),
                    &to_micros(record.at),
                ],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn sends(
        &self,
        campaign: Option<i64>,
        profile: Option<i64>,
        limit: usize,
    ) -> Result<Vec<SendRow>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SEND_COLUMNS} FROM sends WHERE ($1::bigint IS NULL OR campaign_id = $1)
                     AND ($2::bigint IS NULL OR profile_id = $2) ORDER BY id LIMIT $3"
                ),
                &[&campaign, &profile, &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                send_row((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    i64::from(r.try_get::<_, i32>(3)?),
                    r.try_get(4)?,
                    r.try_get(5)?,
                    r.try_get(6)?,
                    r.try_get(7)?,
                    r.try_get(8)?,
                ))
            })
            .collect()
    }

    pub(crate) async fn recent_sends(&self, profile: i64, channel: String, since: Timestamp) -> Result<Vec<Timestamp>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT at FROM sends WHERE profile_id = $1 AND channel = $2 AND outcome = 'sent' AND at > $3 ORDER BY at",
                &[&profile, &channel, &to_micros(since)],
            )
            .await?;
        rows.iter().map(|r| Ok(from_micros(r.try_get(0)?))).collect()
    }

    pub(crate) async fn campaign_outcomes(&self, campaign: i64) -> Result<Vec<(String, Option<String>, i64)>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT outcome, reason, COUNT(*) FROM sends WHERE campaign_id = $1 GROUP BY outcome, reason ORDER BY 1, 2",
                &[&campaign],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    pub(crate) async fn create_voucher(&self, v: Voucher) -> Result<Voucher> {
        let client = self.pool().get().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO vouchers ({VOUCHER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL)
                     ON CONFLICT (occurrence_id) DO NOTHING"
                ),
                &[
                    &v.code,
                    &v.campaign_id,
                    &v.profile_id,
                    &v.occurrence_id,
                    &v.value,
                    &to_micros(v.expires_at),
                ],
            )
            .await?;
        let row = client
            .query_one(
                &format!("SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE occurrence_id = $1"),
                &[&v.occurrence_id],
            )
            .await?;
        pg_voucher(&row)
    }

    pub(crate) async fn voucher_of(&self, occurrence: i64) -> Result<Option<Voucher>> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE occurrence_id = $1"),
                &[&occurrence],
            )
            .await?;
        row.as_ref().map(pg_voucher).transpose()
    }

    pub(crate) async fn redeem(
        &self,
        code: String,
        order: Option<String>,
        at: Timestamp,
    ) -> Result<std::result::Result<Voucher, Unredeemable>> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!("SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE code = $1 FOR UPDATE"),
                &[&code],
            )
            .await?;
        let Some(mut v) = row.as_ref().map(pg_voucher).transpose()? else {
            return Ok(Err(Unredeemable::Unknown));
        };
        if let Err(e) = redeem_check(&v, at) {
            return Ok(Err(e));
        }
        tx.execute(
            "UPDATE vouchers SET redeemed_at = $2, order_id = $3 WHERE code = $1",
            &[&code, &to_micros(at), &order],
        )
        .await?;
        tx.commit().await?;
        v.redeemed_at = Some(at);
        v.order_id = order;
        Ok(Ok(v))
    }
}
