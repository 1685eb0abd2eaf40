//! The disk tier's writer thread: batches records into large O_DIRECT writes, publishes them once written, seals, evicts and persists purges.
//!
//! Records are copied into the ring's registered buffers (1 MiB each) at consecutive
//! positions of the open segment; a full buffer is written at once, a partial one
//! when the queue runs dry, so a burst of inserts becomes a few large sequential
//! writes. Every write gets an increasing id; a record is published in the index when
//! every write up to its last one has completed, in append order, and dropped if one
//! of its writes failed.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use xxhash_rust::xxh3::xxh3_64;

use super::format::{self, BLOCK, Header, ObjectHeader, PurgeRecord, Seal, SegmentHeader};
use super::index::Entry;
use super::scan::Recovered;
use super::{DiskShared, VaryNames, bump};
use crate::key::CacheKey;
use crate::object::StoredObject;
use crate::purge::Matcher;
use crate::uring::{AlignedBuf, BufId, Completion, Event, Op, Ring};

/// Registered write buffers, and their size.
const WRITE_BUFS: usize = 8;
const WRITE_BUF: usize = 1 << 20;
/// Bytes of records handled before the partial buffer is written out.
const BATCH_BYTES: u64 = 8 << 20;
const TAG_WAKE: u64 = 1 << 63;
const TAG_SYNC: u64 = 1 << 62;
const ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];

