//! Starting and stopping the DNS role: sockets, threads, the shared answer table.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;
use popnet_config::Config;

use crate::answer::AnswerTable;
use crate::catalog::{Catalog, CatalogError};
use crate::control::{self, ControlState};
use crate::dnslog::{self, DnsLog};
use crate::metrics::MetricsTable;
use crate::resolvers::Resolvers;
use crate::stats::Counters;
use crate::xdp::{self, FastPath, ProgramSettings, XdpError, XdpMode, XdpState};
use crate::{admin, tcp, udp};
use logship::LogSink;

/// What the query workers share.
pub struct Shared {
    /// The current answers; replaced whole by the control loop.
    pub table: ArcSwap<AnswerTable>,
    /// Our EDNS UDP payload size.
    pub udp_payload: u16,
    pub stop: AtomicBool,
    /// Counters of every worker, for the admin listener.
    pub counters: Mutex<Vec<Arc<Counters>>>,
    /// The XDP fast path, once attached.
    pub xdp: OnceLock<Arc<xdp::Runtime>>,
    /// What the fast path is doing (off, unavailable and why, attached).
    pub xdp_state: Mutex<XdpState>,
    /// Resolver addresses the workers saw, for the control loop (bounded; a full channel
    /// drops, the resolver is noted again later).
    pub seen: (
        crossbeam_channel::Sender<IpAddr>,
        crossbeam_channel::Receiver<IpAddr>,
    ),
}

/// What one worker reports of the resolvers it sees: each address once per second.
pub struct SeenFilter {
    recent: std::collections::HashSet<IpAddr>,
    cleared: Instant,
}

impl Default for SeenFilter {
    fn default() -> SeenFilter {
        SeenFilter {
            recent: std::collections::HashSet::new(),
            cleared: Instant::now(),
        }
    }
}

impl SeenFilter {
    pub fn note(&mut self, shared: &Shared, addr: IpAddr) {
        if self.cleared.elapsed() >= std::time::Duration::from_secs(1) {
            self.recent.clear();
            self.cleared = Instant::now();
        }
        if self.recent.len() < 65_536 && self.recent.insert(addr) {
            let _ = shared.seen.0.try_send(addr);
        }
    }
}

