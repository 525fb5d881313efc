//! Webhooks through the real master and broker, received by a real HTTP
//! server inside the test that checks the HMAC signature with its own
//! secret (computed here, not by the master's code) and records what it
//! got: a failing run on `main` sends `run.failed` and `test.newly_failing`,
//! a feature branch sends nothing, a test passing on retry sends
//! `test.newly_flaky`, quarantine changes send their events, a
//! Slack target gets `{"text": ...}`; a receiver that was down (and the
//! master restarted meanwhile) gets every event it missed once it is back; a receiver with another secret refuses
//! every request and the master keeps retrying.
//!
//! Retries and polls are set to tens of milliseconds (the hidden
//! `--webhook-retry-*-ms` / `--webhook-poll-ms` options), so an outage
//! lasts well under a second; nothing here sleeps.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use ptp_nats::schema::{Counts, Outcome, RunInfo, RunStatus, TestCase};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// One request the receiver accepted.
#[derive(Debug, Clone)]
struct Got {
    event: String,
    id: String,
    body: Value,
}

#[derive(Default)]
struct Seen {
    accepted: Vec<Got>,
    refused: usize,
}

/// A webhook receiver on a real port, verifying signatures with `secret`.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
}

impl Receiver {
    async fn start(listener: tokio::net::TcpListener, secret: &'static str) -> Receiver {
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state((secret, seen.clone()));
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
        });
        Receiver { addr, seen, stop }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn accepted(&self) -> Vec<Got> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .accepted
            .clone()
    }

    fn refused(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .refused
    }

    /// Polls until `n` events were accepted; returns them.
    async fn wait_for(&self, n: usize) -> Vec<Got> {
        ptp_test_support::eventually(DEADLINE, &format!("{n} webhook events"), || async {
            let got = self.accepted();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Checks `X-Ptp-Signature` = sha256=hex(HMAC-SHA256(secret, ts + "." + body)).
async fn receive(
    State((secret, seen)): State<(&'static str, Arc<Mutex<Seen>>)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut mac = hmac::Hmac::<sha2_hmac::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(header("x-ptp-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    if header("x-ptp-signature") != expected {
        seen.refused += 1;
        return StatusCode::UNAUTHORIZED;
    }
    seen.accepted.push(Got {
        event: header("x-ptp-event"),
        id: header("x-ptp-event-id"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    StatusCode::OK
}

/// A complete run of project `demo` with the given (test, outcome) cases.
fn run(id: &str, branch: &str, cases: &[(&str, Outcome)]) -> (RunInfo, Vec<TestCase>) {
    let cases: Vec<TestCase> = cases
        .iter()
        .map(|(t, o)| TestCase {
            test_id: format!("tests/test_x.py::{t}"),
            file: None,
            classname: None,
            name: t.to_string(),
            outcome: *o,
            duration_secs: 0.01,
            message: (*o == Outcome::Failed).then(|| format!("assert {t}")),
            traceback: None,
            output: None,
            retries: 0,
            flaky: false,
            owners: Vec::new(),
            quarantined: false,
        })
        .collect();
    let counts = Counts::of(&cases);
    let started = chrono::Utc::now();
    let info = RunInfo {
        run_id: id.into(),
        project: "demo".into(),
        branch: Some(branch.into()),
        commit: Some(format!("c-{id}")),
        worker_id: "w1".into(),
        host: None,
        runner: Some("pytest".into()),
        command: None,
        started_at: started,
        finished_at: started,
        duration_secs: 0.1,
        exit_code: Some(i32::from(counts.failed > 0)),
        status: if counts.failed > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Passed
        },
        counts,
        cases_complete: true,
        note: None,
    };
    (info, cases)
}

/// Publishes `r` and waits until the master stored it.
async fn store(app: &TestApp, r: (RunInfo, Vec<TestCase>)) {
    let id = r.0.run_id.clone();
    publish_direct(&app.nats.url(), &[r], true).await;
    app.wait_run(&id).await;
}

/// Fast retries and polls, so the outage tests take seconds.
fn quick(c: &mut ptp_api::Config, hooks: Vec<String>, secret: &str) {
    c.webhooks.webhook = hooks;
    c.webhooks.webhook_secret = Some(secret.into());
    c.webhooks.webhook_retry_min_ms = 50;
    c.webhooks.webhook_retry_max_ms = 200;
    c.webhooks.webhook_poll_ms = 50;
}

/// The value of the `/metrics` line starting with `name `.
async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.base()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn webhook_health(app: &TestApp) -> Value {
    let (_, h) = app.get("/health").await;
    h["webhooks"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_runs_on_main_and_quarantine_changes_are_sent_signed_once_each() {
    let json_rx = Receiver::start(
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        "s3cret",
    )
    .await;
    let slack_rx = Receiver::start(
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        "s3cret",
    )
    .await;
    let hooks = vec![
        json_rx.url(),
        format!("{}#events=run.failed&format=slack", slack_rx.url()),
    ];
    let app = TestApp::spawn_with(|c| quick(c, hooks, "s3cret")).await;

    use Outcome::{Failed, Passed};
    // A passing run on main: nothing to say.
    store(
        &app,
        run("r1", "main", &[("test_a", Passed), ("test_b", Passed)]),
    )
    .await;
    // test_a breaks on main: run.failed, and test_a newly failing.
    store(
        &app,
        run("r2", "main", &[("test_a", Failed), ("test_b", Passed)]),
    )
    .await;
    // A feature branch failing: nothing.
    store(
        &app,
        run("r3", "feat", &[("test_a", Failed), ("test_b", Failed)]),
    )
    .await;
    // test_a still failing on main: run.failed only, nothing newly failing.
    store(
        &app,
        run("r4", "main", &[("test_a", Failed), ("test_b", Passed)]),
    )
    .await;
    // test_b passes only on retry: newly flaky.
    let mut r5 = run("r5", "main", &[("test_a", Passed), ("test_b", Passed)]);
    r5.1[1].flaky = true;
    r5.1[1].retries = 1;
    store(&app, r5).await;

    let test_a = "tests/test_x.py::test_a";
    let (status, _) = app
        .post(
            "/quarantine",
            &json!({"project": "demo", "test_id": test_a, "reason": "flaky in CI"}),
        )
        .await;
    assert_eq!(status, 200);
    let r = app
        .http
        .delete(format!(
            "{}/quarantine/demo/{}",
            app.base(),
            test_a.replace('/', "%2F").replace(':', "%3A")
        ))
        .send()
        .await
        .expect("DELETE reaches the master");
    assert_eq!(r.status().as_u16(), 200);

    // Events arrive in the order they happened, the feature branch's run
    // (stored before the quarantine) having sent none.
    let got = json_rx.wait_for(6).await;
    let kinds: Vec<(&str, Option<&str>, Option<&str>)> = got
        .iter()
        .map(|g| {
            (
                g.event.as_str(),
                g.body["run_id"].as_str(),
                g.body["test_id"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("run.failed", Some("r2"), None),
            ("test.newly_failing", Some("r2"), Some(test_a)),
            ("run.failed", Some("r4"), None),
            (
                "test.newly_flaky",
                Some("r5"),
                Some("tests/test_x.py::test_b")
            ),
            ("test.quarantined", None, Some(test_a)),
            ("test.released", None, Some(test_a)),
        ],
        "{got:#?}"
    );
    for g in &got {
        assert_eq!(g.body["type"], g.event.as_str());
        assert_eq!(g.body["id"], g.id.as_str());
        assert_eq!(g.body["project"], "demo");
    }
    assert_eq!(got[0].body["branch"], "main");
    assert_eq!(got[0].body["data"]["failed"], 1);
    assert_eq!(got[0].body["data"]["newly_failing"], 1);
    assert_eq!(got[1].body["data"]["message"], "assert test_a");
    assert_eq!(got[2].body["data"]["newly_failing"], 0);
    assert_eq!(got[3].body["data"]["reason"], "passed_on_retry");
    assert_eq!(got[4].body["data"]["reason"], "flaky in CI");
    assert_eq!(json_rx.refused(), 0, "every signature checked out");

    // The Slack target asked for run.failed only, as {"text": ...}.
    let slack = slack_rx.wait_for(2).await;
    assert_eq!(slack.len(), 2, "{slack:#?}");
    for (g, run) in slack.iter().zip(["r2", "r4"]) {
        assert_eq!(g.event, "run.failed");
        let text = g.body["text"].as_str().expect("a text field");
        assert!(
            text.contains("demo main: run ") && text.contains(run),
            "{text}"
        );
        assert_eq!(g.body.as_object().map(|o| o.len()), Some(1), "only text");
    }

    // Everything is delivered; once marked, nothing is sent again.
    ptp_test_support::eventually(DEADLINE, "the outbox to be empty", || async {
        let h = webhook_health(&app).await;
        (h["pending"] == 0).then_some(())
    })
    .await;
    let h = webhook_health(&app).await;
    assert_eq!(
        (h["targets"].clone(), h["dead"].clone()),
        (json!(2), json!(0))
    );
    let ids: BTreeSet<String> = json_rx.accepted().into_iter().map(|g| g.id).collect();
    assert_eq!(ids.len(), 6, "each event id arrived exactly once");
    assert_eq!(json_rx.accepted().len(), 6);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("ptp_webhook_deliveries_total{result=\"delivered\"} 8"),
        "{metrics}"
    );
    assert!(metrics.contains("ptp_webhook_pending 0"), "{metrics}");

    // The payload is documented in the OpenAPI description.
    let (_, spec) = app.get("/openapi.json").await;
    let schema = &spec["components"]["schemas"]["WebhookEvent"];
    for field in [
        "id",
        "type",
        "occurred_at",
        "project",
        "run_id",
        "test_id",
        "data",
    ] {
        assert!(
            schema["properties"][field].is_object(),
            "WebhookEvent lacks {field}: {schema}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_every_event_it_missed() {
    // A port nobody listens on (for now).
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr")
    };
    let url = format!("http://{addr}/hook#events=run.failed");
    let hooks = vec![url];
    let mut app = TestApp::spawn_with(|c| quick(c, hooks.clone(), "s3cret")).await;
    for i in 0..3 {
        store(
            &app,
            run(&format!("down-{i}"), "main", &[("test_a", Outcome::Failed)]),
        )
        .await;
    }
    // They pile up while the first is retried.
    ptp_test_support::eventually(DEADLINE, "3 failed attempts", || async {
        (metric(&app, "ptp_webhook_deliveries_total{result=\"failed\"}").await >= 3).then_some(())
    })
    .await;
    assert_eq!(webhook_health(&app).await["pending"], 3);
    // The master restarts meanwhile: the events wait in its database.
    app.stop_master().await;
    app.start_master_with(|c| quick(c, hooks, "s3cret")).await;
    assert_eq!(webhook_health(&app).await["pending"], 3);

    // The receiver comes back on the same port and gets all of them, once.
    let rx = Receiver::start(
        tokio::net::TcpListener::bind(addr)
            .await
            .expect("rebind the port"),
        "s3cret",
    )
    .await;
    let got = rx.wait_for(3).await;
    let runs: Vec<&str> = got
        .iter()
        .filter_map(|g| g.body["run_id"].as_str())
        .collect();
    assert_eq!(
        runs,
        vec!["down-0", "down-1", "down-2"],
        "in order: {got:#?}"
    );
    ptp_test_support::eventually(DEADLINE, "the outbox to be empty", || async {
        (webhook_health(&app).await["pending"] == 0).then_some(())
    })
    .await;
    let ids: BTreeSet<String> = rx.accepted().into_iter().map(|g| g.id).collect();
    assert_eq!((ids.len(), rx.accepted().len()), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_with_another_secret_refuses_and_the_master_keeps_retrying() {
    let rx = Receiver::start(
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        "the-right-secret",
    )
    .await;
    let app = TestApp::spawn_with(|c| quick(c, vec![rx.url()], "a-wrong-secret")).await;
    store(&app, run("bad-sig", "main", &[("test_a", Outcome::Failed)])).await;
    ptp_test_support::eventually(DEADLINE, "the receiver to refuse 3 attempts", || async {
        (rx.refused() >= 3).then_some(())
    })
    .await;
    assert!(rx.accepted().is_empty(), "{:#?}", rx.accepted());
    let h = webhook_health(&app).await;
    assert_eq!(
        (h["pending"].clone(), h["dead"].clone()),
        (json!(1), json!(0))
    );
}
