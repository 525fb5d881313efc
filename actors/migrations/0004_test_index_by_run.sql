-- 0003's index on (test_id, run_id) put every stored case at a random place in a large B-tree:
-- at 3,000,000 cases ingest fell from 39k to 10k cases/s (bench, 50 publishers x 60,000 cases).
-- Keyed by run first, a run's cases land side by side, as in test_cases_by_run, and the
-- analytics reads probe (run, test) for the runs of their window instead.
DROP INDEX IF EXISTS test_cases_by_test;
CREATE INDEX IF NOT EXISTS test_cases_by_run_test ON test_cases (run_id, test_id);
