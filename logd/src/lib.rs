//! The log server (`popnet logd`): receives record batches, stores rollups and raw records per customer, bills, answers queries, serves NetView (the web UI).
//!
//! - [`ingest`]: the TCP listener for batches ([`logship::wire`]), acknowledging each
//!   once it is durable;
//! - [`store`]: SQLite rollups per minute and hour, raw records in zstd files per
//!   customer and hour, exactly-once ingest, queries and bills;
//! - [`api`]: the admin listener: JSON queries for popctl and `/metrics`;
//! - [`netview`]: the web UI for customers and admins, on its own listener.

pub mod api;
pub mod http;
pub mod ingest;
pub mod netview;
pub mod rollup;
pub mod store;
pub mod time;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use popnet_config::{Config, LogServer};

use crate::http::HttpCounters;
use crate::ingest::IngestCounters;
use crate::store::{Scope, Store};

/// Overrides of the config, from the command line.
#[derive(Debug, Clone, Default)]
pub struct LogdOptions {
    /// Which `[[log_servers]]` entry this is; default: the only one.
    pub name: Option<String>,
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// NetView listener instead of the config's (`Some` also turns it on).
    pub netview: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// NetView users file; default `<data_dir>/netview-users.toml`.
    pub users: Option<PathBuf>,
    /// The text of the config (as signed, when it came from configd): NetView's origin
    /// form edits it. None: the form says it cannot change the config.
    pub config_text: Option<String>,
}

