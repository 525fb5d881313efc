//! The webhook options ([`WebhookArgs`]): targets from `--webhook`, the
//! environment and `--webhooks-file`, each URL, event filter, format and
//! secret checked at start with an error naming the option.

use super::*;

/// The webhook options, flattened into the master's `Config`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Send webhook events to this URL (http:// or https://), repeatable; in the
    /// environment, several separated by commas. Options follow a `#`:
    /// `URL#events=run.failed+test.newly_failing&format=slack`. `events`:
    /// `+`-separated, of run.failed, test.newly_failing, test.newly_flaky,
    /// test.quarantined, test.released (default: all); `format`: `json`
    /// (default, the WebhookEvent schema) or `slack` (a Slack incoming
    /// webhook's `{"text": ...}`).
    #[arg(
        long = "webhook",
        env = "PTP_WEBHOOKS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhook: Vec<String>,

    /// A JSON file listing more targets: `[{"url": "...", "events":
    /// ["run.failed"], "format": "json", "secret": "..."}]` (`events`,
    /// `format` and `secret` optional).
    #[arg(long, env = "PTP_WEBHOOKS_FILE")]
    pub webhooks_file: Option<std::path::PathBuf>,

    /// Secret for the `X-Ptp-Signature` HMAC of every target that names no
    /// secret of its own. Unset: such targets get unsigned requests.
    #[arg(long, env = "PTP_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// The branches whose runs produce webhook events, comma-separated.
    #[arg(
        long = "default-branch",
        env = "PTP_DEFAULT_BRANCH",
        value_delimiter = ',',
        default_value = "main,master"
    )]
    pub default_branches: Vec<String>,

    /// Most undelivered events kept per target; beyond it the oldest are
    /// dropped (marked dead, logged).
    #[arg(long, env = "PTP_WEBHOOK_MAX_PENDING", default_value_t = outbox::DEFAULT_MAX_PENDING, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub webhook_max_pending: u32,

    /// Hours a delivery is retried before it is given up on (dead).
    #[arg(long, env = "PTP_WEBHOOK_MAX_AGE_HOURS", default_value_t = 72, value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub webhook_max_age_hours: u64,

    /// A PEM file of CA certificates trusted for https:// targets besides
    /// the system's (for an internal CA). Read once at start.
    #[arg(long, env = "PTP_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<std::path::PathBuf>,

    /// Seconds a receiver has to answer one POST.
    #[arg(long, env = "PTP_WEBHOOK_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout_secs: u64,

    /// First retry delay in milliseconds (doubles per failed attempt).
    #[arg(long, env = "PTP_WEBHOOK_RETRY_MIN_MS", default_value_t = 1000, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_min_ms: u64,

    /// Longest retry delay in milliseconds.
    #[arg(long, env = "PTP_WEBHOOK_RETRY_MAX_MS", default_value_t = 600_000, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_max_ms: u64,

    /// How often an idle target looks for new events, in milliseconds.
    #[arg(long, env = "PTP_WEBHOOK_POLL_MS", default_value_t = 1000, hide = true, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub webhook_poll_ms: u64,
}

impl Default for WebhookArgs {
    fn default() -> WebhookArgs {
        WebhookArgs {
            webhook: Vec::new(),
            webhooks_file: None,
            webhook_secret: None,
            webhook_ca_file: None,
            default_branches: vec!["main".into(), "master".into()],
            webhook_max_pending: outbox::DEFAULT_MAX_PENDING,
            webhook_max_age_hours: 72,
            webhook_timeout_secs: 10,
            webhook_retry_min_ms: 1000,
            webhook_retry_max_ms: 600_000,
            webhook_poll_ms: 1000,
        }
    }
}

/// The body a target receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// [`WebhookEvent`] as JSON.
    Json,
    /// `{"text": "..."}`, for Slack incoming webhooks.
    Slack,
}

/// One configured target.
#[derive(Clone)]
pub struct Target {
    /// Where to POST.
    pub url: url::Url,
    /// Stable key in the outbox: a digest of the URL, so a URL (which for
    /// Slack is itself a secret) is never stored nor logged.
    pub key: String,
    /// What it receives.
    pub events: Vec<EventType>,
    /// How.
    pub format: Format,
    /// HMAC secret, if any.
    pub secret: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &redacted(&self.url))
            .field("key", &self.key)
            .field("events", &self.events)
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The URL without path, query or credentials, for logs.
pub(super) fn redacted(url: &url::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{}{port}/…",
        url.scheme(),
        url.host_str().unwrap_or("?")
    )
}

/// A target in `--webhooks-file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTarget {
    url: String,
    events: Option<Vec<String>>,
    format: Option<Format>,
    secret: Option<String>,
}

/// Most bytes of `--webhooks-file`.
pub(super) const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Most targets.
pub const MAX_TARGETS: usize = 100;

pub(super) fn parse_url(option: &str, raw: &str) -> anyhow::Result<url::Url> {
    let url = url::Url::parse(raw.trim()).map_err(|e| {
        anyhow::anyhow!("{option}: {raw:?} is not a URL ({e}); give http(s)://host/path")
    })?;
    match url.scheme() {
        "http" | "https" => {}
        other => anyhow::bail!(
            "{option}: scheme {other:?} is not supported; give an http:// or https:// URL"
        ),
    }
    if url.host_str().is_none_or(str::is_empty) {
        anyhow::bail!("{option}: {raw:?} has no host");
    }
    Ok(url)
}

