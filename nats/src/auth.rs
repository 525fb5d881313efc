//! Credentials and TLS for connections to NATS, shared by the agent and the
//! master so both accept the same settings under the same names.
//!
//! One of: user and password, a token, or a `.creds` file (JWT + nkey, as
//! `nsc` writes them). TLS: a CA file to trust a private CA (turns TLS on),
//! and a client certificate and key for servers that verify clients. A
//! `tls://` URL also turns TLS on. Secrets are never printed: `Debug`
//! redacts them.
//!
//! The clap derive (feature `clap`) lets each binary `#[command(flatten)]`
//! these flags, with the same env vars everywhere: `NATS_USER`,
//! `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_CREDS`, `NATS_CA`, `NATS_CERT`,
//! `NATS_KEY`.

use std::fmt;
use std::path::PathBuf;

/// How to authenticate to NATS and secure the connection.
#[derive(Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct NatsAuth {
    /// NATS user name (with --nats-password).
    #[cfg_attr(
        feature = "clap",
        arg(long, global = true, env = "NATS_USER", requires = "nats_password")
    )]
    pub nats_user: Option<String>,
    /// NATS password (with --nats-user). Prefer the env var over the flag:
    /// flags show in process lists.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            global = true,
            env = "NATS_PASSWORD",
            hide_env_values = true,
            requires = "nats_user"
        )
    )]
    pub nats_password: Option<String>,
    /// NATS authentication token.
    #[cfg_attr(
        feature = "clap",
        arg(long, global = true, env = "NATS_TOKEN", hide_env_values = true, conflicts_with_all = ["nats_user", "nats_creds"])
    )]
    pub nats_token: Option<String>,
    /// NATS credentials file (JWT and nkey seed, as written by `nsc`).
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            global = true,
            env = "NATS_CREDS",
            value_name = "FILE",
            conflicts_with = "nats_user"
        )
    )]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify the NATS server with; turns TLS on.
    #[cfg_attr(
        feature = "clap",
        arg(long, global = true, env = "NATS_CA", value_name = "FILE")
    )]
    pub nats_ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that verify clients (with --nats-key).
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            global = true,
            env = "NATS_CERT",
            value_name = "FILE",
            requires = "nats_key"
        )
    )]
    pub nats_cert: Option<PathBuf>,
    /// Client private key (PEM) for --nats-cert.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            global = true,
            env = "NATS_KEY",
            value_name = "FILE",
            requires = "nats_cert"
        )
    )]
    pub nats_key: Option<PathBuf>,
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsAuth")
            .field("nats_user", &self.nats_user)
            .field("nats_password", &redact(&self.nats_password))
            .field("nats_token", &redact(&self.nats_token))
            .field("nats_creds", &self.nats_creds)
            .field("nats_ca", &self.nats_ca)
            .field("nats_cert", &self.nats_cert)
            .field("nats_key", &self.nats_key)
            .finish()
    }
}

/// Settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file named in the settings cannot be read.
    #[error("cannot read NATS {what} {path}: {source}; check the path and its permissions")]
    File {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// User without password or the reverse.
    #[error("NATS user and password go together: set both NATS_USER and NATS_PASSWORD")]
    HalfUser,
}

impl NatsAuth {
    /// Whether any credential or TLS setting is given.
    pub fn is_empty(&self) -> bool {
        self.nats_user.is_none()
            && self.nats_token.is_none()
            && self.nats_creds.is_none()
            && self.nats_ca.is_none()
            && self.nats_cert.is_none()
    }

    /// Adds these settings to `opts`. Files are checked here, so a wrong
    /// path is reported at start, not as a vague connection failure later.
    pub async fn apply(
        &self,
        mut opts: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, AuthError> {
        let readable = |what: &'static str, path: &PathBuf| {
            std::fs::metadata(path)
                .map(|_| ())
                .map_err(|source| AuthError::File {
                    what,
                    path: path.clone(),
                    source,
                })
        };
        match (&self.nats_user, &self.nats_password) {
            (Some(u), Some(p)) => opts = opts.user_and_password(u.clone(), p.clone()),
            (None, None) => {}
            _ => return Err(AuthError::HalfUser),
        }
        if let Some(t) = &self.nats_token {
            opts = opts.token(t.clone());
        }
        if let Some(path) = &self.nats_creds {
            readable("credentials file", path)?;
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|source| AuthError::File {
                    what: "credentials file",
                    path: path.clone(),
                    source,
                })?;
        }
        if let Some(ca) = &self.nats_ca {
            readable("CA file", ca)?;
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.nats_cert, &self.nats_key) {
            readable("client certificate", cert)?;
            readable("client key", key)?;
            opts = opts
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let a = NatsAuth {
            nats_user: Some("agent".into()),
            nats_password: Some("hunter2".into()),
            nats_token: Some("s3cret-token".into()),
            ..NatsAuth::default()
        };
        let shown = format!("{a:?}");
        assert!(shown.contains("agent"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret-token"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn unreadable_files_are_named() {
        let a = NatsAuth {
            nats_creds: Some("/nonexistent/agent.creds".into()),
            ..NatsAuth::default()
        };
        let err = a
            .apply(async_nats::ConnectOptions::new())
            .await
            .expect_err("missing file");
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/agent.creds"), "{msg}");
        assert!(msg.contains("credentials file"), "{msg}");
    }
}
