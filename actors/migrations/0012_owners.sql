-- Owners and quarantine marks (issue 15; see ptp_actors::owners).

-- Per case, as the agent sent it: the owners of the test's file from CODEOWNERS (a JSON array of
-- names, NULL when none) and whether the test was quarantined when it ran. The outcome stays
-- the real one.
ALTER TABLE test_cases ADD COLUMN owners TEXT;
ALTER TABLE test_cases ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0;

-- Per run: how many of its failed or errored cases were quarantined (counted when it completes).
ALTER TABLE runs ADD COLUMN quarantined_failures INTEGER NOT NULL DEFAULT 0;

-- Derived state written with the data: the owners of each test of a project, as the newest
-- completed run that had the test named them (one row per owner; a run replaces the rows of
-- every test it carries). The `owner=` filters of /failures/stats, /flaky, /failures/clusters
-- and /tests/slow read it: by (owner, project) with or without a project.
CREATE TABLE IF NOT EXISTS test_owners (
    project TEXT NOT NULL,
    test_id TEXT NOT NULL,
    owner   TEXT NOT NULL,
    PRIMARY KEY (project, test_id, owner)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS test_owners_by_owner ON test_owners (owner, project, test_id);
