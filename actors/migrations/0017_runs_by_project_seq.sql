-- A project's runs in completion order: when a test becomes tracked, the writer reads the
-- project's newest evidence runs before it by seq and writes the test's verdicts in them
-- (flaky::backfill_evidence), so a window of recent runs is read from kept rows alone.
CREATE INDEX IF NOT EXISTS runs_by_project_seq ON runs (project, seq);
