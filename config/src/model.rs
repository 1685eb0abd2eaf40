//! The configuration tree as it is written in TOML: every table, its fields and their defaults.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::duration;
use crate::secret::Secret;

/// The whole network: one file describes every POP, customer and policy (the seed's
/// "registry tree" global configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub network: Network,
    #[serde(default)]
    pub dns: DnsSettings,
    pub probes: ProbeSettings,
    #[serde(default)]
    pub views: Vec<View>,
    pub pops: Vec<Pop>,
    #[serde(default)]
    pub customers: Vec<Customer>,
    #[serde(default)]
    pub log_servers: Vec<LogServer>,
    #[serde(default)]
    pub logs: LogSettings,
    /// The config daemons and the tree a pushed config travels; none = this config is
    /// not distributed by `popctl config push`.
    #[serde(default)]
    pub configd: Option<Configd>,
}

/// The network itself: its name, the version of this file, who may change it, and the
/// zone in which internal services are named.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub name: String,
    /// Version of this configuration; a box only ever moves to a higher one. Also the
    /// SOA serial of every zone served.
    pub version: u32,
    /// Zone holding the names of the network's own services (`ns.<pop>.<zone>`,
    /// `log.<pop>.<zone>`, ...).
    pub zone: String,
    /// SOA RNAME of every zone; defaults to `hostmaster.<zone>`.
    #[serde(default)]
    pub hostmaster: Option<String>,
    /// The admins whose signatures are accepted on a new configuration.
    #[serde(default)]
    pub admins: Vec<Admin>,
    #[serde(default)]
    pub soa: SoaTimers,
}

/// An admin allowed to sign configurations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub name: String,
    /// Ed25519 public key, 32 bytes in standard base64.
    pub key: String,
}

/// SOA timers used for every zone (RFC 1035 §3.3.13, RFC 2308 for `negative_ttl`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoaTimers {
    pub ttl: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// SOA MINIMUM: how long resolvers cache NXDOMAIN and NODATA answers.
    pub negative_ttl: u32,
}

impl Default for SoaTimers {
    fn default() -> Self {
        SoaTimers {
            ttl: 3600,
            refresh: 3600,
            retry: 600,
            expire: 604_800,
            negative_ttl: 60,
        }
    }
}

/// Settings shared by every DNS server of the network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSettings {
    /// EDNS(0) UDP payload size we advertise and accept up to (RFC 6891; 1232 per DNS
    /// flag day 2020).
    pub udp_payload: u16,
    /// UDP worker threads (one SO_REUSEPORT socket each); 0 = one per core.
    pub workers: usize,
    /// An idle TCP connection is closed after this long (RFC 7766 §6.2.3).
    #[serde(with = "duration")]
    pub tcp_idle_timeout: Duration,
    /// At most this many TCP connections are open at once; the oldest idle one is closed
    /// to make room.
    pub tcp_max_connections: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            udp_payload: 1232,
            workers: 0,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_max_connections: 1024,
        }
    }
}

