//! The DNS log: every interval, the answers handed out per balanced domain, view, type and server become [`logship::DnsRecord`]s for the log servers.
//!
//! Answers are not logged one by one: the query workers only add to the catalog's
//! [`crate::tally::Tally`] (a relaxed atomic add per server in the answer, no lock, no
//! allocation), and this thread drains it every interval and writes one record per
//! (domain, view, type, server) that was handed out, with the interval it covers. When
//! the catalog is replaced, the old one is drained until no answer table of it can still
//! be in use. Answers sent by the XDP fast path never reach userspace: the program
//! counts each map entry's answers in a per-CPU hit counter, and before every drain the
//! growth of those is added to the same tallies ([`crate::xdp::Runtime::drain_hits`]),
//! so the records hold both paths' answers.

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
                    if let Some(x) = shared.xdp.get() {
                        x.drain_hits();
                    }
                    let catalog = shared.table.load().catalog.clone();
                    log.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .drain(&catalog);
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Mutex;

    use dns_wire::{Edns, Message, Name, Question, RClass, RType};
    use popnet_config::Config;

    use super::*;
    use crate::answer::AnswerTable;
    use crate::metrics::MetricsTable;
    use crate::respond::{Transport, respond};
    use crate::selector::Selector;

    #[derive(Default)]
    struct Collect(Mutex<Vec<u8>>);

    impl LineSink for Collect {
        fn write_lines(&self, lines: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(lines);
        }
    }

    impl Collect {
        fn take(&self) -> Vec<DnsRecord> {
            let raw = std::mem::take(&mut *self.0.lock().unwrap());
            String::from_utf8(raw)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    fn table(cfg: &Config) -> AnswerTable {
        let cat = Arc::new(Catalog::compile(cfg).unwrap());
        let metrics = MetricsTable::new(
            cfg.probes.report_key.as_bytes(),
            5_000,
            cat.servers.iter().map(|s| s.id.clone()),
            Vec::new(),
        );
        let mut sel = Selector::new(&cat, cfg.probes.recovery);
        sel.reselect(&cat, &metrics, std::time::Instant::now(), unix_ms());
        AnswerTable::build(cat, sel.selections().clone(), Default::default(), 1)
    }

    fn ask(t: &AnswerTable, name: &str, qtype: RType, n: usize) {
        let mut m = Message::default();
        m.questions.push(Question {
            name: Name::from_ascii(name).unwrap(),
            qtype,
            qclass: RClass::IN,
        });
        m.additionals.push(Edns::default().to_record());
        let q = m.encode();
        let src: IpAddr = [127, 0, 0, 1].into();
        let mut out = Vec::new();
        for _ in 0..n {
            respond(t, 1232, &q, src, Transport::Udp, &mut out);
        }
    }

    /// (domain, view, type, server, kind) → answers.
    fn sum(recs: &[DnsRecord]) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for r in recs {
            assert_eq!((r.pop.as_str(), r.customer.as_str()), ("local", "demo"));
            assert!(r.from_ms <= r.ts_ms);
            let k = format!(
                "{} {} {} {} {}",
                r.domain, r.view, r.qtype, r.server, r.server_kind
            );
            *out.entry(k).or_default() += r.answers;
        }
        out
    }

    #[test]
    fn answers_are_counted_per_domain_view_type_and_server_and_drained_once() {
        let cfg = Config::demo();
        let t = table(&cfg);
        let sink = Arc::new(Collect::default());
        let mut log = DnsLog::new("local".into(), sink.clone(), t.catalog.clone());
        ask(&t, "www.demo.example", RType::A, 3);
        // A CNAME to a balanced name counts for the name it leads to.
        ask(&t, "images.demo.example", RType::A, 2);
        ask(&t, "static.demo.example", RType::AAAA, 1);
        // No address handed out: not ours, no such name, a type without addresses.
        ask(&t, "www.example.com", RType::A, 1);
        ask(&t, "nothing.demo.example", RType::A, 1);
        ask(&t, "demo.example", RType::TXT, 1);
        assert_eq!(log.drain(&t.catalog), 6);
        let got = sum(&sink.take());
        let server = |name: &str, f: crate::catalog::Family| {
            let d = t
                .catalog
                .domains
                .iter()
                .position(|d| d.name == Name::from_ascii(name).unwrap())
                .unwrap();
            let view = t.view_of([127, 0, 0, 1].into(), false).view;
            let s = t.selections.get(d, view, f)[0];
            t.catalog.servers[s].id.clone()
        };
        let www = server("www.demo.example", Family::V4);
        let st4 = server("static.demo.example", Family::V4);
        let st6 = server("static.demo.example", Family::V6);
        let kind = |id: &str| {
            if id.contains('/') {
                "origin"
            } else {
                "pop-cache"
            }
        };
        let mut want = std::collections::BTreeMap::new();
        for (k, n) in [
            (
                format!("www.demo.example loopback A {www} {}", kind(&www)),
                3,
            ),
            (
                format!("static.demo.example loopback A {st4} {}", kind(&st4)),
                2,
            ),
            (
                format!("static.demo.example loopback AAAA {st6} {}", kind(&st6)),
                1,
            ),
        ] {
            *want.entry(k).or_default() += n;
        }
        assert_eq!(got, want);
        // Drained once: nothing new, nothing written.
        assert_eq!(log.drain(&t.catalog), 0);
        assert!(sink.take().is_empty());
    }

    #[test]
    fn answers_counted_on_a_replaced_catalog_are_still_drained() {
        let cfg = Config::demo();
        let old = table(&cfg);
        let sink = Arc::new(Collect::default());
        let mut log = DnsLog::new("local".into(), sink.clone(), old.catalog.clone());
        let new = table(&cfg);
        assert!(!Arc::ptr_eq(&old.catalog, &new.catalog));
        // A worker still on the old table, and one on the new.
        ask(&old, "www.demo.example", RType::A, 2);
        ask(&new, "www.demo.example", RType::A, 1);
        assert_eq!(log.drain(&new.catalog), 3);
        ask(&old, "www.demo.example", RType::A, 4);
        assert_eq!(log.drain(&new.catalog), 4);
        assert_eq!(sink.take().iter().map(|r| r.answers).sum::<u64>(), 7);
        // After a few drains the old catalog is let go.
        for _ in 0..RETIRED_DRAINS {
            log.drain(&new.catalog);
        }
        assert!(log.retired.is_empty());
    }
}
