-- Test analytics (flaky tests, per-test history, slow tests) look tests up by id across runs.
-- One index on (test_id, run_id): a test's history is an index range, and the flaky detector
-- reads only its candidate tests' rows. It costs one more B-tree insert per stored case.
CREATE INDEX IF NOT EXISTS test_cases_by_test ON test_cases (test_id, run_id);

-- Cases that passed only after retries (flakyFailure, reruns): few, so a partial index finds
-- them without reading every case of a run.
CREATE INDEX IF NOT EXISTS test_cases_retried ON test_cases (run_id) WHERE flaky = 1;

-- "This flaky test is fixed": evidence from runs that started before cleared_at is ignored,
-- so the test is flaky again only if it flips after the fix.
CREATE TABLE IF NOT EXISTS flaky_cleared (
    project    TEXT NOT NULL,
    test_id    TEXT NOT NULL,
    cleared_at INTEGER NOT NULL,
    note       TEXT,
    PRIMARY KEY (project, test_id)
) WITHOUT ROWID;
