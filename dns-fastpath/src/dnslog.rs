//! The DNS log: every interval, the answers handed out per balanced domain, view, type and server become [`logship::DnsRecord`]s for the log servers.
//!
//! Answers are not logged one by one: the query workers only add to the catalog's
//! [`crate::tally::Tally`] (a relaxed atomic add per server in the answer, no lock, no
//! allocation), and this thread drains it every interval and writes one record per
//! (domain, view, type, server) that was handed out, with the interval it covers. When
//! the catalog is replaced, the old one is drained until no answer table of it can still
//! be in use. Answers sent by the XDP fast path never reach userspace, so they are not
//! in these records; they are counted in aggregate by the program's per-CPU counters
//! (`popnet_dns_xdp_*` on `/metrics`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use logship::{DnsRecord, LineSink};

use crate::catalog::{Catalog, Family, ServerKind};
use crate::metrics::unix_ms;
use crate::server::Shared;

/// Shortest interval between two drains.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Catalogs replaced this many drains ago are no longer drained.
const RETIRED_DRAINS: u32 = 2;

/// The drain state: the catalogs counted into, and the start of the current interval.
pub struct DnsLog {
    pop: String,
    sink: Arc<dyn LineSink>,
    current: Arc<Catalog>,
    retired: Vec<(Arc<Catalog>, u32)>,
    from_ms: u64,
}

impl DnsLog {
    pub fn new(pop: String, sink: Arc<dyn LineSink>, catalog: Arc<Catalog>) -> DnsLog {
        DnsLog {
            pop,
            sink,
            current: catalog,
            retired: Vec::new(),
            from_ms: unix_ms(),
        }
    }

    /// Drains the tallies of `catalog` (the one in use now) and of the catalogs it
    /// replaced, and writes their records. Returns the answers written.
    pub fn drain(&mut self, catalog: &Arc<Catalog>) -> u64 {
        if !Arc::ptr_eq(catalog, &self.current) {
            let old = std::mem::replace(&mut self.current, catalog.clone());
            self.retired.push((old, RETIRED_DRAINS));
        }
        let now = unix_ms();
        let mut out = Vec::new();
        let mut answers = 0;
        let cats = std::iter::once(&self.current).chain(self.retired.iter().map(|(c, _)| c));
        for cat in cats {
            for c in cat.tally.drain() {
                let (Some(dom), Some(srv)) = (cat.domains.get(c.domain), cat.servers.get(c.server))
                else {
                    continue;
                };
                let name = dom.name.to_string();
                let rec = DnsRecord {
                    ts_ms: now,
                    from_ms: self.from_ms,
                    pop: self.pop.clone(),
                    customer: dom.customer.clone(),
                    domain: name.trim_end_matches('.').to_string(),
                    view: cat.view_name(c.view).to_string(),
                    qtype: match c.family {
                        Family::V4 => "A",
                        Family::V6 => "AAAA",
                    }
                    .into(),
                    server: srv.id.clone(),
                    server_kind: match srv.kind {
                        ServerKind::PopCache => "pop-cache",
                        ServerKind::Origin => "origin",
                    }
                    .into(),
                    answers: c.answers,
                };
                if serde_json::to_writer(&mut out, &rec).is_ok() {
                    out.push(b'\n');
                    answers += c.answers;
                }
            }
        }
        for r in &mut self.retired {
            r.1 -= 1;
        }
        self.retired.retain(|r| r.1 > 0);
        self.from_ms = now;
        self.sink.write_lines(&out);
        answers
    }
}

/// Starts the thread that drains every `interval` (at least [`MIN_INTERVAL`]) until the
/// server stops; the caller drains once more after the query workers have stopped.
pub fn start(
    log: Arc<std::sync::Mutex<DnsLog>>,
    shared: Arc<Shared>,
    interval: Duration,
) -> std::io::Result<JoinHandle<()>> {
    let interval = interval.max(MIN_INTERVAL);
    std::thread::Builder::new()
        .name("dns-log".into())
        .spawn(move || {
            let mut last = Instant::now();
            while !shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= interval {
                    last = Instant::now();
                    let catalog = shared.table.load().catalog.clone();
                    log.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .drain(&catalog);
                }
            }
        })
}
