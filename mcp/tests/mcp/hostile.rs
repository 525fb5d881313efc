//! What a hostile client tries, each against the real thing: the in-process
//! rmcp client and the real master for `get_report`'s files, rmcp's HTTP
//! client and raw HTTP bodies against `serve_http`, and raw lines to the
//! built binary over stdio.

use std::path::Path;

use rmcp::ServiceExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// The malformed messages every transport must answer with -32700.
fn unparsable() -> [Vec<u8>; 3] {
    [
        b"{not json".to_vec(),
        b"\xff\xfe{\"jsonrpc\":\"2.0\"}".to_vec(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
    ]
}

fn tools_call(id: u64, tool: &str, arguments: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
    .to_string()
    .into_bytes()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

/// `output_path` names a file inside `--report-dir` and nothing else: an
/// absolute path, `..`, `~`, a link leading out and a file that is not a
/// report are refused with the target untouched; a name inside is written,
/// and written again over the server's own report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_files_stay_in_the_report_dir() {
    let app = TestApp::spawn().await;
    app.seed().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let reports = tmp.path().join("reports");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir outside");
    let victim = outside.join("victim.html");
    std::fs::write(&victim, "root:x:0:0:precious").expect("victim");
    let mut config = ptp_mcp::Config::for_master(&app.base);
    config.timeout_secs = 30;
    config.report_dir = Some(reports.clone());
    let client = mcp_client_for(&config).await;
    let reports = reports
        .canonicalize()
        .expect("the report dir is created at start");
    let report = |path: &str| {
        call(
            &client,
            "get_report",
            json!({"project": "shop", "output_path": path}),
        )
    };
    let untouched = || {
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "root:x:0:0:precious"
        )
    };

    let e = err_text("get_report", &report(victim.to_str().expect("utf-8")).await);
    assert_eq!(
        e,
        format!(
            "get_report failed: output_path: absolute paths are not allowed; give a file name \
             such as report.html; it is written under the report dir {} (--report-dir)",
            reports.display()
        )
    );
    untouched();
    for (path, why) in [
        ("../outside/victim.html", "'..' is not allowed"),
        ("~/victim.html", "'~' is not expanded"),
    ] {
        let e = err_text("get_report", &report(path).await);
        assert!(e.contains(why), "{path}: {e}");
    }
    untouched();

    // A link inside the report dir to a file outside: not followed.
    std::os::unix::fs::symlink(&victim, reports.join("link.html")).expect("symlink");
    let e = err_text("get_report", &report("link.html").await);
    assert!(
        e.contains("link.html is a symbolic link; it was not replaced"),
        "{e}"
    );
    untouched();
    assert!(reports.join("link.html").is_symlink(), "the link is kept");
    // A linked directory leading outside.
    std::os::unix::fs::symlink(&outside, reports.join("out")).expect("symlink");
    let e = err_text("get_report", &report("out/new.html").await);
    assert!(e.contains("leads outside the report dir"), "{e}");
    assert!(!outside.join("new.html").exists());
    // A file that is not a report.
    std::fs::write(reports.join("notes.html"), "my notes").expect("notes");
    let e = err_text("get_report", &report("notes.html").await);
    assert!(
        e.contains("notes.html exists and is not a report written by ptp-mcp; it was not replaced"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(reports.join("notes.html")).expect("notes"),
        "my notes"
    );

    // A name inside is written; the file replaces the embedded HTML.
    let r = report("shop.html").await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let written = reports.join("shop.html");
    assert!(
        text(&r).contains(&format!("to {}.", written.display())),
        "{}",
        text(&r)
    );
    assert!(r.content.iter().all(|c| c.as_resource().is_none()));
    let html = std::fs::read_to_string(&written).expect("report written");
    assert!(
        html.starts_with("<!doctype html>") && html.contains(ptp_mcp::report::GENERATOR_MARKER)
    );
    assert!(html.contains("seed-3"));
    // Written again: its own report is replaced.
    std::fs::write(&written, format!("{html}<!-- sentinel -->")).expect("mark");
    let r = report("shop.html").await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let html = std::fs::read_to_string(&written).expect("report rewritten");
    assert!(html.contains("seed-3") && !html.contains("sentinel"));
    // An existing subdirectory is fine.
    std::fs::create_dir(reports.join("team")).expect("mkdir team");
    let r = report("team/shop.html").await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert!(reports.join("team/shop.html").is_file());
    // No temporary file is left behind, nothing else appeared.
    assert_eq!(
        names_in(&reports),
        ["link.html", "notes.html", "out", "shop.html", "team"]
    );
    assert_eq!(names_in(&outside), ["victim.html"]);

    client.cancel().await.expect("client closes");
    app.stop().await;
}

/// Over `--http` without `--report-dir` no file is written, and malformed
/// bodies get a JSON-RPC error body (400) while the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_without_report_dir_writes_nothing_and_answers_malformed_bodies() {
    use rmcp::transport::StreamableHttpClientTransport;

    let app = TestApp::spawn().await;
    app.seed().await;
    let config = ptp_mcp::Config::for_master(&app.base);
    let server = ptp_mcp::PtpMcp::from_config(&config).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(ptp_mcp::serve_http(
        server,
        listener,
        ptp_mcp::HttpAccess::new(config.allowed_hosts(), &[]),
        shutdown.clone(),
    ));
    let client = ()
        .serve(StreamableHttpClientTransport::from_uri(format!(
            "http://{addr}/mcp"
        )))
        .await
        .expect("MCP over HTTP initialises");

    let tmp = tempfile::tempdir().expect("tempdir");
    let target = tmp.path().join("r.html");
    for path in [target.to_str().expect("utf-8"), "r.html"] {
        let e = err_text(
            "get_report",
            &call(
                &client,
                "get_report",
                json!({"project": "shop", "output_path": path}),
            )
            .await,
        );
        assert!(
            e.contains("output_path: this server writes no files") && e.contains("--report-dir"),
            "{e}"
        );
    }
    assert!(!target.exists(), "nothing written");
    assert!(names_in(tmp.path()).is_empty());

    let post = |body: Vec<u8>| {
        reqwest::Client::new()
            .post(format!("http://{addr}/mcp"))
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    for bad in unparsable() {
        let r = post(bad).await.expect("request sent");
        assert_eq!(r.status().as_u16(), 400);
        let v: Value = r.json().await.expect("a JSON-RPC error body");
        assert_eq!(
            (&v["id"], &v["error"]["code"]),
            (&Value::Null, &json!(-32700)),
            "{v}"
        );
    }
    let r = post(tools_call(9, "get_summary", json!([1, 2])))
        .await
        .expect("request sent");
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.expect("a JSON-RPC error body");
    assert_eq!(
        (&v["id"], &v["error"]["code"]),
        (&json!(9), &json!(-32602)),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("arguments must be an object")),
        "{v}"
    );

    // Still serving.
    let s = ok_json(
        "get_summary",
        &call(&client, "get_summary", json!({"limit": 1})).await,
    );
    assert_eq!(s["runs"][0]["run_id"], "seed-3");
    client.cancel().await.expect("client closes");
    shutdown.cancel();
    serving
        .await
        .expect("joined")
        .expect("HTTP server stopped cleanly");
    app.stop().await;
}

