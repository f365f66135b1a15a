//! The tamper-evident audit log: every consent change, merge and split, and read of personal
//! data by staff, in a hash chain.
//!
//! # Design
//!
//! Each entry's hash covers its own fields and the previous entry's hash, so changing, removing
//! or reordering any entry breaks every hash after it; [`verify`] walks the chain and names the
//! first entry that does not verify. Entries hold no personal data — subjects are referred to
//! by profile id or ledger position, never by email or name — so erasing a person never
//! requires touching the log, and the log keeps verifying afterwards.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Position, from 1, without gaps.
    pub seq: i64,
    /// When.
    pub at: Timestamp,
    /// Who: `token:<name>`, `subject` (through a signed link), `collect:<source>`, `system`.
    pub actor: String,
    /// What, e.g. `consent.recorded`, `profile.merged`, `profile.split`, `profile.read`.
    pub action: String,
    /// About whom, pseudonymously (`profile:12`, `ledger:345`), if anyone.
    pub subject: Option<String>,
    /// Details without personal data.
    pub details: Value,
    /// The previous entry's hash.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// An entry to append; the log gives it its position and hashes.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// About whom, pseudonymously.
    pub subject: Option<String>,
    /// Details without personal data.
    pub details: Value,
}

impl AuditEvent {
    /// An event of `actor` doing `action`.
    pub fn new(actor: impl Into<String>, action: impl Into<String>, subject: Option<String>, details: Value) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            subject,
            details,
        }
    }
}

/// The hash of an entry's content chained to `prev_hash`.
pub fn hash(
    prev_hash: &str,
    seq: i64,
    at: Timestamp,
    actor: &str,
    action: &str,
    subject: Option<&str>,
    details: &Value,
) -> String {
    let mut h = Sha256::new();
    // Length-prefixed fields, so that no two different entries serialise alike.
    for field in [
        prev_hash,
        &seq.to_string(),
        &at.as_microsecond().to_string(),
        actor,
        action,
        subject.unwrap_or("\u{0}"),
        &details.to_string(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Chains `event` after an entry of position `prev_seq` and hash `prev_hash`.
pub fn chain(prev_seq: i64, prev_hash: &str, at: Timestamp, event: AuditEvent) -> AuditEntry {
    let seq = prev_seq + 1;
    let hash = hash(
        prev_hash,
        seq,
        at,
        &event.actor,
        &event.action,
        event.subject.as_deref(),
        &event.details,
    );
    AuditEntry {
        seq,
        at,
        actor: event.actor,
        action: event.action,
        subject: event.subject,
        details: event.details,
        prev_hash: prev_hash.to_owned(),
        hash,
    }
}

/// Where the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq} does not verify: {reason}")]
pub struct Broken {
    /// The first entry that does not verify.
    pub seq: i64,
    /// Why.
    pub reason: String,
}

/// Checks a whole chain, in order; on success, how many entries verified.
pub fn verify<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> Result<usize, Broken> {
    let (mut prev_seq, mut prev_hash) = (0i64, GENESIS.to_owned());
    let mut n = 0;
    for e in entries {
        let broken = |reason: &str| Broken {
            seq: e.seq,
            reason: reason.to_owned(),
        };
        if e.seq != prev_seq + 1 {
            return Err(Broken {
                seq: prev_seq + 1,
                reason: format!("missing: the next entry found is {}", e.seq),
            });
        }
        if e.prev_hash != prev_hash {
            return Err(broken("it does not follow the previous entry's hash"));
        }
        let expected = hash(
            &e.prev_hash,
            e.seq,
            e.at,
            &e.actor,
            &e.action,
            e.subject.as_deref(),
            &e.details,
        );
        if expected != e.hash {
            return Err(broken("its content does not match its hash"));
        }
        prev_seq = e.seq;
        prev_hash = e.hash.clone();
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log(n: i64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let (seq, prev) = out.last().map_or((0, GENESIS.to_owned()), |e| (e.seq, e.hash.clone()));
            let at = Timestamp::from_second(1_800_000_000 + i).unwrap();
            out.push(chain(
                seq,
                &prev,
                at,
                AuditEvent::new(
                    "token:admin",
                    "profile.read",
                    Some(format!("profile:{i}")),
                    json!({"n": i}),
                ),
            ));
        }
        out
    }

    #[test]
    fn any_change_breaks_the_chain_at_that_entry() {
        let good = log(5);
        assert_eq!(verify(&good), Ok(5));
        let mut changed = good.clone();
        changed[2].details = json!({"n": 99});
        assert_eq!(verify(&changed).unwrap_err().seq, 3);
        let mut actor = good.clone();
        actor[3].actor = "token:someone".into();
        assert_eq!(verify(&actor).unwrap_err().seq, 4);
        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(verify(&removed).unwrap_err().seq, 2);
        // Rewriting an entry and its hash still breaks the next one.
        let mut rehashed = good.clone();
        rehashed[1].action = "profile.merged".into();
        rehashed[1].hash = hash(
            &rehashed[1].prev_hash,
            2,
            rehashed[1].at,
            "token:admin",
            "profile.merged",
            Some("profile:1"),
            &json!({"n": 1}),
        );
        assert_eq!(verify(&rehashed).unwrap_err().seq, 3);
    }
}
