//! The hostile tester's findings of 2026-11 (issue "Hostile input must not
//! hurt the master"), one test each, on real parts: every value that enters
//! the master (heartbeats, wire messages, both `POST /results` shapes) is
//! checked at the boundary, refusals name the field, and no value can
//! panic a handler or an actor.

use serde_json::{Value, json};

use crate::helpers::*;
use ptp_test_support::eventually;

/// Publishes one heartbeat (any JSON) on core NATS and flushes.
async fn heartbeat(nats_url: &str, hb: &Value) {
    let client = async_nats::connect(nats_url).await.expect("connect");
    client
        .publish(
            ptp_nats::subjects::HEARTBEAT,
            serde_json::to_vec(hb).expect("json").into(),
        )
        .await
        .expect("publish");
    client.flush().await.expect("flush");
}

fn hb(worker: &str, phase: &str, interval: Value, at: &str) -> Value {
    json!({"schema": 1, "worker_id": worker, "project": "hb", "run_id": "r-1",
           "phase": phase, "interval_secs": interval, "at": at})
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// Waits until `/health` counts `n` refused heartbeats.
async fn wait_refused(app: &TestApp, n: u64) -> Value {
    eventually(DEADLINE, &format!("{n} refused heartbeats"), || async {
        let (_, h) = app.get("/health").await;
        (h["heartbeats_refused"].as_u64() >= Some(n)).then_some(h)
    })
    .await
}

/// Finding 2: `interval_secs: 1e17` panicked `/workers` inside the actors
/// and `/workers`, `/trend` and `/failures/stats` answered 500 until a
/// restart, while `/health` said 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_killing_heartbeat_is_refused_and_every_route_keeps_answering() {
    let app = TestApp::spawn().await;
    let run = synthetic_run("before", 0, 20);
    publish_direct(&app.nats.url(), std::slice::from_ref(&run), true).await;
    app.wait_run(&run.0.run_id).await;

    heartbeat(&app.nats.url(), &hb("killer", "tick", json!(1e17), &now())).await;
    wait_refused(&app, 1).await;
    heartbeat(
        &app.nats.url(),
        &hb("killer", "tick", json!(100_000_000_000_000_000u64), &now()),
    )
    .await;
    let health = wait_refused(&app, 2).await;
    assert!(
        health["last_heartbeat_refusal"]
            .as_str()
            .unwrap_or("")
            .contains("interval_secs is 100000000000000000; send 1 to 3600"),
        "{health}"
    );
    heartbeat(&app.nats.url(), &hb("good", "tick", json!(10), &now())).await;

    let workers = eventually(DEADLINE, "the good worker listed", || async {
        let (status, body) = app.get("/workers").await;
        assert_eq!(status, 200, "{body}");
        body.as_array()?
            .iter()
            .any(|w| w["worker_id"] == "good" && w["status"] == "running")
            .then_some(body)
    })
    .await;
    assert!(
        !workers.to_string().contains("killer"),
        "refused heartbeats leave no worker: {workers}"
    );
    let (status, trend) = app.get("/trend?project=synthetic").await;
    assert_eq!(
        (status, trend[0]["run_id"].clone()),
        (200, json!("before-00000"))
    );
    let (status, stats) = app.get("/failures/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats.as_array().map(Vec::len), Some(2), "{stats}");
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["actors"]["aggregates"]["state"], "up", "{health}");
    assert_eq!(health["actors"]["aggregates"]["panics"], 0, "{health}");
}

