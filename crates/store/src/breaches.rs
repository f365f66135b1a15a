//! The breach register in both stores, and whom a breach touched.
//!
//! # Design
//!
//! A breach is one JSON document (its rules live in `confiance_core::privacy::breach`); every
//! change is audited in the same transaction. The people told of it are rows of their own, one
//! per person and channel, so that the register proves who was told, when and how.
//!
//! Whom a breach touched is one SQL statement per backend over the event log, not a scan in
//! Rust, and it reads no body: every event keeps, beside it, which of the person's traits it
//! carries (`traits.<name>` of an identify, `context.traits.<name>` of any message, with a value
//! that is not null: the places golden records read them from). A partial index over the events
//! that carry traits holds the source, the reception time, those traits and the sender, all the
//! statement reads: the events of the breach's sources received in its window that carry one of
//! its traits. They are grouped by sender first (one identity lookup per sender, not per event),
//! then by the profile each sender's identifiers belong to. The server answers from its in-memory
//! exposure index for the events its follower has read and asks the store only for the events
//! after that position ([`TouchedQuery::after`]): a rowid range, read without the traits index.

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Result, StoreError, to_micros};
use confiance_core::privacy::audit::AuditEvent;
use confiance_core::privacy::breach::Breach;
use confiance_core::privacy::exposure::Carry;
use jiff::Timestamp;
use rusqlite::{OptionalExtension, params_from_iter};
use std::time::SystemTime;

/// Whom a breach touched: every profile with how many of its records are in scope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// `(profile id, records)`, by profile id.
    pub profiles: Vec<(i64, i64)>,
    /// Records in scope whose sender belongs to no profile yet.
    pub unresolved_records: i64,
}

impl Touched {
    /// Records in scope, attributed or not.
    pub fn records(&self) -> i64 {
        self.profiles.iter().map(|p| p.1).sum::<i64>() + self.unresolved_records
    }

    /// Adds what an in-memory index counted (`(profile id, records)` by profile id) to what the
    /// store counted after the index's position.
    pub fn with_indexed(mut self, indexed: Vec<(i64, i64)>) -> Touched {
        if self.profiles.is_empty() {
            self.profiles = indexed;
            return self;
        }
        let mut all = Vec::with_capacity(indexed.len() + self.profiles.len());
        let mut tail = std::mem::take(&mut self.profiles).into_iter().peekable();
        for (p, n) in indexed {
            while let Some(t) = tail.next_if(|t| t.0 < p) {
                all.push(t);
            }
            let more = tail.next_if(|t| t.0 == p).map_or(0, |t| t.1);
            all.push((p, n + more));
        }
        all.extend(tail);
        self.profiles = all;
        self
    }

    fn from_rows(rows: impl IntoIterator<Item = (Option<i64>, i64)>) -> Self {
        let mut out = Touched::default();
        for (profile, n) in rows {
            match profile {
                Some(p) => out.profiles.push((p, n)),
                None => out.unresolved_records += n,
            }
        }
        out.profiles.sort_unstable();
        out
    }
}

/// What a breach's scope is, as the store needs it: checked trait names and source ids.
#[derive(Clone, Debug)]
pub struct TouchedQuery {
    /// Trait names (already checked against the catalog).
    pub traits: Vec<String>,
    /// Source ids.
    pub sources: Vec<i64>,
    /// Start of the reception window (inclusive).
    pub from: Option<Timestamp>,
    /// End of the reception window (exclusive).
    pub to: Timestamp,
    /// Only events after this position of the log (what an in-memory index has not read yet).
    pub after: Option<i64>,
}

/// An event of a profile that carries traits, read from the names kept beside it (no body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarriedEvent {
    /// Its user id, which decides whose it is when another profile holds it.
    pub user_id: Option<String>,
    /// Position, source, reception time and trait names.
    pub carry: Carry,
}

