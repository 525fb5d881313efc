//! The pass-rate trend as inline SVG numbers: points, line segments, axis
//! ticks and labels, computed here so the template only places them.
//!
//! Shape: one pure function of the runs, [`chart`]; every coordinate is
//! this module's own number, never test data.
//!
//! Guarantees: runs without a pass rate break the line and show hollow on
//! the baseline; a failed run is a square, not only a colour; a single run
//! is one point in the middle; no run is an empty chart.

use super::format::{pct, run_badge, when};
use crate::master::Run;

pub(super) struct ChartPoint {
    pub(super) x: String,
    pub(super) y: String,
    /// Square for a run that did not pass, circle otherwise.
    pub(super) square: bool,
    /// No pass rate: drawn hollow on the baseline.
    pub(super) hollow: bool,
    pub(super) class: &'static str,
    pub(super) label: String,
}

pub(super) struct Tick {
    pub(super) pos: String,
    pub(super) label: String,
}

pub(super) struct XLabel {
    pub(super) x: String,
    pub(super) label: String,
    pub(super) anchor: &'static str,
}

pub(super) struct Chart {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) left: u32,
    pub(super) right: u32,
    pub(super) top: u32,
    pub(super) bottom: u32,
    pub(super) lines: Vec<String>,
    pub(super) points: Vec<ChartPoint>,
    pub(super) y_ticks: Vec<Tick>,
    pub(super) x_labels: Vec<XLabel>,
    pub(super) no_rate: usize,
    pub(super) summary: String,
}

