//! Failure clusters: failures grouped by what went wrong, not by test.
//!
//! Forty tests failing with "connection refused to 10.0.3.7:5432" after a
//! database went away are one problem, and so are three runs of one test
//! failing with "expected 3 items, got 2" and "expected 5 items, got 4". A
//! failure's **signature** is its exception type, its first message line
//! with the parts that vary masked (numbers, hex addresses, UUIDs, long ids,
//! temporary paths) and its top frame (the file, and the function when the
//! traceback names it, without line numbers, which move with every edit).
//! Failures with the same signature form a cluster; its id is a short hash
//! of the signature, stable across runs and masters.
//!
//! The signature is a pure function ([`signature`]) of a case's message and
//! traceback, tested on the shapes real runners write (pytest, Python,
//! JUnit/Java, Go, Rust, JavaScript). The writer computes it when it stores
//! a failed or errored case ([`stored_signature`]: the case's key in
//! `test_cases.sig`, the signature once in `signatures`), so [`clusters`]
//! reads a window's failures through the failure-first case index as
//! (run, test, key) without their messages and tracebacks, and reads text
//! only for the clusters it lists. Failures stored before the writer did
//! this (migration 0007) have no key and are signed when read, as before.
//!
//! Backends: each reads the window's failures in the same order its own
//! way (`postgres` for PostgreSQL); `Grouped` groups, orders, cuts and
//! reports for both, and says which signatures and example messages to
//! read.

mod postgres;

use crate::read::ReadPool;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use crate::json_rows;
use crate::model::from_millis;
use crate::read::flaky::{Runs, Window, push_scope};
#[cfg(test)]
use crate::signature::MAX_MESSAGE;
use crate::signature::id_of;
pub use crate::signature::{Signature, mask, signature, stored_signature};

/// A failure cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    /// Stable id of the signature (12 hex digits).
    pub id: String,
    /// Exception type, when one can be told.
    pub exception: Option<String>,
    /// The masked message.
    pub message: String,
    /// Top frame.
    pub frame: Option<String>,
    /// Failed and errored cases with this signature.
    pub count: u64,
    /// Runs they happened in.
    pub runs: u64,
    /// Tests affected: how many, and the first 10 (most failures first).
    pub tests_total: usize,
    /// The first 10 affected tests.
    pub tests: Vec<String>,
    /// Start of the oldest run with this failure in the window.
    #[serde(serialize_with = "crate::format::time")]
    pub first_seen: DateTime<Utc>,
    /// Start of the newest.
    #[serde(serialize_with = "crate::format::time")]
    pub last_seen: DateTime<Utc>,
    /// One real occurrence (the newest): test, run and unmasked message.
    pub example: Example,
}

/// One occurrence of a cluster's failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// Test id.
    pub test_id: String,
    /// Run id.
    pub run_id: String,
    /// The message as recorded (first 300 characters).
    pub message: Option<String>,
}

/// The clusters of a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterReport {
    /// Runs looked at.
    pub runs_considered: u64,
    /// Failed and errored cases in them.
    pub failures: u64,
    /// Clusters found.
    pub total: usize,
    /// The first `limit`, biggest first.
    pub clusters: Vec<Cluster>,
}

/// A failed or errored case of the window, as read: its signature key, or
/// its text when it has none.
#[derive(Deserialize)]
pub(crate) struct FailureRow {
    /// The run.
    pub run_id: String,
    /// Its start, epoch milliseconds.
    pub started_at: i64,
    /// The test.
    pub test_id: String,
    /// The stored signature key, if any.
    pub sig: Option<i64>,
    /// Outcome code (0 or 1).
    pub outcome: i64,
    /// Chunk of the case.
    pub chunk: i64,
    /// Index of the case in its chunk.
    pub idx: i64,
    /// The message, read only without a stored key.
    pub message: Option<String>,
    /// The traceback, read only without a stored key.
    pub traceback: Option<String>,
}

/// Where the example of a cluster is: its newest failure.
#[derive(Clone)]
pub(crate) struct At {
    /// The test.
    pub test_id: String,
    /// The run.
    pub run_id: String,
    /// The case's outcome code.
    pub outcome: i64,
    /// Its chunk.
    pub chunk: i64,
    /// Its index in the chunk.
    pub idx: i64,
}

/// One cluster as the failures are read.
pub(crate) struct Acc {
    count: u64,
    runs: BTreeSet<String>,
    tests: BTreeMap<String, u64>,
    first: i64,
    last: i64,
    example: At,
}

