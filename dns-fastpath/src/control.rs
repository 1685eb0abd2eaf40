//! The control loop: receives metric reports and latency-probe answers, re-runs the selector, publishes answer tables.
//!
//! It ticks every [`TICK`] (figures age out and recovering servers come back even when no
//! report arrives) and right after every accepted report, so a report that changes an
//! answer is visible to the query workers within one table build of its arrival. Each
//! tick it also takes the resolvers the workers saw, sends the latency requests that are
//! due, and re-places resolvers in their dynamic views ([`crate::resolvers`]).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::answer::AnswerTable;
use crate::catalog::{Catalog, Family, ServerKind};
use crate::metrics::{MetricsTable, RawHealth, Stamped, unix_ms};
use crate::resolvers::{self, Resolvers};
use crate::selector::{Selector, Terms, Tier};
use crate::server::{Shared, transient};
use crate::views::ViewId;

/// Re-evaluation period.
pub const TICK: Duration = Duration::from_millis(100);

/// The selection state, shared by the control loop and the admin listener.
#[derive(Debug)]
pub struct ControlState {
    pub catalog: Arc<Catalog>,
    pub metrics: MetricsTable,
    pub selector: Selector,
    pub resolvers: Resolvers,
    pub resolver_views: Arc<HashMap<IpAddr, ViewId>>,
    pub generation: u64,
}

impl ControlState {
    pub fn new(
        catalog: Arc<Catalog>,
        metrics: MetricsTable,
        resolvers: Resolvers,
        recovery: Duration,
    ) -> ControlState {
        let selector = Selector::new(&catalog, recovery);
        ControlState {
            catalog,
            metrics,
            selector,
            resolvers,
            resolver_views: Arc::default(),
            generation: 0,
        }
    }

    /// Re-places resolvers, re-runs the selector; builds a new table if an answer or a
    /// resolver's view changed (or none exists yet).
    pub fn refresh(&mut self, force: bool) -> Option<AnswerTable> {
        let now_ms = unix_ms();
        // Place resolvers first, so each view's latencies count its members of now.
        let moved = match self.resolvers.assign(now_ms) {
            Some(map) => {
                self.resolver_views = Arc::new(map);
                true
            }
            None => false,
        };
        for (pop, view, ms, at) in self.resolvers.view_latencies(&self.catalog.views, now_ms) {
            self.metrics.set_latency(
                &popnet_config::pop_server_id(&pop),
                resolvers::SENDER,
                &view,
                ms,
                at,
            );
        }
        let changed = self
            .selector
            .reselect(&self.catalog, &self.metrics, Instant::now(), now_ms);
        if !(changed || moved || force) {
            return None;
        }
        self.generation += 1;
        Some(AnswerTable::build(
            self.catalog.clone(),
            self.selector.selections().clone(),
            self.resolver_views.clone(),
            self.generation,
        ))
    }

    /// Every selection with its ranking, for the admin listener.
    pub fn selections(&self) -> Vec<SelectionView> {
        let now_ms = unix_ms();
        let tiers = self
            .selector
            .peek_tiers(&self.catalog, &self.metrics, Instant::now(), now_ms);
        let cat = &self.catalog;
        let mut out = Vec::new();
        for (d, dom) in cat.domains.iter().enumerate() {
            for v in 0..cat.view_count() {
                let view = ViewId::try_from(v).unwrap_or(ViewId::MAX);
                for f in Family::BOTH {
                    let ranking = Selector::rank(cat, &self.metrics, &tiers, d, view, f, now_ms);
                    if ranking.is_empty() {
                        continue;
                    }
                    out.push(SelectionView {
                        domain: dom.name.to_string(),
                        view: cat.view_name(view).to_string(),
                        family: f,
                        chosen: self
                            .selector
                            .selections()
                            .get(d, view, f)
                            .iter()
                            .map(|&s| cat.servers[s].id.clone())
                            .collect(),
                        ranking: ranking
                            .into_iter()
                            .map(|r| RankView {
                                server: cat.servers[r.server].id.clone(),
                                tier: r.tier,
                                score: r.score,
                                terms: r.terms,
                            })
                            .collect(),
                    });
                }
            }
        }
        out
    }

