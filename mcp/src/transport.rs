//! Serving [`PtpMcp`] over MCP's two transports: stdio (the default, what
//! editors spawn) and streamable HTTP at `/mcp` (one server for a team),
//! which also serves the report as a page at `/report` ([`crate::page`]).
//!
//! [`serve_http`] takes a bound listener and a cancellation token, like the
//! master's `run`, so tests serve on port 0 with exactly the production
//! wiring. Cancelling the token stops accepting connections, ends the MCP
//! sessions and lets in-flight requests finish.
//!
//! The HTTP transport checks the `Host` header of every request, `/mcp`
//! and `/report` alike, against an allow-list (loopback by default, as
//! rmcp does; host and optional port, case-insensitive) against DNS
//! rebinding: a web page in the user's browser must not be able to reach a
//! local server through a name it controls; otherwise 403. The check is
//! this module's, in one middleware, and rmcp's own is turned off. With
//! `--http-tokens`, every request must also carry one of the tokens
//! (compared in constant time, never logged): `Authorization: Bearer
//! <token>`, or HTTP Basic with the token as the password, which is what a
//! browser sends after its login prompt; otherwise 401, challenging MCP
//! clients for a bearer token and browsers (on `/report`) for Basic.
//!
//! Both transports screen every incoming message with [`jsonrpc::screen`]
//! before rmcp reads it, so malformed JSON, invalid UTF-8, deep nesting and
//! wrongly typed params get a JSON-RPC error reply and the session goes on.
//! Over stdio that takes a pump: [`serve_lines`] reads lines (at most
//! [`jsonrpc::MAX_STDIO_MESSAGE_BYTES`] each), hands the good ones to rmcp
//! through an in-memory pipe and merges rmcp's replies with its own on the
//! output, whole lines only. Over HTTP a middleware reads the body (at most
//! [`jsonrpc::MAX_HTTP_BODY_BYTES`]) and answers a refused one itself with
//! status 400 and a JSON-RPC error body; it runs after the token check, so
//! an unauthenticated body is never parsed.

use anyhow::Context;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::jsonrpc::{self, Verdict};
use crate::server::PtpMcp;

/// Buffer of the in-memory pipes between the stdio pump and rmcp.
const PIPE_BYTES: usize = 64 * 1024;

/// Serves one MCP session on stdin/stdout until the client closes it.
/// Logs must go to stderr: stdout carries the protocol.
pub async fn serve_stdio(server: PtpMcp) -> anyhow::Result<()> {
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    serve_lines(server, stdin, stdout).await
}

/// Serves one MCP session of newline-delimited JSON-RPC on `input` and
/// `output` (stdio's framing) until `input` ends, screening every line
/// (module doc).
pub async fn serve_lines<R, W>(server: PtpMcp, input: R, output: W) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (to_rmcp, rmcp_in) = tokio::io::duplex(PIPE_BYTES);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(PIPE_BYTES);
    let (replies, replies_rx) = mpsc::channel(16);
    let reader = tokio::spawn(read_lines(BufReader::new(input), to_rmcp, replies));
    let writer = tokio::spawn(write_lines(BufReader::new(from_rmcp), replies_rx, output));
    let served = async {
        let running = server
            .serve((rmcp_in, rmcp_out))
            .await
            .context("MCP initialisation over stdio failed")?;
        running
            .waiting()
            .await
            .context("the stdio MCP session ended with an error")?;
        anyhow::Ok(())
    }
    .await;
    // rmcp has dropped its ends of the pipes: the writer writes what is
    // left and ends; the reader may still wait on input nobody needs.
    let written = writer.await;
    reader.abort();
    served?;
    written
        .context("the stdio writer stopped")?
        .context("cannot write to stdout")
}

/// One line read by [`read_line`].
enum LineRead {
    /// A whole line (with its `\n`) is in the buffer.
    Line,
    /// The line had this many bytes, more than the limit; it was dropped.
    TooLong(usize),
    /// The input ended (a last line without `\n` is dropped, as rmcp does).
    Eof,
}

