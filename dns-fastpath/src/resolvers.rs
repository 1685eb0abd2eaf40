//! Resolvers the DNS server has seen, their latency from every POP's probe, and the view each one joins.
//!
//! The server asks the latency probe of every POP (`[pops.probe]`) to measure its round
//! trip to each resolver it keeps seeing: batched (64 addresses per request),
//! deduplicated, rate-limited (`probes.resolver_rate` addresses per second) and refreshed
//! every `probes.resolver_refresh`. A resolver with fresh figures joins the dynamic view
//! `near:<pop>` of the POP it is closest to; a challenger must be 10 % closer to move it,
//! and a resolver whose figures go stale falls back to the view its address prefix gives.
//!
//! From the figures, the latency from each POP to each view (configured or dynamic) is the
//! median over the view's resolvers; with `probes.sum_latencies` the probe's own latency
//! to this DNS server is added (the seed's "sum of latencies"). These go into the metric
//! table as latencies of the POP's cache, so the selector ranks POPs for a view by them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use popnet_config::ProbeSettings;
use probe::latency::{LatencyRequest, LatencyResponse, MAX_ADDRS_PER_REQUEST};
use serde::Serialize;

use crate::catalog::{Catalog, NearView};
use crate::views::{ViewId, Views};

/// A challenger POP must be this much closer to move a resolver.
const MOVE_MARGIN: f64 = 0.9;
/// The sender id of latency figures derived here.
pub const SENDER: &str = "resolver-latency";

/// One POP's measurement of one address.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rtt {
    /// None: the probe got no answer.
    us: Option<u32>,
    at_ms: u64,
}

#[derive(Debug, Clone)]
struct Resolver {
    last_seen: Instant,
    requested_at: Option<Instant>,
    /// Per near view (index into `near`).
    rtt: Vec<Option<Rtt>>,
    /// The dynamic view it joined, if any.
    view: Option<ViewId>,
}

/// Counters of the resolver tracker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ResolverStats {
    pub tracked: usize,
    pub assigned: usize,
    pub requests_sent: u64,
    pub addresses_requested: u64,
    pub responses: u64,
    pub results: u64,
    pub unreachable: u64,
    pub bad_responses: u64,
    pub evicted: u64,
    pub rate_limited: u64,
}

/// One resolver as the admin listener shows it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ResolverView {
    pub address: IpAddr,
    /// The view its address prefix gives.
    pub prefix_view: String,
    /// The dynamic view it joined, if its figures are fresh.
    pub near_view: Option<String>,
    pub seen_s_ago: u64,
    /// Per probing POP: the last round trip (None: unreachable or not measured yet).
    pub rtt: Vec<ResolverRtt>,
}

/// One POP's last measurement of one resolver.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ResolverRtt {
    pub pop: String,
    pub ms: Option<f32>,
    /// Age of the measurement; None if never measured.
    pub age_s: Option<u64>,
    /// Older than `probes.resolver_stale_after`: counted as unknown.
    pub stale: bool,
}

/// The resolver tracker of one DNS server.
#[derive(Debug)]
pub struct Resolvers {
    near: Vec<NearView>,
    refresh: Duration,
    stale_after_ms: u64,
    max: usize,
    rate: f64,
    tokens: f64,
    refilled: Instant,
    sum_latencies: bool,
    /// This server's own address, measured by the probes for `sum_latencies`.
    own: Option<IpAddr>,
    own_rtt: Vec<Option<Rtt>>,
    own_requested: Option<Instant>,
    entries: HashMap<IpAddr, Resolver>,
    sender: String,
    key: Vec<u8>,
    seq: u64,
    stats: ResolverStats,
}

fn fresh(r: &Option<Rtt>, now_ms: u64, stale_after_ms: u64) -> Option<u32> {
    r.filter(|r| now_ms.saturating_sub(r.at_ms) <= stale_after_ms)
        .and_then(|r| r.us)
}

