//! A PostgreSQL database per test: [`PgDatabase::create`] makes a database
//! with a unique name on the server `$PTP_TEST_POSTGRES` names (default
//! [`DEFAULT_URL`]) and dropping the value drops the database, with
//! `WITH (FORCE)` so connections a test left open do not keep it alive.
//!
//! Tests never share a database, so they run in parallel and in any order,
//! and a failed test leaves nothing behind but what its drop could not
//! remove (a warning says so). An unreachable server panics with what to do:
//! CI provides one, and `scripts/test` starts one where it is missing.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The server tests use when `PTP_TEST_POSTGRES` is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database made for one test, dropped on drop.
pub struct PgDatabase {
    /// The server's administrative URL (the database the name was made in).
    admin: String,
    /// `ptp_test_<pid>_<counter>_<random>`: unique across the tests of
    /// this process, its other runs and other processes.
    name: String,
    /// The URL of this database.
    url: String,
}

impl PgDatabase {
    /// Creates an empty database on `$PTP_TEST_POSTGRES`. Panics naming the
    /// variable when the server cannot be reached or refuses.
    pub async fn create() -> PgDatabase {
        let admin = std::env::var("PTP_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_string());
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // A randomly seeded hasher: std's way to a random number.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            & 0xffff_ffff;
        let name = format!("ptp_test_{}_{n}_{random:08x}", std::process::id());
        let shown = hide_password(&admin);
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {shown} ({e}). Set PTP_TEST_POSTGRES to the URL of a \
                 server where this user may CREATE DATABASE (default {DEFAULT_URL}); \
                 scripts/test starts one"
            )
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot create database {name} on PTP_TEST_POSTGRES={shown}: {e}")
            });
        let _ = conn.close().await;
        let url = with_database(&admin, &name);
        PgDatabase { admin, name, url }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PgDatabase {
    /// Drops the database on a thread of its own with a current-thread
    /// runtime (a drop may run inside a runtime, which cannot block on
    /// another future) and waits for it. A failure is a warning, never a
    /// panic: a drop may run while a test is already panicking.
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        let dropped = std::thread::Builder::new()
            .name("drop-pg-database".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async {
                    let mut conn = PgConnection::connect(&admin)
                        .await
                        .map_err(|e| e.to_string())?;
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                    let _ = conn.close().await;
                    Ok::<(), String>(())
                })
            })
            .map_err(|e| e.to_string())
            .and_then(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("the drop thread panicked".into()))
            });
        if let Err(e) = dropped {
            eprintln!("warning: test database {} was not dropped: {e}", self.name);
        }
    }
}

/// `url` with the password of its user info shown as `***`.
fn hide_password(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url.rfind('@').filter(|&at| at > start) {
        Some(at) => match url[start..at].find(':') {
            Some(colon) => format!("{}***{}", &url[..=start + colon], &url[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// `url` with its database (the path) replaced by `name`; the query, if
/// any, is kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{name}{query}", &base[..path_start])
}

#[cfg(test)]
mod tests {
    use super::{hide_password, with_database};

    #[test]
    fn the_password_is_hidden() {
        assert_eq!(
            hide_password("postgres://u:p@ss@h:5432/x"),
            "postgres://u:***@h:5432/x"
        );
        assert_eq!(hide_password("postgres://u@h/x"), "postgres://u@h/x");
    }

    #[test]
    fn the_database_replaces_the_path() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "d"),
            "postgres://u@h:5432/d"
        );
        assert_eq!(with_database("postgres://u@h", "d"), "postgres://u@h/d");
        assert_eq!(
            with_database("postgres://u:p@h/x?sslmode=disable", "d"),
            "postgres://u:p@h/d?sslmode=disable"
        );
    }
}
