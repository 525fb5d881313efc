//! What is sent: the documented JSON payload ([`WebhookEvent`], in the
//! OpenAPI), the Slack body's text, and the signature ([`sign`]).

use super::*;

/// A webhook event as POSTed to `json` targets. `type` says which; `data`
/// holds the type's fields:
/// - `run.failed`: `status`, `commit`, `worker_id`, `started_at`,
///   `finished_at`, `total`, `passed`, `failed`, `error`, `skipped`,
///   `newly_failing` (tests newly failing in the run) and
///   `newly_failing_listed` (how many got their own event, at most 100).
/// - `test.newly_failing`: `commit`, `message` (first 300 characters).
/// - `test.newly_flaky`: `commit`, `reason` (`passed_on_retry`).
/// - `test.quarantined`: `reason`, `expires_at`, `auto`.
/// - `test.released`: `reason` (the entry's).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookEvent {
    /// Unique event id (UUIDv7), also in `X-Ptp-Event-Id`; the same on
    /// every retry: dedupe on it.
    pub id: String,
    /// `run.failed`, `test.newly_failing`, `test.newly_flaky`,
    /// `test.quarantined` or `test.released`; also in `X-Ptp-Event`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the master stored it.
    pub occurred_at: DateTime<Utc>,
    /// Project.
    pub project: String,
    /// Branch (run and newly failing/flaky events).
    pub branch: Option<String>,
    /// Run (run and newly failing/flaky events).
    pub run_id: Option<String>,
    /// Test (test events).
    pub test_id: Option<String>,
    /// The type's fields (see above).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl From<&outbox::StoredEvent> for WebhookEvent {
    fn from(e: &outbox::StoredEvent) -> WebhookEvent {
        WebhookEvent {
            id: e.id.clone(),
            kind: e.kind.as_str().to_string(),
            occurred_at: e.occurred_at,
            project: e.project.clone(),
            branch: e.branch.clone(),
            run_id: e.run_id.clone(),
            test_id: e.test_id.clone(),
            data: e.data.clone(),
        }
    }
}

/// Escapes what Slack's mrkdwn treats as markup.
pub(super) fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The one line a Slack target shows for `e`.
pub fn slack_text(e: &WebhookEvent) -> String {
    let d = &e.data;
    let num = |k: &str| d[k].as_u64().unwrap_or(0);
    let text = |k: &str| d[k].as_str().unwrap_or("").to_string();
    let branch = e.branch.as_deref().unwrap_or("?");
    let run = e.run_id.as_deref().unwrap_or("?");
    let test = e.test_id.as_deref().unwrap_or("?");
    let line = match e.kind.as_str() {
        "run.failed" => format!(
            ":x: {} {branch}: run {run} {} ({} failed, {} errors of {}; {} newly failing)",
            e.project,
            text("status"),
            num("failed"),
            num("error"),
            num("total"),
            num("newly_failing")
        ),
        "test.newly_failing" => {
            let m = text("message");
            let m = if m.is_empty() {
                String::new()
            } else {
                format!(": {m}")
            };
            format!(
                ":red_circle: {} {branch}: {test} newly failing in run {run}{m}",
                e.project
            )
        }
        "test.newly_flaky" => format!(
            ":warning: {} {branch}: {test} newly flaky (passed on retry) in run {run}",
            e.project
        ),
        "test.quarantined" => format!(
            ":no_entry: {}: {test} quarantined: {}",
            e.project,
            text("reason")
        ),
        "test.released" => format!(
            ":white_check_mark: {}: {test} released from quarantine",
            e.project
        ),
        other => format!("{}: {other}", e.project),
    };
    slack_escape(&line)
}

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = match hmac::Hmac::<sha2_hmac::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(e) => unreachable!("HMAC accepts any key length: {e}"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
