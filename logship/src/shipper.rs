//! The shipper: takes JSON lines from a daemon, routes them by customer, seals numbered batches into the spool and sends them until acknowledged.
//!
//! `write_lines` only copies the lines into a bounded queue (a full queue drops and
//! counts), so the daemon's own threads never wait on the disk or the network. One
//! sealer thread parses the `customer` of each line, appends it to its destination's
//! batch and seals a batch when it holds `[logs] batch_records` or is
//! `[logs] batch_interval` old: compressed, numbered, written to the spool and synced.
//! One sender thread per destination keeps a TCP connection to the log server (its
//! address asked of popnet's DNS at every connect), sends spooled batches in order with
//! up to [`WINDOW`] unacknowledged, deletes a batch once its ack arrives, and after any
//! failure reconnects with backoff and sends again from the oldest unacknowledged one.
//! A log server that restarts or a network that breaks costs time, not records: they
//! wait in the spool (up to `[logs] spool_max_bytes`, beyond which the oldest are
//! dropped and counted), and the log server drops the duplicates a resend makes.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use popnet_config::Config;
use serde::{Deserialize, Serialize};

use crate::record::Routing;
use crate::route::{Routes, resolve, resolver_for};
use crate::spool::{Spool, SpoolError};
use crate::wire::{ACK_LEN, Ack, Batch, Kind};

/// Most batches sent and not yet acknowledged on one connection.
pub const WINDOW: usize = 16;
/// Chunks of lines queued between the daemon and the sealer.
const INTAKE: usize = 4096;
/// Longest wait for an ack before the connection counts as dead.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DNS_TIMEOUT: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Everything a shipper needs, usually from [`ShipperConfig::from_config`].
#[derive(Debug, Clone)]
pub struct ShipperConfig {
    pub kind: Kind,
    /// Who sends, e.g. `iad1/cache`.
    pub source: String,
    /// This daemon's spool (one subdirectory per destination).
    pub spool_dir: PathBuf,
    pub key: Vec<u8>,
    pub routes: Routes,
    /// DNS server asked for the destinations' names; none = the configured addresses.
    pub resolver: Option<SocketAddr>,
    pub batch_records: usize,
    pub batch_interval: Duration,
    pub spool_max_bytes: u64,
}

impl ShipperConfig {
    /// The shipper of `role` (`cache`, `dns`, `probe`) on `pop`, or `None` when the
    /// network has no log server for this POP's records (nothing to ship).
    pub fn from_config(cfg: &Config, pop: &str, role: &str, kind: Kind) -> Option<ShipperConfig> {
        let routes = Routes::build(cfg, pop);
        let key = cfg.logs.key.as_ref()?;
        if routes.is_empty() {
            return None;
        }
        Some(ShipperConfig {
            kind,
            source: format!("{pop}/{role}"),
            spool_dir: cfg.logs.spool_dir.join(format!("{pop}-{role}")),
            key: key.as_bytes().to_vec(),
            routes,
            resolver: resolver_for(cfg, pop),
            batch_records: cfg.logs.batch_records,
            batch_interval: cfg.logs.batch_interval,
            spool_max_bytes: cfg.logs.spool_max_bytes,
        })
    }
}

/// Why a shipper cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShipError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot start a shipper thread: {0}")]
    Thread(#[source] io::Error),
}

/// Counters of one destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationStats {
    pub name: String,
    pub dns_name: String,
    /// Where the last connection went, and whether DNS said so ("dns") or DNS could not
    /// be asked and the configured address was used ("config").
    pub address: Option<String>,
    pub resolved_by: Option<String>,
    pub connected: bool,
    pub connects: u64,
    pub batches_sealed: u64,
    pub records_sealed: u64,
    pub batches_sent: u64,
    pub batches_acked: u64,
    pub duplicates: u64,
    /// Oldest batches dropped because the spool was full.
    pub batches_dropped: u64,
    /// Spooled batches whose file could not be sent (moved aside as `.bad`).
    pub batches_bad: u64,
    pub spool_batches: usize,
    pub spool_bytes: u64,
    pub last_error: Option<String>,
    /// Unix ms of the last acknowledgement.
    pub last_ack_ms: Option<u64>,
}

/// Counters of a shipper.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShipperStats {
    pub kind: String,
    pub source: String,
    pub records_in: u64,
    /// Lines without a readable `customer`.
    pub records_malformed: u64,
    /// Lines no log server takes (the POP names none and no log server lists the customer).
    pub records_unrouted: u64,
    /// Chunks dropped because the sealer fell behind.
    pub chunks_dropped: u64,
    pub destinations: Vec<DestinationStats>,
}

