//! Property-based fuzzing of the wire schema: [`decode`] and [`encode_run`].
//!
//! What is generated:
//! - random bytes, and random JSON close to the schema (an object with
//!   `schema`, `kind`, `run_id`, `run`, `cases`, ... holding values of any
//!   type);
//! - valid runs (any Unicode in the strings, strings up to their limits,
//!   any finite duration, any timestamp), encoded with [`encode_run`] and
//!   then mutated: a node of the JSON tree replaced by a hostile value
//!   (`u64::MAX`, `-1`, `1e309`, wrong types, oversized strings, deep
//!   nesting), or the bytes flipped, cut, or spliced with JSON tokens.
//!
//! What must hold: [`decode`] never panics; whatever it accepts passes
//! [`WireMessage::validate`] and re-encodes to the same message; a valid run
//! split by [`encode_run`] decodes back to exactly the run and its cases, in
//! chunks within the payload budget.
//!
//! Bound: each property runs its default case count (below, 64 to 1024),
//! a few seconds in a debug build, so it runs in CI with the rest of the
//! suite. `PROPTEST_CASES` overrides the count for a longer run:
//!
//! ```text
//! PROPTEST_CASES=200000 cargo test --release -p ptp-nats --test fuzz_wire
//! ```

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use ptp_nats::schema::{
    self, CasesChunk, Counts, MAX_CASES_PER_RUN, MAX_MESSAGE_BYTES, MAX_OUTPUT_BYTES,
    MAX_RUN_ID_BYTES, MAX_SHORT_BYTES, MAX_TEST_ID_BYTES, MAX_TRACEBACK_BYTES, Outcome, RunFinal,
    RunInfo, RunStatus, TestCase, WireMessage, decode, encode, encode_run,
};
use ptp_test_support::fuzz::{ByteEdit, config};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Valid values
// ---------------------------------------------------------------------------

/// Any Unicode up to `max` bytes: mostly short, sometimes long, sometimes
/// exactly at the limit (a 1-, 2-, 3- or 4-byte char repeated).
fn text(max: usize) -> BoxedStrategy<String> {
    let fill = prop::sample::select(vec!['x', '\u{1}', '"', '\\', 'é', '€', '😀']);
    prop_oneof![
        8 => prop::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
        1 => (fill.clone(), 0..=max).prop_map(|(c, n)| c.to_string().repeat(n / c.len_utf8())),
        1 => fill.prop_map(move |c| c.to_string().repeat(max / c.len_utf8())),
    ]
    .prop_map(move |s: String| cut(s, max))
    .boxed()
}

fn nonempty_text(max: usize) -> BoxedStrategy<String> {
    text(max)
        .prop_map(|s| if s.is_empty() { "t".into() } else { s })
        .boxed()
}

/// At most `max` bytes of `s`, cut on a char boundary.
fn cut(mut s: String, max: usize) -> String {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// Finite, non-negative durations, from subnormal to huge.
/// A valid duration: 0 to 30 days, including subnormals and awkward bits.
fn duration() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(schema::MAX_DURATION_SECS),
        0.0..10_000.0f64,
        (prop::num::f64::POSITIVE
            | prop::num::f64::NORMAL
            | prop::num::f64::SUBNORMAL
            | prop::num::f64::ZERO)
            .prop_map(|d| d % schema::MAX_DURATION_SECS),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop::sample::select(Outcome::ALL.to_vec())
}

fn status() -> impl Strategy<Value = RunStatus> {
    prop::sample::select(RunStatus::ALL.to_vec())
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2000-01-01 to 2026-01-01 (inside the accepted window), any nanosecond.
    (946_684_800i64..1_767_225_600, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap_or_default())
}

fn run_id() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9._-]{{1,{MAX_RUN_ID_BYTES}}}"))
        .expect("valid regex")
}

fn test_case() -> impl Strategy<Value = TestCase> {
    (
        (
            nonempty_text(MAX_TEST_ID_BYTES),
            prop::option::of(text(MAX_TEST_ID_BYTES)),
            prop::option::of(text(MAX_TEST_ID_BYTES)),
            text(MAX_TEST_ID_BYTES),
        ),
        (outcome(), duration(), any::<u32>(), any::<bool>()),
        (
            prop::option::of(text(MAX_MESSAGE_BYTES + 128)),
            prop::option::of(text(MAX_TRACEBACK_BYTES + 128)),
            prop::option::of(text(MAX_OUTPUT_BYTES + 128)),
        ),
    )
        .prop_map(
            |(
                (test_id, file, classname, name),
                (outcome, duration_secs, retries, flaky),
                (message, traceback, output),
            )| TestCase {
                test_id,
                file,
                classname,
                name,
                outcome,
                duration_secs,
                message,
                traceback,
                output,
                retries,
                flaky,
                owners: Vec::new(),
                quarantined: false,
            },
        )
}

