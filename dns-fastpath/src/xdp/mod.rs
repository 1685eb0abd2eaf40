//! The XDP fast path from userspace: loading and attaching the program, writing its maps, reading its counters.
//!
//! # How the answer map is written without torn reads
//! The program reads answers from `ANSWERS`, an `ARRAY_OF_MAPS` whose slot 0 points at
//! one of two hash maps, A and B. Userspace keeps both holding the same entries and only
//! ever writes the one *not* in slot 0: it applies a change to the inactive map, points
//! slot 0 at it, then applies the same change to the other. Updating an array-of-maps
//! slot returns only after an RCU grace period (the kernel's `maybe_wait_bpf_programs`),
//! and every XDP run is an RCU read-side section, so when the swap returns no program
//! run can still be reading the map about to be written. A program run therefore sees
//! either the whole old or the whole new answer, never a half-written value, and never a
//! hash element recycled under it (which in-place hash updates allow: aya-ebpf documents
//! that entries can be reused by any later insert). A changed answer is visible after
//! one grace period, typically a few milliseconds.
//!
//! # How answers sent by the program reach the DNS records
//! Every entry of a balanced name carries a slot of the per-CPU `HITS` array, which the
//! program adds one to for each answer it sends. An entry keeps its slot while it stays
//! in the map; [`Runtime::drain_hits`] (called before each DNS-log drain) adds each
//! slot's growth to the catalog tallies of the servers in that entry's answer. Slots of
//! entries that change or go are read before the write, and those that go once more
//! after the swap, when no program run can still count into them.

pub mod entries;

use std::net::{IpAddr, SocketAddr};

use popnet_common::{COUNTERS, Counter};
use serde::{Deserialize, Serialize};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::answer::AnswerTable;
#[cfg(not(popnet_xdp))]
use crate::views::Views;

pub use popnet_config::XdpMode;

/// Why the fast path is not running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpError {
    #[error(
        "this build of popnet has no XDP program (its eBPF toolchain was missing at build time); run .ci/install-ebpf-toolchain and rebuild"
    )]
    NotBuilt,
    #[error(
        "no privilege to load BPF programs ({0}); run as root or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
    )]
    Permission(String),
    #[error("the kernel cannot run the XDP program: {0}")]
    Unsupported(String),
    #[error(
        "interface {iface} already has an XDP program; remove it with `ip link set dev {iface} xdp off` (or `xdpgeneric off`) and start again"
    )]
    Busy { iface: String },
    #[error("no network interface named {iface:?}; fix the XDP interface list")]
    NoInterface { iface: String },
    #[error("cannot attach to {iface} in {mode:?} mode: {reason}")]
    Attach {
        iface: String,
        mode: XdpMode,
        reason: String,
    },
    #[error("XDP map {map}: {reason}")]
    Map { map: &'static str, reason: String },
}

impl XdpError {
    /// True if the error is about this machine (privilege, kernel, build), not the
    /// config: the server then answers from userspace only.
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            XdpError::NotBuilt | XdpError::Permission(_) | XdpError::Unsupported(_)
        )
    }
}

/// Counters summed over CPUs, and per CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpCounters {
    pub answered: u64,
    /// Passed to userspace, per reason (every counter but `answered`).
    pub passed: std::collections::BTreeMap<String, u64>,
    pub passed_total: u64,
    /// `[cpu][counter]`, counters in `popnet_common::Counter` order.
    pub per_cpu: Vec<Vec<u64>>,
    pub names: Vec<String>,
}

impl XdpCounters {
    fn from_per_cpu(per_cpu: Vec<[u64; COUNTERS]>) -> XdpCounters {
        let mut c = XdpCounters {
            names: Counter::ALL.iter().map(|c| c.name().to_string()).collect(),
            ..XdpCounters::default()
        };
        for cpu in &per_cpu {
            for (i, n) in cpu.iter().enumerate() {
                let which = Counter::ALL[i];
                if which == Counter::Answered {
                    c.answered += n;
                } else {
                    *c.passed.entry(which.name().to_string()).or_default() += n;
                    c.passed_total += n;
                }
            }
        }
        c.per_cpu = per_cpu.iter().map(|a| a.to_vec()).collect();
        c
    }
}

/// What the program needs to know about the server it fronts.
#[derive(Debug, Clone)]
pub struct ProgramSettings {
    /// The server's UDP listen addresses: the program answers only for these (a wildcard
    /// address means every destination of that family).
    pub listen: Vec<SocketAddr>,
    /// Our EDNS payload size.
    pub udp_payload: u16,
    /// The server places resolvers by latency: have the program note the resolvers it
    /// answers that have no exact entry yet.
    pub track_resolvers: bool,
}

impl ProgramSettings {
    /// The DNS port (the program answers one port: the first listen address's).
    pub fn port(&self) -> u16 {
        self.listen.first().map_or(53, |a| a.port())
    }

    fn any(&self, v6: bool) -> bool {
        self.listen
            .iter()
            .any(|a| a.is_ipv6() == v6 && a.ip().is_unspecified())
    }

    fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.listen
            .iter()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
    }
}

#[cfg(popnet_xdp)]
mod loaded;
#[cfg(popnet_xdp)]
pub use loaded::{FastPath, PassProgram};

/// Stand-in when the program was not built.
#[cfg(not(popnet_xdp))]
pub struct PassProgram(std::convert::Infallible);

#[cfg(not(popnet_xdp))]
impl PassProgram {
    pub fn attach(_iface: &str, _mode: XdpMode) -> Result<PassProgram, XdpError> {
        Err(XdpError::NotBuilt)
    }
}

/// Stand-in when the program was not built: every constructor reports [`XdpError::NotBuilt`].
#[cfg(not(popnet_xdp))]
pub struct FastPath(std::convert::Infallible);

#[cfg(not(popnet_xdp))]
impl FastPath {
    pub fn load(
        _settings: &ProgramSettings,
        _views: &Views,
        _table: &AnswerTable,
    ) -> Result<FastPath, XdpError> {
        Err(XdpError::NotBuilt)
    }
    pub fn attach(&mut self, _iface: &str, _mode: XdpMode) -> Result<(), XdpError> {
        match self.0 {}
    }
    pub fn publish(&mut self, _table: &AnswerTable) -> Result<usize, XdpError> {
        match self.0 {}
    }
    pub fn counters(&self) -> Result<XdpCounters, XdpError> {
        match self.0 {}
    }
    pub fn entries(
        &self,
    ) -> Result<Vec<(popnet_common::AnswerKey, popnet_common::AnswerValue)>, XdpError> {
        match self.0 {}
    }
    pub fn attached(&self) -> Vec<(String, XdpMode)> {
        match self.0 {}
    }
    pub fn test_run(&self, _frame: &[u8], _repeat: u32) -> Result<TestRun, XdpError> {
        match self.0 {}
    }
    pub fn cost(&self, _frame: &[u8], _repeat: u32) -> Result<Cost, XdpError> {
        match self.0 {}
    }
    pub fn publish_resolver_views(
        &mut self,
        _views: &std::collections::HashMap<IpAddr, crate::views::ViewId>,
    ) -> Result<usize, XdpError> {
        match self.0 {}
    }
    pub fn drain_seen(&mut self) -> Result<Vec<IpAddr>, XdpError> {
        match self.0 {}
    }
    pub fn replace_views(
        &mut self,
        _views: &Views,
        _table: &AnswerTable,
    ) -> Result<usize, XdpError> {
        match self.0 {}
    }
    pub fn clear(&mut self) -> Result<(), XdpError> {
        match self.0 {}
    }
    pub fn drain_hits(&mut self) -> Result<u64, XdpError> {
        match self.0 {}
    }
    pub fn published(&self) -> (usize, usize) {
        match self.0 {}
    }
}

/// The result of one BPF_PROG_TEST_RUN.
#[derive(Debug, Clone)]
pub struct TestRun {
    /// XDP action: 1 drop, 2 pass, 3 tx.
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Mean run time per repetition.
    pub duration: Duration,
}

/// What one packet costs the program ([`FastPath::cost`]).
#[derive(Debug, Clone)]
pub struct Cost {
    /// Mean run time of the program itself, per packet (kernel BPF statistics).
    pub program_ns: f64,
    /// Mean time per repetition of the whole test run (frame setup, program, transmit).
    pub total_ns: f64,
    /// Program runs counted.
    pub runs: u64,
    /// Instructions the verifier walked when the program loaded.
    pub verified_insns: Option<u32>,
}

/// XDP action numbers.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// True if this build carries the XDP program.
pub const BUILT: bool = cfg!(popnet_xdp);

/// What the fast path is doing, for stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum XdpState {
    /// No interface configured.
    Off,
    /// Asked for, but this machine cannot run it; the server answers from userspace.
    Unavailable { reason: String },
    /// Answering in the driver.
    Attached {
        interfaces: Vec<String>,
        mode: XdpMode,
    },
}

/// How the map writer is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterStats {
    /// Answer-table generation the map holds.
    pub generation: u64,
    /// Entries in the map.
    pub entries: usize,
    /// Table entries too large for the map (answered by userspace).
    pub skipped: usize,
    /// Tables written, and the last write's duration (diff, both maps, the swap).
    pub publishes: u64,
    pub last_publish_us: u64,
    pub last_error: Option<String>,
}

impl WriterStats {
    /// Notes a table written: `(entries, skipped)` from [`FastPath::published`].
    fn published(&mut self, table: &AnswerTable, (entries, skipped): (usize, usize), t0: Instant) {
        self.generation = table.generation;
        self.entries = entries;
        self.skipped = skipped;
        self.publishes += 1;
        self.last_publish_us = t0.elapsed().as_micros() as u64;
        self.last_error = None;
    }
}