/// Where a window's signatures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signed {
    /// The keys the writer stored (text read only for failures without one).
    Stored,
    /// Every failure signed from its text as read, ignoring stored keys:
    /// the plain recomputation the tests compare with.
    #[cfg(test)]
    FromText,
}

/// Groups the failures of a window's runs (outages included: an outage is
/// exactly one big cluster).
pub async fn clusters(
    pool: &ReadPool,
    w: &Window,
    limit: usize,
) -> Result<ClusterReport, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => clusters_sqlite(p, w, limit).await,
        ReadPool::Postgres(p) => postgres::clusters(p, w, limit).await,
    }
}

/// [`clusters`] on SQLite.
pub(crate) async fn clusters_sqlite(
    pool: &SqlitePool,
    w: &Window,
    limit: usize,
) -> Result<ClusterReport, sqlx::Error> {
    clusters_signed(pool, w, limit, Signed::Stored).await
}

pub(crate) async fn clusters_signed(
    pool: &SqlitePool,
    w: &Window,
    limit: usize,
    signed: Signed,
) -> Result<ClusterReport, sqlx::Error> {
    // One JSON value instead of a sqlx hand-off per failure; the text only
    // of failures without a stored key.
    let mut q = json_rows::select(
        &[
            "run_id",
            "started_at",
            "test_id",
            "sig",
            "outcome",
            "chunk",
            "idx",
            "message",
            "traceback",
        ],
        "started_at DESC, run_id DESC, test_id, chunk, idx",
    );
    push_scope(&mut q, w, Runs::All);
    let key = match signed {
        Signed::Stored => "c.sig",
        #[cfg(test)]
        Signed::FromText => "NULL",
    };
    q.push(format_args!(
        " SELECT s.run_id, s.started_at, c.test_id, {key} AS sig, c.outcome, c.chunk, c.idx, \
                 CASE WHEN {key} IS NULL THEN c.message END AS message, \
                 CASE WHEN {key} IS NULL THEN c.traceback END AS traceback \
          FROM scope s JOIN test_cases c ON c.run_id = s.run_id AND c.outcome IN (0, 1) \
          WHERE 1 = 1"
    ));
    crate::owners::push_filter(&mut q, &w.tests, "s.project", "c.test_id");
    // Every read in one transaction: one snapshot of the store.
    let mut tx = pool.begin().await?;
    let rows: Vec<FailureRow> = json_rows::fetch(q, &mut *tx).await?;
    let grouped = Grouped::new(rows, limit);
    let considered = {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_scope(&mut q, w, Runs::All);
        q.push(" SELECT COUNT(*) FROM scope");
        let (n,): (i64,) = q.build_query_as().fetch_one(&mut *tx).await?;
        n.max(0) as u64
    };
    let stored = signatures(&mut tx, &grouped.unsigned()).await?;
    let examples = example_messages(&mut tx, grouped.examples()).await?;
    tx.commit().await?;
    Ok(grouped.report(considered, stored, examples))
}

/// A window's failures grouped by signature and ordered, biggest first:
/// the decision both backends share, made before any text of the listed
/// clusters is read.
pub(crate) struct Grouped {
    /// Failed and errored cases read.
    failures: u64,
    /// Clusters found.
    total: usize,
    /// Signatures of the failures stored without a key, signed on reading.
    signed_here: BTreeMap<i64, Signature>,
    /// The first `limit` clusters, by key.
    listed: Vec<(i64, Acc)>,
}

impl Grouped {
    /// Groups `rows` (newest first: started_at, run_id descending, then
    /// test id, chunk, idx; the first row of a cluster is its example) and
    /// keeps the first `limit` clusters: most failures, then the newest,
    /// then by id.
    pub(crate) fn new(rows: Vec<FailureRow>, limit: usize) -> Grouped {
        let mut signed_here: BTreeMap<i64, Signature> = BTreeMap::new();
        let mut by_key: BTreeMap<i64, Acc> = BTreeMap::new();
        let mut failures = 0u64;
        for r in rows {
            let key = match r.sig {
                Some(k) => k,
                None => {
                    let sig = stored_signature(r.message.as_deref(), r.traceback.as_deref());
                    let k = sig.key();
                    signed_here.entry(k).or_insert(sig);
                    k
                }
            };
            failures += 1;
            let a = by_key.entry(key).or_insert_with(|| Acc {
                count: 0,
                runs: BTreeSet::new(),
                tests: BTreeMap::new(),
                first: r.started_at,
                last: r.started_at,
                // Rows come newest first: the first one is the example.
                example: At {
                    test_id: r.test_id.clone(),
                    run_id: r.run_id.clone(),
                    outcome: r.outcome,
                    chunk: r.chunk,
                    idx: r.idx,
                },
            });
            a.count += 1;
            a.runs.insert(r.run_id);
            *a.tests.entry(r.test_id).or_default() += 1;
            a.first = a.first.min(r.started_at);
            a.last = a.last.max(r.started_at);
        }
        let mut all: Vec<(i64, Acc)> = by_key.into_iter().collect();
        all.sort_by(|(ka, a), (kb, b)| {
            b.count
                .cmp(&a.count)
                .then_with(|| b.last.cmp(&a.last))
                .then_with(|| id_of(*ka).cmp(&id_of(*kb)))
        });
        let total = all.len();
        all.truncate(limit);
        Grouped {
            failures,
            total,
            signed_here,
            listed: all,
        }
    }

