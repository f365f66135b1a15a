//! Wrappers that keep personal data and secrets out of `Debug` output and logs.
//!
//! # Design
//!
//! Logs must never contain personal data. Rather than trusting every `tracing` call site, the
//! values that could leak (identifiers, emails, IPs, keys) travel in [`Secret`], whose `Debug`
//! and `Display` print `[redacted]`; code that needs the value calls [`Secret::expose`], which is
//! easy to grep for.

use std::fmt;

/// A value that never prints.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The wrapped value, for code that must use it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
