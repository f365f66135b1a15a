//! The storage edge of Confiance: one interface, two backends.
//!
//! # Design
//!
//! [`Store`] is the only way the rest of Confiance touches data. It is an enum over the embedded
//! SQLite store (the default: one file, nothing to install) and PostgreSQL (several stateless
//! nodes sharing one database), so callers never know which one they use and one conformance
//! suite (`tests/conformance.rs`) proves that both behave the same.
//!
//! The event log is append-only and is the truth: everything derived later (profiles, indexes,
//! counters) can be rebuilt from it. [`Store::append`] returns only once the messages are
//! committed durably, which is what lets the tracking API promise that a 2xx is never lost.

mod activate;
mod breach_jobs;
mod breaches;
mod erasure;
mod governance;
mod identifiers;
mod matching;
mod notices;
mod postgres;
mod postgres_unify;
mod requests;
mod segments;
mod sqlite;
mod sqlite_checkpoint;
mod sqlite_consent;
mod sqlite_log;
mod sqlite_sync;
mod sqlite_unify;
mod unify;
mod vault;

pub use activate::{CampaignRow, NewOccurrence, Next, Occurrence, SendRecord, SendRow, Unredeemable, Voucher};
pub use breach_jobs::{BreachJob, INTERRUPTED, NoticePlan, notice_counts};
pub use breaches::{BreachNotice, CarriedEvent, Touched, TouchedQuery};
pub use erasure::{Erased, Erasure};
pub use governance::{CatalogVersion, Notice, TraitCounts};
pub use matching::Review;
pub use notices::{NewRecipientNotice, NoticeEnd, NoticeStatus, RecipientNotice, SUPERSEDED};
pub use postgres::PgStore;
pub use segments::{ExportRow, SegmentRow, Transition};
pub use sqlite::SqliteStore;
pub use unify::{GAP_PATIENCE_US, Resolved};
pub use vault::VAULT_FILE;

use confiance_core::catalog::{Catalog, LegalBasis, Purpose};
use confiance_core::collect::{Message, MessageType};
use confiance_core::consent::{ConsentView, Decision, IdKind, LedgerEntry, Status, Subject, has_basis};
use confiance_core::privacy::audit::{AuditEntry, AuditEvent, Broken};
use confiance_core::privacy::requests::Request;
use confiance_core::privacy::vault::MasterKey;
use confiance_core::source::{KeyDigest, Source, SourceKind, SourceName};
use confiance_core::unify::graph::Guards;
use confiance_core::unify::identifier::Identifier;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value (a source name) is already taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// The writer is saturated; the caller should shed load.
    #[error("the store is overloaded")]
    Overloaded,
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
    /// What the caller wrote into the store through a writer failed to be written: the
    /// caller's error, not the database's ([`Store::put_request_result_written`]).
    #[error("writing a result failed: {0}")]
    Writer(String),
    /// A migration failed or the schema is newer than this binary.
    #[error("migration failed: {0}")]
    Migration(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Database(pg_error_text(&e))
    }
}

/// What went wrong, in full: tokio-postgres prints only the kind of failure ("db error"), and
/// keeps what the server said, or why the connection failed, in the error's source.
pub(crate) fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::{PoolError, TimeoutType};
        match e {
            // Every connection stayed busy for the whole wait: more work than the database takes.
            PoolError::Timeout(TimeoutType::Wait) => StoreError::Overloaded,
            PoolError::Backend(e) => e.into(),
            e => StoreError::Database(e.to_string()),
        }
    }
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// An event as the log holds it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StoredEvent {
    /// Position in the log (the change sequence).
    pub seq: i64,
    /// Source it came from.
    pub source_id: i64,
    /// Message id, unique per source.
    pub message_id: String,
    /// Message type.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// User id.
    pub user_id: Option<String>,
    /// Anonymous id.
    pub anonymous_id: Option<String>,
    /// Event, page or screen name, or group id.
    pub event: Option<String>,
    /// When it happened.
    pub timestamp: jiff::Timestamp,
    /// When it was received.
    pub received_at: jiff::Timestamp,
    /// The full normalised message.
    pub body: Value,
    /// The purposes it was collected for (empty: it only links identifiers).
    pub purposes: Vec<String>,
}

/// Why personal data is read. Every read of personal data names one, so a read that serves no
/// stated purpose cannot be written.
#[derive(Clone, Copy, Debug)]
pub enum Access<'a> {
    /// Use for a purpose of the catalog: only subjects with a legal basis for it are seen (a
    /// consent that is not granted *now* hides the subject), and only data collected for it.
    Purpose(&'a Purpose),
    /// Operating the platform (an administrator inspecting the log): legitimate interest,
    /// and to be audited.
    Administration,
    /// The data subject reading their own data (preference centre, access requests).
    DataSubject,
}

/// A profile as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProfileRow {
    /// Stable id.
    pub id: i64,
    /// When it was founded.
    pub created_at: jiff::Timestamp,
    /// The profile it was merged into, if it was.
    pub merged_into: Option<i64>,
    /// Its identifiers (`kind:value`) and the log position where each was first seen.
    pub identities: Vec<(String, i64)>,
}

/// A merge of two profiles, with its evidence.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MergeRow {
    /// Id of the merge.
    pub id: i64,
    /// The profile that kept its id.
    pub survivor: i64,
    /// The profile merged into it.
    pub absorbed: i64,
    /// The identifier that linked them (`kind:value`).
    pub via: String,
    /// Log position of the message that linked them.
    pub seq: i64,
    /// Source of that message.
    pub source_id: Option<i64>,
    /// Its message id.
    pub message_id: Option<String>,
    /// When.
    pub at: jiff::Timestamp,
    /// `message` (deterministic) or `review` (probabilistic, accepted).
    pub origin: String,
    /// Why: the rule and, for probabilistic merges, the per-field weights.
    pub evidence: Value,
    /// When it was undone, if it was.
    pub undone_at: Option<jiff::Timestamp>,
}

