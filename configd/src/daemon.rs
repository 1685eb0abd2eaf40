//! `popnet configd`: stores the running config durably, takes part in two-phase pushes down the tree, recovers missed commits, tells local daemons.
//!
//! Every box runs one. It holds the running config (and at most one pending config, of
//! one push) in its [`Store`]. On PREPARE it checks the command and the config (signed
//! by an admin of the config it runs, a higher version, valid), stores it as pending,
//! passes the PREPARE to the boxes it controls in the *new* config and answers once all
//! of them answered or its time ran out, with one report per box of its subtree. On
//! COMMIT it switches (one atomic rename), tells the local daemons, and passes the
//! COMMIT down. On ABORT it drops the pending config. Every `recovery_interval` it asks
//! its parent (then the parent's ancestors, then the masters) for their running version
//! and fetches a newer one: a box that was down or cut off while a push committed
//! catches up as soon as it is back. A pending config whose push was never decided
//! expires after twice the push timeout.
//!
//! Local daemons (`popnet up --configd SOCKET`) subscribe on a Unix socket: they get
//! the running config at once and again on every switch, and answer how their reload
//! went (shown by `popctl config status`). Processes named by `--hup PIDFILE` get a
//! SIGHUP on every switch, as in the seed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use popnet_config::{ConfigBox, TlsMode};

use crate::client::{self, CallError};
use crate::net::{self, Stream, Tls};
use crate::sign::{Op, Refused, SignedCommand, SignedConfig, unix_ms};
use crate::store::{State, Store, StoreError, Stored};
use crate::wire::{
    self, BoxReport, BoxStatus, Local, LocalDaemon, Outcome, Pending, Request, Response, Running,
};

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a peer may take to send its request (and to take our answer).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of the status and fetch calls of recovery.
const RECOVERY_CALL: Duration = Duration::from_secs(2);

/// What `popnet configd` was asked for.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// This box's name in `[[configd.boxes]]`.
    pub name: String,
    /// Where the store lives.
    pub state_dir: PathBuf,
    /// A signed config to start from when the store is empty (or holds an older one).
    pub bootstrap: Option<PathBuf>,
    /// Listen here instead of the box's `address` (e.g. a wildcard).
    pub listen: Option<SocketAddr>,
    /// The local socket; default `<state_dir>/configd.sock`.
    pub socket: Option<PathBuf>,
    /// Files holding the pids of processes to send SIGHUP on every switch.
    pub hup: Vec<PathBuf>,
}

