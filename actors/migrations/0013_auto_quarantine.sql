-- Automatic quarantine (issue 15; see ptp_actors::auto_quarantine).

-- Consecutive clean runs of a quarantined test since it was quarantined: a run in which it
-- passed (without retries) adds one, a run in which it failed, errored or passed only on retry
-- resets it to 0, a run without it changes nothing. Kept by the writer in the transaction that
-- completes a run; an automatic entry is released once it reaches --release-after-clean-runs.
ALTER TABLE quarantine ADD COLUMN clean_runs INTEGER NOT NULL DEFAULT 0;

-- The last release of a test (by a person or automatically), as the completion order (runs.seq)
-- at that moment: flaky evidence from runs completed before it never quarantines the test again.
CREATE TABLE IF NOT EXISTS quarantine_released (
    project   TEXT NOT NULL,
    test_id   TEXT NOT NULL,
    after_seq INTEGER NOT NULL,
    PRIMARY KEY (project, test_id)
) WITHOUT ROWID;
