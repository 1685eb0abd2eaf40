//! The probe daemon of one POP: service probes and the load agent on one mio thread, the latency responder on another, reports to every DNS server.
//!
//! Every finished round becomes a report entry (health every round, not only on a
//! change, so a dead server leaves the answers within two intervals); entries are sent
//! every [`FLUSH_EVERY`] as [`crate::report`] datagrams to each `[pops.dns] reports`
//! address of the network, stamped with the send time and a sequence number that starts
//! at 0 with the process (a restarted probe's `sent_at` has moved on, which is what
//! receivers order by). Nothing is kept across restarts. With a log sink (popnet's log
//! shipper), every finished round of a service check is also a [`ProbeRecord`] for the
//! log server that keeps the target's customer, handed over at the same flushes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use logship::{LineSink, LogSink, ProbeRecord};
use popnet_config::{Config, LoadSource};
use serde::Serialize;

use crate::admin::{self, AdminContext};
use crate::check::{CheckSpec, HttpCheck};
use crate::engine::{Engine, EngineConfig, EngineStats, EngineTarget, RoundResult};
use crate::health::{TargetHealth, TargetSnapshot};
use crate::load::{LoadAgent, LoadFigures, parse_cache_stats};
use crate::report::{self, Entry, Report};

use crate::responder::{Responder, ResponderOptions, ResponderStats, ResponderStatsHandle};
use crate::targets::{TargetError, service_targets};
use crate::unix_ms;

/// How often finished entries are sent.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often the probe logs a summary line (targets up and down, rounds, latency requests).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// Service checks open at once unless `--max-concurrent` says otherwise.
pub const DEFAULT_MAX_CONCURRENT: usize = 512;

/// What `popnet probe` was asked for on its command line.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Which POP this is; default: the only POP with `[pops.probe]`.
    pub pop: Option<String>,
    /// Latency-probe socket instead of `[pops.probe] listen`.
    pub listen: Option<SocketAddr>,
    /// Service checks open at once.
    pub max_concurrent: usize,
    /// Latency measurements at once.
    pub max_measurements: usize,
    /// Try ICMP echo for latency probes.
    pub icmp: bool,
    /// Where the check results go as [`ProbeRecord`]s (popnet's log shipper); none = not logged.
    pub log_sink: Option<LogSink>,
    /// Admin listener instead of `[pops.probe] admin`.
    pub admin: Option<SocketAddr>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            pop: None,
            listen: None,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_measurements: 256,
            icmp: true,
            log_sink: None,
            admin: None,
        }
    }
}

/// Why the probe cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error("{0}")]
    Pop(String),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("cannot bind the latency-probe socket {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error(
        "cannot listen on the probe admin address {addr}: {source}; is another probe running? change [pops.probe] admin or pass --admin"
    )]
    Admin { addr: SocketAddr, source: io::Error },
    #[error("cannot start the probe: {0}")]
    Io(#[from] io::Error),
}

/// Everything the probe knows, for display.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeStats {
    pub pop: String,
    pub targets: Vec<TargetSnapshot>,
    pub engine: EngineStats,
    pub reports_sent: u64,
    pub report_errors: u64,
    pub load: Option<LoadFigures>,
    pub latency: Option<ResponderStats>,
}

pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) reports_sent: AtomicU64,
    pub(crate) report_errors: AtomicU64,
    pub(crate) state: Mutex<State>,
    /// A reloaded config for the service thread to take.
    next: Mutex<Option<Swap>>,
}

/// What a reload hands the service thread.
struct Swap {
    plan: Plan,
    /// The new responder's counters, when it was restarted.
    latency: Option<Option<ResponderStatsHandle>>,
}