/// A valid run's metadata; `counts` is filled in by the caller.
fn run_info() -> impl Strategy<Value = RunInfo> {
    let short = || nonempty_text(MAX_SHORT_BYTES);
    let opt_short = || prop::option::of(text(MAX_SHORT_BYTES));
    let long = || prop::option::of(text(MAX_MESSAGE_BYTES + 128));
    (
        (run_id(), short(), short(), opt_short(), opt_short()),
        (opt_short(), opt_short(), long(), long()),
        (instant(), 0i64..2_592_000_000, 0.0..=1.0f64),
        (prop::option::of(any::<i32>()), status(), any::<bool>()),
    )
        .prop_map(
            |(
                (run_id, project, worker_id, branch, commit),
                (host, runner, command, note),
                (started_at, elapsed_ms, share),
                (exit_code, status, cases_complete),
            )| RunInfo {
                run_id,
                project,
                branch,
                commit,
                worker_id,
                host,
                runner,
                command,
                started_at,
                finished_at: started_at
                    .checked_add_signed(TimeDelta::milliseconds(elapsed_ms))
                    .unwrap_or(started_at),
                // At most the wall span, as validation requires.
                duration_secs: elapsed_ms as f64 / 1000.0 * share,
                exit_code,
                status,
                counts: Counts::default(),
                cases_complete,
                note,
            },
        )
}

/// A valid run with its cases (counts matching them).
fn run_with_cases() -> impl Strategy<Value = (RunInfo, Vec<TestCase>)> {
    (run_info(), prop::collection::vec(test_case(), 0..40)).prop_map(|(mut run, cases)| {
        run.counts = Counts::of(&cases);
        (run, cases)
    })
}

/// One valid message of either kind.
fn valid_message() -> impl Strategy<Value = WireMessage> {
    prop_oneof![
        (
            run_id(),
            0u32..100_000,
            prop::collection::vec(test_case(), 0..4)
        )
            .prop_map(|(run_id, chunk, cases)| WireMessage::Cases(CasesChunk {
                run_id,
                chunk,
                cases
            })),
        (
            run_info(),
            prop::collection::vec(outcome(), 0..8),
            0u32..=100_000
        )
            .prop_map(|(mut run, outcomes, chunks)| {
                for o in outcomes {
                    run.counts.add(o);
                }
                let chunks = chunks.max(u32::from(run.counts.total > 0));
                WireMessage::Run(RunFinal { run, chunks })
            }),
    ]
}

// ---------------------------------------------------------------------------
// Hostile values
// ---------------------------------------------------------------------------

/// Numbers at and around the edges of the schema's integer and float types.
fn hostile_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0u64..16).prop_map(Value::from),
        prop::sample::select(vec![
            json!(0),
            json!(1),
            json!(-1),
            json!(u64::MAX),
            json!(u64::MAX / 2 + 1),
            json!(u64::from(u32::MAX)),
            json!(u64::from(u32::MAX) + 1),
            json!(i64::from(i32::MIN) - 1),
            json!(i64::MIN),
            json!(MAX_CASES_PER_RUN),
            json!(MAX_CASES_PER_RUN + 1),
            json!(100_000),
            json!(-0.0),
            json!(1.5),
            json!(f64::MAX),
            json!(f64::MIN_POSITIVE),
        ]),
    ]
}

/// Strings that are empty, oversized, escaped, or look like other values.
fn hostile_string() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(any::<char>(), 0..16)
            .prop_map(|c| Value::String(c.into_iter().collect())),
        prop::sample::select(vec![
            "",
            " ",
            "../../etc/passwd",
            "a/b",
            "cases",
            "run",
            "passed",
            "xpassed",
            "PASSED",
            "2024-02-30T25:61:00Z",
            "+262143-12-31T23:59:59Z",
            "-262144-01-01T00:00:00Z",
            "1970-01-01T00:00:00+23:59",
            "NaN",
            "1e309",
        ])
        .prop_map(Value::from),
        (
            0usize..3,
            prop_oneof![120usize..=130, 505usize..=515, 4090usize..=4100]
        )
            .prop_map(|(i, n)| Value::String(["x", "é", "\u{0}"][i].repeat(n))),
        Just(Value::String("y".repeat(MAX_TRACEBACK_BYTES + 200))),
    ]
}

