//! Webhooks through the real master and broker, received by a real HTTP
//! server inside the test that checks the HMAC signature with its own
//! secret (computed here, not by the master's code) and records what it
//! got: a failing run on `main` sends `run.failed` and `test.newly_failing`,
//! a feature branch sends nothing, a test passing on retry sends
//! `test.newly_flaky`, quarantine changes send their events, a
//! Slack target gets `{"text": ...}`; a receiver that was down (and the
//! master restarted meanwhile) gets every event it missed once it is back; a receiver with another secret refuses
//! every request and the master keeps retrying; an `https://` target whose
//! certificate comes from a CA made here (openssl CLI) is refused until the
//! master trusts that CA through `--webhook-ca-file`, then gets its event.
//!
//! Retries and polls are set to tens of milliseconds (the hidden
//! `--webhook-retry-*-ms` / `--webhook-poll-ms` options), so an outage
//! lasts well under a second; nothing here sleeps.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use ptp_nats::schema::{Outcome, RunInfo, TestCase};
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
    /// TLS handshakes that failed (the client did not trust us).
    handshakes_failed: usize,
}

/// A webhook receiver on a real port, verifying signatures with `secret`.
struct Receiver {
    addr: SocketAddr,
    scheme: &'static str,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
}

impl Receiver {
    async fn start(listener: tokio::net::TcpListener, secret: &'static str) -> Receiver {
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let app = Receiver::app(secret, &seen);
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
        });
        Receiver {
            addr,
            scheme: "http",
            seen,
            stop,
        }
    }

    /// The same receiver behind TLS: each connection's handshake with
    /// `tls`, then HTTP/1 (hyper) on the decrypted stream.
    async fn start_tls(
        listener: tokio::net::TcpListener,
        secret: &'static str,
        tls: tokio_rustls::TlsAcceptor,
    ) -> Receiver {
        use tower::ServiceExt;
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let app = Receiver::app(secret, &seen);
        let (token, counts) = (stop.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    _ = token.cancelled() => break,
                    a = listener.accept() => match a {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                };
                let (tls, app, counts) = (tls.clone(), app.clone(), counts.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        counts
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .handshakes_failed += 1;
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| app.clone().oneshot(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            scheme: "https",
            seen,
            stop,
        }
    }

    fn app(secret: &'static str, seen: &Arc<Mutex<Seen>>) -> axum::Router {
        axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state((secret, seen.clone()))
    }

    fn url(&self) -> String {
        format!("{}://{}/hook", self.scheme, self.addr)
    }

    fn handshakes_failed(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .handshakes_failed
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
    let started = chrono::Utc::now();
    let (mut info, cases) = run_of_cases(id.into(), started, cases);
    info.project = "demo".into();
    info.branch = Some(branch.into());
    info.commit = Some(format!("c-{id}"));
    info.worker_id = "w1".into();
    info.finished_at = started;
    info.duration_secs = 0.1;
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

/// A CA and a certificate for 127.0.0.1 it signed, made by the openssl CLI
/// in `dir`: the CA's PEM file and a TLS acceptor presenting the
/// certificate.
fn test_pki(dir: &Path) -> (PathBuf, tokio_rustls::TlsAcceptor) {
    use tokio_rustls::rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    };
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run the openssl CLI (is it installed?)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", "/CN=ptp test CA"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("open server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("parse server.pem");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("parse server.key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("the server certificate and key");
    (
        dir.join("ca.pem"),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_target_is_verified_and_trusted_through_the_ca_file() {
    let pki = tempfile::tempdir().expect("dir");
    let (ca, tls) = test_pki(pki.path());
    let rx = Receiver::start_tls(
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        "s3cret",
        tls,
    )
    .await;
    let hooks = vec![format!("{}#events=run.failed", rx.url())];
    assert!(hooks[0].starts_with("https://127.0.0.1:"), "{hooks:?}");

    // Without the CA file the master trusts the system's roots only: every
    // attempt dies in the handshake, no request reaches the receiver, and
    // the attempts count as failed, with the certificate named.
    let mut app = TestApp::spawn_with(|c| quick(c, hooks.clone(), "s3cret")).await;
    store(&app, run("tls-1", "main", &[("test_a", Outcome::Failed)])).await;
    ptp_test_support::eventually(
        DEADLINE,
        "2 refused handshakes, 2 failed attempts",
        || async {
            let failed = metric(&app, "ptp_webhook_deliveries_total{result=\"failed\"}").await;
            (failed >= 2 && rx.handshakes_failed() >= 2).then_some(())
        },
    )
    .await;
    assert!(rx.accepted().is_empty(), "{:#?}", rx.accepted());
    assert_eq!(rx.refused(), 0);
    assert_eq!(webhook_health(&app).await["pending"], 1);
    let db = TestPool::open(&app.store).await;
    let error = db
        .text("SELECT last_error FROM webhook_deliveries WHERE state = 0")
        .await;
    db.close().await;
    assert!(error.contains("certificate"), "{error}");
    assert!(!error.contains("/hook"), "no URL in errors: {error}");

    // Trusting the test CA, the waiting event arrives, signed.
    app.stop_master().await;
    app.start_master_with(|c| {
        quick(c, hooks, "s3cret");
        c.webhooks.webhook_ca_file = Some(ca);
    })
    .await;
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].event, "run.failed");
    assert_eq!(got[0].body["run_id"], "tls-1");
    assert_eq!(rx.refused(), 0, "the signature checked out");
    ptp_test_support::eventually(DEADLINE, "the outbox to be empty", || async {
        (webhook_health(&app).await["pending"] == 0).then_some(())
    })
    .await;
    assert_eq!(rx.accepted().len(), 1);
}
