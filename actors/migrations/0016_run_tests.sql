-- Per-run test summaries (issue 13, item 2; see ptp_actors::run_tests): one row per complete
-- run, written by the writer in the transaction that completes the run and deleted with its
-- cases, so /tests/slow and /compare read one small blob per run instead of every case.
-- `tests` holds, per distinct test of the run sorted by test_key, the worst outcome, the summed
-- duration of its cases with outcome 0..=3 and of all its cases (encoding: run_tests.rs).
CREATE TABLE run_tests (
    run_key INTEGER PRIMARY KEY,
    tests   BLOB NOT NULL
);

-- 'run_tests_built': whether every run stored before this migration has its summary (1) or
-- the first start after it still has to write them (0); a database without runs has nothing
-- to fill. 'test_aliases': whether some test id has more than one identity in `tests` (another
-- file, class or name); the interning sets it when it happens, and the readers of run_tests
-- then merge summaries by test id instead of by test key.
INSERT OR IGNORE INTO rollup_state (name, value)
    SELECT 'run_tests_built', NOT EXISTS (SELECT 1 FROM runs);
INSERT OR IGNORE INTO rollup_state (name, value)
    SELECT 'test_aliases', EXISTS (SELECT 1 FROM tests GROUP BY test_id HAVING COUNT(*) > 1);
