//! Probes of the POP network and the metric report format they send to every DNS server.
//!
//! The report wire format ([`report`]) and the latency-probe wire format ([`latency`])
//! live here so that the probe daemon and the DNS servers that talk to it share one
//! definition.

pub mod latency;
pub mod report;
mod wire;

pub use latency::{LatencyError, LatencyRequest, LatencyResponse, LatencyResult};
pub use report::{Entry, Health, Report, ReportError};
