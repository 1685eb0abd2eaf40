//! The metric table: what probes reported about each server, time-stamped, with replay protection.
//!
//! Every figure keeps the time it was measured (the probe's clock, unix ms). A figure
//! older than `probes.stale_after` counts as unknown; so does a server nobody reported.
//! Reports are authenticated (HMAC) before they are read, and each sender's reports must
//! arrive in increasing `(sent_at, seq)` order: an older or repeated one is a replay.
//! Several probes may report the same server; reads combine the fresh figures of all of
//! them (majority for health, mean for load and loss, freshest for latency).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use probe::report::{Health, Report, ReportError};
use serde::Serialize;

/// Reports or figures stamped further than this in the future are refused (clock skew).
pub const MAX_FUTURE_MS: u64 = 5_000;

/// Current unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A figure and when it was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamped<T> {
    pub value: T,
    pub at_ms: u64,
}

/// What one sender last said about one server.
#[derive(Debug, Clone, Default)]
struct Figures {
    health: Option<Stamped<Health>>,
    load: Option<Stamped<f32>>,
    loss: Option<Stamped<f32>>,
    rtt: Option<Stamped<f32>>,
    latency: HashMap<String, Stamped<f32>>,
}

fn newer<T>(slot: &mut Option<Stamped<T>>, value: Option<T>, at_ms: u64) {
    if let Some(value) = value
        && slot.as_ref().is_none_or(|s| s.at_ms <= at_ms)
    {
        *slot = Some(Stamped { value, at_ms });
    }
}

/// Health of a server as the fresh reports say.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum RawHealth {
    Up { availability: f32 },
    Down,
    Unknown,
}

/// Counters of report handling, shared with the admin listener.
#[derive(Debug, Default)]
pub struct ReportCounters {
    pub accepted: AtomicU64,
    pub bad_mac: AtomicU64,
    pub malformed: AtomicU64,
    pub bad_version: AtomicU64,
    pub replayed: AtomicU64,
    pub stale: AtomicU64,
    pub future: AtomicU64,
    pub entries: AtomicU64,
    pub unknown_server: AtomicU64,
    pub unknown_view: AtomicU64,
    pub stale_entries: AtomicU64,
}

impl ReportCounters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Snapshot for display.
    pub fn snapshot(&self) -> ReportCountersSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReportCountersSnapshot {
            accepted: g(&self.accepted),
            bad_mac: g(&self.bad_mac),
            malformed: g(&self.malformed),
            bad_version: g(&self.bad_version),
            replayed: g(&self.replayed),
            stale: g(&self.stale),
            future: g(&self.future),
            entries: g(&self.entries),
            unknown_server: g(&self.unknown_server),
            unknown_view: g(&self.unknown_view),
            stale_entries: g(&self.stale_entries),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReportCountersSnapshot {
    pub accepted: u64,
    pub bad_mac: u64,
    pub malformed: u64,
    pub bad_version: u64,
    pub replayed: u64,
    pub stale: u64,
    pub future: u64,
    pub entries: u64,
    pub unknown_server: u64,
    pub unknown_view: u64,
    pub stale_entries: u64,
}

/// Why a datagram was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("replayed or out-of-order report from {sender}")]
    Replayed { sender: String },
    #[error("report from {sender} was sent {age_ms} ms ago, older than the stale limit")]
    Stale { sender: String, age_ms: u64 },
    #[error("report from {sender} is stamped {ahead_ms} ms in the future")]
    Future { sender: String, ahead_ms: u64 },
}

/// Figures for every known server, from every sender.
#[derive(Debug)]
pub struct MetricsTable {
    key: Vec<u8>,
    stale_after_ms: u64,
    /// Server id → sender → figures. Only servers of the catalog are kept.
    servers: HashMap<String, HashMap<String, Figures>>,
    /// View names figures may refer to.
    views: Vec<String>,
    /// Last `(sent_at, seq)` accepted per sender.
    last: HashMap<String, (u64, u64)>,
    counters: std::sync::Arc<ReportCounters>,
}

