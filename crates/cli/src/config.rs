//! Configuration: a file, flags and environment variables, merged and validated at start-up.
//!
//! # Design
//!
//! Precedence is flag, then environment variable (clap reads both), then the `[server]` table
//! of the configuration file, then the default. The same file may hold the data catalog; when it
//! declares no purpose, the built-in catalog of the demo shop is used. Everything is checked
//! before anything starts, and every catalog problem is reported at once with its line.

use anyhow::{Context, Result, bail};
use confiance_core::catalog::Catalog;
use confiance_core::privacy::vault::MasterKey;
use confiance_store::Store;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where data lives: flags shared by every command that opens the store.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// Directory of the embedded SQLite store [default: ./confiance-data].
    #[arg(long, env = "CONFIANCE_DATA_DIR", conflicts_with = "database_url")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://…); when given, PostgreSQL is used instead of SQLite.
    #[arg(long, env = "CONFIANCE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Configuration file (TOML): a `[server]` table and, optionally, the data catalog.
    #[arg(long, env = "CONFIANCE_CONFIG")]
    pub config: Option<PathBuf>,
    /// File holding the master key that wraps the per-subject data keys (64 hexadecimal digits
    /// or base64 of 32 bytes); `CONFIANCE_MASTER_KEY` may give the key itself. Without either,
    /// a key derived from the instance's secret is used.
    #[arg(long, env = "CONFIANCE_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

/// The `[server]` table of the configuration file.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    public_url: Option<String>,
    smtp_url: Option<String>,
    master_key_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
}

/// Where the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// SQLite under a directory.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl StoreLocation {
    /// Opens the store (creating and migrating it), its key vault under `master` when given.
    pub async fn open_with(&self, master: Option<MasterKey>) -> Result<Store> {
        match self {
            StoreLocation::Sqlite(dir) => Store::open_sqlite_with(dir, master)
                .await
                .with_context(|| format!("opening the SQLite store in {}", dir.display())),
            StoreLocation::Postgres(url) => Store::connect_postgres_with(url, master)
                .await
                .context("connecting to PostgreSQL"),
        }
    }
}

/// The validated configuration.
pub struct Config {
    /// Where the store is.
    pub store: StoreLocation,
    /// Listening address from the file, if any.
    pub listen: Option<SocketAddr>,
    /// Public base URL from the file, if any.
    pub public_url: Option<String>,
    /// SMTP relay from the file, if any.
    pub smtp_url: Option<String>,
    /// The data catalog.
    pub catalog: Catalog,
    /// The master key of the key vault, when one is configured.
    pub master: Option<MasterKey>,
}

/// Formats every catalog problem of `path`.
pub fn catalog_report(path: &Path, errors: &[confiance_core::catalog::CatalogError]) -> String {
    let mut out = format!("{} problem(s) in the catalog of {}:\n", errors.len(), path.display());
    for e in errors {
        out.push_str(&format!("  {}:{e}\n", path.display()));
    }
    out
}

impl Config {
    /// Loads and validates the configuration.
    pub fn load(args: &StoreArgs) -> Result<Config> {
        let (file, catalog) = match &args.config {
            None => (FileConfig::default(), Catalog::builtin()),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let catalog = if Catalog::declared_in(&text) {
                    Catalog::from_toml(&text).map_err(|errors| anyhow::anyhow!(catalog_report(path, &errors)))?
                } else {
                    Catalog::builtin()
                };
                let file: FileConfig = toml::from_str::<toml::Table>(&text)
                    .map_err(anyhow::Error::from)
                    .and_then(|table| {
                        let server = table
                            .get("server")
                            .cloned()
                            .unwrap_or(toml::Value::Table(Default::default()));
                        Ok(FileConfig {
                            server: server.try_into().context("in the [server] table")?,
                        })
                    })
                    .with_context(|| format!("reading {}", path.display()))?;
                (file, catalog)
            }
        };
        let database_url = args.database_url.clone().or(file.server.database_url);
        let data_dir = args.data_dir.clone().or(file.server.data_dir);
        let store = match (database_url, data_dir) {
            (Some(_), Some(_)) => {
                bail!("give either a data directory (SQLite) or a database URL (PostgreSQL), not both")
            }
            (Some(url), None) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    bail!("the database URL must start with postgres:// or postgresql://");
                }
                StoreLocation::Postgres(url)
            }
            (None, dir) => StoreLocation::Sqlite(dir.unwrap_or_else(|| PathBuf::from("./confiance-data"))),
        };
        let master = match (
            std::env::var("CONFIANCE_MASTER_KEY").ok(),
            args.master_key_file.clone().or(file.server.master_key_file),
        ) {
            (Some(_), Some(_)) => bail!("give the master key either in CONFIANCE_MASTER_KEY or in a file, not both"),
            (Some(key), None) => Some(MasterKey::parse(&key).context("in CONFIANCE_MASTER_KEY")?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the master key file {}", path.display()))?;
                Some(MasterKey::parse(&text).with_context(|| format!("in the master key file {}", path.display()))?)
            }
            (None, None) => None,
        };
        Ok(Config {
            store,
            listen: file.server.listen,
            public_url: file.server.public_url,
            smtp_url: file.server.smtp_url,
            catalog,
            master,
        })
    }

    /// Opens the store (creating and migrating it) with its key vault.
    pub async fn open_store(&self) -> Result<Store> {
        self.store.open_with(self.master.clone()).await
    }
}
