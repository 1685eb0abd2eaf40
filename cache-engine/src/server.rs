//! Starting and stopping the cache role: listeners, workers, the store, the fetchers, the admin listener.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use popnet_config::Config;
use socket2::{Domain, Protocol, Socket, Type};

use crate::access_log::AccessLog;
use crate::admin;
use crate::coalesce::{Mailbox, MissLock, MissTable};
use crate::origin::{FetchContext, Fetchers};
use crate::purge::PurgeLog;
use crate::routes::Routes;
use crate::selector::ConfigSelector;
use crate::stats::Counters;
use crate::store::disk::DiskError;
use crate::store::{DiskSettings, DiskTier, RamTier, S3Fifo, Store};
use crate::worker::Worker;

/// Limits and timeouts of the client side, from `[pops.cache]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_connections: usize,
    pub max_request_body: u64,
    pub head_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
}

/// What the workers, fetchers and admin listener share.
pub struct Shared {
    pub pop: Arc<str>,
    pub settings: Settings,
    /// Host routing; replaced whole by a config reload.
    pub routes: ArcSwap<Routes>,
    pub store: Arc<Store>,
    pub misses: Arc<dyn MissLock>,
    pub fetchers: Fetchers,
    pub purges: Arc<PurgeLog>,
    pub access_log: Option<AccessLog>,
    pub stop: AtomicBool,
    /// Client connections open now, over every worker.
    pub open: AtomicUsize,
    pub counters: Mutex<Vec<Arc<Counters>>>,
    pub started: Instant,
    pub workers: usize,
}

impl Shared {
    /// Every worker's counters.
    pub fn all_counters(&self) -> Vec<Arc<Counters>> {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Why the cache role could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}; {hint}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error("{0}")]
    Pop(String),
    #[error(
        "cannot set up io_uring: {0}; check that the kernel allows it (sysctl kernel.io_uring_disabled must be 0) and that RLIMIT_MEMLOCK is not tiny"
    )]
    Uring(#[source] io::Error),
    #[error(
        "cannot open the access log {path}: {source}; fix access_log in [pops.cache] or create its directory"
    )]
    AccessLog {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start a thread: {0}")]
    Thread(#[source] io::Error),
    #[error(
        "cannot start the disk tier: {0}; fix disk_path / disk_bytes in [pops.cache] (the path must be a writable file or block device with room for disk_bytes), or leave disk_path out to run RAM only"
    )]
    Disk(#[source] DiskError),
}

impl StartError {
    pub(crate) fn bind(addr: SocketAddr, what: &'static str, source: io::Error) -> StartError {
        let hint = match source.kind() {
            io::ErrorKind::AddrInUse => {
                "another process holds it (is popnet or another web server already running?); stop it or change the listen address"
            }
            io::ErrorKind::PermissionDenied => "ports below 1024 need root or CAP_NET_BIND_SERVICE",
            io::ErrorKind::AddrNotAvailable => {
                "this host has no such address; fix the address in the config"
            }
            _ => "check the address in the config",
        };
        StartError::Bind {
            addr,
            what,
            source,
            hint,
        }
    }
}

/// Overrides of what the config says, from the command line.
#[derive(Debug, Clone, Default)]
pub struct CacheOptions {
    /// Which POP this box is (needed when several POPs run a cache).
    pub pop: Option<String>,
    pub listen: Option<Vec<SocketAddr>>,
    pub admin: Option<SocketAddr>,
    /// Event loops; default `[pops.cache] workers`, 0 = one per core.
    pub workers: Option<usize>,
    /// Where access-log lines go besides `[pops.cache] access_log` (popnet's log shipper).
    pub log_sink: Option<crate::access_log::LogSink>,
}

/// A running cache role.
pub struct CacheServer {
    shared: Arc<Shared>,
    /// The config in use and the command-line overrides (for reloads).
    pub(crate) config: Mutex<Config>,
    pub(crate) opts: CacheOptions,
    mailboxes: Vec<Arc<Mailbox>>,
    threads: Vec<JoinHandle<()>>,
    pub pop: String,
    /// The client listeners, as bound (port 0 resolved), one per configured address.
    pub listen: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub workers: usize,
}

/// Binds once without SO_REUSEPORT to make sure nobody else holds the address (two
/// servers sharing a port through SO_REUSEPORT would each get half the connections).
fn check_free(addr: SocketAddr) -> Result<(), StartError> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| StartError::bind(addr, "http", e))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)
            .map_err(|e| StartError::bind(addr, "http", e))?;
    }
    s.bind(&addr.into())
        .map_err(|e| StartError::bind(addr, "http", e))
}

/// A listener in the SO_REUSEPORT group of `addr`.
fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

impl CacheServer {
    /// Builds the cache of this box's POP from `cfg`, binds every socket and starts
    /// every thread.
    pub fn start(cfg: &Config, opts: &CacheOptions) -> Result<CacheServer, StartError> {
        let pop = cfg
            .local_pop(opts.pop.as_deref(), |p| p.cache.is_some())
            .map_err(StartError::Pop)?;
        let svc = pop.cache.as_ref().ok_or_else(|| {
            StartError::Pop(format!(
                "POP {:?} runs no cache (it has no [pops.cache] table)",
                pop.name
            ))
        })?;
        let listen = opts.listen.clone().unwrap_or_else(|| svc.listen.clone());
        let admin_addr = opts.admin.unwrap_or(svc.admin);
        let workers = match opts.workers.unwrap_or(svc.workers) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };

