//! What a scenario measured: a human summary and one JSON line per scenario, and the latency
//! histogram (HdrHistogram, microseconds) the echo scenarios fill.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Map, Value};

/// The figures of one scenario.
pub(crate) struct Report {
    scenario: String,
    fields: Map<String, Value>,
    lines: Vec<String>,
}

impl Report {
    /// An empty report for `scenario`.
    pub(crate) fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            fields: Map::new(),
            lines: Vec::new(),
        }
    }

    /// Records a figure for the JSON line.
    pub(crate) fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.fields.insert(key.to_owned(), value.into());
    }

    /// Adds a line to the human summary.
    pub(crate) fn say(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// A figure recorded earlier, as a number.
    pub(crate) fn number(&self, key: &str) -> Option<f64> {
        self.fields.get(key).and_then(Value::as_f64)
    }

    /// Prints the summary and the JSON line; appends the JSON line to `json_out` if given.
    pub(crate) fn print(&self, json_out: Option<&Path>) -> anyhow::Result<()> {
        println!("== {}", self.scenario);
        for line in &self.lines {
            println!("   {line}");
        }
        let mut object = Map::new();
        object.insert("scenario".into(), self.scenario.clone().into());
        object.extend(self.fields.clone());
        let json = Value::Object(object).to_string();
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

    /// Puts p50/p99/p99.9/max into `report` under `prefix`.
    pub(crate) fn report(&self, report: &mut Report, prefix: &str) {
        for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999), ("max", 1.0)] {
            report.set(&format!("{prefix}{name}_ms"), self.ms(q));
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
