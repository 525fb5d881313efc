//! The versioned wire schema: what the agent (and `POST /results`) publish and
//! what ingest decodes.
//!
//! A run travels as one or more [`CasesChunk`] messages followed by one
//! [`RunFinal`] that says how many chunks make the run. Splitting keeps every
//! message under the server's max payload (1 MB by default) even for runs of
//! tens of thousands of test cases. Every message is a JSON object with a
//! `schema` field ([`SCHEMA_VERSION`]) and a `kind` tag, so a master can refuse
//! a version it does not know with a precise reason instead of guessing.
//!
//! Guarantees:
//! - [`encode_run`] produces messages no larger than the budget it is given,
//!   each with a message id that is stable for the run's content
//!   (`<run_id>:c<n>:<digest>` and `<run_id>:run:<digest>`), so JetStream's
//!   duplicate window and the writer's idempotence both recognise a resend,
//!   while a run id reused for other results is not swallowed as a
//!   duplicate: the writer records it as a conflict ([`CasesChunk::digest`],
//!   [`RunFinal::digest`]).
//! - Every time is inside [`earliest_time`] ..= now + [`MAX_FUTURE`], every
//!   duration finite and at most [`MAX_DURATION_SECS`], every string bounded
//!   (the `MAX_*` constants): values that pass cannot overflow the master's
//!   time arithmetic.
//! - [`decode`] never panics on hostile input; it returns a [`DecodeError`]
//!   naming what is wrong, and [`WireMessage::validate`] refuses impossible
//!   values (negative durations, counts that contradict the cases, oversized
//!   strings) before anything reaches the database.
//!
//! # Layout
//! - `limits`: the `MAX_*` bounds, the time window, [`truncate_marked`];
//! - `case`: [`Outcome`], [`TestCase`], [`Counts`];
//! - `run`: [`RunStatus`], [`RunInfo`], [`CasesChunk`], [`RunFinal`],
//!   [`WireMessage`];
//! - `heartbeat`: [`Heartbeat`], [`HeartbeatPhase`], [`decode_heartbeat`];
//! - `validate`: the field checks and every `validate`;
//! - `encoding`: envelope, [`encode`], [`decode`], message ids, [`encode_run`].
//!
//! Every public item is re-exported here: callers name `schema::X`.

mod case;
mod encoding;
mod heartbeat;
mod limits;
mod run;
mod validate;

pub use case::{Counts, Outcome, TestCase};
pub use encoding::{DecodeError, EncodeError, Outgoing, decode, encode, encode_run};
pub use heartbeat::{Heartbeat, HeartbeatPhase, decode_heartbeat};
pub use limits::{
    MAX_CASES_PER_RUN, MAX_CHUNKS_PER_RUN, MAX_DURATION_SECS, MAX_FUTURE,
    MAX_HEARTBEAT_INTERVAL_SECS, MAX_MESSAGE_BYTES, MAX_OUTPUT_BYTES, MAX_OWNER_BYTES, MAX_OWNERS,
    MAX_RUN_ID_BYTES, MAX_SHORT_BYTES, MAX_TEST_ID_BYTES, MAX_TRACEBACK_BYTES, earliest_time,
    truncate_marked,
};
pub use run::{CasesChunk, RunFinal, RunInfo, RunStatus, WireMessage};
pub use validate::{check_duration, check_len, check_time, valid_run_id};