impl MetricsTable {
    /// A table for the servers `server_ids` and views `views`, trusting reports
    /// authenticated with `key`.
    pub fn new(
        key: &[u8],
        stale_after_ms: u64,
        server_ids: impl IntoIterator<Item = String>,
        views: Vec<String>,
    ) -> MetricsTable {
        MetricsTable {
            key: key.to_vec(),
            stale_after_ms,
            servers: server_ids
                .into_iter()
                .map(|id| (id, HashMap::new()))
                .collect(),
            views,
            last: HashMap::new(),
            counters: Default::default(),
        }
    }

    /// The table of a reloaded config: what this one knows of the servers and views that
    /// stay is kept (figures, replay guards, counters); the rest is dropped.
    pub fn carry_over(
        &self,
        key: &[u8],
        stale_after_ms: u64,
        server_ids: impl IntoIterator<Item = String>,
        views: Vec<String>,
    ) -> MetricsTable {
        let servers = server_ids
            .into_iter()
            .map(|id| {
                let mut figures = self.servers.get(&id).cloned().unwrap_or_default();
                for f in figures.values_mut() {
                    f.latency.retain(|v, _| views.contains(v));
                }
                (id, figures)
            })
            .collect();
        MetricsTable {
            key: key.to_vec(),
            stale_after_ms,
            servers,
            views,
            last: self.last.clone(),
            counters: self.counters.clone(),
        }
    }

    pub fn counters(&self) -> std::sync::Arc<ReportCounters> {
        self.counters.clone()
    }

    /// Verifies and applies one datagram; returns how many entries were applied.
    pub fn ingest(&mut self, datagram: &[u8], now_ms: u64) -> Result<usize, Rejected> {
        let c = &self.counters;
        let report = match Report::decode(datagram, &self.key) {
            Ok(r) => r,
            Err(e) => {
                ReportCounters::bump(match e {
                    ReportError::BadMac => &c.bad_mac,
                    ReportError::UnsupportedVersion(_) => &c.bad_version,
                    _ => &c.malformed,
                });
                return Err(e.into());
            }
        };
        if report.sent_at_ms > now_ms + MAX_FUTURE_MS {
            ReportCounters::bump(&c.future);
            return Err(Rejected::Future {
                ahead_ms: report.sent_at_ms - now_ms,
                sender: report.sender,
            });
        }
        let age = now_ms.saturating_sub(report.sent_at_ms);
        if age > self.stale_after_ms {
            ReportCounters::bump(&c.stale);
            return Err(Rejected::Stale {
                sender: report.sender,
                age_ms: age,
            });
        }
        let order = (report.sent_at_ms, report.seq);
        if self
            .last
            .get(&report.sender)
            .is_some_and(|&last| order <= last)
        {
            ReportCounters::bump(&c.replayed);
            return Err(Rejected::Replayed {
                sender: report.sender,
            });
        }
        self.last.insert(report.sender.clone(), order);
        ReportCounters::bump(&c.accepted);

        let mut applied = 0;
        for e in report.entries {
            ReportCounters::bump(&c.entries);
            let Some(per_sender) = self.servers.get_mut(&e.server) else {
                ReportCounters::bump(&c.unknown_server);
                continue;
            };
            if e.measured_at_ms > now_ms + MAX_FUTURE_MS
                || now_ms.saturating_sub(e.measured_at_ms) > self.stale_after_ms
            {
                ReportCounters::bump(&c.stale_entries);
                continue;
            }
            let f = per_sender.entry(report.sender.clone()).or_default();
            let at = e.measured_at_ms;
            newer(&mut f.health, e.health, at);
            newer(&mut f.load, e.load, at);
            newer(&mut f.loss, e.loss, at);
            newer(&mut f.rtt, e.rtt_ms, at);
            for (view, ms) in e.latency_ms {
                if !self.views.contains(&view) {
                    ReportCounters::bump(&c.unknown_view);
                    continue;
                }
                let slot = f.latency.entry(view).or_insert(Stamped {
                    value: ms,
                    at_ms: at,
                });
                if slot.at_ms <= at {
                    *slot = Stamped {
                        value: ms,
                        at_ms: at,
                    };
                }
            }
            applied += 1;
        }
        Ok(applied)
    }

