//! Bounds on the memory and CPU that concurrent HTTP requests can claim:
//! a budget for request bodies and a cap on large reads.
//!
//! - **Request bodies** ([`BodyBudget`], middleware [`charge_bodies`]). A
//!   body is read whole and parsed before `POST /results` can publish it,
//!   so many large bodies at once could exhaust memory. Each request with a
//!   body is charged [`BODY_MEMORY_FACTOR`] times its size against a
//!   semaphore counted in KiB, *before* its body is read: a
//!   `Content-Length` body all at once (a request that does not fit is
//!   answered 503 unread), a chunked body chunk by chunk as it arrives (the
//!   chunk that does not fit ends the read, and the request is answered
//!   503). The charge is held until the handler has answered, since the
//!   parsed form lives that long.
//! - **Large reads** ([`LargeReads`]). `GET /results/{id}` with a
//!   `cases_limit` above [`LARGE_READ_CASES`] builds and sends up to tens of
//!   MiB of JSON; a few at once take every core and much memory. They take a
//!   permit, waiting up to [`LARGE_READ_WAIT`] for one (then 503), and hold
//!   it until the answer is sent ([`hold_until_sent`]), so a client that
//!   reads slowly counts too. Their JSON is built off the async workers, so
//!   `/health` and small reads stay fast.
//!
//! Both refusals are [`ApiError::Overloaded`]: 503, `Retry-After`, and the
//! usual JSON error saying what to do.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// How many bytes of memory each byte of a request body is charged. The
/// body is held whole, then parsed into cases, then encoded into stream
/// messages. Measured peak per body byte (RSS of a fresh master): 6.5 for
/// an agent-style run of 250,000 cases with messages, 9.5 for 900,000
/// minimal cases. The original system's flat payload made of bare failure
/// entries (`{"nodeid":"a"}`) costs ~35 and is not covered: see the README.
pub const BODY_MEMORY_FACTOR: usize = 10;

/// `cases_limit` above which `GET /results/{id}` is a large read (1,000
/// cases are ~300 KiB of JSON).
pub const LARGE_READ_CASES: u32 = 1000;

/// How long a large read waits for a permit before it is refused.
pub const LARGE_READ_WAIT: Duration = Duration::from_secs(2);

/// The memory budget of request bodies, in KiB permits.
#[derive(Debug)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    /// Total KiB (for messages).
    total_kib: u32,
    /// The body size limit: a longer body is refused (413) once this much
    /// is read, so it never holds more.
    max_body: u64,
}

/// The error a chunked body ends with when its next chunk does not fit the
/// budget; the JSON extractor finds it among the body's errors and answers
/// [`ApiError::Overloaded`] ([`BodyBudgetExceeded::to_api_error`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyBudgetExceeded(String);

impl BodyBudgetExceeded {
    /// The refusal a client sees.
    pub fn to_api_error(&self) -> ApiError {
        ApiError::Overloaded(self.0.clone())
    }
}

impl BodyBudget {
    /// A budget of `mib` MiB for bodies of at most `max_body` bytes.
    pub fn new(mib: usize, max_body: usize) -> BodyBudget {
        let total_kib = u32::try_from(mib.saturating_mul(1024)).unwrap_or(u32::MAX);
        BodyBudget {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            max_body: max_body as u64,
        }
    }

    /// KiB charged for `bytes` of body.
    fn kib_for(&self, bytes: u64) -> u32 {
        let kib = bytes
            .min(self.max_body)
            .saturating_mul(BODY_MEMORY_FACTOR as u64)
            .div_ceil(1024);
        u32::try_from(kib).unwrap_or(u32::MAX)
    }

    /// Charges `kib` more, or says why not.
    fn try_charge(
        &self,
        kib: u32,
        body_bytes: u64,
    ) -> Result<OwnedSemaphorePermit, BodyBudgetExceeded> {
        self.permits
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| {
                BodyBudgetExceeded(format!(
                    "the master is reading and parsing other request bodies and has no memory left for \
                     this one ({} KiB so far, charged {BODY_MEMORY_FACTOR}× against a budget of {} MiB, \
                     --max-inflight-body-mb / PTP_MAX_INFLIGHT_BODY_MB); nothing was stored. Retry after \
                     the Retry-After seconds, or publish large runs with ptp-agent, which splits them",
                    body_bytes.div_ceil(1024),
                    self.total_kib / 1024
                ))
            })
    }

    /// KiB free now (for tests and logs).
    pub fn available_kib(&self) -> usize {
        self.permits.available_permits()
    }
}

