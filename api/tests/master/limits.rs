//! The master's HTTP resource limits, driven by raw HTTP/1.1 clients that
//! misbehave on purpose: bodies beyond the memory budget, large reads beyond
//! their cap, headers that never end, keep-alive connections left silent.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A raw connection to the master at `base` (`http://host:port`).
async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("connect to the master")
}

/// Reads one response head: (status, headers with lower-case names).
async fn read_head(conn: &mut TcpStream) -> (u16, Vec<(String, String)>) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = conn.read_u8().await.expect("a response head");
        head.push(b);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Reads a response body of the Content-Length `headers` give, as JSON.
async fn read_json(conn: &mut TcpStream, headers: &[(String, String)]) -> Value {
    let len: usize = header(headers, "content-length")
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.expect("the body");
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// The head of `POST /results` for a `len`-byte body, asking to be told
/// (`100 Continue`) before sending it, as curl does for large bodies.
fn post_head(len: usize) -> String {
    format!(
        "POST /results HTTP/1.1\r\nHost: master\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
    )
}

/// POSTs `body` on a new connection, sending it only once the master asks
/// for it; returns (status, headers, JSON body).
async fn post_expecting_continue(base: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Value) {
    let mut conn = connect(base).await;
    conn.write_all(post_head(body.len()).as_bytes())
        .await
        .expect("send head");
    let (mut status, mut headers) = read_head(&mut conn).await;
    if status == 100 {
        conn.write_all(body).await.expect("send body");
        (status, headers) = read_head(&mut conn).await;
    }
    let json = read_json(&mut conn, &headers).await;
    (status, headers, json)
}

/// The original system's payload for run `run_id`, padded to `len` bytes.
fn padded_run(run_id: &str, len: usize) -> Vec<u8> {
    let bare = json!({"run_id": run_id, "worker_id": "w", "passed": 1, "total": 1, "padding": ""});
    let pad = len - serde_json::to_vec(&bare).expect("json").len();
    let mut v = bare;
    v["padding"] = json!("x".repeat(pad));
    let bytes = serde_json::to_vec(&v).expect("json");
    assert_eq!(bytes.len(), len);
    bytes
}

/// Asserts a 503 refusal with Retry-After whose detail names `setting`.
fn assert_refused(status: u16, headers: &[(String, String)], body: &Value, setting: &str) {
    let shown: String = body.to_string().chars().take(300).collect();
    assert_eq!(status, 503, "{shown}");
    assert!(
        header(headers, "retry-after").is_some_and(|v| v.parse::<u32>().is_ok()),
        "Retry-After in {headers:?}"
    );
    assert_eq!(body["error"], "unavailable", "{shown}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(setting), "names {setting}: {detail}");
}

/// Waits for the master to close `conn`: EOF (or a reset) before
/// [`DEADLINE`]; returns what it sent before closing.
async fn closed_by_master(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match tokio::time::timeout(DEADLINE, conn.read_to_end(&mut got)).await {
        Ok(_) => got,
        Err(_) => panic!("the master kept the connection open for {DEADLINE:?}"),
    }
}

/// With room for ~1 MiB of body (10 MiB at 10× per byte), a 700 KB body
/// being received holds its charge: a 400 KB body is refused 503 unread,
/// a small one gets in beside it, the held one is stored, and its charge
/// is given back (the 400 KB body then fits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_beyond_the_memory_budget_are_refused_and_the_budget_is_given_back() {
    let mut app = TestApp::spawn().await;
    app.stop_master().await;
    app.start_master_with(|c| {
        c.max_body_mb = 1;
        c.max_inflight_body_mb = 10;
    })
    .await;

    let held_body = padded_run("held", 700 * 1024);
    let mut held = connect(app.base()).await;
    held.write_all(post_head(held_body.len()).as_bytes())
        .await
        .expect("send head");
    let (status, _) = read_head(&mut held).await;
    assert_eq!(
        status, 100,
        "the master asks for the body once it is charged"
    );
    let half = held_body.len() / 2;
    held.write_all(&held_body[..half])
        .await
        .expect("half a body");

    let (status, headers, body) =
        post_expecting_continue(app.base(), &padded_run("refused", 400 * 1024)).await;
    assert_refused(status, &headers, &body, "PTP_MAX_INFLIGHT_BODY_MB");

    let (status, body) = app
        .post(
            "/results",
            &json!({"run_id": "small", "worker_id": "w", "passed": 1, "total": 1}),
        )
        .await;
    assert_eq!(status, 202, "a small body fits beside the held one: {body}");

    held.write_all(&held_body[half..]).await.expect("the rest");
    let (status, headers) = read_head(&mut held).await;
    let body = read_json(&mut held, &headers).await;
    assert_eq!(status, 202, "the held body is stored: {body}");

    let (status, _, body) =
        post_expecting_continue(app.base(), &padded_run("later", 400 * 1024)).await;
    assert_eq!(status, 202, "the budget was given back: {body}");
    for id in ["held", "small", "later"] {
        app.wait_run(id).await;
    }
    let (status, _) = app.get("/results/refused").await;
    assert_eq!(status, 404, "the refused run was not stored");
}

/// With one large read allowed, a client that asks for every case of a
/// 16 MiB answer and does not read it holds the permit: another large read
/// is refused 503, while /health and a default page answer; once that
/// client goes, large reads are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_reads_beyond_the_cap_are_refused_while_health_answers() {
    let mut app = TestApp::spawn().await;
    app.stop_master().await;
    app.start_master_with(|c| c.max_large_reads = 1).await;
    let (mut run, mut cases) = synthetic_run("large", 0, 2000);
    for c in &mut cases {
        c.outcome = ptp_nats::schema::Outcome::Failed;
        c.message = Some("m".repeat(4000));
    }
    run.counts = ptp_nats::schema::Counts::of(&cases);
    run.status = ptp_nats::schema::RunStatus::Failed;
    publish_direct(&app.nats.url(), &[(run, cases)], true).await;
    app.wait_run("large-00000").await;
    let all = "/results/large-00000?cases_limit=200000";

    // A small receive buffer: the answer stays mostly unsent.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    let addr = app
        .base()
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let mut stalled = socket.connect(addr).await.expect("connect");
    stalled
        .write_all(format!("GET {all} HTTP/1.1\r\nHost: master\r\n\r\n").as_bytes())
        .await
        .expect("send request");
    let (status, headers) = read_head(&mut stalled).await;
    assert_eq!(status, 200);
    let len: usize = header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        len > 16_000_000,
        "an answer too large for socket buffers: {len}"
    );

    let r = app
        .http
        .get(format!("{}{all}", app.base()))
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    let headers: Vec<(String, String)> = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_refused(status, &headers, &body, "PTP_MAX_LARGE_READS");

    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let (status, page) = app.get("/results/large-00000").await;
    assert_eq!(status, 200, "a default page is not a large read");
    assert_eq!(page["cases"].as_array().map(Vec::len), Some(100));

    drop(stalled);
    ptp_test_support::eventually(
        DEADLINE,
        "a large read once the stalled one went",
        || async {
            let (status, body) = app.get(all).await;
            (status == 200).then_some(body)
        },
    )
    .await;
}

