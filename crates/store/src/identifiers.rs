//! Identifiers at rest: the one-time rewrite of stores written before emails, phones and other
//! identifiers were kept as keyed hashes ([`Vault::at_rest`]).
//!
//! Migration 14 marks the work pending in `settings`; the store does it when it opens, once its
//! vault is open (a hash needs the master key): every identifier of the tables below that is
//! not kept as it is gets its value sealed into `identifier_values` and its rows rewritten, in
//! one transaction with the mark, so a crash leaves the work to do again, never half done. The
//! request records and export files still plain are sealed in the same transaction. On
//! PostgreSQL the settings row is locked for the transaction: one node does it, the others find
//! it done.

use crate::Result;
use crate::vault::Vault;
use std::sync::Arc;

/// Every column that holds an identifier key (`kind:value`).
const COLUMNS: [(&str, &str); 8] = [
    ("identities", "identifier"),
    ("identity_links", "a"),
    ("identity_links", "b"),
    ("merges", "via"),
    ("left_out", "identifier"),
    ("consent_ledger", "subject"),
    ("consent_state", "subject"),
    ("requests", "subject"),
];

const MARK: &str = "identifiers_at_rest";

/// The requests whose document is still plain JSON, `(id, document)`: all but those already
/// sealed and the redacted records of erased subjects.
const PLAIN_REQUESTS: &str = "SELECT id, doc FROM requests WHERE doc LIKE '{%' AND subject NOT LIKE 'erased:%'";

/// The export files still plain, `(id, file)`.
const PLAIN_EXPORTS: &str = "SELECT id, body FROM segment_exports WHERE body IS NOT NULL AND body NOT LIKE 'sealed%'";

/// The distinct keys of every column, as one query.
fn every_key() -> String {
    COLUMNS
        .iter()
        .map(|(table, column)| format!("SELECT {column} FROM {table}"))
        .collect::<Vec<_>>()
        .join(" UNION ")
}

/// The keys among `found` to rewrite, each with its form at rest. A request's subject after an
/// erasure (`erased:<id>`) and a merge's `erased` are no identifiers.
fn to_rewrite(vault: &Vault, found: Vec<String>) -> Vec<(String, String)> {
    found
        .into_iter()
        .filter(|k| !k.starts_with("erased:") && !Vault::is_hashed(k))
        .filter_map(|k| {
            let kept = vault.at_rest(&k);
            (kept != k).then_some((k, kept))
        })
        .collect()
}

/// Seals each document `select` finds as `(id, text)` under the key `key` names for its id, and
/// writes it back with `update` (`?1` the sealed document, `?2` the id); returns how many.
fn seal_plain(
    tx: &rusqlite::Transaction<'_>,
    vault: &Vault,
    select: &str,
    update: &str,
    key: fn(i64) -> String,
) -> Result<usize> {
    let docs = tx
        .prepare(select)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<(i64, String)>>>()?;
    for (id, doc) in &docs {
        let sealed = vault.seal_deflated_blocking(&key(*id), doc)?;
        tx.execute(update, rusqlite::params![sealed, id])?;
    }
    Ok(docs.len())
}

