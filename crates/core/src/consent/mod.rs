//! Consent: the ledger of decisions with their proof, and the signals other tools send.

pub mod tcf;