impl Shared {
    /// A new set of worker counters, included in the totals from now on.
    pub fn new_counters(&self) -> Arc<Counters> {
        let c = Arc::new(Counters::default());
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c.clone());
        c
    }

    /// Every worker's counters.
    pub fn all_counters(&self) -> Vec<Arc<Counters>> {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// True for socket errors that only mean "nothing yet, try again" (timeouts, signals).
pub(crate) fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Why the DNS role could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("cannot listen on {addr} ({proto}): {error}; {hint}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        error: io::Error,
        hint: &'static str,
    },
    #[error("{0}")]
    Pop(String),
    #[error("config cannot be served: {0}")]
    Catalog(#[from] CatalogError),
    #[error("XDP fast path: {0}")]
    Xdp(XdpError),
    #[error("cannot start a thread: {0}")]
    Thread(#[source] io::Error),
}

impl From<XdpError> for StartError {
    fn from(e: XdpError) -> StartError {
        StartError::Xdp(e)
    }
}

impl StartError {
    pub(crate) fn bind(addr: SocketAddr, proto: &'static str, source: io::Error) -> StartError {
        let hint = match source.kind() {
            io::ErrorKind::AddrInUse => {
                "another process holds it (is popnet already running?); stop it or change the listen address"
            }
            io::ErrorKind::PermissionDenied => "ports below 1024 need root or CAP_NET_BIND_SERVICE",
            io::ErrorKind::AddrNotAvailable => {
                "this host has no such address; fix the address in the config"
            }
            _ => "check the address in the config",
        };
        StartError::Bind {
            addr,
            proto,
            error: source,
            hint,
        }
    }
}

/// Overrides of what the config says, from the command line.
#[derive(Debug, Clone, Default)]
pub struct DnsOptions {
    /// Which POP this box is (needed when several POPs run DNS).
    pub pop: Option<String>,
    pub listen: Option<Vec<SocketAddr>>,
    pub reports: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// UDP sockets per listen address; default `dns.workers`, 0 = one per core.
    pub workers: Option<usize>,
    /// Interfaces for the XDP fast path instead of the config's `xdp_interfaces`.
    pub xdp: Option<Vec<String>>,
    /// XDP mode instead of the config's `xdp_mode`.
    pub xdp_mode: Option<XdpMode>,
    /// Where the DNS log's records go (popnet's log shipper); none = not logged.
    pub log_sink: Option<LogSink>,
}

/// A running DNS role.
pub struct DnsServer {
    pub(crate) shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    pub(crate) control: Arc<Mutex<ControlState>>,
    /// The config in use and the command-line overrides (for reloads).
    pub(crate) config: Mutex<Config>,
    pub(crate) opts: DnsOptions,
    log: Option<Arc<Mutex<DnsLog>>>,
    pub pop: String,
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub reports: SocketAddr,
    pub admin: SocketAddr,
}

impl DnsServer {
    /// Compiles the config, binds every socket and starts every thread.
    pub fn start(cfg: &Config, opts: &DnsOptions) -> Result<DnsServer, StartError> {
        let pop = cfg
            .local_pop(opts.pop.as_deref(), |p| p.dns.is_some())
            .map_err(StartError::Pop)?;
        let svc = pop.dns.as_ref().ok_or_else(|| {
            StartError::Pop(format!(
                "POP {:?} runs no DNS server (it has no [pops.dns] table)",
                pop.name
            ))
        })?;
        let listen = opts.listen.clone().unwrap_or_else(|| svc.listen.clone());
        let reports_addr = opts.reports.unwrap_or(svc.reports);
        let admin_addr = opts.admin.unwrap_or(svc.admin);
        let workers = match opts.workers.unwrap_or(cfg.dns.workers) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };

        let catalog = Arc::new(Catalog::compile(cfg)?);
        let metrics = MetricsTable::new(
            cfg.probes.report_key.as_bytes(),
            cfg.probes.stale_after.as_millis() as u64,
            catalog.servers.iter().map(|s| s.id.clone()),
            catalog.views.names().map(str::to_string).collect(),
        );
        let reports_counters = metrics.counters();
        let own = svc
            .effective_addresses()
            .into_iter()
            .find(|a| !a.is_unspecified());
        let resolvers = Resolvers::new(&catalog, &cfg.probes, &pop.name, own);
        let track_resolvers = resolvers.active();
        let log = opts.log_sink.as_ref().map(|s| {
            Arc::new(Mutex::new(DnsLog::new(
                pop.name.clone(),
                s.0.clone(),
                catalog.clone(),
            )))
        });
        let mut state = ControlState::new(catalog, metrics, resolvers, cfg.probes.recovery);
        let first = match state.refresh(true) {
            Some(t) => t,
            None => unreachable!("a forced refresh always builds a table"),
        };
        let control = Arc::new(Mutex::new(state));
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(first),
            udp_payload: cfg.dns.udp_payload,
            stop: AtomicBool::new(false),
            counters: Mutex::new(Vec::new()),
            xdp: OnceLock::new(),
            xdp_state: Mutex::new(XdpState::Off),
            seen: crossbeam_channel::bounded(16_384),
        });

        // Bind everything before starting anything, so a bad address fails cleanly.
        let report_sock =
            UdpSocket::bind(reports_addr).map_err(|e| StartError::bind(reports_addr, "udp", e))?;
        let reports = report_sock
            .local_addr()
            .map_err(|e| StartError::bind(reports_addr, "udp", e))?;
        let admin_listener =
            TcpListener::bind(admin_addr).map_err(|e| StartError::bind(admin_addr, "tcp", e))?;
        let admin = admin_listener
            .local_addr()
            .map_err(|e| StartError::bind(admin_addr, "tcp", e))?;

        let mut server = DnsServer {
            shared: shared.clone(),
            threads: Vec::new(),
            control: control.clone(),
            config: Mutex::new(cfg.clone()),
            opts: opts.clone(),
            log: log.clone(),
            pop: pop.name.clone(),
            udp: Vec::new(),
            tcp: Vec::new(),
            reports,
            admin,
        };
        let started = (|| -> Result<(), StartError> {
            let (threads, udp_bound) = udp::start(&listen, workers, &shared)?;
            server.threads.extend(threads);
            // TCP listens on the same ports as UDP (port 0 in the config resolved).
            let tcp_listen: Vec<SocketAddr> = udp_bound.clone();
            server.udp = udp_bound;
            let (t, tcp_bound) = tcp::start(
                &tcp_listen,
                &shared,
                cfg.dns.tcp_idle_timeout,
                cfg.dns.tcp_max_connections,
            )?;
            server.threads.push(t);
            server.tcp = tcp_bound;
            let ifaces = opts
                .xdp
                .clone()
                .unwrap_or_else(|| svc.xdp_interfaces.clone());
            let mode = opts.xdp_mode.unwrap_or(svc.xdp_mode);
            if !ifaces.is_empty() {
                let settings = ProgramSettings {
                    listen: server.udp.clone(),
                    udp_payload: cfg.dns.udp_payload,
                    track_resolvers,
                };
                if let Some(t) = start_xdp(&shared, &settings, &ifaces, mode)? {
                    server.threads.push(t);
                }
            }
            server.threads.push(
                control::start(report_sock, control.clone(), shared.clone())
                    .map_err(|e| StartError::bind(reports, "udp", e))?,
            );
            server.threads.push(
                admin::start(
                    admin_listener,
                    admin::AdminContext {
                        pop: pop.name.clone(),
                        started: Instant::now(),
                        shared: shared.clone(),
                        control: control.clone(),
                        reports: reports_counters,
                        token: svc.admin_token.as_ref().map(|t| t.as_bytes().to_vec()),
                        log_sink: opts.log_sink.as_ref().map(|s| s.0.clone()),
                    },
                )
                .map_err(|e| StartError::bind(admin, "tcp", e))?,
            );
            if let Some(log) = &log {
                server.threads.push(
                    dnslog::start(log.clone(), shared.clone(), cfg.logs.batch_interval)
                        .map_err(StartError::Thread)?,
                );
            }
            Ok(())
        })();
        match started {
            Ok(()) => Ok(server),
            Err(e) => {
                server.stop();
                Err(e)
            }
        }
    }

    /// The answer table in use now.
    pub fn table(&self) -> Arc<AnswerTable> {
        self.shared.table.load_full()
    }

    /// The selection state (for inspection and tests).
    pub fn control(&self) -> &Arc<Mutex<ControlState>> {
        &self.control
    }

    /// Stops every thread and waits for them (within about 250 ms).
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(x) = self.shared.xdp.get() {
            x.shutdown();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // What the workers and the XDP program counted since the last drain.
        if let Some(log) = &self.log {
            if let Some(x) = self.shared.xdp.get() {
                x.drain_hits();
            }
            let catalog = self.shared.table.load().catalog.clone();
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(&catalog);
        }
    }
}

