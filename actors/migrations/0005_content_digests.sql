-- Content digests (SHA-256 hex, see ptp_nats::schema::CasesChunk::digest and RunFinal::digest):
-- a run id published again with other content is recorded as a conflict in `rejected`
-- instead of being dropped as a duplicate. NULL for rows stored before this migration.
ALTER TABLE run_chunks ADD COLUMN digest TEXT;
ALTER TABLE pending_runs ADD COLUMN digest TEXT;
ALTER TABLE runs ADD COLUMN digest TEXT;