/// Finding 4: a heartbeat from year 9999 left its worker `running` forever
/// and a real `end` afterwards was ignored. Far-future times are refused;
/// a time within the day of allowed skew is taken as "now" at arrival, so
/// the real `end` that follows still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_from_the_future_cannot_pin_a_worker() {
    let app = TestApp::spawn().await;
    heartbeat(
        &app.nats.url(),
        &hb("w9999", "tick", json!(10), "9999-12-31T23:59:59Z"),
    )
    .await;
    wait_refused(&app, 1).await;
    let skewed = (chrono::Utc::now() + chrono::Duration::hours(20)).to_rfc3339();
    heartbeat(&app.nats.url(), &hb("skewed", "tick", json!(10), &skewed)).await;
    eventually(DEADLINE, "the skewed worker running", || async {
        let (_, w) = app.get("/workers").await;
        w.as_array()?
            .iter()
            .any(|w| w["worker_id"] == "skewed" && w["status"] == "running")
            .then_some(())
    })
    .await;
    heartbeat(&app.nats.url(), &hb("skewed", "end", json!(10), &now())).await;
    let w = eventually(DEADLINE, "the real end heartbeat to count", || async {
        let (_, w) = app.get("/workers").await;
        let w = w
            .as_array()?
            .iter()
            .find(|w| w["worker_id"] == "skewed")?
            .clone();
        (w["status"] == "idle").then_some(w)
    })
    .await;
    let seen = w["last_seen"].as_str().unwrap_or("");
    let seen = chrono::DateTime::parse_from_rfc3339(seen).expect("last_seen is a time");
    assert!(
        seen <= chrono::Utc::now(),
        "last_seen {seen} is not in the future"
    );
    let (_, w) = app.get("/workers").await;
    assert!(!w.to_string().contains("w9999"), "{w}");
}

/// Finding 7: heartbeats had no size limits (a 500 KB worker id was stored
/// and served) and nothing bounded the number of workers tracked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_bounded_in_size_and_workers_in_number() {
    let mut app = TestApp::spawn().await;
    app.stop_master().await;
    app.start_master_with(|c| c.max_workers = 3).await;
    heartbeat(
        &app.nats.url(),
        &hb(&"w".repeat(500_000), "tick", json!(10), &now()),
    )
    .await;
    let mut big = hb("w", "tick", json!(10), &now());
    big["project"] = json!("p".repeat(300_000));
    heartbeat(&app.nats.url(), &big).await;
    let health = wait_refused(&app, 2).await;
    let reason = health["last_heartbeat_refusal"].as_str().unwrap_or("");
    assert!(
        reason.contains("project is 300000 bytes") && reason.len() < 1000,
        "{reason}"
    );
    for i in 0..6 {
        let at = (chrono::Utc::now() - chrono::Duration::minutes(10 - i)).to_rfc3339();
        heartbeat(
            &app.nats.url(),
            &hb(&format!("w{i}"), "end", json!(10), &at),
        )
        .await;
    }
    let ids = eventually(DEADLINE, "the newest three workers", || async {
        let (_, w) = app.get("/workers").await;
        let mut ids: Vec<String> = w
            .as_array()?
            .iter()
            .filter_map(|w| w["worker_id"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        (ids == ["w3", "w4", "w5"]).then_some(ids)
    })
    .await;
    assert_eq!(ids.len(), 3);
}

/// Finding 3: an original-shape POST with a year-262142 timestamp and a
/// duration of 1e9 s panicked the handler (`DateTime + TimeDelta
/// overflowed`) and the client got an empty reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_times_in_a_post_are_refused_not_panicked_on() {
    let app = TestApp::spawn().await;
    let base = json!({"run_id": "far", "worker_id": "w", "passed": 1, "total": 1});
    let cases = [
        (
            json!({"timestamp": "+262142-12-31T23:59:59Z", "duration": 1e9}),
            "duration",
        ),
        (json!({"timestamp": "+262142-12-31T23:59:59Z"}), "timestamp"),
        (json!({"timestamp": "9999-12-31T23:59:59Z"}), "timestamp"),
        (json!({"timestamp": "1970-01-01T00:00:00Z"}), "timestamp"),
        (json!({"duration": 1e300}), "duration"),
    ];
    for (extra, field) in cases {
        let mut body = base.clone();
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let (status, answer) = app.post("/results", &body).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert_eq!(answer["error"], "unprocessable");
        let detail = answer["detail"].as_str().unwrap_or("");
        assert!(detail.starts_with(field), "{body} -> {detail}");
    }
    let (status, _) = app.get("/health").await;
    assert_eq!(status, 200, "the master is unharmed");
}

