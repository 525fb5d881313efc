//! Which store a master runs on, as an operator names it: a file path is
//! SQLite (the embedded default), a `postgres://` or `postgresql://` URL is
//! PostgreSQL. One parse for `--db`, `PTP_DB` and `DATABASE_URL`.
//!
//! Guarantees: a URL's password never appears in what [`DbTarget`]
//! displays (logs, errors, `/health`); its [`DbTarget::identity`] names the
//! database without credentials, so two masters compare it to tell whether
//! they share one.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A store to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite file (created with its directory if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database URL.
    Postgres(String),
}

impl DbTarget {
    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            DbTarget::Sqlite(_) => "sqlite",
            DbTarget::Postgres(_) => "postgres",
        }
    }

    /// The database without credentials: the file path, or
    /// `host:port/database` of the URL (as written; defaults left out).
    pub fn identity(&self) -> String {
        match self {
            DbTarget::Sqlite(p) => p.display().to_string(),
            DbTarget::Postgres(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
                rest.split('?').next().unwrap_or(rest).to_string()
            }
        }
    }
}

impl FromStr for DbTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<DbTarget, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the database is empty: give a SQLite file path or a \
                        postgres://USER@HOST/DB URL"
                .into());
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            let rest = &s[s.find("://").map_or(0, |i| i + 3)..];
            let host = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            if host.is_empty() || host.starts_with('/') {
                return Err(format!(
                    "{}: the URL names no host; write postgres://USER@HOST[:PORT]/DATABASE",
                    crate::store::postgres::redacted(s)
                ));
            }
            return Ok(DbTarget::Postgres(s.to_string()));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "{scheme}:// is not a database this master can use: give a SQLite file path \
                 or a postgres://USER@HOST/DB URL"
            ));
        }
        Ok(DbTarget::Sqlite(PathBuf::from(s)))
    }
}

impl fmt::Display for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbTarget::Sqlite(p) => write!(f, "{}", p.display()),
            DbTarget::Postgres(url) => f.write_str(&crate::store::postgres::redacted(url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_sqlite_urls_are_postgres_and_passwords_stay_hidden() {
        assert_eq!(
            "./data/ptp.sqlite".parse::<DbTarget>(),
            Ok(DbTarget::Sqlite("./data/ptp.sqlite".into()))
        );
        let pg: DbTarget = "postgres://ptp:s3cret@db:5432/ptp?sslmode=disable"
            .parse()
            .expect("a URL");
        assert_eq!(pg.kind(), "postgres");
        assert_eq!(pg.identity(), "db:5432/ptp");
        assert!(!pg.to_string().contains("s3cret"), "{pg}");
        assert!("postgresql://u@h/d".parse::<DbTarget>().is_ok());
        let e = "mysql://u@h/d".parse::<DbTarget>().expect_err("refused");
        assert!(e.contains("mysql://"), "{e}");
        let e = "postgres:///d".parse::<DbTarget>().expect_err("no host");
        assert!(e.contains("no host"), "{e}");
        assert!("".parse::<DbTarget>().is_err());
    }
}
