//! HTTP routes, one module per resource, each with a `router()`.

pub mod agent;
pub mod analytics;
pub mod compare;
pub mod health;
pub mod insights;
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