/// One person told of a breach through one channel.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BreachNotice {
    /// The profile.
    pub profile_id: i64,
    /// `email` or `sms`.
    pub channel: String,
    /// `sent` or `failed`.
    pub status: String,
    /// Why it failed, when it did.
    pub detail: Option<String>,
    /// When.
    pub at: Timestamp,
}

fn doc(b: &Breach) -> Result<String> {
    serde_json::to_string(b).map_err(|e| StoreError::Database(e.to_string()))
}

fn parse(doc: &str) -> Result<Breach> {
    serde_json::from_str(doc).map_err(|e| StoreError::Database(format!("corrupt breach: {e}")))
}

fn audit_of(b: &Breach, action: &str, actor: &str) -> AuditEvent {
    AuditEvent::new(
        actor.to_owned(),
        action,
        Some(format!("breach:{}", b.id)),
        serde_json::json!({
            "phase": b.phase,
            "subjects": b.affected.subjects,
            "records": b.affected.records,
            "notified": b.authority_notified_at.map(|t| t.to_string()),
        }),
    )
}

impl SqliteStore {
    pub(crate) async fn insert_breach(&self, mut b: Breach) -> Result<Breach> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO breaches (aware_at, doc) VALUES (?1, '{}')",
                [to_micros(b.aware_at)],
            )?;
            b.id = tx.last_insert_rowid();
            tx.execute(
                "UPDATE breaches SET doc = ?1 WHERE id = ?2",
                rusqlite::params![doc(&b)?, b.id],
            )?;
            crate::sqlite::append_audit(tx, b.declared_at, vec![audit_of(&b, "breach.declared", &b.declared_by)])?;
            Ok(b)
        })
        .await
    }

    pub(crate) async fn update_breach(&self, b: Breach, action: String, actor: String, at: Timestamp) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE breaches SET aware_at = ?1, doc = ?2 WHERE id = ?3",
                rusqlite::params![to_micros(b.aware_at), doc(&b)?, b.id],
            )?;
            crate::sqlite::append_audit(tx, at, vec![audit_of(&b, &action, &actor)])
        })
        .await
    }

    pub(crate) async fn breach(&self, id: i64) -> Result<Option<Breach>> {
        self.read(move |c| {
            let d: Option<String> = c
                .query_row("SELECT doc FROM breaches WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            d.as_deref().map(parse).transpose()
        })
        .await
    }

    pub(crate) async fn breaches(&self) -> Result<Vec<Breach>> {
        self.read(move |c| {
            let mut stmt = c.prepare("SELECT doc FROM breaches ORDER BY aware_at DESC, id DESC")?;
            let docs = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            docs.iter().map(|d| parse(d)).collect()
        })
        .await
    }

    pub(crate) async fn breach_touched(&self, q: TouchedQuery) -> Result<Touched> {
        self.read(move |c| {
            let mut args: Vec<rusqlite::types::Value> = vec![
                serde_json::to_string(&q.sources)
                    .map_err(|e| StoreError::Database(e.to_string()))?
                    .into(),
                to_micros(q.to).into(),
            ];
            let mut window = "received_at < ?2".to_owned();
            if let Some(from) = q.from {
                args.push(to_micros(from).into());
                window.push_str(&format!(" AND received_at >= ?{}", args.len()));
            }
            // After a position, the rowid range is the whole read: the events an index has not
            // read yet are few, and the traits index would scan every one it has.
            let mut from_events = "events";
            if let Some(after) = q.after {
                args.push(after.into());
                window.push_str(&format!(" AND seq > ?{}", args.len()));
                from_events = "events NOT INDEXED";
            }
            let mut carried = Vec::new();
            for name in &q.traits {
                args.push(format!(",{name},").into());
                carried.push(format!("instr(traits, ?{}) > 0", args.len()));
            }
            let sql = format!(
                "WITH hit AS (
                     SELECT user_id, anonymous_id, count(*) AS n FROM {from_events}
                     WHERE source_id IN (SELECT value FROM json_each(?1)) AND {window} AND traits IS NOT NULL AND ({carried})
                     GROUP BY user_id, anonymous_id)
                 SELECT coalesce(u.profile_id, a.profile_id) AS profile, sum(n) FROM hit
                 LEFT JOIN identities u ON u.identifier = 'user_id:' || hit.user_id
                 LEFT JOIN identities a ON a.identifier = 'anonymous_id:' || hit.anonymous_id
                 GROUP BY profile",
                carried = carried.join(" OR ")
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt
                .query_map(params_from_iter(args), |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Touched::from_rows(rows))
        })
        .await
    }

    pub(crate) async fn profile_carries(&self, profile: i64, after: i64) -> Result<Vec<CarriedEvent>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT seq, source_id, received_at, user_id, traits FROM events
                 WHERE seq IN ({}) AND traits IS NOT NULL ORDER BY seq",
                crate::sqlite_log::profile_seqs()
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map([profile, after], |r| {
                    Ok(CarriedEvent {
                        user_id: r.get(3)?,
                        carry: Carry {
                            seq: r.get(0)?,
                            source: r.get(1)?,
                            received_at: crate::from_micros(r.get(2)?),
                            traits: crate::purposes_from_column(&r.get::<_, String>(4)?),
                        },
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub(crate) async fn record_breach_notice(&self, breach: i64, n: BreachNotice) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO breach_notices (breach_id, profile_id, channel, status, detail, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (breach_id, profile_id, channel) DO UPDATE SET status = excluded.status, detail = excluded.detail, at = excluded.at",
                rusqlite::params![breach, n.profile_id, n.channel, n.status, n.detail, to_micros(n.at)],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn breach_notices(&self, breach: i64) -> Result<Vec<BreachNotice>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT profile_id, channel, status, detail, at FROM breach_notices WHERE breach_id = ?1 ORDER BY profile_id, channel",
            )?;
            let rows = stmt
                .query_map([breach], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, i64>(4)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(profile_id, channel, status, detail, at)| {
                    Ok(BreachNotice {
                        profile_id,
                        channel,
                        status,
                        detail,
                        at: Timestamp::from_microsecond(at).map_err(|e| StoreError::Database(e.to_string()))?,
                    })
                })
                .collect()
        })
        .await
    }
}

/// An instant as a `TIMESTAMPTZ` parameter, to the microsecond as the SQLite store keeps it.
fn pg_time(t: Timestamp) -> SystemTime {
    SystemTime::from(Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t))
}

