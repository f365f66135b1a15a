//! Privacy operations across the pipeline: the tamper-evident audit log and data-subject
//! requests with their legal deadlines.

pub mod audit;
pub mod breach;
pub mod exposure;
pub mod requests;
pub mod retention;
pub mod vault;