/// How probes run and how their reports are trusted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    /// HMAC-SHA256 key authenticating metric reports, hex, at least 16 bytes.
    pub report_key: Secret,
    /// Interval of service probes.
    #[serde(default = "defaults::probe_interval", with = "duration")]
    pub interval: Duration,
    /// A probe that has not answered after this long has failed.
    #[serde(default = "defaults::probe_timeout", with = "duration")]
    pub timeout: Duration,
    /// A metric older than this counts as unknown.
    #[serde(default = "defaults::stale_after", with = "duration")]
    pub stale_after: Duration,
    /// A server that failed must be reported healthy for this long before it is handed
    /// out again (hysteresis against flapping).
    #[serde(default = "defaults::recovery", with = "duration")]
    pub recovery: Duration,
    /// Check run against every POP cache unless the POP sets its own.
    #[serde(default)]
    pub cache_check: Check,
    /// How often a DNS server has the probes re-measure their latency to a resolver it
    /// keeps seeing.
    #[serde(default = "defaults::resolver_refresh", with = "duration")]
    pub resolver_refresh: Duration,
    /// A resolver latency older than this counts as unknown (and the resolver falls back
    /// to its configured view).
    #[serde(default = "defaults::resolver_stale_after", with = "duration")]
    pub resolver_stale_after: Duration,
    /// Most resolvers a DNS server keeps track of (the least recently seen go first).
    #[serde(default = "defaults::resolver_max")]
    pub resolver_max: usize,
    /// Most resolver addresses per second a DNS server asks the probes to measure.
    #[serde(default = "defaults::resolver_rate")]
    pub resolver_rate: u32,
    /// Add each probe's latency to this DNS server to its latency to the resolvers (the
    /// seed's "sum of latencies": a probe that is far from the DNS server sees the
    /// resolvers from farther away).
    #[serde(default)]
    pub sum_latencies: bool,
    /// A server that reports no load of its own (a customer origin) counts as fully
    /// loaded when its service check takes this long: its load is the fastest fresh
    /// response time any probe measured ÷ this (the seed's latencies that "include a
    /// measurement of the amount of traffic and the load on the customer web servers").
    /// Used among origins only: against POP caches an origin without a load is unknown.
    #[serde(default = "defaults::overload_response", with = "duration")]
    pub overload_response: Duration,
}

/// A service check run by the probes against one target.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Check {
    pub kind: CheckKind,
    /// Port to probe; defaults to the service's own port.
    pub port: Option<u16>,
    /// HTTP: path requested with GET.
    pub path: String,
    /// HTTP: the `Host` header sent; defaults to the target's address.
    pub host: Option<String>,
    /// HTTP: the status code that counts as healthy.
    pub expect_status: u16,
    /// HTTP: the body must contain this string.
    pub body_contains: Option<String>,
    /// HTTP: the body's xxh3-64 hash must be this value (16 hex digits).
    pub body_xxh3: Option<String>,
    /// DNS: the name queried (type A).
    pub query_name: Option<String>,
}

impl Default for Check {
    fn default() -> Self {
        Check {
            kind: CheckKind::Tcp,
            port: None,
            path: "/".to_string(),
            host: None,
            expect_status: 200,
            body_contains: None,
            body_xxh3: None,
            query_name: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Http,
    Tcp,
    Dns,
    /// Never probed: always considered up unless a report says otherwise.
    None,
}

/// A client view: resolver (or EDNS client subnet) prefixes that share answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    pub name: String,
    /// Region the view lies in; POPs and origins of the same region are preferred while
    /// no latency has been measured.
    #[serde(default)]
    pub region: Option<String>,
    pub prefixes: Vec<IpNet>,
}

/// A point of presence and the services it runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop {
    pub name: String,
    pub region: String,
    /// Relative cost of serving from this POP (weighed by a policy's `cost` weight).
    #[serde(default = "defaults::one")]
    pub cost: f64,
    #[serde(default)]
    pub dns: Option<DnsService>,
    #[serde(default)]
    pub cache: Option<CacheService>,
    #[serde(default)]
    pub probe: Option<ProbeService>,
    /// Name of the log server (in `log_servers`) this POP ships to.
    #[serde(default)]
    pub log_server: Option<String>,
}

/// The authoritative DNS server of a POP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsService {
    /// UDP and TCP sockets answering queries.
    pub listen: Vec<SocketAddr>,
    /// Public addresses of this name server (NS glue); default: the `listen` addresses.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// UDP socket receiving metric reports from probes.
    pub reports: SocketAddr,
    /// HTTP admin listener (stats, selections), loopback recommended.
    pub admin: SocketAddr,
    /// Bearer token required by the admin listener; none = open (loopback only).
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// Interfaces the XDP fast path attaches to (answers hot queries in the driver);
    /// empty = userspace only.
    #[serde(default)]
    pub xdp_interfaces: Vec<String>,
    /// `native` (in the driver) or `skb` (generic, any interface).
    #[serde(default)]
    pub xdp_mode: XdpMode,
}

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the network driver.
    #[default]
    Native,
    /// Generic XDP in the kernel's receive path.
    Skb,
}

