//! A fixed-bucket histogram for Prometheus text exposition, shared by
//! ingest (batch sizes, commit latency) and the API (request latency).
//!
//! Shape: bucket counts are atomics, so recording never blocks a request or
//! a batch; the sum is kept in integer micro-units so it stays exact and
//! lock-free. Guarantees: bounded memory (one counter per bucket), and
//! [`Histogram::render`] writes the cumulative `_bucket{le=...}`, `_sum` and
//! `_count` lines Prometheus expects.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets for latencies in seconds: 1 ms to 10 s.
pub const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for counts of messages per batch.
pub const BATCH: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1000.0,
];

/// A histogram over fixed upper bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, plus +Inf.
    counts: Vec<AtomicU64>,
    /// Sum of observations in millionths.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation (negative or NaN values count as 0).
    pub fn observe(&self, v: f64) {
        let v = if v.is_finite() && v > 0.0 { v } else { 0.0 };
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let micros = (v * 1e6).min(u64::MAX as f64) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Appends the exposition lines of `name` with `labels` (`a="b",...`,
    /// or empty) to `out`.
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_sum_is_exact() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 2.0, 3.0, 50.0, f64::NAN] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render("x", "a=\"b\"", &mut out);
        assert_eq!(
            out,
            "x_bucket{a=\"b\",le=\"1\"} 2\nx_bucket{a=\"b\",le=\"10\"} 4\nx_bucket{a=\"b\",le=\"+Inf\"} 5\n\
             x_sum{a=\"b\"} 55.5\nx_count{a=\"b\"} 5\n"
        );
    }
}
