//! Privacy operations across the pipeline: the tamper-evident audit log.

pub mod audit;
