//! The selector: for each balanced domain, view and address family, the servers to answer with.
//!
//! # Ranking
//! Candidates fall in three tiers: *up* (fresh reports say healthy, and it has stayed
//! up for `probes.recovery` since it last failed), *unknown* (no fresh health), and
//! *down*. A lower tier always wins; down servers are handed out only when every
//! candidate is down (failing open beats answering nothing). Within a tier the lowest
//! score wins, the score being the policy's weighted sum of:
//!
//! | term    | known                              | unknown                       |
//! |---------|------------------------------------|-------------------------------|
//! | health  | 1 − availability                   | 0.5                           |
//! | load    | load ÷ (weight ÷ heaviest weight)  | response time ÷ `probes.overload_response` (not for an origin competing with POP caches), else 0.5; ÷ (weight ÷ heaviest) |
//! | latency | ms ÷ 100 (to the view's clients)   | 0.2 same region, 1.0 other, 0.5 no region |
//! | loss    | loss × 10 (10 % loss = 1)          | 0                             |
//! | cost    | cost ÷ highest candidate cost      | (always known, from config)   |
//!
//! Ties go to the server in the view's region, then to config order, so an idle
//! network with no probes answers deterministically.
//!
//! For a static name the POP caches are the candidates; with `origin_fallback` a
//! customer origin joins only when it ranks strictly better than every POP cache (the
//! seed's "important embodiment").
//!
//! # Stability
//! *Persistence*: once chosen, an answer is kept for the domain's persistence window
//! unless one of its servers falls to a worse tier than the best now available.
//! *Hysteresis*: after the window, a challenger replaces the answer only if its score
//! is lower by more than `hysteresis` × the current score (with a floor of 0.05, so
//! tiny absolute differences never flap); a server that failed must stay up for
//! `probes.recovery` before it counts as up again.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::catalog::{Catalog, DomainId, Family, ServerIdx};
use crate::metrics::{MetricsTable, RawHealth};
use crate::views::ViewId;

/// Milliseconds of latency that weigh as much as a fully used server.
const LATENCY_SCALE_MS: f64 = 100.0;
/// Smallest score difference scale for hysteresis.
const HYSTERESIS_FLOOR: f64 = 0.05;

/// Health tier of a candidate; lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Up,
    Unknown,
    Down,
}

/// A candidate with its figures, as ranked.
#[derive(Debug, Clone, Serialize)]
pub struct Ranked {
    pub server: ServerIdx,
    pub tier: Tier,
    pub score: f64,
    pub terms: Terms,
}

/// The normalized terms of a score, for inspection.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Terms {
    pub health: f64,
    pub load: f64,
    pub latency: f64,
    pub loss: f64,
    pub cost: f64,
}

/// Per-server hysteresis on health: a server that failed is held down until it has been
/// up for the recovery time.
#[derive(Debug, Clone, Default)]
struct HealthState {
    failed: bool,
    up_since: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Sticky {
    servers: Vec<ServerIdx>,
    chosen_at: Instant,
}

/// The chosen servers for every (domain, view, family).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selections {
    /// `[domain][view][family]` → servers, best first.
    chosen: Vec<Vec<[Vec<ServerIdx>; 2]>>,
}

impl Selections {
    pub fn get(&self, d: DomainId, v: ViewId, f: Family) -> &[ServerIdx] {
        self.chosen
            .get(d)
            .and_then(|views| views.get(usize::from(v)))
            .map_or(&[], |fams| fams[f as usize].as_slice())
    }
}

/// The selection state: current answers and what keeps them stable.
#[derive(Debug)]
pub struct Selector {
    recovery: Duration,
    health: Vec<HealthState>,
    sticky: Vec<Vec<[Option<Sticky>; 2]>>,
    current: Selections,
}