struct Dest {
    spool: Mutex<Spool>,
    wake: Condvar,
    stats: Mutex<DestinationStats>,
}

struct Inner {
    cfg: ShipperConfig,
    dests: Vec<Dest>,
    stop: AtomicBool,
    records_in: AtomicU64,
    records_malformed: AtomicU64,
    records_unrouted: AtomicU64,
    chunks_dropped: AtomicU64,
}

/// A running shipper. Dropping it stops it like [`Shipper::stop`].
pub struct Shipper {
    inner: Arc<Inner>,
    intake: Option<crossbeam_channel::Sender<Vec<u8>>>,
    threads: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Shipper {
    /// Opens the spools (sending what an earlier run left) and starts the threads.
    pub fn start(cfg: ShipperConfig) -> Result<Shipper, ShipError> {
        let mut dests = Vec::new();
        for d in &cfg.routes.destinations {
            let spool = Spool::open(&cfg.spool_dir.join(&d.name))?;
            let stats = DestinationStats {
                name: d.name.clone(),
                dns_name: d.dns_name.clone(),
                spool_batches: spool.len(),
                spool_bytes: spool.bytes(),
                ..DestinationStats::default()
            };
            if !spool.is_empty() {
                tracing::info!(destination = %d.name, batches = spool.len(), "log shipping: resending spooled batches");
            }
            dests.push(Dest {
                spool: Mutex::new(spool),
                wake: Condvar::new(),
                stats: Mutex::new(stats),
            });
        }
        let inner = Arc::new(Inner {
            cfg,
            dests,
            stop: AtomicBool::new(false),
            records_in: AtomicU64::new(0),
            records_malformed: AtomicU64::new(0),
            records_unrouted: AtomicU64::new(0),
            chunks_dropped: AtomicU64::new(0),
        });
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(INTAKE);
        let mut shipper = Shipper {
            inner: inner.clone(),
            intake: Some(tx),
            threads: Vec::new(),
        };
        let name = format!("ship-{}", inner.cfg.kind.as_str());
        let i = inner.clone();
        shipper.threads.push(
            std::thread::Builder::new()
                .name(format!("{name}-seal"))
                .spawn(move || Sealer::new(i).run(rx))
                .map_err(ShipError::Thread)?,
        );
        for d in 0..inner.dests.len() {
            let i = inner.clone();
            shipper.threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-send{d}"))
                    .spawn(move || Sender { inner: i, d }.run())
                    .map_err(ShipError::Thread)?,
            );
        }
        Ok(shipper)
    }