impl Resolvers {
    /// A tracker for the POP probes of `cat`; `sender` is this server's POP name, `own`
    /// its public address.
    pub fn new(
        cat: &Catalog,
        probes: &ProbeSettings,
        sender: &str,
        own: Option<IpAddr>,
    ) -> Resolvers {
        Resolvers {
            near: cat.near_views.clone(),
            refresh: probes.resolver_refresh,
            stale_after_ms: probes.resolver_stale_after.as_millis() as u64,
            max: probes.resolver_max,
            rate: f64::from(probes.resolver_rate),
            tokens: f64::from(probes.resolver_rate),
            refilled: Instant::now(),
            sum_latencies: probes.sum_latencies,
            own,
            own_rtt: vec![None; cat.near_views.len()],
            own_requested: None,
            entries: HashMap::new(),
            sender: sender.to_string(),
            key: probes.report_key.as_bytes().to_vec(),
            seq: 0,
            stats: ResolverStats::default(),
        }
    }

    /// True if there is anything to measure with (some POP runs a probe).
    pub fn active(&self) -> bool {
        !self.near.is_empty()
    }

    /// Notes a query from `addr`.
    pub fn seen(&mut self, addr: IpAddr, now: Instant) {
        if !self.active() || Some(addr) == self.own {
            return;
        }
        let n = self.near.len();
        match self.entries.get_mut(&addr) {
            Some(r) => r.last_seen = now,
            None => {
                if self.entries.len() >= self.max {
                    self.evict_oldest();
                }
                self.entries.insert(
                    addr,
                    Resolver {
                        last_seen: now,
                        requested_at: None,
                        rtt: vec![None; n],
                        view: None,
                    },
                );
            }
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, r)| r.last_seen)
            .map(|(a, _)| *a)
        {
            self.entries.remove(&oldest);
            self.stats.evicted += 1;
        }
    }

    /// Requests due now (each goes to every POP's probe), within the rate limit.
    pub fn due_requests(&mut self, now: Instant, now_ms: u64) -> Vec<(SocketAddr, Vec<u8>)> {
        if !self.active() {
            return Vec::new();
        }
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        // Forget resolvers not seen for the stale time.
        let stale = Duration::from_millis(self.stale_after_ms);
        self.entries
            .retain(|_, r| now.duration_since(r.last_seen) <= stale);

        let mut due: Vec<IpAddr> = Vec::new();
        if let Some(own) = self.own
            && self
                .own_requested
                .is_none_or(|t| now.duration_since(t) >= self.refresh)
        {
            due.push(own);
            self.own_requested = Some(now);
        }
        let mut waiting = 0u64;
        for (addr, r) in &mut self.entries {
            if r.requested_at
                .is_some_and(|t| now.duration_since(t) < self.refresh)
            {
                continue;
            }
            if self.tokens < 1.0 {
                waiting += 1;
                continue;
            }
            self.tokens -= 1.0;
            r.requested_at = Some(now);
            due.push(*addr);
        }
        self.stats.rate_limited += waiting;
        let mut out = Vec::new();
        for chunk in due.chunks(MAX_ADDRS_PER_REQUEST) {
            self.seq += 1;
            let req = LatencyRequest {
                sender: self.sender.clone(),
                seq: self.seq,
                sent_at_ms: now_ms,
                addrs: chunk.to_vec(),
            };
            match req.encode(&self.key) {
                Ok(bytes) => {
                    self.stats.requests_sent += 1;
                    self.stats.addresses_requested += chunk.len() as u64;
                    for nv in &self.near {
                        out.push((nv.probe, bytes.clone()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode a latency request"),
            }
        }
        out
    }

    /// Takes a probe's (already authenticated) answer.
    pub fn on_response(&mut self, resp: &LatencyResponse) {
        let Some(i) = self.near.iter().position(|n| n.pop == resp.sender) else {
            self.stats.bad_responses += 1;
            return;
        };
        self.stats.responses += 1;
        for r in &resp.results {
            self.stats.results += 1;
            if r.rtt_us.is_none() {
                self.stats.unreachable += 1;
            }
            let rtt = Some(Rtt {
                us: r.rtt_us,
                at_ms: r.measured_at_ms,
            });
            if Some(r.addr) == self.own {
                self.own_rtt[i] = rtt;
            } else if let Some(e) = self.entries.get_mut(&r.addr) {
                e.rtt[i] = rtt;
            }
        }
    }

    /// Decodes and takes a latency response datagram; false if it does not verify.
    pub fn take_datagram(&mut self, datagram: &[u8]) -> bool {
        match LatencyResponse::decode(datagram, &self.key) {
            Ok(r) => {
                self.on_response(&r);
                true
            }
            Err(e) => {
                self.stats.bad_responses += 1;
                tracing::debug!(error = %e, "latency response refused");
                false
            }
        }
    }

    /// Re-evaluates which dynamic view each resolver belongs to. Returns the new map of
    /// resolver → view if it changed.
    pub fn assign(&mut self, now_ms: u64) -> Option<HashMap<IpAddr, ViewId>> {
        let mut changed = false;
        // With sum_latencies a POP is as far as its probe's round trip to the resolver
        // plus to this server (unknown counts as nothing extra).
        let own: Vec<u32> = self
            .own_rtt
            .iter()
            .map(|x| {
                if self.sum_latencies {
                    fresh(x, now_ms, self.stale_after_ms).unwrap_or(0)
                } else {
                    0
                }
            })
            .collect();
        for r in self.entries.values_mut() {
            let rtts: Vec<Option<u32>> = r
                .rtt
                .iter()
                .zip(&own)
                .map(|(x, own)| {
                    fresh(x, now_ms, self.stale_after_ms).map(|us| us.saturating_add(*own))
                })
                .collect();
            let best = rtts
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|us| (i, us)))
                .min_by_key(|&(i, us)| (us, i));
            let next = match (best, r.view) {
                (None, _) => None,
                (Some((bi, bus)), Some(cur)) => {
                    let ci = self.near.iter().position(|n| n.view == cur);
                    match ci.and_then(|ci| rtts[ci]) {
                        Some(cus) if f64::from(bus) >= f64::from(cus) * MOVE_MARGIN => Some(cur),
                        _ => Some(self.near[bi].view),
                    }
                }
                (Some((bi, _)), None) => Some(self.near[bi].view),
            };
            if next != r.view {
                r.view = next;
                changed = true;
            }
        }
        changed.then(|| self.assignments())
    }

    /// Every resolver's dynamic view.
    pub fn assignments(&self) -> HashMap<IpAddr, ViewId> {
        self.entries
            .iter()
            .filter_map(|(a, r)| r.view.map(|v| (*a, v)))
            .collect()
    }

    /// The latency from each probing POP to each view with measured resolvers: (POP name,
    /// view name, milliseconds, newest measurement). A resolver counts toward its dynamic
    /// view if it has one and toward its configured (prefix) view.
    pub fn view_latencies(&self, views: &Views, now_ms: u64) -> Vec<(String, String, f32, u64)> {
        let mut per: HashMap<(usize, ViewId), (Vec<u32>, u64)> = HashMap::new();
        for (addr, r) in &self.entries {
            let prefix_view = views.lookup(*addr).view;
            for (i, rtt) in r.rtt.iter().enumerate() {
                let Some(us) = fresh(rtt, now_ms, self.stale_after_ms) else {
                    continue;
                };
                let at = rtt.map_or(0, |x| x.at_ms);
                for v in [Some(prefix_view), r.view].into_iter().flatten() {
                    let e = per.entry((i, v)).or_default();
                    e.0.push(us);
                    e.1 = e.1.max(at);
                }
            }
        }
        let mut out = Vec::new();
        for ((i, v), (mut us, at)) in per {
            us.sort_unstable();
            let median = us[us.len() / 2];
            let own = if self.sum_latencies {
                fresh(&self.own_rtt[i], now_ms, self.stale_after_ms).unwrap_or(0)
            } else {
                0
            };
            out.push((
                self.near[i].pop.clone(),
                views.name(v).to_string(),
                (median + own) as f32 / 1000.0,
                at,
            ));
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Every tracked resolver, by address.
    pub fn list(&self, views: &Views, now: Instant, now_ms: u64) -> Vec<ResolverView> {
        let mut out: Vec<ResolverView> = self
            .entries
            .iter()
            .map(|(addr, r)| ResolverView {
                address: *addr,
                prefix_view: views.name(views.lookup(*addr).view).to_string(),
                near_view: r.view.map(|v| views.name(v).to_string()),
                seen_s_ago: now.duration_since(r.last_seen).as_secs(),
                rtt: self
                    .near
                    .iter()
                    .zip(&r.rtt)
                    .map(|(nv, m)| ResolverRtt {
                        pop: nv.pop.clone(),
                        ms: m.and_then(|m| m.us).map(|us| us as f32 / 1000.0),
                        age_s: m.map(|m| now_ms.saturating_sub(m.at_ms) / 1000),
                        stale: m
                            .is_some_and(|m| now_ms.saturating_sub(m.at_ms) > self.stale_after_ms),
                    })
                    .collect(),
            })
            .collect();
        out.sort_by_key(|r| r.address);
        out
    }

    pub fn stats(&self) -> ResolverStats {
        ResolverStats {
            tracked: self.entries.len(),
            assigned: self.entries.values().filter(|r| r.view.is_some()).count(),
            ..self.stats.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use popnet_config::Config;
    use probe::latency::LatencyResult;

    /// Three POPs with probes; views: the config's plus near:a, near:b, near:c.
    fn setup(extra: &str) -> (Catalog, Resolvers, Vec<u8>) {
        let mut text = String::from(popnet_config::DEMO_TOML)
            .replace("[[pops]]\nname = \"local\"", "[[pops]]\nname = \"a\"");
        text = text.replace("recovery = \"2s\"", &format!("recovery = \"2s\"\nresolver_refresh = \"10s\"\nresolver_stale_after = \"30s\"\n{extra}"));
        for (name, port) in [("b", 6001), ("c", 6002)] {
            text.push_str(&format!("\n[[pops]]\nname = \"{name}\"\nregion = \"r{name}\"\n[pops.probe]\nlisten = \"127.0.0.1:{port}\"\n"));
        }
        let cfg = Config::from_toml(&text, "t").unwrap();
        let cat = Catalog::compile(&cfg).unwrap();
        let r = Resolvers::new(&cat, &cfg.probes, "a", Some("192.0.2.53".parse().unwrap()));
        let key = cfg.probes.report_key.as_bytes().to_vec();
        (cat, r, key)
    }

    fn answer(r: &mut Resolvers, pop: &str, results: &[(&str, Option<u32>)], at_ms: u64) {
        r.on_response(&LatencyResponse {
            sender: pop.into(),
            seq: 1,
            sent_at_ms: at_ms,
            results: results
                .iter()
                .map(|(a, us)| LatencyResult {
                    addr: a.parse().unwrap(),
                    rtt_us: *us,
                    measured_at_ms: at_ms,
                })
                .collect(),
        });
    }

    #[test]
    fn requests_are_batched_to_every_probe_and_rate_limited() {
        let (cat, mut r, key) = setup("resolver_rate = 100");
        assert_eq!(cat.near_views.len(), 3);
        let t = Instant::now();
        for i in 0..150u32 {
            r.seen(IpAddr::from(std::net::Ipv4Addr::from(0xc6336400 + i)), t);
        }
        r.seen("192.0.2.53".parse().unwrap(), t); // our own address is not a resolver
        let out = r.due_requests(t, 1_000);
        // 100 addresses allowed now plus our own: two requests of <= 64, to each of 3 probes.
        assert_eq!(out.len(), 2 * 3);
        let mut addrs = std::collections::HashSet::new();
        for (probe, bytes) in &out {
            assert!(cat.near_views.iter().any(|n| n.probe == *probe));
            let req = LatencyRequest::decode(bytes, &key).unwrap();
            assert!(req.addrs.len() <= MAX_ADDRS_PER_REQUEST);
            addrs.extend(req.addrs);
        }
        assert_eq!(addrs.len(), 101);
        assert!(addrs.contains(&"192.0.2.53".parse().unwrap()));
        assert_eq!(r.stats().rate_limited, 50);
        // Nothing is asked again before the refresh; the waiting ones come with new tokens.
        let out = r.due_requests(t + Duration::from_secs(1), 2_000);
        let n: usize = out
            .iter()
            .filter(|(p, _)| *p == cat.near_views[0].probe)
            .map(|(_, b)| LatencyRequest::decode(b, &key).unwrap().addrs.len())
            .sum();
        assert_eq!(n, 50);
        assert!(r.due_requests(t + Duration::from_secs(2), 3_000).is_empty());
        assert_eq!(
            r.due_requests(t + Duration::from_secs(11), 11_000).len(),
            6,
            "refreshed after resolver_refresh"
        );
    }

    #[test]
    fn a_resolver_joins_its_nearest_pop_with_hysteresis_and_falls_back_when_stale() {
        let (cat, mut r, _) = setup("");
        let t = Instant::now();
        let res = "198.51.100.7";
        r.seen(res.parse().unwrap(), t);
        let near = |pop: &str| cat.near_views.iter().find(|n| n.pop == pop).unwrap().view;
        answer(&mut r, "a", &[(res, Some(40_000))], 1_000);
        answer(&mut r, "b", &[(res, Some(10_000))], 1_000);
        answer(&mut r, "c", &[(res, None)], 1_000);
        let m = r.assign(1_000).expect("placed");
        assert_eq!(m[&res.parse::<IpAddr>().unwrap()], near("b"));
        // 5 % closer is not enough to move; 20 % is.
        answer(&mut r, "a", &[(res, Some(9_500))], 2_000);
        assert!(r.assign(2_000).is_none());
        answer(&mut r, "a", &[(res, Some(8_000))], 3_000);
        assert_eq!(
            r.assign(3_000).unwrap()[&res.parse::<IpAddr>().unwrap()],
            near("a")
        );
        // Figures older than resolver_stale_after (30 s): back to the configured view.
        let m = r.assign(40_000).expect("changed");
        assert!(m.is_empty());
    }

    #[test]
    fn summed_latencies_place_a_resolver_by_the_whole_path() {
        for (sum, want) in [(false, "a"), (true, "b")] {
            let (cat, mut r, _) = setup(if sum { "sum_latencies = true" } else { "" });
            let res = "198.51.100.9";
            r.seen(res.parse().unwrap(), Instant::now());
            // a is nearer the resolver, but 5 ms from this server; b is next to it.
            answer(
                &mut r,
                "a",
                &[(res, Some(10_000)), ("192.0.2.53", Some(5_000))],
                1_000,
            );
            answer(
                &mut r,
                "b",
                &[(res, Some(12_000)), ("192.0.2.53", Some(100))],
                1_000,
            );
            let m = r.assign(1_000).expect("placed");
            let near = cat.near_views.iter().find(|n| n.pop == want).unwrap().view;
            assert_eq!(
                m[&res.parse::<IpAddr>().unwrap()],
                near,
                "sum_latencies = {sum}"
            );
        }
    }

    #[test]
    fn view_latency_is_the_median_plus_the_probe_to_server_latency_when_summed() {
        for sum in [false, true] {
            let (cat, mut r, _) = setup(if sum { "sum_latencies = true" } else { "" });
            let t = Instant::now();
            let rs = ["198.51.100.1", "198.51.100.2", "198.51.100.3"];
            for a in rs {
                r.seen(a.parse().unwrap(), t);
            }
            answer(
                &mut r,
                "a",
                &[
                    (rs[0], Some(10_000)),
                    (rs[1], Some(30_000)),
                    (rs[2], Some(20_000)),
                    ("192.0.2.53", Some(5_000)),
                ],
                1_000,
            );
            answer(
                &mut r,
                "b",
                &[
                    (rs[0], Some(50_000)),
                    (rs[1], Some(50_000)),
                    (rs[2], Some(50_000)),
                ],
                1_000,
            );
            r.assign(1_000);
            let l = r.view_latencies(&cat.views, 1_000);
            let get =
                |pop: &str, view: &str| l.iter().find(|x| x.0 == pop && x.1 == view).map(|x| x.2);
            let own = if sum { 5.0 } else { 0.0 };
            // All three resolvers sit in the loopback-less default view and in near:a.
            assert_eq!(get("a", "near:a"), Some(20.0 + own));
            assert_eq!(get("b", "near:a"), Some(50.0));
            assert_eq!(get("a", "default"), Some(20.0 + own));
            assert_eq!(get("a", "near:b"), None, "no resolver is nearest to b");
        }
    }

    #[test]
    fn the_least_recently_seen_resolver_goes_when_full() {
        let (_, mut r, _) = setup("resolver_max = 2");
        let t = Instant::now();
        r.seen("198.51.100.1".parse().unwrap(), t);
        r.seen("198.51.100.2".parse().unwrap(), t + Duration::from_secs(1));
        r.seen("198.51.100.1".parse().unwrap(), t + Duration::from_secs(2));
        r.seen("198.51.100.3".parse().unwrap(), t + Duration::from_secs(3));
        assert_eq!(r.stats().tracked, 2);
        assert_eq!(r.stats().evicted, 1);
    }
}
