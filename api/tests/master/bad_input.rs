//! Bad input on every door: malformed messages on the stream and bad HTTP
//! requests are refused with a reason a person can act on, and nothing
//! else is lost or blocked.

use serde_json::{Value, json};

use crate::helpers::*;

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

/// Messages that decode but carry impossible values are rejected with the
/// reason (visible at `GET /rejected`), acked, and the stream keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_messages_are_rejected_with_reasons_and_the_stream_flows() {
    let app = TestApp::spawn().await;
    let mut raw: Vec<(&'static str, Vec<u8>)> = Vec::new();

    // A negative duration in a chunk.
    let mut m = encoded(&synthetic_run("negative", 0, 5));
    m[0].1["cases"][2]["duration_secs"] = json!(-1.5);
    raw.extend(m.iter().map(|(s, v)| (*s, bytes(v))));

    // A final whose counts contradict the cases it arrived with.
    let mut m = encoded(&synthetic_run("contradicts", 0, 5));
    let last = m.len() - 1;
    let counts = &mut m[last].1["run"]["counts"];
    counts["passed"] = json!(counts["passed"].as_u64().unwrap_or(0) + 2);
    counts["total"] = json!(counts["total"].as_u64().unwrap_or(0) + 2);
    raw.extend(m.iter().map(|(s, v)| (*s, bytes(v))));

    // An oversized test id.
    let mut m = encoded(&synthetic_run("oversized", 0, 5));
    m[0].1["cases"][0]["test_id"] = json!("x".repeat(100_000));
    raw.extend(m.iter().map(|(s, v)| (*s, bytes(v))));

    // A chunk the run does not have: chunk 3 of a one-chunk run.
    let m = encoded(&synthetic_run("extra-chunk", 0, 5));
    let mut stray = m[0].1.clone();
    stray["chunk"] = json!(3);
    raw.push((m[0].0, bytes(&stray)));
    raw.extend(m.iter().map(|(s, v)| (*s, bytes(v))));

    // Not JSON, and an unknown schema version.
    raw.push((
        ptp_nats::subjects::RESULTS_RUN,
        b"\x00\xffnot json".to_vec(),
    ));
    raw.push((
        ptp_nats::subjects::RESULTS_RUN,
        br#"{"schema": 2, "kind": "run", "run": {"run_id": "from-the-future"}}"#.to_vec(),
    ));

    // And a good run behind all of that.
    let good = synthetic_run("good", 0, 20);
    raw.extend(encoded(&good).iter().map(|(s, v)| (*s, bytes(v))));
    publish_raw(&app.nats.url(), &raw).await;

    app.wait_run("good-00000").await;
    let rejected = ptp_test_support::eventually(DEADLINE, "six rejections", || async {
        let (_, r) = app.get("/rejected?limit=100").await;
        let r = r.as_array()?.clone();
        (r.len() >= 6).then_some(r)
    })
    .await;
    let reason_for = |needle: &str| -> String {
        rejected
            .iter()
            .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
            .find(|r| r.contains(needle))
            .unwrap_or_else(|| panic!("no rejection mentions {needle:?}: {rejected:#?}"))
    };
    reason_for("durations must be finite and >= 0");
    reason_for("counts contradict the cases");
    reason_for("test_id is");
    reason_for("a chunk for a run that does not have it");
    reason_for("not valid JSON");
    reason_for("unknown schema version 2");
    assert_eq!(rejected.len(), 6, "{rejected:#?}");
    assert!(
        rejected.iter().all(|r| r["dead_letter"] == false),
        "plain rejections are not dead letters"
    );
    for id in [
        "negative-00000",
        "contradicts-00000",
        "oversized-00000",
        "extra-chunk-00000",
    ] {
        let (status, _) = app.get(&format!("/results/{id}")).await;
        assert_eq!(status, 404, "{id} must not be visible");
    }
    ptp_test_support::eventually(DEADLINE, "everything acked", || async {
        (app.consumer_backlog().await == (0, 0)).then_some(())
    })
    .await;
    assert_eq!(db_census(&app.store).await, (1, 20, 0));
}

/// Bodies over the size limit are refused with 413 and a message; the
/// master goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_413() {
    let mut app = TestApp::spawn().await;
    app.stop_master().await;
    app.start_master_with(|c| c.max_body_mb = 1).await;
    let big = json!({
        "run_id": "too-big", "worker_id": "w", "passed": 1, "total": 1,
        "padding": "x".repeat(2 * 1024 * 1024),
    });
    // A client of its own: the master closes this connection after the 413
    // (the body stays unread), and a pooled connection reused for the next
    // request could meet that close mid-request (hyper's IncompleteMessage).
    let r = reqwest::Client::new()
        .post(format!("{}/results", app.base()))
        .json(&big)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("size limit"), "says why: {body}");
    let (status, body) = app
        .post(
            "/results",
            &json!({"run_id": "small", "worker_id": "w", "passed": 1, "total": 1}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    app.wait_run("small").await;
}

/// A chunk whose run never sends its final message, and a final whose
/// chunks never all arrive (an agent killed while publishing): they wait,
/// invisible, then are dropped and recorded with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_left_incomplete_are_dropped_and_recorded() {
    let mut app = TestApp::spawn().await;
    let orphan = encoded(&synthetic_run("orphan", 0, 5));
    let hollow = encoded(&synthetic_run("hollow", 0, 5));
    let mut hollow_final = hollow[1].1.clone();
    hollow_final["chunks"] = json!(2);
    let good = synthetic_run("good", 0, 5);
    let mut raw = vec![
        (orphan[0].0, bytes(&orphan[0].1)),
        (hollow[0].0, bytes(&hollow[0].1)),
        (hollow[1].0, bytes(&hollow_final)),
    ];
    raw.extend(encoded(&good).iter().map(|(s, v)| (*s, bytes(v))));
    publish_raw(&app.nats.url(), &raw).await;
    app.wait_run("good-00000").await;
    ptp_test_support::eventually(DEADLINE, "everything acked", || async {
        (app.consumer_backlog().await == (0, 0)).then_some(())
    })
    .await;
    let (_, rejected) = app.get("/rejected").await;
    assert_eq!(
        rejected,
        json!([]),
        "incomplete runs wait, they are not refused at once"
    );

    app.stop_master().await;
    app.start_master_with(|c| c.incomplete_after_minutes = 0)
        .await;
    let rejected = ptp_test_support::eventually(DEADLINE, "two dropped runs", || async {
        let (_, r) = app.get("/rejected").await;
        let r = r.as_array()?.clone();
        (r.len() == 2).then_some(r)
    })
    .await;
    let reason = |id: &str| {
        rejected
            .iter()
            .find(|r| r["run_id"] == id)
            .and_then(|r| r["reason"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        reason("orphan-00000").contains("final message never did"),
        "{rejected:#?}"
    );
    assert!(
        reason("hollow-00000").contains("names 2 chunk(s) but only 1 arrived"),
        "{rejected:#?}"
    );
    let (_, runs) = app.get("/results").await;
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "the good run stays");
    assert_eq!(db_census(&app.store).await, (1, 5, 0));
    let pool = TestPool::open(&app.store).await;
    let counts = pool
        .ints(
            "SELECT (SELECT COUNT(*) FROM test_cases), (SELECT COUNT(*) FROM run_chunks), \
             (SELECT COUNT(*) FROM pending_runs)",
        )
        .await;
    pool.close().await;
    assert_eq!(counts, [5, 1, 0], "only the good run's rows are left");
}