impl PgStore {
    pub(crate) async fn insert_breach(&self, mut b: Breach) -> Result<Breach> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                "INSERT INTO breaches (aware_at, doc) VALUES ($1, '{}') RETURNING id",
                &[&to_micros(b.aware_at)],
            )
            .await?;
        b.id = row.try_get(0)?;
        tx.execute("UPDATE breaches SET doc = $1 WHERE id = $2", &[&doc(&b)?, &b.id])
            .await?;
        crate::postgres::append_audit(
            &tx,
            b.declared_at,
            vec![audit_of(&b, "breach.declared", &b.declared_by)],
        )
        .await?;
        tx.commit().await?;
        Ok(b)
    }

    pub(crate) async fn update_breach(&self, b: Breach, action: String, actor: String, at: Timestamp) -> Result<()> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "UPDATE breaches SET aware_at = $1, doc = $2 WHERE id = $3",
            &[&to_micros(b.aware_at), &doc(&b)?, &b.id],
        )
        .await?;
        crate::postgres::append_audit(&tx, at, vec![audit_of(&b, &action, &actor)]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn breach(&self, id: i64) -> Result<Option<Breach>> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt("SELECT doc FROM breaches WHERE id = $1", &[&id])
            .await?;
        row.map(|r| {
            r.try_get::<_, String>(0)
                .map_err(StoreError::from)
                .and_then(|d| parse(&d))
        })
        .transpose()
    }

    pub(crate) async fn breaches(&self) -> Result<Vec<Breach>> {
        let client = self.pool().get().await?;
        let rows = client
            .query("SELECT doc FROM breaches ORDER BY aware_at DESC, id DESC", &[])
            .await?;
        rows.iter().map(|r| parse(&r.try_get::<_, String>(0)?)).collect()
    }

    pub(crate) async fn breach_touched(&self, q: TouchedQuery) -> Result<Touched> {
        let to = pg_time(q.to);
        let from = q.from.map(pg_time);
        let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&q.sources, &to];
        let mut window = "received_at < $2".to_owned();
        if let Some(from) = &from {
            args.push(from);
            window.push_str(&format!(" AND received_at >= ${}", args.len()));
        }
        if let Some(after) = &q.after {
            args.push(after);
            window.push_str(&format!(" AND seq > ${}", args.len()));
        }
        let needles: Vec<String> = q.traits.iter().map(|name| format!(",{name},")).collect();
        let mut carried = Vec::new();
        for needle in &needles {
            args.push(needle);
            carried.push(format!("strpos(traits, ${}) > 0", args.len()));
        }
        let sql = format!(
            "WITH hit AS (
                 SELECT user_id, anonymous_id, count(*) AS n FROM events
                 WHERE source_id = ANY($1::bigint[]) AND {window} AND traits IS NOT NULL AND ({carried})
                 GROUP BY user_id, anonymous_id)
             SELECT coalesce(u.profile_id, a.profile_id) AS profile, sum(n)::bigint FROM hit
             LEFT JOIN identities u ON u.identifier = 'user_id:' || hit.user_id
             LEFT JOIN identities a ON a.identifier = 'anonymous_id:' || hit.anonymous_id
             GROUP BY profile",
            carried = carried.join(" OR ")
        );
        let client = self.pool().get().await?;
        let rows = client.query(&sql, &args).await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get::<_, Option<i64>>(0)?, r.try_get::<_, i64>(1)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Touched::from_rows(rows))
    }

    pub(crate) async fn profile_carries(&self, profile: i64, after: i64) -> Result<Vec<CarriedEvent>> {
        // The events of the profile's identifiers after `$2` that carry traits, in log order.
        let sql = "SELECT seq, source_id, received_at, user_id, traits FROM events
             WHERE (user_id IN (SELECT substr(identifier, 9) FROM identities WHERE profile_id = $1 AND kind = 'user_id')
                 OR anonymous_id IN (SELECT substr(identifier, 14) FROM identities WHERE profile_id = $1 AND kind = 'anonymous_id'))
               AND seq > $2 AND traits IS NOT NULL
             ORDER BY seq";
        let client = self.pool().get().await?;
        let rows = client.query(sql, &[&profile, &after]).await?;
        rows.iter()
            .map(|r| {
                Ok(CarriedEvent {
                    user_id: r.try_get(3)?,
                    carry: Carry {
                        seq: r.try_get(0)?,
                        source: r.try_get(1)?,
                        received_at: Timestamp::try_from(r.try_get::<_, SystemTime>(2)?)
                            .map_err(|e| StoreError::Database(e.to_string()))?,
                        traits: crate::purposes_from_column(r.try_get(4)?),
                    },
                })
            })
            .collect()
    }

    pub(crate) async fn record_breach_notice(&self, breach: i64, n: BreachNotice) -> Result<()> {
        let client = self.pool().get().await?;
        client
            .execute(
                "INSERT INTO breach_notices (breach_id, profile_id, channel, status, detail, at) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (breach_id, profile_id, channel) DO UPDATE SET status = EXCLUDED.status, detail = EXCLUDED.detail, at = EXCLUDED.at",
                &[&breach, &n.profile_id, &n.channel, &n.status, &n.detail, &to_micros(n.at)],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn breach_notices(&self, breach: i64) -> Result<Vec<BreachNotice>> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT profile_id, channel, status, detail, at FROM breach_notices WHERE breach_id = $1 ORDER BY profile_id, channel",
                &[&breach],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(BreachNotice {
                    profile_id: r.try_get(0)?,
                    channel: r.try_get(1)?,
                    status: r.try_get(2)?,
                    detail: r.try_get(3)?,
                    at: Timestamp::from_microsecond(r.try_get(4)?).map_err(|e| StoreError::Database(e.to_string()))?,
                })
            })
            .collect()
    }
}