pub(crate) struct State {
    pub(crate) ids: Vec<(String, &'static str)>,
    pub(crate) health: Vec<TargetHealth>,
    pub(crate) engine: EngineStats,
    pub(crate) load: Option<LoadFigures>,
}

pub(crate) fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running probe.
pub struct ProbeDaemon {
    pub pop: String,
    /// The latency responder's socket, when it runs.
    pub latency: Option<SocketAddr>,
    /// Where reports go.
    pub destinations: Vec<SocketAddr>,
    pub targets: Vec<String>,
    /// The admin listener (`/health`, `/stats`, `/metrics`), when it runs.
    pub admin: Option<SocketAddr>,
    shared: Arc<Shared>,
    responder: Mutex<Option<Responder>>,
    service: Option<JoinHandle<()>>,
    admin_thread: Option<JoinHandle<()>>,
    ctx: Arc<AdminContext>,
    opts: ProbeOptions,
    /// The responder's key, address and timeout.
    running: Mutex<(Vec<u8>, Option<SocketAddr>, Duration)>,
}

/// What one config asks of the probe of one POP.
struct Plan {
    pop: String,
    key: Vec<u8>,
    engine: Engine,
    /// Targets `0..reported` are reported; the one after is the cache admin.
    reported: usize,
    agent: Option<LoadAgent>,
    ids: Vec<(String, &'static str)>,
    destinations: Vec<SocketAddr>,
    /// The latency responder's settings: address, timeout.
    listen: Option<SocketAddr>,
    timeout: Duration,
}

fn plan(cfg: &Config, opts: &ProbeOptions) -> Result<Plan, ProbeError> {
    let pop = cfg
        .local_pop(opts.pop.as_deref(), |p| p.probe.is_some())
        .map_err(ProbeError::Pop)?;
    let key = cfg.probes.report_key.as_bytes().to_vec();
    let mut targets = service_targets(cfg)?;
    // What a report cannot carry is refused now, not at every send.
    let probe_entry = |server: &str| Report {
        sender: pop.name.clone(),
        seq: 0,
        sent_at_ms: 0,
        entries: vec![Entry {
            server: server.to_string(),
            ..Entry::default()
        }],
    };
    if let Err(e) = probe_entry(&pop.name).encode(&key) {
        return Err(ProbeError::Pop(format!(
            "POP name {:?} cannot be a report sender: {e}",
            pop.name
        )));
    }
    targets.retain(|t| match probe_entry(&t.id).encode(&key) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(target_id = %t.id, error = %e, "probe: not probed: its id cannot be reported");
            false
        }
    });
    let reported = targets.len();
    let mut agent = None;
    if let Some(cache) = &pop.cache {
        let mut check = HttpCheck::get("/stats");
        check.keep_body = true;
        if let Some(t) = &cache.admin_token {
            check
                .headers
                .push(format!("Authorization: Bearer {}", t.to_hex()));
        }
        targets.push(EngineTarget {
            id: format!("{} cache admin", pop.name),
            addrs: vec![reachable(cache.admin)],
            spec: CheckSpec::Http(check),
        });
        let from = pop
            .probe
            .as_ref()
            .map_or_else(|| LoadSource::ALL.to_vec(), |p| p.load_from.clone());
        agent = Some(LoadAgent::new(
            std::path::Path::new("/"),
            cache.max_connections,
            &from,
        ));
    }
    let destinations = destinations(cfg);
    if destinations.is_empty() {
        tracing::warn!("probe: no POP has [pops.dns]: reports go nowhere");
    }
    let engine = Engine::new(
        targets,
        EngineConfig {
            interval: cfg.probes.interval,
            timeout: cfg.probes.timeout,
            max_concurrent: opts.max_concurrent,
        },
        Instant::now(),
    )?;
    let ids: Vec<(String, &'static str)> = engine
        .targets()
        .take(reported)
        .map(|t| (t.id.clone(), t.spec.kind()))
        .collect();
    Ok(Plan {
        pop: pop.name.clone(),
        key,
        engine,
        reported,
        agent,
        ids,
        destinations,
        listen: opts.listen.or(pop.probe.as_ref().map(|p| p.listen)),
        timeout: cfg.probes.timeout,
    })
}

fn start_responder(plan: &Plan, opts: &ProbeOptions) -> Result<Option<Responder>, ProbeError> {
    match plan.listen {
        Some(addr) => {
            let mut o = ResponderOptions::new(&plan.pop, &plan.key, addr, plan.timeout);
            o.icmp = opts.icmp;
            o.max_concurrent = opts.max_measurements.max(1);
            Ok(Some(
                Responder::start(o).map_err(|source| ProbeError::Bind { addr, source })?,
            ))
        }
        None => Ok(None),
    }
}

/// A checked config for a running probe (see [`ProbeDaemon::prepare_reload`]).
pub struct ProbeReload {
    plan: Plan,
}

impl ProbeReload {
    /// The ids of the targets the new config probes.
    pub fn targets(&self) -> Vec<String> {
        self.plan.ids.iter().map(|(id, _)| id.clone()).collect()
    }
}

impl ProbeDaemon {
    /// Starts the probe of the POP `opts.pop` (or the only one with `[pops.probe]`).
    pub fn start(cfg: &Config, opts: &ProbeOptions) -> Result<ProbeDaemon, ProbeError> {
        let plan = plan(cfg, opts)?;
        let responder = start_responder(&plan, opts)?;
        let ids = plan.ids.clone();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            reports_sent: AtomicU64::new(0),
            report_errors: AtomicU64::new(0),
            state: Mutex::new(State {
                health: (0..ids.len()).map(|_| TargetHealth::new()).collect(),
                ids: ids.clone(),
                engine: EngineStats::default(),
                load: None,
            }),
            next: Mutex::new(None),
        });
        let mut svc = Service {
            engine: plan.engine,
            reported: plan.reported,
            agent: plan.agent,
            pop: plan.pop.clone(),
            key: plan.key.clone(),
            sender: Sender::new(&plan.destinations),
            seq: 0,
            last_sent_at: 0,
            entries: Vec::new(),
            shared: shared.clone(),
            latency: responder.as_ref().map(Responder::stats_handle),
            last_summary: Instant::now(),
            log: opts.log_sink.as_ref().map(|s| s.0.clone()),
            records: Vec::new(),
        };
        let probe_cfg = cfg
            .pops
            .iter()
            .find(|p| p.name == plan.pop)
            .and_then(|p| p.probe.as_ref());
        let admin_addr = opts.admin.or(probe_cfg.and_then(|p| p.admin));
        let admin_listener = match admin_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .and_then(|l| Ok((l.local_addr()?, l)))
                    .map_err(|source| ProbeError::Admin { addr, source })?,
            ),
            None => None,
        };
        let ctx = Arc::new(AdminContext {
            pop: plan.pop.clone(),
            started: Instant::now(),
            shared: shared.clone(),
            latency: Mutex::new(responder.as_ref().map(Responder::stats_handle)),
            log: opts.log_sink.as_ref().map(|s| s.0.clone()),
            token: probe_cfg
                .and_then(|p| p.admin_token.as_ref())
                .map(|t| t.as_bytes().to_vec()),
        });
        let service = std::thread::Builder::new()
            .name("probe-service".into())
            .spawn(move || svc.run())?;
        let mut daemon = ProbeDaemon {
            pop: plan.pop.clone(),
            latency: responder.as_ref().map(Responder::local_addr),
            destinations: plan.destinations.clone(),
            targets: ids.into_iter().map(|(id, _)| id).collect(),
            admin: admin_listener.as_ref().map(|(a, _)| *a),
            shared,
            responder: Mutex::new(responder),
            service: Some(service),
            opts: opts.clone(),
            running: Mutex::new((plan.key, plan.listen, plan.timeout)),
            admin_thread: None,
            ctx: ctx.clone(),
        };
        if let Some((_, l)) = admin_listener {
            daemon.admin_thread = Some(admin::start(l, ctx)?);
        }
        Ok(daemon)
    }

    /// Checks a new config for this probe's POP and builds its targets, without
    /// touching the running probe (an error leaves it as it was).
    pub fn prepare_reload(&self, cfg: &Config) -> Result<ProbeReload, ProbeError> {
        let opts = ProbeOptions {
            pop: Some(self.pop.clone()),
            ..self.opts.clone()
        };
        let plan = plan(cfg, &opts)?;
        Ok(ProbeReload { plan })
    }

    /// Switches to a prepared config: the service thread takes the new targets (health
    /// kept for targets that stay) and report destinations at its next turn; the latency
    /// responder is restarted if its key, address or timeout changed. An error means the
    /// targets switched but the responder could not start again (it is down).
    pub fn apply_reload(&self, r: ProbeReload) -> Result<(), ProbeError> {
        let plan = r.plan;
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut responder = self
            .responder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut latency = None;
        let mut result = Ok(());
        if *running != (plan.key.clone(), plan.listen, plan.timeout) {
            if let Some(old) = responder.take() {
                old.stop();
            }
            match start_responder(&plan, &self.opts) {
                Ok(r) => {
                    *responder = r;
                    *running = (plan.key.clone(), plan.listen, plan.timeout);
                }
                // The targets still switch; the next reload tries the responder again
                // (`running` keeps the old settings, so they differ).
                Err(e) => result = Err(e),
            }
            latency = Some(responder.as_ref().map(Responder::stats_handle));
            if let Some(l) = &latency {
                *self
                    .ctx
                    .latency
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = l.clone();
            }
        }
        *self
            .shared
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Swap { plan, latency });
        result
    }

    pub fn stats(&self) -> ProbeStats {
        self.ctx.stats()
    }

    /// Stops both threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.service.take() {
            let _ = t.join();
        }
        if let Some(t) = self.admin_thread.take() {
            let _ = t.join();
        }
        let r = self
            .responder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(r) = r {
            r.stop();
        }
    }
}