/// Why the log server cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogdError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Auth(#[from] netview::auth::AuthError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The log server entry `name` of a config (or the only one).
pub fn log_server<'c>(cfg: &'c Config, name: Option<&str>) -> Result<&'c LogServer, String> {
    match name {
        Some(n) => cfg.log_servers.iter().find(|l| l.name == n).ok_or_else(|| {
            let names: Vec<&str> = cfg.log_servers.iter().map(|l| l.name.as_str()).collect();
            format!(
                "no log server is named {n:?}; the config has {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        }),
        None => match cfg.log_servers.as_slice() {
            [one] => Ok(one),
            [] => Err("the config has no [[log_servers]]; add one".into()),
            _ => Err("the config has several log servers; say which with --name".into()),
        },
    }
}

/// The config the log server runs, and its text when known.
struct Running {
    cfg: Arc<Config>,
    text: Option<Arc<str>>,
}

/// What every handler shares.
pub struct Ctx {
    pub name: String,
    running: RwLock<Running>,
    pub store: Arc<Store>,
    pub ingest: Arc<IngestCounters>,
    pub admin_http: Arc<HttpCounters>,
    pub netview_http: Arc<HttpCounters>,
    pub netview: netview::Counters,
    pub started: Instant,
    pub token: Option<Vec<u8>>,
}

impl Ctx {
    /// The current config.
    pub fn config(&self) -> Arc<Config> {
        self.running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .cfg
            .clone()
    }

    /// The current config and its text, when the log server knows it.
    pub fn config_and_text(&self) -> (Arc<Config>, Option<Arc<str>>) {
        let r = self.running.read().unwrap_or_else(|p| p.into_inner());
        (r.cfg.clone(), r.text.clone())
    }

    /// Switches to a new version of the config (from configd, or pushed by NetView's
    /// origin form); an older version than the running one is ignored (the two can
    /// arrive in either order). Returns whether it switched.
    pub fn set_config(&self, cfg: Arc<Config>, text: Option<Arc<str>>) -> bool {
        let mut r = self.running.write().unwrap_or_else(|p| p.into_inner());
        if cfg.network.version < r.cfg.network.version {
            return false;
        }
        *r = Running { cfg, text };
        true
    }

    /// This log server's entry in the current config.
    pub fn me(&self) -> Option<LogServer> {
        self.config()
            .log_servers
            .iter()
            .find(|l| l.name == self.name)
            .cloned()
    }

    pub fn minute_retention(&self) -> i64 {
        self.me()
            .map_or(3 * time::DAY, |l| l.minute_retention.as_secs() as i64)
    }
}

/// A running log server.
pub struct Logd {
    pub name: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// NetView's listener, when it runs.
    pub netview: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub ctx: Arc<Ctx>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn bind(addr: SocketAddr, what: &'static str) -> Result<(TcpListener, SocketAddr), LogdError> {
    let l = TcpListener::bind(addr).map_err(|source| LogdError::Bind { addr, what, source })?;
    let a = l
        .local_addr()
        .map_err(|source| LogdError::Bind { addr, what, source })?;
    Ok((l, a))
}

impl Logd {
    pub fn start(cfg: &Config, opts: &LogdOptions) -> Result<Logd, LogdError> {
        let me = log_server(cfg, opts.name.as_deref())
            .map_err(LogdError::Config)?
            .clone();
        let key = cfg
            .logs
            .key
            .as_ref()
            .ok_or_else(|| LogdError::Config("[logs] key is missing".into()))?
            .as_bytes()
            .to_vec();
        let data_dir = opts.data_dir.clone().unwrap_or_else(|| me.data_dir.clone());
        let store = Arc::new(Store::open(&data_dir, Scope::of(cfg, &me.name))?);
        let (ingest_l, listen) = bind(opts.listen.unwrap_or(me.address), "record batches")?;
        let (admin_l, admin) = bind(opts.admin.unwrap_or(me.admin), "admin")?;
        let netview_l = match opts.netview.or(me.netview) {
            Some(a) => Some(bind(a, "NetView")?),
            None => None,
        };
        let ctx = Arc::new(Ctx {
            name: me.name.clone(),
            running: RwLock::new(Running {
                cfg: Arc::new(cfg.clone()),
                text: opts.config_text.as_deref().map(Arc::from),
            }),
            store: store.clone(),
            ingest: Arc::new(IngestCounters::default()),
            admin_http: Arc::new(HttpCounters::default()),
            netview_http: Arc::new(HttpCounters::default()),
            netview: netview::Counters::default(),
            started: Instant::now(),
            token: me.admin_token.as_ref().map(|t| t.as_bytes().to_vec()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        threads.push(
            ingest::start(
                ingest_l,
                store.clone(),
                key,
                ctx.ingest.clone(),
                stop.clone(),
            )
            .map_err(LogdError::Thread)?,
        );
        let netview = match netview_l {
            Some((l, addr)) => {
                let users = opts
                    .users
                    .clone()
                    .unwrap_or_else(|| data_dir.join(netview::USERS_FILE));
                if let Some(f) = &me.origin_form {
                    netview::origins::check_at_start(cfg, f);
                }
                let nv = Arc::new(netview::NetView::new(ctx.clone(), &users)?);
                let h: http::Handler = Arc::new(move |r| nv.handle(r));
                threads.push(
                    http::serve("netview", l, h, ctx.netview_http.clone(), stop.clone())
                        .map_err(LogdError::Thread)?,
                );
                Some(addr)
            }
            None => None,
        };
        let api_ctx = ctx.clone();
        let h: http::Handler = Arc::new(move |r| api::handle(&api_ctx, r));
        threads.push(
            http::serve(
                "logd-admin",
                admin_l,
                h,
                ctx.admin_http.clone(),
                stop.clone(),
            )
            .map_err(LogdError::Thread)?,
        );
        // Retention: once at start, then hourly.
        let (pctx, pstop) = (ctx.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name("logd-prune".into())
                .spawn(move || {
                    let mut last: Option<Instant> = None;
                    while !pstop.load(Ordering::Relaxed) {
                        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                            if let Some(me) = pctx.me()
                                && let Err(e) = pctx.store.prune(
                                    me.minute_retention.as_secs() as i64,
                                    me.raw_retention.as_secs() as i64,
                                )
                            {
                                tracing::warn!(error = %e, "logd: pruning failed");
                            }
                            last = Some(Instant::now());
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                })
                .map_err(LogdError::Thread)?,
        );
        Ok(Logd {
            name: me.name,
            listen,
            admin,
            netview,
            data_dir,
            ctx,
            stop,
            threads,
        })
    }

    /// Checks a new config for this log server: its entry must still be there.
    pub fn prepare_reload(&self, cfg: &Config) -> Result<(), String> {
        log_server(cfg, Some(&self.name)).map(|_| ())
    }

    /// Switches to a checked config; returns what keeps its old value until a restart.
    pub fn apply_reload(&self, cfg: Config, text: Option<&str>) -> Vec<&'static str> {
        let mut restart = Vec::new();
        let old = self.ctx.config();
        if let (Ok(o), Ok(n)) = (
            log_server(&old, Some(&self.name)),
            log_server(&cfg, Some(&self.name)),
        ) {
            if o.address != n.address {
                restart.push("address");
            }
            if o.admin != n.admin {
                restart.push("admin");
            }
            if o.netview != n.netview {
                restart.push("netview");
            }
            if o.data_dir != n.data_dir {
                restart.push("data_dir");
            }
        }
        if Scope::of(&old, &self.name) != Scope::of(&cfg, &self.name) {
            restart.push("the customers it keeps");
        }
        if old.logs.key != cfg.logs.key {
            restart.push("logs.key");
        }
        self.ctx.set_config(Arc::new(cfg), text.map(Arc::from));
        restart
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Logd {
    fn drop(&mut self) {
        self.shutdown();
    }
}