/// Loads and attaches the XDP fast path. Returns its writer thread, or nothing when this
/// machine cannot run it (the server then answers from userspace and says so once).
fn start_xdp(
    shared: &Arc<Shared>,
    settings: &ProgramSettings,
    ifaces: &[String],
    mode: XdpMode,
) -> Result<Option<JoinHandle<()>>, StartError> {
    let table = shared.table.load_full();
    let attempt = FastPath::load(settings, &table.catalog.views, &table).and_then(|mut fp| {
        for i in ifaces {
            fp.attach(i, mode)?;
        }
        Ok(fp)
    });
    let state = |s: XdpState| *shared.xdp_state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    match attempt {
        Ok(fp) => {
            let (rt, thread) = xdp::Runtime::start(fp)
                .map_err(|e| StartError::Xdp(XdpError::Unsupported(e.to_string())))?;
            rt.offer(table);
            let _ = shared.xdp.set(rt);
            tracing::info!(interfaces = %ifaces.join(","), ?mode, "XDP fast path attached");
            state(XdpState::Attached {
                interfaces: ifaces.to_vec(),
                mode,
            });
            Ok(Some(thread))
        }
        Err(e) if e.is_environment() => {
            tracing::warn!("XDP fast path unavailable, answering from userspace only: {e}");
            state(XdpState::Unavailable {
                reason: e.to_string(),
            });
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
