//! HTTP routes, one module per resource, each with a `router()`.

pub mod agent;
pub mod analytics;
pub mod compare;
pub mod health;
pub mod insights;
pub mod metrics;
pub(crate) mod paging;
pub mod quarantine;
pub mod results;

use crate::error::ApiError;

/// A numeric query parameter: `default` when absent, else within
/// `min..=max`, or a 400 naming the parameter and the range.
pub(crate) fn bounded<T: PartialOrd + Copy + std::fmt::Display>(
    name: &str,
    v: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ApiError> {
    let v = v.unwrap_or(default);
    if v >= min && v <= max {
        Ok(v)
    } else {
        Err(ApiError::BadRequest(format!(
            "{name} must be between {min} and {max}, got {v}"
        )))
    }
}

/// The `owner` query parameter: the tests whose current owners (from the
/// newest run's CODEOWNERS) include it, matched exactly as CODEOWNERS writes
/// it (`@acme/cart`, `qa@example.com`); every test when absent. A blank or
/// over-long value is a 400 naming `owner`.
pub(crate) fn owner(v: Option<String>) -> Result<ptp_actors::owners::TestSet, ApiError> {
    use ptp_actors::owners::TestSet;
    use ptp_nats::schema::{MAX_OWNER_BYTES, check_len};
    match v {
        None => Ok(TestSet::All),
        Some(o) if o.trim().is_empty() => Err(ApiError::BadRequest(
            "owner is empty; give an owner as CODEOWNERS names it (e.g. @acme/cart or \
             qa@example.com) or leave it out"
                .into(),
        )),
        Some(o) => {
            check_len("owner", &o, MAX_OWNER_BYTES).map_err(ApiError::BadRequest)?;
            Ok(TestSet::Owner(o))
        }
    }
}