/// The version of the wire schema this crate writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn case(i: usize, outcome: Outcome) -> TestCase {
        TestCase {
            test_id: format!("tests.test_mod::test_{i}[α-\"q\"]"),
            file: None,
            classname: Some("tests.test_mod".into()),
            name: format!("test_{i}[α-\"q\"]"),
            outcome,
            duration_secs: 0.01,
            message: outcome.is_failure().then(|| "assert 1 == 2".into()),
            traceback: None,
            output: None,
            retries: 0,
            flaky: false,
            owners: Vec::new(),
            quarantined: false,
        }
    }

    fn run(cases: &[TestCase]) -> RunInfo {
        let now = Utc::now();
        RunInfo {
            run_id: "0190f5c2-1111-7000-8000-000000000001".into(),
            project: "demo".into(),
            branch: Some("main".into()),
            commit: None,
            worker_id: "w1".into(),
            host: None,
            runner: Some("pytest".into()),
            command: None,
            started_at: now,
            finished_at: now,
            duration_secs: 1.0,
            exit_code: Some(1),
            status: RunStatus::Failed,
            counts: Counts::of(cases),
            cases_complete: true,
            note: None,
        }
    }

    #[test]
    fn owners_and_quarantine_marks_are_optional_and_bounded() {
        let mut c = case(1, Outcome::Failed);
        let plain = serde_json::to_string(&c).expect("encodes");
        assert!(
            !plain.contains("owners") && !plain.contains("quarantined"),
            "absent when unset, so older readers see the same JSON: {plain}"
        );
        c.owners = vec!["@acme/cart".into(), "qa@example.com".into()];
        c.quarantined = true;
        let text = serde_json::to_string(&c).expect("encodes");
        let back: TestCase = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, c);
        assert_eq!(c.validate(), Ok(()));
        c.owners = (0..=MAX_OWNERS).map(|i| format!("@t{i}")).collect();
        assert!(c.validate().expect_err("17 owners").contains("owners"));
        c.owners = vec!["x".repeat(MAX_OWNER_BYTES + 1)];
        assert!(c.validate().is_err(), "an over-long owner is refused");
        c.owners = vec![String::new()];
        assert!(c.validate().is_err(), "an empty owner is refused");
    }

    #[test]
    fn round_trip_through_chunks() {
        let cases: Vec<_> = (0..5000)
            .map(|i| {
                case(
                    i,
                    if i % 7 == 0 {
                        Outcome::Failed
                    } else {
                        Outcome::Passed
                    },
                )
            })
            .collect();
        let r = run(&cases);
        let msgs = encode_run(&r, &cases, 64 * 1024).expect("encodes");
        assert!(msgs.len() > 3, "5000 cases must need several 64 KiB chunks");
        let mut back = Vec::new();
        let mut fin = None;
        for m in &msgs {
            assert!(m.payload.len() <= 64 * 1024, "chunk over budget");
            match decode(&m.payload).expect("decodes") {
                WireMessage::Cases(c) => back.extend(c.cases),
                WireMessage::Run(f) => fin = Some(f),
            }
        }
        let fin = fin.expect("final message");
        assert_eq!(fin.chunks as usize, msgs.len() - 1);
        assert_eq!(back, cases);
        assert_eq!(fin.run.counts, Counts::of(&back));
    }

    #[test]
    fn refuses_unknown_version_and_garbage() {
        assert!(matches!(decode(b"not json"), Err(DecodeError::NotJson(_))));
        assert_eq!(
            decode(br#"{"schema": 99, "kind": "run"}"#),
            Err(DecodeError::UnknownVersion(99))
        );
        assert_eq!(decode(br#"{"kind": "run"}"#), Err(DecodeError::NoVersion));
        assert!(matches!(
            decode(br#"{"schema": 1, "kind": "cases", "run_id": "x"}"#),
            Err(DecodeError::Shape(_))
        ));
    }

    #[test]
    fn refuses_impossible_values() {
        let mut c = case(1, Outcome::Passed);
        c.duration_secs = -1.0;
        let msg = WireMessage::Cases(CasesChunk {
            run_id: "r1".into(),
            chunk: 0,
            cases: vec![c],
        });
        let err = decode(&encode(&msg)).expect_err("negative duration");
        assert!(
            err.to_string().contains("durations must be finite"),
            "{err}"
        );

        let cases = vec![case(1, Outcome::Passed)];
        let mut r = run(&cases);
        r.counts.total = 5;
        let err = decode(&encode(&WireMessage::Run(RunFinal { run: r, chunks: 1 })))
            .expect_err("bad counts");
        assert!(err.to_string().contains("do not add up"), "{err}");

        // Found by tests/fuzz_wire.rs: this sum overflowed (a panic in debug
        // builds; in release it wrapped to 1 and passed).
        let mut r = run(&cases);
        r.counts = Counts {
            total: 1,
            passed: u64::MAX,
            failed: 2,
            ..Counts::default()
        };
        let err = decode(&encode(&WireMessage::Run(RunFinal { run: r, chunks: 1 })))
            .expect_err("overflowing counts");
        assert!(err.to_string().contains("do not add up"), "{err}");

        let mut r = run(&cases);
        r.run_id = "../../etc/passwd".into();
        assert!(r.validate().is_err());
    }

    #[test]
    fn times_outside_the_window_are_refused() {
        let cases = vec![case(1, Outcome::Passed)];
        let now = Utc::now();
        let parse = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("valid RFC 3339")
                .with_timezone(&Utc)
        };
        // The hostile tester's years: 9999, +100000 and -262143.
        for t in [
            parse("9999-12-31T23:59:59Z"),
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::MIN_UTC,
            parse("1999-12-31T23:59:59Z"),
        ] {
            let mut r = run(&cases);
            r.started_at = t;
            r.finished_at = t;
            r.duration_secs = 0.0;
            let err = r.validate_at(now).expect_err("outside the window");
            assert!(
                err.contains("started_at") && err.contains("window"),
                "{err}"
            );
        }
        let mut r = run(&cases);
        r.started_at = now + chrono::TimeDelta::hours(23);
        r.finished_at = r.started_at;
        assert_eq!(
            r.validate_at(now),
            Ok(()),
            "a skewed clock within a day is fine"
        );
    }

    #[test]
    fn durations_must_fit_the_span() {
        let cases = vec![case(1, Outcome::Passed)];
        let mut r = run(&cases);
        r.finished_at = r.started_at + chrono::TimeDelta::seconds(5);
        r.duration_secs = 1e300;
        let err = r.validate().expect_err("1e300 s");
        assert!(err.contains("30 days"), "{err}");
        r.duration_secs = 60.0;
        let err = r.validate().expect_err("longer than the span");
        assert!(err.contains("cannot exceed"), "{err}");
        r.duration_secs = 5.5;
        assert_eq!(r.validate(), Ok(()), "within the slack");
        let mut c = case(1, Outcome::Passed);
        c.duration_secs = 1e17;
        assert!(c.validate().is_err());
    }

    #[test]
    fn heartbeats_are_bounded() {
        let now = Utc::now();
        let ok = Heartbeat {
            schema: SCHEMA_VERSION,
            worker_id: "w1".into(),
            host: None,
            project: "p".into(),
            run_id: Some("r-1".into()),
            phase: HeartbeatPhase::Tick,
            interval_secs: 10,
            at: now,
        };
        assert_eq!(ok.validate_at(now), Ok(()));
        let bad = [
            Heartbeat {
                interval_secs: 100_000_000_000_000_000,
                ..ok.clone()
            },
            Heartbeat {
                interval_secs: 0,
                ..ok.clone()
            },
            Heartbeat {
                at: DateTime::<Utc>::MAX_UTC,
                ..ok.clone()
            },
            Heartbeat {
                worker_id: "w".repeat(500_000),
                ..ok.clone()
            },
            Heartbeat {
                project: String::new(),
                ..ok.clone()
            },
            Heartbeat {
                run_id: Some("../x".into()),
                ..ok.clone()
            },
        ];
        for hb in bad {
            let bytes = serde_json::to_vec(&hb).expect("serializes");
            let err = decode_heartbeat(&bytes, now).expect_err("refused");
            assert!(err.to_string().len() < 600, "error text is bounded");
        }
        let huge = format!(r#"{{"schema":1,"worker_id":{}}}"#, "7".repeat(1_000_000));
        let err = decode_heartbeat(huge.as_bytes(), now).expect_err("not a heartbeat");
        assert!(err.to_string().len() < 600, "{}", err.to_string().len());
    }

    #[test]
    fn digests_tell_versions_apart_and_ignore_arrival_time() {
        let cases = vec![case(1, Outcome::Passed)];
        let fin = RunFinal {
            run: run(&cases),
            chunks: 1,
        };
        let mut later = fin.clone();
        later.run.started_at += chrono::TimeDelta::seconds(90);
        later.run.finished_at += chrono::TimeDelta::seconds(90);
        assert_eq!(fin.digest(), later.digest(), "times are not content");
        let mut other = fin.clone();
        other.run.counts.passed = 0;
        other.run.counts.failed = 1;
        assert_ne!(fin.digest(), other.digest());
        let msgs = encode_run(&fin.run, &cases, 64 * 1024).expect("encodes");
        let other_msgs = encode_run(&other.run, &cases, 64 * 1024).expect("encodes");
        assert_eq!(
            msgs[0].msg_id, other_msgs[0].msg_id,
            "same cases, same chunk id"
        );
        assert_ne!(msgs[1].msg_id, other_msgs[1].msg_id, "other run, other id");
    }

    #[test]
    fn durations_round_trip_exactly() {
        // Found by tests/fuzz_wire.rs: without serde_json's `float_roundtrip`
        // these came back one ulp off.
        for d in [1536.2681838163435, 2541811.489727811] {
            let mut c = case(1, Outcome::Passed);
            c.duration_secs = d;
            let msg = WireMessage::Cases(CasesChunk {
                run_id: "r1".into(),
                chunk: 0,
                cases: vec![c],
            });
            assert_eq!(decode(&encode(&msg)), Ok(msg));
        }
    }

    #[test]
    fn truncation_marks_and_keeps_utf8() {
        let s = "é".repeat(100);
        let t = truncate_marked(s, 11);
        assert!(t.starts_with("ééééé"));
        assert!(t.contains("[truncated 190 bytes]"), "{t}");
        assert_eq!(truncate_marked("short".into(), 10), "short");
    }
}
