//! Integration tests of Confiance, as a user of its API and command line would notice.
//!
//! One test binary (linking is the slow part of a Rust test build). `api` drives the HTTP
//! application in-process on a fresh SQLite store per test; the others run the real
//! `confiance` binary as separate processes.

mod api;
mod breaches;
mod browser;
mod campaigns;
mod cli;
mod consent;
mod governance;
mod kpis;
mod process;
mod profiles;
mod requests;
mod sdk;
mod segments;
mod support;
