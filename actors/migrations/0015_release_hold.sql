-- A person's release holds automatic quarantine off (issue 15; see ptp_actors::auto_quarantine).
-- When a person releases a test (DELETE /quarantine), automatic quarantine leaves it alone for
-- --auto-quarantine-days from that moment, even on new failures: the person decided, the detector
-- does not overrule them the next run. Releases by the detector itself (clean runs) or by clearing
-- the flaky verdict hold nothing.
ALTER TABLE quarantine_released ADD COLUMN by_person INTEGER NOT NULL DEFAULT 0;
ALTER TABLE quarantine_released ADD COLUMN released_at INTEGER;
