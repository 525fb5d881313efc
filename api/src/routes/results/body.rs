//! The two bodies `POST /results` takes, and their parsing: the agent's
//! full payload (`{"run", "cases"}`, the wire schema of `ptp-nats`) and
//! the original system's flat payload (counts plus failures), which
//! becomes a partial run.
//!
//! Shape: the shapes and their checks apart from the handler, which only
//! calls [`parse_post_body`] and publishes what it returns.
//!
//! Guarantees: a refused body names the field that is wrong (its path) and
//! what was expected; an original-shape body lists at most
//! [`MAX_LEGACY_FAILURES`] failures, refused while parsing, before the rest
//! is read; times are parsed leniently but never silently wrong.

use chrono::{DateTime, Utc};
use ptp_nats::schema::{self, RunInfo, TestCase};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiError;
/// The original system's payload: counts plus failures only.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LegacyRun {
    /// Run id (the original workers sent a uuid4).
    pub run_id: String,
    /// Worker id.
    pub worker_id: String,
    /// Project (default `default`).
    pub project: Option<String>,
    /// Branch.
    pub branch: Option<String>,
    /// Start time: RFC 3339 (`2024-05-01T12:00:00Z`), or ISO 8601 without
    /// an offset as the original worker sends it (`2024-05-01T12:00:00`,
    /// read as UTC). Default: when the master receives it.
    #[serde(default, deserialize_with = "lenient_time")]
    #[schema(value_type = Option<String>, example = "2024-05-01T12:00:00")]
    pub timestamp: Option<DateTime<Utc>>,
    /// Passed tests.
    #[serde(default)]
    pub passed: u64,
    /// Failed tests.
    #[serde(default)]
    pub failed: u64,
    /// Errored tests.
    #[serde(default)]
    pub error: u64,
    /// Skipped tests.
    #[serde(default)]
    pub skipped: u64,
    /// All tests (must equal the sum of the four counts when given).
    pub total: Option<u64>,
    /// Seconds.
    #[serde(default)]
    pub duration: f64,
    /// Ignored: the master computes the pass rate from the counts.
    pub pass_rate: Option<f64>,
    /// Failed tests (at most 100,000: [`MAX_LEGACY_FAILURES`]).
    #[serde(default, deserialize_with = "bounded_failures")]
    pub failures: Vec<LegacyFailure>,
}

/// A failure in the original system's payload.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LegacyFailure {
    /// Test id.
    pub nodeid: String,
    /// Seconds.
    #[serde(default)]
    pub duration: f64,
    /// Message.
    pub message: Option<String>,
}

/// Our own payload: a whole run with all its cases, as the agent builds it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FullRun {
    /// Run metadata and counts (the wire schema's `RunInfo`).
    #[schema(value_type = Object)]
    pub run: RunInfo,
    /// Every test case (the wire schema's `TestCase`).
    #[schema(value_type = Vec<Object>)]
    pub cases: Vec<TestCase>,
}

/// Either payload `POST /results` accepts (told apart by the `run` key:
/// present in the agent's shape, absent from the original system's).
#[derive(Debug, ToSchema)]
pub enum PostBody {
    /// `{"run": {...}, "cases": [...]}`.
    Full(FullRun),
    /// The original system's flat payload.
    Legacy(LegacyRun),
}

/// Most failures one original-shape run may list. Each costs far more in
/// memory than its few bytes of JSON; the original worker sent tens.
pub const MAX_LEGACY_FAILURES: usize = 100_000;

/// `failures`, refused as soon as it lists more than
/// [`MAX_LEGACY_FAILURES`] (before the rest is read).
fn bounded_failures<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<LegacyFailure>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<LegacyFailure>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a sequence of at most {MAX_LEGACY_FAILURES} failures")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(f) = seq.next_element()? {
                if out.len() == MAX_LEGACY_FAILURES {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_LEGACY_FAILURES} failures; publish large runs with ptp-agent"
                    )));
                }
                out.push(f);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

/// A time as the original worker may send it: RFC 3339, or ISO 8601 with
/// no offset (Python's `datetime.now().isoformat()`), read as UTC.
fn lenient_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    parse_time(&s).map(Some).map_err(serde::de::Error::custom)
}