/// JSON values that break one assumption or another: mostly scalars, some
/// nested arrays and objects.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        hostile_number(),
        hostile_string(),
    ];
    prop_oneof![
        6 => leaf.clone(),
        1 => leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z_]{1,10}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        }),
    ]
}

/// Every node of `v`, as a path of object keys / array indices.
fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                here.push(Step::Key(k.clone()));
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                here.push(Step::Index(i));
                paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn node_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

/// One structural change to a JSON tree.
#[derive(Clone, Debug)]
enum TreeEdit {
    /// Replace the node with this value.
    Replace(Index, Value),
    /// Replace a number with the number, a string with the string (values
    /// that still parse but may not validate).
    Twiddle(Index, Value, Value),
    /// Remove the node from its parent.
    Remove(Index),
    /// Add a key to the object (or the nearest enclosing object).
    Insert(Index, String, Value),
}

fn tree_edit() -> impl Strategy<Value = TreeEdit> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "schema",
            "kind",
            "run_id",
            "chunk",
            "chunks",
            "cases",
            "run",
            "counts",
            "total",
            "passed",
            "test_id",
            "outcome",
            "duration_secs",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,12}",
    ];
    prop_oneof![
        4 => (any::<Index>(), hostile_number(), hostile_string())
            .prop_map(|(i, n, s)| TreeEdit::Twiddle(i, n, s)),
        2 => (any::<Index>(), hostile_value()).prop_map(|(i, v)| TreeEdit::Replace(i, v)),
        1 => any::<Index>().prop_map(TreeEdit::Remove),
        1 => (any::<Index>(), key, hostile_value()).prop_map(|(i, k, v)| TreeEdit::Insert(i, k, v)),
    ]
}

fn apply_tree_edit(doc: &mut Value, edit: &TreeEdit) {
    let mut all = Vec::new();
    paths(doc, &mut Vec::new(), &mut all);
    match edit {
        TreeEdit::Replace(i, v) => {
            if let Some(node) = node_mut(doc, i.get(&all).as_slice()) {
                *node = v.clone();
            }
        }
        TreeEdit::Twiddle(i, n, s) => match node_mut(doc, i.get(&all).as_slice()) {
            Some(node @ Value::Number(_)) => *node = n.clone(),
            Some(node @ Value::String(_)) => *node = s.clone(),
            Some(node @ Value::Bool(_)) => *node = Value::Bool(!node.as_bool().unwrap_or(false)),
            _ => {}
        },
        TreeEdit::Remove(i) => {
            let path = i.get(&all).as_slice();
            let Some((last, parent)) = path.split_last() else {
                return;
            };
            match (node_mut(doc, parent), last) {
                (Some(Value::Object(m)), Step::Key(k)) => {
                    m.remove(k);
                }
                (Some(Value::Array(a)), Step::Index(i)) if *i < a.len() => {
                    a.remove(*i);
                }
                _ => {}
            }
        }
        TreeEdit::Insert(i, k, v) => {
            let mut path = i.get(&all).as_slice().to_vec();
            loop {
                if let Some(Value::Object(m)) = node_mut(doc, &path) {
                    m.insert(k.clone(), v.clone());
                    return;
                }
                if path.pop().is_none() {
                    return;
                }
            }
        }
    }
}

fn json_token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\\",
            "\\u",
            "\\ud800",
            "\\udc00\\ud800",
            "null",
            "1e309",
            "-1e309",
            "-0",
            "18446744073709551616",
            "1e-400",
            "NaN",
            "Infinity",
            "\"schema\":2,",
            "\"schema\":1,",
            "\"kind\":\"run\",",
            "\"chunks\":4294967296,",
            "\u{feff}",
            "\u{0}",
            "\u{7f}",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 1..8),
        (1usize..400).prop_map(|n| "[".repeat(n).into_bytes()),
    ]
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        any::<Index>().prop_map(ByteEdit::Truncate),
        (any::<Index>(), json_token()).prop_map(|(i, t)| ByteEdit::Splice(i, t)),
        (any::<Index>(), 1usize..32).prop_map(|(i, n)| ByteEdit::Delete(i, n)),
    ]
}