/// Work for the writer.
pub(crate) enum Job {
    Insert {
        obj: Arc<StoredObject>,
        vary: Option<VaryNames>,
        charge: u64,
    },
    /// Removes what `m` matches, durably; answers how many objects went.
    Purge { m: Matcher, done: Sender<usize> },
    /// Answers once everything queued before it is written and published.
    Flush { done: Sender<()> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum State {
    #[default]
    Free,
    Open,
    Sealed,
}

/// A segment as the writer knows it.
#[derive(Default)]
pub(crate) struct Seg {
    pub state: State,
    pub seq: u64,
    /// Every object record written to it (live or not).
    pub entries: Vec<Arc<Entry>>,
    pub purges: Vec<PurgeRecord>,
}

struct Open {
    seg: u32,
    seq: u64,
    /// Where the next record goes, from the segment start.
    pos: u64,
    summary: Vec<u8>,
    records: u32,
}

/// The registered buffer being filled, and the file offset of its first byte.
struct Stage {
    buf: BufId,
    start: u64,
    fill: usize,
}

struct Pending {
    e: Arc<Entry>,
    first: u64,
    last: u64,
    /// A second-chance copy: published only if this is still the object.
    replaces: Option<Arc<Entry>>,
}

/// Why a record was not written.
#[derive(Debug)]
enum AppendError {
    TooLarge,
    Io(io::Error),
}

impl From<io::Error> for AppendError {
    fn from(e: io::Error) -> Self {
        AppendError::Io(e)
    }
}

pub(crate) struct Writer {
    sh: Arc<DiskShared>,
    ring: Ring,
    rx: Receiver<Job>,
    segs: Vec<Seg>,
    free: VecDeque<u32>,
    open: Option<Open>,
    next_seq: u64,
    /// File offset of the next byte appended.
    cursor: u64,
    stage: Option<Stage>,
    next_write: u64,
    /// Every write with a smaller id has completed.
    done_upto: u64,
    completed: BTreeSet<u64>,
    failed: BTreeSet<u64>,
    in_flight: HashMap<u64, usize>,
    pending: VecDeque<Pending>,
    /// Purges of evicted segments still needed by older ones, to log again.
    carry: Vec<PurgeRecord>,
    waiters: Vec<Sender<()>>,
    sync_seq: u64,
    sync_done: Option<(u64, Event)>,
    /// Writing failed: nothing is written until then (reads go on).
    broken_until: Option<Instant>,
}

impl Writer {
    /// The writer, with what start-up recovered. Call on the thread that runs it.
    pub(crate) fn new(
        sh: Arc<DiskShared>,
        rx: Receiver<Job>,
        rec: Recovered,
    ) -> io::Result<Writer> {
        let mut ring = Ring::new(64)?;
        if !ring.add_fixed_buffers(WRITE_BUFS, WRITE_BUF) {
            tracing::info!(
                "disk tier: write buffers not registered (locked-memory limit); using plain writes"
            );
        }
        let mut w = Writer {
            sh,
            ring,
            rx,
            segs: rec.segs,
            free: rec.free,
            open: None,
            next_seq: rec.next_seq,
            cursor: 0,
            stage: None,
            next_write: 0,
            done_upto: 0,
            completed: BTreeSet::new(),
            failed: BTreeSet::new(),
            in_flight: HashMap::new(),
            pending: VecDeque::new(),
            carry: Vec::new(),
            waiters: Vec::new(),
            sync_seq: 0,
            sync_done: None,
            broken_until: None,
        };
        w.count_used();
        w.ring.submit(
            TAG_WAKE,
            Op::Wake {
                fd: std::os::fd::AsRawFd::as_raw_fd(&w.sh.wake),
            },
        )?;
        Ok(w)
    }

    pub(crate) fn run(mut self) {
        loop {
            let mut batch = 0;
            while batch < BATCH_BYTES {
                match self.rx.try_recv() {
                    Ok(job) => batch += self.handle(job),
                    Err(_) => break,
                }
            }
            self.flush_stage();
            self.reap();
            if self.sh.stopped.load(Ordering::Acquire) && self.rx.is_empty() {
                self.finish();
                return;
            }
            if !self.rx.is_empty() {
                continue;
            }
            if let Err(e) = self.ring.wait(Duration::from_millis(500)) {
                tracing::error!(error = %e, "disk writer: waiting on its ring failed");
                std::thread::sleep(Duration::from_millis(50));
            }
            self.reap();
        }
    }

    /// Writes what is left, seals the open segment, answers every waiter.
    fn finish(&mut self) {
        if let Err(e) = self.seal() {
            tracing::warn!(error = %e, "disk writer: sealing at shutdown failed");
        }
        self.publish_ready();
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
        tracing::debug!("disk writer stopped");
    }

    fn handle(&mut self, job: Job) -> u64 {
        match job {
            Job::Insert { obj, vary, charge } => {
                self.sh.queued.fetch_sub(charge, Ordering::AcqRel);
                if self.broken() {
                    bump(&self.sh.c.dropped_writes);
                    return 0;
                }
                let h = ObjectHeader::of(&obj, vary.as_ref(), format::chunk_sums(&obj.body));
                match self.append_object(
                    &h,
                    &obj.body,
                    obj.key.clone(),
                    obj.customer.clone(),
                    vary,
                    None,
                    true,
                ) {
                    Ok(()) => obj.body.len() as u64,
                    Err(e) => {
                        self.append_failed(e);
                        0
                    }
                }
            }
            Job::Purge { m, done } => {
                let n = self.purge(&m);
                let _ = done.send(n);
                0
            }
            Job::Flush { done } => {
                self.flush_stage();
                self.reap();
                if self.pending.is_empty() {
                    let _ = done.send(());
                } else {
                    self.waiters.push(done);
                }
                0
            }
        }
    }

    /// Whether writing is paused after an error.
    fn broken(&mut self) -> bool {
        match self.broken_until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                self.broken_until = None;
                tracing::info!(path = %self.sh.path.display(), "disk writer: trying to write again");
                false
            }
            None => false,
        }
    }

    fn append_failed(&mut self, e: AppendError) {
        bump(&self.sh.c.dropped_writes);
        if let AppendError::Io(e) = e {
            bump(&self.sh.c.io_errors);
            tracing::error!(path = %self.sh.path.display(), error = %e, "disk writer: cannot write; the disk tier stores no new objects for 10 s and keeps serving what it has");
            self.broken_until = Some(Instant::now() + Duration::from_secs(10));
            // Start over in a fresh segment: the open one's state is unknown (it is left
            // unsealed, so a restart verifies it record by record).
            if let Some(st) = self.stage.take() {
                // The records in it were never written: give its write id up as failed.
                self.ring.put_buf(st.buf);
                self.failed.insert(self.next_write);
                self.next_write += 1;
            }
            if let Some(o) = self.open.take() {
                self.segs[o.seg as usize].state = State::Sealed;
            }
        }
    }

