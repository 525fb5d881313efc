//! Per-run test summaries (issue 13, item 2): what `/tests/slow` and
//! `/compare` answer from, written with the data instead of grouping every
//! case of a window at each question.
//!
//! Shape (migration 0016): `run_tests(run_key, tests)`, one row per
//! complete run. `tests` lists each distinct test (`tests.test_key`) of the
//! run once, sorted by key, with
//! - its worst outcome (`MIN(outcome)`: the stored order is severity order,
//!   see [`crate::model::Outcome`]),
//! - `ran_secs`: the summed duration of its cases with outcome codes 0..=3
//!   (failed, error, xpassed, passed: what slow tests sum),
//! - `all_secs`: the summed duration of all its cases (what a comparison
//!   shows).
//!
//! Both sums are SQLite's `SUM` over the test's cases of the run, grouped
//! by [`GROUP_SQL`], the one statement every writer of a summary uses on
//! SQLite. A backend whose `SUM` adds otherwise (PostgreSQL adds plainly,
//! in whatever order its plan reads) groups the cases with [`crate::store::summary::group`]
//! instead: the same grouping with SQLite's `SUM` ([`crate::store::summary::SqliteSum`]), so a
//! summary is byte-identical on both (a test checks [`crate::store::summary::group`] against
//! [`GROUP_SQL`]).
//!
//! Encoding ([`crate::store::summary::encode`], [`crate::store::summary::decode`]): a format byte (1), the number of
//! tests as a LEB128 varint, then per test the key as a varint of its
//! difference from the previous key (from 0; wrapping, so any key order
//! round-trips, sorted keys are short), a head byte (bits 0-2 the worst
//! outcome code, bit 3: `ran_secs` follows, bit 4: `all_secs` follows) and
//! the durations that follow as f64 little-endian. A duration is left out
//! when it is +0.0 (`ran_secs`) or bit-identical to `ran_secs`
//! (`all_secs`), so a test whose cases are all of one kind (all ran, or
//! all skipped) takes **10 bytes** (1-byte key delta, head, one f64), one
//! with both kinds 18, one with no duration at all 2: about 100 KB for a
//! run of 10,000 tests, against the cases' several hundred.
//!
//! Guarantees:
//! - The writer calls [`record`] in the transaction that makes a run
//!   visible; [`crate::store::sqlite::interning`]'s `delete_cases` deletes the row with
//!   the run's cases, in the transaction that prunes, refuses or expires
//!   it. So every run in `runs` has exactly its summary, equal to
//!   [`summarize`] over its remaining cases (the property test checks it).
//! - A start reads one row ([`ensure_built`]), except the first start
//!   after migration 0016, which writes the summaries of the runs stored
//!   before it, run by run (bounded memory), and logs how many.
//! - Test ids are not in the blob: readers resolve the keys they need
//!   ([`names`]). A test id almost always has one key; when some has
//!   several (another file, class or name), `rollup_state.test_aliases` is
//!   set ([`super::interning::aliases`]) and readers merge by test id (slow tests under the
//!   smallest key of the id, [`super::interning::alias_keys`]).

use std::collections::HashMap;

use sqlx::{SqliteConnection, SqlitePool};

use crate::store::summary::{TestSummary, decode_stored, encode, missing, summary_of};

/// The one statement grouping a run's cases (`?1`: its `run_key`) into
/// summary rows: (test_key, worst outcome, ran seconds, all seconds),
/// sorted by key.
pub(crate) const GROUP_SQL: &str = "SELECT test_key, MIN(outcome), \
     CAST(SUM(CASE WHEN outcome <= 3 THEN duration_secs END) AS REAL), \
     CAST(SUM(duration_secs) AS REAL) \
     FROM cases INDEXED BY cases_by_run_test WHERE run_key = ?1 \
     GROUP BY test_key ORDER BY test_key";

