//! The loaded program: aya objects, attachments, the double-buffered answer map.

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{ArrayOfMaps, HashMap, MapData, PerCpuArray};
use aya::programs::{ProgramError, Xdp};
use aya::{Ebpf, EbpfError, EbpfLoader, TestRun as _, TestRunOptions};
use ipnet::IpNet;
use popnet_common::{
    AnswerKey, AnswerValue, COUNTERS, MAX_ANSWERS, MAX_LISTEN, MAX_SLOTS, NO_SLOT, RESOLVER_ENTRY,
};

use super::entries::{CountedEntries, Diff, counted_entries_of};
use super::{ProgramSettings, TestRun, XdpCounters, XdpError, XdpMode};
use crate::answer::AnswerTable;
use crate::tally::Tally;
use crate::views::{ViewId, Views};

/// The program object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/popnet-ebpf"));
const PROGRAM: &str = "popnet_dns";
/// `BPF_F_NO_PREALLOC`: allocate entries on demand (the maps are sized for 64k entries).
const NO_PREALLOC: u32 = 1;

type AnswerMap = HashMap<MapData, AnswerKey, AnswerValue>;

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> XdpError {
    move |e| XdpError::Map {
        map,
        reason: e.to_string(),
    }
}

fn load_err(e: EbpfError) -> XdpError {
    let text = format!("{e:#}");
    let denied = matches!(&e, EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) if io_error.raw_os_error() == Some(libc::EPERM))
        || text.contains("Operation not permitted")
        || text.contains("EPERM");
    if denied {
        XdpError::Permission(text)
    } else {
        XdpError::Unsupported(text)
    }
}

/// Whose answers a hit slot counts: the tally counters of the servers in the answer, in
/// the catalog the answer was built from.
struct Owner {
    tally: std::sync::Arc<Tally>,
    counters: Box<[u32]>,
}

/// The program's per-answer hit counters (`HITS`): which slot each counted entry has,
/// whose answers each slot counts, and each slot's total when last read. The kernel's
/// counters only grow; a slot taken by another entry goes on from its last total.
#[derive(Default)]
struct Slots {
    by_key: StdHashMap<AnswerKey, u16>,
    owners: Vec<Option<Owner>>,
    seen: Vec<u64>,
    free: Vec<u16>,
}

impl Slots {
    fn alloc(&mut self) -> Option<u16> {
        if let Some(s) = self.free.pop() {
            return Some(s);
        }
        let next = self.owners.len();
        if next >= MAX_SLOTS as usize {
            return None;
        }
        self.owners.push(None);
        self.seen.push(0);
        u16::try_from(next).ok()
    }
}

/// The loaded XDP program and its maps.
pub struct FastPath {
    ebpf: Ebpf,
    /// The two answer maps; `active` is the one slot 0 of `ANSWERS` points at.
    maps: [AnswerMap; 2],
    active: usize,
    /// What both maps hold.
    shadow: StdHashMap<AnswerKey, AnswerValue>,
    attached: Vec<(String, XdpMode, aya::programs::xdp::XdpLinkId)>,
    /// Our EDNS payload size, in the OPT template of every map value.
    payload: u16,
    /// The exact resolver entries written into the view tries.
    resolvers: StdHashMap<IpAddr, ViewId>,
    /// The view prefixes written into the view tries.
    prefixes: Vec<(IpNet, ViewId)>,
    slots: Slots,
    /// Answers of balanced names left out of the map for want of a hit slot.
    unslotted: usize,
    /// Answers of the last table published that do not fit the map.
    skipped: usize,
}

