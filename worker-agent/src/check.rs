//! `ptp-agent check`: the first thing a CI author runs. It prints what a run
//! would send (project, branch, commit, worker, transport, spool), then
//! tries the path a run would take and stops at the first thing that would
//! fail, saying why and what to change. Exit 0 when a run would be
//! delivered, 1 otherwise.
//!
//! # Over NATS
//!
//! 1. A plain TCP connection and the server's `INFO` line: nothing listening,
//!    something that is not NATS, TLS asked for but not offered, JetStream
//!    off, are all told apart before any library gets involved.
//! 2. A real connection with the configured credentials and TLS: a refused
//!    password, token or creds file, an untrusted certificate.
//! 3. A JetStream publish that cannot be stored: a message on
//!    `ptp.results.check` with `Nats-Expected-Stream: PTP_RESULTS` and a
//!    `Nats-Expected-Last-Msg-Id` no message has. The stream refuses it with
//!    "wrong last msg id" (JetStream on, the stream exists and captures the
//!    subject, this user may publish there and receive the ack), or the
//!    server says no stream captures it, or another stream does, or the
//!    server reports a permissions violation. It needs only the rights a run
//!    needs (publish on `ptp.results.>`, subscribe on `_INBOX.>`), so it
//!    works with the locked-down `agent` user of `deploy/nats.conf`, and it
//!    stores nothing.
//!
//! # Over HTTP
//!
//! `POST /agent/check` on the master with the token: refused token, master
//! unreachable, master up but its NATS away, not a master at all.
//!
//! When `MASTER_URL` is set for the job summary, a read of `/results` checks
//! that the summary's queries would be answered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use serde::Deserialize;
use tokio::io::AsyncBufReadExt;

use crate::config::{Settings, Transport};
use crate::master::{Master, MasterError};

/// How long each step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Subject of the probe (captured by the stream, never stored).
pub const PROBE_SUBJECT: &str = "ptp.results.check";

/// Something that would make a run fail, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub reason: String,
    /// What to change.
    pub fix: String,
}

fn problem(reason: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem {
        reason: reason.into(),
        fix: fix.into(),
    }
}

/// The fields of a NATS server's INFO line that the check reads.
#[derive(Debug, Default, Deserialize)]
struct Info {
    #[serde(default)]
    version: String,
    #[serde(default)]
    tls_required: bool,
    #[serde(default)]
    tls_available: bool,
    #[serde(default)]
    jetstream: bool,
    #[serde(default)]
    auth_required: bool,
    #[serde(default)]
    max_payload: usize,
}