    /// The listed clusters' keys whose signature is stored (not signed
    /// here): the signatures to read.
    pub(crate) fn unsigned(&self) -> Vec<i64> {
        self.listed
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| !self.signed_here.contains_key(k))
            .collect()
    }

    /// Where the listed clusters' examples are, in order: the messages to
    /// read.
    pub(crate) fn examples(&self) -> impl Iterator<Item = &At> {
        self.listed.iter().map(|(_, a)| &a.example)
    }

    /// The report of a window of `considered` runs, with the `stored`
    /// signatures of [`Grouped::unsigned`] and the messages of
    /// [`Grouped::examples`], in order.
    pub(crate) fn report(
        self,
        considered: u64,
        stored: BTreeMap<i64, Signature>,
        examples: Vec<Option<String>>,
    ) -> ClusterReport {
        let signed_here = self.signed_here;
        let clusters = self
            .listed
            .into_iter()
            .zip(examples)
            .map(|((key, a), message)| {
                let sig = stored
                    .get(&key)
                    .or_else(|| signed_here.get(&key))
                    .cloned()
                    .unwrap_or(Signature {
                        exception: None,
                        message: String::new(),
                        frame: None,
                    });
                let mut tests: Vec<(String, u64)> = a.tests.into_iter().collect();
                tests.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
                Cluster {
                    id: id_of(key),
                    exception: sig.exception,
                    message: sig.message,
                    frame: sig.frame,
                    count: a.count,
                    runs: a.runs.len() as u64,
                    tests_total: tests.len(),
                    tests: tests.into_iter().take(10).map(|(t, _)| t).collect(),
                    first_seen: from_millis(a.first),
                    last_seen: from_millis(a.last),
                    example: Example {
                        test_id: a.example.test_id,
                        run_id: a.example.run_id,
                        message: message.map(|m| m.chars().take(300).collect()),
                    },
                }
            })
            .collect();
        ClusterReport {
            runs_considered: considered,
            failures: self.failures,
            total: self.total,
            clusters,
        }
    }
}

/// The stored signatures of `wanted`.
async fn signatures(
    conn: &mut SqliteConnection,
    wanted: &[i64],
) -> Result<BTreeMap<i64, Signature>, sqlx::Error> {
    #[derive(Deserialize)]
    struct Row {
        sig: i64,
        exception: Option<String>,
        message: String,
        frame: Option<String>,
    }
    if wanted.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut q = json_rows::select(&["sig", "exception", "message", "frame"], "sig");
    q.push("SELECT sig, exception, message, frame FROM signatures WHERE sig IN (SELECT value FROM json_each(")
        .push_bind(serde_json::to_string(&wanted).unwrap_or_default())
        .push("))");
    let rows: Vec<Row> = json_rows::fetch(q, &mut *conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.sig,
                Signature {
                    exception: r.exception,
                    message: r.message,
                    frame: r.frame,
                },
            )
        })
        .collect())
}

