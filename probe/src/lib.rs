//! Probes of the POP network and the metric report format they send to every DNS server.
//!
//! The report wire format ([`report`]) lives here so that the probe daemon and the DNS
//! servers that trust its figures share one definition.

pub mod report;

pub use report::{Entry, Health, Report, ReportError};
