//! Prometheus text exposition of the server's own measurements: request latency by route
//! and status, command outcomes by type, append latency. Projection lag is read from the
//! projections' checkpoints when scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(&mut self.counts) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braced = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braced} {}", self.count);
    }
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    commands: Mutex<BTreeMap<(String, &'static str), u64>>,
    appends: Mutex<Histogram>,
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let mut requests = self.requests.lock().expect("metrics lock");
        requests.entry((method.to_string(), route.to_string(), status)).or_default().observe(took.as_secs_f64());
    }

    /// A command's outcome: `ok`, `repeated` (an idempotent repeat), `rejected`, `conflict` or `error`.
    pub fn command(&self, command: &str, outcome: &'static str) {
        *self.commands.lock().expect("metrics lock").entry((command.to_string(), outcome)).or_default() += 1;
    }

    pub fn append(&self, took: Duration) {
        self.appends.lock().expect("metrics lock").observe(took.as_secs_f64());
    }

    /// The text exposition, with `extra` (gauges measured at scrape time) appended.
    pub fn render(&self, extra: &str) -> String {
        let mut out = String::new();
        out.push_str("# HELP orderlog_http_request_duration_seconds Time to answer a request, by route and status.\n");
        out.push_str("# TYPE orderlog_http_request_duration_seconds histogram\n");
        for ((method, route, status), h) in self.requests.lock().expect("metrics lock").iter() {
            let labels = format!("method=\"{method}\",route=\"{}\",status=\"{status}\"", escape(route));
            h.write(&mut out, "orderlog_http_request_duration_seconds", &labels);
        }
        out.push_str("# HELP orderlog_commands_total Commands handled, by type and outcome.\n");
        out.push_str("# TYPE orderlog_commands_total counter\n");
        for ((command, outcome), n) in self.commands.lock().expect("metrics lock").iter() {
            let _ =
                writeln!(out, "orderlog_commands_total{{command=\"{}\",outcome=\"{outcome}\"}} {n}", escape(command));
        }
        out.push_str("# HELP orderlog_append_duration_seconds Time to append a command's events to the log.\n");
        out.push_str("# TYPE orderlog_append_duration_seconds histogram\n");
        self.appends.lock().expect("metrics lock").write(&mut out, "orderlog_append_duration_seconds", "");
        out.push_str(extra);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        m.request("GET", "/orders/{order_id}", 200, Duration::from_micros(700));
        m.request("GET", "/orders/{order_id}", 200, Duration::from_millis(30));
        let text = m.render("");
        assert!(text.contains(
            "orderlog_http_request_duration_seconds_bucket{method=\"GET\",route=\"/orders/{order_id}\",status=\"200\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "orderlog_http_request_duration_seconds_bucket{method=\"GET\",route=\"/orders/{order_id}\",status=\"200\",le=\"0.05\"} 2"
        ));
        assert!(text.contains("orderlog_append_duration_seconds_count 0"));
    }
}