/// The breach register, on whichever backend the store is.
impl crate::Store {
    /// Enters a breach in the register (audited); returns it with its id.
    pub async fn insert_breach(&self, breach: Breach) -> Result<Breach> {
        match self {
            crate::Store::Sqlite(s) => s.insert_breach(breach).await,
            crate::Store::Postgres(s) => s.insert_breach(breach).await,
        }
    }

    /// Saves a breach after a change, auditing it as `action` by `actor` at `at`.
    pub async fn update_breach(&self, breach: &Breach, action: &str, actor: &str, at: Timestamp) -> Result<()> {
        let (b, action, actor) = (breach.clone(), action.to_owned(), actor.to_owned());
        match self {
            crate::Store::Sqlite(s) => s.update_breach(b, action, actor, at).await,
            crate::Store::Postgres(s) => s.update_breach(b, action, actor, at).await,
        }
    }

    /// One breach.
    pub async fn breach(&self, id: i64) -> Result<Option<Breach>> {
        match self {
            crate::Store::Sqlite(s) => s.breach(id).await,
            crate::Store::Postgres(s) => s.breach(id).await,
        }
    }

    /// The whole register, latest awareness first.
    pub async fn breaches(&self) -> Result<Vec<Breach>> {
        match self {
            crate::Store::Sqlite(s) => s.breaches().await,
            crate::Store::Postgres(s) => s.breaches().await,
        }
    }

