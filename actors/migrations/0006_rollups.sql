-- Derived state written with the data (issue 13; see ptp_actors::rollups). The writer keeps
-- these tables in the transaction that completes a run and in the one that prunes it, so a
-- start reads none of the history and /workers and /failures/stats read a few rows.
-- They are filled from the stored runs by the first start after this migration (rollup_state
-- says whether that happened), not here: the rule lives in one place, rollups::rebuild.

-- The project-wide trend is a project's newest runs across its branches.
CREATE INDEX IF NOT EXISTS runs_by_project_time ON runs (project, started_at DESC, run_id DESC);

-- Projects that have stored runs, with how many.
CREATE TABLE IF NOT EXISTS projects (
    project TEXT PRIMARY KEY NOT NULL,
    runs    INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per worker that has stored runs. last_seen is the newest MIN(finished_at,
-- received_at): a worker's clock set to the future cannot pin it as recently seen. The last_*
-- columns describe its newest run by (started_at, run_id); host is that run's host.
CREATE TABLE IF NOT EXISTS worker_stats (
    worker_id       TEXT PRIMARY KEY NOT NULL,
    run_count       INTEGER NOT NULL,
    pass_rate_sum   REAL NOT NULL,
    pass_rate_n     INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    last_started_at INTEGER NOT NULL,
    last_run_id     TEXT NOT NULL,
    last_status     TEXT NOT NULL,
    last_project    TEXT NOT NULL,
    host            TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS worker_stats_by_seen ON worker_stats (last_seen DESC, worker_id);

-- Per test of a project: the runs in which it failed or errored (once per run), and its
-- newest failure by (started_at, run_id) with the message of that run's first failing case.
CREATE TABLE IF NOT EXISTS test_failures (
    project        TEXT NOT NULL,
    test_id        TEXT NOT NULL,
    fail_count     INTEGER NOT NULL,
    last_failed_at INTEGER NOT NULL,
    last_run_id    TEXT NOT NULL,
    last_message   TEXT,
    UNIQUE (project, test_id)
);
CREATE INDEX IF NOT EXISTS test_failures_ranked
    ON test_failures (project, fail_count DESC, last_failed_at DESC, test_id);
CREATE INDEX IF NOT EXISTS test_failures_ranked_all
    ON test_failures (fail_count DESC, last_failed_at DESC, test_id);

-- The same counts per UTC day of the runs' start (day = started_at / 86400000), for windows
-- (`since`, `days`): whole days are summed here, the partial first day is counted exactly.
CREATE TABLE IF NOT EXISTS test_failure_days (
    project TEXT NOT NULL,
    day     INTEGER NOT NULL,
    test_id TEXT NOT NULL,
    runs    INTEGER NOT NULL,
    PRIMARY KEY (project, day, test_id)
) WITHOUT ROWID;

-- Named values of the rollups; 'built': whether the tables above were filled from the runs
-- stored before they existed (1) or not yet (0).
CREATE TABLE IF NOT EXISTS rollup_state (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO rollup_state (name, value) VALUES ('built', 0);