/// The pass-rate chart: y is 0..100 %, x the runs oldest to newest, evenly
/// spaced. Runs without a pass rate break the line and show as hollow marks
/// on the baseline; a single run is one point in the middle.
pub(super) fn chart(runs: &[Run]) -> Chart {
    let (width, height) = (760u32, 240u32);
    let (left, right, top, bottom) = (48u32, 16u32, 12u32, 46u32);
    let plot_w = f64::from(width - left - right);
    let plot_h = f64::from(height - top - bottom);
    let n = runs.len();
    let x_of = |i: usize| {
        if n <= 1 {
            f64::from(left) + plot_w / 2.0
        } else {
            f64::from(left) + plot_w * i as f64 / (n - 1) as f64
        }
    };
    // The y axis starts at the lowest pass rate rounded down to 10 (at most
    // 90), so a drop from 100 % to 97 % is visible; the labels say where.
    let lowest = runs
        .iter()
        .filter_map(|r| r.pass_rate.filter(|p| p.is_finite()))
        .fold(100.0f64, f64::min);
    let y_min = ((lowest.clamp(0.0, 100.0) / 10.0).floor() * 10.0).min(90.0);
    let y_of = |rate: f64| {
        f64::from(top) + plot_h * (1.0 - (rate.clamp(y_min, 100.0) - y_min) / (100.0 - y_min))
    };
    // Runs without a pass rate sit just under the x axis, off the scale.
    let baseline = f64::from(top) + plot_h + 9.0;

    let mut lines = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut points = Vec::new();
    let mut no_rate = 0;
    for (i, r) in runs.iter().enumerate() {
        let x = x_of(i);
        let badge = run_badge(&r.status);
        let label = format!(
            "{} · {} · {} {} · pass rate {}",
            when(&r.started_at),
            r.run_id,
            badge.symbol,
            badge.word,
            pct(r.pass_rate)
        );
        match r.pass_rate.filter(|p| p.is_finite()) {
            Some(rate) => {
                let y = y_of(rate);
                current.push(format!("{x:.1},{y:.1}"));
                points.push(ChartPoint {
                    x: format!("{x:.1}"),
                    y: format!("{y:.1}"),
                    square: r.status != "passed",
                    hollow: false,
                    class: badge.class,
                    label,
                });
            }
            None => {
                no_rate += 1;
                if current.len() > 1 {
                    lines.push(current.join(" "));
                }
                current.clear();
                points.push(ChartPoint {
                    x: format!("{x:.1}"),
                    y: format!("{baseline:.1}"),
                    square: false,
                    hollow: true,
                    class: "muted",
                    label,
                });
            }
        }
    }
    if current.len() > 1 {
        lines.push(current.join(" "));
    }

    let y_ticks = (0..5)
        .map(|i| {
            let v = y_min + (100.0 - y_min) * f64::from(i) / 4.0;
            Tick {
                pos: format!("{:.1}", y_of(v)),
                label: if v.fract() == 0.0 {
                    format!("{v:.0}%")
                } else {
                    format!("{v:.1}%")
                },
            }
        })
        .collect();
    let mut x_labels = Vec::new();
    let date = |r: &Run| r.started_at.format("%m-%d %H:%M").to_string();
    if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
        if n == 1 {
            x_labels.push(XLabel {
                x: format!("{:.1}", x_of(0)),
                label: date(first),
                anchor: "middle",
            });
        } else {
            x_labels.push(XLabel {
                x: format!("{:.1}", x_of(0)),
                label: date(first),
                anchor: "start",
            });
            if n >= 5 {
                let mid = n / 2;
                x_labels.push(XLabel {
                    x: format!("{:.1}", x_of(mid)),
                    label: date(&runs[mid]),
                    anchor: "middle",
                });
            }
            x_labels.push(XLabel {
                x: format!("{:.1}", x_of(n - 1)),
                label: date(last),
                anchor: "end",
            });
        }
    }
    let rates: Vec<f64> = runs.iter().filter_map(|r| r.pass_rate).collect();
    let summary = match (rates.first(), rates.last()) {
        (Some(a), Some(b)) if rates.len() > 1 => format!(
            "Pass rate over {n} runs went from {} to {} (lowest {}, highest {}).",
            pct(Some(*a)),
            pct(Some(*b)),
            pct(rates.iter().copied().reduce(f64::min)),
            pct(rates.iter().copied().reduce(f64::max)),
        ),
        (Some(a), _) => format!("One run with a pass rate: {}.", pct(Some(*a))),
        _ => "No run in this range has a pass rate (no test reached a verdict).".to_string(),
    };
    Chart {
        width,
        height,
        left,
        right,
        top,
        bottom,
        lines,
        points,
        y_ticks,
        x_labels,
        no_rate,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, status: &str, rate: Option<f64>) -> Run {
        serde_json::from_value(serde_json::json!({
            "run_id": id, "project": "p", "worker_id": "w", "status": status,
            "started_at": "2026-01-02T03:04:05Z", "pass_rate": rate, "total": 2,
        }))
        .expect("run")
    }

    #[test]
    fn chart_handles_one_run_and_missing_rates() {
        let c = chart(&[run("a", "passed", Some(100.0))]);
        assert_eq!(c.points.len(), 1);
        assert!(c.lines.is_empty(), "one point, no line");
        let c = chart(&[
            run("a", "passed", Some(100.0)),
            run("b", "no_tests", None),
            run("c", "failed", Some(50.0)),
            run("d", "failed", Some(40.0)),
        ]);
        assert_eq!(c.no_rate, 1);
        assert_eq!(
            c.lines.len(),
            1,
            "the gap splits the line; a lone point has none"
        );
        assert!(c.points[1].hollow && c.points[2].square);
        assert_eq!(
            c.y_ticks[0].label, "40%",
            "the axis starts at the lowest rate, rounded down"
        );
        let c = chart(&[
            run("a", "passed", Some(100.0)),
            run("b", "failed", Some(97.0)),
        ]);
        let labels: Vec<&str> = c.y_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["90%", "92.5%", "95%", "97.5%", "100%"]);
        let c = chart(&[]);
        assert!(c.points.is_empty() && c.x_labels.is_empty());
    }
}