pub(super) fn parse_events(option: &str, names: &[&str]) -> anyhow::Result<Vec<EventType>> {
    if names.is_empty() || names == ["all"] {
        return Ok(EventType::ALL.to_vec());
    }
    let mut out = Vec::new();
    for n in names {
        let t = EventType::parse(n.trim()).ok_or_else(|| {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            anyhow::anyhow!(
                "{option}: unknown event {n:?}; known events: {} (or all)",
                known.join(", ")
            )
        })?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

pub(super) fn key_of(url: &url::Url) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(url.as_str().as_bytes());
    hex::encode(&d[..8])
}

/// Parses one `--webhook` value: `URL[#events=a+b&format=json|slack]`.
pub fn parse_webhook(value: &str, default_secret: Option<&str>) -> anyhow::Result<Target> {
    const OPT: &str = "--webhook / PTP_WEBHOOKS";
    let (raw, options) = match value.split_once('#') {
        Some((u, o)) => (u, o),
        None => (value, ""),
    };
    let url = parse_url(OPT, raw)?;
    let (mut events, mut format) = (EventType::ALL.to_vec(), Format::Json);
    for pair in options.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("events", v)) => {
                let names: Vec<&str> = v.split('+').filter(|n| !n.is_empty()).collect();
                events = parse_events(OPT, &names)?;
            }
            Some(("format", "json")) => format = Format::Json,
            Some(("format", "slack")) => format = Format::Slack,
            Some(("format", other)) => {
                anyhow::bail!(
                    "{OPT}: format {other:?} is unknown; give format=json or format=slack"
                )
            }
            _ => anyhow::bail!(
                "{OPT}: {pair:?} after '#' is not understood; give URL#events=run.failed+test.newly_failing&format=json"
            ),
        }
    }
    Ok(Target {
        key: key_of(&url),
        url,
        events,
        format,
        secret: default_secret.map(str::to_string),
    })
}

impl WebhookArgs {
    /// Every target of `--webhook` and `--webhooks-file`, validated; errors
    /// name the option and what to change.
    pub fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let secret = self.webhook_secret.as_deref().filter(|s| !s.is_empty());
        let mut out = Vec::new();
        for v in self.webhook.iter().filter(|v| !v.trim().is_empty()) {
            out.push(parse_webhook(v.trim(), secret)?);
        }
        if let Some(path) = &self.webhooks_file {
            out.extend(read_file(path, secret)?);
        }
        if out.len() > MAX_TARGETS {
            anyhow::bail!(
                "{} webhook targets configured; at most {MAX_TARGETS} are allowed",
                out.len()
            );
        }
        let mut keys = std::collections::BTreeSet::new();
        for t in &out {
            if !keys.insert(t.key.clone()) {
                anyhow::bail!(
                    "webhook target {} is configured twice (--webhook / --webhooks-file); name each URL once",
                    redacted(&t.url)
                );
            }
        }
        if self.webhook_retry_min_ms > self.webhook_retry_max_ms {
            anyhow::bail!(
                "--webhook-retry-min-ms ({}) must not exceed --webhook-retry-max-ms ({})",
                self.webhook_retry_min_ms,
                self.webhook_retry_max_ms
            );
        }
        Ok(out)
    }

    /// What the writer needs to know: default branches and, per target,
    /// its key and events.
    pub fn routes(&self, targets: &[Target]) -> Routes {
        Routes {
            default_branches: self
                .default_branches
                .iter()
                .map(|b| b.trim().to_string())
                .filter(|b| !b.is_empty())
                .collect(),
            targets: targets
                .iter()
                .map(|t| Route {
                    target: t.key.clone(),
                    events: t.events.clone(),
                })
                .collect(),
            max_pending: self.webhook_max_pending,
        }
    }
}

pub(super) fn read_file(
    path: &std::path::Path,
    secret: Option<&str>,
) -> anyhow::Result<Vec<Target>> {
    use std::io::Read;
    let opt = format!("--webhooks-file {}", path.display());
    let f = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{opt}: cannot open: {e}"))?;
    let mut text = String::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("{opt}: cannot read: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        anyhow::bail!("{opt}: larger than {MAX_FILE_BYTES} bytes");
    }
    let list: Vec<FileTarget> = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{opt}: not a JSON list of {{\"url\", \"events\", \"format\", \"secret\"}}: {e}"
        )
    })?;
    list.into_iter()
        .enumerate()
        .map(|(i, t)| {
            let opt = format!("{opt}, target {i}");
            let url = parse_url(&opt, &t.url)?;
            let names: Vec<&str> = t.events.iter().flatten().map(String::as_str).collect();
            Ok(Target {
                key: key_of(&url),
                url,
                events: parse_events(&opt, &names)?,
                format: t.format.unwrap_or(Format::Json),
                secret: t
                    .secret
                    .filter(|s| !s.is_empty())
                    .or(secret.map(str::to_string)),
            })
        })
        .collect()
}