/// Over stdio, `{not json`, invalid UTF-8 and 10,000-deep nesting each get
/// -32700 with id null and the next request is answered; `arguments` that
/// is not an object gets -32602 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_answers_malformed_messages_and_goes_on() {
    let url = format!("http://127.0.0.1:{}", dead_port().await);
    let mut s = StdioServer::start(&url).await;
    for (i, bad) in (100u64..).zip(unparsable()) {
        s.send(&bad).await;
        let (_, r) = s.recv().await;
        assert_eq!(
            (&r["id"], &r["error"]["code"]),
            (&Value::Null, &json!(-32700)),
            "{r}"
        );
        let ok = s.request(json!(i), "tools/list", json!({})).await;
        assert_eq!(ok["id"], i, "{ok}");
        assert_eq!(
            ok["result"]["tools"].as_array().map(Vec::len),
            Some(12),
            "{ok}"
        );
    }
    s.send(&tools_call(7, "get_summary", json!([1, 2]))).await;
    let (_, r) = s.recv().await;
    assert_eq!(
        (&r["id"], &r["error"]["code"]),
        (&json!(7), &json!(-32602)),
        "{r}"
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("arguments must be an object") && m.contains("array")),
        "{r}"
    );
    let ok = s.request(json!(8), "ping", json!({})).await;
    assert_eq!(ok["result"], json!({}), "{ok}");
    s.finish().await;
}

/// Over stdio, a 10 MB `project` or `output_path` gets a short argument
/// error (argument, length, limit), and neither the answer nor the log
/// carries the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_refuses_10_mb_arguments_with_a_short_answer() {
    let url = format!("http://127.0.0.1:{}", dead_port().await);
    let mut s = StdioServer::start(&url).await;
    let big = 10 * 1024 * 1024;
    for (id, tool, arg, fill, limit) in [
        (1, "get_summary", "project", 'p', 512),
        (2, "get_report", "output_path", 'o', 1024),
    ] {
        s.send(&tools_call(
            id,
            tool,
            json!({arg: fill.to_string().repeat(big)}),
        ))
        .await;
        let (len, r) = s.recv().await;
        assert!(len < 2048, "{tool}: the reply is {len} bytes");
        assert_eq!(r["id"], id);
        assert_eq!(r["result"]["isError"], true, "{r}");
        let text = r["result"]["content"][0]["text"].as_str().unwrap_or("");
        assert!(
            text.starts_with(&format!(
                "{tool} failed: {arg} is 10485760 bytes, limit {limit}: \"{}",
                fill.to_string().repeat(100)
            )),
            "{text}"
        );
        assert!(text.contains("[trimmed 10485660 chars]"), "{text}");
    }
    let log = s.finish().await;
    assert!(log.len() < 16 * 1024, "the log is {} bytes", log.len());
    for fill in ["p", "o"] {
        assert!(!log.contains(&fill.repeat(200)), "{}", helpers_short(&log));
    }
}