/// Finding 5: years 9999, +100000 and -262143 were stored as run times
/// (sorting as the newest run forever), and `duration_secs: 1e300` beside
/// a finish 5 s after the start. Refused on both doors: 422 over HTTP, a
/// rejection with the reason on the stream, and valid runs keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_from_impossible_years_are_refused_on_both_doors() {
    let app = TestApp::spawn().await;
    let years = [
        "9999-12-31T23:59:59Z",
        "+100000-01-01T00:00:00Z",
        "-262143-01-01T00:00:00Z",
    ];
    let mut raw = Vec::new();
    for (i, year) in years.iter().enumerate() {
        let run = synthetic_run("year", i, 3);
        let mut msgs = encoded(&run);
        let last = msgs.len() - 1;
        msgs[last].1["run"]["started_at"] = json!(year);
        msgs[last].1["run"]["finished_at"] = json!(year);
        let body = json!({"run": msgs[last].1["run"], "cases": msgs[0].1["cases"]});
        let (status, answer) = app.post("/results", &body).await;
        assert_eq!(status, 422, "{year}: {answer}");
        assert!(
            answer["detail"]
                .as_str()
                .unwrap_or("")
                .contains("outside the accepted window"),
            "{answer}"
        );
        raw.extend(
            msgs.iter()
                .map(|(s, v)| (*s, serde_json::to_vec(v).expect("json"))),
        );
    }
    let run = synthetic_run("long", 0, 3);
    let mut msgs = encoded(&run);
    let last = msgs.len() - 1;
    msgs[last].1["run"]["duration_secs"] = json!(1e300);
    let (status, answer) = app
        .post(
            "/results",
            &json!({"run": msgs[last].1["run"], "cases": msgs[0].1["cases"]}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    raw.extend(
        msgs.iter()
            .map(|(s, v)| (*s, serde_json::to_vec(v).expect("json"))),
    );
    let good = synthetic_run("good", 0, 3);
    raw.extend(
        encoded(&good)
            .iter()
            .map(|(s, v)| (*s, serde_json::to_vec(v).expect("json"))),
    );
    publish_raw(&app.nats.url(), &raw).await;
    app.wait_run("good-00000").await;
    let (_, rejected) = app.get("/rejected?limit=50").await;
    let reasons: Vec<&str> = rejected
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("outside the accepted window"))
            .count(),
        3,
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("30 days")), "{reasons:?}");
    let (_, runs) = app.get("/results").await;
    let ids: Vec<&str> = runs
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    assert_eq!(ids, ["good-00000"], "only the valid run is stored");
}

/// Finding 6: a run id published again with other content got 202 and was
/// dropped without a word. Now: 409 over HTTP once the first is stored, a
/// conflict in `/rejected` naming both digests on the stream, and an
/// identical resend is still a quiet duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_run_id_is_a_conflict_not_a_silent_drop() {
    let app = TestApp::spawn().await;
    let first = json!({"run_id": "reused", "worker_id": "w", "passed": 3, "failed": 1,
                       "total": 4, "timestamp": "2026-01-02T03:04:05Z",
                       "failures": [{"nodeid": "t.py::test_a", "message": "boom"}]});
    let (status, _) = app.post("/results", &first).await;
    assert_eq!(status, 202);
    app.wait_run("reused").await;
    let (status, again) = app.post("/results", &first).await;
    assert_eq!(status, 202, "an identical resend is idempotent: {again}");

    let mut second = first.clone();
    second["passed"] = json!(10);
    second["total"] = json!(11);
    let (status, answer) = app.post("/results", &second).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "conflict");
    let detail = answer["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("reused") && detail.matches("digest").count() == 2,
        "{detail}"
    );

    // The same on the stream, where nothing can answer 409.
    let (mut run, cases) = synthetic_run("wire", 0, 10);
    publish_direct(&app.nats.url(), &[(run.clone(), cases.clone())], true).await;
    app.wait_run(&run.run_id).await;
    publish_direct(&app.nats.url(), &[(run.clone(), cases.clone())], false).await;
    run.counts.passed -= 1;
    run.counts.skipped += 1;
    let mut changed = cases.clone();
    if let Some(c) = changed
        .iter_mut()
        .find(|c| c.outcome == ptp_nats::schema::Outcome::Passed)
    {
        c.outcome = ptp_nats::schema::Outcome::Skipped;
    }
    publish_direct(&app.nats.url(), &[(run.clone(), changed)], true).await;
    let marker = synthetic_run("after", 0, 2);
    publish_direct(&app.nats.url(), std::slice::from_ref(&marker), true).await;
    app.wait_run(&marker.0.run_id).await;
    let (_, rejected) = app.get("/rejected").await;
    let conflicts: Vec<&Value> = rejected
        .as_array()
        .expect("list")
        .iter()
        .filter(|r| r["run_id"] == "wire-00000")
        .collect();
    let reasons: Vec<&str> = conflicts
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 2, "the changed chunk and final: {reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.starts_with("conflict") && r.matches("digest").count() == 2),
        "{reasons:?}"
    );
    let (_, stored) = app.get("/results/wire-00000").await;
    assert_eq!(stored["passed"], 9, "the first version is kept: {stored}");
}

