-- Webhooks (issue 15, item 4; see ptp_actors::webhooks): an outbox written in the same
-- transaction as what the events describe (a completed run, a quarantine change), read by the
-- master's delivery task.
-- One row per event; `data` is the event's type-specific fields as a JSON object.
CREATE TABLE IF NOT EXISTS webhook_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    project     TEXT NOT NULL,
    branch      TEXT,
    run_id      TEXT,
    test_id     TEXT,
    data        TEXT NOT NULL
);
-- One row per (target, event): state 0 pending, 1 delivered, 2 dead (gave up or dropped over the
-- bound; `last_error` says which). A target delivers its pending rows in event order.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    target          TEXT NOT NULL,
    event_seq       INTEGER NOT NULL,
    state           INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    done_at         INTEGER,
    last_error      TEXT,
    PRIMARY KEY (target, event_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_state ON webhook_deliveries (state, target, event_seq);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_event ON webhook_deliveries (event_seq);
-- "The previous run of this project and branch": newly failing tests are found by completion order.
CREATE INDEX IF NOT EXISTS runs_by_branch_seq ON runs (project, branch, seq);
