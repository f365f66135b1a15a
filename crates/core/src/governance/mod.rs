//! Governance: what a controller shows a regulator, computed from what Confiance already knows.
//!
//! # Design
//!
//! Everything here is derived, never typed twice: the records of processing (Art. 30) come from
//! the catalog, the data inventory from the catalog and the store's counts, and the compliance
//! checks are rules over facts the store gathers. The rules are pure functions over a
//! [`compliance::Facts`] value, so each can be tested with a seeded violation without a
//! database, and the same evaluation serves the HTTP API and the `confiance compliance check`
//! command that cron and CI run.

pub mod compliance;
pub mod inventory;
pub mod records;