impl std::str::FromStr for XdpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<XdpMode, String> {
        match s {
            "native" => Ok(XdpMode::Native),
            "skb" => Ok(XdpMode::Skb),
            other => Err(format!(
                "{other:?} is not an XDP mode; use \"native\" or \"skb\""
            )),
        }
    }
}

/// The HTTP cache of a POP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheService {
    /// Addresses handed out in DNS answers for static names.
    pub addresses: Vec<IpAddr>,
    /// Sockets the cache listens on.
    pub listen: Vec<SocketAddr>,
    /// Check run against this cache; default: `probes.cache_check`.
    #[serde(default)]
    pub check: Option<Check>,
    /// HTTP admin listener (purge, stats, object metadata), loopback recommended.
    #[serde(default = "defaults::cache_admin")]
    pub admin: SocketAddr,
    /// Bearer token required by the admin listener; none = open (loopback only).
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// Bytes of objects (bodies, stored heads and keys) the RAM tier holds.
    #[serde(default = "defaults::cache_ram_bytes")]
    pub ram_bytes: u64,
    /// Larger responses are streamed to the client but not stored.
    #[serde(default = "defaults::cache_max_object_bytes")]
    pub max_object_bytes: u64,
    /// Event loops (one io_uring and SO_REUSEPORT listener each); 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// Client connections open at once over all workers; more are answered 503 and closed.
    #[serde(default = "defaults::cache_max_connections")]
    pub max_connections: usize,
    /// Largest request body accepted (forwarded to the origin); larger ones get 413.
    #[serde(default = "defaults::cache_max_request_body")]
    pub max_request_body: u64,
    /// A request head must arrive whole within this time of its first byte (else 408).
    #[serde(default = "defaults::cache_head_timeout", with = "duration")]
    pub head_timeout: Duration,
    /// Longest pause between two reads of a request body (else 408).
    #[serde(default = "defaults::cache_body_timeout", with = "duration")]
    pub body_timeout: Duration,
    /// A keep-alive connection with no request is closed after this long.
    #[serde(default = "defaults::cache_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// A client that takes no bytes of a response for this long is disconnected.
    #[serde(default = "defaults::cache_send_timeout", with = "duration")]
    pub send_timeout: Duration,
    /// Connecting to one origin address; on failure the next origin is tried.
    #[serde(default = "defaults::cache_origin_connect_timeout", with = "duration")]
    pub origin_connect_timeout: Duration,
    /// Longest wait for an origin's response head, and between two reads of its body (else 504).
    #[serde(default = "defaults::cache_origin_timeout", with = "duration")]
    pub origin_timeout: Duration,
    /// File that receives one JSON line per request; none = no access log.
    #[serde(default)]
    pub access_log: Option<std::path::PathBuf>,
    /// The disk tier's store: a file (created and preallocated if missing) or a block
    /// device; none = RAM only. A RAM miss is looked up there, a disk miss fetched,
    /// stored on disk, then in RAM.
    #[serde(default)]
    pub disk_path: Option<std::path::PathBuf>,
    /// Bytes of the disk tier's store.
    #[serde(default = "defaults::cache_disk_bytes")]
    pub disk_bytes: u64,
    /// The disk tier's unit of writing and of eviction (oldest segment first).
    #[serde(default = "defaults::cache_disk_segment_bytes")]
    pub disk_segment_bytes: u64,
    /// An object read from disk is copied into RAM on this disk hit (0 = never).
    #[serde(default = "defaults::cache_disk_promote_hits")]
    pub disk_promote_hits: u32,
    /// Objects up to this size (and at most ram_bytes / 2, what the RAM tier takes) are
    /// read from disk whole and may be promoted; larger ones are streamed from disk in
    /// 1 MiB chunks and stay there.
    #[serde(default = "defaults::cache_disk_promote_max_bytes")]
    pub disk_promote_max_bytes: u64,
}

