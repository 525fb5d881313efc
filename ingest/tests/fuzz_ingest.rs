//! Property-based fuzzing of ingest's edge: [`to_item`], which turns any
//! payload pulled from the stream into a writer item.
//!
//! What is generated: random bytes, and JSON close to the wire schema (a
//! valid cases chunk or run, with fields replaced by values of the wrong
//! type, out of range or oversized, or the encoded bytes cut and flipped).
//!
//! What must hold: `to_item` never panics; it agrees with
//! [`schema::decode`] (a message decode accepts becomes a `Chunk` / `Final`
//! carrying the same data, anything else a `Reject` whose reason is decode's
//! error); a rejection keeps a short excerpt (at most 512 bytes plus a
//! marker) and a run id hint of at most 128 characters.
//!
//! Bound: 1024 cases per property by default, about a second in a debug
//! build. `PROPTEST_CASES` overrides the count for a longer run:
//!
//! ```text
//! PROPTEST_CASES=200000 cargo test --release -p ptp-ingest --test fuzz_ingest
//! ```

use proptest::prelude::*;
use proptest::sample::Index;
use ptp_actors::writer::BatchItem;
use ptp_ingest::to_item;
use ptp_nats::schema::{self, WireMessage};
use ptp_test_support::fuzz::config;
use serde_json::{Value, json};

fn valid_chunk() -> Value {
    json!({
        "schema": 1, "kind": "cases", "run_id": "r-1", "chunk": 0,
        "cases": [{
            "test_id": "t::a", "name": "a", "outcome": "failed", "duration_secs": 0.5,
            "message": "boom", "retries": 1, "flaky": false,
        }],
    })
}

fn valid_run() -> Value {
    json!({
        "schema": 1, "kind": "run", "chunks": 1,
        "run": {
            "run_id": "r-1", "project": "p", "worker_id": "w",
            "started_at": "2024-01-01T00:00:00Z", "finished_at": "2024-01-01T00:00:01Z",
            "duration_secs": 1.0, "exit_code": 1, "status": "failed",
            "counts": {"total": 1, "passed": 0, "failed": 1, "error": 0, "skipped": 0,
                       "xfailed": 0, "xpassed": 0},
            "cases_complete": true,
        },
    })
}

fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            json!(u64::MAX),
            json!(-1),
            json!(""),
            json!("../../etc/passwd"),
            json!("é".repeat(200)),
            json!("x".repeat(5000)),
            json!([]),
            json!({}),
            json!({"run_id": 7}),
        ]),
        ".{0,12}".prop_map(Value::String),
    ]
}

/// Every node of `v`, as JSON pointers.
fn pointers(v: &Value, here: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                pointers(child, format!("{here}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                pointers(child, format!("{here}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(here);
}

fn mutated_payload() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop::collection::vec((any::<Index>(), hostile()), 0..3),
        prop::option::of(any::<Index>()),
        prop::collection::vec((any::<Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(chunk, replace, cut, flips)| {
            let mut doc = if chunk { valid_chunk() } else { valid_run() };
            for (i, v) in replace {
                let mut all = Vec::new();
                pointers(&doc, String::new(), &mut all);
                if let Some(node) = doc.pointer_mut(i.get(&all).as_str()) {
                    *node = v;
                }
            }
            let mut bytes = serde_json::to_vec(&doc).unwrap_or_default();
            if let Some(i) = cut {
                bytes.truncate(i.index(bytes.len() + 1));
            }
            for (i, b) in flips {
                if !bytes.is_empty() {
                    let p = i.index(bytes.len());
                    bytes[p] = b;
                }
            }
            bytes
        })
}

fn check(payload: &[u8]) -> Result<(), TestCaseError> {
    let item = to_item("ptp.results.cases", Some("r-1:c0"), payload);
    match (schema::decode(payload), item) {
        (
            Ok(WireMessage::Cases(c)),
            BatchItem::Chunk {
                run_id,
                chunk,
                cases,
                digest,
            },
        ) => {
            prop_assert_eq!(digest, c.digest());
            prop_assert_eq!(run_id, c.run_id);
            prop_assert_eq!(chunk, c.chunk);
            prop_assert_eq!(cases.len(), c.cases.len());
            for (got, want) in cases.iter().zip(&c.cases) {
                prop_assert_eq!(&got.test_id, &want.test_id);
                prop_assert_eq!(got.duration_secs.to_bits(), want.duration_secs.to_bits());
            }
        }
        (
            Ok(WireMessage::Run(r)),
            BatchItem::Final {
                run,
                chunks,
                digest,
            },
        ) => {
            prop_assert_eq!(digest, r.digest());
            prop_assert_eq!(chunks, r.chunks);
            prop_assert_eq!(&run.run_id, &r.run.run_id);
            prop_assert_eq!(run.counts.total, r.run.counts.total);
            if let Some(rate) = run.pass_rate {
                prop_assert!((0.0..=100.0).contains(&rate));
            }
        }
        (Err(e), BatchItem::Reject(rej)) => {
            prop_assert_eq!(rej.reason, e.to_string());
            prop_assert_eq!(rej.subject.as_deref(), Some("ptp.results.cases"));
            let excerpt = rej.excerpt.unwrap_or_default();
            prop_assert!(
                excerpt.len() <= 3 * 512 + 64,
                "excerpt {} bytes",
                excerpt.len()
            );
            if let Some(id) = rej.run_id {
                prop_assert!(id.chars().count() <= 128);
            }
        }
        (decoded, item) => prop_assert!(false, "decode {:?} but item {:?}", decoded, item),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn to_item_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes)?;
    }

    #[test]
    fn to_item_survives_mutated_messages(payload in mutated_payload()) {
        check(&payload)?;
    }
}

#[test]
fn valid_templates_are_accepted() {
    for doc in [valid_chunk(), valid_run()] {
        let bytes = serde_json::to_vec(&doc).expect("serializes");
        assert!(
            !matches!(to_item("s", None, &bytes), BatchItem::Reject(_)),
            "{doc}"
        );
    }
}
