-- Compact storage (issue 13, item 4; see ptp_actors::interning): what repeats across cases is
-- stored once and referred to by an integer key. Converts the rows stored before it, here.

-- A run's key, made when its first chunk is stored (runs has a row only once the run is
-- complete, so the key cannot live there). INTEGER PRIMARY KEY: stable across VACUUM.
CREATE TABLE run_keys (
    run_key INTEGER PRIMARY KEY,
    run_id  TEXT NOT NULL UNIQUE
);

-- A test's identity, once per distinct (test_id, file, classname, name): agents name a test
-- by its id, and the other three come with it, so a test id has one row in practice. NULL is
-- kept apart from '' (an empty BLOB never equals a TEXT).
CREATE TABLE tests (
    test_key  INTEGER PRIMARY KEY,
    test_id   TEXT NOT NULL,
    file      TEXT,
    classname TEXT,
    name      TEXT NOT NULL
);
CREATE UNIQUE INDEX tests_identity
    ON tests (test_id, ifnull(file, x''), ifnull(classname, x''), name);

-- Messages, tracebacks, captured output and owner lists (JSON), once per distinct body.
-- Unique by the body itself, not by a digest: no collision can ever map a case to another
-- text, and SQLite can convert old rows without a hash function.
CREATE TABLE texts (
    text_key INTEGER PRIMARY KEY,
    body     TEXT NOT NULL UNIQUE
);

-- The cases. Keyed by (run, outcome, chunk, idx), WITHOUT ROWID: a run's cases lie together,
-- failures first, and that key serves what test_cases_by_run did, so no rowid and no index
-- for it. (chunk, idx) is unique within a run, so the key is too.
CREATE TABLE cases (
    run_key       INTEGER NOT NULL,
    outcome       INTEGER NOT NULL,
    chunk         INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    test_key      INTEGER NOT NULL,
    duration_secs REAL NOT NULL,
    retries       INTEGER NOT NULL,
    flaky         INTEGER NOT NULL,
    quarantined   INTEGER NOT NULL,
    sig           INTEGER,
    message_key   INTEGER,
    traceback_key INTEGER,
    output_key    INTEGER,
    owners_key    INTEGER,
    PRIMARY KEY (run_key, outcome, chunk, idx)
) WITHOUT ROWID;
CREATE INDEX cases_by_run_test ON cases (run_key, test_key);
CREATE INDEX cases_retried ON cases (run_key) WHERE flaky = 1;

-- Convert the stored rows.
INSERT INTO run_keys (run_id) SELECT run_id FROM test_cases GROUP BY run_id ORDER BY MIN(rowid);
INSERT OR IGNORE INTO tests (test_id, file, classname, name)
    SELECT test_id, file, classname, name FROM test_cases ORDER BY rowid;
INSERT OR IGNORE INTO texts (body)
    SELECT message FROM test_cases WHERE message IS NOT NULL
    UNION ALL SELECT traceback FROM test_cases WHERE traceback IS NOT NULL
    UNION ALL SELECT output FROM test_cases WHERE output IS NOT NULL
    UNION ALL SELECT owners FROM test_cases WHERE owners IS NOT NULL;
INSERT INTO cases (run_key, outcome, chunk, idx, test_key, duration_secs, retries, flaky,
                   quarantined, sig, message_key, traceback_key, output_key, owners_key)
    SELECT k.run_key, c.outcome, c.chunk, c.idx,
           (SELECT t.test_key FROM tests t WHERE t.test_id = c.test_id AND t.file IS c.file
              AND t.classname IS c.classname AND t.name = c.name),
           c.duration_secs, c.retries, c.flaky, c.quarantined, c.sig,
           (SELECT x.text_key FROM texts x WHERE x.body = c.message),
           (SELECT x.text_key FROM texts x WHERE x.body = c.traceback),
           (SELECT x.text_key FROM texts x WHERE x.body = c.output),
           (SELECT x.text_key FROM texts x WHERE x.body = c.owners)
    FROM test_cases c JOIN run_keys k ON k.run_id = c.run_id;
DROP TABLE test_cases;

-- The cases as they were stored before, for readers that want every column by name. SQLite
-- flattens the view into the query: `run_id = ?` is a probe of run_keys, then a range of the
-- cases' key; the texts are read only for the columns a query names.
CREATE VIEW test_cases AS
    SELECT k.run_id AS run_id, c.chunk AS chunk, c.idx AS idx, t.test_id AS test_id,
           t.file AS file, t.classname AS classname, t.name AS name, c.outcome AS outcome,
           c.duration_secs AS duration_secs,
           (SELECT body FROM texts WHERE text_key = c.message_key) AS message,
           (SELECT body FROM texts WHERE text_key = c.traceback_key) AS traceback,
           (SELECT body FROM texts WHERE text_key = c.output_key) AS output,
           c.retries AS retries, c.flaky AS flaky, c.sig AS sig,
           (SELECT body FROM texts WHERE text_key = c.owners_key) AS owners,
           c.quarantined AS quarantined
    FROM cases c JOIN run_keys k ON k.run_key = c.run_key JOIN tests t ON t.test_key = c.test_key;