/// The running fast path: the loaded program and the thread that writes each new
/// answer table into its map.
pub struct Runtime {
    fast: Mutex<FastPath>,
    latest: Mutex<Option<Arc<AnswerTable>>>,
    wake: Condvar,
    stats: Mutex<WriterStats>,
    stop: AtomicBool,
    /// After a config reload: the catalog whose tables may be written (a table of an
    /// older catalog could carry view ids of older views). Read and set under `fast`.
    pinned: Mutex<Option<Arc<crate::catalog::Catalog>>>,
    /// Set when rewriting the views failed: the maps were emptied and nothing more is
    /// written (userspace answers everything) until the server restarts.
    halted: AtomicBool,
}

impl Runtime {
    /// Takes over a loaded (and attached) program; starts its writer thread.
    pub fn start(fast: FastPath) -> std::io::Result<(Arc<Runtime>, JoinHandle<()>)> {
        let rt = Arc::new(Runtime {
            fast: Mutex::new(fast),
            latest: Mutex::new(None),
            wake: Condvar::new(),
            stats: Mutex::new(WriterStats::default()),
            stop: AtomicBool::new(false),
            pinned: Mutex::new(None),
            halted: AtomicBool::new(false),
        });
        let r = rt.clone();
        let t = std::thread::Builder::new()
            .name("dns-xdp-writer".into())
            .spawn(move || r.run())?;
        Ok((rt, t))
    }

    /// Stops the writer thread (the program stays attached until the runtime drops).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Hands the writer a new table (only the latest offered is written).
    pub fn offer(&self, table: Arc<AnswerTable>) {
        *lock(&self.latest) = Some(table);
        self.wake.notify_one();
    }

    fn run(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let next = {
                let mut slot = lock(&self.latest);
                if slot.is_none() {
                    slot = match self.wake.wait_timeout(slot, Duration::from_millis(200)) {
                        Ok((s, _)) => s,
                        Err(p) => p.into_inner().0,
                    };
                }
                slot.take()
            };
            let Some(table) = next else { continue };
            let t0 = Instant::now();
            let result = {
                let mut fast = lock(&self.fast);
                if self.halted.load(Ordering::Relaxed)
                    || lock(&self.pinned)
                        .as_ref()
                        .is_some_and(|c| !Arc::ptr_eq(c, &table.catalog))
                {
                    continue;
                }
                fast.publish(&table)
                    .and_then(|_| fast.publish_resolver_views(&table.resolver_views))
                    .map(|_| fast.published())
            };
            let mut s = lock(&self.stats);
            match result {
                Ok(published) => s.published(&table, published, t0),
                Err(e) => {
                    tracing::error!(error = %e, generation = table.generation, "writing the XDP answer map failed; XDP keeps the previous answers");
                    s.last_error = Some(e.to_string());
                }
            }
        }
    }

    /// Takes the first table of a reloaded config. With `views_changed`, the view
    /// tries are rewritten (see [`FastPath::replace_views`]) before this returns;
    /// otherwise the table is written like any other. Tables of the old catalog that
    /// are still on their way are not written.
    pub fn reload(&self, table: Arc<AnswerTable>, views_changed: bool) -> Result<(), XdpError> {
        let mut fast = lock(&self.fast);
        *lock(&self.pinned) = Some(table.catalog.clone());
        if !views_changed {
            drop(fast);
            self.offer(table);
            return Ok(());
        }
        *lock(&self.latest) = None;
        let t0 = Instant::now();
        let result = fast.replace_views(&table.catalog.views, &table);
        let mut s = lock(&self.stats);
        match &result {
            Ok(_) => s.published(&table, fast.published(), t0),
            Err(e) => {
                self.halted.store(true, Ordering::Relaxed);
                // Without answers every query goes to userspace, which is right.
                let _ = fast.clear();
                s.last_error = Some(format!(
                    "rewriting the views failed ({e}); XDP passes every query to userspace until a restart"
                ));
            }
        }
        result.map(|_| ())
    }

    pub fn counters(&self) -> Result<XdpCounters, XdpError> {
        lock(&self.fast).counters()
    }

    pub fn entries(
        &self,
    ) -> Result<Vec<(popnet_common::AnswerKey, popnet_common::AnswerValue)>, XdpError> {
        lock(&self.fast).entries()
    }

    /// Adds the answers the program sent since the last call to the catalog tallies
    /// (the DNS records count them with the userspace answers); returns how many.
    pub fn drain_hits(&self) -> u64 {
        match lock(&self.fast).drain_hits() {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "reading the XDP hit counters failed");
                0
            }
        }
    }

    /// Resolvers the program answered that have no exact entry yet (sampled), taken out
    /// of its maps.
    pub fn drain_seen(&self) -> Vec<IpAddr> {
        match lock(&self.fast).drain_seen() {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "reading the XDP seen-resolver maps failed");
                Vec::new()
            }
        }
    }

    pub fn writer_stats(&self) -> WriterStats {
        lock(&self.stats).clone()
    }

    pub fn attached(&self) -> Vec<(String, XdpMode)> {
        lock(&self.fast).attached()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
