//! A typed client of the master's JSON API (`GET /results`, `/results/{id}`,
//! `/trend`, `/workers`, `/failures/stats`, `/compare`, `/flaky`,
//! `/failures/clusters`, `/tests/{id}/history`, `/tests/slow`), and the one
//! error type every tool reports.
//!
//! The response types mirror the master's JSON and are lenient: fields this
//! server does not need may be missing or added without breaking it. Query
//! parameters are sent only when set, because the master refuses unknown or
//! empty ones.
//!
//! Every [`MasterError`] displays as a sentence a person can act on: which
//! URL could not be reached and what to check, or the master's own `detail`
//! for a refused argument or an unknown run.
//!
//! The answers' types are in [`wire`], re-exported here.

mod wire;

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why a call to the master failed. Variants are what a caller reports
/// differently.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// `--master-url` is not a usable URL.
    #[error("MASTER_URL {url:?} is not usable: {reason}")]
    InvalidUrl {
        /// The configured URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection, or no answer in time.
    #[error(
        "cannot reach the pytest-platform master at {url}: {reason}. Check that ptp-master is \
         running and that MASTER_URL (--master-url) points at it."
    )]
    Unreachable {
        /// The master's base URL.
        url: String,
        /// Connection refused, timeout, ...
        reason: String,
    },
    /// 404: an unknown run id (the master's `detail` says which).
    #[error("{detail}")]
    NotFound {
        /// The master's explanation.
        detail: String,
    },
    /// 400/422: the master refused an argument (its `detail` says which and
    /// what is allowed).
    #[error("the master refused the request: {detail}")]
    Refused {
        /// The master's explanation.
        detail: String,
    },
    /// 401/403: a proxy in front of the master wants a (different) token.
    #[error(
        "the master at {url} refused the request (HTTP {status}): set PTP_API_TOKEN \
         (--api-token) to a token it accepts. {detail}"
    )]
    Unauthorized {
        /// The master's base URL.
        url: String,
        /// 401 or 403.
        status: u16,
        /// What the server said.
        detail: String,
    },
    /// Any other non-success answer (5xx: the master's database or NATS).
    #[error("the master at {url} failed (HTTP {status}): {detail}. See its log and GET /health.")]
    Failed {
        /// The master's base URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// What the master said.
        detail: String,
    },
    /// A success answer that is not the expected JSON.
    #[error(
        "the server at {url} answered {path} with something that is not the master's JSON \
         ({reason}); check that MASTER_URL points at ptp-master and that both are up to date"
    )]
    BadAnswer {
        /// The master's base URL.
        url: String,
        /// The request path.
        path: String,
        /// The decode error.
        reason: String,
    },
}

pub use wire::{
    Case, Cluster, ClusterReport, FailureStat, FlakyReport, FlakyTest, Run, RunDetail, TrendPoint,
    Worker,
};

/// Filters of `GET /results`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this project.
    pub project: Option<String>,
    /// Only this branch.
    pub branch: Option<String>,
    /// Only this worker.
    pub worker_id: Option<String>,
    /// Only this status.
    pub status: Option<String>,
}

/// The master's error body.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

/// Talks to one master. Cheap to clone (reqwest's client is shared).
#[derive(Debug, Clone)]
pub struct MasterClient {
    base: String,
    http: reqwest::Client,
    timeout: Duration,
}