impl Selector {
    pub fn new(cat: &Catalog, recovery: Duration) -> Selector {
        let views = cat.view_count();
        Selector {
            recovery,
            health: vec![HealthState::default(); cat.servers.len()],
            sticky: cat
                .domains
                .iter()
                .map(|_| (0..views).map(|_| [None, None]).collect())
                .collect(),
            current: Selections {
                chosen: cat
                    .domains
                    .iter()
                    .map(|_| (0..views).map(|_| [Vec::new(), Vec::new()]).collect())
                    .collect(),
            },
        }
    }

    pub fn selections(&self) -> &Selections {
        &self.current
    }

    /// Tier of every server now, applying recovery hysteresis.
    fn tiers(
        &mut self,
        cat: &Catalog,
        metrics: &MetricsTable,
        now: Instant,
        now_ms: u64,
    ) -> Vec<Tier> {
        cat.servers
            .iter()
            .zip(self.health.iter_mut())
            .map(|(s, h)| match metrics.health(&s.id, now_ms) {
                RawHealth::Down => {
                    h.failed = true;
                    h.up_since = None;
                    Tier::Down
                }
                RawHealth::Up { .. } if h.failed => {
                    let since = *h.up_since.get_or_insert(now);
                    if now.duration_since(since) >= self.recovery {
                        h.failed = false;
                        h.up_since = None;
                        Tier::Up
                    } else {
                        Tier::Down
                    }
                }
                RawHealth::Up { .. } => Tier::Up,
                RawHealth::Unknown => {
                    h.up_since = None;
                    Tier::Unknown
                }
            })
            .collect()
    }

    /// Ranks the candidates of one domain for one view and family, best first. Down
    /// candidates are included (last).
    pub fn rank(
        cat: &Catalog,
        metrics: &MetricsTable,
        tiers: &[Tier],
        d: DomainId,
        v: ViewId,
        f: Family,
        now_ms: u64,
    ) -> Vec<Ranked> {
        let dom = &cat.domains[d];
        let primary: Vec<ServerIdx> = dom
            .primary
            .iter()
            .copied()
            .filter(|&s| cat.servers[s].has(f))
            .collect();
        let fallback: Vec<ServerIdx> = dom
            .fallback
            .iter()
            .copied()
            .filter(|&s| cat.servers[s].has(f))
            .collect();
        let all: Vec<ServerIdx> = primary.iter().chain(&fallback).copied().collect();
        if all.is_empty() {
            return Vec::new();
        }
        let max_weight = all
            .iter()
            .map(|&s| cat.servers[s].weight)
            .fold(f64::MIN_POSITIVE, f64::max);
        let max_cost = all.iter().map(|&s| cat.servers[s].cost).fold(0.0, f64::max);
        let view_name = cat.view_name(v);
        let view_region = cat.view_region(v);
        let w = &dom.policy.weights;

        // `by_response`: a server without a reported load is loaded by its response
        // time. Not for an origin competing with POP caches (a static name's
        // fallback): their loads are measured by the POP's agent, and a response time
        // is not the same quantity, so a fast origin would always beat a busy POP.
        let score = |s: ServerIdx, by_response: bool| -> Ranked {
            let srv = &cat.servers[s];
            let rel = srv.weight / max_weight;
            let health = match metrics.health(&srv.id, now_ms) {
                RawHealth::Up { availability } => 1.0 - f64::from(availability),
                RawHealth::Unknown => 0.5,
                RawHealth::Down => 1.0,
            };
            let load = match metrics.load(&srv.id, now_ms) {
                Some(l) => f64::from(l.value),
                None if by_response => metrics
                    .rtt(&srv.id, now_ms)
                    .map_or(0.5, |r| f64::from(r.value) / cat.overload_ms),
                None => 0.5,
            } / rel;
            let latency = match metrics.latency(&srv.id, view_name, now_ms) {
                Some(l) => f64::from(l.value) / LATENCY_SCALE_MS,
                None => match (view_region, srv.region.as_deref()) {
                    (Some(a), Some(b)) if a == b => 0.2,
                    (Some(_), Some(_)) => 1.0,
                    _ => 0.5,
                },
            };
            let loss = metrics
                .loss(&srv.id, now_ms)
                .map_or(0.0, |l| f64::from(l.value) * 10.0);
            let cost = if max_cost > 0.0 {
                srv.cost / max_cost
            } else {
                0.0
            };
            let terms = Terms {
                health,
                load,
                latency,
                loss,
                cost,
            };
            Ranked {
                server: s,
                tier: tiers[s],
                score: w.health * health
                    + w.load * load
                    + w.latency * latency
                    + w.loss * loss
                    + w.cost * cost,
                terms,
            }
        };
        let in_region =
            |s: ServerIdx| view_region.is_some() && cat.servers[s].region.as_deref() == view_region;
        let order = |a: &Ranked, b: &Ranked| {
            a.tier
                .cmp(&b.tier)
                .then(a.score.total_cmp(&b.score))
                .then(in_region(b.server).cmp(&in_region(a.server)))
                .then(a.server.cmp(&b.server))
        };

        let mut ranked: Vec<Ranked> = primary.iter().map(|&s| score(s, true)).collect();
        ranked.sort_by(order);
        let best_primary = ranked.first().map(|r| (r.tier, r.score));
        for &s in &fallback {
            let r = score(s, false);
            let beats = match best_primary {
                None => true,
                Some((tier, sc)) => r.tier < tier || (r.tier == tier && r.score < sc),
            };
            if beats {
                ranked.push(r);
            }
        }
        ranked.sort_by(order);
        ranked
    }