pub(crate) type MergeParts = (
    i64,
    i64,
    i64,
    String,
    i64,
    Option<i64>,
    Option<String>,
    i64,
    String,
    String,
    Option<i64>,
);

impl MergeRow {
    pub(crate) fn from_parts(
        (id, survivor, absorbed, via, seq, source_id, message_id, at, origin, evidence, undone_at): MergeParts,
    ) -> Result<Self> {
        Ok(Self {
            id,
            survivor,
            absorbed,
            via,
            seq,
            source_id,
            message_id,
            at: from_micros(at),
            origin,
            evidence: serde_json::from_str(&evidence).map_err(|e| StoreError::Database(e.to_string()))?,
            undone_at: undone_at.map(from_micros),
        })
    }
}

/// Per-purpose consent counts, for one source and touchpoint of the latest decision.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConsentCount {
    /// Purpose id.
    pub purpose: String,
    /// Current status.
    pub status: Status,
    /// Source of the latest decision.
    pub source_id: Option<i64>,
    /// Touchpoint of the latest decision.
    pub touchpoint: Option<String>,
    /// How many subjects.
    pub count: i64,
}

/// `,a,b,` — how the purposes of an event are stored, so that `LIKE '%,a,%'` finds them.
pub(crate) fn purposes_column(purposes: &[impl AsRef<str>]) -> String {
    let mut out = String::from(",");
    for p in purposes {
        out.push_str(p.as_ref());
        out.push(',');
    }
    out
}

/// The vault identifier of a segment export's file.
pub(crate) fn export_key(id: i64) -> String {
    format!("export:{id}")
}

/// The vault identifier of a request's result.
pub(crate) fn request_key(id: i64) -> String {
    format!("request:{id}")
}

/// The traits a message carries, as kept beside it (`,email,phone,`), or none.
pub(crate) fn traits_column(message: &Message) -> Option<String> {
    traits_of(message.kind, &message.body)
}

/// [`traits_column`] of a message of `kind` with `body`.
pub(crate) fn traits_of(kind: MessageType, body: &Value) -> Option<String> {
    let names = confiance_core::collect::carried_traits(kind, body);
    (!names.is_empty()).then(|| purposes_column(&names))
}

/// Bodies rewritten by retention, in their column forms: the body (sealed again under its
/// subject's key, or plain JSON when it has no subject or sealing is off) and the traits it
/// still carries. An event whose subject's key is gone — they were erased meanwhile — is left
/// out: the erasure deletes it, and no new key is made for them.
pub(crate) async fn rewritten(
    vault: &std::sync::Arc<vault::Vault>,
    events: Vec<StoredEvent>,
) -> Result<Vec<(i64, vault::Kept, Option<String>)>> {
    let tags: Vec<_> = events
        .iter()
        .map(|e| {
            vault
                .seals()
                .then(|| vault.tag_of(e.user_id.as_deref(), e.anonymous_id.as_deref()))
                .flatten()
        })
        .collect();
    let keys = vault.keys(tags.iter().flatten().copied().collect(), false).await?;
    let mut out = Vec::with_capacity(events.len());
    for (e, tag) in events.into_iter().zip(&tags) {
        let traits = traits_of(e.kind, &e.body);
        if let Some(kept) = vault.keep(tag.as_ref(), &keys, e.body)? {
            out.push((e.seq, kept, traits));
        }
    }
    Ok(out)
}

/// The inverse of [`purposes_column`].
pub(crate) fn purposes_from_column(s: &str) -> Vec<String> {
    s.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect()
}

impl Who {
    /// The subject this is.
    pub fn subject(&self) -> Option<Subject> {
        match self {
            Who::UserId(v) => Subject::parse(IdKind::UserId, v).ok(),
            Who::AnonymousId(v) => Subject::parse(IdKind::AnonymousId, v).ok(),
        }
    }
}

/// Whose events to list.
#[derive(Clone, Debug)]
pub enum Who {
    /// By `userId`.
    UserId(String),
    /// By `anonymousId`.
    AnonymousId(String),
}

/// What an append did with each message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// For each message, in order: `true` if stored now, `false` if its `messageId` was
    /// already in the log for this source.
    pub stored: Vec<bool>,
}

impl Appended {
    /// How many messages were stored now.
    pub fn stored_count(&self) -> usize {
        self.stored.iter().filter(|s| **s).count()
    }
}

/// Roles of admin API tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Privacy operations.
    Dpo,
    /// Segments and campaigns.
    Marketer,
    /// Reads without personal data.
    ReadOnly,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dpo => "dpo",
            Role::Marketer => "marketer",
            Role::ReadOnly => "read_only",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Admin, Role::Dpo, Role::Marketer, Role::ReadOnly]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// Per-source collection counters, as persisted.
pub type Counters = Vec<(String, i64)>;

/// The store: SQLite or PostgreSQL behind one interface.
#[derive(Clone)]
pub enum Store {
    /// The embedded default.
    Sqlite(SqliteStore),
    /// A PostgreSQL server.
    Postgres(PgStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $body:expr) => {
        match $self {
            Store::Sqlite($s) => $body,
            Store::Postgres($s) => $body,
        }
    };
}

impl Store {
    /// Opens (creating and migrating) the SQLite store under `dir`, its key vault under a master
    /// key derived from the instance's secret.
    pub async fn open_sqlite(dir: &Path) -> Result<Store> {
        Self::open_sqlite_with(dir, None).await
    }

    /// Opens the SQLite store under `dir`, its key vault under `master` when given.
    pub async fn open_sqlite_with(dir: &Path, master: Option<MasterKey>) -> Result<Store> {
        Ok(Store::Sqlite(SqliteStore::open(dir, master).await?))
    }

