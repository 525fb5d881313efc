//! Bearer tokens: who may write and who may read.
//!
//! - Writes (`POST /results`, and any non-GET request) need one of the
//!   master's write tokens when `PTP_WRITE_TOKENS` is set.
//! - Reads need a read token (or a write token) when `PTP_READ_TOKENS` is
//!   set; `/health`, `/metrics`, `/docs`, `/openapi.json` and `/` stay open so load
//!   balancers and people can find their way.
//! - Several tokens at once allow rotation: add the new one, move clients,
//!   remove the old one.
//!
//! Tokens are kept as SHA-256 digests and compared in constant time against
//! every configured token (no early exit, no length leak); they are never
//! logged. A missing or wrong token is a 401 with a sentence saying which
//! token is needed and where it is configured.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The configured tokens, as digests.
#[derive(Clone, Default)]
pub struct Tokens {
    write: Vec<[u8; 32]>,
    read: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("write", &self.write.len())
            .field("read", &self.read.len())
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Read,
    Write,
}

impl Tokens {
    /// Tokens from the settings; blank entries are ignored.
    pub fn new(write: &[String], read: &[String]) -> Tokens {
        let keep = |v: &[String]| {
            v.iter()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .map(digest)
                .collect()
        };
        Tokens {
            write: keep(write),
            read: keep(read),
        }
    }

    /// Whether writes are open to anyone.
    pub fn writes_open(&self) -> bool {
        self.write.is_empty()
    }

    /// Whether reads are open to anyone.
    pub fn reads_open(&self) -> bool {
        self.read.is_empty()
    }

    fn any_matches(list: &[[u8; 32]], presented: &[u8; 32]) -> bool {
        // Look at every entry, whatever matched before.
        list.iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(presented))
            .into()
    }

    fn check(&self, need: Need, bearer: Option<&str>, what: &str) -> Result<(), ApiError> {
        let (allowed, setting): (Vec<&[[u8; 32]]>, &str) = match need {
            Need::Nothing => return Ok(()),
            Need::Write if self.write.is_empty() => return Ok(()),
            Need::Read if self.read.is_empty() => return Ok(()),
            Need::Write => (vec![&self.write], "a write token (PTP_WRITE_TOKENS)"),
            Need::Read => (
                vec![&self.read, &self.write],
                "a read or write token (PTP_READ_TOKENS / PTP_WRITE_TOKENS)",
            ),
        };
        let Some(token) = bearer else {
            return Err(ApiError::Unauthorized(format!(
                "{what} needs {setting} of this master: send the header `Authorization: Bearer <token>`"
            )));
        };
        let presented = digest(token);
        let ok = allowed.iter().fold(false, |acc, list| {
            Tokens::any_matches(list, &presented) | acc
        });
        if ok {
            Ok(())
        } else {
            Err(ApiError::Unauthorized(format!(
                "the bearer token is not valid for {what}: it needs {setting} of this master"
            )))
        }
    }
}

fn need_of(method: &Method, path: &str) -> Need {
    let open = path == "/"
        || path == "/health"
        || path == "/metrics"
        || path == "/openapi.json"
        || path == "/docs"
        || path.starts_with("/docs/");
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        if open { Need::Nothing } else { Need::Read }
    } else {
        Need::Write
    }
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The middleware: refuses requests without the token they need.
pub async fn require_tokens(
    State(tokens): State<Arc<Tokens>>,
    req: Request,
    next: Next,
) -> Response {
    let need = need_of(req.method(), req.uri().path());
    let what = format!("{} {}", req.method(), req.uri().path());
    match tokens.check(need, bearer(&req), &what) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_need_a_write_token_and_reads_a_read_or_write_token() {
        let t = Tokens::new(&["w-old".into(), "w-new".into()], &["r1".into()]);
        let w = |b| t.check(Need::Write, b, "POST /results").is_ok();
        let r = |b| t.check(Need::Read, b, "GET /results").is_ok();
        assert!(!w(None) && !w(Some("r1")) && !w(Some("w-ol")) && !w(Some("")));
        assert!(w(Some("w-old")) && w(Some("w-new")), "rotation: both work");
        assert!(!r(None) && !r(Some("nope")));
        assert!(r(Some("r1")) && r(Some("w-new")));
        assert!(t.check(Need::Nothing, None, "GET /health").is_ok());
    }

    #[test]
    fn nothing_configured_means_open() {
        let t = Tokens::new(&[" ".into()], &[]);
        assert!(t.writes_open() && t.reads_open());
        assert!(t.check(Need::Write, None, "POST /results").is_ok());
    }

    #[test]
    fn which_requests_need_what() {
        assert_eq!(need_of(&Method::GET, "/health"), Need::Nothing);
        assert_eq!(need_of(&Method::GET, "/docs/index.html"), Need::Nothing);
        assert_eq!(need_of(&Method::GET, "/results"), Need::Read);
        assert_eq!(need_of(&Method::GET, "/rejected"), Need::Read);
        assert_eq!(need_of(&Method::POST, "/results"), Need::Write);
        assert_eq!(need_of(&Method::DELETE, "/health"), Need::Write);
    }

    #[test]
    fn debug_shows_counts_not_tokens() {
        let t = Tokens::new(&["secret-w".into()], &["secret-r".into()]);
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
