//! Progress of a long command on stderr: on a terminal, a bar with events/s and the time
//! left, redrawn at most ten times a second; otherwise a plain line every five seconds.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    shown: Option<Instant>,
    terminal: bool,
    quiet: bool,
}

impl Progress {
    /// `total`: the events expected, if known.
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Progress {
        Progress {
            label: label.into(),
            total,
            done: 0,
            started: Instant::now(),
            shown: None,
            terminal: std::io::stderr().is_terminal(),
            quiet: false,
        }
    }

    /// Shows nothing (for tests and libraries).
    pub fn quiet() -> Progress {
        Progress { quiet: true, ..Progress::new("", None) }
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    pub fn advance(&mut self, events: u64) {
        self.done += events;
        let every = if self.terminal { Duration::from_millis(100) } else { Duration::from_secs(5) };
        if !self.quiet && self.shown.is_none_or(|at| at.elapsed() >= every) {
            self.show(false);
        }
    }

    pub fn finish(&mut self) {
        if !self.quiet {
            self.show(true);
        }
    }

    fn show(&mut self, last: bool) {
        self.shown = Some(Instant::now());
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / seconds;
        let mut err = std::io::stderr().lock();
        let left = self.total.filter(|t| *t > 0 && rate > 0.0).map(|t| t.saturating_sub(self.done) as f64 / rate);
        if self.terminal {
            let bar = match self.total.filter(|t| *t > 0) {
                Some(total) => {
                    let filled = ((self.done.min(total) as f64 / total as f64) * 30.0) as usize;
                    format!("[{}{}] ", "#".repeat(filled), ".".repeat(30 - filled))
                }
                None => String::new(),
            };
            let eta = left.map(|s| format!(", {s:.0} s left")).unwrap_or_default();
            let _ = write!(err, "\r{} {bar}{} events, {rate:.0} events/s{eta}   ", self.label, self.done);
            if last {
                let _ = writeln!(err);
            }
        } else {
            let of = self.total.map(|t| format!(" of {t}")).unwrap_or_default();
            let eta = left.filter(|_| !last).map(|s| format!(", about {s:.0} s left")).unwrap_or_default();
            let _ = writeln!(err, "{}: {}{of} events, {rate:.0} events/s{eta}", self.label, self.done);
        }
    }
}