/// The messages of the examples, in order.
async fn example_messages<'a>(
    conn: &mut SqliteConnection,
    at: impl Iterator<Item = &'a At>,
) -> Result<Vec<Option<String>>, sqlx::Error> {
    #[derive(Deserialize)]
    struct Row {
        i: usize,
        message: Option<String>,
    }
    let at: Vec<(&str, i64, i64, i64)> = at
        .map(|a| (a.run_id.as_str(), a.outcome, a.chunk, a.idx))
        .collect();
    let mut out = vec![None; at.len()];
    if at.is_empty() {
        return Ok(out);
    }
    let mut q = json_rows::select(&["i", "message"], "i");
    q.push(
        "SELECT j.key AS i, (SELECT c.message FROM test_cases c WHERE c.run_id = j.value ->> 0 \
           AND c.outcome = j.value ->> 1 AND c.chunk = j.value ->> 2 AND c.idx = j.value ->> 3) \
           AS message FROM json_each(",
    )
    .push_bind(serde_json::to_string(&at).unwrap_or_default())
    .push(") j");
    let rows: Vec<Row> = json_rows::fetch(q, &mut *conn).await?;
    for r in rows {
        if let Some(slot) = out.get_mut(r.i) {
            *slot = r.message;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(m: &str, tb: &str) -> Signature {
        signature(Some(m), Some(tb))
    }

    #[test]
    fn varying_parts_are_masked() {
        assert_eq!(
            mask("connection refused to 10.0.3.7:5432 after 3.5s"),
            "connection refused to <n>.<n>.<n>.<n>:<n> after <n>.<n>s"
        );
        assert_eq!(
            mask("object at 0x7f3a2c1b9e80 in /tmp/pytest-of-ci/pytest-12/test_x0/data.json"),
            "object at 0x<hex> in <tmp>"
        );
        assert_eq!(
            mask("order 3fa85f64-5717-4562-b3fc-2c963f66afa6 for worker7 (job a1b2c3d4e5f6)"),
            "order <uuid> for worker<n> (job <id>)"
        );
        assert_eq!(
            mask("expected 3 items, got 2"),
            mask("expected 5 items, got 4")
        );
        assert_ne!(mask("expected 3 items"), mask("expected 3 users"));
        let long = "x".repeat(500);
        assert!(mask(&long).chars().count() <= MAX_MESSAGE + 1);
    }

    #[test]
    fn pytest_failures_give_type_message_and_file() {
        let tb = "def test_total():\n>       assert total([1, 2]) == 4\nE       assert 3 == 4\n\
                  E        +  where 3 = total([1, 2])\n\ntests/test_cart.py:12: AssertionError";
        let s = sig("assert 3 == 4\n +  where 3 = total([1, 2])", tb);
        assert_eq!(s.exception.as_deref(), Some("AssertionError"));
        assert_eq!(s.message, "assert <n> == <n>");
        assert_eq!(s.frame.as_deref(), Some("tests/test_cart.py"));

        let tb = "tests/test_db.py:40: in connect\n    raise ConnectionError(host)\n\
                  E   ConnectionError: refused by db-3:5432\n\ntests/test_db.py:40: ConnectionError";
        let s = sig("ConnectionError: refused by db-3:5432", tb);
        assert_eq!(s.exception.as_deref(), Some("ConnectionError"));
        assert_eq!(s.message, "refused by db-<n>:<n>");
        // Same failure on another host and port: same cluster.
        let other = sig(
            "ConnectionError: refused by db-7:6543",
            &tb.replace("db-3:5432", "db-7:6543"),
        );
        assert_eq!(s.id(), other.id());
        // Same message from another exception type: another cluster.
        assert_ne!(s.id(), sig("TimeoutError: refused by db-3:5432", tb).id());
    }

    #[test]
    fn other_runners_frames() {
        let java = "java.lang.AssertionError: expected:<1> but was:<2>\n\
                    \tat org.junit.Assert.fail(Assert.java:88)\n\tat com.shop.CartTest.total(CartTest.java:31)";
        let s = sig("expected:<1> but was:<2>", java);
        assert_eq!(s.frame.as_deref(), Some("org.junit.Assert.fail"));
        assert_eq!(s.message, "expected:<<n>> but was:<<n>>");

        let py = "Traceback (most recent call last):\n  File \"app/db.py\", line 10, in connect\n    \
                  raise OSError('x')\nOSError: [Errno 111] Connection refused";
        let s = signature(None, Some(py));
        assert_eq!(s.exception.as_deref(), Some("OSError"));
        assert_eq!(s.frame.as_deref(), Some("app/db.py in connect"));

        let go = "    cart_test.go:42: total = 3, want 4";
        assert_eq!(sig("Failed", go).frame.as_deref(), Some("cart_test.go"));
        let rust = "thread 'cart::total' panicked at src/cart.rs:10:5:\nassertion failed";
        assert_eq!(
            sig("assertion failed", rust).frame.as_deref(),
            Some("src/cart.rs")
        );
        let js = "AssertionError [ERR_ASSERTION]: 3 == 4\n    at TestContext.<anonymous> (/app/test/cart.test.js:7:12)";
        assert_eq!(
            sig("3 == 4", js).frame.as_deref(),
            Some("/app/test/cart.test.js")
        );
        // No message and no traceback: still a signature.
        assert_eq!(signature(None, None).message, "");
    }
}
