//! HTTP routes, one module per resource, each with a `router()`.

pub mod analytics;
pub mod compare;
pub mod health;
pub mod insights;
pub mod results;
