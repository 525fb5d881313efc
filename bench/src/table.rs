//! The result table: one row per figure, each beside the reference measured
//! in the same run and their ratio, because absolute times on a shared
//! machine drift while ratios hold.
//!
//! Rows carry preformatted text (units differ per figure) plus the ratio
//! and the verdict as values, so the table prints as Markdown for
//! `docs/benchmarks.md` and as JSON for tooling.

use serde::Serialize;

/// One figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub metric: String,
    /// The figure, with its unit.
    pub measured: String,
    /// The same-run reference, with its unit (and what it is).
    pub reference: String,
    /// measured / reference, oriented so that the target reads naturally.
    pub ratio: Option<f64>,
    /// The goal, in words.
    pub target: String,
    /// Whether the goal is met; `None` for figures without a goal.
    pub met: Option<bool>,
}

impl Row {
    /// A row without target.
    pub fn info(metric: impl Into<String>, measured: impl Into<String>) -> Row {
        Row {
            metric: metric.into(),
            measured: measured.into(),
            reference: "—".into(),
            ratio: None,
            target: "—".into(),
            met: None,
        }
    }

    /// Sets the reference and ratio.
    pub fn vs(mut self, reference: impl Into<String>, ratio: f64) -> Row {
        self.reference = reference.into();
        self.ratio = ratio.is_finite().then_some(ratio);
        self
    }

    /// Sets the target and whether it is met.
    pub fn goal(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

/// Formats a rate in cases (or requests) per second.
pub fn per_sec(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.0}k/s", x / 1000.0)
    } else if x >= 1000.0 {
        format!("{:.1}k/s", x / 1000.0)
    } else {
        format!("{x:.0}/s")
    }
}

/// Formats milliseconds.
pub fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} ms")
    } else if x >= 10.0 {
        format!("{x:.1} ms")
    } else {
        format!("{x:.2} ms")
    }
}

/// Formats bytes as MiB (KiB below one MiB).
pub fn mib(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// The table as Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| metric | measured | reference | ratio | target | met? |\n|---|---:|---:|---:|---|:---:|\n",
    );
    for r in rows {
        let ratio = r
            .ratio
            .map_or_else(|| "—".to_string(), |x| format!("{x:.2}"));
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**NO**",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.metric, r.measured, r.reference, ratio, r.target, met
        ));
    }
    out
}

/// Median of `xs` (0 when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