/// The one rule for times sent in a body: RFC 3339, or naive ISO 8601 as UTC.
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    // FromStr, unlike parse_from_rfc3339, reads signed extended years
    // (`+262142-…`), which the window check then refuses by name.
    if let Ok(t) = s.parse::<DateTime<chrono::FixedOffset>>() {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(t.and_utc());
    }
    Err(format!(
        "{:?} is not a date and time; send RFC 3339 such as 2024-05-01T12:00:00Z \
         (a time without an offset, such as 2024-05-01T12:00:00, is read as UTC)",
        schema::truncate_marked(s.to_string(), 64)
    ))
}

/// Reads a `POST /results` body: the agent's shape when it has a `run`
/// key, else the original system's. A refusal names the field (its JSON
/// path), what was found and what is accepted.
pub fn parse_post_body(bytes: &[u8]) -> Result<(RunInfo, Vec<TestCase>), ApiError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        run: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not a JSON object: {}; send {{\"run\": ..., \"cases\": [...]}} \
             (the agent's shape) or the original system's flat run (see POST /results at /docs)",
            schema::truncate_marked(e.to_string(), 200)
        ))
    })?;
    fn read<'a, T: Deserialize<'a>>(bytes: &'a [u8], shape: &str) -> Result<T, ApiError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "body".to_string()
            } else {
                path
            };
            ApiError::BadRequest(format!(
                "{field}: {}; see POST /results at /docs for the fields of {shape}",
                schema::truncate_marked(e.inner().to_string(), 300)
            ))
        })
    }
    if probe.run.is_some() {
        let f: FullRun = read(bytes, "the agent's payload ({\"run\", \"cases\"})")?;
        Ok((f.run, f.cases))
    } else {
        legacy_to_run(read(bytes, "the original system's payload")?, Utc::now())
    }
}