    fn purge(&mut self, m: &Matcher) -> usize {
        let gone = self.sh.index.remove_matching(m, None);
        let n = gone.iter().filter(|e| self.sh.forget(e)).count();
        for p in &self.pending {
            if m.matches(&p.e.key, &p.e.customer) {
                p.e.set_gone();
            }
        }
        self.sh.c.purged.fetch_add(n as u64, Ordering::Relaxed);
        let stored = self.open.is_some() || self.segs.iter().any(|s| s.state != State::Free);
        if stored && !self.broken() {
            let rec = PurgeRecord {
                matcher: m.clone(),
                before: (0, 0),
            };
            if let Err(e) = self.append_purge(rec, true) {
                self.append_failed(e);
            }
        }
        n
    }

    fn count_used(&self) {
        let used = self.segs.iter().filter(|s| s.state != State::Free).count();
        self.sh
            .c
            .segments_used
            .store(used as u64, Ordering::Relaxed);
    }

    // --- appending ---------------------------------------------------------------

    /// The id the write holding the last appended byte has (or will have).
    fn last_write_id(&self) -> u64 {
        match &self.stage {
            Some(s) if s.fill > 0 => self.next_write,
            _ => self.next_write.saturating_sub(1),
        }
    }

    /// Whether a record of `len` bytes with a summary entry of `summary_add` bytes fits
    /// in the open segment.
    fn fits(&self, len: u64, summary_add: usize) -> bool {
        self.open.as_ref().is_some_and(|o| {
            o.pos + len + format::align_up((o.summary.len() + summary_add) as u64) + BLOCK
                <= self.sh.segment_bytes
        })
    }

