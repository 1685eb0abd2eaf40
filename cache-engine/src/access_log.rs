//! The access log: one JSON line per request, written to a local file and/or handed to a [`LineSink`] (popnet's log shipper).
//!
//! Each worker formats its records into its own buffer and hands full buffers (or, at
//! least every 250 ms, partial ones) to the sinks, so the request path never writes to
//! a file itself and the file's lock is taken once per batch, not per request.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::stats::CacheStatus;

/// One request, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record<'a> {
    /// Unix time in milliseconds when the response was complete.
    pub ts_ms: u64,
    pub pop: &'a str,
    /// The customer, or "-" when the host maps to none.
    pub customer: &'a str,
    pub client: SocketAddr,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// Bytes sent to the client (head and body).
    pub bytes: u64,
    pub cache: CacheStatus,
    /// The origin that answered, when one was asked.
    pub origin: Option<&'a str>,
    /// From the complete request head to the response head being queued.
    pub ttfb_us: u64,
    /// From the complete request head to the last byte being queued.
    pub total_us: u64,
    /// Time to the origin's response head, when this request waited for one.
    pub origin_us: Option<u64>,
}

pub use logship::{LineSink, LogSink};

/// The shared sinks: the file of `[pops.cache] access_log`, and a [`LineSink`].
pub struct AccessLog {
    file: Option<Mutex<File>>,
    sink: Option<Arc<dyn LineSink>>,
}

/// A worker's pending records flush at this size.
pub const FLUSH_AT: usize = 32 * 1024;

impl AccessLog {
    /// The access log of a file only.
    pub fn open(path: &Path) -> io::Result<AccessLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AccessLog {
            file: Some(Mutex::new(file)),
            sink: None,
        })
    }

    /// The access log of an optional file and an optional sink; `None` when neither is given.
    pub fn new(
        path: Option<&Path>,
        sink: Option<Arc<dyn LineSink>>,
    ) -> io::Result<Option<AccessLog>> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
            None => None,
        };
        Ok((file.is_some() || sink.is_some()).then_some(AccessLog { file, sink }))
    }

    /// The sink's counters, for `/metrics`.
    pub fn sink_metrics(&self, m: &mut promtext::Metrics) {
        if let Some(s) = &self.sink {
            s.metrics(m);
        }
    }

    /// Appends one record to a worker's buffer.
    pub fn format(buf: &mut Vec<u8>, r: &Record<'_>) {
        if serde_json::to_writer(&mut *buf, r).is_ok() {
            buf.push(b'\n');
        }
    }

    /// Writes a worker's buffer out (whole lines only) and clears it.
    pub fn flush(&self, buf: &mut Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        if let Some(sink) = &self.sink {
            sink.write_lines(buf);
        }
        if let Some(file) = &self.file {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = f.write_all(buf) {
                tracing::warn!(error = %e, "access log write failed");
            }
        }
        buf.clear();
    }
}
