//! Unify: one golden record per person, built as data arrives, without merging strangers.
//!
//! - [`identifier`]: the nodes — user ids, anonymous ids, emails, phones, loyalty cards.
//! - [`graph`]: deterministic resolution with guards against over-merging, and splitting.
//! - [`golden`]: the golden record — survivorship per trait, lineage, computed traits.
//! - [`matching`]: probabilistic matching of records that share no identifier.

pub mod golden;
pub mod graph;
pub mod identifier;
pub mod matching;