/// The middleware: charges each request's body before the handler reads it,
/// and releases the charge once the handler has answered.
pub async fn charge_bodies(
    State(budget): State<Arc<BodyBudget>>,
    req: Request,
    next: Next,
) -> Response {
    match req.body().size_hint().exact() {
        Some(0) => next.run(req).await,
        Some(len) => match budget.try_charge(budget.kib_for(len), len) {
            Ok(charge) => {
                let response = next.run(req).await;
                drop(charge);
                response
            }
            Err(refused) => refused.to_api_error().into_response(),
        },
        None => {
            let charge = Arc::new(Mutex::new(Charge::default()));
            let req = req.map(|body| {
                Body::new(ChargedBody {
                    inner: body,
                    budget: budget.clone(),
                    charge: charge.clone(),
                })
            });
            let response = next.run(req).await;
            drop(charge);
            response
        }
    }
}

/// What a chunked body has been charged so far.
#[derive(Debug, Default)]
struct Charge {
    bytes: u64,
    kib: u32,
    permit: Option<OwnedSemaphorePermit>,
}

/// A chunked body that charges each chunk before passing it on.
struct ChargedBody {
    inner: Body,
    budget: Arc<BodyBudget>,
    /// Shared with the middleware, which keeps it (and so the permits)
    /// until the handler has answered: the parsed body outlives this one.
    charge: Arc<Mutex<Charge>>,
}

impl HttpBody for ChargedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let mut charge = self.charge.lock().unwrap_or_else(PoisonError::into_inner);
            charge.bytes += data.len() as u64;
            let kib = self.budget.kib_for(charge.bytes);
            if kib > charge.kib {
                match self.budget.try_charge(kib - charge.kib, charge.bytes) {
                    Ok(more) => {
                        charge.kib = kib;
                        match &mut charge.permit {
                            Some(p) => p.merge(more),
                            None => charge.permit = Some(more),
                        }
                    }
                    Err(refused) => return Poll::Ready(Some(Err(axum::Error::new(refused)))),
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The cap on concurrent large reads. Share it as `Arc<LargeReads>`.
#[derive(Debug)]
pub struct LargeReads {
    permits: Arc<Semaphore>,
    max: u32,
}

impl LargeReads {
    /// At most `max` large reads at once.
    pub fn new(max: u32) -> LargeReads {
        LargeReads {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }

    /// A permit for one large read, waiting up to [`LARGE_READ_WAIT`].
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        match tokio::time::timeout(LARGE_READ_WAIT, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::Overloaded(format!(
                "{} answer(s) with cases_limit above {LARGE_READ_CASES} are being built or sent already \
                 (--max-large-reads / PTP_MAX_LARGE_READS); retry after the Retry-After seconds, or read \
                 the cases in pages of up to {LARGE_READ_CASES} by passing next_cursor back as cursor",
                self.max
            ))),
        }
    }
}

/// `response` with `permit` held until its body has been sent (or the
/// client has gone). Keeps the body's size hint, so the read cache still
/// sees how large it is.
pub fn hold_until_sent(response: Response, permit: OwnedSemaphorePermit) -> Response {
    response.map(|body| {
        Body::new(PermitBody {
            inner: body,
            pending: Bytes::new(),
            _permit: permit,
        })
    })
}

/// Size of the pieces a held answer is handed to hyper in.
const SEND_CHUNK: usize = 64 * 1024;

/// A body holding a permit until its last byte is handed to hyper. hyper
/// drops a body as soon as it has taken its last frame, and asks for the
/// next frame only when its write buffer has room; so the answer (one
/// frame of tens of MiB) is passed on in [`SEND_CHUNK`] pieces, and the
/// permit lives as long as the connection is still sending it.
struct PermitBody {
    inner: Body,
    /// What is left of the frame being passed on.
    pending: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl HttpBody for PermitBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.pending.is_empty() {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.pending = data,
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                other => return other,
            }
        }
        let n = self.pending.len().min(SEND_CHUNK);
        Poll::Ready(Some(Ok(Frame::data(self.pending.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let pending = self.pending.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + pending);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + pending);
        }
        hint
    }
}
