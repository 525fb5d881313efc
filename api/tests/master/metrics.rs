//! `GET /metrics` on a real master: Prometheus text with ingest, cache,
//! HTTP and actor figures, the answering master named in every response.

use serde_json::json;

use crate::helpers::*;

/// The value of the sample line starting with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_ingest_cache_http_and_the_master() {
    let mut app = TestApp::spawn().await;
    app.stop_master().await;
    app.start_master_with(|c| {
        c.master_name = Some("master-a".into());
        c.read_tokens = vec!["reader".into()];
    })
    .await;
    let (status, _) = app
        .post(
            "/results",
            &json!({"run_id": "m-1", "worker_id": "w", "passed": 2, "failed": 1, "total": 3,
                    "failures": [{"nodeid": "t.py::test_a"}]}),
        )
        .await;
    assert_eq!(status, 202);
    let read = |path: &str| {
        app.http
            .get(format!("{}{path}", app.base()))
            .bearer_auth("reader")
            .send()
    };
    ptp_test_support::eventually(DEADLINE, "the run stored", || async {
        let r = read("/results/m-1").await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let again = read("/results/m-1").await.expect("answers");
    assert_eq!(again.headers()["x-cache"], "hit");
    assert_eq!(again.headers()["x-ptp-master"], "master-a");

    // Open like /health: no token needed.
    let r = app
        .http
        .get(format!("{}/metrics", app.base()))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.expect("text");
    assert!(
        text.contains("ptp_master_info{master=\"master-a\""),
        "{text}"
    );
    assert_eq!(sample(&text, "ptp_runs_stored_total"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "ptp_read_cache_hits_total"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "ptp_read_cache_misses_total") >= Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "ptp_consumer_pending"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "ptp_actor_panics_total{actor=\"aggregates\"}"),
        Some(0.0)
    );
    assert!(
        sample(&text, "ptp_ingest_commit_seconds_count") >= Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "ptp_http_request_duration_seconds_count{route=\"/results/{run_id}\",method=\"GET\",status=\"200\"}"
        ) >= Some(2.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "ptp_http_request_duration_seconds_count{route=\"/results\",method=\"POST\",status=\"202\"}"
        ) == Some(1.0),
        "{text}"
    );
    let (status, body) = app.get("/metrics?x=1").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
}