impl Drop for ProbeDaemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A wildcard listen address is reached on the loopback of its family.
fn reachable(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())
        }
        _ => a,
    }
}

/// The report socket of every DNS server in the network. A wildcard `reports` address
/// is reached on the server's published addresses.
pub fn destinations(cfg: &Config) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for p in &cfg.pops {
        let Some(dns) = &p.dns else { continue };
        let r = dns.reports;
        let addrs: Vec<SocketAddr> = if r.ip().is_unspecified() {
            dns.effective_addresses()
                .into_iter()
                .map(|ip| reachable(SocketAddr::new(ip, r.port())))
                .collect()
        } else {
            vec![r]
        };
        for a in addrs {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

struct Sender {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    to: Vec<SocketAddr>,
}

impl Sender {
    fn new(to: &[SocketAddr]) -> Sender {
        let open = |local: SocketAddr| {
            let s = UdpSocket::bind(local).ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        };
        Sender {
            v4: to
                .iter()
                .any(SocketAddr::is_ipv4)
                .then(|| open((Ipv4Addr::UNSPECIFIED, 0).into()))
                .flatten(),
            v6: to
                .iter()
                .any(SocketAddr::is_ipv6)
                .then(|| open((Ipv6Addr::UNSPECIFIED, 0).into()))
                .flatten(),
            to: to.to_vec(),
        }
    }

    /// Sends `datagram` to every destination; returns (sent, failed).
    fn send(&self, datagram: &[u8]) -> (u64, u64) {
        let (mut ok, mut bad) = (0, 0);
        for to in &self.to {
            let sock = if to.is_ipv4() { &self.v4 } else { &self.v6 };
            match sock.as_ref().map(|s| s.send_to(datagram, to)) {
                Some(Ok(_)) => ok += 1,
                Some(Err(e)) => {
                    bad += 1;
                    tracing::debug!(%to, error = %e, "probe: report not sent");
                }
                None => bad += 1,
            }
        }
        (ok, bad)
    }
}

/// Appends the [`ProbeRecord`] of one finished round of target `id` to `out`.
fn write_record(out: &mut Vec<u8>, pop: &str, id: &str, now_ms: u64, o: &crate::check::Outcome) {
    let rec = ProbeRecord {
        ts_ms: now_ms,
        pop: pop.to_string(),
        customer: logship::record::customer_of_server(id).to_string(),
        target: id.to_string(),
        ok: o.passed(),
        total_us: u64::try_from(o.total.as_micros()).unwrap_or(u64::MAX),
        status: o.status,
        error: o.result.as_ref().err().cloned(),
    };
    if serde_json::to_writer(&mut *out, &rec).is_ok() {
        out.push(b'\n');
    }
}

struct Service {
    engine: Engine,
    /// Targets `0..reported` are reported; the one after is the cache admin.
    reported: usize,
    agent: Option<LoadAgent>,
    pop: String,
    key: Vec<u8>,
    sender: Sender,
    seq: u64,
    last_sent_at: u64,
    entries: Vec<Entry>,
    shared: Arc<Shared>,
    latency: Option<ResponderStatsHandle>,
    last_summary: Instant,
    /// Where [`ProbeRecord`]s go, and the lines not yet handed over.
    log: Option<Arc<dyn LineSink>>,
    records: Vec<u8>,
}

impl Service {
    fn run(&mut self) {
        let mut results = Vec::new();
        let mut next_flush = Instant::now() + FLUSH_EVERY;
        while !self.shared.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.engine.turn(next_flush, &mut results) {
                tracing::warn!(error = %e, "probe: poll failed");
                std::thread::sleep(Duration::from_millis(100));
            }
            // A target that went down or came back is reported at once, not at the
            // next flush: failover time is what the DNS servers wait for.
            let flipped = !results.is_empty() && self.take(&mut results);
            if flipped || Instant::now() >= next_flush {
                self.flush();
                next_flush = Instant::now() + FLUSH_EVERY;
            }
            if self.last_summary.elapsed() >= SUMMARY_EVERY {
                self.last_summary = Instant::now();
                self.summary();
            }
            let swap = self
                .shared
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(swap) = swap {
                // What the old targets found and not yet sent goes out first.
                self.flush();
                self.swap(swap);
            }
        }
        self.flush_records();
    }

    /// Hands the records of the finished rounds to the log sink.
    fn flush_records(&mut self) {
        if let Some(log) = &self.log
            && !self.records.is_empty()
        {
            log.write_lines(&self.records);
            self.records.clear();
        }
    }

    /// Takes a reloaded config: the new engine, keeping the health of targets that stay.
    fn swap(&mut self, swap: Swap) {
        let plan = swap.plan;
        let mut guard = lock(&self.shared.state);
        let st = &mut *guard;
        let mut old: std::collections::HashMap<String, TargetHealth> = st
            .ids
            .drain(..)
            .map(|(id, _)| id)
            .zip(st.health.drain(..))
            .collect();
        st.health = plan
            .ids
            .iter()
            .map(|(id, _)| old.remove(id).unwrap_or_default())
            .collect();
        st.ids = plan.ids;
        drop(guard);
        self.engine = plan.engine;
        self.reported = plan.reported;
        // A new agent: the new config may read load from other sources (load_from).
        self.agent = plan.agent;
        self.key = plan.key;
        self.sender = Sender::new(&plan.destinations);
        if let Some(l) = swap.latency {
            self.latency = l;
        }
        tracing::info!(targets = self.reported, "probe: reloaded");
    }

    /// Turns finished rounds into entries; true if some target went down or came up.
    fn take(&mut self, results: &mut Vec<RoundResult>) -> bool {
        let now_ms = unix_ms();
        let mut flipped = false;
        let mut st = lock(&self.shared.state);
        for r in results.drain(..) {
            if r.target >= self.reported {
                let figures = r
                    .outcome
                    .body
                    .as_deref()
                    .filter(|_| r.outcome.passed())
                    .and_then(parse_cache_stats);
                if figures.is_none() {
                    tracing::debug!(error = ?r.outcome.result, "probe: cache admin /stats not read; load from this box only");
                }
                if let Some(f) = self.agent.as_mut().and_then(|a| a.sample(figures)) {
                    st.load = Some(f);
                    self.entries.push(Entry {
                        server: popnet_config::pop_server_id(&self.pop),
                        measured_at_ms: now_ms,
                        load: Some(f.load),
                        ..Entry::default()
                    });
                }
                continue;
            }
            let h = &mut st.health[r.target];
            let was_up = h.health().up;
            h.record(&r.outcome);
            let up = h.health().up;
            let id = &st.ids[r.target].0;
            flipped |= was_up != up;
            if was_up && !up {
                tracing::warn!(target_id = %id, error = ?r.outcome.result.as_ref().err(), "probe: target is down");
            } else if !was_up && up {
                tracing::info!(target_id = %id, "probe: target is up again");
            } else if let Err(e) = &r.outcome.result {
                tracing::debug!(target_id = %id, error = %e, "probe: check failed");
            }
            let entry = st.health[r.target].entry(id, now_ms);
            self.entries.push(entry);
            if self.log.is_some() {
                write_record(&mut self.records, &self.pop, id, now_ms, &r.outcome);
            }
        }
        st.engine = self.engine.stats();
        flipped
    }

    /// One log line with what an operator checks first.
    fn summary(&self) {
        let st = lock(&self.shared.state);
        let down: Vec<&str> = st
            .ids
            .iter()
            .zip(&st.health)
            .filter(|(_, h)| !h.health().up)
            .map(|((id, _), _)| id.as_str())
            .collect();
        let e = self.engine.stats();
        let l = self.latency.as_ref().map(ResponderStatsHandle::get);
        tracing::info!(
            targets = st.ids.len(),
            down = %down.join(","),
            rounds = e.rounds_done,
            skipped = e.skipped,
            overrun = e.overrun,
            max_open = e.max_open,
            load = ?st.load.map(|l| l.load),
            reports_sent = self.shared.reports_sent.load(Ordering::Relaxed),
            report_errors = self.shared.report_errors.load(Ordering::Relaxed),
            latency_requests = l.map_or(0, |l| l.requests),
            latency_dropped = l.map_or(0, |l| l.bad_mac + l.malformed + l.stale + l.rate_limited_requests),
            "probe: summary"
        );
    }

    fn flush(&mut self) {
        self.flush_records();
        if self.entries.is_empty() {
            return;
        }
        let sent_at = unix_ms().max(self.last_sent_at);
        self.last_sent_at = sent_at;
        let entries = std::mem::take(&mut self.entries);
        // Ids and figures are checked at start and clamped when measured, so this only
        // fails on a bug; the figures of this flush are lost then, not the next ones.
        let grams = report::batch(&self.pop, &mut self.seq, sent_at, entries, &self.key)
            .unwrap_or_else(|e| {
                self.shared.report_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "probe: report not encodable");
                Vec::new()
            });
        for g in &grams {
            let (ok, bad) = self.sender.send(g);
            self.shared.reports_sent.fetch_add(ok, Ordering::Relaxed);
            self.shared.report_errors.fetch_add(bad, Ordering::Relaxed);
        }
    }
}
