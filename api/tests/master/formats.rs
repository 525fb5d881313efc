//! One form of times and rates on every route (`ptp_actors::format`): runs
//! whose times carry nanoseconds and whose pass rate is 2/3 go in through
//! the stream; every read route is fetched and every time must read
//! `YYYY-MM-DDTHH:MM:SS.mmmZ` and every pass rate have at most two decimals.

use ptp_nats::schema::{Outcome, RunInfo, TestCase};
use serde_json::{Value, json};

use crate::helpers::*;

const PROJECT: &str = "formats";

fn case(test: &str, outcome: Outcome) -> TestCase {
    TestCase {
        test_id: format!("tests/test_f.py::{test}"),
        file: Some("tests/test_f.py".into()),
        classname: Some("tests.test_f".into()),
        name: test.into(),
        outcome,
        duration_secs: 0.25,
        message: (outcome == Outcome::Failed).then(|| "AssertionError: flip".to_string()),
        traceback: None,
        output: None,
        retries: 0,
        flaky: false,
        owners: Vec::new(),
        quarantined: false,
    }
}

/// Run `i` of six: `test_flip` fails on even runs (pass rate 2/3 there).
fn run(i: i64) -> (RunInfo, Vec<TestCase>) {
    let flip = if i % 2 == 0 {
        Outcome::Failed
    } else {
        Outcome::Passed
    };
    let cases = vec![
        case("test_a", Outcome::Passed),
        case("test_b", Outcome::Passed),
        case("test_flip", flip),
    ];
    let whole = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0);
    let started =
        whole - chrono::TimeDelta::seconds(1000 - i) + chrono::TimeDelta::nanoseconds(123_456_789);
    let (mut info, cases) = run_of_cases(format!("fmt-{i}"), started, cases);
    info.project = PROJECT.into();
    info.commit = Some(format!("c{i}"));
    info.worker_id = "fmt-worker".into();
    info.finished_at = started + chrono::TimeDelta::nanoseconds(1_987_654_321);
    info.duration_secs = 1.987654321;
    (info, cases)
}

/// Whether `s` is `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn is_one_time_form(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Whether a key names a time the API writes.
fn is_time_key(k: &str) -> bool {
    k.ends_with("_at") || matches!(k, "first_seen" | "last_seen" | "timestamp")
}

/// Checks every time and pass rate in `v`; returns how many of each it saw.
fn check(route: &str, key: &str, v: &Value, seen: &mut (usize, usize)) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| check(route, k, v, seen)),
        Value::Array(a) => a.iter().for_each(|v| check(route, key, v, seen)),
        Value::String(s) if is_time_key(key) || s.starts_with("20") && s.contains('T') => {
            assert!(
                is_one_time_form(s),
                "{route}: {key} = {s:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ"
            );
            seen.0 += 1;
        }
        Value::Number(n) if key.ends_with("pass_rate") => {
            let r = n.as_f64().expect("a rate is a number");
            assert_eq!(
                (r * 100.0).round() / 100.0,
                r,
                "{route}: {key} = {r} has more than two decimals"
            );
            seen.1 += 1;
        }
        Value::Number(_) | Value::Bool(_) | Value::Null | Value::String(_) => {
            assert!(!is_time_key(key) || v.is_null(), "{route}: {key} = {v}");
        }
    }
}

#[tokio::test]
async fn every_route_writes_times_and_rates_one_way() {
    let app = TestApp::spawn().await;
    let runs: Vec<_> = (0..6).map(run).collect();
    publish_direct(&app.nats.url(), &runs, true).await;
    app.wait_run_count(6).await;
    let (s, _) = app
        .post(
            "/quarantine",
            &json!({"project": PROJECT, "test_id": "tests/test_f.py::test_b",
                    "reason": "formats", "expires_at": (chrono::Utc::now()
                        + chrono::TimeDelta::days(1)).to_rfc3339()}),
        )
        .await;
    assert_eq!(s, 200, "POST /quarantine");
    let bad = vec![(ptp_nats::subjects::RESULTS_RUN, b"not json".to_vec())];
    publish_raw(&app.nats.url(), &bad).await;
    ptp_test_support::eventually(DEADLINE, "the rejection to be listed", || async {
        let (_, r) = app.get("/rejected").await;
        (!r.as_array()?.is_empty()).then_some(())
    })
    .await;

    let history = "/tests/tests%2Ftest_f.py%3A%3Atest_flip/history";
    // (route, times it must show at least, pass rates it must show at least)
    let routes: &[(&str, usize, usize)] = &[
        ("/results", 18, 6),
        ("/results/fmt-0", 3, 1),
        ("/trend?project=formats", 6, 6),
        ("/workers", 1, 1),
        ("/failures/stats", 1, 0),
        ("/flaky?project=formats", 2, 0),
        ("/failures/clusters?project=formats", 2, 0),
        (history, 6, 1),
        ("/tests/slow?project=formats", 0, 0),
        ("/compare?base=fmt-0&head=fmt-1", 6, 2),
        ("/quarantine?project=formats", 2, 0),
        ("/rejected", 1, 0),
    ];
    for &(route, times, rates) in routes {
        let (status, body) = app.get(route).await;
        assert_eq!(status, 200, "{route}: {body}");
        let mut seen = (0, 0);
        check(route, "", &body, &mut seen);
        assert!(
            seen.0 >= times && seen.1 >= rates,
            "{route}: saw {seen:?} (times, rates), want at least ({times}, {rates}): {body}"
        );
    }

    // The same 2/3 reads the same on the list, the run, the trend and the
    // comparison; the worker's mean (2/3 and 1, three runs each) too.
    let (_, list) = app.get("/results?project=formats").await;
    let (_, one) = app.get("/results/fmt-0").await;
    let (_, trend) = app.get("/trend?project=formats").await;
    let (_, cmp) = app.get("/compare?base=fmt-0&head=fmt-1").await;
    let (_, workers) = app.get("/workers").await;
    let listed = list
        .as_array()
        .and_then(|a| a.iter().find(|r| r["run_id"] == "fmt-0"))
        .expect("fmt-0 listed");
    let trended = trend
        .as_array()
        .and_then(|a| a.iter().find(|r| r["run_id"] == "fmt-0"))
        .expect("fmt-0 on the trend");
    for rate in [
        &listed["pass_rate"],
        &one["pass_rate"],
        &trended["pass_rate"],
        &cmp["base"]["pass_rate"],
    ] {
        assert_eq!(rate, &json!(66.67));
    }
    assert_eq!(listed["started_at"], one["started_at"]);
    assert_eq!(listed["started_at"], trended["timestamp"]);
    assert!(
        listed["started_at"]
            .as_str()
            .is_some_and(|t| t.ends_with(".123Z")),
        "{listed}"
    );
    let worker = workers
        .as_array()
        .and_then(|a| a.iter().find(|w| w["worker_id"] == "fmt-worker"))
        .expect("the worker is listed");
    assert_eq!(worker["avg_pass_rate"], json!(83.33));

    let (s, cleared) = app
        .post(
            "/flaky/clear",
            &json!({"project": PROJECT, "test_id": "tests/test_f.py::test_flip"}),
        )
        .await;
    assert_eq!(s, 200, "POST /flaky/clear: {cleared}");
    check("/flaky/clear", "", &cleared, &mut (0, 0));
    assert!(is_one_time_form(
        cleared["cleared_at"].as_str().unwrap_or("")
    ));
}
