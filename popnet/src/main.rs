//! `popnet`: the POP daemon, one subcommand per role, and `up` to run every role on one box.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

mod configd_admin;
mod reload;

use anyhow::{Context, Result};
use cache_engine::demo_origin::DemoOrigin;
use cache_engine::{CacheOptions, CacheServer, LineSink, LogSink};
use clap::{Args, Parser, Subcommand};
use dns_fastpath::{DnsOptions, DnsServer};
use logd::{Logd, LogdOptions};
use logship::{Kind, Shipper, ShipperConfig};
use popnet_config::{Config, ConfigError, XdpMode};
use probe::{ProbeDaemon, ProbeOptions};

#[derive(Parser)]
#[command(
    name = "popnet",
    version,
    about = "popnet: a CDN point of presence that is also a global server load balancer"
)]
struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. "info" or "dns_fastpath=debug".
    #[arg(long, global = true, default_value = "info", env = "POPNET_LOG")]
    log: String,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run every role of this box. Without --config: the built-in single-box demo on loopback.
    Up(UpArgs),
    /// Run the authoritative DNS server and its selector.
    Dns(DnsArgs),
    /// Run the HTTP cache (io_uring) in front of the customers' origins.
    Cache(CacheArgs),
    /// Run the probes: service checks of every POP cache and origin, this box's load,
    /// and latency probes for the DNS servers; reports go to every DNS server.
    Probe(ProbeArgs),
    /// Run the log server: receives the record batches of the DNS servers, caches and
    /// probes, keeps rollups and raw records per customer, and answers popctl
    /// (`stats`, `bill`) and Prometheus on its admin listener.
    Logd(LogdArgs),
    /// Run the config daemon of this box: it stores the running config durably, takes
    /// part in two-phase pushes down the tree the config describes, fetches a commit it
    /// missed from its parent, and tells local daemons (`--configd` socket, SIGHUP).
    Configd(ConfigdArgs),
    /// Add or remove a NetView user (the log server's web UI) in its users file.
    NetviewUser(NetviewUserArgs),
    /// Attach a pass-everything XDP program to IFACE until stopped. Run it on the peer of a
    /// veth whose other end has the DNS fast path: native XDP on a veth delivers XDP_TX
    /// replies only to a peer that runs XDP too.
    XdpPass {
        #[arg(value_name = "IFACE")]
        iface: String,
        /// `native` or `skb`.
        #[arg(long, default_value = "native", value_name = "MODE")]
        xdp_mode: XdpMode,
    },
}

#[derive(Args)]
struct ConfigArgs {
    /// The network's config file (TOML); default: the built-in demo. SIGHUP reads it
    /// again and reloads.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Take the config from this box's configd (its local socket, e.g.
    /// /var/lib/popnet/configd/configd.sock) and reload on every config it switches to.
    #[arg(long, value_name = "SOCKET", conflicts_with = "config")]
    configd: Option<PathBuf>,
    /// Which POP this box is, when the config has several.
    #[arg(long, value_name = "NAME")]
    pop: Option<String>,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
}

#[derive(Args)]
struct CacheArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    /// Serve HTTP on this address instead of the config's (repeatable; port 0 = any).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Serve the admin HTTP endpoint on this address instead of the config's.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Event loops (one io_uring each); 0 = one per core.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

#[derive(Args)]
struct LogdArgs {
    /// The network's config file (TOML); it must list this log server in [[log_servers]].
    /// SIGHUP reads it again.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Take the config from this box's configd (its local socket) and follow every new
    /// version; NetView's origin form needs this (or --config) to know the running text.
    #[arg(long, value_name = "SOCKET", conflicts_with = "config")]
    configd: Option<PathBuf>,
    /// Which [[log_servers]] entry this is, when the config has several.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Receive record batches on this TCP address instead of the config's `address`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Serve the admin HTTP endpoint (queries, /metrics) here instead of the config's.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Keep the rollup database and raw records here instead of the config's `data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Serve NetView, the web UI, here (instead of the config's `netview`, or turned on).
    #[arg(long, value_name = "ADDR")]
    netview: Option<SocketAddr>,
    /// NetView's users file; default `<data_dir>/netview-users.toml`.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
}