    /// Re-evaluates every selection; returns true if any answer changed.
    pub fn reselect(
        &mut self,
        cat: &Catalog,
        metrics: &MetricsTable,
        now: Instant,
        now_ms: u64,
    ) -> bool {
        let tiers = self.tiers(cat, metrics, now, now_ms);
        let mut changed = false;
        for d in 0..cat.domains.len() {
            let policy = &cat.domains[d].policy;
            for v in 0..cat.view_count() {
                let view = ViewId::try_from(v).unwrap_or(ViewId::MAX);
                for f in Family::BOTH {
                    let ranked = Self::rank(cat, metrics, &tiers, d, view, f, now_ms);
                    let best = best_set(&ranked, policy.answers);
                    let slot = &mut self.sticky[d][v][f as usize];
                    let keep = match slot {
                        Some(st) => keep_incumbent(
                            st,
                            &ranked,
                            &best,
                            policy.persistence,
                            policy.hysteresis,
                            now,
                        ),
                        None => false,
                    };
                    if !keep {
                        let fresh = best.iter().map(|r| r.server).collect::<Vec<_>>();
                        *slot = (!fresh.is_empty()).then_some(Sticky {
                            servers: fresh,
                            chosen_at: now,
                        });
                    }
                    let chosen = slot.as_ref().map(|s| s.servers.clone()).unwrap_or_default();
                    let cur = &mut self.current.chosen[d][v][f as usize];
                    if *cur != chosen {
                        *cur = chosen;
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    /// Current tiers, without advancing hysteresis state (for inspection).
    pub fn peek_tiers(
        &self,
        cat: &Catalog,
        metrics: &MetricsTable,
        now: Instant,
        now_ms: u64,
    ) -> Vec<Tier> {
        let mut copy = Selector {
            recovery: self.recovery,
            health: self.health.clone(),
            sticky: Vec::new(),
            current: Selections::default(),
        };
        copy.tiers(cat, metrics, now, now_ms)
    }
}

/// The `n` best candidates, never mixing in down servers while any other is available.
fn best_set(ranked: &[Ranked], n: usize) -> Vec<&Ranked> {
    let any_alive = ranked.first().is_some_and(|r| r.tier != Tier::Down);
    ranked
        .iter()
        .filter(|r| !any_alive || r.tier != Tier::Down)
        .take(n)
        .collect()
}

fn keep_incumbent(
    st: &Sticky,
    ranked: &[Ranked],
    best: &[&Ranked],
    persistence: Duration,
    hysteresis: f64,
    now: Instant,
) -> bool {
    let worst_best_tier = best.iter().map(|r| r.tier).max().unwrap_or(Tier::Down);
    let mut inc_score = 0.0;
    for s in &st.servers {
        match ranked.iter().find(|r| r.server == *s) {
            // Still a candidate and no worse than what would replace it.
            Some(r) if r.tier <= worst_best_tier => inc_score += r.score,
            _ => return false,
        }
    }
    if now.duration_since(st.chosen_at) < persistence {
        return true;
    }
    let mut same =
        st.servers.len() == best.len() && best.iter().all(|r| st.servers.contains(&r.server));
    if !same {
        let new_score: f64 = best.iter().map(|r| r.score).sum();
        let margin = hysteresis * inc_score.max(HYSTERESIS_FLOOR);
        same = inc_score - new_score <= margin;
    }
    same
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::unix_ms;
    use popnet_config::Config;
    use probe::report::{Entry, Health, Report};

    struct Fixture {
        cat: Catalog,
        metrics: MetricsTable,
        sel: Selector,
        seq: u64,
        key: Vec<u8>,
    }

    fn fixture(extra_policy: &str) -> Fixture {
        let text = popnet_config::DEMO_TOML.replace(
            "[customers.domains.policy]\nttl = 20",
            &format!("[customers.domains.policy]\nttl = 20\n{extra_policy}"),
        );
        let cfg = Config::from_toml(&text, "test").unwrap();
        let cat = Catalog::compile(&cfg).unwrap();
        let key = cfg.probes.report_key.as_bytes().to_vec();
        let metrics = MetricsTable::new(
            &key,
            5_000,
            cat.servers.iter().map(|s| s.id.clone()),
            vec!["loopback".into()],
        );
        let sel = Selector::new(&cat, Duration::from_secs(2));
        Fixture {
            cat,
            metrics,
            sel,
            seq: 0,
            key,
        }
    }

    impl Fixture {
        fn report(&mut self, entries: Vec<Entry>) {
            self.seq += 1;
            let now = unix_ms();
            let r = Report {
                sender: "t".into(),
                seq: self.seq,
                sent_at_ms: now,
                entries,
            };
            self.metrics
                .ingest(&r.encode(&self.key).unwrap(), now)
                .unwrap();
        }
        fn www(&mut self, now: Instant) -> Vec<String> {
            self.sel.reselect(&self.cat, &self.metrics, now, unix_ms());
            let d = self
                .cat
                .domains
                .iter()
                .position(|d| d.name.to_string() == "www.demo.example.")
                .unwrap();
            self.sel
                .selections()
                .get(d, 1, Family::V4)
                .iter()
                .map(|&s| self.cat.servers[s].id.clone())
                .collect()
        }
    }

    fn load(server: &str, v: f32) -> Entry {
        Entry {
            server: server.into(),
            measured_at_ms: unix_ms(),
            load: Some(v),
            ..Entry::default()
        }
    }

    fn health(server: &str, up: bool) -> Entry {
        Entry {
            server: server.into(),
            measured_at_ms: unix_ms(),
            health: Some(Health {
                up,
                availability: if up { 1.0 } else { 0.0 },
            }),
            ..Entry::default()
        }
    }

    #[test]
    fn idle_network_answers_in_config_order() {
        let mut f = fixture("");
        assert_eq!(f.www(Instant::now()), ["demo/origin-a"]);
    }

    #[test]
    fn least_loaded_wins_with_hysteresis() {
        let mut f = fixture("");
        let t = Instant::now();
        assert_eq!(f.www(t), ["demo/origin-a"]);
        f.report(vec![
            load("demo/origin-a", 0.50),
            load("demo/origin-b", 0.47),
        ]);
        assert_eq!(
            f.www(t),
            ["demo/origin-a"],
            "3 % better is inside the 10 % hysteresis"
        );
        f.report(vec![load("demo/origin-a", 0.9), load("demo/origin-b", 0.1)]);
        assert_eq!(f.www(t), ["demo/origin-b"]);
    }

    fn response(server: &str, ms: f32) -> Entry {
        Entry {
            server: server.into(),
            measured_at_ms: unix_ms(),
            rtt_ms: Some(ms),
            ..Entry::default()
        }
    }

    #[test]
    fn an_origin_without_a_load_figure_is_loaded_by_its_response_time() {
        let mut f = fixture("");
        let t = Instant::now();
        // 900 ms of a 1 s overload_response is 0.9 loaded; 100 ms is 0.1.
        f.report(vec![
            response("demo/origin-a", 900.0),
            response("demo/origin-b", 100.0),
        ]);
        assert_eq!(f.www(t), ["demo/origin-b"]);
        // A reported load takes precedence over the response time.
        f.report(vec![
            load("demo/origin-b", 0.95),
            load("demo/origin-a", 0.1),
        ]);
        assert_eq!(f.www(t), ["demo/origin-a"]);
    }

    #[test]
    fn down_servers_leave_and_come_back_after_recovery() {
        let mut f = fixture("");
        let t = Instant::now();
        f.report(vec![
            health("demo/origin-a", false),
            health("demo/origin-b", true),
        ]);
        assert_eq!(f.www(t), ["demo/origin-b"]);
        f.report(vec![
            health("demo/origin-a", true),
            load("demo/origin-a", 0.0),
            load("demo/origin-b", 0.9),
        ]);
        assert_eq!(f.www(t), ["demo/origin-b"], "still recovering");
        assert_eq!(f.www(t + Duration::from_secs(3)), ["demo/origin-a"]);
    }

    #[test]
    fn all_down_fails_open() {
        let mut f = fixture("");
        f.report(vec![
            health("demo/origin-a", false),
            health("demo/origin-b", false),
        ]);
        assert_eq!(f.www(Instant::now()).len(), 1);
    }

    #[test]
    fn persistence_holds_until_the_server_fails() {
        let mut f = fixture("persistence = \"60s\"");
        let t = Instant::now();
        assert_eq!(f.www(t), ["demo/origin-a"]);
        f.report(vec![load("demo/origin-a", 0.9), load("demo/origin-b", 0.0)]);
        assert_eq!(f.www(t + Duration::from_secs(30)), ["demo/origin-a"]);
        assert_eq!(f.www(t + Duration::from_secs(61)), ["demo/origin-b"]);
        let mut f = fixture("persistence = \"60s\"");
        assert_eq!(f.www(t), ["demo/origin-a"]);
        f.report(vec![health("demo/origin-a", false)]);
        assert_eq!(f.www(t + Duration::from_secs(1)), ["demo/origin-b"]);
    }

    #[test]
    fn answers_returns_several_servers() {
        let mut f = fixture("answers = 2");
        assert_eq!(f.www(Instant::now()), ["demo/origin-a", "demo/origin-b"]);
    }

    #[test]
    fn origin_answers_a_static_name_only_when_it_beats_every_pop() {
        let mut f = fixture("");
        let t = Instant::now();
        let st = f
            .cat
            .domains
            .iter()
            .position(|d| d.name.to_string() == "static.demo.example.")
            .unwrap();
        let get = |f: &mut Fixture, t| {
            f.sel.reselect(&f.cat, &f.metrics, t, unix_ms());
            f.sel
                .selections()
                .get(st, 1, Family::V4)
                .iter()
                .map(|&s| f.cat.servers[s].id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get(&mut f, t), ["local"]);
        // A fast origin with no load figure does not beat a POP cache by its response
        // time: the POP's CPU load and an origin's response time are not one quantity
        // (this was the demo answering static.demo.example with its origin).
        f.report(vec![
            load("local", 0.4),
            response("demo/origin-a", 1.0),
            response("demo/origin-b", 1.0),
        ]);
        assert_eq!(get(&mut f, t), ["local"]);
        f.report(vec![load("local", 0.95), load("demo/origin-a", 0.05)]);
        assert_eq!(get(&mut f, t), ["demo/origin-a"]);
    }
}
