-- Quarantined tests per project (POST/DELETE /quarantine). The master mirrors each project's
-- active rows into the JetStream key-value bucket ptp_quarantine, which agents read; this table
-- is the truth the mirror is rebuilt from. Releasing deletes the row; an expired row stops
-- counting at once and is deleted by the project's next quarantine change.
CREATE TABLE IF NOT EXISTS quarantine (
    project    TEXT NOT NULL,
    test_id    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    since      INTEGER NOT NULL,
    expires_at INTEGER,
    auto       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project, test_id)
) WITHOUT ROWID;