/// What must hold for any input: no panic (the harness catches it), and an
/// accepted message is valid and survives a re-encode unchanged.
fn check_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode(bytes) {
        Ok(msg) => {
            prop_assert_eq!(msg.validate(), Ok(()));
            prop_assert_eq!(decode(&encode(&msg)), Ok(msg));
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn decode_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_decode(&bytes)?;
    }

    #[test]
    fn decode_survives_random_json(
        schema in prop_oneof![Just(json!(1)), hostile_value()],
        kind in prop_oneof![Just(json!("cases")), Just(json!("run")), hostile_value()],
        rest in prop::collection::vec((
            prop::sample::select(vec!["run_id", "chunk", "chunks", "cases", "run", "extra"]),
            hostile_value(),
        ), 0..5),
    ) {
        let mut doc = json!({ "schema": schema, "kind": kind });
        for (k, v) in rest {
            doc[k] = v;
        }
        check_decode(&serde_json::to_vec(&doc).expect("serializes"))?;
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn valid_runs_round_trip_in_budget(
        (run, cases) in run_with_cases(),
        max_payload in prop_oneof![2048usize..=16 * 1024, 16 * 1024usize..=1024 * 1024],
    ) {
        let budget = max_payload.saturating_sub(1024).max(1024);
        let msgs = match encode_run(&run, &cases, max_payload) {
            Ok(msgs) => msgs,
            Err(schema::EncodeError::CaseTooLarge { size, budget: b, test_id }) => {
                prop_assert_eq!(b, budget);
                prop_assert!(size > budget);
                prop_assert!(cases.iter().any(|c| c.test_id == test_id));
                return Ok(());
            }
        };
        let (last, chunks) = msgs.split_last().expect("at least the run message");
        let mut back = Vec::new();
        for (n, m) in chunks.iter().enumerate() {
            prop_assert!(m.payload.len() <= max_payload, "chunk {} is {} bytes", n, m.payload.len());
            prop_assert!(m.msg_id.starts_with(&format!("{}:c{n}:", run.run_id)), "{}", m.msg_id);
            match decode(&m.payload) {
                Ok(WireMessage::Cases(c)) => {
                    prop_assert_eq!(c.chunk as usize, n);
                    prop_assert_eq!(&c.run_id, &run.run_id);
                    back.extend(c.cases);
                }
                other => prop_assert!(false, "chunk {} decoded as {:?}", n, other),
            }
        }
        prop_assert_eq!(back, cases);
        prop_assert!(last.msg_id.starts_with(&format!("{}:run:", run.run_id)), "{}", last.msg_id);
        // A valid RunInfo is under ~70 KB even when every byte is escaped.
        if max_payload >= 128 * 1024 {
            prop_assert!(last.payload.len() <= max_payload);
        }
        prop_assert_eq!(
            decode(&last.payload),
            Ok(WireMessage::Run(RunFinal { run, chunks: chunks.len() as u32 }))
        );
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn decode_survives_tree_edits(
        msg in valid_message(),
        edits in prop::collection::vec(tree_edit(), 1..3),
    ) {
        let mut doc: Value = serde_json::from_slice(&encode(&msg)).expect("our own JSON");
        for e in &edits {
            apply_tree_edit(&mut doc, e);
        }
        check_decode(&serde_json::to_vec(&doc).expect("serializes"))?;
    }

    #[test]
    fn decode_survives_byte_edits(
        msg in valid_message(),
        edits in prop::collection::vec(byte_edit(), 1..6),
    ) {
        let mut bytes = encode(&msg);
        for e in &edits {
            e.apply(&mut bytes);
        }
        check_decode(&bytes)?;
    }
}

#[test]
fn deep_and_large_json_is_refused_without_crashing() {
    // serde_json's recursion limit turns this into an error, not a stack
    // overflow.
    let deep = format!(
        r#"{{"schema":1,"kind":"cases","run_id":"r","chunk":0,"cases":{}{}}}"#,
        "[".repeat(1_000_000),
        "]".repeat(1_000_000)
    );
    assert!(decode(deep.as_bytes()).is_err());
    // 8 MB of cases, each with a test_id one byte over the limit.
    let case = json!({
        "test_id": "x".repeat(MAX_TEST_ID_BYTES + 1), "name": "n", "outcome": "passed",
        "duration_secs": 0.0, "retries": 0, "flaky": false,
    });
    let big = json!({
        "schema": 1, "kind": "cases", "run_id": "r", "chunk": 0,
        "cases": vec![case; 2000],
    });
    let err = decode(&serde_json::to_vec(&big).expect("serializes")).expect_err("over limit");
    assert!(err.to_string().contains("test_id is 4097 bytes"), "{err}");
}