/// The probe daemon of a POP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeService {
    /// UDP socket receiving latency-probe batches from DNS servers.
    pub listen: SocketAddr,
    /// What the POP's reported load is made of (the busiest of these): leave out what
    /// this box shares with other work, e.g. `["connections"]` for a cache on a box
    /// whose CPU and memory other services use.
    #[serde(default = "defaults::load_from")]
    pub load_from: Vec<LoadSource>,
    /// HTTP admin listener (`/health`, `/stats`, `/metrics`); none = no admin listener.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// Bearer token required by the admin listener; none = open (loopback only).
    #[serde(default)]
    pub admin_token: Option<Secret>,
}

/// One part of a POP's load, as the probe's load agent measures it.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LoadSource {
    /// Busy fraction of all CPUs (/proc/stat).
    Cpu,
    /// 1 − MemAvailable ÷ MemTotal (/proc/meminfo).
    Memory,
    /// The busiest direction of the busiest link, as a fraction of its speed.
    Network,
    /// The local cache's open connections ÷ its `max_connections`.
    Connections,
}

impl LoadSource {
    pub const ALL: [LoadSource; 4] = [
        LoadSource::Cpu,
        LoadSource::Memory,
        LoadSource::Network,
        LoadSource::Connections,
    ];
}

/// A fee-paying customer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub name: String,
    /// Price per GB served, in the network's billing currency.
    #[serde(default)]
    pub fee_per_gb: f64,
    /// Zones delegated to the network (apex names); every domain and record of the
    /// customer lies inside one of them.
    pub zones: Vec<String>,
    #[serde(default)]
    pub origins: Vec<Origin>,
    #[serde(default)]
    pub domains: Vec<Domain>,
    #[serde(default)]
    pub records: Vec<StaticRecord>,
}

/// One of a customer's own (origin) servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    #[serde(default = "defaults::http_port")]
    pub port: u16,
    #[serde(default)]
    pub region: Option<String>,
    /// Relative capacity: load counts as `load / weight` when ranking.
    #[serde(default = "defaults::one")]
    pub weight: f64,
    #[serde(default = "defaults::one")]
    pub cost: f64,
    #[serde(default)]
    pub check: Option<Check>,
}

/// A name balanced by the selector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub name: String,
    pub kind: DomainKind,
    /// Dynamic: the origins (by name) that serve it; default: all of the customer's.
    /// Static: the origins the caches fetch from, and which may be answered directly
    /// when `policy.origin_fallback` allows it.
    #[serde(default)]
    pub origins: Option<Vec<String>>,
    /// Static: the POPs whose caches serve it; default: every POP with a cache.
    #[serde(default)]
    pub pops: Option<Vec<String>>,
    #[serde(default)]
    pub policy: Policy,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DomainKind {
    /// Cacheable content served by POP caches.
    Static,
    /// Content made per request, served by the customer's origins.
    Dynamic,
}

/// How answers for one domain are chosen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// TTL of the A/AAAA answers.
    pub ttl: u32,
    /// How many addresses to return (best first).
    pub answers: usize,
    /// A resolver's view keeps its answer this long unless a chosen server fails.
    #[serde(with = "duration")]
    pub persistence: Duration,
    /// A challenger must score this fraction better than the current answer to replace
    /// it (0.1 = 10 %).
    pub hysteresis: f64,
    /// Static names: a customer origin may be answered when it scores better than every
    /// POP cache.
    pub origin_fallback: bool,
    pub weights: Weights,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            ttl: 30,
            answers: 1,
            persistence: Duration::ZERO,
            hysteresis: 0.1,
            origin_fallback: true,
            weights: Weights::default(),
        }
    }
}

/// Weights of each metric in a server's score (lower score wins).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    pub health: f64,
    pub load: f64,
    pub latency: f64,
    pub loss: f64,
    pub cost: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            health: 1.0,
            load: 1.0,
            latency: 1.0,
            loss: 1.0,
            cost: 0.1,
        }
    }
}

/// A plain record in a customer zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub value: String,
    #[serde(default = "defaults::record_ttl")]
    pub ttl: u32,
}