/// Why configd could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Bootstrap {
        path: PathBuf,
        #[source]
        source: Refused,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{dir} holds no config yet; start with --bootstrap FILE (a config signed by one of its own admins, see `popctl config sign`)"
    )]
    Empty { dir: PathBuf },
    #[error(
        "the stored config of {dir} no longer loads ({source}); move {dir}/state.json away and start with --bootstrap FILE"
    )]
    Stored {
        dir: PathBuf,
        #[source]
        source: Refused,
    },
    #[error("{0}")]
    NotInTree(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start a thread: {0}")]
    Thread(#[source] io::Error),
}

/// A config the box holds, parsed, with what it knows of it.
#[derive(Clone)]
struct Held {
    cfg: Arc<SignedConfig>,
    meta: Running,
}

#[derive(Clone)]
struct PendingHeld {
    cfg: Arc<SignedConfig>,
    meta: Pending,
    since: Instant,
}

struct Live {
    running: Held,
    pending: Option<PendingHeld>,
    last_error: Option<String>,
}

struct Subscriber {
    id: u64,
    role: String,
    pid: u32,
    out: UnixStream,
    version: Option<u32>,
    ok: Option<bool>,
    message: Option<String>,
}

struct Inner {
    name: String,
    store: Store,
    live: Mutex<Live>,
    /// The server side of TLS, from the running config.
    tls: Mutex<Option<Arc<Tls>>>,
    /// Client TLS per config digest (a push uses the new config's).
    client_tls: Mutex<HashMap<String, Option<Arc<Tls>>>>,
    subscribers: Mutex<Vec<Subscriber>>,
    next_sub: AtomicU64,
    hup: Vec<PathBuf>,
    /// Purge command ids carried out recently, with their issue time.
    seen: Mutex<VecDeque<(String, u64)>>,
    wake: (Mutex<bool>, Condvar),
    stop: AtomicBool,
    conns: AtomicUsize,
    counters: Counters,
}

/// What a daemon counts, for `/metrics`.
#[derive(Default)]
struct Counters {
    prepared: AtomicU64,
    prepare_refused: AtomicU64,
    switched_commit: AtomicU64,
    switched_recovery: AtomicU64,
    switch_failed: AtomicU64,
    aborted: AtomicU64,
    purges: AtomicU64,
}

/// A running config daemon.
pub struct Daemon {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
    /// Where it listens for other boxes and popctl.
    pub listen: SocketAddr,
    /// Its local socket.
    pub socket: PathBuf,
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn parse_stored(dir: &Path, text: &str) -> Result<SignedConfig, DaemonError> {
    SignedConfig::parse(text.to_string(), &format!("{}/state.json", dir.display())).map_err(
        |source| DaemonError::Stored {
            dir: dir.to_path_buf(),
            source,
        },
    )
}

/// The parent's budget minus the margin it keeps for itself.
fn child_budget(budget: Duration) -> Duration {
    let margin = (budget / 5).max(Duration::from_millis(100));
    budget.saturating_sub(margin).max(Duration::from_millis(50))
}

/// How long a parent waits for a child given `child` of budget.
fn child_wait(budget: Duration, child: Duration) -> Duration {
    child + (budget.saturating_sub(child) / 2)
}

/// A wildcard address is reached on the loopback of its family.
fn reachable(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        _ => a,
    }
}

impl Daemon {
    /// Opens the store (bootstrapping it if asked), binds both sockets and starts the
    /// server, local-socket and recovery threads.
    pub fn start(opts: &DaemonOptions) -> Result<Daemon, DaemonError> {
        let store = Store::open(&opts.state_dir)?;
        let dir = store.dir().to_path_buf();
        let mut state = store.load()?;
        if let Some(path) = &opts.bootstrap {
            let text = std::fs::read_to_string(path).map_err(|source| DaemonError::Read {
                path: path.clone(),
                source,
            })?;
            let bad = |source| DaemonError::Bootstrap {
                path: path.clone(),
                source,
            };
            let boot = SignedConfig::parse(text, &path.display().to_string()).map_err(bad)?;
            let signer = match &state {
                None => boot.accept_first().map_err(bad)?,
                Some(s) => {
                    let running = parse_stored(&dir, &s.running.text)?;
                    if boot.version() <= running.version() {
                        tracing::info!(
                            stored = running.version(),
                            bootstrap = boot.version(),
                            "configd: the store runs a version at least as new as --bootstrap; the bootstrap file is not used"
                        );
                        String::new()
                    } else {
                        boot.accept(&running.config).map_err(bad)?
                    }
                }
            };
            if !signer.is_empty() {
                let st = State {
                    running: Stored {
                        meta: Running {
                            version: boot.version(),
                            digest: boot.digest.clone(),
                            signer,
                            since_ms: unix_ms(),
                        },
                        text: boot.text.clone(),
                    },
                    pending: None,
                };
                store.save(&st)?;
                state = Some(st);
            }
        }
        let Some(state) = state else {
            return Err(DaemonError::Empty { dir });
        };
        let running = Held {
            cfg: Arc::new(parse_stored(&dir, &state.running.text)?),
            meta: state.running.meta.clone(),
        };
        let pending = state.pending.as_ref().and_then(|p| {
            match SignedConfig::parse(p.text.clone(), "the stored pending config") {
                Ok(c) => Some(PendingHeld {
                    cfg: Arc::new(c),
                    meta: p.meta.clone(),
                    since: Instant::now(),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "configd: the stored pending config no longer loads; dropped");
                    None
                }
            }
        });
        let me = running
            .cfg
            .config
            .configd
            .as_ref()
            .and_then(|d| d.get(&opts.name))
            .cloned();
        let listen = match (opts.listen, &me) {
            (Some(a), _) => a,
            (None, Some(b)) => b.address,
            (None, None) => {
                let names: Vec<String> = running
                    .cfg
                    .config
                    .configd
                    .as_ref()
                    .map(|d| d.boxes.iter().map(|b| b.name.clone()).collect())
                    .unwrap_or_default();
                return Err(DaemonError::NotInTree(format!(
                    "box {:?} is not in [[configd.boxes]] of the config it runs (version {}; boxes: {}); start it with --name of one of them, or --listen ADDR",
                    opts.name,
                    running.meta.version,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        };
        let listener = TcpListener::bind(listen).map_err(|source| DaemonError::Bind {
            addr: listen.to_string(),
            source,
        })?;
        let listen = listener.local_addr().map_err(|source| DaemonError::Bind {
            addr: listen.to_string(),
            source,
        })?;
        let socket = opts
            .socket
            .clone()
            .unwrap_or_else(|| dir.join("configd.sock"));
        // We hold the store's lock, so a socket file left there is a dead daemon's.
        let _ = std::fs::remove_file(&socket);
        let local = UnixListener::bind(&socket).map_err(|source| DaemonError::Bind {
            addr: socket.display().to_string(),
            source,
        })?;

        let inner = Arc::new(Inner {
            name: opts.name.clone(),
            store,
            live: Mutex::new(Live {
                running,
                pending,
                last_error: None,
            }),
            tls: Mutex::new(None),
            client_tls: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            next_sub: AtomicU64::new(1),
            hup: opts.hup.clone(),
            seen: Mutex::new(VecDeque::new()),
            wake: (Mutex::new(false), Condvar::new()),
            stop: AtomicBool::new(false),
            conns: AtomicUsize::new(0),
            counters: Counters::default(),
        });
        inner.refresh_server_tls();
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(f)
                .map_err(DaemonError::Thread)
        };
        let i = inner.clone();
        threads.push(spawn(
            "configd-accept",
            Box::new(move || i.serve(listener)),
        )?);
        let i = inner.clone();
        threads.push(spawn(
            "configd-local",
            Box::new(move || i.serve_local(local)),
        )?);
        let i = inner.clone();
        threads.push(spawn(
            "configd-recovery",
            Box::new(move || i.recovery_loop()),
        )?);
        tracing::info!(
            name = %inner.name,
            %listen,
            socket = %socket.display(),
            version = inner.running().meta.version,
            "configd: serving"
        );
        Ok(Daemon {
            inner,
            threads,
            listen,
            socket,
        })
    }

    /// This box's state.
    pub fn status(&self) -> BoxStatus {
        self.inner.status()
    }

    /// A handle that reads the daemon's state from another thread (an admin listener).
    pub fn observer(&self) -> Observer {
        Observer(self.inner.clone())
    }

    /// See [`Observer::metrics`].
    pub fn metrics(&self) -> String {
        self.observer().metrics()
    }

    /// Stops every thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.inner.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.wake_recovery();
        // Unblock the accept loops.
        let _ = TcpStream::connect_timeout(&reachable(self.listen), Duration::from_millis(200));
        let _ = UnixStream::connect(&self.socket);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for s in lock(&self.inner.subscribers).drain(..) {
            let _ = s.out.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Reads a running daemon's state (see [`Daemon::observer`]).
#[derive(Clone)]
pub struct Observer(Arc<Inner>);

impl Observer {
    /// This box's state.
    pub fn status(&self) -> BoxStatus {
        self.0.status()
    }

    /// The daemon's figures in the Prometheus text format: the running and pending
    /// versions, pushes prepared, refused, committed and aborted, switches by recovery,
    /// purges, connections and local daemons.
    pub fn metrics(&self) -> String {
        let st = self.status();
        let c = &self.0.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let b = [("box", st.name.as_str())];
        let mut m = promtext::Metrics::new();
        m.gauge(
            "popnet_configd_running_version",
            "network.version of the config this box runs.",
        )
        .sample(&b, u64::from(st.running.version));
        m.gauge(
            "popnet_configd_running_since_seconds",
            "When this box switched to its running config (Unix time).",
        )
        .sample(&b, st.running.since_ms / 1000);
        m.gauge(
            "popnet_configd_pending_version",
            "network.version of the config held for an undecided push; 0 = none.",
        )
        .sample(&b, st.pending.as_ref().map_or(0, |p| u64::from(p.version)));
        let mut f = m.counter(
            "popnet_configd_prepares_total",
            "PREPAREs of pushed configs by result (held, or refused: bad signature, not newer, unreadable).",
        );
        f.sample(
            &[("box", st.name.as_str()), ("result", "held")],
            g(&c.prepared),
        );
        f.sample(
            &[("box", st.name.as_str()), ("result", "refused")],
            g(&c.prepare_refused),
        );
        let mut f = m.counter(
            "popnet_configd_switches_total",
            "Switches to a new config: on a COMMIT, or by recovery from the parent.",
        );
        f.sample(
            &[("box", st.name.as_str()), ("how", "commit")],
            g(&c.switched_commit),
        );
        f.sample(
            &[("box", st.name.as_str()), ("how", "recovery")],
            g(&c.switched_recovery),
        );
        m.counter(
            "popnet_configd_switch_failures_total",
            "Switches that could not be stored (the box keeps its config).",
        )
        .sample(&b, g(&c.switch_failed));
        m.counter(
            "popnet_configd_aborts_total",
            "Pending configs dropped on an ABORT.",
        )
        .sample(&b, g(&c.aborted));
        m.counter(
            "popnet_configd_purges_total",
            "Purges carried out on this box's POP cache.",
        )
        .sample(&b, g(&c.purges));
        m.gauge(
            "popnet_configd_connections",
            "Connections from boxes and popctl being served now.",
        )
        .sample(&b, self.0.conns.load(Ordering::Relaxed) as u64);
        m.gauge(
            "popnet_configd_error",
            "1 while the box has an error to report (a refused config, a failed recovery); `popctl config status` says which.",
        )
        .sample(&b, u64::from(st.last_error.is_some()));
        let mut f = m.gauge(
            "popnet_configd_local_daemons",
            "Local daemons following this box, by how their last reload went.",
        );
        let count = |ok: Option<bool>| st.local.iter().filter(|d| d.ok == ok).count() as u64;
        f.sample(
            &[("box", st.name.as_str()), ("reload", "ok")],
            count(Some(true)),
        );
        f.sample(
            &[("box", st.name.as_str()), ("reload", "failed")],
            count(Some(false)),
        );
        f.sample(
            &[("box", st.name.as_str()), ("reload", "waiting")],
            count(None),
        );
        m.finish()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What one handler did for this box itself.
struct Own {
    outcome: Outcome,
    message: String,
}

impl Own {
    fn ok(m: impl Into<String>) -> Own {
        Own {
            outcome: Outcome::Ok,
            message: m.into(),
        }
    }
    fn failed(m: impl Into<String>) -> Own {
        Own {
            outcome: Outcome::Failed,
            message: m.into(),
        }
    }
}

impl Inner {
    fn running(&self) -> Held {
        lock(&self.live).running.clone()
    }

    fn status(&self) -> BoxStatus {
        let live = lock(&self.live);
        let pop = live
            .running
            .cfg
            .config
            .configd
            .as_ref()
            .and_then(|d| d.get(&self.name))
            .and_then(|b| b.pop.clone());
        BoxStatus {
            name: self.name.clone(),
            pop,
            running: live.running.meta.clone(),
            pending: live.pending.as_ref().map(|p| p.meta.clone()),
            last_error: live.last_error.clone(),
            local: lock(&self.subscribers)
                .iter()
                .map(|s| LocalDaemon {
                    role: s.role.clone(),
                    pid: s.pid,
                    version: s.version,
                    ok: s.ok,
                    message: s.message.clone(),
                })
                .collect(),
        }
    }

    fn note_error(&self, e: impl Into<String>) {
        let e = e.into();
        tracing::warn!(error = %e, "configd");
        lock(&self.live).last_error = Some(e);
    }

    fn refresh_server_tls(&self) {
        let cfg = self.running().cfg;
        let t = match Tls::from_config(&cfg.config, Some(&self.name)) {
            Ok(t) => t.map(Arc::new),
            Err(e) => {
                self.note_error(format!("TLS: {e}; answering plain TCP only"));
                None
            }
        };
        if let Some(t) = &t
            && !t.serves()
        {
            tracing::warn!(
                "configd: the config has [configd.tls] but no certificate for this box; answering plain TCP only"
            );
        }
        *lock(&self.tls) = t;
    }

    /// Client TLS for connections made under `cfg`.
    fn tls_for(&self, cfg: &SignedConfig) -> Result<Option<Arc<Tls>>, String> {
        let mut cache = lock(&self.client_tls);
        if let Some(t) = cache.get(&cfg.digest) {
            return Ok(t.clone());
        }
        let t = Tls::from_config(&cfg.config, Some(&self.name))
            .map_err(|e| e.to_string())?
            .map(Arc::new);
        if cache.len() >= 4 {
            cache.clear();
        }
        cache.insert(cfg.digest.clone(), t.clone());
        Ok(t)
    }

    fn wake_recovery(&self) {
        let (m, c) = &self.wake;
        *lock(m) = true;
        c.notify_all();
    }

    // ---- the network side ----

    fn serve(self: Arc<Self>, listener: TcpListener) {
        for conn in listener.incoming() {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let tcp = match conn {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(error = %e, "configd: accept failed");
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            if self.conns.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                self.conns.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("configd: too many connections; one closed");
                continue;
            }
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("configd-conn".into())
                .spawn(move || {
                    let peer = tcp.peer_addr().ok();
                    if let Err(e) = me.connection(tcp) {
                        tracing::debug!(?peer, error = %e, "configd: connection ended");
                    }
                    me.conns.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                self.conns.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn connection(&self, tcp: TcpStream) -> Result<(), String> {
        let tls = lock(&self.tls).clone();
        let mut s = net::accept(tcp, tls.as_deref(), IO_TIMEOUT).map_err(|e| e.to_string())?;
        let req: Request = match wire::read_frame(&mut s) {
            Ok(r) => r,
            Err(e) => {
                let _ = wire::write_frame(
                    &mut s,
                    &Response::Error {
                        message: format!("bad request: {e}"),
                    },
                );
                return Err(e.to_string());
            }
        };
        let resp = self.handle(req, &s);
        // Handlers may have used most of the peer's patience; the answer is small.
        let _ = s.set_timeout(IO_TIMEOUT);
        wire::write_frame(&mut s, &resp).map_err(|e| e.to_string())
    }

    fn handle(&self, req: Request, s: &Stream) -> Response {
        match req {
            Request::Status => Response::Status {
                status: Box::new(self.status()),
            },
            Request::Fetch => {
                let running = self.running();
                let require = running
                    .cfg
                    .config
                    .configd
                    .as_ref()
                    .and_then(|d| d.tls.as_ref())
                    .is_some_and(|t| t.mode == TlsMode::Require);
                if require && !s.peer_is_box() {
                    return Response::Error {
                        message: "this network requires TLS with a box certificate to hand out its config".to_string(),
                    };
                }
                Response::Config {
                    text: running.cfg.text.clone(),
                }
            }
            Request::Tree { budget_ms } => {
                let start = Instant::now();
                let running = self.running().cfg;
                let boxes = self.with_children(
                    &running,
                    Own::ok(""),
                    start,
                    Duration::from_millis(budget_ms),
                    |b| Request::Tree {
                        budget_ms: b.as_millis() as u64,
                    },
                );
                Response::Boxes { boxes }
            }
            Request::Prepare {
                cmd,
                text,
                budget_ms,
            } => {
                let start = Instant::now();
                Response::Boxes {
                    boxes: self.prepare(&cmd, text, start, Duration::from_millis(budget_ms)),
                }
            }
            Request::Commit { cmd, budget_ms } => {
                let start = Instant::now();
                let (own, tree) = self.commit(&cmd);
                Response::Boxes {
                    boxes: self.with_children(
                        &tree,
                        own,
                        start,
                        Duration::from_millis(budget_ms),
                        |b| Request::Commit {
                            cmd: cmd.clone(),
                            budget_ms: b.as_millis() as u64,
                        },
                    ),
                }
            }
            Request::Abort { cmd, budget_ms } => {
                let start = Instant::now();
                let (own, tree) = self.abort(&cmd);
                Response::Boxes {
                    boxes: self.with_children(
                        &tree,
                        own,
                        start,
                        Duration::from_millis(budget_ms),
                        |b| Request::Abort {
                            cmd: cmd.clone(),
                            budget_ms: b.as_millis() as u64,
                        },
                    ),
                }
            }
            Request::Purge { cmd, budget_ms } => {
                let start = Instant::now();
                let budget = Duration::from_millis(budget_ms);
                let running = self.running().cfg;
                let (own, pop, purged) = self.purge(&cmd, &running, child_budget(budget));
                if purged.is_some() {
                    bump(&self.counters.purges);
                }
                let mut boxes =
                    self.with_children(&running, own, start, budget, |b| Request::Purge {
                        cmd: cmd.clone(),
                        budget_ms: b.as_millis() as u64,
                    });
                if let Some(first) = boxes.first_mut() {
                    first.pop = pop;
                    first.purged = purged;
                }
                Response::Boxes { boxes }
            }
        }
    }

    fn own_report(&self, own: Own) -> BoxReport {
        BoxReport {
            name: self.name.clone(),
            outcome: own.outcome,
            message: own.message,
            status: Some(self.status()),
            at_ms: unix_ms(),
            pop: None,
            purged: None,
        }
    }

    /// This box's report, then the reports of the subtree below it in `tree`, asked
    /// with `req` in parallel within what is left of `budget`.
    fn with_children(
        &self,
        tree: &SignedConfig,
        own: Own,
        start: Instant,
        budget: Duration,
        req: impl Fn(Duration) -> Request + Sync,
    ) -> Vec<BoxReport> {
        let mut out = vec![self.own_report(own)];
        let Some(d) = &tree.config.configd else {
            return out;
        };
        let children = d.children(&self.name);
        if children.is_empty() {
            return out;
        }
        let left = budget.saturating_sub(start.elapsed());
        let cb = child_budget(left);
        let wait = child_wait(left, cb);
        let tls = match self.tls_for(tree) {
            Ok(t) => t,
            Err(e) => {
                for c in children {
                    for b in d.subtree(&c.name) {
                        out.push(BoxReport::unreached(
                            &b.name,
                            format!("not asked: box {} cannot set up TLS: {e}", self.name),
                        ));
                    }
                }
                return out;
            }
        };
        let results: Vec<Vec<BoxReport>> = std::thread::scope(|scope| {
            let handles: Vec<_> = children
                .iter()
                .map(|c| {
                    let req = req(cb);
                    let tls = tls.clone();
                    let c: &ConfigBox = c;
                    scope.spawn(move || {
                        let answer = client::call(c.address, &c.name, tls.as_deref(), &req, wait);
                        subtree_reports(d, c, answer)
                    })
                })
                .collect();
            handles
                .into_iter()
                .zip(&children)
                .map(|(h, c)| {
                    h.join().unwrap_or_else(|_| {
                        vec![BoxReport::unreached(
                            &c.name,
                            "internal error while asking it",
                        )]
                    })
                })
                .collect()
        });
        out.extend(results.into_iter().flatten());
        out
    }

    // ---- the two phases ----

    fn prepare(
        &self,
        cmd: &SignedCommand,
        text: String,
        start: Instant,
        budget: Duration,
    ) -> Vec<BoxReport> {
        let running = self.running();
        let checked = (|| -> Result<(Arc<SignedConfig>, String, String), String> {
            let (command, _who) = cmd
                .verify(&running.cfg.config, unix_ms())
                .map_err(|e| e.to_string())?;
            let Op::Prepare {
                push,
                version,
                digest,
            } = command.op
            else {
                return Err("not a prepare command".to_string());
            };
            if crate::sign::digest(text.as_bytes()) != digest {
                return Err(
                    "the config sent is not the one the command names (digest differs)".to_string(),
                );
            }
            let new = SignedConfig::parse(text, &format!("pushed config version {version}"))
                .map_err(|e| e.to_string())?;
            let signer = new.accept(&running.cfg.config).map_err(|e| e.to_string())?;
            Ok((Arc::new(new), push, signer))
        })();
        let (new, push, signer) = match checked {
            Ok(x) => x,
            Err(e) => {
                // Without a readable new config, the subtree is the running one's.
                bump(&self.counters.prepare_refused);
                self.note_error(format!("refused a pushed config: {e}"));
                let mut out = vec![self.own_report(Own::failed(e))];
                if let Some(d) = &running.cfg.config.configd {
                    for b in d.subtree(&self.name).into_iter().skip(1) {
                        out.push(BoxReport::unreached(
                            &b.name,
                            format!("not asked: box {} refused the config", self.name),
                        ));
                    }
                }
                return out;
            }
        };
        let own = match self.hold_pending(&new, &push, &signer) {
            Ok(m) => {
                bump(&self.counters.prepared);
                Own::ok(m)
            }
            Err(e) => {
                bump(&self.counters.prepare_refused);
                let mut out = vec![self.own_report(Own::failed(e))];
                if let Some(d) = &new.config.configd {
                    for b in d.subtree(&self.name).into_iter().skip(1) {
                        out.push(BoxReport::unreached(
                            &b.name,
                            format!("not asked: box {} could not hold the config", self.name),
                        ));
                    }
                }
                return out;
            }
        };
        let text = new.text.clone();
        self.with_children(&new, own, start, budget, |b| Request::Prepare {
            cmd: cmd.clone(),
            text: text.clone(),
            budget_ms: b.as_millis() as u64,
        })
    }

    /// Stores `new` as the pending config of `push`.
    fn hold_pending(
        &self,
        new: &Arc<SignedConfig>,
        push: &str,
        signer: &str,
    ) -> Result<String, String> {
        let mut live = lock(&self.live);
        if let Some(p) = &live.pending {
            if p.meta.push == push && p.meta.digest == new.digest {
                return Ok(format!(
                    "holds version {} (signed by {signer}) for this push already",
                    new.version()
                ));
            }
            let expiry = pending_expiry(&p.cfg);
            if p.since.elapsed() < expiry {
                return Err(format!(
                    "busy: push {} of version {} (signed by {}) is pending here for {:.1} s; wait until it is committed or aborted (at most {:.0} s more)",
                    short(&p.meta.push),
                    p.meta.version,
                    p.meta.signer,
                    p.since.elapsed().as_secs_f64(),
                    expiry.saturating_sub(p.since.elapsed()).as_secs_f64()
                ));
            }
            tracing::info!(push = %p.meta.push, "configd: an undecided pending config expired and is replaced");
        }
        let meta = Pending {
            version: new.version(),
            digest: new.digest.clone(),
            push: push.to_string(),
            signer: signer.to_string(),
            since_ms: unix_ms(),
        };
        let state = State {
            running: Stored {
                meta: live.running.meta.clone(),
                text: live.running.cfg.text.clone(),
            },
            pending: Some(Stored {
                meta: meta.clone(),
                text: new.text.clone(),
            }),
        };
        self.store
            .save(&state)
            .map_err(|e| format!("cannot store the config: {e}"))?;
        live.pending = Some(PendingHeld {
            cfg: new.clone(),
            meta,
            since: Instant::now(),
        });
        live.last_error = None;
        tracing::info!(version = new.version(), push = %push, signer, "configd: prepared");
        Ok(format!(
            "holds version {} (signed by {signer}) as pending",
            new.version()
        ))
    }

    /// Switches to the pending config of the command's push; returns this box's
    /// outcome and the config whose tree the COMMIT goes down.
    fn commit(&self, cmd: &SignedCommand) -> (Own, Arc<SignedConfig>) {
        let running = self.running();
        let (push, version) = match cmd.verify(&running.cfg.config, unix_ms()) {
            Ok((c, _)) => match c.op {
                Op::Commit { push, version } => (push, version),
                _ => return (Own::failed("not a commit command"), running.cfg),
            },
            Err(e) => return (Own::failed(e.to_string()), running.cfg),
        };
        // Running and pending read together: recovery may have switched this box to
        // the committed version (and dropped the pending one) since `running` above.
        let (running, pending) = {
            let live = lock(&self.live);
            (live.running.clone(), live.pending.clone())
        };
        match pending {
            Some(p) if p.meta.push == push => match self.switch(
                Held {
                    cfg: p.cfg.clone(),
                    meta: Running {
                        version: p.meta.version,
                        digest: p.meta.digest.clone(),
                        signer: p.meta.signer.clone(),
                        since_ms: unix_ms(),
                    },
                },
                "commit",
            ) {
                Ok(()) => (Own::ok(format!("switched to version {version}")), p.cfg),
                Err(e) => (Own::failed(e), running.cfg),
            },
            _ if running.meta.version >= version => (
                Own::ok(format!("runs version {} already", running.meta.version)),
                running.cfg,
            ),
            _ => {
                self.wake_recovery();
                (
                    Own::failed(format!(
                        "holds nothing for push {} (it runs version {}); it fetches the committed version from its parent",
                        short(&push),
                        running.meta.version
                    )),
                    running.cfg,
                )
            }
        }
    }

    fn abort(&self, cmd: &SignedCommand) -> (Own, Arc<SignedConfig>) {
        let running = self.running();
        let push = match cmd.verify(&running.cfg.config, unix_ms()) {
            Ok((c, _)) => match c.op {
                Op::Abort { push } => push,
                _ => return (Own::failed("not an abort command"), running.cfg),
            },
            Err(e) => return (Own::failed(e.to_string()), running.cfg),
        };
        let mut live = lock(&self.live);
        match &live.pending {
            Some(p) if p.meta.push == push => {
                let tree = p.cfg.clone();
                let state = State {
                    running: Stored {
                        meta: live.running.meta.clone(),
                        text: live.running.cfg.text.clone(),
                    },
                    pending: None,
                };
                if let Err(e) = self.store.save(&state) {
                    return (Own::failed(format!("cannot store: {e}")), tree);
                }
                live.pending = None;
                bump(&self.counters.aborted);
                tracing::info!(push = %push, "configd: aborted");
                (
                    Own::ok(format!(
                        "dropped the pending config; runs version {}",
                        live.running.meta.version
                    )),
                    tree,
                )
            }
            _ => (
                Own::ok(format!(
                    "held nothing for this push; runs version {}",
                    live.running.meta.version
                )),
                running.cfg,
            ),
        }
    }

    /// Makes `to` the running config (durably), then tells the local daemons.
    fn switch(&self, to: Held, why: &str) -> Result<(), String> {
        {
            let mut live = lock(&self.live);
            if to.meta.version <= live.running.meta.version {
                return Ok(());
            }
            let keep_pending = live
                .pending
                .as_ref()
                .filter(|p| p.meta.version > to.meta.version)
                .cloned();
            let state = State {
                running: Stored {
                    meta: to.meta.clone(),
                    text: to.cfg.text.clone(),
                },
                pending: keep_pending.as_ref().map(|p| Stored {
                    meta: p.meta.clone(),
                    text: p.cfg.text.clone(),
                }),
            };
            if let Err(e) = self.store.save(&state) {
                bump(&self.counters.switch_failed);
                return Err(format!("cannot store the switch: {e}"));
            }
            live.running = to.clone();
            live.pending = keep_pending;
            live.last_error = None;
        }
        bump(if why == "recovery" {
            &self.counters.switched_recovery
        } else {
            &self.counters.switched_commit
        });
        tracing::info!(version = to.meta.version, signer = %to.meta.signer, why, "configd: switched");
        self.refresh_server_tls();
        self.notify(&to);
        Ok(())
    }

    // ---- purge ----

    /// Purges this box's POP cache; returns the outcome, the POP and the count.
    fn purge(
        &self,
        cmd: &SignedCommand,
        running: &SignedConfig,
        timeout: Duration,
    ) -> (Own, Option<String>, Option<u64>) {
        let (command, who) = match cmd.verify(&running.config, unix_ms()) {
            Ok(x) => x,
            Err(e) => return (Own::failed(e.to_string()), None, None),
        };
        let Op::Purge { purge } = &command.op else {
            return (Own::failed("not a purge command"), None, None);
        };
        {
            let mut seen = lock(&self.seen);
            let now = unix_ms();
            while seen
                .front()
                .is_some_and(|(_, at)| at + 2 * crate::sign::COMMAND_MAX_AGE_MS < now)
            {
                seen.pop_front();
            }
            if seen.iter().any(|(id, _)| id == &command.id) {
                return (
                    Own::failed("this purge command was carried out already (a replay?)"),
                    None,
                    None,
                );
            }
            if seen.len() >= 10_000 {
                seen.pop_front();
            }
            seen.push_back((command.id.clone(), command.issued_ms));
        }
        let cfg = &running.config;
        let pop = cfg
            .configd
            .as_ref()
            .and_then(|d| d.get(&self.name))
            .and_then(|b| b.pop.clone());
        let Some(pop_name) = pop else {
            return (Own::ok("no POP on this box"), None, None);
        };
        let Some(cache) = cfg.pop(&pop_name).and_then(|p| p.cache.as_ref()) else {
            return (Own::ok(format!("POP {pop_name} runs no cache")), None, None);
        };
        let body = serde_json::to_vec(purge).unwrap_or_default();
        let token = cache.admin_token.as_ref().map(|t| t.as_bytes().to_vec());
        match crate::http::post_json(
            reachable(cache.admin),
            "/purge",
            token.as_deref(),
            &body,
            timeout.min(Duration::from_secs(5)),
        ) {
            Ok(answer) => {
                let n = serde_json::from_slice::<serde_json::Value>(&answer)
                    .ok()
                    .and_then(|v| v.get("purged").and_then(serde_json::Value::as_u64));
                tracing::info!(pop = %pop_name, purged = ?n, by = %who, "configd: purged the POP cache");
                (Own::ok("purged"), Some(pop_name), n)
            }
            Err(e) => (Own::failed(e), Some(pop_name), None),
        }
    }

    // ---- recovery ----

    fn recovery_loop(self: Arc<Self>) {
        // A box that starts (again) checks at once.
        let mut first = true;
        while !self.stop.load(Ordering::Relaxed) {
            if !first {
                let interval = self
                    .running()
                    .cfg
                    .config
                    .configd
                    .as_ref()
                    .map_or(Duration::from_secs(5), |d| d.recovery_interval);
                let (m, c) = &self.wake;
                let mut woken = lock(m);
                if !*woken {
                    woken = c
                        .wait_timeout(woken, interval)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                *woken = false;
            }
            first = false;
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            self.expire_pending();
            self.recover_once();
        }
    }

    fn expire_pending(&self) {
        let mut live = lock(&self.live);
        let Some(p) = &live.pending else { return };
        if p.since.elapsed() < pending_expiry(&p.cfg) {
            return;
        }
        tracing::info!(push = %p.meta.push, version = p.meta.version, "configd: a pending config was neither committed nor aborted in time; dropped");
        let state = State {
            running: Stored {
                meta: live.running.meta.clone(),
                text: live.running.cfg.text.clone(),
            },
            pending: None,
        };
        if self.store.save(&state).is_ok() {
            live.pending = None;
        }
    }

    /// Asks the nearest box above (or the masters) for its version; fetches and
    /// switches to a newer one.
    fn recover_once(&self) {
        let (running, pending) = {
            let live = lock(&self.live);
            (live.running.clone(), live.pending.clone())
        };
        let tree = pending
            .as_ref()
            .map_or(running.cfg.clone(), |p| p.cfg.clone());
        let Some(d) = &tree.config.configd else {
            return;
        };
        let mut sources: Vec<&ConfigBox> = d.ancestors(&self.name);
        for m in d.master_boxes() {
            if m.name != self.name && !sources.iter().any(|s| s.name == m.name) {
                sources.push(m);
            }
        }
        let tls = match self.tls_for(&tree) {
            Ok(t) => t,
            Err(e) => {
                self.note_error(format!("recovery: TLS: {e}"));
                return;
            }
        };
        for src in sources {
            let status = match client::call(
                src.address,
                &src.name,
                tls.as_deref(),
                &Request::Status,
                RECOVERY_CALL,
            ) {
                Ok(Response::Status { status }) => *status,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(source = %src.name, error = %e, "configd: recovery source not reachable");
                    continue;
                }
            };
            if status.running.version <= running.meta.version {
                return;
            }
            match self.fetch_from(src, tls.as_deref(), &running) {
                Ok(v) => {
                    tracing::info!(version = v, from = %src.name, "configd: recovered the committed version");
                }
                Err(e) => self.note_error(format!(
                    "box {} runs version {}, but fetching it failed: {e}",
                    src.name, status.running.version
                )),
            }
            return;
        }
    }

    fn fetch_from(
        &self,
        src: &ConfigBox,
        tls: Option<&Tls>,
        running: &Held,
    ) -> Result<u32, String> {
        let text = match client::call(src.address, &src.name, tls, &Request::Fetch, RECOVERY_CALL) {
            Ok(Response::Config { text }) => text,
            Ok(_) => return Err("it answered something else than a config".to_string()),
            Err(e) => return Err(e.to_string()),
        };
        let new = SignedConfig::parse(text, &format!("the config of box {}", src.name))
            .map_err(|e| e.to_string())?;
        let signer = new.accept(&running.cfg.config).map_err(|e| e.to_string())?;
        let v = new.version();
        self.switch(
            Held {
                meta: Running {
                    version: v,
                    digest: new.digest.clone(),
                    signer,
                    since_ms: unix_ms(),
                },
                cfg: Arc::new(new),
            },
            "recovery",
        )?;
        Ok(v)
    }

    // ---- local daemons ----

    fn serve_local(self: Arc<Self>, listener: UnixListener) {
        for conn in listener.incoming() {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(stream) = conn else { continue };
            let me = self.clone();
            let _ = std::thread::Builder::new()
                .name("configd-sub".into())
                .spawn(move || me.subscriber(stream));
        }
    }

    fn subscriber(&self, mut stream: UnixStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let (role, pid) = match wire::read_frame::<Local>(&mut stream) {
            Ok(Local::Subscribe { role, pid }) => (role, pid),
            Ok(_) => {
                tracing::debug!("configd: local peer did not subscribe first");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "configd: local peer");
                return;
            }
        };
        let Ok(mut out) = stream.try_clone() else {
            return;
        };
        let id = self.next_sub.fetch_add(1, Ordering::Relaxed);
        {
            let mut subs = lock(&self.subscribers);
            let running = self.running();
            if wire::write_frame(
                &mut out,
                &Local::Config {
                    version: running.meta.version,
                    text: running.cfg.text.clone(),
                },
            )
            .is_err()
            {
                return;
            }
            subs.push(Subscriber {
                id,
                role: role.clone(),
                pid,
                out,
                version: None,
                ok: None,
                message: None,
            });
        }
        tracing::info!(%role, pid, "configd: a local daemon subscribed");
        let _ = stream.set_read_timeout(None);
        loop {
            match wire::read_frame::<Local>(&mut stream) {
                Ok(Local::Reloaded {
                    version,
                    ok,
                    message,
                }) => {
                    if ok {
                        tracing::info!(%role, pid, version, "configd: local daemon runs the version");
                    } else {
                        tracing::warn!(%role, pid, version, %message, "configd: local daemon kept its old config");
                    }
                    if let Some(s) = lock(&self.subscribers).iter_mut().find(|s| s.id == id) {
                        s.version = Some(version);
                        s.ok = Some(ok);
                        s.message = Some(message);
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        lock(&self.subscribers).retain(|s| s.id != id);
        tracing::info!(%role, pid, "configd: a local daemon left");
    }

    fn notify(&self, to: &Held) {
        let msg = Local::Config {
            version: to.meta.version,
            text: to.cfg.text.clone(),
        };
        lock(&self.subscribers).retain_mut(|s| {
            s.ok = None;
            s.message = Some(format!("told about version {}", to.meta.version));
            match wire::write_frame(&mut s.out, &msg) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(role = %s.role, pid = s.pid, error = %e, "configd: a local daemon could not be told; dropped");
                    false
                }
            }
        });
        for path in &self.hup {
            if let Err(e) = hup(path) {
                self.note_error(format!("SIGHUP via {}: {e}", path.display()));
            }
        }
    }
}

/// Sends SIGHUP to the process whose pid is in `pidfile`.
fn hup(pidfile: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(pidfile).map_err(|e| e.to_string())?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{:?} is not a pid", text.trim()))?;
    if pid <= 1 {
        return Err(format!("{pid} is not a daemon's pid"));
    }
    // SAFETY: kill has no memory preconditions; `pid` is a positive process id.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    if rc != 0 {
        return Err(format!("pid {pid}: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// How long an undecided pending config is kept.
fn pending_expiry(cfg: &SignedConfig) -> Duration {
    let t = cfg
        .config
        .configd
        .as_ref()
        .map_or(Duration::from_secs(10), |d| d.timeout);
    (2 * t).max(Duration::from_secs(2))
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// The reports of `child`'s subtree from its answer (or its failure): only boxes of that
/// subtree count, and each of them is reported once.
pub(crate) fn subtree_reports(
    d: &popnet_config::Configd,
    child: &ConfigBox,
    answer: Result<Response, CallError>,
) -> Vec<BoxReport> {
    let names: Vec<&str> = d
        .subtree(&child.name)
        .into_iter()
        .map(|b| b.name.as_str())
        .collect();
    let mut got: Vec<BoxReport> = match answer {
        Ok(Response::Boxes { boxes }) => {
            let mut seen = HashSet::new();
            boxes
                .into_iter()
                .filter(|b| names.contains(&b.name.as_str()) && seen.insert(b.name.clone()))
                .collect()
        }
        Ok(_) => vec![BoxReport::unreached(
            &child.name,
            "answered something else than box reports",
        )],
        Err(e) => vec![BoxReport::unreached(&child.name, e.to_string())],
    };
    for n in names {
        if !got.iter().any(|b| b.name == n) {
            let why = if n == child.name {
                "its answer did not report on it".to_string()
            } else {
                format!("not reached: box {} did not pass it on", child.name)
            };
            got.push(BoxReport::unreached(n, why));
        }
    }
    got
}
