//! How every answer of the API writes a time and a rate: one form, chosen
//! here, used through `#[serde(serialize_with = ...)]` on every served field.
//!
//! Why one module: the same run used to read `2024-05-01T12:00:00.123Z` and
//! a pass rate of `66.6666666666667` on `/results` (SQLite's JSON keeps 15
//! significant digits) but nanoseconds and `66.66666666666667` on `/trend`
//! and `/workers`, because each field took whatever its source gave.
//!
//! Guarantees:
//! - a time is RFC 3339 in UTC with exactly three fractional digits and `Z`
//!   (`2024-05-01T12:00:00.000Z`): the precision the store keeps
//!   ([`crate::model::to_millis`]), so a time reads the same whichever route
//!   or cache served it;
//! - a rate (a percentage, 0..=100) is rounded to two decimals
//!   (`66.67`), so it does not depend on whether it went through SQLite's
//!   JSON or was computed in Rust; a non-finite rate is written as serde
//!   writes it (`null` in JSON).
//!
//! Only serialization: reading times back (`since`, stored JSON) accepts any
//! RFC 3339 form, as chrono's `Deserialize` does.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// Decimals a rate keeps.
const RATE_DECIMALS: i32 = 2;

/// The one text form of a time.
pub fn time_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The one value of a rate: rounded to [`RATE_DECIMALS`] decimals.
pub fn rate_value(r: f64) -> f64 {
    if !r.is_finite() {
        return r;
    }
    let scale = 10f64.powi(RATE_DECIMALS);
    (r * scale).round() / scale
}

/// `serialize_with` for a `DateTime<Utc>`.
pub fn time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time_text(t))
}

/// `serialize_with` for an `Option<DateTime<Utc>>`.
pub fn time_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => time(t, s),
        None => s.serialize_none(),
    }
}

/// `serialize_with` for a rate in percent.
pub fn rate<S: Serializer>(r: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(rate_value(*r))
}

/// `serialize_with` for an optional rate in percent.
pub fn rate_opt<S: Serializer>(r: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => rate(r, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde::Serialize;

    #[derive(Serialize)]
    struct Row {
        #[serde(serialize_with = "time")]
        at: DateTime<Utc>,
        #[serde(serialize_with = "time_opt")]
        maybe: Option<DateTime<Utc>>,
        #[serde(serialize_with = "rate_opt")]
        rate: Option<f64>,
        #[serde(serialize_with = "rate")]
        plain: f64,
    }

    #[test]
    fn times_have_milliseconds_and_z_rates_two_decimals() {
        let whole = Utc
            .with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
            .single()
            .expect("time");
        let nanos = whole + chrono::TimeDelta::nanoseconds(123_456_789);
        let row = Row {
            at: nanos,
            maybe: Some(whole),
            rate: Some(200.0 / 3.0),
            plain: 66.666_666_666_666_7,
        };
        let v = serde_json::to_value(&row).expect("json");
        assert_eq!(v["at"], "2024-05-01T12:00:00.123Z");
        assert_eq!(v["maybe"], "2024-05-01T12:00:00.000Z");
        assert_eq!(v["rate"], 66.67);
        assert_eq!(v["plain"], 66.67);
        let none = Row {
            at: whole,
            maybe: None,
            rate: None,
            plain: f64::NAN,
        };
        let v = serde_json::to_value(&none).expect("json");
        assert!(v["maybe"].is_null() && v["rate"].is_null() && v["plain"].is_null());
    }
}