    /// Records a latency figure derived on this server (from resolver latency probes)
    /// as if `sender` had reported it. Unknown servers and views are ignored.
    pub fn set_latency(&mut self, server: &str, sender: &str, view: &str, ms: f32, at_ms: u64) {
        if !self.views.iter().any(|v| v == view) {
            return;
        }
        if let Some(per_sender) = self.servers.get_mut(server) {
            let f = per_sender.entry(sender.to_string()).or_default();
            let slot = f
                .latency
                .entry(view.to_string())
                .or_insert(Stamped { value: ms, at_ms });
            if slot.at_ms <= at_ms {
                *slot = Stamped { value: ms, at_ms };
            }
        }
    }

    fn fresh<T: Copy>(&self, s: &Stamped<T>, now_ms: u64) -> bool {
        now_ms.saturating_sub(s.at_ms) <= self.stale_after_ms && s.at_ms <= now_ms + MAX_FUTURE_MS
    }

    fn each<'a, T: Copy + 'a>(
        &'a self,
        server: &str,
        now_ms: u64,
        pick: impl Fn(&'a Figures) -> Option<&'a Stamped<T>> + 'a,
    ) -> impl Iterator<Item = Stamped<T>> + 'a {
        self.servers
            .get(server)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(move |f| pick(f).copied())
            .filter(move |s| self.fresh(s, now_ms))
    }

    /// Health from fresh reports: down if most reporters say down.
    pub fn health(&self, server: &str, now_ms: u64) -> RawHealth {
        let (mut up, mut down, mut avail) = (0u32, 0u32, 0f32);
        for s in self.each(server, now_ms, |f| f.health.as_ref()) {
            if s.value.up {
                up += 1;
                avail += s.value.availability;
            } else {
                down += 1;
            }
        }
        match (up, down) {
            (0, 0) => RawHealth::Unknown,
            (u, d) if d > u => RawHealth::Down,
            (u, _) => RawHealth::Up {
                availability: avail / u as f32,
            },
        }
    }

    fn mean(it: impl Iterator<Item = Stamped<f32>>) -> Option<Stamped<f32>> {
        let (mut n, mut sum, mut newest) = (0u32, 0f32, 0u64);
        for s in it {
            n += 1;
            sum += s.value;
            newest = newest.max(s.at_ms);
        }
        (n > 0).then(|| Stamped {
            value: sum / n as f32,
            at_ms: newest,
        })
    }

    /// Mean fresh load.
    pub fn load(&self, server: &str, now_ms: u64) -> Option<Stamped<f32>> {
        Self::mean(self.each(server, now_ms, |f| f.load.as_ref()))
    }

    /// Mean fresh packet loss.
    pub fn loss(&self, server: &str, now_ms: u64) -> Option<Stamped<f32>> {
        Self::mean(self.each(server, now_ms, |f| f.loss.as_ref()))
    }

    /// Lowest fresh service response time.
    pub fn rtt(&self, server: &str, now_ms: u64) -> Option<Stamped<f32>> {
        self.each(server, now_ms, |f| f.rtt.as_ref())
            .min_by(|a, b| a.value.total_cmp(&b.value))
    }