#[derive(Args)]
struct NetviewUserArgs {
    /// The users file, e.g. `<data_dir>/netview-users.toml` of the log server.
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
    #[command(subcommand)]
    action: NetviewUserAction,
}

#[derive(Subcommand)]
enum NetviewUserAction {
    /// Add a user (or replace one of the same name); the password is read from the
    /// first line of stdin (at least 10 characters) and stored as an argon2id hash.
    Add {
        #[arg(value_name = "NAME")]
        name: String,
        /// Sees every customer, POP and the whole network.
        #[arg(long, conflicts_with = "customer")]
        admin: bool,
        /// Sees this customer's pages only.
        #[arg(long, value_name = "CUSTOMER", required_unless_present = "admin")]
        customer: Option<String>,
    },
    /// Remove a user.
    Remove {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Args)]
struct ProbeArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    /// Answer latency-probe requests on this UDP address instead of `[pops.probe] listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Service checks open at once.
    #[arg(long, value_name = "N", default_value_t = probe::daemon::DEFAULT_MAX_CONCURRENT)]
    max_concurrent: usize,
    /// Serve the admin HTTP endpoint (/health, /stats, /metrics) here instead of
    /// `[pops.probe] admin`.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Measure resolver latency with DNS and TCP to port 53 only, not ICMP echo.
    #[arg(long)]
    no_icmp: bool,
}

#[derive(Args)]
struct ConfigdArgs {
    /// This box's name in [[configd.boxes]].
    #[arg(long, value_name = "BOX")]
    name: String,
    /// Directory of the durable store (created if missing).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/popnet/configd")]
    state: PathBuf,
    /// A signed config to start from when the store is empty (or older): the box's
    /// first config must be signed by one of its own admins.
    #[arg(long, value_name = "FILE")]
    bootstrap: Option<PathBuf>,
    /// Listen here instead of the box's address in the config (e.g. 0.0.0.0:5390).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The local socket daemons subscribe on; default: STATE/configd.sock.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Serve /health, /status (JSON) and /metrics (Prometheus) on this loopback address,
    /// e.g. 127.0.0.1:5383 (it has no token, so it stays on loopback).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Send SIGHUP, on every switch, to the process whose pid this file holds
    /// (repeatable).
    #[arg(long, value_name = "PIDFILE")]
    hup: Vec<PathBuf>,
}

#[derive(Args)]
struct DnsArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    /// Answer queries on this address instead of the config's (repeatable; port 0 = any).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Receive metric reports on this UDP address instead of the config's.
    #[arg(long, value_name = "ADDR")]
    reports: Option<SocketAddr>,
    /// Serve the admin HTTP endpoint on this address instead of the config's.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// UDP sockets (threads) per listen address; 0 = one per core.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Answer hot queries in the driver with XDP on this interface (repeatable), instead
    /// of the config's `xdp_interfaces`.
    #[arg(long = "xdp", value_name = "IFACE")]
    xdp: Vec<String>,
    /// XDP mode: `native` (default) or `skb` (generic, any interface).
    #[arg(long, value_name = "MODE")]
    xdp_mode: Option<XdpMode>,
    /// Do not attach XDP even if the config lists interfaces.
    #[arg(long, conflicts_with = "xdp")]
    no_xdp: bool,
}

/// A failure that has already been explained to the user.
#[derive(Debug)]
struct Reported(u8);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reported")
    }
}

impl std::error::Error for Reported {}

fn source(args: &ConfigArgs) -> reload::Source {
    match (&args.config, &args.configd) {
        (Some(p), _) => reload::Source::File(p.clone()),
        (None, Some(s)) => reload::Source::Configd(s.clone()),
        (None, None) => reload::Source::Demo,
    }
}

/// The first config of a role, from its source.
fn load_config(args: &ConfigArgs, role: &str) -> Result<(reload::Source, reload::Start)> {
    let src = source(args);
    match reload::first(&src, role) {
        Ok(start) => Ok((src, start)),
        Err(reload::FirstError::Config(e @ ConfigError::Invalid { .. })) => {
            eprintln!(
                "popnet: the config is not valid:\n{e}\nfix these and start again (`popctl config check FILE` checks a file)."
            );
            Err(Reported(2).into())
        }
        Err(reload::FirstError::Config(e)) => {
            eprintln!("popnet: {e}");
            Err(Reported(2).into())
        }
        Err(reload::FirstError::Configd(e)) => {
            eprintln!("popnet: {e}");
            Err(Reported(2).into())
        }
    }
}

