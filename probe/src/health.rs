//! What the probe knows about one target: the last 10 verdicts, consecutive failures, and response-time distributions.
//!
//! Health as reported: `availability` is the fraction of the last [`WINDOW`] rounds that
//! passed; `up` turns false after [`DOWN_AFTER`] consecutive failed rounds and true again
//! with the next pass. Response times (connect, first byte, last byte, in µs) go into
//! hdrhistogram distributions, kept since the probe started.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::check::Outcome;
use crate::report::{Entry, Health};

/// Rounds the availability is computed over.
pub const WINDOW: u32 = 10;
/// Consecutive failed rounds that make a target down.
pub const DOWN_AFTER: u32 = 2;

/// Verdicts and timings of one target.
pub struct TargetHealth {
    /// Bit i = round i rounds ago passed (bit 0 = the latest).
    history: u16,
    rounds: u32,
    consecutive_failures: u32,
    passes: u64,
    failures: u64,
    last_error: Option<String>,
    last: Option<Outcome>,
    connect: Histogram<u32>,
    first_byte: Histogram<u32>,
    total: Histogram<u32>,
}

impl Default for TargetHealth {
    fn default() -> Self {
        TargetHealth::new()
    }
}

fn histogram() -> Histogram<u32> {
    // Auto-resizing, two significant digits: a few KB per target for sub-second values.
    match Histogram::new(2) {
        Ok(h) => h,
        Err(_) => unreachable!("2 significant digits is a valid histogram precision"),
    }
}

/// Percentiles of one distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Distribution {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Distribution {
    fn of(h: &Histogram<u32>) -> Option<Distribution> {
        (!h.is_empty()).then(|| Distribution {
            count: h.len(),
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p90_ms: h.value_at_quantile(0.9) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: h.max() as f64 / 1000.0,
        })
    }
}

/// A target's state for display.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetSnapshot {
    pub id: String,
    pub check: &'static str,
    pub up: bool,
    pub availability: f32,
    pub rounds: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    pub connect: Option<Distribution>,
    pub first_byte: Option<Distribution>,
    pub total: Option<Distribution>,
}

impl TargetHealth {
    pub fn new() -> TargetHealth {
        TargetHealth {
            history: 0,
            rounds: 0,
            consecutive_failures: 0,
            passes: 0,
            failures: 0,
            last_error: None,
            last: None,
            connect: histogram(),
            first_byte: histogram(),
            total: histogram(),
        }
    }

    /// Takes one round's verdict.
    pub fn record(&mut self, o: &Outcome) {
        let passed = o.passed();
        self.history = (self.history << 1) | u16::from(passed);
        self.rounds = (self.rounds + 1).min(WINDOW);
        if passed {
            self.consecutive_failures = 0;
            self.passes += 1;
            let us = |d: std::time::Duration| d.as_micros().clamp(1, u32::MAX as u128) as u64;
            let _ = self.total.record(us(o.total));
            if let Some(c) = o.connect {
                let _ = self.connect.record(us(c));
            }
            if let Some(f) = o.first_byte {
                let _ = self.first_byte.record(us(f));
            }
        } else {
            self.consecutive_failures += 1;
            self.failures += 1;
            self.last_error = o.result.clone().err();
        }
        self.last = Some(Outcome {
            body: None,
            ..o.clone()
        });
    }

    pub fn health(&self) -> Health {
        let window = self.history & ((1u16 << WINDOW) - 1) & (((1u32 << self.rounds) - 1) as u16);
        Health {
            up: self.consecutive_failures < DOWN_AFTER,
            availability: if self.rounds == 0 {
                0.0
            } else {
                window.count_ones() as f32 / self.rounds as f32
            },
        }
    }

    /// The report entry for the latest round, measured at `measured_at_ms`: health, and
    /// the response time (to the last byte) when it passed.
    pub fn entry(&self, server: &str, measured_at_ms: u64) -> Entry {
        Entry {
            server: server.to_string(),
            measured_at_ms,
            health: Some(self.health()),
            rtt_ms: self
                .last
                .as_ref()
                .filter(|o| o.passed())
                .map(|o| (o.total.as_secs_f64() * 1000.0).min(4_294_966.0) as f32),
            ..Entry::default()
        }
    }

    pub fn snapshot(&self, id: &str, check: &'static str) -> TargetSnapshot {
        let h = self.health();
        TargetSnapshot {
            id: id.to_string(),
            check,
            up: h.up,
            availability: h.availability,
            rounds: self.passes + self.failures,
            failures: self.failures,
            last_error: self.last_error.clone(),
            connect: Distribution::of(&self.connect),
            first_byte: Distribution::of(&self.first_byte),
            total: Distribution::of(&self.total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pass(ms: u64) -> Outcome {
        Outcome {
            result: Ok(()),
            connect: Some(Duration::from_millis(ms / 2)),
            first_byte: None,
            total: Duration::from_millis(ms),
            status: None,
            body: None,
        }
    }

    fn fail() -> Outcome {
        Outcome::failed(Duration::from_millis(500), "connect timed out")
    }

    #[test]
    fn down_after_two_consecutive_failures_and_up_with_the_next_pass() {
        let mut h = TargetHealth::new();
        h.record(&pass(10));
        assert!(h.health().up);
        h.record(&fail());
        assert!(h.health().up, "one failure is not down");
        h.record(&pass(10));
        h.record(&fail());
        assert!(h.health().up);
        h.record(&fail());
        assert!(!h.health().up, "two in a row are");
        h.record(&fail());
        assert!(!h.health().up);
        h.record(&pass(10));
        assert!(h.health().up);
    }

    #[test]
    fn availability_is_the_pass_fraction_of_the_last_ten_rounds() {
        let mut h = TargetHealth::new();
        assert_eq!(h.health().availability, 0.0);
        h.record(&pass(1));
        h.record(&fail());
        assert_eq!(h.health().availability, 0.5);
        for _ in 0..10 {
            h.record(&pass(1));
        }
        assert_eq!(h.health().availability, 1.0);
        for _ in 0..3 {
            h.record(&fail());
        }
        assert_eq!(h.health().availability, 0.7);
        for _ in 0..10 {
            h.record(&fail());
        }
        assert_eq!(h.health().availability, 0.0);
    }

    #[test]
    fn entries_carry_the_response_time_of_a_passing_round_only() {
        let mut h = TargetHealth::new();
        h.record(&pass(20));
        let e = h.entry("shop/east", 1_000);
        assert_eq!(e.rtt_ms, Some(20.0));
        assert_eq!(e.measured_at_ms, 1_000);
        assert_eq!(
            e.health,
            Some(Health {
                up: true,
                availability: 1.0
            })
        );
        h.record(&fail());
        assert_eq!(h.entry("shop/east", 2_000).rtt_ms, None);
        let s = h.snapshot("shop/east", "tcp");
        let total = s.total.unwrap();
        assert_eq!(total.count, 1);
        assert!((19.5..20.5).contains(&total.p50_ms), "{total:?}");
        assert_eq!(s.connect.unwrap().count, 1);
        assert!(s.first_byte.is_none());
        assert_eq!(s.last_error.as_deref(), Some("connect timed out"));
    }
}
