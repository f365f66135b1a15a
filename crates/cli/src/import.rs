//! `confiance import`: CSV exports from tills and CRMs into the event log.
//!
//! Rows go through the same normalisation as the tracking API (see
//! `confiance_core::collect::import`). Rows are stored in chunks, each chunk one durable
//! transaction; a row is never split, and re-running the same file stores nothing twice because
//! each row's `messageId` derives from its content or its declared id column.

use anyhow::{Context, Result, bail};
use confiance_core::collect::import::{Mapping, RowMapper};
use confiance_core::source::{Source, SourceName};
use confiance_server::Shared;
use confiance_server::collect::ingest_messages;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::Path;

/// Rows stored per transaction.
const CHUNK: usize = 1_000;

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: usize,
    /// Rows stored now.
    pub stored: usize,
    /// Rows already in the log from an earlier run.
    pub already: usize,
    /// Rejected rows: line number and reason.
    pub rejected: Vec<(u64, String)>,
    /// Rows not stored because none of their purposes has a legal basis (no consent).
    pub withheld: Vec<u64>,
    /// Fields not stored, by field and reason, with how many rows.
    pub dropped: BTreeMap<(String, String), usize>,
}

/// Guesses the delimiter of a CSV file from its first line: French tills often write `;`.
fn sniff_delimiter(first_line: &str) -> u8 {
    let count = |c| first_line.matches(c).count();
    [(b';', count(';')), (b'\t', count('\t')), (b',', count(','))]
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .filter(|(_, n)| *n > 0)
        .map_or(b',', |(d, _)| d)
}

/// Imports `file` into the source named `source`, through the same pipeline as the tracking
/// API (catalog, consent, durable storage, counters).
pub async fn run(
    app: &Shared,
    source: &str,
    file: &Path,
    mapping: Option<&Path>,
    show_progress: bool,
) -> Result<ImportReport> {
    let name = SourceName::parse(source)?;
    let Some(source) = app.store.source_by_name(&name).await? else {
        bail!("no source named `{name}`: create it with `confiance source add {name} --kind store`");
    };
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let first_line = String::from_utf8_lossy(text.split(|b| *b == b'\n').next().unwrap_or_default()).into_owned();
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sniff_delimiter(&first_line))
        .flexible(true)
        .from_reader(&text[..]);
    let header: Vec<String> = reader
        .headers()
        .context("reading the header line")?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_owned())
        .collect();
    let mapping = match mapping {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Mapping::from_toml(&text).map_err(anyhow::Error::msg)?
        }
        None => Mapping::guess(&header),
    };
    mapping.check_header(&header).map_err(anyhow::Error::msg)?;
    let mapper = RowMapper::new(&mapping, &app.catalog, name.as_ref()).map_err(anyhow::Error::msg)?;

    let progress = if show_progress {
        let bar = ProgressBar::new(text.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:40}] {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut report = ImportReport::default();
    let mut chunk: Vec<(u64, serde_json::Value)> = Vec::with_capacity(CHUNK);
    let now = app.clock.now();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                report.rows += 1;
                report.rejected.push((line, format!("unreadable CSV: {e}")));
                continue;
            }
        }
        report.rows += 1;
        let line = record.position().map_or(line, |p| p.line());
        match mapper.message(&header, &record) {
            Ok(raw) => chunk.push((line, raw)),
            Err(reason) => report.rejected.push((line, reason)),
        }
        if chunk.len() == CHUNK {
            flush(app, &source, &mut chunk, now, &mut report).await?;
            progress.set_position(reader.position().byte());
            progress.set_message(format!("{} rows", report.rows));
        }
    }
    flush(app, &source, &mut chunk, now, &mut report).await?;
    progress.finish_and_clear();
    report.rejected.sort();
    Ok(report)
}

async fn flush(
    app: &Shared,
    source: &Source,
    chunk: &mut Vec<(u64, serde_json::Value)>,
    received_at: jiff::Timestamp,
    report: &mut ImportReport,
) -> Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    let (lines, raw): (Vec<u64>, Vec<serde_json::Value>) = std::mem::take(chunk).into_iter().unzip();
    let outcome = ingest_messages(app, source, raw, received_at)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.into_error()))?;
    report.stored += outcome.accepted;
    report.already += outcome.duplicates;
    for r in outcome.rejected {
        report.rejected.push((lines[r.index], r.message));
    }
    report.withheld.extend(outcome.withheld.iter().map(|w| lines[w.index]));
    for d in outcome.dropped {
        *report.dropped.entry((d.field, d.reason)).or_default() += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiter_is_sniffed() {
        assert_eq!(sniff_delimiter("a;b;c"), b';');
        assert_eq!(sniff_delimiter("a,b"), b',');
        assert_eq!(sniff_delimiter("a\tb"), b'\t');
        assert_eq!(sniff_delimiter("single"), b',');
    }
}