/// A log server and the customers whose records it keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogServer {
    pub name: String,
    /// TCP listener receiving record batches; services find its host as
    /// `<name>.log.<zone>` (and `log.<pop>.<zone>` for the POPs that name it).
    pub address: SocketAddr,
    /// The customers whose records it keeps. Records of customers no log server lists,
    /// and of no customer, go to the log server of the POP they come from.
    #[serde(default)]
    pub customers: Vec<String>,
    /// HTTP listener: the query API (popctl) and `/metrics`; loopback recommended.
    #[serde(default = "defaults::log_admin")]
    pub admin: SocketAddr,
    /// Bearer token required by the admin listener; none = open (loopback only).
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// Listener of NetView, the web UI (HTTP, loopback or behind a TLS proxy); none = no UI
    /// on this log server. Its users are in `<data_dir>/netview-users.toml`.
    #[serde(default)]
    pub netview: Option<SocketAddr>,
    /// Directory of the rollup database, the raw records and NetView's users.
    #[serde(default = "defaults::log_data_dir")]
    pub data_dir: std::path::PathBuf,
    /// Minute rollups older than this are deleted (hour rollups are kept).
    #[serde(default = "defaults::log_minute_retention", with = "duration")]
    pub minute_retention: Duration,
    /// Raw record files older than this are deleted.
    #[serde(default = "defaults::log_raw_retention", with = "duration")]
    pub raw_retention: Duration,
    /// NetView's origin form: customers add and remove their own origin servers; each
    /// change goes out as a config signed with this log server's admin key, pushed
    /// through configd. None = no form (the page lists the origins only).
    #[serde(default)]
    pub origin_form: Option<OriginForm>,
}

/// How NetView's origin form changes the network's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginForm {
    /// The admin key (PKCS#8 PEM, from `popctl config keygen`) the log server signs
    /// changed configs with; its public half must be one of `[[network.admins]]`. Read
    /// on every change, so a replaced file takes effect at once.
    pub admin_key: std::path::PathBuf,
    /// Let customers add origins at loopback, private (RFC 1918, fc00::/7), shared
    /// (100.64.0.0/10) and link-local addresses. Off by default: such an origin would
    /// point the POP caches and probes at the POPs' own internal networks.
    #[serde(default)]
    pub allow_private: bool,
    /// At most this many origins per customer through the form.
    #[serde(default = "defaults::origin_form_max")]
    pub max_origins: usize,
}

/// How the DNS servers, caches and probes ship their records to the log servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// HMAC-SHA256 key authenticating record batches and their acknowledgements, hex,
    /// at least 16 bytes; required when there are log servers.
    pub key: Option<Secret>,
    /// Each daemon spools unacknowledged batches under `<spool_dir>/<pop>-<role>/`.
    pub spool_dir: std::path::PathBuf,
    /// Beyond this many spooled bytes per daemon the oldest batches are dropped (and counted).
    pub spool_max_bytes: u64,
    /// A batch is sealed at this many records ...
    pub batch_records: usize,
    /// ... or this long after its first record.
    #[serde(with = "duration")]
    pub batch_interval: Duration,
    /// DNS server asked for the log servers' names; default: this POP's own DNS server.
    pub resolver: Option<SocketAddr>,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            key: None,
            spool_dir: "/var/spool/popnet".into(),
            spool_max_bytes: 1 << 30,
            batch_records: 5000,
            batch_interval: Duration::from_secs(1),
            resolver: None,
        }
    }
}

/// The config daemons of the network and the tree a push travels (the seed's AdminTools:
/// "a list of servers will get the configuration file and send it to another list of
/// servers and so on", as the configuration file itself says).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Configd {
    /// The boxes `popctl config push` sends to first; every other box is controlled by
    /// exactly one box.
    pub masters: Vec<String>,
    /// A subtree that has not acknowledged a PREPARE (or COMMIT) within this fails, and
    /// the push is aborted everywhere.
    #[serde(default = "defaults::configd_timeout", with = "duration")]
    pub timeout: Duration,
    /// How often a box asks its parent (then the parent's ancestors, then the masters)
    /// whether a newer config was committed while it was down or cut off.
    #[serde(default = "defaults::configd_recovery", with = "duration")]
    pub recovery_interval: Duration,
    /// TLS between config daemons (rustls); none = plain TCP (the signatures still
    /// protect the content, but not its secrets).
    #[serde(default)]
    pub tls: Option<ConfigdTls>,
    pub boxes: Vec<ConfigBox>,
}