    /// Every server with its current figures and their ages, for the admin listener.
    pub fn servers(&self) -> Vec<ServerView> {
        let now_ms = unix_ms();
        let tiers = self
            .selector
            .peek_tiers(&self.catalog, &self.metrics, Instant::now(), now_ms);
        let fig = |s: Option<Stamped<f32>>| {
            s.map(|s| Figure {
                value: s.value,
                age_ms: now_ms.saturating_sub(s.at_ms),
            })
        };
        self.catalog
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| ServerView {
                id: s.id.clone(),
                kind: s.kind,
                region: s.region.clone(),
                tier: tiers[i],
                health: self.metrics.health(&s.id, now_ms),
                load: fig(self.metrics.load(&s.id, now_ms)),
                loss: fig(self.metrics.loss(&s.id, now_ms)),
                rtt_ms: fig(self.metrics.rtt(&s.id, now_ms)),
                latency_ms: (1..self.catalog.view_count())
                    .filter_map(|v| {
                        let name = self.catalog.view_name(ViewId::try_from(v).ok()?);
                        fig(self.metrics.latency(&s.id, name, now_ms))
                            .map(|f| (name.to_string(), f))
                    })
                    .collect(),
            })
            .collect()
    }
}

/// One (domain, view, family) selection.
#[derive(Debug, Serialize)]
pub struct SelectionView {
    pub domain: String,
    pub view: String,
    pub family: Family,
    pub chosen: Vec<String>,
    pub ranking: Vec<RankView>,
}

#[derive(Debug, Serialize)]
pub struct RankView {
    pub server: String,
    pub tier: Tier,
    pub score: f64,
    pub terms: Terms,
}

/// A figure and how old it is.
#[derive(Debug, Serialize)]
pub struct Figure {
    pub value: f32,
    pub age_ms: u64,
}

/// One server's figures.
#[derive(Debug, Serialize)]
pub struct ServerView {
    pub id: String,
    pub kind: ServerKind,
    pub region: Option<String>,
    pub tier: Tier,
    pub health: RawHealth,
    pub load: Option<Figure>,
    pub loss: Option<Figure>,
    pub rtt_ms: Option<Figure>,
    pub latency_ms: Vec<(String, Figure)>,
}

fn lock(state: &Mutex<ControlState>) -> std::sync::MutexGuard<'_, ControlState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the control loop on the report socket.
pub fn start(
    sock: UdpSocket,
    state: Arc<Mutex<ControlState>>,
    shared: Arc<Shared>,
) -> io::Result<JoinHandle<()>> {
    sock.set_read_timeout(Some(TICK))?;
    std::thread::Builder::new()
        .name("dns-control".into())
        .spawn(move || {
            let mut buf = vec![0u8; probe::report::MAX_DATAGRAM + 1];
            let mut last_tick = Instant::now();
            while !shared.stop.load(Ordering::Relaxed) {
                let mut dirty = false;
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let datagram = &buf[..n];
                        let mut st = lock(&state);
                        if datagram.starts_with(&probe::latency::RESPONSE_MAGIC) {
                            dirty = st.resolvers.take_datagram(datagram);
                        } else {
                            match st.metrics.ingest(datagram, unix_ms()) {
                                Ok(_) => dirty = true,
                                Err(e) => {
                                    tracing::debug!(%from, error = %e, "metric report refused")
                                }
                            }
                        }
                    }
                    Err(e) if transient(&e) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "report socket receive failed");
                        std::thread::sleep(TICK);
                    }
                }
                if dirty || last_tick.elapsed() >= TICK {
                    last_tick = Instant::now();
                    let requests = {
                        let mut st = lock(&state);
                        let now = Instant::now();
                        while let Ok(addr) = shared.seen.1.try_recv() {
                            st.resolvers.seen(addr, now);
                        }
                        if let Some(x) = shared.xdp.get() {
                            for addr in x.drain_seen() {
                                st.resolvers.seen(addr, now);
                            }
                        }
                        let requests = st.resolvers.due_requests(now, unix_ms());
                        // Published under the lock, so that a table of a config
                        // replaced by a reload (which takes the lock) never lands
                        // after the reload's first table.
                        if let Some(t) = st.refresh(false) {
                            publish(&shared, t);
                        }
                        requests
                    };
                    for (probe, bytes) in requests {
                        if let Err(e) = sock.send_to(&bytes, probe) {
                            tracing::debug!(%probe, error = %e, "latency request not sent");
                        }
                    }
                }
            }
        })
}

/// Makes `t` the table the workers answer from and hands it to the XDP writer.
pub(crate) fn publish(shared: &Shared, t: AnswerTable) {
    tracing::debug!(
        generation = t.generation,
        entries = t.len(),
        "answer table published"
    );
    let t = Arc::new(t);
    shared.table.store(t.clone());
    if let Some(x) = shared.xdp.get() {
        x.offer(t);
    }
}