fn dns_options(a: &DnsArgs) -> DnsOptions {
    DnsOptions {
        pop: a.cfg.pop.clone(),
        listen: (!a.listen.is_empty()).then(|| a.listen.clone()),
        reports: a.reports,
        admin: a.admin,
        workers: a.workers,
        xdp: if a.no_xdp {
            Some(Vec::new())
        } else {
            (!a.xdp.is_empty()).then(|| a.xdp.clone())
        },
        xdp_mode: a.xdp_mode,
        log_sink: None,
    }
}

/// Starts the shipper of `role`'s records on `pop`, or none when the network has no log
/// server for them.
fn start_shipper(cfg: &Config, pop: &str, role: &str, kind: Kind) -> Result<Option<Arc<ShipSink>>> {
    let Some(sc) = ShipperConfig::from_config(cfg, pop, role, kind) else {
        return Ok(None);
    };
    let spool = sc.spool_dir.clone();
    let s = Shipper::start(sc).with_context(|| {
        format!(
            "cannot start shipping the {role}'s records (spool {}); fix [logs] spool_dir or make it writable",
            spool.display()
        )
    })?;
    tracing::info!(spool = %spool.display(), "{role}: shipping records to the log servers");
    Ok(Some(Arc::new(ShipSink(s))))
}

/// Gives a shipper up to two seconds to deliver what it holds (the rest stays spooled).
fn stop_shipper(s: Option<Arc<ShipSink>>) {
    if let Some(s) = s
        && let Ok(s) = Arc::try_unwrap(s)
    {
        s.0.stop_within(Duration::from_secs(2));
    }
}

/// The DNS server and the shipper of its answer records.
struct Dns {
    server: DnsServer,
    shipper: Option<Arc<ShipSink>>,
}

impl std::ops::Deref for Dns {
    type Target = DnsServer;
    fn deref(&self) -> &DnsServer {
        &self.server
    }
}

impl Dns {
    fn stop(self) {
        // The server drains its last answer counts into the shipper as it stops.
        self.server.stop();
        stop_shipper(self.shipper);
    }
}

fn start_dns(cfg: &Config, opts: &DnsOptions) -> Result<Dns> {
    let pop = cfg
        .local_pop(opts.pop.as_deref(), |p| p.dns.is_some())
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot start the DNS role")?;
    let shipper = start_shipper(cfg, &pop.name, "dns", Kind::Dns)?;
    let mut opts = opts.clone();
    opts.log_sink = shipper
        .clone()
        .map(|s| logship::LogSink(s as Arc<dyn logship::LineSink>));
    let s = DnsServer::start(cfg, &opts).context("cannot start the DNS role")?;
    let addrs: Vec<String> = s.udp.iter().map(ToString::to_string).collect();
    tracing::info!(
        pop = %s.pop,
        listen = %addrs.join(","),
        reports = %s.reports,
        admin = %format!("http://{}", s.admin),
        "dns: answering on UDP and TCP"
    );
    Ok(Dns { server: s, shipper })
}

/// The probe and the shipper of its check results.
struct Probe {
    daemon: ProbeDaemon,
    shipper: Option<Arc<ShipSink>>,
}

impl std::ops::Deref for Probe {
    type Target = ProbeDaemon;
    fn deref(&self) -> &ProbeDaemon {
        &self.daemon
    }
}

impl Probe {
    fn stop(self) {
        // The probe hands over its last results as it stops.
        self.daemon.stop();
        stop_shipper(self.shipper);
    }
}

