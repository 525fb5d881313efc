//! The report as a web page:
//! `GET /report?project=&branch=&worker_id=&runs=&group_by=`
//! on `ptp-mcp --http`, so a job summary, a chat message or a bookmark can
//! link to the same HTML `get_report` returns.
//!
//! Shape: the query becomes the same arguments `get_report` takes (minus
//! `output_path`), bounded by [`crate::args`] and checked by
//! [`ReportScope::new`]; the report is fetched and rendered by
//! [`PtpMcp::report_page`], the tool's own path. So the page and the tool
//! cannot drift apart: one set of limits, one set of queries to the master,
//! one template.
//!
//! Guarantees:
//! - A query longer than [`MAX_QUERY_BYTES`] gets 414; an unknown or
//!   repeated parameter, a `runs` that is not a whole number from 1 to 500,
//!   or a value over its size limit gets 400. Every refusal, and every
//!   failure after it (no runs match: 404, the master unreachable or
//!   failing: 502), is a small HTML page with the status and one sentence
//!   saying what to change; values are echoed at most
//!   [`crate::args::ECHO_CHARS`] characters, escaped.
//! - Every answer is `text/html; charset=utf-8` with
//!   [`report::content_security_policy`] (nothing loads, no script runs,
//!   only the template's own styles apply), `X-Content-Type-Options:
//!   nosniff`, `Cache-Control: no-store` and `Referrer-Policy: no-referrer`.
//! - The page sits behind the same `Host` and token checks as `/mcp` (the
//!   transport mounts it; this module does not know it); it only reads.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rmcp::model::JsonObject;
use serde::Deserialize;
use serde_json::Value;

use crate::answer::{MAX_ERROR_CHARS, ToolError};
use crate::args::echo;
use crate::master::MasterError;
use crate::report;
use crate::server::PtpMcp;
use crate::text::trim_end;
use crate::tools::report::{REPORT_RUNS_DEFAULT, REPORT_RUNS_MAX, ReportScope};

/// Longest query string accepted, in bytes: three values of 512 bytes
/// (the names' limit), each percent-encoded to at most three times that,
/// with room to spare.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

/// The parameters the page takes: `get_report`'s arguments without
/// `output_path`.
pub const PARAMETERS: [&str; 5] = ["project", "branch", "worker_id", "runs", "group_by"];

/// The page's arguments, once bounded ([`crate::args::parse`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageArgs {
    project: Option<String>,
    branch: Option<String>,
    worker_id: Option<String>,
    runs: Option<i64>,
    group_by: Option<String>,
}

/// Why there is no report: the status and a sentence.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn bad(message: String) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }
}

impl From<ToolError> for Refusal {
    fn from(e: ToolError) -> Refusal {
        let status = match &e {
            ToolError::Argument(_) | ToolError::Master(MasterError::Refused { .. }) => {
                StatusCode::BAD_REQUEST
            }
            ToolError::Nothing(_) | ToolError::Master(MasterError::NotFound { .. }) => {
                StatusCode::NOT_FOUND
            }
            ToolError::Master(_) => StatusCode::BAD_GATEWAY,
            ToolError::Output(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal {
            status,
            message: e.to_string(),
        }
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "page_error.html")]
struct ErrorPage<'a> {
    status: &'a str,
    message: &'a str,
    runs_default: u32,
    runs_max: u32,
}

/// `GET /report`: the report of the query's scope, or an error page.
pub(crate) async fn report(State(server): State<PtpMcp>, uri: Uri) -> Response {
    let rendered = async {
        let scope = scope(&uri)?;
        Ok::<_, Refusal>(server.report_page(&scope).await?)
    }
    .await;
    match rendered {
        Ok(r) => html(StatusCode::OK, r.html),
        Err(refusal) => error_page(refusal),
    }
}

/// The scope asked for by `uri`'s query (see the module doc for what is
/// refused).
fn scope(uri: &Uri) -> Result<ReportScope, Refusal> {
    let raw = uri.query().unwrap_or("");
    if raw.len() > MAX_QUERY_BYTES {
        return Err(Refusal {
            status: StatusCode::URI_TOO_LONG,
            message: format!(
                "the query is {} bytes, limit {MAX_QUERY_BYTES}; give shorter values",
                raw.len()
            ),
        });
    }
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| Refusal::bad(format!("the query cannot be read: {e}")))?;
    let mut args = JsonObject::new();
    for (name, value) in pairs {
        if !PARAMETERS.contains(&name.as_str()) {
            return Err(Refusal::bad(format!(
                "unknown parameter {:?}; the page takes {}",
                echo(&name),
                PARAMETERS.join(", ")
            )));
        }
        if args.contains_key(&name) {
            return Err(Refusal::bad(format!("parameter {name} is given twice")));
        }
        let value = match name.as_str() {
            "runs" if value.trim().is_empty() => continue,
            "runs" => value.trim().parse::<i64>().map(Value::from).map_err(|_| {
                Refusal::bad(format!(
                    "runs must be a whole number from 1 to {REPORT_RUNS_MAX}, got {:?}; leave it \
                     out for the default of {REPORT_RUNS_DEFAULT}",
                    echo(&value)
                ))
            })?,
            _ => Value::String(value),
        };
        args.insert(name, value);
    }
    let a: PageArgs = crate::args::parse("the report page", args).map_err(Refusal::bad)?;
    Ok(ReportScope::new(
        a.project,
        a.branch,
        a.worker_id,
        a.runs,
        a.group_by,
    )?)
}