impl MasterClient {
    /// A client of the master at `base_url`, each request bounded by
    /// `timeout`, sending `token` as a bearer token when given.
    pub fn new(
        base_url: &str,
        timeout: Duration,
        token: Option<&str>,
    ) -> Result<MasterClient, MasterError> {
        let invalid = |reason: String| MasterError::InvalidUrl {
            url: base_url.to_string(),
            reason,
        };
        let url = reqwest::Url::parse(base_url).map_err(|e| {
            invalid(format!(
                "{e}; expected something like http://127.0.0.1:8080"
            ))
        })?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(invalid(
                    "this build of ptp-mcp speaks plain HTTP only; reach the master over http \
                     (e.g. through an SSH tunnel or a local TLS-terminating proxy)"
                        .into(),
                ));
            }
            other => {
                return Err(invalid(format!(
                    "scheme {other:?} is not http; expected something like http://127.0.0.1:8080"
                )));
            }
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| MasterError::InvalidUrl {
                    url: base_url.to_string(),
                    reason: "PTP_API_TOKEN holds characters not allowed in an HTTP header".into(),
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .default_headers(headers)
            .user_agent(concat!("ptp-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(format!("cannot build an HTTP client: {e}")))?;
        Ok(MasterClient {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            timeout,
        })
    }

    /// The master's base URL, as configured (without a trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, MasterError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .query(query)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if status.is_success() {
            let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
            return serde_json::from_slice(&bytes).map_err(|e| MasterError::BadAnswer {
                url: self.base.clone(),
                path: path.to_string(),
                reason: e.to_string(),
            });
        }
        let text = resp.text().await.unwrap_or_default();
        let detail = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(ErrorBody {
                detail: Some(d), ..
            }) => d,
            Ok(ErrorBody { error: Some(e), .. }) => e,
            _ if text.trim().is_empty() => status
                .canonical_reason()
                .unwrap_or("no explanation")
                .to_string(),
            _ => crate::text::trim_end(text.trim(), 300),
        };
        Err(match status {
            StatusCode::NOT_FOUND => MasterError::NotFound { detail },
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                MasterError::Refused { detail }
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => MasterError::Unauthorized {
                url: self.base.clone(),
                status: status.as_u16(),
                detail,
            },
            _ => MasterError::Failed {
                url: self.base.clone(),
                status: status.as_u16(),
                detail,
            },
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> MasterError {
        let reason = if e.is_timeout() {
            format!(
                "no answer within {} s (PTP_MCP_TIMEOUT_SECS; raise it if the master is only slow)",
                self.timeout.as_secs()
            )
        } else {
            let mut root: &dyn std::error::Error = e;
            while let Some(s) = root.source() {
                root = s;
            }
            if e.is_connect() {
                format!("could not connect ({root})")
            } else {
                format!("the request failed ({root})")
            }
        };
        MasterError::Unreachable {
            url: self.base.clone(),
            reason,
        }
    }

    /// `GET /results`: runs matching `filter`, newest first (`limit` 1..=500).
    pub async fn runs(&self, filter: &RunFilter, limit: u32) -> Result<Vec<Run>, MasterError> {
        let mut q = vec![("limit", limit.to_string())];
        push(&mut q, "project", &filter.project);
        push(&mut q, "branch", &filter.branch);
        push(&mut q, "worker_id", &filter.worker_id);
        push(&mut q, "status", &filter.status);
        self.get("/results", &q).await
    }

    /// `GET /results/{run_id}`: the run with at most `cases_limit` cases,
    /// failures first; only `outcomes` (e.g. `failed,error`) when given.
    pub async fn run(
        &self,
        run_id: &str,
        outcomes: Option<&str>,
        cases_limit: u32,
    ) -> Result<RunDetail, MasterError> {
        let mut q = vec![("cases_limit", cases_limit.to_string())];
        if let Some(o) = outcomes {
            q.push(("outcome", o.to_string()));
        }
        // Run ids are checked by the caller (letters, digits, '-', '_', '.'),
        // so the id is a single safe path segment.
        self.get(&format!("/results/{run_id}"), &q).await
    }

    /// `GET /results/{id}?order=duration`: the run's `n` slowest cases.
    pub async fn slowest_cases(&self, run_id: &str, n: u32) -> Result<RunDetail, MasterError> {
        let q = vec![
            ("cases_limit", n.to_string()),
            ("order", "duration".to_string()),
        ];
        self.get(&format!("/results/{run_id}"), &q).await
    }

    /// `GET /trend`: pass rate per run, oldest first (`limit` 1..=1000).
    pub async fn trend(
        &self,
        project: &Option<String>,
        branch: &Option<String>,
        limit: u32,
    ) -> Result<Vec<TrendPoint>, MasterError> {
        let mut q = vec![("limit", limit.to_string())];
        push(&mut q, "project", project);
        push(&mut q, "branch", branch);
        self.get("/trend", &q).await
    }

    /// `GET /compare` with these query parameters, as the master answers it.
    pub async fn compare(
        &self,
        query: &[(&'static str, String)],
    ) -> Result<serde_json::Value, MasterError> {
        self.get("/compare", query).await
    }

    /// `GET /workers`: every worker, most recently seen first.
    pub async fn workers(&self) -> Result<Vec<Worker>, MasterError> {
        self.get("/workers", &[]).await
    }

    /// `GET /failures/stats`: most frequently failing tests, in the last
    /// `days` or all time (`limit` 1..=500), of one `owner` when given.
    pub async fn failure_stats(
        &self,
        filter: &RunFilter,
        owner: &Option<String>,
        days: Option<u32>,
        limit: u32,
    ) -> Result<Vec<FailureStat>, MasterError> {
        let mut q = vec![("limit", limit.to_string())];
        push(&mut q, "project", &filter.project);
        push(&mut q, "branch", &filter.branch);
        push(&mut q, "worker_id", &filter.worker_id);
        push(&mut q, "owner", owner);
        if let Some(d) = days {
            q.push(("days", d.to_string()));
        }
        self.get("/failures/stats", &q).await
    }
}

impl MasterClient {
    /// Any JSON read of the master, as it answered (the analytics tools
    /// compact it themselves).
    pub async fn get_value(
        &self,
        path: &str,
        query: &[(&'static str, String)],
    ) -> Result<serde_json::Value, MasterError> {
        self.get(path, query).await
    }

    /// `GET /tests/{test_id}/history`, the id percent-encoded as one path
    /// segment.
    pub async fn test_history(
        &self,
        test_id: &str,
        query: &[(&'static str, String)],
    ) -> Result<serde_json::Value, MasterError> {
        self.get(
            &format!("/tests/{}/history", encode_segment(test_id)),
            query,
        )
        .await
    }

    /// `GET /flaky` for a report's filter.
    /// `GET /flaky` over the newest `runs` runs of a report's filter.
    pub async fn flaky(
        &self,
        filter: &RunFilter,
        runs: u32,
        limit: u32,
    ) -> Result<FlakyReport, MasterError> {
        let mut q = vec![("limit", limit.to_string()), ("runs", runs.to_string())];
        push(&mut q, "project", &filter.project);
        push(&mut q, "branch", &filter.branch);
        self.get("/flaky", &q).await
    }

    /// `GET /failures/clusters` over the newest `runs` runs of a report's
    /// filter.
    pub async fn clusters(
        &self,
        filter: &RunFilter,
        runs: u32,
        limit: u32,
    ) -> Result<ClusterReport, MasterError> {
        let mut q = vec![("limit", limit.to_string()), ("runs", runs.to_string())];
        push(&mut q, "project", &filter.project);
        push(&mut q, "branch", &filter.branch);
        self.get("/failures/clusters", &q).await
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a
/// test id (`tests/test_a.py::test_x[1/2]`) stays one path segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn push(q: &mut Vec<(&'static str, String)>, key: &'static str, value: &Option<String>) {
    if let Some(v) = value {
        q.push((key, v.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ids_stay_one_path_segment() {
        assert_eq!(
            encode_segment("tests/test_a.py::test_x[1/2 é]"),
            "tests%2Ftest_a.py%3A%3Atest_x%5B1%2F2%20%C3%A9%5D"
        );
        assert_eq!(encode_segment("a-b_c.d~"), "a-b_c.d~");
    }

    #[test]
    fn refuses_unusable_urls_with_a_reason() {
        let t = Duration::from_secs(1);
        let e = MasterClient::new("127.0.0.1:8080", t, None).expect_err("no scheme");
        assert!(e.to_string().contains("http://127.0.0.1:8080"), "{e}");
        let e = MasterClient::new("https://m.example", t, None).expect_err("https");
        assert!(e.to_string().contains("plain HTTP"), "{e}");
        let c = MasterClient::new("http://m:8080/", t, Some("s3cret")).expect("valid");
        assert_eq!(c.base_url(), "http://m:8080");
    }

    #[test]
    fn run_detail_reads_the_masters_shape() {
        let d: RunDetail = serde_json::from_str(
            r#"{"run_id":"r1","project":"p","branch":null,"worker_id":"w","timestamp":"2026-01-01T00:00:00Z",
                "started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:01Z","duration":1.0,
                "status":"failed","total":2,"passed":1,"failed":1,"error":0,"skipped":0,"xfailed":0,"xpassed":0,
                "pass_rate":50.0,"cases_complete":true,"note":null,"failures":[],
                "cases":[{"test_id":"t::a","outcome":"failed","duration":0.5,"message":"boom","traceback":"tb"}],
                "cases_omitted":1}"#,
        )
        .expect("parses");
        assert_eq!(d.run.failed, 1);
        assert!(d.cases[0].is_failure());
        assert_eq!(d.cases_omitted, 1);
    }
}