fn start_probe(cfg: &Config, opts: &ProbeOptions) -> Result<Probe> {
    let pop = cfg
        .local_pop(opts.pop.as_deref(), |p| p.probe.is_some())
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot start the probe role")?;
    let shipper = start_shipper(cfg, &pop.name, "probe", Kind::Probe)?;
    let mut opts = opts.clone();
    opts.log_sink = shipper
        .clone()
        .map(|s| logship::LogSink(s as Arc<dyn logship::LineSink>));
    let p = ProbeDaemon::start(cfg, &opts).context("cannot start the probe role")?;
    let to: Vec<String> = p.destinations.iter().map(ToString::to_string).collect();
    tracing::info!(
        pop = %p.pop,
        targets = p.targets.len(),
        latency = %p.latency.map_or_else(|| "off".to_string(), |a| a.to_string()),
        admin = %p.admin.map_or_else(|| "off".to_string(), |a| format!("http://{a}")),
        reports_to = %to.join(","),
        "probe: checking every POP cache and origin"
    );
    Ok(Probe { daemon: p, shipper })
}

/// Hands a role's record lines (the cache's access log, DNS answers, probe rounds) to
/// the log shipper.
struct ShipSink(Shipper);

impl LineSink for ShipSink {
    fn write_lines(&self, lines: &[u8]) {
        self.0.write_lines(lines);
    }

    fn metrics(&self, m: &mut promtext::Metrics) {
        self.0.metrics(m);
    }
}

/// The cache and the shipper of its access log (none when the network has no log
/// server for this POP's records).
struct Cache {
    server: CacheServer,
    shipper: Option<Arc<ShipSink>>,
}

impl Cache {
    fn stop(self) {
        // The cache flushes its workers' last lines into the shipper as it stops; the
        // shipper then has a moment to deliver them (what it cannot stays spooled).
        self.server.stop();
        stop_shipper(self.shipper);
    }
}

fn start_cache(cfg: &Config, opts: &CacheOptions) -> Result<Cache> {
    let pop = cfg
        .local_pop(opts.pop.as_deref(), |p| p.cache.is_some())
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot start the cache role")?;
    let shipper = start_shipper(cfg, &pop.name, "cache", Kind::Access)?;
    let mut opts = opts.clone();
    opts.pop = Some(pop.name.clone());
    opts.log_sink = shipper.clone().map(|s| LogSink(s as Arc<dyn LineSink>));
    let s = CacheServer::start(cfg, &opts).context("cannot start the cache role")?;
    let addrs: Vec<String> = s.listen.iter().map(ToString::to_string).collect();
    tracing::info!(pop = %s.pop, listen = %addrs.join(","), admin = %format!("http://{}", s.admin), workers = s.workers, "cache: serving HTTP");
    Ok(Cache { server: s, shipper })
}

fn netview_user(a: &NetviewUserArgs) -> Result<()> {
    use logd::netview::auth::{Role as UserRole, add_user, remove_user};
    match &a.action {
        NetviewUserAction::Add {
            name,
            admin,
            customer,
        } => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password from stdin")?;
            let password = line.trim_end_matches(['\r', '\n']);
            let role = if *admin {
                UserRole::Admin
            } else {
                UserRole::Customer
            };
            add_user(&a.users, name, role, customer.as_deref(), password)
                .with_context(|| format!("cannot add NetView user {name:?}"))?;
            eprintln!("NetView user {name:?} saved in {}", a.users.display());
        }
        NetviewUserAction::Remove { name } => {
            let removed = remove_user(&a.users, name)
                .with_context(|| format!("cannot remove NetView user {name:?}"))?;
            if !removed {
                anyhow::bail!("{} has no user named {name:?}", a.users.display());
            }
            eprintln!("NetView user {name:?} removed from {}", a.users.display());
        }
    }
    Ok(())
}

fn start_logd(cfg: &Config, opts: &LogdOptions) -> Result<Logd> {
    let l = Logd::start(cfg, opts).context("cannot start the log server")?;
    if let Some(nv) = l.netview {
        tracing::info!(netview = %format!("http://{nv}"), "logd: NetView serving");
    }
    tracing::info!(
        name = %l.name,
        listen = %l.listen,
        admin = %format!("http://{}", l.admin),
        data = %l.data_dir.display(),
        "logd: receiving record batches"
    );
    Ok(l)
}