        // Bind everything before starting anything, so a bad address fails cleanly.
        let mut per_worker: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut bound = Vec::new();
        for &addr in &listen {
            if addr.port() != 0 {
                check_free(addr)?;
            }
            let first = bind_reuseport(addr).map_err(|e| StartError::bind(addr, "http", e))?;
            let actual = first
                .local_addr()
                .map_err(|e| StartError::bind(addr, "http", e))?;
            bound.push(actual);
            per_worker[0].push(first);
            for w in per_worker.iter_mut().skip(1) {
                w.push(bind_reuseport(actual).map_err(|e| StartError::bind(actual, "http", e))?);
            }
        }
        let admin_listener =
            TcpListener::bind(admin_addr).map_err(|e| StartError::bind(admin_addr, "admin", e))?;
        let admin = admin_listener
            .local_addr()
            .map_err(|e| StartError::bind(admin_addr, "admin", e))?;
        let access_log = AccessLog::new(
            svc.access_log.as_deref(),
            opts.log_sink.as_ref().map(|s| s.0.clone()),
        )
        .map_err(|source| StartError::AccessLog {
            path: svc.access_log.clone().unwrap_or_default(),
            source,
        })?;

        let via = format!("1.1 {} (popnet)", pop.name);
        let ram = Arc::new(RamTier::new(svc.ram_bytes, S3Fifo::new(svc.ram_bytes)));
        let store = Arc::new(match &svc.disk_path {
            None => Store::new(ram, Vec::new()),
            Some(path) => {
                let disk = DiskTier::open(&DiskSettings {
                    path: path.clone(),
                    bytes: svc.disk_bytes,
                    segment_bytes: svc.disk_segment_bytes,
                    promote_hits: svc.disk_promote_hits,
                    promote_max_bytes: svc.disk_promote_max_bytes.min(svc.ram_bytes / 2),
                    max_object_bytes: svc.max_object_bytes,
                    via: via.clone(),
                })
                .map_err(StartError::Disk)?;
                Store::with_disk(ram, Arc::new(disk))
            }
        });
        let misses: Arc<dyn MissLock> = Arc::new(MissTable::new());
        let purges = Arc::new(PurgeLog::default());
        let ctx = Arc::new(FetchContext::new(
            Arc::new(ConfigSelector::new()),
            store.clone(),
            misses.clone(),
            purges.clone(),
            svc.origin_connect_timeout,
            svc.origin_timeout,
            svc.max_object_bytes,
            via,
        ));
        let shared = Arc::new(Shared {
            pop: pop.name.as_str().into(),
            settings: Settings {
                max_connections: svc.max_connections,
                max_request_body: svc.max_request_body,
                head_timeout: svc.head_timeout,
                body_timeout: svc.body_timeout,
                idle_timeout: svc.idle_timeout,
                send_timeout: svc.send_timeout,
            },
            routes: ArcSwap::from_pointee(Routes::build(cfg, &pop.name)),
            store,
            misses,
            fetchers: Fetchers::new(ctx),
            purges,
            access_log,
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            counters: Mutex::new(Vec::new()),
            started: Instant::now(),
            workers,
        });

        let mut server = CacheServer {
            shared: shared.clone(),
            config: Mutex::new(cfg.clone()),
            opts: opts.clone(),
            mailboxes: Vec::new(),
            threads: Vec::new(),
            pop: pop.name.clone(),
            listen: bound,
            admin,
            workers,
        };
        let started = (|| -> Result<(), StartError> {
            for (id, listeners) in per_worker.into_iter().enumerate() {
                let mailbox = Arc::new(Mailbox::new().map_err(StartError::Uring)?);
                let counters = Arc::new(Counters::default());
                shared
                    .counters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(counters.clone());
                server.mailboxes.push(mailbox.clone());
                let (tx, rx) = std::sync::mpsc::channel::<Result<(), io::Error>>();
                let sh = shared.clone();
                let t = std::thread::Builder::new()
                    .name(format!("cache-{id}"))
                    .spawn(move || {
                        let w = match Worker::new(id, sh.clone(), listeners, mailbox, counters) {
                            Ok(w) => {
                                let _ = tx.send(Ok(()));
                                w
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        };
                        if let Err(e) = w.run() {
                            tracing::error!(worker = id, error = %e, "cache worker stopped");
                        }
                    })
                    .map_err(StartError::Thread)?;
                server.threads.push(t);
                match rx.recv() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(StartError::Uring(e)),
                    Err(_) => {
                        return Err(StartError::Uring(io::Error::other(
                            "the worker thread ended during start-up",
                        )));
                    }
                }
            }
            server.threads.push(
                admin::start(
                    admin_listener,
                    admin::AdminContext {
                        shared: shared.clone(),
                        token: svc.admin_token.as_ref().map(|t| t.as_bytes().to_vec()),
                    },
                )
                .map_err(StartError::Thread)?,
            );
            Ok(())
        })();
        match started {
            Ok(()) => Ok(server),
            Err(e) => {
                server.stop_threads();
                Err(e)
            }
        }
    }

    /// What the workers share (for inspection and tests).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn stop_threads(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for m in &self.mailboxes {
            m.ring();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Workers are gone: write what the disk tier has queued and seal it.
        self.shared.store.shutdown();
    }

    /// Stops every worker and the admin listener and waits for them. Origin fetches in
    /// progress finish (or time out) on their own threads.
    pub fn stop(mut self) {
        self.stop_threads();
    }
}

impl Drop for CacheServer {
    fn drop(&mut self) {
        self.stop_threads();
    }
}