/// The summary of the cases stored under `run_key`, encoded
/// ([`GROUP_SQL`]).
pub(crate) async fn summarize(
    conn: &mut SqliteConnection,
    run_key: i64,
) -> Result<Vec<u8>, sqlx::Error> {
    let rows: Vec<(i64, i64, Option<f64>, f64)> = sqlx::query_as(GROUP_SQL)
        .bind(run_key)
        .fetch_all(conn)
        .await?;
    let tests = rows
        .into_iter()
        .map(|(key, code, ran, all)| summary_of(key, code, ran, Some(all)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(encode(&tests))
}

/// Writes the summary of run `run_id` (its cases stored), replacing any.
/// A run without cases gets a key here (its chunks made none) and an
/// empty summary, so every run in `runs` has one. Call in the transaction
/// that makes the run visible.
pub(crate) async fn record(conn: &mut SqliteConnection, run_id: &str) -> Result<(), sqlx::Error> {
    let keys = crate::store::sqlite::interning::run_keys(&mut *conn, &[run_id]).await?;
    let Some(&run_key) = keys.first() else {
        return Err(sqlx::Error::Protocol(format!("run {run_id} got no key")));
    };
    let blob = summarize(&mut *conn, run_key).await?;
    sqlx::query("INSERT OR REPLACE INTO run_tests (run_key, tests) VALUES (?, ?)")
        .bind(run_key)
        .bind(blob)
        .execute(conn)
        .await?;
    Ok(())
}

/// The summary of run `run_id`: `None` when no such run is stored; an
/// error when the run is stored without one (never, see the module docs).
pub(crate) async fn of_run(
    conn: &mut SqliteConnection,
    run_id: &str,
) -> Result<Option<(i64, Vec<TestSummary>)>, sqlx::Error> {
    let (stored, summary): (bool, Option<(i64, Vec<u8>)>) = {
        let row: (bool, Option<i64>, Option<Vec<u8>>) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = ?1), k.run_key, t.tests \
             FROM (SELECT 1) LEFT JOIN run_keys k ON k.run_id = ?1 \
             LEFT JOIN run_tests t ON t.run_key = k.run_key",
        )
        .bind(run_id)
        .fetch_one(conn)
        .await?;
        (row.0, row.1.zip(row.2))
    };
    match summary {
        Some((key, blob)) => Ok(Some((key, decode_stored(&blob)?))),
        None if stored => Err(missing(run_id)),
        None => Ok(None),
    }
}

/// The test ids of `keys`; an error if one has none.
pub(crate) async fn names(
    conn: &mut SqliteConnection,
    keys: impl IntoIterator<Item = i64>,
) -> Result<HashMap<i64, String>, sqlx::Error> {
    let keys: Vec<i64> = keys.into_iter().collect();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    // One bind whatever the count: a JSON array.
    let list = serde_json::to_string(&keys).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT test_key, test_id FROM tests WHERE test_key IN (SELECT value FROM json_each(?))",
    )
    .bind(list)
    .fetch_all(conn)
    .await?;
    let names: HashMap<i64, String> = rows.into_iter().collect();
    match keys.iter().find(|k| !names.contains_key(k)) {
        Some(k) => Err(sqlx::Error::Protocol(format!(
            "test key {k} of a stored summary has no test"
        ))),
        None => Ok(names),
    }
}

/// Runs whose summaries the first start after migration 0016 writes per
/// transaction.
const FILL_PAGE: i64 = 100;

