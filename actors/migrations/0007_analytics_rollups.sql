-- Analytics from what the writer keeps (issue 13, item 2; see ptp_actors::flaky and ::clusters).

-- Failure signatures (ptp_actors::clusters::signature), computed when a failed or errored case
-- is stored: its 48-bit signature key, and the signature once per key. NULL for passing cases
-- and for failures stored before this migration (those are computed when read).
ALTER TABLE test_cases ADD COLUMN sig INTEGER;
CREATE TABLE IF NOT EXISTS signatures (
    sig       INTEGER PRIMARY KEY,
    exception TEXT,
    message   TEXT NOT NULL,
    frame     TEXT
);

-- The order in which runs became visible (1, 2, ...; NULL for runs stored before this migration).
ALTER TABLE runs ADD COLUMN seq INTEGER;
INSERT OR IGNORE INTO rollup_state (name, value) VALUES ('seq', 0);

-- Flaky evidence per test. A test is tracked from the first complete, non-outage run in which
-- it failed, errored or passed on retry (since_seq: that run's seq). From then on every such
-- run records the test's verdict in `verdicts`, keyed by the run's seq first, so a run's rows
-- are appended together. Runs before since_seq have no rows for it: the flaky detector reads
-- those verdicts from the cases, as it did before.
CREATE TABLE IF NOT EXISTS tracked_tests (
    key       INTEGER PRIMARY KEY,
    project   TEXT NOT NULL,
    test_id   TEXT NOT NULL,
    since_seq INTEGER NOT NULL,
    UNIQUE (project, test_id)
);
CREATE TABLE IF NOT EXISTS verdicts (
    seq     INTEGER NOT NULL,
    key     INTEGER NOT NULL,
    failed  INTEGER NOT NULL,
    retried INTEGER NOT NULL,
    PRIMARY KEY (seq, key)
) WITHOUT ROWID;