/// Reads one `\n`-terminated line into `line`, never holding more than
/// `max` bytes of it: a longer line is consumed and dropped.
async fn read_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    line.clear();
    let mut total = 0usize;
    let mut too_long = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            return Ok(LineRead::Eof);
        }
        let newline = available.iter().position(|b| *b == b'\n');
        let take = newline.map_or(available.len(), |i| i + 1);
        total = total.saturating_add(take);
        if !too_long && line.len() + take > max {
            too_long = true;
            *line = Vec::new();
        }
        if !too_long {
            line.extend_from_slice(&available[..take]);
        }
        input.consume(take);
        if newline.is_some() {
            return Ok(if too_long {
                LineRead::TooLong(total)
            } else {
                LineRead::Line
            });
        }
    }
}

/// The stdio pump's input side: screened lines to rmcp, replies to
/// refused ones to the writer. Ends at the end of `input`, which closes
/// rmcp's input and so ends the session.
async fn read_lines<R: AsyncBufRead + Unpin>(
    mut input: R,
    mut to_rmcp: tokio::io::DuplexStream,
    replies: mpsc::Sender<Value>,
) {
    let mut line = Vec::new();
    loop {
        let verdict = match read_line(&mut input, &mut line, jsonrpc::MAX_STDIO_MESSAGE_BYTES).await
        {
            Ok(LineRead::Eof) => return,
            Err(e) => {
                tracing::error!("cannot read stdin: {e}");
                return;
            }
            Ok(LineRead::TooLong(n)) => Verdict::Reply(jsonrpc::error_reply(
                Value::Null,
                jsonrpc::INVALID_REQUEST,
                format!(
                    "Invalid Request: the message is {n} bytes, limit {}; it was not read",
                    jsonrpc::MAX_STDIO_MESSAGE_BYTES
                ),
            )),
            Ok(LineRead::Line) => {
                let message = line.strip_suffix(b"\n").unwrap_or(&line);
                let message = message.strip_suffix(b"\r").unwrap_or(message);
                if message.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                jsonrpc::screen(message)
            }
        };
        match verdict {
            Verdict::Pass => {
                if to_rmcp.write_all(&line).await.is_err() {
                    return; // rmcp has ended
                }
            }
            Verdict::Reply(reply) => {
                tracing::debug!(error = %reply["error"], "refused an incoming message");
                if replies.send(reply).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The stdio pump's output side: rmcp's lines and the pump's own replies,
/// each written whole, until rmcp has ended.
async fn write_lines<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin>(
    mut from_rmcp: R,
    mut replies: mpsc::Receiver<Value>,
    mut output: W,
) -> std::io::Result<()> {
    async fn reply<W: AsyncWrite + Unpin>(output: &mut W, reply: &Value) -> std::io::Result<()> {
        let mut line = reply.to_string().into_bytes();
        line.push(b'\n');
        output.write_all(&line).await?;
        output.flush().await
    }
    let mut line = Vec::new();
    let mut replies_open = true;
    loop {
        tokio::select! {
            // Cancel-safe: a line read in part stays in `line`.
            read = from_rmcp.read_until(b'\n', &mut line) => {
                if read? == 0 {
                    break;
                }
                output.write_all(&line).await?;
                output.flush().await?;
                line.clear();
            }
            next = replies.recv(), if replies_open => match next {
                Some(r) => reply(&mut output, &r).await?,
                None => replies_open = false,
            },
        }
    }
    while let Ok(r) = replies.try_recv() {
        reply(&mut output, &r).await?;
    }
    output.flush().await
}

/// Who may use the HTTP transport (`/mcp` and the `/report` page alike).
#[derive(Clone, Default)]
pub struct HttpAccess {
    /// `Host` values accepted (`None`: any host).
    pub allowed_hosts: Option<Vec<String>>,
    /// Bearer tokens, as SHA-256 digests (empty: no token needed).
    tokens: Vec<[u8; 32]>,
}

/// A host and optional port, lower-cased, IPv6 brackets removed: how a
/// `Host` header and an allowed name are compared.
#[derive(Debug, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn new(host: &str, port: Option<u16>) -> Authority {
        Authority {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            port,
        }
    }

    /// A request's authority (`host[:port]`, IPv6 in brackets).
    fn parse(s: &str) -> Option<Authority> {
        let a = axum::http::uri::Authority::try_from(s.trim()).ok()?;
        Some(Authority::new(a.host(), a.port_u16()))
    }

    /// An allowed name: an authority, or else a bare host such as `::1`
    /// (as rmcp reads its list). Blank: none.
    fn allowed(s: &str) -> Option<Authority> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        Authority::parse(s).or_else(|| Some(Authority::new(s, None)))
    }

    /// Whether this (a request's) authority is the `allowed` one: the same
    /// host, and the same port when `allowed` names one.
    fn matches(&self, allowed: &Authority) -> bool {
        self.host == allowed.host && allowed.port.is_none_or(|p| self.port == Some(p))
    }
}

impl HttpAccess {
    /// Access for these hosts and tokens (blank tokens are ignored).
    pub fn new(allowed_hosts: Option<Vec<String>>, tokens: &[String]) -> HttpAccess {
        HttpAccess {
            allowed_hosts,
            tokens: tokens
                .iter()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
        }
    }

    /// Whether the request's `Host` (or, without one, its URI's authority)
    /// is an allowed host; a missing or unreadable one is not.
    fn host_allowed(&self, req: &Request) -> bool {
        let Some(allowed) = &self.allowed_hosts else {
            return true;
        };
        let host = match req.headers().get(header::HOST) {
            Some(h) => h.to_str().ok().and_then(Authority::parse),
            None => req
                .uri()
                .authority()
                .and_then(|a| Authority::parse(a.as_str())),
        };
        let Some(host) = host else {
            return false;
        };
        allowed
            .iter()
            .filter_map(|a| Authority::allowed(a))
            .any(|a| host.matches(&a))
    }

    /// The token a request presents: `Authorization: Bearer <token>`, or
    /// (what a browser sends for the page) `Basic` with the token as the
    /// password and any user name.
    fn presented(req: &Request) -> Option<Vec<u8>> {
        use base64::Engine;
        let (scheme, value) = req
            .headers()
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(value.trim().as_bytes().to_vec());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .ok()?;
            let colon = decoded.iter().position(|b| *b == b':')?;
            return Some(decoded[colon + 1..].to_vec());
        }
        None
    }

    fn admits(&self, req: &Request) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        let Some(token) = Self::presented(req) else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(&token).into();
        // Compare with every token, whatever matched before.
        self.tokens
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&presented))
            .into()
    }
}