    /// Whom data of `query`'s traits, from its sources, received in its window, belongs to.
    pub async fn breach_touched(&self, query: &TouchedQuery) -> Result<Touched> {
        match self {
            crate::Store::Sqlite(s) => s.breach_touched(query.clone()).await,
            crate::Store::Postgres(s) => s.breach_touched(query.clone()).await,
        }
    }

    /// The events of `profile`'s identifiers after `after` that carry traits, from the names kept
    /// beside them (no body is read or opened), in log order.
    pub async fn profile_carries(&self, profile: i64, after: i64) -> Result<Vec<CarriedEvent>> {
        match self {
            crate::Store::Sqlite(s) => s.profile_carries(profile, after).await,
            crate::Store::Postgres(s) => s.profile_carries(profile, after).await,
        }
    }

    /// Records that a person was told (or could not be) through a channel; a retry replaces
    /// the earlier outcome.
    pub async fn record_breach_notice(&self, breach: i64, notice: &BreachNotice) -> Result<()> {
        match self {
            crate::Store::Sqlite(s) => s.record_breach_notice(breach, notice.clone()).await,
            crate::Store::Postgres(s) => s.record_breach_notice(breach, notice.clone()).await,
        }
    }

    /// The people told of a breach, by profile and channel.
    pub async fn breach_notices(&self, breach: i64) -> Result<Vec<BreachNotice>> {
        match self {
            crate::Store::Sqlite(s) => s.breach_notices(breach).await,
            crate::Store::Postgres(s) => s.breach_notices(breach).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Touched;

    #[test]
    fn what_the_index_counted_and_what_the_store_counted_after_it_add_up_per_profile() {
        let tail = Touched {
            profiles: vec![(1, 1), (4, 2), (9, 1)],
            unresolved_records: 3,
        };
        let all = tail.with_indexed(vec![(2, 5), (4, 1), (7, 1)]);
        assert_eq!(all.profiles, [(1, 1), (2, 5), (4, 3), (7, 1), (9, 1)]);
        assert_eq!(all.records(), 14);
        let none = Touched::default().with_indexed(vec![(3, 1)]);
        assert_eq!(none.profiles, [(3, 1)]);
    }
}