    /// Makes room for a record in the open segment, sealing it and opening the next.
    fn ensure_room(&mut self, len: u64, summary_add: usize) -> Result<(), AppendError> {
        if len + format::align_up(summary_add as u64) + 2 * BLOCK > self.sh.segment_bytes
            || len > self.sh.max_record()
        {
            return Err(AppendError::TooLarge);
        }
        for _ in 0..2 {
            if self.fits(len, summary_add) {
                return Ok(());
            }
            if self.open.is_some() {
                self.seal()?;
            }
            self.open_segment()?;
        }
        if self.fits(len, summary_add) {
            Ok(())
        } else {
            Err(AppendError::TooLarge)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn append_object(
        &mut self,
        h: &ObjectHeader,
        body: &[u8],
        key: CacheKey,
        customer: Arc<str>,
        vary: Option<VaryNames>,
        replaces: Option<Arc<Entry>>,
        may_open: bool,
    ) -> Result<(), AppendError> {
        let (probe, len) = h.encode(0).ok_or(AppendError::TooLarge)?;
        if may_open {
            self.ensure_room(len, 8 + probe.len())?;
        } else if !self.fits(len, 8 + probe.len()) {
            return Err(AppendError::TooLarge);
        }
        let Some(o) = self.open.as_ref() else {
            return Err(AppendError::TooLarge);
        };
        let (seg, seq, offset) = (o.seg, o.seq, o.pos);
        let (hdr, len) = h.encode(seq).ok_or(AppendError::TooLarge)?;
        let first = self.next_write;
        self.append(&hdr)?;
        self.append(body)?;
        self.pad(len - hdr.len() as u64 - body.len() as u64)?;
        let last = self.last_write_id();
        let e = Arc::new(Entry::new(
            key,
            customer,
            vary,
            seg,
            seq,
            offset,
            len,
            hdr.len() as u32,
            body.len() as u64,
            h.stored_at,
        ));
        if let Some(o) = self.open.as_mut() {
            format::summary_entry(&mut o.summary, offset, &hdr);
            o.pos += len;
            o.records += 1;
        }
        self.segs[seg as usize].entries.push(e.clone());
        self.pending.push_back(Pending {
            e,
            first,
            last,
            replaces,
        });
        Ok(())
    }

    /// Appends a purge record; `fresh` ones apply to everything logged before them,
    /// carried-forward ones keep their original position.
    fn append_purge(&mut self, mut rec: PurgeRecord, fresh: bool) -> Result<(), AppendError> {
        let probe = format::encode_purge(0, &rec);
        let len = format::align_up(probe.len() as u64);
        self.ensure_room(len, 8 + probe.len())?;
        let Some(o) = self.open.as_ref() else {
            return Err(AppendError::TooLarge);
        };
        let (seg, seq, offset) = (o.seg, o.seq, o.pos);
        if fresh {
            rec.before = (seq, offset);
        }
        let hdr = format::encode_purge(seq, &rec);
        self.append(&hdr)?;
        self.pad(len - hdr.len() as u64)?;
        if let Some(o) = self.open.as_mut() {
            format::summary_entry(&mut o.summary, offset, &hdr);
            o.pos += len;
            o.records += 1;
        }
        self.segs[seg as usize].purges.push(rec);
        Ok(())
    }

    fn pad(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let k = n.min(BLOCK) as usize;
            self.append(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Copies bytes into the stage, writing out every buffer that fills up.
    fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.stage.is_none() {
                let buf = self.get_buf()?;
                self.stage = Some(Stage {
                    buf,
                    start: self.cursor,
                    fill: 0,
                });
            }
            let Some(st) = self.stage.as_mut() else {
                continue;
            };
            let size = self.ring.fixed_size();
            let n = (size - st.fill).min(data.len());
            let at = st.fill;
            st.fill += n;
            let full = st.fill == size;
            let buf = &st.buf;
            self.ring.buf_mut(buf)[at..at + n].copy_from_slice(&data[..n]);
            self.cursor += n as u64;
            data = &data[n..];
            if full {
                self.submit_stage()?;
            }
        }
        Ok(())
    }

    /// Writes out the stage (a whole number of blocks: records end on block boundaries).
    fn submit_stage(&mut self) -> io::Result<()> {
        let Some(st) = self.stage.take() else {
            return Ok(());
        };
        if st.fill == 0 {
            self.ring.put_buf(st.buf);
            return Ok(());
        }
        let id = self.next_write;
        self.next_write += 1;
        self.in_flight.insert(id, st.fill);
        let r = self.ring.submit(
            id,
            Op::WriteFixed {
                fd: self.sh.fd(),
                offset: st.start,
                buf: st.buf,
                len: st.fill,
            },
        );
        if let Err(e) = r {
            self.in_flight.remove(&id);
            self.failed.insert(id);
            return Err(e);
        }
        Ok(())
    }

    fn flush_stage(&mut self) {
        if let Err(e) = self.submit_stage() {
            self.append_failed(AppendError::Io(e));
        }
    }

    /// A free registered buffer, waiting for a write to complete if need be.
    fn get_buf(&mut self) -> io::Result<BufId> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(b) = self.ring.take_buf() {
                return Ok(b);
            }
            if self.in_flight.is_empty() || Instant::now() > deadline {
                return Err(io::Error::other("no write buffer comes free"));
            }
            self.ring.wait(Duration::from_millis(100))?;
            self.reap();
        }
    }

    // --- completions -------------------------------------------------------------

