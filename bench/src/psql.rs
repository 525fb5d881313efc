//! PostgreSQL through its own client, `psql`: a fresh database per
//! measurement on the server `$PTP_BENCH_POSTGRES` names, dropped after, and
//! scripts run the way an operator would run them (the `\copy` reference).
//!
//! Why `psql` rather than a driver: the reference the PostgreSQL rows stand
//! beside is `psql \copy` itself, timed from spawn to exit like the `sqlite3`
//! reference, so the harness needs the client anyway, and creating a
//! database is one statement. Every database is named
//! `ptp_bench_<pid>_<n>`; dropping a [`Database`] drops it `WITH (FORCE)`
//! (masters killed without a clean stop may still hold connections), so a
//! run leaves nothing behind but what a failed drop names on stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

use crate::progress;

/// The server used when `PTP_BENCH_POSTGRES` is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A PostgreSQL server the harness may create databases on.
#[derive(Debug, Clone)]
pub struct Server {
    /// `psql`.
    psql: PathBuf,
    /// An administrative URL (its database is only connected to).
    admin: String,
}

impl Server {
    /// `$PTP_BENCH_POSTGRES` (else [`DEFAULT_URL`]) with `psql` found (or
    /// installed, when `install`); fails, saying what to set, when the server
    /// does not answer.
    pub fn from_env(install: bool) -> anyhow::Result<Server> {
        let admin = std::env::var("PTP_BENCH_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.into());
        let psql = crate::tools::ensure_tool("psql", "postgresql-client", install)?;
        let server = Server { psql, admin };
        let version = server
            .run(&server.admin, &["-Atc", "SHOW server_version"])
            .with_context(|| {
                format!(
                    "PostgreSQL at {} does not answer; start it or set PTP_BENCH_POSTGRES to the \
                     URL of a server where this user may CREATE DATABASE",
                    hide_password(&server.admin)
                )
            })?;
        progress!(
            "postgres: {} (PostgreSQL {})",
            hide_password(&server.admin),
            version.trim()
        );
        Ok(server)
    }

    /// `psql`.
    pub fn psql(&self) -> &Path {
        &self.psql
    }

    /// Runs `psql -X -v ON_ERROR_STOP=1 <url> <args>` and returns its
    /// stdout; fails with its stderr.
    pub fn run(&self, url: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.psql.display()))?;
        if !out.status.success() {
            bail!(
                "psql {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates an empty database.
    pub fn create(&self) -> anyhow::Result<Database> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("ptp_bench_{}_{n}", std::process::id());
        self.run(
            &self.admin,
            &[
                "-c",
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ],
        )?;
        self.run(&self.admin, &["-c", &format!("CREATE DATABASE {name}")])
            .with_context(|| format!("creating database {name}"))?;
        Ok(Database {
            url: with_database(&self.admin, &name),
            name,
            server: self.clone(),
        })
    }
}

/// A database made for one measurement, dropped on drop.
pub struct Database {
    /// Its URL (what `ptp-master --db` takes).
    pub url: String,
    name: String,
    server: Server,
}

impl Database {
    /// Runs `psql` on this database (see [`Server::run`]).
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        self.server.run(&self.url, args)
    }

    /// One integer from `sql`.
    pub fn count(&self, sql: &str) -> anyhow::Result<u64> {
        let out = self.run(&["-Atc", sql])?;
        out.trim()
            .parse()
            .with_context(|| format!("{sql} answered {out:?}, not a number"))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = self.server.run(&self.server.admin, &["-c", &sql]) {
            progress!("WARNING: could not drop database {}: {e:#}", self.name);
        }
    }
}

/// `url` with its password replaced by `***`, for messages.
fn hide_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// `url` naming database `name` instead of its own (query string kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_database_and_hide_the_password() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/postgres?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(hide_password("postgres://u:p@h/d"), "postgres://u:***@h/d");
        assert_eq!(hide_password("postgres://u@h/d"), "postgres://u@h/d");
    }
}