    /// Freshest latency from `server` to clients of `view`.
    pub fn latency(&self, server: &str, view: &str, now_ms: u64) -> Option<Stamped<f32>> {
        self.each(server, now_ms, move |f| f.latency.get(view))
            .max_by_key(|s| s.at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe::report::Entry;

    const KEY: &[u8] = b"0123456789abcdef";

    fn table() -> MetricsTable {
        MetricsTable::new(
            KEY,
            5_000,
            ["a".to_string(), "b".to_string()],
            vec!["eu".into()],
        )
    }

    fn report(sender: &str, seq: u64, sent_at: u64, entries: Vec<Entry>) -> Vec<u8> {
        Report {
            sender: sender.into(),
            seq,
            sent_at_ms: sent_at,
            entries,
        }
        .encode(KEY)
        .unwrap()
    }

    fn load(server: &str, at: u64, v: f32) -> Entry {
        Entry {
            server: server.into(),
            measured_at_ms: at,
            load: Some(v),
            ..Entry::default()
        }
    }

    #[test]
    fn figures_age_out() {
        let mut t = table();
        t.ingest(
            &report("p", 1, 10_000, vec![load("a", 10_000, 0.5)]),
            10_000,
        )
        .unwrap();
        assert_eq!(t.load("a", 10_000).unwrap().value, 0.5);
        assert_eq!(t.load("a", 15_000).unwrap().value, 0.5);
        assert!(t.load("a", 15_001).is_none());
        assert_eq!(t.health("a", 10_000), RawHealth::Unknown);
    }

    #[test]
    fn replays_and_old_reports_are_refused_and_counted() {
        let mut t = table();
        let r = report("p", 1, 10_000, vec![load("a", 10_000, 0.5)]);
        t.ingest(&r, 10_000).unwrap();
        assert!(matches!(
            t.ingest(&r, 10_001),
            Err(Rejected::Replayed { .. })
        ));
        let older = report("p", 9, 9_000, vec![load("a", 9_000, 0.1)]);
        assert!(matches!(
            t.ingest(&older, 10_001),
            Err(Rejected::Replayed { .. })
        ));
        // A restarted probe starts its sequence again but its clock has moved on.
        t.ingest(
            &report("p", 0, 11_000, vec![load("a", 11_000, 0.7)]),
            11_000,
        )
        .unwrap();
        assert_eq!(t.load("a", 11_000).unwrap().value, 0.7);
        let stale = report("q", 1, 1_000, vec![load("a", 1_000, 0.1)]);
        assert!(matches!(
            t.ingest(&stale, 11_000),
            Err(Rejected::Stale { .. })
        ));
        let future = report("q", 1, 20_000, vec![]);
        assert!(matches!(
            t.ingest(&future, 11_000),
            Err(Rejected::Future { .. })
        ));
        let s = t.counters().snapshot();
        assert_eq!((s.accepted, s.replayed, s.stale, s.future), (2, 2, 1, 1));
    }

    #[test]
    fn wrong_key_is_counted() {
        let mut t = table();
        let forged = Report {
            sender: "p".into(),
            seq: 1,
            sent_at_ms: 10_000,
            entries: vec![load("a", 10_000, 0.9)],
        }
        .encode(b"not the key at all")
        .unwrap();
        assert!(matches!(
            t.ingest(&forged, 10_000),
            Err(Rejected::Report(ReportError::BadMac))
        ));
        assert_eq!(t.counters().snapshot().bad_mac, 1);
        assert!(t.load("a", 10_000).is_none());
    }

    #[test]
    fn unknown_servers_and_views_are_skipped() {
        let mut t = table();
        let mut e = load("a", 10_000, 0.2);
        e.latency_ms = vec![("eu".into(), 12.0), ("mars".into(), 1.0)];
        let n = t
            .ingest(
                &report("p", 1, 10_000, vec![e, load("zz", 10_000, 0.1)]),
                10_000,
            )
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(t.latency("a", "eu", 10_000).unwrap().value, 12.0);
        assert!(t.latency("a", "mars", 10_000).is_none());
        let s = t.counters().snapshot();
        assert_eq!((s.unknown_server, s.unknown_view), (1, 1));
    }

    #[test]
    fn health_is_the_majority_of_fresh_reporters() {
        let mut t = table();
        let h = |up| Entry {
            server: "a".into(),
            measured_at_ms: 10_000,
            health: Some(Health {
                up,
                availability: if up { 1.0 } else { 0.0 },
            }),
            ..Entry::default()
        };
        t.ingest(&report("p1", 1, 10_000, vec![h(false)]), 10_000)
            .unwrap();
        assert_eq!(t.health("a", 10_000), RawHealth::Down);
        t.ingest(&report("p2", 1, 10_000, vec![h(true)]), 10_000)
            .unwrap();
        assert_eq!(t.health("a", 10_000), RawHealth::Up { availability: 1.0 });
        t.ingest(&report("p3", 1, 10_000, vec![h(false)]), 10_000)
            .unwrap();
        assert_eq!(t.health("a", 10_000), RawHealth::Down);
    }
}
