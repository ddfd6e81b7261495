//! What a scenario measured: its typed figures, printed as a human summary and one JSON line,
//! and the latency histogram (HdrHistogram, microseconds) the echo scenarios fill.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

use super::fleet::Failures;

/// What one scenario measured: its typed figures (`F`, one struct per scenario, serialised as
/// the JSON line beside `scenario`) and the lines of its human summary.
pub(crate) struct Report<F> {
    scenario: &'static str,
    /// The figures.
    pub(crate) figures: F,
    lines: Vec<String>,
}

impl<F: Serialize> Report<F> {
    /// A report of `figures` for `scenario`, without summary lines yet.
    pub(crate) fn new(scenario: &'static str, figures: F) -> Self {
        Self {
            scenario,
            figures,
            lines: Vec::new(),
        }
    }

    /// Adds a line to the human summary.
    pub(crate) fn say(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// Adds a line per reason of `failures` (counted under `key` in the figures).
    pub(crate) fn say_failures(&mut self, key: &str, failures: &Failures) {
        for (reason, n) in failures {
            self.say(format!("{key}: {n} × {reason}"));
        }
    }

    /// The JSON line: `scenario`, then every figure.
    pub(crate) fn json(&self) -> String {
        let mut object = Map::new();
        object.insert("scenario".into(), self.scenario.into());
        match serde_json::to_value(&self.figures) {
            Ok(Value::Object(figures)) => object.extend(figures),
            other => unreachable!("figures serialise to an object, not {other:?}"),
        }
        Value::Object(object).to_string()
    }

    /// Prints the summary and the JSON line; appends the JSON line to `json_out` if given.
    pub(crate) fn print(&self, json_out: Option<&Path>) -> anyhow::Result<()> {
        println!("== {}", self.scenario);
        for line in &self.lines {
            println!("   {line}");
        }
        let json = self.json();
        println!("{json}");
        if let Some(path) = json_out {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            writeln!(file, "{json}")?;
        }
        Ok(())
    }
}

/// The count of `failures`, for a figure.
pub(crate) fn count(failures: &Failures) -> u64 {
    failures.values().sum()
}

/// p50, p99, p99.9 and the maximum of a [`Latency`], milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Quantiles {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

/// Round-trip times, microsecond resolution up to one minute.
pub(crate) struct Latency(Histogram<u64>);

impl Latency {
    /// An empty histogram.
    pub(crate) fn new() -> Self {
        Self(Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds"))
    }

    /// Records one round trip (clamped into the histogram's range).
    pub(crate) fn record(&mut self, rtt: Duration) {
        self.0.saturating_record(rtt.as_micros().max(1) as u64);
    }

    /// Adds `other`'s samples.
    pub(crate) fn merge(&mut self, other: &Latency) {
        self.0
            .add(&other.0)
            .expect("histograms with the same bounds");
    }

    /// Samples recorded.
    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile, milliseconds.
    pub(crate) fn ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// p50/p99/p99.9/max.
    pub(crate) fn quantiles(&self) -> Quantiles {
        Quantiles {
            p50_ms: self.ms(0.5),
            p99_ms: self.ms(0.99),
            p999_ms: self.ms(0.999),
            max_ms: self.ms(1.0),
        }
    }

    /// `p50 … p99 … p99.9 … max …` for the human summary.
    pub(crate) fn summary(&self) -> String {
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            self.ms(0.5),
            self.ms(0.99),
            self.ms(0.999),
            self.ms(1.0)
        )
    }
}