/// Rewrites the SQLite store on `conn`, when the work is pending.
pub(crate) fn rewrite_sqlite(conn: &mut rusqlite::Connection, vault: &Vault) -> Result<()> {
    use rusqlite::OptionalExtension;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mark: Option<String> = tx
        .query_row("SELECT value FROM settings WHERE key = ?1", [MARK], |r| r.get(0))
        .optional()?;
    if mark.as_deref() != Some("pending") {
        return Ok(());
    }
    let found = tx
        .prepare(&every_key())?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    let pairs = to_rewrite(vault, found);
    let docs = seal_plain(
        &tx,
        vault,
        PLAIN_REQUESTS,
        "UPDATE requests SET doc = ?1 WHERE id = ?2",
        crate::request_key,
    )?;
    let files = seal_plain(
        &tx,
        vault,
        PLAIN_EXPORTS,
        "UPDATE segment_exports SET body = ?1 WHERE id = ?2",
        crate::export_key,
    )?;
    if !pairs.is_empty() {
        let plain: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
        crate::sqlite::keep_values(&tx, &vault.seal_values_blocking(&plain)?)?;
        tx.execute_batch("CREATE TEMP TABLE at_rest_keys (plain TEXT PRIMARY KEY, kept TEXT NOT NULL)")?;
        {
            let mut insert = tx.prepare("INSERT INTO at_rest_keys (plain, kept) VALUES (?1, ?2)")?;
            for (k, kept) in &pairs {
                insert.execute([k, kept])?;
            }
        }
        for (table, column) in COLUMNS {
            tx.execute(
                &format!("UPDATE {table} SET {column} = m.kept FROM at_rest_keys m WHERE {table}.{column} = m.plain"),
                [],
            )?;
        }
        tx.execute_batch("DROP TABLE at_rest_keys")?;
        // Rewriting `consent_state` listed each plain identifier it replaced as a change for
        // the readers of consent states: blanked, those rows tell readers to forget everything.
        tx.execute("UPDATE consent_state_changes SET subject = '' WHERE subject <> ''", [])?;
    }
    tx.execute("UPDATE settings SET value = 'done' WHERE key = ?1", [MARK])?;
    tx.commit()?;
    if !pairs.is_empty() || docs > 0 || files > 0 {
        // The pages that held the plain values are zeroed in the file (`secure_delete`), not in
        // the write-ahead log: it is emptied, as far as another process reading allows.
        let _busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        tracing::info!(identifiers = pairs.len(), "identifiers rewritten as keyed hashes");
    }
    Ok(())
}

/// Rewrites the PostgreSQL store, when the work is pending.
pub(crate) async fn rewrite_pg(pool: &deadpool_postgres::Pool, vault: &Arc<Vault>) -> Result<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mark: Option<String> = tx
        .query_opt("SELECT value FROM settings WHERE key = $1 FOR UPDATE", &[&MARK])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    if mark.as_deref() != Some("pending") {
        return Ok(());
    }
    let found = tx
        .query(&every_key(), &[])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<Vec<String>, _>>()?;
    let pairs = to_rewrite(vault, found);
    for row in tx.query(PLAIN_REQUESTS, &[]).await? {
        let (id, doc): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        let sealed = vault.seal_deflated(&crate::request_key(id), &doc).await?;
        tx.execute("UPDATE requests SET doc = $1 WHERE id = $2", &[&sealed, &id])
            .await?;
    }
    for row in tx.query(PLAIN_EXPORTS, &[]).await? {
        let (id, file): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        let sealed = vault.seal_deflated(&crate::export_key(id), &file).await?;
        tx.execute("UPDATE segment_exports SET body = $1 WHERE id = $2", &[&sealed, &id])
            .await?;
    }
    if !pairs.is_empty() {
        let plain: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
        crate::postgres::keep_values(&tx, &vault.seal_values(&plain).await?).await?;
        let kept: Vec<&str> = pairs.iter().map(|(_, k)| k.as_str()).collect();
        tx.batch_execute("CREATE TEMP TABLE at_rest_keys (plain TEXT PRIMARY KEY, kept TEXT NOT NULL) ON COMMIT DROP")
            .await?;
        tx.execute(
            "INSERT INTO at_rest_keys (plain, kept) SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[])",
            &[&plain, &kept],
        )
        .await?;
        for (table, column) in COLUMNS {
            tx.execute(
                &format!("UPDATE {table} SET {column} = m.kept FROM at_rest_keys m WHERE {table}.{column} = m.plain"),
                &[],
            )
            .await?;
        }
    }
    tx.execute("UPDATE settings SET value = 'done' WHERE key = $1", &[&MARK])
        .await?;
    tx.commit().await?;
    if !pairs.is_empty() {
        tracing::info!(identifiers = pairs.len(), "identifiers rewritten as keyed hashes");
    }
    Ok(())
}