/// Finding 10 (and the original worker's timestamps): a wrong type or a
/// missing field named `data did not match any variant of untagged enum
/// PostBody`. Every refusal now names the field, what it found and what
/// is accepted; a timestamp without an offset is read as UTC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_errors_name_the_field_and_naive_timestamps_are_utc() {
    let app = TestApp::spawn().await;
    let (status, answer) = app
        .post(
            "/results",
            &json!({"run_id": "naive", "worker_id": "w", "passed": 1, "total": 1,
                    "timestamp": "2024-05-01T12:00:00"}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let run = app.wait_run("naive").await;
    assert_eq!(run["started_at"], "2024-05-01T12:00:00.000Z");

    let legacy = json!({"run_id": "x", "worker_id": "w", "passed": 1, "total": 1});
    let cases: [(&str, Value, &str); 6] = [
        (
            "passed",
            json!("one"),
            "passed: invalid type: string \"one\", expected u64",
        ),
        (
            "timestamp",
            json!("2024-13-01"),
            "timestamp: \"2024-13-01\" is not a date",
        ),
        (
            "failures",
            json!([{"duration": 1}]),
            "failures[0]: missing field `nodeid`",
        ),
        (
            "worker_id",
            json!(7),
            "worker_id: invalid type: integer `7`, expected a string",
        ),
        ("duration", json!("slow"), "duration: invalid type: string"),
        (
            "failures",
            json!({"a": 1}),
            "failures: invalid type: map, expected a sequence",
        ),
    ];
    for (field, value, want) in cases {
        let mut body = legacy.clone();
        body[field] = value;
        let (status, answer) = app.post("/results", &body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("bad_request")),
            "{answer}"
        );
        let detail = answer["detail"].as_str().unwrap_or("");
        assert!(
            detail.starts_with(want),
            "{body}:\n got {detail}\nwant {want}"
        );
    }
    let (status, answer) = app
        .post("/results", &json!({"worker_id": "w", "passed": 1}))
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or("")
            .contains("missing field `run_id`"),
        "{answer}"
    );
    let (status, answer) = app
        .post("/results", &json!({"run": {"run_id": "y"}, "cases": []}))
        .await;
    assert_eq!(status, 400);
    let detail = answer["detail"].as_str().unwrap_or("");
    assert!(
        detail.starts_with("run: missing field `project`") && detail.contains("agent's payload"),
        "{detail}"
    );
    let (status, answer) = app.post("/results", &json!([1, 2])).await;
    assert_eq!(status, 400);
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or("")
            .contains("not a JSON object"),
        "{answer}"
    );
}

/// Finding 12: `/health?x=1` answered 200 although unknown parameters are
/// 400, and a path segment that is not UTF-8 answered plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_parameters_and_bad_encodings_get_the_json_error() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/health?x=1").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    for path in ["/tests/%FF%FE/history?project=p", "/results/%FF"] {
        let r = app
            .http
            .get(format!("{}{path}", app.base()))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let body: Value = r.json().await.expect("a JSON body");
        assert_eq!(body["error"], "bad_request", "{path}: {body}");
        assert!(
            body["detail"].as_str().unwrap_or("").contains("UTF-8"),
            "{path}: {body}"
        );
    }
}
