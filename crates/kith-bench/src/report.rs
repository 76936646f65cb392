//! Figures for people (a table) and for scripts (one JSON object, last line).

use serde_json::{Map, Value, json};

pub struct Report {
    pub scenario: &'static str,
    rows: Vec<(String, f64, &'static str, String)>,
    context: Map<String, Value>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Report { scenario, rows: Vec::new(), context: Map::new() }
    }

    /// A figure: its JSON key, value, unit and what it measures.
    pub fn figure(&mut self, key: &str, value: f64, unit: &'static str, what: &str) {
        self.rows.push((key.to_string(), value, unit, what.to_string()));
    }

    /// A fact about the run (sizes, store), not a measurement.
    pub fn context(&mut self, key: &str, value: Value) {
        self.context.insert(key.to_string(), value);
    }

    pub fn print(&self, json: bool) {
        println!("kith-bench {}", self.scenario);
        for (k, v) in &self.context {
            println!("  {k}: {v}");
        }
        let width = self.rows.iter().map(|r| r.3.len()).max().unwrap_or(0);
        for (key, value, unit, what) in &self.rows {
            println!("  {what:<width$}  {value:>12.2} {unit:<6} ({key})");
        }
        if json {
            let mut out = self.context.clone();
            out.insert("scenario".into(), json!(self.scenario));
            for (key, value, _, _) in &self.rows {
                out.insert(key.clone(), json!((value * 1000.0).round() / 1000.0));
            }
            println!("{}", Value::Object(out));
        }
    }
}

/// The `_sum` of a Prometheus histogram in text exposition.
pub fn histogram_sum(metrics: &str, name: &str) -> f64 {
    let prefix = format!("{name}_sum ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
