//! Which origin a fetch goes to: the `OriginSelector` trait, and the config-driven selector used until probes report.
//!
//! The fetcher asks [`OriginSelector::rank`] for candidates (one per origin address),
//! best first, and tries them in that order: a connect failure moves on to the next.
//! It reports every attempt back through [`OriginSelector::record`], which is how
//! passive health works today.
//!
//! [`ConfigSelector`] ranks origins by `cost / weight` from the config (lower first),
//! spreading requests over the origins that tie for best in proportion to their
//! weights; an address whose connect failed in the last [`DOWN_FOR`] is ranked after
//! every healthy one (it is still tried last rather than never, so a recovered origin
//! comes back). **Where probe metrics plug in**: the probe daemon's reports (the
//! `customer/origin` server ids of `probe::report`, as `dns-fastpath`'s metrics table
//! keeps them) give each origin health, load and latency *from this POP*; a
//! `ProbeSelector` implementing this trait ranks by the same weighted score as the DNS
//! selector over those figures, falling back to this selector's order for origins
//! without fresh figures. `CacheServer::start` is the one place that picks the selector.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::routes::Route;

/// How long an address that refused a connection is ranked last.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

/// One address of one origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub origin: std::sync::Arc<str>,
    pub addr: SocketAddr,
}

/// The result of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Connected (and how long connecting took).
    Connected(Duration),
    /// Could not connect.
    ConnectFailed,
    /// Connected but the response did not come in time, or was broken.
    Failed,
}

/// Ranks a route's origins for one fetch.
///
/// Contract: `rank` returns every address of every origin of the route exactly once,
/// best first; it is called once per fetch and must be cheap (no I/O). `record` is
/// called after every attempt, from fetcher threads.
pub trait OriginSelector: Send + Sync {
    fn rank(&self, route: &Route) -> Vec<Candidate>;
    fn record(&self, candidate: &Candidate, attempt: Attempt);
}

/// Ranks by config cost and weight, with passive health from connect failures.
#[derive(Default)]
pub struct ConfigSelector {
    down: Mutex<HashMap<SocketAddr, Instant>>,
    turn: AtomicU64,
}

impl ConfigSelector {
    pub fn new() -> ConfigSelector {
        ConfigSelector::default()
    }

    fn is_down(&self, addr: &SocketAddr, now: Instant) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .is_some_and(|&t| now < t)
    }
}

impl OriginSelector for ConfigSelector {
    fn rank(&self, route: &Route) -> Vec<Candidate> {
        let score = |i: usize| {
            let o = &route.origins[i];
            o.cost / o.weight.max(f64::MIN_POSITIVE)
        };
        let mut order: Vec<usize> = (0..route.origins.len()).collect();
        order.sort_by(|&a, &b| score(a).total_cmp(&score(b)));
        // Spread over the origins tied for best, in proportion to their weights
        // (a low-discrepancy sequence, so a short run is already well spread).
        if let Some(&first) = order.first() {
            let best = score(first);
            let tied = order
                .iter()
                .take_while(|&&i| (score(i) - best).abs() <= 1e-9 * best.abs().max(1.0))
                .count();
            if tied > 1 {
                let total: f64 = order[..tied].iter().map(|&i| route.origins[i].weight).sum();
                let n = self.turn.fetch_add(1, Ordering::Relaxed);
                let x = ((n as f64) * 0.618_033_988_749_895).fract() * total;
                let mut acc = 0.0;
                let mut pick = 0;
                for (j, &i) in order[..tied].iter().enumerate() {
                    acc += route.origins[i].weight;
                    if x < acc {
                        pick = j;
                        break;
                    }
                }
                order[..tied].rotate_left(pick);
            }
        }
        let now = Instant::now();
        let mut up = Vec::new();
        let mut down = Vec::new();
        for i in order {
            let o = &route.origins[i];
            for &addr in &o.addrs {
                let c = Candidate {
                    origin: o.name.clone(),
                    addr,
                };
                if self.is_down(&addr, now) {
                    down.push(c);
                } else {
                    up.push(c);
                }
            }
        }
        up.extend(down);
        up
    }

    fn record(&self, candidate: &Candidate, attempt: Attempt) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match attempt {
            Attempt::ConnectFailed => {
                down.insert(candidate.addr, Instant::now() + DOWN_FOR);
            }
            Attempt::Connected(_) => {
                down.remove(&candidate.addr);
            }
            Attempt::Failed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::OriginTarget;

    fn route(origins: &[(&str, &str, f64, f64)]) -> Route {
        Route {
            customer: "c".into(),
            domain: "d".into(),
            origins: origins
                .iter()
                .map(|(n, a, w, c)| OriginTarget {
                    name: (*n).into(),
                    addrs: vec![a.parse().unwrap()],
                    weight: *w,
                    cost: *c,
                })
                .collect(),
        }
    }

    #[test]
    fn cheapest_first_ties_spread_by_weight_failures_last() {
        let s = ConfigSelector::new();
        let r = route(&[
            ("dear", "127.0.0.9:1", 1.0, 5.0),
            ("a", "127.0.0.1:1", 3.0, 1.0),
            ("b", "127.0.0.2:1", 1.0, 1.0 / 3.0),
        ]);
        let mut firsts: HashMap<String, usize> = HashMap::new();
        for _ in 0..1000 {
            let c = s.rank(&r);
            assert_eq!(c.len(), 3);
            assert_eq!(&*c[2].origin, "dear");
            *firsts.entry(c[0].origin.to_string()).or_default() += 1;
        }
        // a (weight 3) and b (weight 1) tie on cost/weight: about 3:1.
        let (a, b) = (firsts["a"], firsts["b"]);
        assert!((700..=800).contains(&a) && a + b == 1000, "{firsts:?}");
        let first = s.rank(&r)[0].clone();
        s.record(&first, Attempt::ConnectFailed);
        for _ in 0..10 {
            let c = s.rank(&r);
            assert_eq!(c[2], first, "a failed address is tried last");
        }
        s.record(&first, Attempt::Connected(Duration::from_millis(1)));
        assert!(s.rank(&r)[..2].contains(&first));
    }
}