/// Screens a POST body ([`jsonrpc::screen`]) before rmcp parses it; a
/// refused one is answered here: 400 (413 when too long) with a JSON-RPC
/// error body.
async fn screen_body(req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let refuse = |status: StatusCode, reply: Value| {
        tracing::debug!(error = %reply["error"], "refused an incoming message");
        (status, axum::Json(reply)).into_response()
    };
    let bytes = match axum::body::to_bytes(body, jsonrpc::MAX_HTTP_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                jsonrpc::error_reply(
                    Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    format!(
                        "Invalid Request: the body could not be read or is longer than {} bytes",
                        jsonrpc::MAX_HTTP_BODY_BYTES
                    ),
                ),
            );
        }
    };
    match jsonrpc::screen(&bytes) {
        Verdict::Pass => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Verdict::Reply(reply) => refuse(StatusCode::BAD_REQUEST, reply),
    }
}

/// Refuses (403) a request whose `Host` is not allowed: a web page must
/// not reach this server through a name it controls (DNS rebinding).
async fn require_host(access: HttpAccess, req: Request, next: Next) -> Response {
    if access.host_allowed(&req) {
        return next.run(req).await;
    }
    tracing::warn!(
        host = ?req.headers().get(header::HOST),
        "refused a request with a Host header that is not allowed (possible DNS rebinding)"
    );
    (
        StatusCode::FORBIDDEN,
        "Forbidden: Host header is not allowed; add the name clients use to \
         PTP_MCP_ALLOWED_HOSTS (--allowed-hosts)\n",
    )
        .into_response()
}

/// How a request without a good token is challenged: MCP clients send a
/// bearer token; browsers (the report page) ask the user for one with
/// their Basic prompt.
#[derive(Clone, Copy)]
enum Challenge {
    Bearer,
    Basic,
}

async fn require_token(
    access: HttpAccess,
    challenge: Challenge,
    req: Request,
    next: Next,
) -> Response {
    if access.admits(&req) {
        return next.run(req).await;
    }
    let (text, value) = match challenge {
        Challenge::Bearer => (
            "this MCP server needs a bearer token: send `Authorization: Bearer <token>` \
             with one of the server's PTP_MCP_HTTP_TOKENS\n",
            "Bearer realm=\"ptp-mcp\"",
        ),
        Challenge::Basic => (
            "this report needs a token: give one of the server's PTP_MCP_HTTP_TOKENS as the \
             password (any user name) when the browser asks, or send `Authorization: Bearer \
             <token>`\n",
            "Basic realm=\"ptp-mcp report\", charset=\"UTF-8\"",
        ),
    };
    let mut r = (StatusCode::UNAUTHORIZED, text).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static(value),
    );
    r
}