/// The log server `popnet up` runs for `pop`: the one it names (`log_server`), when its
/// address is on this machine (else it runs elsewhere, as `popnet logd`).
fn local_log_server(cfg: &Config, pop: &popnet_config::Pop) -> Option<String> {
    let name = pop.log_server.as_deref()?;
    let ls = cfg.log_servers.iter().find(|l| l.name == name)?;
    if std::net::TcpListener::bind((ls.address.ip(), 0)).is_ok() {
        Some(ls.name.clone())
    } else {
        tracing::info!(log_server = %name, address = %ls.address, "the POP's log server is not on this machine: not run here");
        None
    }
}

/// The demo's origins (`examples/single-pop.toml`): origin-a on 127.0.0.1 and ::1,
/// origin-b on 127.0.0.2, port 8081. IPv6 is optional: a host without it still runs
/// the demo.
fn start_demo_origin() -> Result<(DemoOrigin, Option<DemoOrigin>)> {
    let v4: Vec<SocketAddr> = ["127.0.0.1:8081", "127.0.0.2:8081"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    let origin = DemoOrigin::start(&v4).context("cannot start the built-in demo origin on 127.0.0.1:8081 and 127.0.0.2:8081 (is something else using port 8081?)")?;
    let v6 = match "[::1]:8081"
        .parse::<SocketAddr>()
        .map(|a| DemoOrigin::start(&[a]))
    {
        Ok(Ok(o)) => Some(o),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "demo origin not on [::1]:8081 (no IPv6 loopback?); the demo runs on IPv4");
            None
        }
        Err(_) => None,
    };
    Ok((origin, v6))
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> Result<i32> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    Ok(signals.forever().next().unwrap_or(SIGTERM))
}