/// TLS settings of the config daemons.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigdTls {
    /// PEM certificate(s) of the CA that issued every box's certificate. A box's
    /// certificate names `configd.<box>.<network.zone>`.
    pub ca: String,
    /// `offer`: daemons answer TLS but connect in plain TCP (the step when turning TLS
    /// on); `require`: daemons connect with TLS and hand out a config only over TLS to
    /// a peer with a certificate of the CA.
    #[serde(default)]
    pub mode: TlsMode,
}

/// Whether config daemons connect with TLS.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Offer,
    #[default]
    Require,
}

/// One box that runs `popnet configd`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigBox {
    pub name: String,
    /// TCP address of its config daemon, as other boxes and popctl reach it.
    pub address: SocketAddr,
    /// The POP whose services run on this box (its cache is purged through it).
    #[serde(default)]
    pub pop: Option<String>,
    /// The boxes this one sends a pushed config to.
    #[serde(default)]
    pub controls: Vec<String>,
    /// With TLS: this box's certificate chain (PEM), a path on this box.
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// With TLS: this box's private key (PEM), a path on this box.
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
}

mod defaults {
    use std::time::Duration;

    pub fn configd_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn configd_recovery() -> Duration {
        Duration::from_secs(5)
    }

    pub fn one() -> f64 {
        1.0
    }
    pub fn http_port() -> u16 {
        80
    }
    pub fn record_ttl() -> u32 {
        3600
    }
    pub fn probe_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn probe_timeout() -> Duration {
        Duration::from_millis(500)
    }
    pub fn stale_after() -> Duration {
        Duration::from_secs(5)
    }
    pub fn recovery() -> Duration {
        Duration::from_secs(2)
    }
    pub fn resolver_refresh() -> Duration {
        Duration::from_secs(60)
    }
    pub fn resolver_stale_after() -> Duration {
        Duration::from_secs(300)
    }
    pub fn resolver_max() -> usize {
        100_000
    }
    pub fn resolver_rate() -> u32 {
        1_000
    }
    pub fn load_from() -> Vec<super::LoadSource> {
        super::LoadSource::ALL.to_vec()
    }
    pub fn overload_response() -> Duration {
        Duration::from_secs(1)
    }
    pub fn log_admin() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 5480))
    }
    pub fn log_data_dir() -> std::path::PathBuf {
        "/var/lib/popnet/log".into()
    }
    pub fn log_minute_retention() -> Duration {
        Duration::from_secs(3 * 86_400)
    }
    pub fn log_raw_retention() -> Duration {
        Duration::from_secs(90 * 86_400)
    }
    pub fn origin_form_max() -> usize {
        16
    }
    pub fn cache_admin() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 5381))
    }
    pub fn cache_ram_bytes() -> u64 {
        256 << 20
    }
    pub fn cache_disk_bytes() -> u64 {
        1 << 30
    }
    pub fn cache_disk_segment_bytes() -> u64 {
        64 << 20
    }
    pub fn cache_disk_promote_hits() -> u32 {
        2
    }
    pub fn cache_disk_promote_max_bytes() -> u64 {
        1 << 20
    }
    pub fn cache_max_object_bytes() -> u64 {
        32 << 20
    }
    pub fn cache_max_connections() -> usize {
        10_000
    }
    pub fn cache_max_request_body() -> u64 {
        1 << 20
    }
    pub fn cache_head_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn cache_body_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn cache_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn cache_send_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn cache_origin_connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn cache_origin_timeout() -> Duration {
        Duration::from_secs(15)
    }
}
