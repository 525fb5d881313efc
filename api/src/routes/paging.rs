//! Cursor pagination, in one place: the cursors the list routes issue and
//! read back, and the headers that point at the next page.
//!
//! A cursor is opaque to clients but plain to us: the sort key of the last
//! item served. Run cursors are `<started_at ms>.<run_id>`; case cursors
//! `<order>.<outcome>.<duration bits>.<chunk>.<idx>`, tagged with the order
//! they belong to so one issued for another order is refused by name.
//! Guarantees: every decoder refuses what this module did not encode with
//! a 400 that says to pass the cursor back unchanged; the `Link` header
//! repeats every filter of the request, so following it never widens the
//! result.

use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Utc};
use ptp_actors::read::queries::{CaseOrder, CasePosition, RunCursor};

use crate::error::ApiError;

/// The headers of a page: `X-Next-Cursor` and `Link: <path?...&cursor=>;
/// rel="next"` when there is a next page, nothing otherwise.
pub(crate) fn next_page(path: &str, cursor: Option<&str>, params: &[(&str, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let Some(cursor) = cursor else {
        return headers;
    };
    if let Ok(v) = HeaderValue::from_str(cursor) {
        headers.insert("x-next-cursor", v);
    }
    let mut link = format!("<{path}?");
    for (k, v) in params {
        link.push_str(&format!("{k}={}&", ptp_nats::percent::encode(v)));
    }
    link.push_str(&format!(
        "cursor={}>; rel=\"next\"",
        ptp_nats::percent::encode(cursor)
    ));
    if let Ok(v) = HeaderValue::from_str(&link) {
        headers.insert(header::LINK, v);
    }
    headers
}

/// The cursor after the run that started at `started_at` with `run_id`.
pub(crate) fn encode_run_cursor(started_at: DateTime<Utc>, run_id: &str) -> String {
    format!("{}.{run_id}", started_at.timestamp_millis())
}

/// Reads a cursor made by [`encode_run_cursor`].
pub(crate) fn decode_run_cursor(s: &str) -> Result<RunCursor, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "cursor {:?} is not one this API issued; pass the X-Next-Cursor value of the previous page unchanged",
            s.chars().take(100).collect::<String>()
        ))
    };
    let (ms, run_id) = s.split_once('.').ok_or_else(bad)?;
    let ms: i64 = ms.parse().map_err(|_| bad())?;
    let started_at = DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(bad)?;
    ptp_nats::schema::valid_run_id(run_id).map_err(|_| bad())?;
    Ok(RunCursor {
        started_at,
        run_id: run_id.to_string(),
    })
}

/// The `order` parameter's names, one per case order.
const ORDERS: [(&str, CaseOrder); 2] = [
    ("failures_first", CaseOrder::FailuresFirst),
    ("duration", CaseOrder::Slowest),
];

/// The case order named `tag` (`failures_first` or `duration`).
pub(crate) fn case_order(tag: &str) -> Option<CaseOrder> {
    ORDERS.iter().find(|(t, _)| *t == tag).map(|(_, o)| *o)
}

fn order_tag(order: CaseOrder) -> &'static str {
    ORDERS
        .iter()
        .find(|(_, o)| *o == order)
        .map_or("failures_first", |(t, _)| t)
}

/// The cursor after the case at `p` in `order`.
pub(crate) fn encode_case_cursor(order: CaseOrder, p: &CasePosition) -> String {
    format!(
        "{}.{}.{:x}.{}.{}",
        order_tag(order),
        p.outcome,
        p.duration_secs.to_bits(),
        p.chunk,
        p.idx
    )
}

/// Reads a cursor made by [`encode_case_cursor`] for `order`.
pub(crate) fn decode_case_cursor(s: &str, order: CaseOrder) -> Result<CasePosition, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "cursor {:?} is not one this API issued for these cases; pass the next_cursor of the previous page unchanged",
            s.chars().take(100).collect::<String>()
        ))
    };
    let mut parts = s.split('.');
    let tag = parts.next().ok_or_else(bad)?;
    if tag != order_tag(order) {
        return Err(ApiError::BadRequest(format!(
            "cursor was issued for order={}, not order={}; ask with the order of the page that returned it",
            tag.chars().take(40).collect::<String>(),
            order_tag(order)
        )));
    }
    let mut num = || parts.next().ok_or_else(bad);
    let outcome: i64 = num()?.parse().map_err(|_| bad())?;
    let bits = u64::from_str_radix(num()?, 16).map_err(|_| bad())?;
    let chunk: i64 = num()?.parse().map_err(|_| bad())?;
    let idx: i64 = num()?.parse().map_err(|_| bad())?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(CasePosition {
        outcome,
        duration_secs: f64::from_bits(bits),
        chunk,
        idx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_cursors_round_trip_and_refuse_garbage() {
        let c = decode_run_cursor("1700000000000.0190-abc").expect("valid cursor");
        assert_eq!(c.run_id, "0190-abc");
        assert_eq!(c.started_at.timestamp_millis(), 1_700_000_000_000);
        for bad in ["", "abc", "12", "x.y", "1.", "1.a b"] {
            assert!(decode_run_cursor(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn case_cursors_are_tied_to_their_order() {
        let p = CasePosition {
            outcome: 3,
            duration_secs: 0.25,
            chunk: 2,
            idx: 7,
        };
        let c = encode_case_cursor(CaseOrder::Slowest, &p);
        let back = decode_case_cursor(&c, CaseOrder::Slowest).expect("round trip");
        assert_eq!((back.outcome, back.chunk, back.idx), (3, 2, 7));
        assert_eq!(back.duration_secs, 0.25);
        let err = decode_case_cursor(&c, CaseOrder::FailuresFirst).expect_err("other order");
        assert!(err.to_string().contains("order=duration"), "{err}");
    }

    #[test]
    fn the_link_keeps_every_filter() {
        let h = next_page(
            "/results",
            Some("17.r-1"),
            &[
                ("limit", "2".into()),
                ("project", "a b&c".into()),
                ("since", "2024-05-01T00:00:00Z".into()),
            ],
        );
        assert_eq!(h["x-next-cursor"], "17.r-1");
        assert_eq!(
            h[header::LINK],
            "</results?limit=2&project=a%20b%26c&since=2024-05-01T00%3A00%3A00Z&cursor=17.r-1>; rel=\"next\""
        );
        assert!(next_page("/results", None, &[]).is_empty());
    }
}
