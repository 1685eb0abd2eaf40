//! Where a daemon's record lines go: the [`LineSink`] trait (a [`crate::Shipper`] is one), and [`LogSink`] to carry one in a daemon's options.

use std::sync::Arc;

/// Takes newline-terminated JSON records (each with a `customer`).
pub trait LineSink: Send + Sync {
    /// Queues the lines; must not block.
    fn write_lines(&self, lines: &[u8]);
    /// The sink's own counters, for the daemon's `/metrics`.
    fn metrics(&self, _m: &mut promtext::Metrics) {}
}

/// A [`LineSink`] in a daemon's options.
#[derive(Clone)]
pub struct LogSink(pub Arc<dyn LineSink>);

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

impl LineSink for crate::Shipper {
    fn write_lines(&self, lines: &[u8]) {
        crate::Shipper::write_lines(self, lines);
    }

    fn metrics(&self, m: &mut promtext::Metrics) {
        crate::Shipper::metrics(self, m);
    }
}