fn run(cli: Cli) -> Result<()> {
    match cli.role {
        Role::Dns(a) => {
            let (src, start) = load_config(&a.cfg, "dns")?;
            let dns = start_dns(&start.cfg, &dns_options(&a))?;
            let roles = reload::Roles {
                dns: Some(dns),
                ..reload::Roles::default()
            };
            reload::run(roles, src, start, "dns")?;
        }
        Role::Cache(a) => {
            let (src, start) = load_config(&a.cfg, "cache")?;
            let cache = start_cache(
                &start.cfg,
                &CacheOptions {
                    pop: a.cfg.pop.clone(),
                    listen: (!a.listen.is_empty()).then(|| a.listen.clone()),
                    admin: a.admin,
                    workers: a.workers,
                    ..CacheOptions::default()
                },
            )?;
            let roles = reload::Roles {
                cache: Some(cache),
                ..reload::Roles::default()
            };
            reload::run(roles, src, start, "cache")?;
        }
        Role::Probe(a) => {
            let (src, start) = load_config(&a.cfg, "probe")?;
            let probe = start_probe(
                &start.cfg,
                &ProbeOptions {
                    pop: a.cfg.pop.clone(),
                    listen: a.listen,
                    max_concurrent: a.max_concurrent,
                    icmp: !a.no_icmp,
                    admin: a.admin,
                    ..ProbeOptions::default()
                },
            )?;
            let roles = reload::Roles {
                probe: Some(probe),
                ..reload::Roles::default()
            };
            reload::run(roles, src, start, "probe")?;
        }
        Role::Logd(a) => {
            let (src, start) = load_config(
                &ConfigArgs {
                    config: a.config.clone(),
                    configd: a.configd.clone(),
                    pop: None,
                },
                "logd",
            )?;
            let l = start_logd(
                &start.cfg,
                &LogdOptions {
                    name: a.name,
                    listen: a.listen,
                    admin: a.admin,
                    data_dir: a.data_dir,
                    netview: a.netview,
                    users: a.users,
                    config_text: Some(start.text.clone()),
                },
            )?;
            let roles = reload::Roles {
                logd: Some(l),
                ..reload::Roles::default()
            };
            reload::run(roles, src, start, "logd")?;
        }
        Role::Configd(a) => {
            let d = configd::Daemon::start(&configd::DaemonOptions {
                name: a.name,
                state_dir: a.state,
                bootstrap: a.bootstrap,
                listen: a.listen,
                socket: a.socket,
                hup: a.hup,
            })
            .map_err(|e| anyhow::anyhow!("cannot start configd: {e}"))?;
            let st = d.status();
            tracing::info!(box_name = %st.name, version = st.running.version, listen = %d.listen, socket = %d.socket.display(), "configd: running");
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let admin = match a.admin {
                Some(addr) => Some(configd_admin::start(addr, d.observer(), stop.clone())?),
                None => None,
            };
            let sig = wait_for_signal()?;
            tracing::info!(signal = sig, "stopping");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(t) = admin {
                let _ = t.join();
            }
            d.stop();
        }
        Role::NetviewUser(a) => netview_user(&a)?,
        Role::XdpPass { iface, xdp_mode } => {
            let prog = dns_fastpath::xdp::PassProgram::attach(&iface, xdp_mode)
                .with_context(|| format!("cannot attach the pass program to {iface}"))?;
            tracing::info!(%iface, ?xdp_mode, "pass-everything XDP program attached; stop with Ctrl-C");
            let sig = wait_for_signal()?;
            tracing::info!(signal = sig, "detaching");
            drop(prog);
        }
        Role::Up(a) => {
            let demo = a.cfg.config.is_none() && a.cfg.configd.is_none();
            let (src, start) = load_config(&a.cfg, "up")?;
            let cfg = &start.cfg;
            let origins = if demo {
                Some(start_demo_origin()?)
            } else {
                None
            };
            let pop = cfg
                .local_pop(a.cfg.pop.as_deref(), |p| p.dns.is_some())
                .map_err(|e| anyhow::anyhow!(e))?;
            // The POP's own log server runs here when its address is on this machine,
            // before the daemons that ship to it.
            let logd = match local_log_server(cfg, pop) {
                Some(name) => Some(start_logd(
                    cfg,
                    &LogdOptions {
                        name: Some(name),
                        config_text: Some(start.text.clone()),
                        ..LogdOptions::default()
                    },
                )?),
                None => None,
            };
            let dns = start_dns(
                cfg,
                &DnsOptions {
                    pop: Some(pop.name.clone()),
                    ..DnsOptions::default()
                },
            )?;
            let cache = match &pop.cache {
                Some(_) => Some(start_cache(
                    cfg,
                    &CacheOptions {
                        pop: Some(pop.name.clone()),
                        ..CacheOptions::default()
                    },
                )?),
                None => None,
            };
            let probe = match &pop.probe {
                Some(_) => Some(start_probe(
                    cfg,
                    &ProbeOptions {
                        pop: Some(pop.name.clone()),
                        ..ProbeOptions::default()
                    },
                )?),
                None => None,
            };
            if demo {
                let at = dns
                    .udp
                    .first()
                    .map(|a| format!("@{} -p {}", a.ip(), a.port()))
                    .unwrap_or_default();
                eprintln!("popnet up: the built-in demo POP is running. Try:");
                eprintln!("  dig {at} www.demo.example      # dynamic: a demo origin");
                eprintln!("  dig {at} static.demo.example   # static: the POP cache");
                if let Some(c) = cache.as_ref().and_then(|c| c.server.listen.first()) {
                    eprintln!(
                        "  curl -H 'Host: static.demo.example' http://{c}/obj/1k   # the cache, in front of the demo origin"
                    );
                }
                eprintln!(
                    "  popctl dns stats                       # counters (popctl cache stats for the cache)"
                );
                if probe.is_some() {
                    eprintln!(
                        "  popctl metrics                         # what the probe reports: health, load, response times"
                    );
                }
                if logd.is_some() {
                    eprintln!(
                        "  popctl stats demo                      # the demo customer's traffic, from the log server"
                    );
                }
                eprintln!("Ctrl-C stops it.");
            }
            let roles = reload::Roles {
                dns: Some(dns),
                cache,
                probe,
                logd,
            };
            reload::run(roles, src, start, "up")?;
            if let Some((o4, o6)) = origins {
                o4.stop();
                if let Some(o) = o6 {
                    o.stop();
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!(
            "popnet: --log {:?} is not a valid filter ({e}); using \"info\"",
            cli.log
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(Reported(code)) = e.downcast_ref::<Reported>() {
                return ExitCode::from(*code);
            }
            eprintln!("popnet: {e:#}");
            ExitCode::from(1)
        }
    }
}