/// Writes the summaries of the runs stored before migration 0016 if that
/// was never done; otherwise reads one row. Run by run, a page of runs per
/// transaction, so memory stays bounded by one run and an interrupted fill
/// resumes where it stopped.
pub(crate) async fn ensure_built(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let built: Option<(i64,)> =
        sqlx::query_as("SELECT value FROM rollup_state WHERE name = 'run_tests_built'")
            .fetch_optional(pool)
            .await?;
    if built.is_some_and(|(b,)| b != 0) {
        return Ok(());
    }
    tracing::info!(
        "writing the test summaries of the runs stored before them (once, after an upgrade)"
    );
    let mut after = i64::MIN;
    let mut written = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let page: Vec<(i64, String)> = sqlx::query_as(
            "SELECT r.rowid, r.run_id FROM runs r WHERE r.rowid > ? AND NOT EXISTS \
               (SELECT 1 FROM run_keys k JOIN run_tests t ON t.run_key = k.run_key \
                WHERE k.run_id = r.run_id) \
             ORDER BY r.rowid LIMIT ?",
        )
        .bind(after)
        .bind(FILL_PAGE)
        .fetch_all(&mut *tx)
        .await?;
        let Some(&(last, _)) = page.last() else {
            sqlx::query(
                "INSERT INTO rollup_state (name, value) VALUES ('run_tests_built', 1) \
                 ON CONFLICT (name) DO UPDATE SET value = 1",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            break;
        };
        for (_, run_id) in &page {
            record(&mut tx, run_id).await?;
        }
        tx.commit().await?;
        written += page.len() as u64;
        after = last;
    }
    tracing::info!(runs = written, "test summaries written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use proptest::prelude::*;

    use super::*;
    use crate::model::{CaseRecord, Outcome};
    use crate::read::flaky::Window;
    use crate::read::history::{SlowRule, slow_tests};
    use crate::store::summary::{DecodeError, decode, group};
    use crate::testing::{case, run, start, store, t0};

    fn t(key: i64, worst: Outcome, ran: f64, all: f64) -> TestSummary {
        TestSummary {
            key,
            worst,
            ran_secs: ran,
            all_secs: all,
        }
    }

    #[test]
    fn a_test_of_one_kind_takes_ten_bytes() {
        let tests = [
            t(1, Outcome::Passed, 0.5, 0.5),
            t(2, Outcome::Skipped, 0.0, 0.25),
            t(3, Outcome::Failed, 1.0, 1.5),
            t(200, Outcome::Xfailed, 0.0, 0.0),
        ];
        let bytes = encode(&tests);
        // Format, count; 10 + 10 + 18 + (2-byte delta + head).
        assert_eq!(bytes.len(), 2 + 10 + 10 + 18 + 3);
        assert_eq!(decode(&bytes), Ok(tests.to_vec()));
        assert_eq!(decode(&encode(&[])), Ok(Vec::new()));
    }

    #[test]
    fn damaged_summaries_are_refused() {
        let bytes = encode(&[t(7, Outcome::Error, 2.0, 2.0)]);
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[9]), Err(DecodeError::Format(9)));
        assert_eq!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(DecodeError::Trailing(1)));
        let mut bad = bytes.clone();
        bad[3] = 6; // the head byte: outcome code 6
        assert_eq!(decode(&bad), Err(DecodeError::Outcome(6)));
        // A count far beyond the bytes: refused, not allocated.
        assert_eq!(
            decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(DecodeError::Truncated)
        );
        let mut long = vec![1u8];
        long.extend([0xff; 11]);
        assert_eq!(decode(&long), Err(DecodeError::Varint));
    }

    fn summary() -> impl Strategy<Value = TestSummary> {
        (
            any::<i64>(),
            0..6i64,
            prop_oneof![Just(0.0), Just(-0.0), any::<u64>().prop_map(f64::from_bits)],
            prop_oneof![Just(0.0), any::<u64>().prop_map(f64::from_bits)],
            any::<bool>(),
        )
            .prop_map(|(key, code, ran, all, same)| TestSummary {
                key,
                worst: Outcome::from_code(code).unwrap_or(Outcome::Error),
                ran_secs: ran,
                all_secs: if same { ran } else { all },
            })
    }

    /// Bit for bit: NaNs and -0.0 included.
    fn bits(tests: &[TestSummary]) -> Vec<(i64, Outcome, u64, u64)> {
        tests
            .iter()
            .map(|t| (t.key, t.worst, t.ran_secs.to_bits(), t.all_secs.to_bits()))
            .collect()
    }

    proptest! {
        #[test]
        fn every_summary_round_trips(
            mut tests in proptest::collection::vec(summary(), 0..50),
            sorted in any::<bool>(),
        ) {
            if sorted {
                tests.sort_by_key(|t| t.key);
            }
            let bytes = encode(&tests);
            let back = decode(&bytes).expect("decodes");
            prop_assert_eq!(bits(&back), bits(&tests));
        }

        #[test]
        fn no_input_panics_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }

    /// [`group`] gives what [`GROUP_SQL`] gives, bit for bit, over seeded
    /// random runs whose durations a plain sum adds up differently.
    #[tokio::test]
    async fn group_in_rust_equals_group_sql_bit_for_bit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::DbOptions::new(dir.path().join("g.db"));
        let pool = crate::store::sqlite::db::open_writer(&db)
            .await
            .expect("open");
        let mut conn = pool.acquire().await.expect("connection");
        const SECS: [f64; 9] = [0.1, 0.2, 0.3, 1.7, 3.0, 1e16, -0.0, 1e-300, 123.456];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut plain_differs = 0;
        for run_key in 0..300i64 {
            let mut rows = Vec::new();
            for idx in 0..next(14) as i64 {
                let (key, code, secs) = (next(4) as i64, next(6) as i64, SECS[next(SECS.len())]);
                sqlx::query(
                    "INSERT INTO cases (run_key, outcome, chunk, idx, test_key, duration_secs, \
                     retries, flaky, quarantined) VALUES (?, ?, 0, ?, ?, ?, 0, 0, 0)",
                )
                .bind(run_key)
                .bind(code)
                .bind(idx)
                .bind(key)
                .bind(secs)
                .execute(&mut *conn)
                .await
                .expect("case");
                rows.push((key, code, idx, secs));
            }
            rows.sort_by_key(|r| (r.0, r.1, r.2));
            let grouped = group(rows.iter().map(|r| (r.0, r.1, r.3))).expect("group");
            let stored = summarize(&mut conn, run_key).await.expect("summarize");
            assert_eq!(encode(&grouped), stored, "run {run_key}: {rows:?}");
            for t in &grouped {
                let plain: f64 = rows
                    .iter()
                    .filter(|r| r.0 == t.key)
                    .fold(0.0, |s, r| s + r.3);
                if plain.to_bits() != t.all_secs.to_bits() {
                    plain_differs += 1;
                }
            }
        }
        assert!(plain_differs > 10, "the runs test the compensation");
        drop(conn);
        pool.close().await;
    }

    fn timed(test: &str, outcome: Outcome, secs: f64) -> CaseRecord {
        CaseRecord {
            duration_secs: secs,
            ..case(test, outcome, None)
        }
    }

    /// A test id with two identities (another file) is one test, in slow
    /// tests and in a comparison, as when both read every case.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_test_id_with_two_identities_is_one_test() {
        use crate::testing::{load_tests_from_cases, slow_tests_from_cases};
        let dir = tempfile::tempdir().expect("temp dir");
        let (actors, pool) = start(&dir.path().join("a.db")).await;
        let mut conn = pool.acquire().await.expect("connection");
        assert!(
            !super::super::interning::aliases(&mut conn)
                .await
                .expect("flag")
        );
        let runs = (0..6i64)
            .map(|i| {
                let moved = CaseRecord {
                    file: Some("tests/new_home.py".into()),
                    ..timed("t::moved", Outcome::Error, 0.5 * i as f64)
                };
                let mut cases = vec![
                    timed("t::moved", Outcome::Passed, 1.0),
                    timed("t::other", Outcome::Passed, 0.3),
                ];
                if i % 2 == 1 {
                    cases.push(moved);
                }
                run(
                    &format!("r{i}"),
                    "p",
                    "w",
                    t0() + Duration::minutes(i),
                    cases,
                )
            })
            .collect();
        store(&actors, runs).await;
        assert!(
            super::super::interning::aliases(&mut conn)
                .await
                .expect("flag")
        );
        let w = Window {
            project: Some("p".into()),
            branch: None,
            since: None,
            runs: 10,
            tests: Default::default(),
        };
        let rule = SlowRule {
            recent: 2,
            factor: 1.0,
            min_secs: 0.0,
        };
        let kept = slow_tests(&pool.clone().into(), &w, rule, 10)
            .await
            .expect("slow tests");
        assert_eq!(kept, slow_tests_from_cases(&pool, &w, rule, 10).await);
        assert_eq!(kept.tests_seen, 2);
        for run_id in ["r4", "r5"] {
            let kept = crate::read::compare::load_tests(&pool.clone().into(), run_id)
                .await
                .expect("load");
            assert_eq!(kept, load_tests_from_cases(&pool, run_id).await);
        }
        drop(conn);
        pool.close().await;
        actors.stop();
    }

    /// A database whose runs were stored before migration 0016 gets their
    /// summaries at the first start after it, and `/tests/slow` answers
    /// as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_start_after_the_migration_writes_the_summaries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.db");
        let (actors, pool) = start(&path).await;
        let runs = (0..8i64)
            .map(|i| {
                let slow = if i >= 5 { 3.0 } else { 1.0 };
                run(
                    &format!("r{i}"),
                    "p",
                    "w",
                    t0() + Duration::minutes(i),
                    vec![
                        timed("t::slow", Outcome::Passed, slow),
                        timed("t::twice", Outcome::Failed, 0.25),
                        timed("t::twice", Outcome::Skipped, 0.5),
                        timed("t::skipped", Outcome::Skipped, 2.0),
                    ],
                )
            })
            .collect();
        store(&actors, runs).await;
        // A run without cases has a summary too.
        store(
            &actors,
            vec![run("empty", "p", "w", t0() + Duration::minutes(9), vec![])],
        )
        .await;
        let w = Window {
            project: Some("p".into()),
            branch: None,
            since: None,
            runs: 20,
            tests: Default::default(),
        };
        let before = slow_tests(&pool.clone().into(), &w, SlowRule::default(), 10)
            .await
            .expect("slow tests");
        assert_eq!(before.runs_considered, 9);
        assert_eq!(before.tests_seen, 2, "t::skipped never ran");
        assert_eq!(before.regressions_total, 1);
        let read = "SELECT run_key, tests FROM run_tests ORDER BY run_key";
        let stored: Vec<(i64, Vec<u8>)> = sqlx::query_as(read)
            .fetch_all(&pool)
            .await
            .expect("summaries");
        assert_eq!(stored.len(), 9);
        let twice = decode(&stored[0].1).expect("decodes");
        assert_eq!(twice.len(), 3);
        assert_eq!(
            (twice[1].worst, twice[1].ran_secs, twice[1].all_secs),
            (Outcome::Failed, 0.25, 0.75)
        );
        // As migration 0016 leaves a database written before it.
        for sql in [
            "DELETE FROM run_tests",
            "UPDATE rollup_state SET value = 0 WHERE name = 'run_tests_built'",
        ] {
            sqlx::query(sql).execute(&pool).await.expect(sql);
        }
        pool.close().await;
        actors.stop();
        let (actors, pool) = start(&path).await;
        let refilled: Vec<(i64, Vec<u8>)> = sqlx::query_as(read)
            .fetch_all(&pool)
            .await
            .expect("summaries");
        assert_eq!(refilled, stored);
        let after = slow_tests(&pool.clone().into(), &w, SlowRule::default(), 10)
            .await
            .expect("slow tests");
        assert_eq!(after, before);
        pool.close().await;
        actors.stop();
    }
}
