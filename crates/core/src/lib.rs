//! The pure core of Confiance: domain types, the data catalog and the rules of each pipeline
//! stage. Nothing here speaks HTTP or SQL; the store and server crates are thin edges around it.
//!
//! The modules follow the pipeline: [`catalog`] says what may be collected and why, [`collect`]
//! turns what sources send into messages for the event log.
#![deny(missing_docs)]

pub mod activate;
pub mod catalog;
pub mod clock;
pub mod collect;
pub mod consent;
pub mod error;
pub mod governance;
pub mod privacy;
pub mod secret;
pub mod segment;
pub mod source;
pub mod unify;

pub use error::{Error, ErrorCode};
