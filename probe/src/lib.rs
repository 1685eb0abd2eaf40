//! The probe daemon of a POP (service probes, load agent, latency responder) and the wire formats it speaks to DNS servers.
//!
//! The report wire format ([`report`]) and the latency-probe wire format ([`latency`])
//! live here so that the probe daemon and the DNS servers that talk to it share one
//! definition. [`ProbeDaemon`] is what `popnet probe` runs: [`engine`] schedules the
//! [`check`]s of every target [`targets`] lists, [`health`] turns rounds into report
//! entries, [`load`] measures this box and its cache, and [`responder`] answers latency
//! requests.

mod admin;
pub mod admin_http;
pub mod check;
pub mod daemon;
pub mod engine;
pub mod health;
pub mod latency;
pub mod load;
pub mod report;
pub mod responder;
mod slab;
pub mod targets;
mod wire;

pub use daemon::{ProbeDaemon, ProbeError, ProbeOptions, ProbeReload, ProbeStats};
pub use latency::{LatencyError, LatencyRequest, LatencyResponse, LatencyResult};
pub use report::{Entry, Health, Report, ReportError};

/// Current unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
