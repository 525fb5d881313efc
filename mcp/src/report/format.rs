//! How values read in a report: status badges (a word, a symbol and a CSS
//! class from a fixed set, so colour is never the only signal), percentages,
//! durations and times.
//!
//! Shape: small pure functions the page and the chart share, one rule each.

use chrono::{DateTime, Utc};

/// A run status as shown: a word, a symbol and a CSS class from a fixed set.
#[derive(Clone)]
pub(super) struct Badge {
    pub(super) class: &'static str,
    pub(super) symbol: &'static str,
    pub(super) word: String,
}

pub(super) fn run_badge(status: &str) -> Badge {
    let (class, symbol) = match status {
        "passed" => ("ok", "✔"),
        "failed" => ("bad", "✘"),
        "no_tests" => ("muted", "∅"),
        _ => ("warn", "⚠"),
    };
    Badge {
        class,
        symbol,
        word: status.replace('_', " "),
    }
}

pub(super) fn outcome_badge(outcome: &str) -> Badge {
    let (class, symbol) = match outcome {
        "passed" | "xpassed" => ("ok", "✔"),
        "failed" => ("bad", "✘"),
        "error" => ("warn", "⚠"),
        _ => ("muted", "–"),
    };
    Badge {
        class,
        symbol,
        word: outcome.to_string(),
    }
}

pub(super) fn worker_badge(status: &str) -> Badge {
    let (class, symbol) = match status {
        "running" => ("ok", "▶"),
        "idle" => ("muted", "●"),
        _ => ("warn", "○"),
    };
    Badge {
        class,
        symbol,
        word: status.to_string(),
    }
}

/// Percent with one decimal, or "n/a".
pub fn pct(rate: Option<f64>) -> String {
    rate.map_or_else(|| "n/a".to_string(), |r| format!("{r:.1}%"))
}

/// A duration in seconds, readable.
pub fn secs(s: f64) -> String {
    if !s.is_finite() {
        return "n/a".into();
    }
    if s >= 3600.0 {
        format!(
            "{}h {:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    } else if s >= 60.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else if s >= 10.0 {
        format!("{s:.1}s")
    } else {
        format!("{s:.2}s")
    }
}

pub(super) fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(secs(0.123), "0.12s");
        assert_eq!(secs(75.0), "1m 15s");
        assert_eq!(secs(7322.0), "2h 02m");
    }
}