    fn reap(&mut self) {
        let mut done: Vec<Completion> = Vec::new();
        self.ring.drain(&mut done);
        for c in done {
            match (c.tag, c.event) {
                (TAG_WAKE, _) => {
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&self.sh.wake);
                    if let Err(e) = self.ring.submit(TAG_WAKE, Op::Wake { fd }) {
                        tracing::error!(error = %e, "disk writer: cannot re-arm its wake-up");
                    }
                }
                (id, Event::Fixed { buf, result }) if id < TAG_SYNC => {
                    self.ring.put_buf(buf);
                    let want = self.in_flight.remove(&id).unwrap_or(0);
                    match result {
                        Ok(n) if n == want => {
                            self.completed.insert(id);
                        }
                        other => {
                            let why = match other {
                                Ok(n) => format!("short write: {n} of {want} bytes"),
                                Err(e) => e.to_string(),
                            };
                            bump(&self.sh.c.io_errors);
                            tracing::warn!(path = %self.sh.path.display(), error = %why, "disk tier: write failed; the objects in it are not kept");
                            self.failed.insert(id);
                        }
                    }
                }
                (tag, ev) => self.sync_done = Some((tag, ev)),
            }
        }
        while self.completed.remove(&self.done_upto) || self.failed.contains(&self.done_upto) {
            self.done_upto += 1;
        }
        self.publish_ready();
    }

    fn publish_ready(&mut self) {
        while let Some(p) = self.pending.front() {
            if p.last >= self.done_upto {
                break;
            }
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            if p.e.is_gone() {
                continue;
            }
            if self.failed.range(p.first..=p.last).next().is_some() {
                p.e.set_gone();
                continue;
            }
            if let Some(old) = &p.replaces {
                if !self.sh.index.holds(old) {
                    p.e.set_gone();
                    continue;
                }
                bump(&self.sh.c.rewritten);
            }
            self.sh.publish(p.e);
        }
        let keep_from = self
            .pending
            .front()
            .map_or(self.done_upto, |p| p.first.min(self.done_upto));
        while self.failed.first().is_some_and(|&f| f < keep_from) {
            self.failed.pop_first();
        }
        if self.pending.is_empty() {
            for w in self.waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Runs one operation that owns its buffer and waits for it.
    fn sync_op(&mut self, op: Op) -> io::Result<Event> {
        self.sync_seq += 1;
        let tag = TAG_SYNC | self.sync_seq;
        self.ring.submit(tag, op)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((t, _)) = &self.sync_done
                && *t == tag
                && let Some((_, ev)) = self.sync_done.take()
            {
                return Ok(ev);
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the disk did not answer within 30 s",
                ));
            }
            self.ring.wait(Duration::from_millis(100))?;
            self.reap();
        }
    }

    fn write_owned(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut buf = AlignedBuf::new(data.len());
        buf.spare_mut()[..data.len()].copy_from_slice(data);
        let len = format::align_up(data.len() as u64) as usize;
        buf.set_len(len);
        match self.sync_op(Op::WriteAt {
            fd: self.sh.fd(),
            offset,
            buf,
        })? {
            Event::Written { result, .. } => match result? {
                n if n == len => Ok(()),
                n => Err(io::Error::other(format!("short write: {n} of {len} bytes"))),
            },
            _ => Err(io::Error::other("unexpected completion")),
        }
    }

    fn read_owned(&mut self, offset: u64, len: usize) -> io::Result<AlignedBuf> {
        match self.sync_op(Op::ReadAt {
            fd: self.sh.fd(),
            offset,
            buf: AlignedBuf::new(len),
        })? {
            Event::Read { mut buf, result } => {
                let n = result?;
                if n < len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("short read: {n} of {len} bytes"),
                    ));
                }
                buf.set_len(len);
                Ok(buf)
            }
            _ => Err(io::Error::other("unexpected completion")),
        }
    }

    /// Waits until every write submitted has completed.
    fn wait_writes(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.in_flight.is_empty() {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "writes did not complete within 30 s",
                ));
            }
            self.ring.wait(Duration::from_millis(100))?;
            self.reap();
        }
        Ok(())
    }

    // --- segments ----------------------------------------------------------------

    /// Finishes the open segment: its writes, a data sync, the summary and the seal.
    fn seal(&mut self) -> io::Result<()> {
        let Some(o) = self.open.take() else {
            return Ok(());
        };
        self.segs[o.seg as usize].state = State::Sealed;
        self.submit_stage()?;
        self.wait_writes()?;
        if let Event::Synced(Err(e)) = self.sync_op(Op::Datasync { fd: self.sh.fd() })? {
            return Err(e);
        }
        let base = self.sh.seg_base(o.seg);
        if !o.summary.is_empty() {
            self.write_owned(base + o.pos, &o.summary)?;
        }
        let seal = Seal {
            store_id: self.sh.store_id,
            seq: o.seq,
            summary_offset: o.pos,
            summary_len: o.summary.len() as u64,
            summary_sum: xxh3_64(&o.summary),
            records: o.records,
        };
        self.write_owned(base + self.sh.segment_bytes - BLOCK, &seal.encode())?;
        Ok(())
    }

    fn open_segment(&mut self) -> io::Result<()> {
        if self.free.is_empty() {
            self.evict(false);
        }
        let Some(s) = self.free.pop_front() else {
            return Err(io::Error::other("no segment can be freed"));
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        // Readers of what was in this segment see the change before any new byte lands.
        self.sh.seg_seq[s as usize].store(seq, Ordering::SeqCst);
        self.segs[s as usize] = Seg {
            state: State::Open,
            seq,
            entries: Vec::new(),
            purges: Vec::new(),
        };
        self.cursor = self.sh.seg_base(s);
        self.open = Some(Open {
            seg: s,
            seq,
            pos: BLOCK,
            summary: Vec::new(),
            records: 0,
        });
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = SegmentHeader {
            store_id: self.sh.store_id,
            seq,
            index: s,
            opened: now,
        };
        self.append(&header.encode())?;
        if self.free.is_empty() {
            // Keep one segment free, so the next one opens without waiting.
            self.evict(true);
        }
        for rec in std::mem::take(&mut self.carry) {
            if let Err(e) = self.append_purge(rec, false) {
                tracing::warn!(error = ?e, "disk tier: cannot carry a purge forward");
            }
        }
        self.count_used();
        Ok(())
    }

    /// Frees the oldest sealed segment (preferring one no stream reads). With
    /// `rewrite`, its objects that were hit since they were written are copied to the
    /// open segment first, up to a quarter of a segment.
    fn evict(&mut self, rewrite: bool) {
        let victim = self
            .segs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == State::Sealed)
            .min_by_key(|(i, s)| (self.sh.pins[*i].load(Ordering::SeqCst) > 0, s.seq))
            .map(|(i, _)| i);
        let Some(v) = victim else {
            return;
        };
        let seg = std::mem::take(&mut self.segs[v]);
        let older = self
            .segs
            .iter()
            .any(|s| s.state != State::Free && s.seq < seg.seq);
        let mut budget = if rewrite {
            self.sh.segment_bytes / 4
        } else {
            0
        };
        for e in &seg.entries {
            if !self.sh.index.holds(e) {
                continue;
            }
            if e.record_len <= budget
                && self.sh.used(e)
                && !self.pending.iter().any(|p| p.e.key.hash == e.key.hash)
            {
                match self.rewrite(e) {
                    Ok(true) => {
                        budget -= e.record_len;
                        continue;
                    }
                    Ok(false) => {}
                    Err(err) => {
                        bump(&self.sh.c.io_errors);
                        tracing::warn!(key = %e.key.text, error = %err, "disk tier: cannot copy an object out of the segment being evicted");
                    }
                }
            }
            if self.sh.index.remove_entry(e) {
                self.sh.forget(e);
                bump(&self.sh.c.evicted);
            }
        }
        if older {
            // Purges must outlive the older segments they apply to.
            self.carry.extend(seg.purges);
        }
        // Mark it free on disk too: if the process dies before the segment is written
        // again, its old records must not come back.
        let base = self.sh.seg_base(v as u32);
        if let Err(e) = self.write_owned(base, &ZEROS) {
            bump(&self.sh.c.io_errors);
            tracing::warn!(segment = v, error = %e, "disk tier: cannot mark an evicted segment free");
        }
        self.free.push_back(v as u32);
        self.count_used();
    }

    /// Copies a live object to the open segment; false when it does not fit or its
    /// record is bad (then it is dropped).
    fn rewrite(&mut self, e: &Arc<Entry>) -> io::Result<bool> {
        let off = self.sh.seg_base(e.segment) + e.offset;
        let buf = self.read_owned(off, e.record_len as usize)?;
        let data = buf.as_slice();
        let h = match format::decode_header(data) {
            Ok(Header::Object(h))
                if h.seq == e.seq && *h.key == *e.key.text && h.record_len == e.record_len =>
            {
                h
            }
            _ => {
                bump(&self.sh.c.checksum_failures);
                self.sh.drop_entry(e);
                return Ok(false);
            }
        };
        let hl = h.header_len as usize;
        let body = &data[hl..hl + h.body_len as usize];
        if !format::body_ok(&h.chunk_sums, body) {
            bump(&self.sh.c.checksum_failures);
            tracing::warn!(key = %e.key.text, "disk tier: bad record found while evicting; dropped");
            self.sh.drop_entry(e);
            return Ok(false);
        }
        match self.append_object(
            &h,
            body,
            e.key.clone(),
            e.customer.clone(),
            e.vary.clone(),
            Some(e.clone()),
            false,
        ) {
            Ok(()) => Ok(true),
            Err(AppendError::TooLarge) => Ok(false),
            Err(AppendError::Io(err)) => Err(err),
        }
    }
}