    /// Queues newline-separated JSON records (each with a `customer`); never blocks.
    pub fn write_lines(&self, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        if let Some(tx) = &self.intake
            && tx.try_send(lines.to_vec()).is_err()
        {
            self.inner.chunks_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> ShipperStats {
        let i = &self.inner;
        ShipperStats {
            kind: i.cfg.kind.as_str().into(),
            source: i.cfg.source.clone(),
            records_in: i.records_in.load(Ordering::Relaxed),
            records_malformed: i.records_malformed.load(Ordering::Relaxed),
            records_unrouted: i.records_unrouted.load(Ordering::Relaxed),
            chunks_dropped: i.chunks_dropped.load(Ordering::Relaxed),
            destinations: i
                .dests
                .iter()
                .map(|d| {
                    let mut s = lock(&d.stats).clone();
                    let sp = lock(&d.spool);
                    s.spool_batches = sp.len();
                    s.spool_bytes = sp.bytes();
                    s
                })
                .collect(),
        }
    }

    /// The shipper's counters in the Prometheus text format (for the daemon's `/metrics`).
    pub fn metrics(&self, m: &mut promtext::Metrics) {
        let st = self.stats();
        let src = st.source.as_str();
        let l = [("source", src)];
        m.counter(
            "popnet_logship_records_total",
            "Records handed to the shipper.",
        )
        .sample(&l, st.records_in);
        m.counter(
            "popnet_logship_dropped_records_total",
            "Records not shipped, by reason (malformed: no readable customer; unrouted: no log server takes them).",
        )
        .sample(&[("source", src), ("reason", "malformed")], st.records_malformed)
        .sample(&[("source", src), ("reason", "unrouted")], st.records_unrouted);
        m.counter(
            "popnet_logship_dropped_chunks_total",
            "Chunks of lines dropped because the sealer fell behind.",
        )
        .sample(&l, st.chunks_dropped);
        macro_rules! per_dest {
            ($kind:ident, $name:literal, $help:literal, |$d:ident| $v:expr) => {{
                let mut f = m.$kind($name, $help);
                for $d in &st.destinations {
                    f.sample(&[("source", src), ("destination", &$d.name)], $v);
                }
            }};
        }
        per_dest!(
            counter,
            "popnet_logship_records_sealed_total",
            "Records sealed into batches, per log server.",
            |d| d.records_sealed
        );
        per_dest!(
            counter,
            "popnet_logship_batches_sealed_total",
            "Batches sealed and spooled, per log server.",
            |d| d.batches_sealed
        );
        per_dest!(
            counter,
            "popnet_logship_batches_sent_total",
            "Batch frames sent (resends included), per log server.",
            |d| d.batches_sent
        );
        per_dest!(
            counter,
            "popnet_logship_batches_acked_total",
            "Batches acknowledged, per log server.",
            |d| d.batches_acked
        );
        per_dest!(
            counter,
            "popnet_logship_duplicate_acks_total",
            "Batches the log server already had (a resend), per log server.",
            |d| d.duplicates
        );
        per_dest!(
            counter,
            "popnet_logship_batches_dropped_total",
            "Oldest batches dropped from a full spool, per log server.",
            |d| d.batches_dropped
        );
        per_dest!(
            counter,
            "popnet_logship_connects_total",
            "Connections made, per log server.",
            |d| d.connects
        );
        per_dest!(
            gauge,
            "popnet_logship_spool_batches",
            "Batches waiting for an acknowledgement, per log server.",
            |d| d.spool_batches
        );
        per_dest!(
            gauge,
            "popnet_logship_spool_bytes",
            "Bytes of the spooled batches, per log server.",
            |d| d.spool_bytes
        );
        per_dest!(
            gauge,
            "popnet_logship_connected",
            "1 while connected to the log server.",
            |d| d.connected
        );
        let mut f = m.gauge(
            "popnet_logship_destination_info",
            "Where the last connection to each log server went, and whether popnet's DNS (dns) or the config (config) gave the address.",
        );
        for d in &st.destinations {
            if let (Some(a), Some(by)) = (&d.address, &d.resolved_by) {
                f.sample(
                    &[
                        ("source", src),
                        ("destination", &d.name),
                        ("dns_name", &d.dns_name),
                        ("address", a),
                        ("resolved_by", by),
                    ],
                    1,
                );
            }
        }
    }

    /// Seals what is queued, gives the senders up to `grace` to deliver it, and stops.
    /// Whatever is not acknowledged by then stays in the spool for the next start.
    pub fn stop_within(mut self, grace: Duration) {
        self.shutdown(grace);
    }

    /// [`Shipper::stop_within`] two seconds.
    pub fn stop(self) {
        self.stop_within(Duration::from_secs(2));
    }

    fn shutdown(&mut self, grace: Duration) {
        let Some(tx) = self.intake.take() else {
            return;
        };
        drop(tx); // the sealer seals everything and exits
        let deadline = Instant::now() + grace;
        if let Some(sealer) = (!self.threads.is_empty()).then(|| self.threads.remove(0)) {
            let _ = sealer.join();
        }
        while Instant::now() < deadline
            && self.inner.dests.iter().any(|d| !lock(&d.spool).is_empty())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.inner.stop.store(true, Ordering::Relaxed);
        for d in &self.inner.dests {
            d.wake.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

struct Pending {
    raw: Vec<u8>,
    records: u32,
    first: Option<Instant>,
}

struct Sealer {
    inner: Arc<Inner>,
    pending: Vec<Pending>,
}

impl Sealer {
    fn new(inner: Arc<Inner>) -> Sealer {
        let pending = (0..inner.dests.len())
            .map(|_| Pending {
                raw: Vec::new(),
                records: 0,
                first: None,
            })
            .collect();
        Sealer { inner, pending }
    }

    fn run(mut self, rx: crossbeam_channel::Receiver<Vec<u8>>) {
        let interval = self.inner.cfg.batch_interval;
        loop {
            let wait = self
                .pending
                .iter()
                .filter_map(|p| p.first)
                .map(|t| (t + interval).saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(Duration::from_secs(1));
            match rx.recv_timeout(wait) {
                Ok(chunk) => self.take(&chunk),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    for d in 0..self.pending.len() {
                        self.seal(d);
                    }
                    return;
                }
            }
            for d in 0..self.pending.len() {
                if self.pending[d]
                    .first
                    .is_some_and(|t| t.elapsed() >= interval)
                {
                    self.seal(d);
                }
            }
        }
    }

    fn take(&mut self, chunk: &[u8]) {
        let max = self.inner.cfg.batch_records;
        for line in chunk.split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            self.inner.records_in.fetch_add(1, Ordering::Relaxed);
            let Ok(r) = serde_json::from_slice::<Routing<'_>>(line) else {
                self.inner.records_malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Some(d) = self.inner.cfg.routes.route(&r.customer) else {
                self.inner.records_unrouted.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let p = &mut self.pending[d];
            p.raw.extend_from_slice(line);
            p.raw.push(b'\n');
            p.records += 1;
            p.first.get_or_insert_with(Instant::now);
            if p.records as usize >= max || p.raw.len() >= (crate::wire::MAX_RAW as usize) / 2 {
                self.seal(d);
            }
        }
    }

    fn seal(&mut self, d: usize) {
        let p = &mut self.pending[d];
        if p.records == 0 {
            return;
        }
        let raw = std::mem::take(&mut p.raw);
        let records = std::mem::replace(&mut p.records, 0);
        p.first = None;
        let cfg = &self.inner.cfg;
        let dest = &self.inner.dests[d];
        let mut spool = lock(&dest.spool);
        let seq = spool.next_seq();
        let batch = match Batch::seal(
            cfg.kind,
            spool.stream(),
            seq,
            unix_ms(),
            records,
            &cfg.source,
            &raw,
        ) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "log shipping: cannot compress a batch; its records are lost");
                return;
            }
        };
        let frame = batch.encode(&cfg.key);
        if let Err(e) = spool.push(seq, &frame) {
            tracing::warn!(error = %e, records, "log shipping: cannot spool a batch; its records are lost");
            lock(&dest.stats).last_error = Some(e.to_string());
            return;
        }
        let mut dropped = 0;
        while spool.bytes() > cfg.spool_max_bytes && spool.len() > 1 {
            if let Some(old) = spool.oldest() {
                let _ = spool.remove(old);
                dropped += 1;
            }
        }
        drop(spool);
        let mut st = lock(&dest.stats);
        st.batches_sealed += 1;
        st.records_sealed += u64::from(records);
        if dropped > 0 {
            st.batches_dropped += dropped;
            tracing::warn!(destination = %st.name, dropped, "log shipping: spool full; oldest batches dropped");
        }
        drop(st);
        dest.wake.notify_all();
    }
}

struct Sender {
    inner: Arc<Inner>,
    d: usize,
}

/// Why a connection ended.
enum Ended {
    Stopped,
    Failed(String),
}

impl Sender {
    fn dest(&self) -> &Dest {
        &self.inner.dests[self.d]
    }

    fn stopping(&self) -> bool {
        self.inner.stop.load(Ordering::Relaxed)
    }

    fn run(self) {
        let mut backoff = Duration::from_millis(100);
        while !self.stopping() {
            {
                let dest = self.dest();
                let mut sp = lock(&dest.spool);
                while sp.is_empty() && !self.stopping() {
                    sp = dest
                        .wake
                        .wait_timeout(sp, Duration::from_millis(500))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            if self.stopping() {
                return;
            }
            let started = Instant::now();
            match self.connect().map(|s| self.session(s)) {
                Ok(Ended::Stopped) => return,
                Ok(Ended::Failed(why)) | Err(why) => {
                    let mut st = lock(&self.dest().stats);
                    st.connected = false;
                    if st.last_error.as_deref() != Some(why.as_str()) {
                        tracing::warn!(destination = %st.name, error = %why, "log shipping: will retry");
                    }
                    st.last_error = Some(why);
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            let until = Instant::now() + backoff;
            while Instant::now() < until && !self.stopping() {
                std::thread::sleep(Duration::from_millis(20));
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn connect(&self) -> Result<TcpStream, String> {
        let d = &self.inner.cfg.routes.destinations[self.d];
        let (addrs, by) = match self.inner.cfg.resolver {
            Some(r) => match resolve(r, &d.dns_name, DNS_TIMEOUT) {
                Ok(ips) => (
                    ips.into_iter()
                        .map(|ip| SocketAddr::new(ip, d.address.port()))
                        .collect::<Vec<_>>(),
                    "dns",
                ),
                Err(e) => {
                    tracing::debug!(error = %e, name = %d.dns_name, "log shipping: DNS not answering; using the configured address");
                    (vec![d.address], "config")
                }
            },
            None => (vec![d.address], "config"),
        };
        let mut last = String::new();
        for a in &addrs {
            match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s.set_read_timeout(Some(ACK_TIMEOUT))
                        .map_err(|e| e.to_string())?;
                    s.set_write_timeout(Some(ACK_TIMEOUT))
                        .map_err(|e| e.to_string())?;
                    let mut st = lock(&self.dest().stats);
                    st.address = Some(a.to_string());
                    st.resolved_by = Some(by.into());
                    st.connected = true;
                    st.connects += 1;
                    return Ok(s);
                }
                Err(e) => last = format!("cannot connect to {} ({a}, from {by}): {e}", d.name),
            }
        }
        Err(last)
    }

    /// Sends every pending batch in order and reads their acks until stopped or broken.
    fn session(&self, mut s: TcpStream) -> Ended {
        let key = self.inner.cfg.key.clone();
        let dest = self.dest();
        let mut inflight: VecDeque<u64> = VecDeque::new();
        let mut last_sent = 0u64;
        loop {
            if self.stopping() {
                return Ended::Stopped;
            }
            // Fill the window.
            while inflight.len() < WINDOW {
                let next = {
                    let sp = lock(&dest.spool);
                    let after = inflight.back().copied().unwrap_or(0).max(last_sent);
                    sp.pending_after(after)
                        .next()
                        .map(|seq| (seq, sp.read(seq)))
                };
                let Some((seq, frame)) = next else { break };
                last_sent = seq;
                let frame = match frame {
                    Ok(f) if Batch::decode(&f, &key).is_ok() => f,
                    other => {
                        let why = match other {
                            Err(e) => e.to_string(),
                            Ok(_) => "not a valid batch under the current key".into(),
                        };
                        tracing::warn!(seq, error = %why, "log shipping: spooled batch unreadable; moved aside");
                        lock(&dest.spool).quarantine(seq);
                        lock(&dest.stats).batches_bad += 1;
                        continue;
                    }
                };
                if let Err(e) = s.write_all(&frame) {
                    return Ended::Failed(format!("send failed: {e}"));
                }
                inflight.push_back(seq);
                lock(&dest.stats).batches_sent += 1;
            }
            if inflight.is_empty() {
                // Nothing to send: wait for a new batch (the connection stays open).
                let sp = lock(&dest.spool);
                let after = last_sent;
                if sp.pending_after(after).next().is_none() {
                    let _ = dest.wake.wait_timeout(sp, Duration::from_millis(500));
                }
                if !self.alive(&mut s) {
                    return Ended::Failed("the log server closed the connection".into());
                }
                continue;
            }
            let mut ack = [0u8; ACK_LEN];
            if let Err(e) = s.read_exact(&mut ack) {
                return Ended::Failed(match e.kind() {
                    io::ErrorKind::UnexpectedEof => "the log server closed the connection".into(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        format!("no acknowledgement within {ACK_TIMEOUT:?}")
                    }
                    _ => format!("receive failed: {e}"),
                });
            }
            let a = match Ack::decode(&ack, &key) {
                Ok(a) => a,
                Err(e) => return Ended::Failed(format!("bad acknowledgement: {e}")),
            };
            let stream = lock(&dest.spool).stream();
            if a.stream != stream || Some(a.seq) != inflight.front().copied() {
                return Ended::Failed(format!(
                    "acknowledgement for batch {} while {:?} was expected",
                    a.seq,
                    inflight.front()
                ));
            }
            inflight.pop_front();
            if let Err(e) = lock(&dest.spool).remove(a.seq) {
                tracing::warn!(error = %e, "log shipping: cannot delete an acknowledged batch");
            }
            let mut st = lock(&dest.stats);
            st.batches_acked += 1;
            st.last_ack_ms = Some(unix_ms());
            st.last_error = None;
            if a.status == crate::wire::AckStatus::Duplicate {
                st.duplicates += 1;
            }
        }
    }

    /// False when the peer has closed an idle connection (or sent something unasked).
    fn alive(&self, s: &mut TcpStream) -> bool {
        if s.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let ok = matches!(s.peek(&mut b), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock);
        s.set_nonblocking(false).is_ok() && ok
    }
}