impl FastPath {
    /// Loads the program (not attached yet) with its views, listen addresses and every
    /// answer of `table`.
    pub fn load(
        settings: &ProgramSettings,
        views: &Views,
        table: &AnswerTable,
    ) -> Result<FastPath, XdpError> {
        let port = settings.port();
        let payload = settings.udp_payload;
        let any4 = u8::from(settings.any(false));
        let any6 = u8::from(settings.any(true));
        let mut l4 = [0u32; MAX_LISTEN];
        let mut l6 = [[0u64; 2]; MAX_LISTEN];
        let (mut n4, mut n6) = (0u8, 0u8);
        for ip in settings.addrs() {
            match ip {
                IpAddr::V4(a) if usize::from(n4) < MAX_LISTEN => {
                    l4[usize::from(n4)] = u32::from_ne_bytes(a.octets());
                    n4 += 1;
                }
                IpAddr::V6(a) if usize::from(n6) < MAX_LISTEN => {
                    let o = a.octets();
                    l6[usize::from(n6)] = [
                        u64::from_ne_bytes([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]]),
                        u64::from_ne_bytes([o[8], o[9], o[10], o[11], o[12], o[13], o[14], o[15]]),
                    ];
                    n6 += 1;
                }
                _ => {
                    return Err(XdpError::Unsupported(format!(
                        "the XDP program checks at most {MAX_LISTEN} listen addresses per family; listen on a wildcard address or on fewer"
                    )));
                }
            }
        }
        let mut ebpf = EbpfLoader::new()
            .override_global("DNS_PORT", &port, true)
            .override_global("UDP_PAYLOAD", &payload, true)
            .override_global("ANY_DST4", &any4, true)
            .override_global("ANY_DST6", &any6, true)
            .override_global("LISTEN4", &l4, true)
            .override_global("LISTEN4_LEN", &n4, true)
            .override_global("LISTEN6", &l6, true)
            .override_global("LISTEN6_LEN", &n6, true)
            .override_global("TRACK_RESOLVERS", &u8::from(settings.track_resolvers), true)
            .load(OBJECT)
            .map_err(load_err)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| XdpError::Unsupported(format!("no program {PROGRAM} in the object")))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::Unsupported(e.to_string()))?;
        prog.load().map_err(|e| match &e {
            ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EPERM) => {
                XdpError::Permission(e.to_string())
            }
            _ => XdpError::Unsupported(format!("{e:#}")),
        })?;

        // The two answer maps, A active from the start.
        let maps = [
            AnswerMap::create(MAX_ANSWERS, NO_PREALLOC).map_err(map_err("ANSWERS inner"))?,
            AnswerMap::create(MAX_ANSWERS, NO_PREALLOC).map_err(map_err("ANSWERS inner"))?,
        ];
        let mut fp = FastPath {
            ebpf,
            maps,
            active: 0,
            shadow: StdHashMap::new(),
            attached: Vec::new(),
            payload,
            resolvers: StdHashMap::new(),
            prefixes: Vec::new(),
            slots: Slots::default(),
            unslotted: 0,
            skipped: 0,
        };
        fp.write_prefixes(views)?;
        fp.point_at(0)?;
        fp.publish(table)?;
        Ok(fp)
    }

    /// Empties the answer maps and the resolver entries: every query goes to userspace.
    pub fn clear(&mut self) -> Result<(), XdpError> {
        self.publish_counted(StdHashMap::new(), None)?;
        self.skipped = 0;
        self.publish_resolver_views(&StdHashMap::new())?;
        Ok(())
    }

    /// Makes the view tries hold exactly the prefixes of `views`.
    fn write_prefixes(&mut self, views: &Views) -> Result<(), XdpError> {
        let next: Vec<(IpNet, ViewId)> = views.entries().collect();
        {
            let mut v4: LpmTrie<_, [u8; 4], u16> =
                LpmTrie::try_from(self.ebpf.map_mut("VIEWS4").ok_or(missing("VIEWS4"))?)
                    .map_err(map_err("VIEWS4"))?;
            for (net, _) in &self.prefixes {
                if let IpNet::V4(n) = net
                    && !next.iter().any(|(m, _)| m == net)
                {
                    let _ = v4.remove(&Key::new(u32::from(n.prefix_len()), n.network().octets()));
                }
            }
            for (net, view) in &next {
                if let IpNet::V4(n) = net {
                    v4.insert(
                        &Key::new(u32::from(n.prefix_len()), n.network().octets()),
                        view,
                        0,
                    )
                    .map_err(map_err("VIEWS4"))?;
                }
            }
        }
        {
            let mut v6: LpmTrie<_, [u8; 16], u16> =
                LpmTrie::try_from(self.ebpf.map_mut("VIEWS6").ok_or(missing("VIEWS6"))?)
                    .map_err(map_err("VIEWS6"))?;
            for (net, _) in &self.prefixes {
                if let IpNet::V6(n) = net
                    && !next.iter().any(|(m, _)| m == net)
                {
                    let _ = v6.remove(&Key::new(u32::from(n.prefix_len()), n.network().octets()));
                }
            }
            for (net, view) in &next {
                if let IpNet::V6(n) = net {
                    v6.insert(
                        &Key::new(u32::from(n.prefix_len()), n.network().octets()),
                        view,
                        0,
                    )
                    .map_err(map_err("VIEWS6"))?;
                }
            }
        }
        self.prefixes = next;
        Ok(())
    }

    /// Moves the program to new views (a config reload that changed them): first the
    /// answer maps are emptied (every query goes to userspace, which answers from the new
    /// table already), then the view tries are rewritten, then the answers of `table`
    /// (built on the new views) are written. No program run can pair a prefix of one
    /// generation of views with an answer of the other.
    pub fn replace_views(&mut self, views: &Views, table: &AnswerTable) -> Result<usize, XdpError> {
        self.clear()?;
        self.write_prefixes(views)?;
        let n = self.publish(table)?;
        Ok(n + self.publish_resolver_views(&table.resolver_views)?)
    }

    /// Points slot 0 of `ANSWERS` at map `i`; returns after an RCU grace period.
    fn point_at(&mut self, i: usize) -> Result<(), XdpError> {
        let mut outer: ArrayOfMaps<_, AnswerMap> =
            ArrayOfMaps::try_from(self.ebpf.map_mut("ANSWERS").ok_or(missing("ANSWERS"))?)
                .map_err(map_err("ANSWERS"))?;
        outer.set(0, &self.maps[i], 0).map_err(map_err("ANSWERS"))?;
        self.active = i;
        Ok(())
    }

    fn apply(map: &mut AnswerMap, diff: &Diff) -> Result<(), XdpError> {
        for k in &diff.removals {
            match map.remove(k) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("ANSWERS inner")(e)),
            }
        }
        for (k, v) in &diff.upserts {
            map.insert(k, v, 0).map_err(map_err("ANSWERS inner"))?;
        }
        Ok(())
    }

    /// Makes the maps hold exactly the answers of `table` (see the module docs for
    /// why no program run reads a half-written answer). Returns how many entries changed.
    pub fn publish(&mut self, table: &AnswerTable) -> Result<usize, XdpError> {
        let (next, skipped) = counted_entries_of(table, self.payload);
        if skipped > 0 {
            tracing::debug!(
                skipped,
                "answers too large for the XDP map are answered by userspace"
            );
        }
        let n = self.publish_counted(next, Some(&table.catalog.tally))?;
        self.skipped = skipped;
        Ok(n)
    }

    /// The entries both maps hold, and how many answers of the last table published
    /// did not fit.
    pub fn published(&self) -> (usize, usize) {
        (self.shadow.len(), self.skipped)
    }

    /// Gives every counted answer a hit slot (an entry keeps its slot while it stays in
    /// the map) and writes the entries. Hits so far are read first, so they count for
    /// the answers they were sent with; a removed entry's slot is read once more after
    /// no program run can see the entry, then freed. Answers that find no free slot stay
    /// out of the map: userspace answers (and counts) them.
    fn publish_counted(
        &mut self,
        wanted: CountedEntries,
        tally: Option<&std::sync::Arc<Tally>>,
    ) -> Result<usize, XdpError> {
        let mut next = StdHashMap::with_capacity(wanted.len());
        let mut by_key = StdHashMap::new();
        let mut owners = Vec::new();
        let mut fresh = Vec::new();
        let mut unslotted = 0;
        for (k, (mut v, counters)) in wanted {
            match tally {
                Some(t) if !counters.is_empty() => {
                    let slot = match self.slots.by_key.get(&k) {
                        Some(s) => *s,
                        None => match self.slots.alloc() {
                            Some(s) => {
                                fresh.push(s);
                                s
                            }
                            None => {
                                unslotted += 1;
                                continue;
                            }
                        },
                    };
                    v.slot = slot;
                    by_key.insert(k, slot);
                    owners.push((
                        slot,
                        Owner {
                            tally: t.clone(),
                            counters,
                        },
                    ));
                }
                _ => v.slot = NO_SLOT,
            }
            next.insert(k, v);
        }
        if unslotted > 0 && self.unslotted == 0 {
            tracing::warn!(
                unslotted,
                max = MAX_SLOTS,
                "more balanced answers than the XDP program has hit counters; userspace answers the rest"
            );
        }
        // Slots whose entry goes, changes, or counts for another catalog: what they
        // counted so far belongs to the answer they had.
        let affected: Vec<u16> = self
            .slots
            .by_key
            .iter()
            .filter(|(k, s)| {
                next.get(*k) != self.shadow.get(*k)
                    || match (&self.slots.owners[usize::from(**s)], tally) {
                        (Some(o), Some(t)) => !std::sync::Arc::ptr_eq(&o.tally, t),
                        _ => true,
                    }
            })
            .map(|(_, s)| *s)
            .collect();
        if let Err(e) = self.drain_slots(affected.iter().copied()) {
            tracing::debug!(error = %e, "reading the XDP hit counters failed");
        }
        let changed = match self.publish_entries(next) {
            Ok(n) => n,
            Err(e) => {
                self.slots.free.extend(fresh);
                return Err(e);
            }
        };
        self.unslotted = unslotted;
        // Entries gone from both maps: their last hits, then their slots are free.
        let gone: Vec<u16> = self
            .slots
            .by_key
            .iter()
            .filter(|(k, _)| !by_key.contains_key(*k))
            .map(|(_, s)| *s)
            .collect();
        if let Err(e) = self.drain_slots(gone.iter().copied()) {
            tracing::debug!(error = %e, "reading the XDP hit counters failed");
        }
        for s in gone {
            self.slots.owners[usize::from(s)] = None;
            self.slots.free.push(s);
        }
        for (s, o) in owners {
            self.slots.owners[usize::from(s)] = Some(o);
        }
        self.slots.by_key = by_key;
        Ok(changed)
    }

    /// Adds the answers the program sent since the last read to the tallies of the
    /// servers in them (the DNS records); returns how many. One map read per slot in use.
    pub fn drain_hits(&mut self) -> Result<u64, XdpError> {
        let n = self.slots.owners.len() as u16;
        self.drain_slots(0..n)
    }

    /// [`FastPath::drain_hits`] for some slots.
    fn drain_slots(&mut self, slots: impl Iterator<Item = u16>) -> Result<u64, XdpError> {
        let arr: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("HITS").ok_or(missing("HITS"))?)
                .map_err(map_err("HITS"))?;
        let mut total = 0;
        for slot in slots.map(usize::from) {
            let Some(Some(owner)) = self.slots.owners.get(slot) else {
                continue;
            };
            let sum: u64 = arr
                .get(&(slot as u32), 0)
                .map_err(map_err("HITS"))?
                .iter()
                .sum();
            let sent = sum.wrapping_sub(self.slots.seen[slot]);
            self.slots.seen[slot] = sum;
            if sent > 0 {
                for &c in owner.counters.iter() {
                    owner.tally.add_n(c, sent);
                }
                total += sent;
            }
        }
        Ok(total)
    }

    fn publish_entries(
        &mut self,
        next: StdHashMap<AnswerKey, AnswerValue>,
    ) -> Result<usize, XdpError> {
        let diff = Diff::between(&self.shadow, &next);
        if diff.is_empty() {
            return Ok(0);
        }
        let idle = 1 - self.active;
        let changed = diff.upserts.len() + diff.removals.len();
        Self::apply(&mut self.maps[idle], &diff)?;
        self.point_at(idle)?;
        // The map that was active is now read by nobody.
        let old = 1 - self.active;
        Self::apply(&mut self.maps[old], &diff)?;
        self.shadow = next;
        Ok(changed)
    }

    /// Makes the view tries hold an exact entry for every resolver placed by latency
    /// (flagged `RESOLVER_ENTRY`), and no other. An LPM trie update replaces one node
    /// under RCU, so a program run sees the old or the new entry. Returns how many changed.
    pub fn publish_resolver_views(
        &mut self,
        views: &StdHashMap<IpAddr, ViewId>,
    ) -> Result<usize, XdpError> {
        let gone: Vec<IpAddr> = self
            .resolvers
            .keys()
            .filter(|a| !views.contains_key(*a))
            .copied()
            .collect();
        let set: Vec<(IpAddr, ViewId)> = views
            .iter()
            .filter(|(a, v)| self.resolvers.get(*a) != Some(*v))
            .map(|(a, v)| (*a, *v))
            .collect();
        let changed = gone.len() + set.len();
        {
            let mut v4: LpmTrie<_, [u8; 4], u16> =
                LpmTrie::try_from(self.ebpf.map_mut("VIEWS4").ok_or(missing("VIEWS4"))?)
                    .map_err(map_err("VIEWS4"))?;
            for a in &gone {
                if let IpAddr::V4(a) = a {
                    let _ = v4.remove(&Key::new(32, a.octets()));
                }
            }
            for (a, view) in &set {
                if let IpAddr::V4(a) = a {
                    v4.insert(&Key::new(32, a.octets()), *view | RESOLVER_ENTRY, 0)
                        .map_err(map_err("VIEWS4"))?;
                }
            }
        }
        {
            let mut v6: LpmTrie<_, [u8; 16], u16> =
                LpmTrie::try_from(self.ebpf.map_mut("VIEWS6").ok_or(missing("VIEWS6"))?)
                    .map_err(map_err("VIEWS6"))?;
            for a in &gone {
                if let IpAddr::V6(a) = a {
                    let _ = v6.remove(&Key::new(128, a.octets()));
                }
            }
            for (a, view) in &set {
                if let IpAddr::V6(a) = a {
                    v6.insert(&Key::new(128, a.octets()), *view | RESOLVER_ENTRY, 0)
                        .map_err(map_err("VIEWS6"))?;
                }
            }
        }
        for a in gone {
            self.resolvers.remove(&a);
        }
        self.resolvers.extend(set);
        Ok(changed)
    }

    /// Takes the resolvers the program noted (see `TRACK_RESOLVERS`) out of its maps.
    pub fn drain_seen(&mut self) -> Result<Vec<IpAddr>, XdpError> {
        let mut out = Vec::new();
        {
            let mut m: HashMap<_, [u8; 4], u8> =
                HashMap::try_from(self.ebpf.map_mut("SEEN4").ok_or(missing("SEEN4"))?)
                    .map_err(map_err("SEEN4"))?;
            let keys: Vec<[u8; 4]> = m.keys().filter_map(Result::ok).collect();
            for k in keys {
                let _ = m.remove(&k);
                out.push(IpAddr::from(k));
            }
        }
        {
            let mut m: HashMap<_, [u8; 16], u8> =
                HashMap::try_from(self.ebpf.map_mut("SEEN6").ok_or(missing("SEEN6"))?)
                    .map_err(map_err("SEEN6"))?;
            let keys: Vec<[u8; 16]> = m.keys().filter_map(Result::ok).collect();
            for k in keys {
                let _ = m.remove(&k);
                out.push(IpAddr::from(k));
            }
        }
        Ok(out)
    }

    /// Attaches to `iface`.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<(), XdpError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| XdpError::Unsupported(format!("no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::Unsupported(e.to_string()))?;
        let id = prog
            .attach(iface, aya_mode(mode))
            .map_err(|e| attach_err(iface, mode, e))?;
        self.attached.push((iface.to_string(), mode, id));
        Ok(())
    }

    /// The interfaces the program is attached to.
    pub fn attached(&self) -> Vec<(String, XdpMode)> {
        self.attached
            .iter()
            .map(|(i, m, _)| (i.clone(), *m))
            .collect()
    }

    /// The per-CPU counters.
    pub fn counters(&self) -> Result<XdpCounters, XdpError> {
        let arr: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("COUNTS").ok_or(missing("COUNTS"))?)
                .map_err(map_err("COUNTS"))?;
        let mut per_cpu: Vec<[u64; COUNTERS]> = Vec::new();
        for i in 0..COUNTERS as u32 {
            let values = arr.get(&i, 0).map_err(map_err("COUNTS"))?;
            for (cpu, v) in values.iter().enumerate() {
                if per_cpu.len() <= cpu {
                    per_cpu.push([0; COUNTERS]);
                }
                per_cpu[cpu][i as usize] = *v;
            }
        }
        Ok(XdpCounters::from_per_cpu(per_cpu))
    }

    /// Every entry of the active answer map, read back from the kernel.
    pub fn entries(&self) -> Result<Vec<(AnswerKey, AnswerValue)>, XdpError> {
        self.maps[self.active]
            .iter()
            .map(|r| r.map_err(map_err("ANSWERS inner")))
            .collect()
    }

    /// Runs the program `repeat` times, each on a fresh copy of `frame` (BPF_PROG_TEST_RUN
    /// in live-frames mode: an XDP_TX frame really goes out, of loopback, where it is
    /// dropped), and reads the program's own run time from the kernel's BPF statistics.
    pub fn cost(&self, frame: &[u8], repeat: u32) -> Result<super::Cost, XdpError> {
        let prog: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or_else(|| XdpError::Unsupported(format!("no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::Unsupported(e.to_string()))?;
        let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map_err(|e| XdpError::Unsupported(format!("BPF statistics: {e}")))?;
        let info = |p: &Xdp| p.info().map_err(|e| XdpError::Unsupported(e.to_string()));
        let before = info(prog)?;
        let run = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: repeat.max(1),
                attrs: aya::programs::TestRunAttrs::new().xdp_live_frames(64),
                ..TestRunOptions::default()
            })
            .map_err(|e| {
                XdpError::Unsupported(format!("BPF_PROG_TEST_RUN (live frames): {e:#}"))
            })?;
        let after = info(prog)?;
        drop(stats);
        let runs = after.run_count().saturating_sub(before.run_count()).max(1);
        Ok(super::Cost {
            program_ns: (after.run_time() - before.run_time()).as_nanos() as f64 / runs as f64,
            total_ns: run.duration.as_nanos() as f64,
            runs,
            verified_insns: after.verified_instruction_count(),
        })
    }

    /// Runs the program once (or `repeat` times) on `frame` with BPF_PROG_TEST_RUN.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestRun, XdpError> {
        let prog: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or_else(|| XdpError::Unsupported(format!("no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::Unsupported(e.to_string()))?;
        // Room for the reply: the program may grow the frame up to the page.
        let mut out = vec![0u8; 4096];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .map_err(|e| XdpError::Unsupported(format!("BPF_PROG_TEST_RUN: {e:#}")))?;
        out.truncate(r.data_size_out as usize);
        Ok(TestRun {
            action: r.return_value,
            frame: out,
            duration: r.duration,
        })
    }
}

impl Drop for FastPath {
    fn drop(&mut self) {
        let Some(prog) = self.ebpf.program_mut(PROGRAM) else {
            return;
        };
        let Ok(prog): Result<&mut Xdp, _> = prog.try_into() else {
            return;
        };
        for (iface, _, id) in self.attached.drain(..) {
            if let Err(e) = prog.detach(id) {
                tracing::warn!(%iface, error = %e, "detaching the XDP program failed");
            }
        }
    }
}

fn missing(map: &'static str) -> XdpError {
    XdpError::Map {
        map,
        reason: "not in the program object".into(),
    }
}

/// The pass-everything program attached to one interface, detached on drop.
pub struct PassProgram {
    ebpf: Ebpf,
    link: Option<aya::programs::xdp::XdpLinkId>,
}

impl PassProgram {
    pub fn attach(iface: &str, mode: XdpMode) -> Result<PassProgram, XdpError> {
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(load_err)?;
        let prog: &mut Xdp = ebpf
            .program_mut("popnet_pass")
            .ok_or_else(|| XdpError::Unsupported("no program popnet_pass in the object".into()))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::Unsupported(e.to_string()))?;
        prog.load()
            .map_err(|e| XdpError::Unsupported(format!("{e:#}")))?;
        let id = prog
            .attach(iface, aya_mode(mode))
            .map_err(|e| attach_err(iface, mode, e))?;
        Ok(PassProgram {
            ebpf,
            link: Some(id),
        })
    }
}

impl Drop for PassProgram {
    fn drop(&mut self) {
        if let (Some(id), Some(p)) = (self.link.take(), self.ebpf.program_mut("popnet_pass"))
            && let Ok(p) = <&mut Xdp>::try_from(p)
        {
            let _ = p.detach(id);
        }
    }
}

fn aya_mode(mode: XdpMode) -> aya::programs::XdpMode {
    match mode {
        XdpMode::Native => aya::programs::XdpMode::Driver,
        XdpMode::Skb => aya::programs::XdpMode::Skb,
    }
}

fn attach_err(iface: &str, mode: XdpMode, e: ProgramError) -> XdpError {
    let errno = match &e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    };
    match (&e, errno) {
        (ProgramError::UnknownInterface { .. }, _) => XdpError::NoInterface {
            iface: iface.to_string(),
        },
        (_, Some(libc::EBUSY | libc::EEXIST)) => XdpError::Busy {
            iface: iface.to_string(),
        },
        (_, Some(libc::EPERM | libc::EACCES)) => XdpError::Permission(format!("{e:#}")),
        _ => XdpError::Attach {
            iface: iface.to_string(),
            mode,
            reason: match &e {
                ProgramError::SyscallError(s) => format!("{}: {}", s.call, s.io_error),
                other => format!("{other:#}"),
            },
        },
    }
}
