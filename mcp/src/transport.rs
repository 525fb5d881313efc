//! Serving [`PtpMcp`] over MCP's two transports: stdio (the default, what
//! editors spawn) and streamable HTTP at `/mcp` (one server for a team).
//!
//! [`serve_http`] takes a bound listener and a cancellation token, like the
//! master's `run`, so tests serve on port 0 with exactly the production
//! wiring. Cancelling the token stops accepting connections, ends the MCP
//! sessions and lets in-flight requests finish.
//!
//! The HTTP transport checks the `Host` header against an allow-list
//! (loopback by default, as rmcp does) against DNS rebinding: a web page in
//! the user's browser must not be able to reach a local server through a
//! name it controls. With `--http-tokens`, every request to `/mcp` must
//! also carry one of the bearer tokens (compared in constant time, never
//! logged); otherwise 401.
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
use crate::tools::PtpMcp;

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

/// Who may use the HTTP transport.
#[derive(Clone, Default)]
pub struct HttpAccess {
    /// `Host` values accepted (`None`: any host).
    pub allowed_hosts: Option<Vec<String>>,
    /// Bearer tokens, as SHA-256 digests (empty: no token needed).
    tokens: Vec<[u8; 32]>,
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

    fn admits(&self, req: &Request) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        let Some(token) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
        else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
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

async fn require_token(access: HttpAccess, req: Request, next: Next) -> Response {
    if access.admits(&req) {
        return next.run(req).await;
    }
    let mut r = (
        StatusCode::UNAUTHORIZED,
        "this MCP server needs a bearer token: send `Authorization: Bearer <token>` \
         with one of the server's PTP_MCP_HTTP_TOKENS\n",
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"ptp-mcp\""),
    );
    r
}

/// The axum router serving MCP at `/mcp`, checking `Host` and, when
/// configured, the bearer token.
pub fn http_router(
    server: PtpMcp,
    access: HttpAccess,
    shutdown: CancellationToken,
) -> axum::Router {
    let allowed_hosts = access.allowed_hosts.clone();
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown.child_token())
        .with_max_request_body_bytes(jsonrpc::MAX_HTTP_BODY_BYTES);
    config = match allowed_hosts {
        Some(hosts) => config.with_allowed_hosts(hosts),
        None => config.disable_allowed_hosts(),
    };
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        config,
    );
    // The last layer runs first: the token check, then the screening.
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(screen_body))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| require_token(access.clone(), req, next),
        ))
}

/// Serves MCP over streamable HTTP at `http://<listener>/mcp` until
/// `shutdown` is cancelled.
pub async fn serve_http(
    server: PtpMcp,
    listener: TcpListener,
    access: HttpAccess,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(%addr, "ptp-mcp serving streamable HTTP at http://{addr}/mcp");
    if access.tokens.is_empty() {
        tracing::warn!("no PTP_MCP_HTTP_TOKENS: anyone who reaches {addr} can use the tools");
    }
    let app = http_router(server, access, shutdown.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("the MCP HTTP server failed")
}
