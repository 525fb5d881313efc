-- Dead letters: messages that decoded and validated but that SQLite refused to store
-- again and again (max deliveries reached while the database accepted other writes).
-- They keep their whole payload so they can be replayed once the cause is fixed.
ALTER TABLE rejected ADD COLUMN payload BLOB;

-- Retention prunes by start time; completed runs older than the cut-off go together with their cases.
CREATE INDEX IF NOT EXISTS rejected_by_run ON rejected (run_id);
