//! The master's HTTP API as the agent uses it (`MASTER_URL`): the HTTP
//! transport for runners that cannot reach NATS, and the read queries of the
//! job summary.
//!
//! # The HTTP transport
//!
//! A run travels as the same wire messages the agent would publish to NATS
//! ([`ptp_nats::schema::encode_run`]), one per `POST /agent/messages`, each
//! no larger than the `max_message_bytes` the master announces at
//! `POST /agent/check` (its NATS server's max payload). The master publishes
//! each message into the stream under the message id derived from it
//! (`<run_id>:c<n>:<digest>`, `<run_id>:run:<digest>`), so a resent run is stored once, exactly
//! as over NATS. Failures that a retry can cure (the master or its NATS
//! unreachable, 5xx, 408, 429) are retried until the publish deadline, then
//! the run is spooled like any other; a refused token or message is not
//! retried.
//!
//! ureq is blocking: every call runs on tokio's blocking pool with a timeout
//! that never passes the caller's deadline.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use ptp_nats::schema::{self, RunInfo, TestCase};
use serde::Deserialize;
use tokio::time::Instant;

/// Longest single request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call to the master failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MasterError {
    /// Nothing answered (connection refused, DNS, TLS, timeout).
    #[error("cannot reach the master at {url}: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// 401 or 403: the token is missing or wrong.
    #[error("the master at {url} refused the token ({status}): {detail}")]
    Unauthorized {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// The master's explanation.
        detail: String,
    },
    /// 5xx, 408 or 429: the master (or its NATS) cannot take it now.
    #[error("the master at {url} cannot take it now ({status}): {detail}")]
    Unavailable {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// The master's explanation.
        detail: String,
    },
    /// Any other answer: resending the same request would not help.
    #[error("the master at {url} refused the request ({status}): {detail}")]
    Refused {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// The master's explanation.
        detail: String,
    },
}

impl MasterError {
    /// Whether a later retry may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            MasterError::Unreachable { .. } | MasterError::Unavailable { .. }
        )
    }
}

/// What `POST /agent/check` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckAnswer {
    /// Largest wire message the master accepts (its NATS max payload).
    pub max_message_bytes: usize,
    /// The stream runs are published into.
    pub stream: String,
}

/// What `POST /agent/messages` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct Posted {
    /// The message id it was published under.
    pub msg_id: String,
    /// Whether the stream already had it (a resend).
    pub duplicate: bool,
}

/// A client of one master.
#[derive(Clone)]
pub struct Master {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Master {
    /// A client for the API at `base` (no trailing slash), sending `token`
    /// as a bearer token. Trusts the system's CA store; honours
    /// `HTTPS_PROXY` / `NO_PROXY`.
    pub fn new(base: &str, token: Option<String>) -> Master {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(concat!("ptp-agent/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .into();
        Master {
            agent,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// The base URL, for messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Checks the token and learns the message budget; 503 when the
    /// master's NATS is away.
    pub async fn check(&self, timeout: Duration) -> Result<CheckAnswer, MasterError> {
        let v = self
            .call("POST", "/agent/check", &[], Some(Vec::new()), timeout)
            .await?;
        serde_json::from_value(v).map_err(|e| MasterError::Refused {
            url: format!("{}/agent/check", self.base),
            status: 200,
            detail: format!(
                "unexpected answer ({e}); is MASTER_URL a pytest-platform master of this version or newer?"
            ),
        })
    }

    /// Sends one encoded wire message.
    pub async fn post_message(
        &self,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Posted, MasterError> {
        let v = self
            .call("POST", "/agent/messages", &[], Some(payload), timeout)
            .await?;
        serde_json::from_value(v).map_err(|e| MasterError::Refused {
            url: format!("{}/agent/messages", self.base),
            status: 202,
            detail: format!("unexpected answer: {e}"),
        })
    }

    /// `GET path?query` as JSON.
    pub async fn get_json(
        &self,
        path: &str,
        query: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<serde_json::Value, MasterError> {
        self.call("GET", path, query, None, timeout).await
    }

    async fn call(
        &self,
        method: &'static str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<serde_json::Value, MasterError> {
        let url = format!("{}{path}", self.base);
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let this = self.clone();
        let timeout = timeout.min(REQUEST_TIMEOUT).max(Duration::from_millis(1));
        let url2 = url.clone();
        tokio::task::spawn_blocking(move || {
            this.call_blocking(method, &url2, &query, body, timeout)
        })
        .await
        .unwrap_or_else(|e| {
            Err(MasterError::Unreachable {
                url,
                reason: format!("the request's task failed: {e}"),
            })
        })
    }

    fn call_blocking(
        &self,
        method: &str,
        url: &str,
        query: &[(String, String)],
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<serde_json::Value, MasterError> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let sent = if method == "GET" {
            let mut req = self.agent.get(url).query_pairs(
                query
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<Vec<_>>(),
            );
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.config().timeout_global(Some(timeout)).build().call()
        } else {
            let mut req = self
                .agent
                .post(url)
                .header("Content-Type", "application/json");
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.config()
                .timeout_global(Some(timeout))
                .build()
                .send(body.unwrap_or_default())
        };
        let mut resp = sent.map_err(|e| MasterError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .unwrap_or_default();
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|e| MasterError::Refused {
                url: url.to_string(),
                status,
                detail: format!("the answer is not JSON ({e}); is MASTER_URL the master's API?"),
            });
        }
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(String::from))
            .unwrap_or_else(|| text.chars().take(300).collect());
        let (url, detail) = (url.to_string(), detail);
        Err(match status {
            401 | 403 => MasterError::Unauthorized {
                url,
                status,
                detail,
            },
            408 | 429 | 500..=599 => MasterError::Unavailable {
                url,
                status,
                detail,
            },
            _ => MasterError::Refused {
                url,
                status,
                detail,
            },
        })
    }

    /// Sends a run as wire messages, retrying what a retry can cure until
    /// `deadline`. On success every message is in the stream.
    pub async fn publish_run(
        &self,
        run: &RunInfo,
        cases: &[TestCase],
        deadline: Instant,
        quiet: bool,
    ) -> Result<(), String> {
        let left = || deadline.saturating_duration_since(Instant::now());
        let attempt = || async {
            let budget = self.check(left()).await?.max_message_bytes;
            let msgs =
                schema::encode_run(run, cases, budget).map_err(|e| MasterError::Refused {
                    url: self.base.clone(),
                    status: 0,
                    detail: e.to_string(),
                })?;
            for m in msgs {
                self.post_message(m.payload, left()).await?;
            }
            Ok(())
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times();
        let retried = attempt.retry(backoff).when(MasterError::retryable).notify(
            |e: &MasterError, wait: Duration| {
                if !quiet {
                    eprintln!("ptp-agent: sending failed ({e}); retrying in {wait:.1?}");
                }
            },
        );
        match tokio::time::timeout_at(deadline, retried).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "gave up at the publish deadline (PTP_PUBLISH_TIMEOUT): the master at {} did not take the run",
                self.base
            )),
        }
    }
}