fn legacy_to_run(l: LegacyRun, now: DateTime<Utc>) -> Result<(RunInfo, Vec<TestCase>), ApiError> {
    let bad = |e: String| ApiError::Unprocessable(e);
    // Summed wide: hostile counts near u64::MAX must not overflow.
    let sum = [l.passed, l.failed, l.error, l.skipped]
        .into_iter()
        .try_fold(0u64, u64::checked_add)
        .ok_or_else(|| {
            bad("passed + failed + error + skipped overflows; send real counts".into())
        })?;
    if let Some(total) = l.total
        && total != sum
    {
        return Err(bad(format!(
            "total ({total}) must equal passed + failed + error + skipped ({sum})"
        )));
    }
    schema::check_duration("duration", l.duration).map_err(bad)?;
    let started_at = l.timestamp.unwrap_or(now);
    schema::check_time("timestamp", started_at, now).map_err(bad)?;
    // Both bounded just above, so this cannot fail; checked all the same.
    let finished_at = chrono::TimeDelta::try_milliseconds((l.duration * 1000.0) as i64)
        .and_then(|d| started_at.checked_add_signed(d))
        .ok_or_else(|| bad("timestamp + duration is not a representable time".into()))?;
    let cases: Vec<TestCase> = l
        .failures
        .into_iter()
        .map(|f| TestCase {
            name: f
                .nodeid
                .rsplit("::")
                .next()
                .unwrap_or(&f.nodeid)
                .to_string(),
            test_id: f.nodeid,
            file: None,
            classname: None,
            outcome: schema::Outcome::Failed,
            duration_secs: f.duration,
            message: f
                .message
                .map(|m| schema::truncate_marked(m, schema::MAX_MESSAGE_BYTES)),
            traceback: None,
            output: None,
            retries: 0,
            flaky: false,
            owners: Vec::new(),
            quarantined: false,
        })
        .collect();
    let counts = schema::Counts {
        total: sum,
        passed: l.passed,
        failed: l.failed,
        error: l.error,
        skipped: l.skipped,
        xfailed: 0,
        xpassed: 0,
    };
    let status = if l.failed + l.error > 0 {
        schema::RunStatus::Failed
    } else if sum == 0 {
        schema::RunStatus::NoTests
    } else {
        schema::RunStatus::Passed
    };
    let run = RunInfo {
        run_id: l.run_id,
        project: l.project.unwrap_or_else(|| "default".into()),
        branch: l.branch,
        commit: None,
        worker_id: l.worker_id,
        host: None,
        runner: Some("pytest".into()),
        command: None,
        started_at,
        finished_at,
        duration_secs: l.duration,
        exit_code: None,
        status,
        counts,
        cases_complete: false,
        note: None,
    };
    Ok((run, cases))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every leaf of `v` with its path as `serde_path_to_error` writes it.
    fn leaves(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    leaves(x, p, out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    leaves(x, format!("{path}[{i}]"), out);
                }
            }
            _ => out.push(path),
        }
    }

    /// `v` with the leaf at `path` replaced by a value of another type.
    fn spoiled(v: &serde_json::Value, path: &str) -> serde_json::Value {
        let mut v = v.clone();
        let mut at = &mut v;
        for part in path.split('.') {
            let (key, index) = match part.split_once('[') {
                Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            at = &mut at[key];
            if let Some(i) = index {
                at = &mut at[i];
            }
        }
        *at = match at {
            serde_json::Value::String(_) => serde_json::json!(["a list"]),
            _ => serde_json::json!("a string"),
        };
        v
    }

    /// Item 5 of issue 13: every field of both payloads, sent with a value
    /// of the wrong type, is refused as a bad request naming the field,
    /// what was found, what was expected, and where the fields are listed.
    #[test]
    fn every_field_of_both_payloads_is_named_when_refused() {
        let legacy = serde_json::json!({
            "run_id": "8f0c", "worker_id": "w", "project": "p", "branch": "main",
            "timestamp": "2024-05-01T12:00:00", "passed": 3, "failed": 1, "error": 0,
            "skipped": 0, "total": 4, "duration": 2.5, "pass_rate": 75.0,
            "failures": [{"nodeid": "t.py::test_a", "duration": 0.1, "message": "boom"}],
        });
        let agent = serde_json::json!({
            "run": {
                "run_id": "r1", "project": "p", "branch": "main", "commit": "abc",
                "worker_id": "w", "host": "h", "runner": "pytest", "command": "pytest -q",
                "started_at": "2024-05-01T12:00:00Z", "finished_at": "2024-05-01T12:00:30Z",
                "duration_secs": 30.0, "exit_code": 1, "status": "failed",
                "counts": {"total": 1, "passed": 0, "failed": 1, "error": 0, "skipped": 0,
                           "xfailed": 0, "xpassed": 0},
                "cases_complete": true, "note": "n",
            },
            "cases": [{
                "test_id": "t.py::test_a", "file": "t.py", "classname": "t", "name": "test_a",
                "outcome": "failed", "duration_secs": 0.1, "message": "boom",
                "traceback": "tb", "output": "out", "retries": 0, "flaky": false,
            }],
        });
        for (body, shape, fields) in [
            (&legacy, "original system's payload", 15),
            (&agent, "agent's payload", 33),
        ] {
            let bytes = serde_json::to_vec(body).expect("json");
            assert!(
                parse_post_body(&bytes).is_ok(),
                "the {shape} sample is valid"
            );
            let mut paths = Vec::new();
            leaves(body, String::new(), &mut paths);
            assert_eq!(paths.len(), fields, "every field of the {shape}: {paths:?}");
            for path in paths {
                let bad = serde_json::to_vec(&spoiled(body, &path)).expect("json");
                let detail = match parse_post_body(&bad) {
                    Err(ApiError::BadRequest(d)) => d,
                    other => panic!("{path}: {other:?}"),
                };
                assert!(detail.starts_with(&format!("{path}: ")), "{detail}");
                assert!(
                    (detail.contains("invalid type: string \"a string\", expected ")
                        || detail.contains("invalid type: sequence, expected "))
                        || detail.contains("is not a date"),
                    "{path}: what was found and what is accepted: {detail}"
                );
                assert!(detail.contains(shape), "{path}: where to look: {detail}");
            }
        }
        // A name that is not one: the accepted ones are listed.
        for (path, want) in [
            (
                "cases[0].outcome",
                "\"broken\" is not an outcome; send one of failed, error",
            ),
            (
                "run.status",
                "\"broken\" is not a run status; send one of passed, failed",
            ),
        ] {
            let mut body = agent.clone();
            match path {
                "run.status" => body["run"]["status"] = serde_json::json!("broken"),
                _ => body["cases"][0]["outcome"] = serde_json::json!("broken"),
            }
            let bytes = serde_json::to_vec(&body).expect("json");
            match parse_post_body(&bytes) {
                Err(ApiError::BadRequest(d)) => {
                    assert!(d.starts_with(&format!("{path}: {want}")), "{d}")
                }
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn legacy_payload_becomes_a_partial_run() {
        let l: LegacyRun = serde_json::from_str(
            r#"{"run_id":"8f0c","worker_id":"w","passed":3,"failed":1,"total":4,"duration":2.5,
                "pass_rate":75.0,"failures":[{"nodeid":"t.py::test_a","duration":0.1,"message":"boom"}]}"#,
        )
        .expect("seed payload parses");
        let (run, cases) = legacy_to_run(l, Utc::now()).expect("converts");
        assert_eq!(
            (run.counts.total, run.counts.failed, run.cases_complete),
            (4, 1, false)
        );
        assert_eq!(run.project, "default");
        assert_eq!(cases[0].name, "test_a");
        let bad: LegacyRun =
            serde_json::from_str(r#"{"run_id":"x","worker_id":"w","passed":1,"total":5}"#)
                .expect("parses");
        assert!(legacy_to_run(bad, Utc::now()).is_err());
    }

    /// Every field of both shapes, given a value of the wrong type, is
    /// refused with its JSON path first.
    #[test]
    fn every_field_of_both_shapes_is_named_when_wrong() {
        let legacy = serde_json::json!({"run_id": "r", "worker_id": "w", "project": "p",
            "branch": "main", "timestamp": "2024-05-01T12:00:00", "passed": 1, "failed": 1,
            "error": 0, "skipped": 0, "total": 2, "duration": 1.5, "pass_rate": 50.0,
            "failures": [{"nodeid": "t.py::test_a", "duration": 0.1, "message": "boom"}]});
        assert!(parse_post_body(&serde_json::to_vec(&legacy).expect("json")).is_ok());
        let now = Utc::now();
        let full = serde_json::json!({"run": {"run_id": "r", "project": "p", "branch": "b",
            "commit": "c", "worker_id": "w", "host": "h", "runner": "pytest", "command": "pytest",
            "started_at": now, "finished_at": now, "duration_secs": 0.0, "exit_code": 1,
            "status": "failed", "counts": {"total": 1, "passed": 0, "failed": 1, "error": 0,
            "skipped": 0, "xfailed": 0, "xpassed": 0}, "cases_complete": true, "note": "n"},
            "cases": [{"test_id": "t::a", "file": "t.py", "classname": "t", "name": "a",
            "outcome": "failed", "duration_secs": 0.1, "message": "m", "traceback": "tb",
            "output": "o", "retries": 0, "flaky": false}]});
        assert!(parse_post_body(&serde_json::to_vec(&full).expect("json")).is_ok());
        let mut fields: Vec<(serde_json::Value, String)> = Vec::new();
        let object = |v: &serde_json::Value| v.as_object().cloned().unwrap_or_default();
        for k in object(&legacy).keys() {
            fields.push((legacy.clone(), k.clone()));
        }
        for k in object(&legacy["failures"][0]).keys() {
            fields.push((legacy.clone(), format!("failures[0].{k}")));
        }
        for k in object(&full["run"]).keys() {
            fields.push((full.clone(), format!("run.{k}")));
        }
        for k in object(&full["run"]["counts"]).keys() {
            fields.push((full.clone(), format!("run.counts.{k}")));
        }
        for k in object(&full["cases"][0]).keys() {
            fields.push((full.clone(), format!("cases[0].{k}")));
        }
        assert_eq!(fields.len(), 13 + 3 + 16 + 7 + 11);
        for (mut body, path) in fields {
            // Walk to the field and give it a value no field accepts.
            let mut at = &mut body;
            let parts: Vec<&str> = path.split('.').collect();
            for (i, part) in parts.iter().enumerate() {
                let (name, index) = match part.split_once('[') {
                    Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
                    None => (*part, None),
                };
                at = &mut at[name];
                if let Some(n) = index {
                    at = &mut at[n];
                }
                if i == parts.len() - 1 {
                    *at = serde_json::json!({"wrong": "type"});
                }
            }
            let err = parse_post_body(&serde_json::to_vec(&body).expect("json"))
                .expect_err(&path)
                .to_string();
            assert!(err.starts_with(&format!("{path}: ")), "{path}: {err}");
        }
    }

    #[test]
    fn original_shape_failures_are_bounded_while_parsing() {
        let many: Vec<serde_json::Value> = (0..=MAX_LEGACY_FAILURES)
            .map(|i| serde_json::json!({"nodeid": format!("t{i}")}))
            .collect();
        let body = serde_json::json!({"run_id": "r", "worker_id": "w", "failed": 1,
            "failures": many});
        let err = parse_post_body(&serde_json::to_vec(&body).expect("json"))
            .expect_err("over the limit")
            .to_string();
        assert!(
            err.starts_with("failures: more than 100000 failures"),
            "{err}"
        );
    }
}
