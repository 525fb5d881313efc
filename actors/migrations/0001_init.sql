-- pytest-platform schema, version 1.
-- Times are integer milliseconds since the Unix epoch (UTC): compact, ordered, index-friendly.
-- Outcomes are small integers ordered failures-first (see ptp_actors::model::Outcome):
--   0 failed, 1 error, 2 xpassed, 3 passed, 4 skipped, 5 xfailed.

-- A run is visible here only once complete: every chunk arrived and the counts matched the cases.
CREATE TABLE runs (
    run_id         TEXT PRIMARY KEY NOT NULL,
    project        TEXT NOT NULL,
    branch         TEXT,
    commit_sha     TEXT,
    worker_id      TEXT NOT NULL,
    host           TEXT,
    runner         TEXT,
    command        TEXT,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER NOT NULL,
    duration_secs  REAL NOT NULL,
    exit_code      INTEGER,
    status         TEXT NOT NULL,
    total          INTEGER NOT NULL,
    passed         INTEGER NOT NULL,
    failed         INTEGER NOT NULL,
    error          INTEGER NOT NULL,
    skipped        INTEGER NOT NULL,
    xfailed        INTEGER NOT NULL,
    xpassed        INTEGER NOT NULL,
    pass_rate      REAL,
    cases_complete INTEGER NOT NULL,
    note           TEXT,
    received_at    INTEGER NOT NULL
);
CREATE INDEX runs_by_time ON runs (started_at DESC, run_id DESC);
CREATE INDEX runs_by_project ON runs (project, branch, started_at DESC, run_id DESC);
CREATE INDEX runs_by_worker ON runs (worker_id, started_at DESC, run_id DESC);

-- Test cases, written chunk by chunk as they arrive; reachable through the API only via a complete run.
CREATE TABLE test_cases (
    run_id        TEXT NOT NULL,
    chunk         INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    test_id       TEXT NOT NULL,
    file          TEXT,
    classname     TEXT,
    name          TEXT NOT NULL,
    outcome       INTEGER NOT NULL,
    duration_secs REAL NOT NULL,
    message       TEXT,
    traceback     TEXT,
    output        TEXT,
    retries       INTEGER NOT NULL,
    flaky         INTEGER NOT NULL
);
CREATE INDEX test_cases_by_run ON test_cases (run_id, outcome, chunk, idx);

-- Which chunks of which runs are stored: the writer's idempotence key.
CREATE TABLE run_chunks (
    run_id      TEXT NOT NULL,
    chunk       INTEGER NOT NULL,
    cases       INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, chunk)
) WITHOUT ROWID;

-- Final messages whose chunks have not all arrived yet (info is the run as JSON).
CREATE TABLE pending_runs (
    run_id      TEXT PRIMARY KEY NOT NULL,
    chunks      INTEGER NOT NULL,
    info        TEXT NOT NULL,
    received_at INTEGER NOT NULL
);

-- Messages refused by ingest or the writer, with the reason; acked so the stream keeps flowing.
CREATE TABLE rejected (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    subject     TEXT,
    msg_id      TEXT,
    run_id      TEXT,
    reason      TEXT NOT NULL,
    excerpt     TEXT
);
CREATE INDEX rejected_by_time ON rejected (received_at DESC);
