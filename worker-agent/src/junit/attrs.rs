//! Attribute values: reading an element's attributes (unescaped,
//! normalized, malformed ones refused) and understanding the two values
//! that need more than a string: `time` durations and suite timestamps.
//!
//! Separate because the dialects disagree most here (locale separators,
//! naive or offset timestamps, bare dates); the guarantee is that a bad
//! duration or timestamp never fails a report: it becomes 0.0 or is
//! ignored.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use quick_xml::XmlVersion;
use quick_xml::errors::Error as XmlError;
use quick_xml::escape::EscapeError;
use quick_xml::events::BytesStart;

use super::JunitError;
use super::text::cut;

/// Calls `f(local_name, value)` for every attribute, values unescaped and
/// normalized; refuses malformed attributes and unknown entities.
pub(super) fn for_each_attr<'a>(
    e: &'a BytesStart<'_>,
    pos: u64,
    mut f: impl FnMut(&str, Cow<'a, str>),
) -> Result<(), JunitError> {
    for attr in e.attributes() {
        let attr = attr.map_err(|err| JunitError::NotXml {
            position: pos,
            detail: format!(
                "malformed attribute in <{}>: {err}",
                cut(e.name().as_ref(), 100)
            ),
        })?;
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| match err {
                XmlError::Escape(EscapeError::UnrecognizedEntity(_, name)) => {
                    JunitError::UnknownEntity {
                        name: cut(&name, 100).to_string(),
                        position: pos,
                    }
                }
                other => JunitError::NotXml {
                    position: pos,
                    detail: format!(
                        "bad value of attribute {:?} in <{}>: {other}",
                        cut(attr.key.as_ref(), 100),
                        cut(e.name().as_ref(), 100)
                    ),
                },
            })?;
        f(attr.key.local_name().as_ref(), value);
    }
    Ok(())
}

/// Seconds from a `time` attribute. Locale separators are understood: with
/// both `,` and `.` the last one is the decimal point (`2,120.532`,
/// `1.234,5`); a single `,` alone is a decimal comma (`0,03`); several of
/// the same are thousands separators. Anything unusable gives 0.0.
pub(super) fn parse_duration(raw: &str) -> f64 {
    let s: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '_'))
        .collect();
    let commas = s.matches(',').count();
    let dots = s.matches('.').count();
    let normalized = match (commas, dots) {
        (0, 0) | (0, 1) => s,
        (0, _) => s.replace('.', ""),
        (1, 0) => s.replace(',', "."),
        (_, 0) => s.replace(',', ""),
        _ => {
            if s.rfind(',') > s.rfind('.') {
                s.replace('.', "").replace(',', ".")
            } else {
                s.replace(',', "")
            }
        }
    };
    // Kept within what the master accepts (a garbled 1e300 would make it
    // refuse the whole run).
    match normalized.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => v.min(ptp_nats::schema::MAX_DURATION_SECS),
        _ => 0.0,
    }
}

/// A suite timestamp: RFC 3339 (`Z` or offset), naive (taken as UTC) with
/// `T` or a space, with or without fractional seconds, RFC 2822, or a bare
/// date (midnight UTC).
pub(super) fn parse_timestamp(raw: &str) -> Option<DateTime<Utc>> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f %z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}