    /// Connects to PostgreSQL and migrates the schema, its key vault under a master key derived
    /// from the instance's secret.
    pub async fn connect_postgres(url: &str) -> Result<Store> {
        Self::connect_postgres_with(url, None).await
    }

    /// Connects to PostgreSQL, its key vault under `master` when given.
    pub async fn connect_postgres_with(url: &str, master: Option<MasterKey>) -> Result<Store> {
        Ok(Store::Postgres(PgStore::connect(url, master).await?))
    }

    /// Whether new event bodies are sealed under their subject's key (the default). Switching it
    /// off serves only to measure what sealing costs: bodies written meanwhile stay readable by
    /// anyone who can read the database, and erasure cannot shred their backups.
    pub fn set_sealing(&self, on: bool) {
        dispatch!(self, s => s.vault.set_sealing(on))
    }

    /// Which backend, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Checks the store answers.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, s => s.ping().await)
    }

    /// Registers a source with the digest of its write key.
    pub async fn create_source(
        &self,
        name: &SourceName,
        kind: SourceKind,
        key: &KeyDigest,
        key_prefix: &str,
    ) -> Result<Source> {
        dispatch!(self, s => s.create_source(name, kind, key, key_prefix).await)
    }

    /// Every source, by name.
    pub async fn list_sources(&self) -> Result<Vec<Source>> {
        dispatch!(self, s => s.list_sources().await)
    }

    /// The source a write key belongs to.
    pub async fn source_by_key(&self, key: &KeyDigest) -> Result<Option<Source>> {
        dispatch!(self, s => s.source_by_key(key).await)
    }

    /// The source with this name.
    pub async fn source_by_name(&self, name: &SourceName) -> Result<Option<Source>> {
        dispatch!(self, s => s.source_by_name(name).await)
    }

    /// Appends messages of one source to the event log, durably, skipping `messageId`s the log
    /// already holds for that source. In the same transaction, adds `counters` to the source's
    /// counters, and counts the messages stored (`accepted`) and skipped (`duplicate`).
    pub async fn append(&self, source_id: i64, messages: Vec<Message>, counters: Counters) -> Result<Appended> {
        self.append_with_consent(source_id, messages, Vec::new(), counters)
            .await
    }

    /// [`Store::append`], also appending consent decisions to the ledger in the same
    /// transaction, so that a message and the consent it carried are stored together or not
    /// at all.
    pub async fn append_with_consent(
        &self,
        source_id: i64,
        messages: Vec<Message>,
        decisions: Vec<Decision>,
        counters: Counters,
    ) -> Result<Appended> {
        dispatch!(self, s => s.append(source_id, messages, decisions, counters).await)
    }

    /// Appends consent decisions to the ledger, durably; returns their ledger positions. The
    /// current state of each subject and purpose moves to a decision only if it is the latest
    /// by server time, so concurrent writers end with the last one by the clock.
    pub async fn record_consents(&self, decisions: Vec<Decision>) -> Result<Vec<i64>> {
        dispatch!(self, s => s.record_consents(decisions).await)
    }

    /// The current consent states of these subjects.
    pub async fn consent_view(&self, subjects: &[Subject]) -> Result<ConsentView> {
        if subjects.is_empty() {
            return Ok(ConsentView::default());
        }
        let keys: Vec<String> = subjects.iter().map(Subject::key).collect();
        dispatch!(self, s => s.consent_view(keys).await)
    }

    /// A subject's whole consent ledger, oldest first.
    pub async fn consent_history(&self, _access: Access<'_>, subject: &Subject) -> Result<Vec<LedgerEntry>> {
        dispatch!(self, s => s.consent_history(subject.key()).await)
    }

    /// Current consent states counted by purpose, status, and the source and touchpoint of the
    /// latest decision.
    pub async fn consent_counts(&self) -> Result<Vec<ConsentCount>> {
        dispatch!(self, s => s.consent_counts().await)
    }

    /// Subjects of `kind` that have a legal basis for `purpose` now, after `after` (the last
    /// subject of the previous page, or empty), at most `limit`, in the order of the keys rows
    /// keep (keyed hashes for emails and phones): the read behind an export for a purpose (say,
    /// the emails a newsletter may go to). For a purpose based on consent, only subjects whose
    /// current decision is a grant; for other bases, every subject of that kind the ledger knows.
    pub async fn subjects_for(
        &self,
        purpose: &Purpose,
        kind: IdKind,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Subject>> {
        let granted_only = purpose.legal_basis == LegalBasis::Consent;
        let prefix = format!("{}:", kind.as_str());
        let after = if after.is_empty() {
            prefix.clone()
        } else {
            after.to_owned()
        };
        let keys =
            dispatch!(self, s => s.subjects_for(purpose.id.clone(), granted_only, prefix.clone(), after, limit).await)?;
        Ok(keys.iter().filter_map(|k| Subject::from_key(k)).collect())
    }

    /// Resolves identities for up to `limit` events after the processor's cursor, in log order
    /// (see the `unify` module). Safe to call from several nodes at once.
    pub async fn resolve_pending(&self, catalog: Arc<Catalog>, guards: Arc<Guards>, limit: usize) -> Result<Resolved> {
        let now = jiff::Timestamp::now().as_microsecond();
        dispatch!(self, s => s.resolve_pending(catalog.clone(), guards.clone(), limit, now).await)
    }

    /// The processor's cursor and the log's last position.
    pub async fn unify_status(&self) -> Result<(i64, i64)> {
        dispatch!(self, s => s.unify_status().await)
    }

    /// The profile an identifier (`kind:value`) belongs to now.
    pub async fn profile_of(&self, identifier: &Identifier) -> Result<Option<i64>> {
        dispatch!(self, s => s.profile_of(identifier.key()).await)
    }

    /// A profile and its identifiers (personal data: the caller states why it reads).
    pub async fn profile(&self, _access: Access<'_>, id: i64) -> Result<Option<ProfileRow>> {
        dispatch!(self, s => s.profile(id).await)
    }

    /// Events of a profile — of every user id and anonymous id it holds — oldest first, after
    /// `after_seq`, at most `limit`, as `access` allows: for a purpose, nothing unless the
    /// latest decision across all the profile's identifiers gives a legal basis, and only
    /// events collected for it. A merge never widens what a person agreed to.
    pub async fn profile_events(
        &self,
        access: Access<'_>,
        profile: i64,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let purpose = match access {
            Access::Purpose(p) => {
                let subjects = self.profile_subjects(profile).await?;
                let view = self.consent_view(&subjects).await?;
                if !has_basis(p, view.effective(&subjects, &p.id)) {
                    return Ok(Vec::new());
                }
                Some(p.id.clone())
            }
            Access::Administration | Access::DataSubject => None,
        };
        dispatch!(self, s => s.profile_events(profile, purpose.as_deref(), after_seq, limit).await)
    }

    /// The consent subjects among a profile's identifiers.
    pub async fn profile_subjects(&self, profile: i64) -> Result<Vec<Subject>> {
        let row = dispatch!(self, s => s.profile(profile).await)?;
        Ok(row
            .map(|p| {
                p.identities
                    .iter()
                    .filter_map(|(k, _)| Identifier::from_key(k)?.subject())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The merges a profile took part in, oldest first.
    pub async fn merges_of(&self, profile: i64) -> Result<Vec<MergeRow>> {
        dispatch!(self, s => s.merges_of(profile).await)
    }

    /// One merge.
    pub async fn merge(&self, id: i64) -> Result<Option<MergeRow>> {
        dispatch!(self, s => s.merge(id).await)
    }

    /// Undoes a merge: the links its message made are switched off (and stay off when the
    /// profiles are rebuilt from the log), and the profile is split along the links that
    /// remain. Returns the profiles that exist afterwards.
    pub async fn undo_merge(&self, merge: MergeRow, at: jiff::Timestamp) -> Result<Vec<i64>> {
        dispatch!(self, s => s.undo_merge(merge.clone(), at.as_microsecond()).await)
    }

    /// Every profile with its identifiers (`kind:value`), by profile id: what a rebuild must
    /// reproduce.
    pub async fn profiles_snapshot(&self) -> Result<Vec<(i64, Vec<String>)>> {
        dispatch!(self, s => s.profiles_snapshot().await)
    }

    /// Forgets every profile so that the processor rebuilds them from the log. Undone merges stay
    /// undone and reviewers' decisions are kept: profile ids are handed out in log order, so the
    /// next matching run finds the same pairs and respects them.
    pub async fn reset_profiles(&self) -> Result<()> {
        dispatch!(self, s => s.reset_profiles().await)
    }

    /// Records a new data-subject request (audited); returns it with its id.
    pub async fn insert_request(&self, request: Request) -> Result<Request> {
        dispatch!(self, s => s.insert_request(request.clone()).await)
    }

    /// Saves a request after a step of its workflow, auditing it as `action`.
    pub async fn update_request(&self, request: &Request, action: &str) -> Result<()> {
        dispatch!(self, s => s.update_request(request.clone(), action.to_owned()).await)
    }

    /// One request.
    pub async fn request(&self, id: i64) -> Result<Option<Request>> {
        dispatch!(self, s => s.request(id).await)
    }

    /// Requests by deadline, the open ones only if asked.
    pub async fn requests(&self, open_only: bool, limit: usize) -> Result<Vec<Request>> {
        dispatch!(self, s => s.requests(open_only, limit).await)
    }

    /// The requests about any of `subjects`, by deadline: found by the subject kept with each,
    /// so that only theirs are opened.
    pub async fn requests_of(&self, subjects: &[Subject]) -> Result<Vec<Request>> {
        let kept: Vec<String> = subjects.iter().map(|s| self.vault().at_rest(&s.key())).collect();
        dispatch!(self, s => s.requests_of(kept.clone()).await)
    }

    fn vault(&self) -> &std::sync::Arc<vault::Vault> {
        dispatch!(self, s => &s.vault)
    }

    /// Keeps what carrying out a request produced (an access archive holds everything about
    /// the person): sealed under a key of the request's own, which erasing the person shreds.
    pub async fn put_request_result(&self, id: i64, result: String) -> Result<()> {
        // Archives are large and repetitive: compressed before they are sealed and written.
        let stored = self.vault().seal_deflated(&request_key(id), &result).await?;
        dispatch!(self, s => s.put_request_result(id, stored).await)
    }

    /// [`Store::put_request_result`] for a result that `write` writes out. With sealing on, it
    /// is compressed on a second thread as it is written and never held whole (an access archive
    /// runs to megabytes). A failure of `write` is [`StoreError::Writer`].
    pub async fn put_request_result_written(
        &self,
        id: i64,
        write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let stored = self.vault().seal_written(&request_key(id), write).await?;
        dispatch!(self, s => s.put_request_result(id, stored).await)
    }

    /// What carrying out a request produced; none once its subject was erased.
    pub async fn request_result(&self, id: i64) -> Result<Option<String>> {
        let stored = dispatch!(self, s => s.request_result(id).await)?;
        match stored {
            Some(text) => self.vault().open_text(&request_key(id), text).await,
            None => Ok(None),
        }
    }

    /// Queues Art. 19 notices, due at once; a payload that holds personal data is sealed under
    /// its request's key first.
    pub async fn queue_recipient_notices(
        &self,
        mut notices: Vec<NewRecipientNotice>,
        at: jiff::Timestamp,
    ) -> Result<Vec<RecipientNotice>> {
        for n in notices.iter_mut().filter(|n| n.seal) {
            let Some(request) = n.request_id else {
                return Err(StoreError::Database(
                    "a notice that holds personal data is sealed under its request's key: it needs one".into(),
                ));
            };
            let sealed = self
                .vault()
                .seal_deflated(&request_key(request), n.payload.expose())
                .await?;
            n.payload = confiance_core::secret::Secret::new(sealed);
        }
        dispatch!(self, s => s.queue_recipient_notices(notices.clone(), at).await)
    }

    /// What a notice sends, opened; none when it cannot be sent any more (its person was
    /// erased: their request's key is shredded, or the payload emptied).
    pub async fn recipient_notice_payload(&self, notice: &RecipientNotice) -> Result<Option<String>> {
        match (notice.payload.expose().is_empty(), notice.request_id) {
            (true, _) => Ok(None),
            (false, Some(request)) => {
                self.vault()
                    .open_text(&request_key(request), notice.payload.expose().clone())
                    .await
            }
            // Without a request nothing was sealed.
            (false, None) => Ok(Some(notice.payload.expose().clone())),
        }
    }

    /// Pending notices due by `now`, the longest waiting first.
    pub async fn due_recipient_notices(&self, now: jiff::Timestamp, limit: usize) -> Result<Vec<RecipientNotice>> {
        dispatch!(self, s => s.due_recipient_notices(now, limit).await)
    }

    /// Notices, newest first: one request's, or those in one status, or all.
    pub async fn recipient_notices(
        &self,
        request: Option<i64>,
        status: Option<NoticeStatus>,
        limit: usize,
    ) -> Result<Vec<RecipientNotice>> {
        dispatch!(self, s => s.recipient_notices(request, status, limit).await)
    }

    /// Takes a notice due by `now` for one try: its `next_at` moves from `seen` to
    /// `lease_until` and the attempt is counted. False when another worker took it first, it
    /// ended, or it is not due.
    pub async fn claim_recipient_notice(
        &self,
        id: i64,
        seen: jiff::Timestamp,
        now: jiff::Timestamp,
        lease_until: jiff::Timestamp,
    ) -> Result<bool> {
        dispatch!(self, s => s.claim_recipient_notice(id, seen, now, lease_until).await)
    }

    /// Records how a try ended, if the lease taken is still the notice's; false otherwise.
    pub async fn end_recipient_notice(
        &self,
        id: i64,
        lease_until: jiff::Timestamp,
        end: NoticeEnd,
        outcome: &str,
        at: jiff::Timestamp,
    ) -> Result<bool> {
        dispatch!(self, s => s.end_recipient_notice(id, lease_until, end.clone(), outcome.to_owned(), at).await)
    }

    /// Puts a request's failed notices back in the queue, due at `at`, with their attempts
    /// counted afresh; how many.
    pub async fn retry_recipient_notices(&self, request: i64, at: jiff::Timestamp) -> Result<u64> {
        dispatch!(self, s => s.retry_recipient_notices(request, at).await)
    }

    /// Puts one failed notice back in the queue, due at `at`, its attempts counted afresh;
    /// false when no failed notice has this id.
    pub async fn retry_recipient_notice(&self, id: i64, at: jiff::Timestamp) -> Result<bool> {
        dispatch!(self, s => s.retry_recipient_notice(id, at).await)
    }

    /// One notice.
    pub async fn recipient_notice(&self, id: i64) -> Result<Option<RecipientNotice>> {
        dispatch!(self, s => s.recipient_notice(id).await)
    }

    /// Merges `absorbed` into `survivor` as probabilistic matching or a reviewer decided, with
    /// the evidence; `None` when one of them no longer holds identifiers.
    pub async fn merge_profiles(
        &self,
        survivor: i64,
        absorbed: i64,
        evidence: Value,
        origin: &str,
        at: jiff::Timestamp,
    ) -> Result<Option<i64>> {
        let at = to_micros(at);
        dispatch!(self, s => s.merge_profiles(survivor, absorbed, evidence.clone(), origin.to_owned(), at).await)
    }

    /// Queues a grey-zone pair for review, once; whether it was new.
    pub async fn queue_review(
        &self,
        a: i64,
        b: i64,
        probability: f64,
        evidence: Value,
        at: jiff::Timestamp,
    ) -> Result<bool> {
        let at = to_micros(at);
        dispatch!(self, s => s.queue_review(a, b, probability, evidence.clone(), at).await)
    }

    /// Review items, by status (`pending`, `accepted`, `rejected`) or all.
    pub async fn reviews(&self, status: Option<&str>) -> Result<Vec<Review>> {
        let status = status.map(str::to_owned);
        dispatch!(self, s => s.reviews(status.clone()).await)
    }

    /// Decides a pending review item; false when it was not pending.
    pub async fn decide_review(&self, id: i64, accepted: bool, at: jiff::Timestamp) -> Result<bool> {
        let status = if accepted { "accepted" } else { "rejected" }.to_owned();
        let at = to_micros(at);
        dispatch!(self, s => s.decide_review(id, status.clone(), at).await)
    }

    /// Erases a person everywhere, keeping only the pseudonymised request records and a
    /// suppression entry (see the `erasure` module).
    pub async fn erase(&self, erasure: Erasure) -> Result<Erased> {
        dispatch!(self, s => s.erase(erasure.clone()).await)
    }

    /// The whole log, page by page, for jobs that scan it (retention): administration access.
    pub async fn events_page(&self, after_seq: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        dispatch!(self, s => s.events_page(after_seq, limit).await)
    }

    /// Applies retention to events: deletes `delete`, replaces the bodies of `rewrite` (traits
    /// past their time removed; sealed again under their subject's key), and audits `report`,
    /// in one transaction.
    pub async fn expire_events(
        &self,
        delete: Vec<i64>,
        rewrite: Vec<StoredEvent>,
        at: jiff::Timestamp,
        report: Value,
    ) -> Result<()> {
        dispatch!(self, s => s.expire_events(delete.clone(), rewrite.clone(), at, report.clone()).await)
    }

    /// Every profile that holds identifiers.
    pub async fn profile_ids(&self) -> Result<Vec<i64>> {
        dispatch!(self, s => s.profile_ids().await)
    }

    /// Whether any of these keyed hashes is on the suppression list.
    pub async fn suppressed(&self, hashes: Vec<String>) -> Result<bool> {
        dispatch!(self, s => s.suppressed(hashes.clone()).await)
    }

    /// Appends events to the audit log.
    pub async fn audit(&self, events: Vec<AuditEvent>) -> Result<()> {
        dispatch!(self, s => s.audit(events.clone()).await)
    }

    /// Audit entries after position `after`, at most `limit`, in order.
    pub async fn audit_log(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        dispatch!(self, s => s.audit_log(after, limit).await)
    }

    /// Walks the whole audit chain: how many entries verify, or the first that does not.
    pub async fn verify_audit(&self) -> Result<std::result::Result<usize, Broken>> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self.audit_log(after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            all.extend(page);
        }
        Ok(confiance_core::privacy::audit::verify(&all))
    }

    /// The secret of this instance (created on first use), which keys IP hashes and signs
    /// preference links. Several nodes on one PostgreSQL share it.
    pub async fn instance_secret(&self) -> Result<Vec<u8>> {
        let hex_secret = dispatch!(self, s => s.instance_secret().await)?;
        hex::decode(hex_secret).map_err(|e| StoreError::Database(format!("corrupt instance secret: {e}")))
    }

    /// A source's counters.
    pub async fn source_counters(&self, source_id: i64) -> Result<Counters> {
        dispatch!(self, s => s.source_counters(source_id).await)
    }

    /// Events of one user or anonymous id, oldest first, after `after_seq`, at most `limit`,
    /// as `access` allows: for a purpose, nothing unless the subject has a legal basis for it
    /// now, and only events collected for it (or that only link identifiers).
    pub async fn events_of(
        &self,
        access: Access<'_>,
        who: &Who,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let purpose = match access {
            Access::Purpose(p) => {
                let subject = who.subject();
                let view = self.consent_view(subject.as_slice()).await?;
                if !has_basis(p, view.effective(subject.as_slice(), &p.id)) {
                    return Ok(Vec::new());
                }
                Some(p.id.clone())
            }
            Access::Administration | Access::DataSubject => None,
        };
        dispatch!(self, s => s.events_of(who, purpose.as_deref(), after_seq, limit).await)
    }

    /// Number of events in the log.
    pub async fn count_events(&self) -> Result<i64> {
        dispatch!(self, s => s.count_events().await)
    }

    /// Events per source, type and name: `(source id, type, event name, count)`.
    pub async fn event_summary(&self) -> Result<Vec<(i64, String, Option<String>, i64)>> {
        dispatch!(self, s => s.event_summary().await)
    }

    /// Saves a campaign (a new one when `id` is `None`); a name taken by another is a conflict.
    pub async fn put_campaign(&self, id: Option<i64>, name: &str, doc: Value, active: bool) -> Result<i64> {
        dispatch!(self, s => s.put_campaign(id, name.to_owned(), doc.clone(), active).await)
    }

    /// Every campaign.
    pub async fn campaigns(&self) -> Result<Vec<CampaignRow>> {
        dispatch!(self, s => s.campaigns().await)
    }

    /// Moves a campaign's trigger cursor from `from` to `to`; false when another node moved it
    /// first.
    pub async fn advance_campaign(&self, id: i64, from: i64, to: i64) -> Result<bool> {
        dispatch!(self, s => s.advance_campaign(id, from, to).await)
    }

    /// Inserts occurrences; one already there (same campaign, person and key) is left alone.
    /// Returns how many are new.
    pub async fn add_occurrences(&self, new: Vec<NewOccurrence>, at: jiff::Timestamp) -> Result<usize> {
        dispatch!(self, s => s.add_occurrences(new.clone(), at).await)
    }

    /// Claims up to `limit` due steps until `lease`; no other node gets them meanwhile.
    pub async fn claim_due(
        &self,
        now: jiff::Timestamp,
        lease: jiff::Timestamp,
        limit: usize,
    ) -> Result<Vec<Occurrence>> {
        dispatch!(self, s => s.claim_due(now, lease, limit).await)
    }

    /// Records what was decided for a claimed step and what comes next, together.
    pub async fn finish_step(&self, occurrence: Occurrence, record: SendRecord, next: Next) -> Result<()> {
        dispatch!(self, s => s.finish_step(occurrence.clone(), record.clone(), next).await)
    }

    /// How many of a campaign's occurrences wait for a step.
    pub async fn pending_occurrences(&self, campaign: i64) -> Result<i64> {
        dispatch!(self, s => s.pending_occurrences(campaign).await)
    }

    /// Records what happened about a campaign outside its steps (an unsubscribe from one of
    /// its messages), in its log.
    pub async fn log_campaign_event(&self, campaign: i64, profile: i64, record: SendRecord) -> Result<()> {
        dispatch!(self, s => s.log_event(campaign, profile, record.clone()).await)
    }

    /// Recorded decisions, of a campaign or a person or all, in order.
    pub async fn sends(&self, campaign: Option<i64>, profile: Option<i64>, limit: usize) -> Result<Vec<SendRow>> {
        dispatch!(self, s => s.sends(campaign, profile, limit).await)
    }

    /// When messages went to a person on a channel since an instant.
    pub async fn recent_sends(
        &self,
        profile: i64,
        channel: &str,
        since: jiff::Timestamp,
    ) -> Result<Vec<jiff::Timestamp>> {
        dispatch!(self, s => s.recent_sends(profile, channel.to_owned(), since).await)
    }

    /// A campaign's decisions counted by outcome and reason.
    pub async fn campaign_outcomes(&self, campaign: i64) -> Result<Vec<(String, Option<String>, i64)>> {
        dispatch!(self, s => s.campaign_outcomes(campaign).await)
    }

    /// Creates the voucher of an occurrence, or returns the one it already has.
    pub async fn create_voucher(&self, voucher: Voucher) -> Result<Voucher> {
        dispatch!(self, s => s.create_voucher(voucher.clone()).await)
    }

    /// The voucher given with an occurrence.
    pub async fn voucher_of(&self, occurrence: i64) -> Result<Option<Voucher>> {
        dispatch!(self, s => s.voucher_of(occurrence).await)
    }

    /// Uses a voucher once.
    pub async fn redeem(
        &self,
        code: &str,
        order: Option<String>,
        at: jiff::Timestamp,
    ) -> Result<std::result::Result<Voucher, Unredeemable>> {
        dispatch!(self, s => s.redeem(code.to_owned(), order.clone(), at).await)
    }

    /// Saves a segment (a new one when `id` is `None`); a name taken by another is a conflict.
    pub async fn put_segment(&self, id: Option<i64>, name: &str, doc: Value) -> Result<i64> {
        dispatch!(self, s => s.put_segment(id, name.to_owned(), doc.clone()).await)
    }

    /// Deletes a segment and its member list; whether it existed.
    pub async fn delete_segment(&self, id: i64) -> Result<bool> {
        dispatch!(self, s => s.delete_segment(id).await)
    }

    /// Every saved segment.
    pub async fn segments(&self) -> Result<Vec<SegmentRow>> {
        dispatch!(self, s => s.segments().await)
    }

    /// The profiles a segment held at its last synchronisation.
    pub async fn segment_members(&self, id: i64) -> Result<Vec<i64>> {
        dispatch!(self, s => s.segment_members(id).await)
    }

    /// Adds and removes members; when `record`, each change this call made becomes an
    /// entered/exited transition. Returns how many were added and removed.
    pub async fn sync_members(
        &self,
        segment: i64,
        entered: Vec<i64>,
        exited: Vec<i64>,
        at: jiff::Timestamp,
        record: bool,
    ) -> Result<(usize, usize)> {
        dispatch!(self, s => s.sync_members(segment, entered.clone(), exited.clone(), at, record).await)
    }

    /// Entered/exited transitions after `after`, of one profile or of all.
    pub async fn transitions(&self, after: i64, profile: Option<i64>, limit: usize) -> Result<Vec<Transition>> {
        dispatch!(self, s => s.transitions(after, profile, limit).await)
    }

    /// Queues a members export.
    pub async fn create_export(&self, segment: i64, format: &str, at: jiff::Timestamp) -> Result<i64> {
        dispatch!(self, s => s.create_export(segment, format.to_owned(), at).await)
    }

    /// Records the outcome of an export: rows and file, or why it failed.
    pub async fn finish_export(
        &self,
        id: i64,
        outcome: std::result::Result<(i64, String), String>,
        at: jiff::Timestamp,
    ) -> Result<()> {
        // The file lists people: it is sealed under a key of its own, which an erasure shreds.
        let outcome = match outcome {
            Ok((rows, body)) => Ok((rows, self.vault().seal_deflated(&export_key(id), &body).await?)),
            Err(e) => Err(e),
        };
        dispatch!(self, s => s.finish_export(id, outcome.clone(), at).await)
    }

    /// An export task, without its file ([`Store::export_file`]): a status is polled often, and
    /// the file is sealed.
    pub async fn export(&self, id: i64) -> Result<Option<ExportRow>> {
        let row = dispatch!(self, s => s.export(id).await)?;
        Ok(row.map(|r| ExportRow { body: None, ..r }))
    }

    /// The file of a finished export; none before, or once an erasure shredded its key.
    pub async fn export_file(&self, id: i64) -> Result<Option<String>> {
        match dispatch!(self, s => s.export(id).await)?.and_then(|r| r.body) {
            Some(body) => self.vault().open_text(&export_key(id), body).await,
            None => Ok(None),
        }
    }

    /// The profiles holding any of these identifiers (`kind:value`).
    pub async fn profiles_of_keys(&self, keys: Vec<String>) -> Result<Vec<i64>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, s => s.profiles_of_keys(keys.clone()).await)
    }

    /// The last positions of the consent ledger and of the audit log: where a follower of the
    /// change feed starts after reading a snapshot.
    pub async fn feed_heads(&self) -> Result<(i64, i64)> {
        dispatch!(self, s => s.feed_heads().await)
    }

    /// Consent decisions recorded after ledger position `after` or after `recent` (server time;
    /// a window that catches decisions committed late on PostgreSQL), in ledger order: the
    /// consent part of the change feed.
    pub async fn consent_changes(
        &self,
        after: i64,
        recent: jiff::Timestamp,
        limit: usize,
    ) -> Result<Vec<(i64, String)>> {
        dispatch!(self, s => s.consent_changes(after, to_micros(recent), limit).await)
    }

    /// Keeps a dated version of the catalog and its records of processing when its hash
    /// differs from the latest one: the version in force and whether it is new.
    pub async fn record_catalog_version(
        &self,
        hash: &str,
        catalog: Value,
        register: Value,
        at: jiff::Timestamp,
    ) -> Result<(i64, bool)> {
        dispatch!(self, s => s.record_catalog_version(hash.to_owned(), catalog.clone(), register.clone(), at).await)
    }

    /// Catalog versions in order, only those taken by `at` when given (the last is then the
    /// one in force at that instant).
    pub async fn catalog_versions(&self, at: Option<jiff::Timestamp>) -> Result<Vec<CatalogVersion>> {
        dispatch!(self, s => s.catalog_versions(at).await)
    }

    /// Archives a notice when its hash is new, closing the publication of the previous ones.
    pub async fn record_notice(&self, version: &str, hash: &str, text: &str, at: jiff::Timestamp) -> Result<bool> {
        dispatch!(self, s => s.record_notice(version.to_owned(), hash.to_owned(), text.to_owned(), at).await)
    }

    /// Every notice shown, oldest first.
    pub async fn notices(&self) -> Result<Vec<Notice>> {
        dispatch!(self, s => s.notices().await)
    }

    /// Ledger positions of current grants recorded with neither a notice hash nor a proof.
    pub async fn unproven_grants(&self, limit: usize) -> Result<Vec<i64>> {
        dispatch!(self, s => s.unproven_grants(limit).await)
    }

    /// Current choices recorded before `before`, counted by purpose and status.
    pub async fn stale_choices(&self, before: jiff::Timestamp) -> Result<Vec<(String, String, i64)>> {
        dispatch!(self, s => s.stale_choices(before).await)
    }

    /// When the audit log last recorded `action`.
    pub async fn last_audit(&self, action: &str) -> Result<Option<jiff::Timestamp>> {
        dispatch!(self, s => s.last_audit(action.to_owned()).await)
    }

    /// How many people each trait was collected for, per source and in all (a scan of the log).
    pub async fn trait_counts(&self) -> Result<TraitCounts> {
        dispatch!(self, s => s.trait_counts().await)
    }

    /// Messages sent since an instant: campaign, profile and when, in order.
    pub async fn sent_since(&self, since: jiff::Timestamp) -> Result<Vec<(i64, i64, jiff::Timestamp)>> {
        dispatch!(self, s => s.sent_since(since).await)
    }

    /// Records an admin API token by digest (idempotent).
    pub async fn put_token(&self, digest: &KeyDigest, role: Role, name: &str) -> Result<()> {
        dispatch!(self, s => s.put_token(digest, role, name).await)
    }

    /// The role of a token, if it is known.
    pub async fn token_role(&self, digest: &KeyDigest) -> Result<Option<Role>> {
        Ok(self.token(digest).await?.map(|(role, _)| role))
    }

    /// The role and name of a token, if it is known.
    pub async fn token(&self, digest: &KeyDigest) -> Result<Option<(Role, String)>> {
        dispatch!(self, s => s.token(digest).await)
    }
}

/// Microseconds since the Unix epoch, as SQLite stores instants.
pub(crate) fn to_micros(t: jiff::Timestamp) -> i64 {
    t.as_microsecond()
}

/// The inverse of [`to_micros`].
pub(crate) fn from_micros(us: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(us).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

pub(crate) fn kind_from_str(s: &str) -> Result<MessageType> {
    MessageType::parse(s).ok_or_else(|| StoreError::Database(format!("unknown message type `{s}` in the log")))
}

pub(crate) fn source_kind_from_str(s: &str) -> Result<SourceKind> {
    s.parse()
        .map_err(|_| StoreError::Database(format!("unknown source kind `{s}`")))
}

pub(crate) fn source_name_from_str(s: &str) -> Result<SourceName> {
    SourceName::parse(s).map_err(|_| StoreError::Database(format!("invalid source name `{s}`")))
}

pub(crate) fn status_from_str(s: &str) -> Result<Status> {
    Status::parse(s).ok_or_else(|| StoreError::Database(format!("unknown consent status `{s}` in the ledger")))
}

/// A ledger row, as both backends read it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ledger_entry(
    seq: i64,
    subject: &str,
    purpose: String,
    status: &str,
    method: &str,
    recorded_at: jiff::Timestamp,
    (notice_version, notice_hash): (Option<String>, Option<String>),
    source_id: Option<i64>,
    touchpoint: Option<String>,
    (ip_hash, ua_hash): (Option<String>, Option<String>),
    proof: Value,
) -> Result<LedgerEntry> {
    let subject =
        Subject::from_key(subject).ok_or_else(|| StoreError::Database("malformed subject in the ledger".into()))?;
    Ok(LedgerEntry {
        seq,
        subject_type: subject.kind(),
        subject_value: subject.value().to_owned(),
        purpose,
        status: status_from_str(status)?,
        method: confiance_core::consent::Method::parse(method)
            .ok_or_else(|| StoreError::Database(format!("unknown consent method `{method}` in the ledger")))?,
        recorded_at,
        notice_version,
        notice_hash,
        source_id,
        touchpoint,
        ip_hash,
        ua_hash,
        proof,
    })
}

/// The subject key of each decision.
pub(crate) fn decision_keys(decisions: &[Decision]) -> Vec<String> {
    decisions.iter().map(|d| d.subject.key()).collect()
}

/// The audit event of a recorded consent decision: who acted, and the ledger position as the
/// pseudonymous subject.
pub(crate) fn consent_audit(d: &Decision, ledger_seq: i64) -> AuditEvent {
    use confiance_core::consent::Method::*;
    let actor = match d.method {
        Api | Import | Request => "staff".to_owned(),
        Banner | PreferenceCentre | Unsubscribe => "subject".to_owned(),
        Form | Signal | TcString | Gpc => {
            format!("collect:{}", d.source_id.map_or_else(|| "-".into(), |s| s.to_string()))
        }
    };
    AuditEvent::new(
        actor,
        "consent.recorded",
        Some(format!("ledger:{ledger_seq}")),
        serde_json::json!({"purpose": d.purpose, "status": d.status.as_str(), "method": d.method.as_str()}),
    )
}