/// The axum router: MCP at `/mcp` and the report page at `/report`
/// ([`crate::page`]), both behind the `Host` check and, when configured,
/// the token check.
pub fn http_router(
    server: PtpMcp,
    access: HttpAccess,
    shutdown: CancellationToken,
) -> axum::Router {
    // The Host check is ours, for both routes (one rule), so rmcp's is off.
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown.child_token())
        .with_max_request_body_bytes(jsonrpc::MAX_HTTP_BODY_BYTES)
        .disable_allowed_hosts();
    let page_server = server.clone();
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        config,
    );
    let token = |challenge: Challenge| {
        let access = access.clone();
        axum::middleware::from_fn(move |req: Request, next: Next| {
            require_token(access.clone(), challenge, req, next)
        })
    };
    // The last layer runs first: the token check, then the screening.
    let mcp = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(screen_body))
        .layer(token(Challenge::Bearer));
    let page = axum::Router::new()
        .route("/report", axum::routing::get(crate::page::report))
        .with_state(page_server)
        .layer(token(Challenge::Basic));
    let host = access.clone();
    mcp.merge(page).layer(axum::middleware::from_fn(
        move |req: Request, next: Next| require_host(host.clone(), req, next),
    ))
}

/// Serves MCP over streamable HTTP at `http://<listener>/mcp`, and the
/// report page at `/report`, until `shutdown` is cancelled.
pub async fn serve_http(
    server: PtpMcp,
    listener: TcpListener,
    access: HttpAccess,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(
        %addr,
        "ptp-mcp serving streamable HTTP at http://{addr}/mcp and the report at http://{addr}/report"
    );
    if access.tokens.is_empty() {
        tracing::warn!("no PTP_MCP_HTTP_TOKENS: anyone who reaches {addr} can use the tools");
    }
    let app = http_router(server, access, shutdown.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("the MCP HTTP server failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: Option<&str>, authorization: Option<&str>) -> Request {
        let mut b = Request::builder().uri("/report");
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        if let Some(a) = authorization {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(Body::empty()).expect("request")
    }

    #[test]
    fn hosts_match_by_name_and_optional_port() {
        let access = HttpAccess::new(
            Some(vec![
                "localhost".into(),
                "::1".into(),
                "ci.example.com:8765".into(),
            ]),
            &[],
        );
        let allowed = |h: &str| access.host_allowed(&request(Some(h), None));
        assert!(allowed("localhost:8765") && allowed("LocalHost") && allowed("[::1]:80"));
        assert!(allowed("ci.example.com:8765"));
        assert!(
            !allowed("ci.example.com:80"),
            "the allowed entry names a port"
        );
        assert!(!allowed("ci.example.com"));
        assert!(!allowed("evil.example.com") && !allowed("localhost.evil.example.com"));
        assert!(!allowed("not a host"));
        assert!(
            !access.host_allowed(&request(None, None)),
            "no Host, no authority"
        );
        let open = HttpAccess::new(None, &[]);
        assert!(open.host_allowed(&request(Some("evil.example.com"), None)));
    }

    #[test]
    fn tokens_come_as_bearer_or_as_a_basic_password() {
        use base64::Engine;
        let access = HttpAccess::new(None, &["team-token".into()]);
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        let admits = |a: Option<&str>| access.admits(&request(None, a));
        assert!(admits(Some("Bearer team-token")) && admits(Some("bearer  team-token")));
        assert!(admits(Some(&basic("anyone:team-token"))) && admits(Some(&basic(":team-token"))));
        assert!(!admits(None) && !admits(Some("Bearer other")));
        assert!(!admits(Some(&basic("team-token"))), "no colon: no password");
        assert!(
            !admits(Some(&basic("team-token:x"))),
            "the user name is not the token"
        );
        assert!(!admits(Some("Basic !!!")) && !admits(Some("team-token")));
        assert!(HttpAccess::new(None, &[]).admits(&request(None, None)));
    }
}