/// `ptp-agent check`.
pub async fn check(s: &Settings) -> i32 {
    println!("ptp-agent {}", env!("CARGO_PKG_VERSION"));
    println!("  project:   {}", s.project);
    let unknown = "unknown (set BRANCH / COMMIT)";
    println!("  branch:    {}", s.branch.as_deref().unwrap_or(unknown));
    println!("  commit:    {}", s.commit.as_deref().unwrap_or(unknown));
    println!("  worker id: {} (host {})", s.worker_id, s.host);
    let pending = crate::spool::list(&s.spool_dir).map_or(0, |l| l.len());
    println!(
        "  spool:     {} ({pending} run(s) waiting)",
        s.spool_dir.display()
    );
    match &s.summary.file {
        Some(f) => println!("  summary:   appended to {}", f.display()),
        None => println!("  summary:   none (--summary FILE or GITHUB_STEP_SUMMARY)"),
    }
    if s.summary.annotations {
        println!("  annotations: ::error lines for failed tests (GITHUB_ACTIONS=true)");
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }

    let mut problems = Vec::new();
    match s.transport {
        Transport::Nats => {
            println!("  transport: nats ({})", s.nats_url);
            let mut ok = Vec::new();
            let result = check_nats(s, &mut ok).await;
            ok.iter().for_each(|l| println!("ok: {l}"));
            if let Err(p) = result {
                problems.push(p);
            }
            println!(
                "a run publishes its test cases in chunks on {} and a final message on {} \
                 (message ids <run_id>:c<n>:<digest> and <run_id>:run:<digest>, so a resend is stored once), \
                 and heartbeats on {} (every 10 s, --heartbeat-secs)",
                ptp_nats::subjects::RESULTS_CASES,
                ptp_nats::subjects::RESULTS_RUN,
                ptp_nats::subjects::HEARTBEAT
            );
        }
        Transport::Http => {
            println!(
                "  transport: http ({})",
                s.master_url.as_deref().unwrap_or("MASTER_URL unset")
            );
            match check_http(s).await {
                Ok(lines) => lines.iter().for_each(|l| println!("ok: {l}")),
                Err(p) => problems.push(p),
            }
            println!(
                "a run is sent as the same wire messages, one POST /agent/messages each; \
                 the master publishes them into the stream under their message ids, so a resend is stored once \
                 (no heartbeats over HTTP)"
            );
        }
    }
    if s.summary.file.is_some()
        && s.transport == Transport::Nats
        && let Some(url) = &s.master_url
    {
        match check_reads(&Master::new(url, s.token.clone()), s).await {
            Ok(l) => println!("ok: {l}"),
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        println!("ok: a run of project {:?} would be delivered", s.project);
        return 0;
    }
    for p in &problems {
        println!("problem: {}", p.reason);
        println!("    fix: {}", p.fix);
    }
    1
}

/// Reads the INFO line of the server at `host:port`.
async fn read_info(host: &str, port: u16) -> Result<Info, Problem> {
    let unreachable = |why: String| {
        problem(
            format!("cannot reach a NATS server at {host}:{port}: {why}"),
            "check the host and port in NATS_URL and that nats-server runs there and is reachable \
             from this runner (firewall); runners that cannot reach it can send over HTTPS \
             instead: set MASTER_URL and PTP_API_TOKEN and unset NATS_URL",
        )
    };
    let stream = tokio::time::timeout(STEP_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| unreachable(format!("no answer within {STEP_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let mut line = String::new();
    // An INFO line is a few hundred bytes: never buffer more than 64 KiB.
    let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(stream, 64 * 1024));
    let read = tokio::time::timeout(STEP_TIMEOUT, reader.read_line(&mut line)).await;
    let not_nats = |said: &str| {
        problem(
            format!(
                "{host}:{port} answers, but not as a NATS server (it said {:?})",
                said.chars().take(80).collect::<String>()
            ),
            "NATS_URL must name the NATS server (usually port 4222), not the master's HTTP API; \
             to send over HTTP set MASTER_URL instead",
        )
    };
    match read {
        Err(_) => Err(not_nats("nothing")),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Ok(Ok(_)) => match line.strip_prefix("INFO ") {
            Some(json) => serde_json::from_str(json.trim()).map_err(|_| not_nats(&line)),
            None => Err(not_nats(line.trim())),
        },
    }
}

/// The NATS path; the lines to print when it works.
async fn check_nats(s: &Settings, ok: &mut Vec<String>) -> Result<(), Problem> {
    let first = s.nats_url.split(',').next().unwrap_or_default().trim();
    let addr: async_nats::ServerAddr = first.parse().map_err(|e| {
        problem(
            format!("NATS_URL {first:?} is not a NATS URL: {e}"),
            "write it as nats://HOST:4222 (or tls://HOST:4222 for TLS)",
        )
    })?;
    let info = read_info(addr.host(), addr.port()).await?;
    ok.push(format!(
        "nats-server {} answers at {}:{} (JetStream {}, TLS {}, authentication {})",
        info.version,
        addr.host(),
        addr.port(),
        if info.jetstream { "on" } else { "off" },
        if info.tls_required {
            "required"
        } else if info.tls_available {
            "available"
        } else {
            "off"
        },
        if info.auth_required {
            "required"
        } else {
            "not required"
        }
    ));
    let client_tls = addr.tls_required() || s.auth.nats_ca.is_some() || s.auth.nats_cert.is_some();
    if client_tls && !info.tls_required && !info.tls_available {
        return Err(problem(
            format!(
                "TLS mismatch: this agent asks for TLS ({}) but the server at {}:{} does not offer it",
                if addr.tls_required() {
                    "a tls:// URL"
                } else {
                    "NATS_CA / NATS_CERT are set"
                },
                addr.host(),
                addr.port()
            ),
            "use a nats:// URL and unset NATS_CA, NATS_CERT and NATS_KEY, or enable TLS on the \
             server (a tls { cert_file, key_file } block in its config)",
        ));
    }

    let server_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = server_errors.clone();
    let options = s
        .auth
        .apply(async_nats::ConnectOptions::new())
        .await
        .map_err(|e| problem(e.to_string(), "fix the path or unset the variable"))?
        .name("ptp-agent check")
        .connection_timeout(STEP_TIMEOUT)
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event
                    && let Ok(mut v) = seen.lock()
                {
                    v.push(e.to_string());
                }
            }
        });
    let creds_given = !s.auth.is_empty();
    let client = tokio::time::timeout(STEP_TIMEOUT * 2, options.connect(first))
        .await
        .map_err(|_| {
            problem(
                format!(
                    "connecting to {first} did not finish within {:?}",
                    STEP_TIMEOUT * 2
                ),
                "check that nothing between this runner and the server drops the connection",
            )
        })?
        .map_err(|e| connect_problem(&e, first, creds_given, &info))?;
    let served = client.server_info();
    ok.push(format!(
        "connected{} (max payload {} bytes)",
        if creds_given {
            " with the configured credentials"
        } else {
            ""
        },
        served.max_payload.max(info.max_payload)
    ));

    if !info.jetstream {
        let _ = tokio::time::timeout(Duration::from_secs(1), client.drain()).await;
        return Err(problem(
            "JetStream is not enabled on this NATS server, so there is no stream to keep results",
            "start nats-server with JetStream: `nats-server -js -sd <store dir>` (or a \
                 `jetstream { store_dir: ... }` block in its config), then start ptp-master once \
                 against it: it creates the stream",
        ));
    }

    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(STEP_TIMEOUT);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Expected-Stream", ptp_nats::STREAM);
    let never = format!("ptp-agent-check-{}", uuid::Uuid::now_v7());
    headers.insert("Nats-Expected-Last-Msg-Id", never.as_str());
    let sent = js
        .publish_with_headers(PROBE_SUBJECT, headers, Default::default())
        .await;
    let answer = match sent {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    let permission = || {
        server_errors.lock().ok().and_then(|v| {
            v.iter()
                .find(|e| e.to_lowercase().contains("permission"))
                .cloned()
        })
    };
    let result = match answer {
        Err(e) if e.kind() == PublishErrorKind::WrongLastMessageId => {
            ok.push(format!(
                "stream {} captures {} and accepts this agent's messages (the probe was refused unstored, as intended)",
                ptp_nats::STREAM,
                ptp_nats::subjects::RESULTS_ALL
            ));
            Ok(())
        }
        Err(e) if e.kind() == PublishErrorKind::StreamNotFound => Err(problem(
            format!(
                "no stream captures {} on this server: stream {} is missing (or JetStream is not enabled for this user's account)",
                ptp_nats::subjects::RESULTS_ALL,
                ptp_nats::STREAM
            ),
            "start ptp-master against this NATS server once: it creates the stream at start \
             (check that it uses the same server and account); with accounts, the account needs \
             `jetstream: enabled`",
        )),
        Err(e) if e.to_string().contains("expected stream") => Err(problem(
            format!(
                "another stream than {} captures {} on this server ({e})",
                ptp_nats::STREAM,
                ptp_nats::subjects::RESULTS_ALL
            ),
            "remove that stream or its subjects overlap, then start ptp-master to create its stream",
        )),
        Err(e) => match permission() {
            Some(p) => Err(problem(
                format!("the server refused this user's messages: {p}"),
                "the agent's NATS user needs publish on ptp.results.> and ptp.heartbeat and \
                 subscribe on _INBOX.> (see the `agent` user in deploy/nats.conf)",
            )),
            None => Err(problem(
                format!("JetStream did not acknowledge a test message: {e}"),
                "check the server's log and that the master has created the stream",
            )),
        },
        Ok(ack) => {
            ok.push(format!(
                "stream {} stored the probe (seq {}): this server ignores Nats-Expected-Last-Msg-Id; \
                 the master records it under GET /rejected",
                ack.stream, ack.sequence
            ));
            Ok(())
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), client.drain()).await;
    result
}

/// Turns a failed connection into a reason and a fix.
fn connect_problem(
    e: &async_nats::ConnectError,
    url: &str,
    creds_given: bool,
    info: &Info,
) -> Problem {
    use async_nats::ConnectErrorKind as K;
    match e.kind() {
        K::AuthorizationViolation if !creds_given => problem(
            format!("the server at {url} requires credentials and none are set ({e})"),
            "set NATS_USER and NATS_PASSWORD (or NATS_TOKEN, or NATS_CREDS for a .creds file); \
             with deploy/nats.conf the user is `agent` and the password PTP_AGENT_NATS_PASSWORD",
        ),
        K::AuthorizationViolation => problem(
            format!(
                "the server at {url} refused the credentials: wrong user, password or token ({e})"
            ),
            "check NATS_USER / NATS_PASSWORD (or NATS_TOKEN, NATS_CREDS) against the server's \
             configuration; with deploy/nats.conf the user is `agent` and the password \
             PTP_AGENT_NATS_PASSWORD",
        ),
        K::Authentication => problem(
            format!("signing the server's challenge failed: {e}"),
            "NATS_CREDS must be a .creds file written by `nsc` (JWT and nkey seed)",
        ),
        K::Tls if info.tls_required && !creds_given => problem(
            format!("the server requires TLS and its certificate is not trusted: {e}"),
            "set NATS_CA to the CA certificate (PEM) that signed the server's certificate; \
             if it verifies clients, also NATS_CERT and NATS_KEY",
        ),
        K::Tls => problem(
            format!("TLS with the server at {url} failed: {e}"),
            "NATS_CA must be the CA that signed the server's certificate, the URL's host must \
             match the certificate, and NATS_CERT / NATS_KEY a pair the server accepts",
        ),
        _ => problem(
            format!("connecting to {url} failed: {e}"),
            "check NATS_URL and the server's log",
        ),
    }
}

/// The HTTP path; the lines to print when it works.
async fn check_http(s: &Settings) -> Result<Vec<String>, Problem> {
    let Some(url) = &s.master_url else {
        return Err(problem(
            "--transport http needs the master's URL",
            "set MASTER_URL (or --master-url) to the master's API, e.g. https://ptp.example.com",
        ));
    };
    let master = Master::new(url, s.token.clone());
    match master.check(STEP_TIMEOUT * 2).await {
        Ok(a) => Ok(vec![format!(
            "the master at {url} accepts this token and publishes into stream {} (messages up to {} bytes)",
            a.stream, a.max_message_bytes
        )]),
        Err(e) => Err(http_problem(
            &e,
            s.token.is_some(),
            "a write token",
            "PTP_WRITE_TOKENS",
        )),
    }
}

fn http_problem(e: &MasterError, token_given: bool, needs: &str, setting: &str) -> Problem {
    match e {
        MasterError::Unauthorized { .. } if !token_given => problem(
            format!("{e}; no token is set"),
            format!("set PTP_API_TOKEN to {needs} of the master (one of its {setting})"),
        ),
        MasterError::Unauthorized { .. } => problem(
            e.to_string(),
            format!("PTP_API_TOKEN must be {needs} of the master (one of its {setting})"),
        ),
        MasterError::Unreachable { .. } => problem(
            e.to_string(),
            "check MASTER_URL (scheme, host, port); behind a proxy set HTTPS_PROXY; a private CA \
             must be in the system's CA store",
        ),
        MasterError::Unavailable { status: 503, .. } => problem(
            e.to_string(),
            "the master is up but cannot reach its NATS server: see its GET /health and its NATS_URL; \
             runs are spooled meanwhile and `ptp-agent flush` sends them later",
        ),
        MasterError::Unavailable { .. } => problem(e.to_string(), "see the master's log"),
        MasterError::Refused { status: 404, .. } => problem(
            e.to_string(),
            "MASTER_URL must be the pytest-platform master's API, of a version with /agent/check \
             (upgrade it)",
        ),
        MasterError::Refused { .. } => problem(e.to_string(), "see the master's log"),
    }
}

/// The summary's reads.
async fn check_reads(master: &Master, s: &Settings) -> Result<String, Problem> {
    master
        .get_json(
            "/results",
            &[("project", &s.project), ("limit", "1")],
            STEP_TIMEOUT * 2,
        )
        .await
        .map(|_| {
            format!(
                "the master at {} answers the summary's queries",
                master.url()
            )
        })
        .map_err(|e| {
            http_problem(
                &e,
                s.token.is_some(),
                "a read or write token",
                "PTP_READ_TOKENS",
            )
        })
}