fn error_page(refusal: Refusal) -> Response {
    let message = trim_end(&refusal.message, MAX_ERROR_CHARS);
    if refusal.status.is_server_error() {
        tracing::warn!(status = %refusal.status, "report page failed: {message}");
    } else {
        tracing::debug!(status = %refusal.status, "report page refused: {message}");
    }
    let page = ErrorPage {
        status: &refusal.status.to_string(),
        message: &message,
        runs_default: REPORT_RUNS_DEFAULT,
        runs_max: REPORT_RUNS_MAX,
    };
    match page.render() {
        Ok(body) => html(refusal.status, body),
        // Nothing of the message: it is not escaped here.
        Err(e) => {
            tracing::error!("rendering the error page failed: {e}");
            html(refusal.status, String::new())
        }
    }
}

/// An HTML answer with the page's security headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(report::content_security_policy()),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(query: &str) -> (u16, String) {
        let uri: Uri = format!("/report?{query}").parse().expect("uri");
        match scope(&uri) {
            Ok(s) => panic!("{query} accepted: {s:?}"),
            Err(r) => (r.status.as_u16(), r.message),
        }
    }

    #[test]
    fn the_query_is_the_tools_arguments() {
        let uri: Uri = "/report?project=shop%20api&branch=&runs=30"
            .parse()
            .expect("uri");
        let s = scope(&uri).expect("accepted");
        assert_eq!(s.filter.project.as_deref(), Some("shop api"));
        assert_eq!(s.filter.branch, None, "blank is no filter");
        assert_eq!(s.runs, 30);
        let s = scope(&"/report".parse().expect("uri")).expect("no query");
        assert_eq!((s.filter.project, s.runs), (None, REPORT_RUNS_DEFAULT));
        let s = scope(&"/report?runs=".parse().expect("uri")).expect("blank runs");
        assert_eq!(s.runs, REPORT_RUNS_DEFAULT);
    }

    #[test]
    fn bad_queries_are_refused_with_a_sentence() {
        let (status, m) = refused("project=a&output_path=x.html");
        assert_eq!(status, 400);
        assert!(m.starts_with("unknown parameter \"output_path\""), "{m}");
        assert!(
            m.contains("project, branch, worker_id, runs, group_by"),
            "{m}"
        );
        let (status, m) = refused("project=a&project=b");
        assert_eq!(
            (status, m.as_str()),
            (400, "parameter project is given twice")
        );
        let (status, m) = refused("runs=ten");
        assert_eq!(status, 400);
        assert!(
            m.starts_with("runs must be a whole number from 1 to 500, got \"ten\""),
            "{m}"
        );
        let (status, m) = refused("runs=501");
        assert_eq!(status, 400);
        assert!(
            m.starts_with("runs must be between 1 and 500, got 501"),
            "{m}"
        );
        let (status, m) = refused("runs=0");
        assert!(status == 400 && m.contains("got 0"), "{m}");
        let (status, m) = refused(&format!("branch={}", "b".repeat(513)));
        assert_eq!(status, 400);
        assert!(m.starts_with("branch is 513 bytes, limit 512"), "{m}");
        let (status, m) = refused(&format!("{}=1", "x".repeat(5000)));
        assert_eq!(status, 400);
        assert!(
            m.len() < 400,
            "the name is echoed trimmed: {} bytes",
            m.len()
        );
        let (status, m) = refused(&format!("project={}", "%41".repeat(3000)));
        assert_eq!(status, 414);
        assert!(m.contains("limit 8192"), "{m}");
    }
}
