//! Opening the SQLite file: one pool for the writer (a single connection,
//! because SQLite has one writer), one pool for reads, both in WAL mode.
//!
//! Durability: WAL with `synchronous=NORMAL` survives a crash of the master
//! process without losing a committed transaction; a power loss can lose the
//! last transactions committed since the last WAL checkpoint. Those messages
//! were acked to JetStream already, so such a loss is not recovered from the
//! stream. Set `synchronous=FULL` (see [`DbOptions::synchronous_full`]) where
//! power loss is a concern, at a measured cost on commit.
//!
//! Space: files are created with `auto_vacuum=INCREMENTAL`, so retention
//! (see `retention`) can return pruned pages to the file system.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

/// Errors opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The directory for the file could not be created.
    #[error("cannot create the database directory {dir}: {source}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Opening the file failed.
    #[error("cannot open SQLite database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("cannot migrate SQLite database {path}: {source}")]
    Migrate {
        /// The file.
        path: PathBuf,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
    /// Filling the rollups from the stored runs (once, after an upgrade)
    /// failed.
    #[error("cannot fill the rollup tables of SQLite database {path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        source: sqlx::Error,
    },
    /// The store asked for cannot be used by this build.
    #[error("{0}")]
    Unsupported(String),
    /// Opening or migrating the PostgreSQL database failed.
    #[error(transparent)]
    Postgres(#[from] crate::store::postgres::PgOpenError),
    /// The actors' thread could not be started or died while starting.
    #[error("cannot start the actors' thread: {0}")]
    Thread(std::io::Error),
}

/// Connections in a master's read pool unless told otherwise.
pub const READ_CONNECTIONS: u32 = 4;

/// How to open the database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// The SQLite file (created with its directory if missing).
    pub path: PathBuf,
    /// `synchronous=FULL` instead of `NORMAL`.
    pub synchronous_full: bool,
    /// Connections in the read pool.
    pub read_connections: u32,
}

impl DbOptions {
    /// Defaults for a file.
    pub fn new(path: impl Into<PathBuf>) -> DbOptions {
        DbOptions {
            path: path.into(),
            synchronous_full: false,
            read_connections: READ_CONNECTIONS,
        }
    }

    pub(crate) fn connect_options(&self) -> SqliteConnectOptions {
        // `filename` takes the path as-is; from_str would parse URL syntax.
        SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            // Takes effect when the file is created; lets retention give
            // pruned pages back with `PRAGMA incremental_vacuum`.
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if self.synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(false)
    }
}

fn ensure_dir(path: &Path) -> Result<(), DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// SQLite's process-wide settings, applied once before the first
/// connection opens: memory statistics off (`SQLITE_CONFIG_MEMSTATUS`).
/// With them on (SQLite's default) every allocation of every connection
/// takes one global mutex, and the read pool's connections, each building
/// answers of tens of kilobytes on its own thread, queue on it: with 32
/// clients on one run's page the profile showed the threads parked in
/// `jsonStringGrow` and page fetches. Nothing here reads the statistics.
fn sqlite_global_config() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config may only be called while SQLite is not
        // initialized or after sqlite3_shutdown; it returns SQLITE_MISUSE
        // (and changes nothing) otherwise, which is harmless. It runs once,
        // before this process opens its first connection (both pools call
        // this first), with an int argument as MEMSTATUS takes.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libsqlite3_sys::sqlite3_config(
                libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
        if rc != libsqlite3_sys::SQLITE_OK {
            tracing::debug!(
                rc,
                "SQLite was initialized already; memory statistics stay on"
            );
        }
    });
}

/// Opens the writer's pool (one connection) and runs the migrations.
pub async fn open_writer(opts: &DbOptions) -> Result<SqlitePool, DbError> {
    sqlite_global_config();
    ensure_dir(&opts.path)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(opts.connect_options())
        .await
        .map_err(|source| DbError::Open {
            path: opts.path.clone(),
            source,
        })?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(|source| DbError::Migrate {
            path: opts.path.clone(),
            source,
        })?;
    Ok(pool)
}

/// Opens the read pool. Call after [`open_writer`] has migrated the file.
pub async fn open_reader(opts: &DbOptions) -> Result<SqlitePool, DbError> {
    sqlite_global_config();
    ensure_dir(&opts.path)?;
    SqlitePoolOptions::new()
        .max_connections(opts.read_connections.max(1))
        // Local file connections need no reaping; and without these sqlx
        // spawns no maintenance task (sqlx-core 0.9.0's can spin forever
        // when the pool is closed during its pass).
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(opts.connect_options())
        .await
        .map_err(|source| DbError::Open {
            path: opts.path.clone(),
            source,
        })
}