/// A client that sends half a header line and stalls is disconnected after
/// the header-read timeout, without an answer; so is one that sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stalling_in_their_headers_are_disconnected() {
    let mut app = TestApp::spawn().await;
    app.stop_master().await;
    app.start_master_with(|c| {
        c.header_read_timeout_secs = 1;
        c.idle_timeout_secs = 3600;
    })
    .await;

    let mut dribbling = connect(app.base()).await;
    dribbling
        .write_all(b"GET /health HTTP/1.1\r\nHost: mas")
        .await
        .expect("half a header");
    let mut silent = connect(app.base()).await;
    assert_eq!(closed_by_master(&mut dribbling).await, b"", "no answer");
    assert_eq!(closed_by_master(&mut silent).await, b"", "no answer");

    let (status, _) = app.get("/health").await;
    assert_eq!(status, 200, "the master goes on serving");
}

/// A keep-alive connection left silent after its request is closed after
/// the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let mut app = TestApp::spawn().await;
    app.stop_master().await;
    app.start_master_with(|c| {
        c.header_read_timeout_secs = 3600;
        c.idle_timeout_secs = 1;
    })
    .await;

    let mut conn = connect(app.base()).await;
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: master\r\n\r\n")
        .await
        .expect("request");
    let (status, headers) = read_head(&mut conn).await;
    let body = read_json(&mut conn, &headers).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(
        header(&headers, "connection"),
        Some("close"),
        "the connection is kept alive"
    );
    assert_eq!(closed_by_master(&mut conn).await, b"", "closed when idle");
}
