//! The HTTP client of every delivery ([`Client`]): ureq on tokio's blocking
//! pool, https verified against the system's roots plus `--webhook-ca-file`,
//! and one POST of a pending delivery ([`post`]).

use super::*;

/// Most bytes of `--webhook-ca-file`.
pub(super) const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// The HTTP client of every delivery: `--webhook-timeout-secs` for a whole
/// exchange, no redirects, any status read as an answer, TLS roots as the
/// module docs say. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// The client `args` describe. A `--webhook-ca-file` that cannot be
    /// read, is too large, or holds no valid certificate is an error naming
    /// the option, the path and what is wrong.
    pub fn new(args: &WebhookArgs) -> anyhow::Result<Client> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let roots = match &args.webhook_ca_file {
            None => RootCerts::PlatformVerifier,
            Some(path) => {
                let extra = read_ca_file(path)?;
                let system = rustls_native_certs::load_native_certs();
                for e in &system.errors {
                    tracing::warn!("webhooks: reading the system's CA certificates: {e}");
                }
                if system.certs.is_empty() {
                    tracing::warn!(
                        "webhooks: no system CA certificates found; https:// targets are \
                         verified against --webhook-ca-file's only"
                    );
                }
                RootCerts::new_with_certs(
                    &system
                        .certs
                        .iter()
                        .chain(&extra)
                        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                        .collect::<Vec<_>>(),
                )
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(args.webhook_timeout_secs)))
            .user_agent(concat!("ptp-master/", env!("CARGO_PKG_VERSION")))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build()
            .into();
        Ok(Client { agent })
    }

    /// POSTs `body` with `headers` to `url` on the blocking pool; `Err`
    /// says why it did not count as delivered, without the URL (a Slack
    /// URL is a secret).
    async fn post(
        &self,
        url: &url::Url,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let (agent, url) = (self.agent.clone(), url.as_str().to_string());
        let sent = tokio::task::spawn_blocking(move || {
            let mut req = agent.post(&url);
            for (k, v) in &headers {
                req = req.header(*k, v);
            }
            match req.send(&body[..]) {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!(
                    "the receiver answered HTTP {}",
                    r.status().as_u16()
                )),
                Err(ureq::Error::BadUri(_)) => {
                    Err("request failed: the HTTP client refused the URL".to_string())
                }
                Err(e) => Err(format!("request failed: {e}")),
            }
        })
        .await;
        sent.unwrap_or_else(|e| Err(format!("the request's task failed: {e}")))
    }
}

/// The certificates of `--webhook-ca-file`, each checked to be a usable
/// trust anchor.
pub(super) fn read_ca_file(
    path: &std::path::Path,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    use std::io::Read;
    let opt = format!("--webhook-ca-file {}", path.display());
    let f = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{opt}: cannot open: {e}"))?;
    let mut pem = Vec::new();
    f.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| anyhow::anyhow!("{opt}: cannot read: {e}"))?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        anyhow::bail!(
            "{opt}: larger than {MAX_CA_FILE_BYTES} bytes; give only the CA certificates"
        );
    }
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{opt}: not a PEM file: {e}"))?;
    if certs.is_empty() {
        anyhow::bail!(
            "{opt}: holds no certificate; give the CA certificate(s) in PEM \
             (-----BEGIN CERTIFICATE-----)"
        );
    }
    let mut check = rustls::RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        check.add(c.clone()).map_err(|e| {
            anyhow::anyhow!(
                "{opt}: certificate {} is not a usable CA certificate: {e}",
                i + 1
            )
        })?;
    }
    Ok(certs)
}

/// One POST of `p` to `t`; `Err` says why it did not count as delivered.
pub(super) async fn post(t: &Target, http: &Client, p: &Pending) -> Result<(), String> {
    let event = WebhookEvent::from(&p.event);
    let body = match t.format {
        Format::Json => serde_json::to_vec(&event),
        Format::Slack => serde_json::to_vec(&serde_json::json!({ "text": slack_text(&event) })),
    }
    .map_err(|e| format!("cannot encode the event: {e}"))?;
    let ts = Utc::now().timestamp();
    let mut headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("X-Ptp-Event", event.kind.clone()),
        ("X-Ptp-Event-Id", event.id.clone()),
        ("X-Ptp-Timestamp", ts.to_string()),
    ];
    if let Some(secret) = &t.secret {
        headers.push(("X-Ptp-Signature", sign(secret, ts, &body)));
    }
    http.post(&t.url, headers, body).await
}
