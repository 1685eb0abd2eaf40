//! The disk tier: a log-structured object store in one preallocated file or block device, read with io_uring on the workers' rings and written by one writer thread.
//!
//! # Layout and life of a segment
//!
//! The store is cut into equal segments ([`format`] has the byte layout). One
//! segment at a time is *open*: the writer appends records to it (objects, and purges
//! that must survive a restart), each on a 4 KiB boundary, through the writer ring's
//! registered buffers with `O_DIRECT`. A full segment is *sealed*: its writes are
//! waited for, `fdatasync`ed, and a summary of its records plus a seal block are
//! written, so that start-up finds its records with three reads. When no segment is
//! free, the oldest sealed one is *evicted* whole (FIFO), with a second chance: its
//! objects that were used since they were written (read from disk, or hit in RAM,
//! where a hot object usually is) are copied to the open segment (up to a quarter of
//! a segment per eviction) and start over with no disk hits; the rest leave the
//! index. Evicting by whole segments keeps every disk write
//! sequential; the second chance turns FIFO into FIFO-reinsertion (CLOCK), which keeps
//! a hot set that RAM cannot hold without ever writing in place. One segment is always
//! kept free, so the copies have somewhere to go before their old segment is reused.
//!
//! # Reading
//!
//! The [`index`] lives in memory; [`DiskTier::lookup`](crate::store::Tier::lookup)
//! answers from it at once with a [`DiskRef`]. The worker that got it reads the record
//! on its own io_uring (`ReadFixed` into its registered buffers), so a disk hit never
//! blocks the event loop; [`read`] checks what comes back. Objects up to the promote
//! limit are read whole and verified (header and every body chunk) before the first
//! byte is sent, and may then be promoted into RAM; larger ones are streamed chunk by
//! chunk (1 MiB, each verified before any of it is sent, one read in flight per
//! connection, paused while the client's send queue is full), so memory per stream is
//! bounded. A record whose checksum fails, or whose read fails, is dropped from the
//! index and the request goes to the origin like any miss; the error is counted and
//! logged, and serving goes on.
//!
//! # Why a writer thread
//!
//! Inserts come from the fetcher threads, purges from the admin listener. Appending
//! to a log needs one owner of its head (the open segment, the write position, the
//! batch being filled, the choice of the next segment and what to evict), so one
//! thread with its own ring does all writing: inserts are queued to it (bounded; an
//! insert that does not fit is skipped, since the object is in RAM anyway), it packs
//! everything queued into large writes, and it publishes an object in the index only
//! once every write of its record has completed. Workers never wait for it.
//!
//! # Crash safety
//!
//! Every record carries its segment's sequence number and a checksum of its header
//! and of each 1 MiB of its body. A sealed segment was complete before its seal was
//! written, so start-up trusts its summary (each header checked again) and leaves the
//! bodies to the read-time checks. A segment that was open at a crash is walked record
//! by record and every record is read and verified whole; the walk stops at the first
//! header that is missing, torn or from an older use of the segment, and the segment
//! is then sealed. So after `kill -9` (or power loss) no torn or stale record enters
//! the index, and any later damage is caught when the object is read.
//!
//! # Memory
//!
//! The index keeps, per object, its key text, customer and place (about 150 bytes
//! plus the key): purges by prefix or customer and the full-key check need the text.
//! It is rebuilt at start-up from the summaries (no memory-mapped index file, which
//! would need crash consistency of its own that the summaries already give).

mod format;
mod index;
mod read;
mod scan;
mod writer;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{Found, StoredView, Tier, TierStats, VaryNames};
use crate::key::CacheKey;
use crate::object::{ResponseHead, StoredObject};
use crate::purge::Matcher;
use crate::uring::{AlignedBuf, Event, Op, Ring, WakeFd};

pub use format::{BLOCK, CHUNK, FormatError};
pub use index::Entry;
pub use read::{DiskLoad, DiskStream, LoadError, Loaded, ReadAsk, StreamHead};
pub use scan::ScanReport;

/// Size of the registered buffers of a ring that reads the disk tier: one body
/// chunk plus the blocks around it.
pub const IO_BUF: usize = (CHUNK + 2 * BLOCK) as usize;

/// What the disk tier is configured with.
#[derive(Debug, Clone)]
pub struct DiskSettings {
    /// A file (created and preallocated if missing) or a block device.
    pub path: PathBuf,
    /// Bytes of the store (superblock and segments).
    pub bytes: u64,
    pub segment_bytes: u64,
    /// Promote an object into RAM on this disk hit (0: never).
    pub promote_hits: u32,
    /// Objects with larger bodies are streamed from disk and never promoted.
    pub promote_max_bytes: u64,
    /// The largest object the cache stores (sizes the write queue).
    pub max_object_bytes: u64,
    /// Our `Via` entry, for heads read back.
    pub via: String,
}

/// Why the disk tier could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is {have} bytes but the disk tier needs {want}")]
    TooSmall { path: PathBuf, have: u64, want: u64 },
    #[error("cannot allocate {want} bytes for {path}: {source}")]
    Allocate {
        path: PathBuf,
        want: u64,
        #[source]
        source: io::Error,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Geometry(String),
    #[error("{path} is in use by another process (is another popnet cache running on it?)")]
    InUse { path: PathBuf },
    #[error("cannot set up io_uring for the disk tier: {0}")]
    Uring(#[source] io::Error),
    #[error("cannot start the disk writer thread: {0}")]
    Thread(#[source] io::Error),
}

/// The disk tier's counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    objects: AtomicU64,
    bytes: AtomicU64,
    inserted: AtomicU64,
    evicted: AtomicU64,
    purged: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    checksum_failures: AtomicU64,
    io_errors: AtomicU64,
    rewritten: AtomicU64,
    dropped_writes: AtomicU64,
    segments_used: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What readers, the writer and the tier share.
pub(crate) struct DiskShared {
    path: PathBuf,
    file: File,
    direct: bool,
    store_id: u64,
    segment_bytes: u64,
    segments: u32,
    /// The sequence number each segment has now (0: free). Readers compare it with
    /// their entry's after every read: a difference means the segment was reused.
    seg_seq: Box<[AtomicU64]>,
    /// Streams reading each segment (eviction prefers segments nobody streams).
    pins: Box<[AtomicU32]>,
    index: index::Index,
    c: Counters,
    promote_hits: u32,
    promote_max: u64,
    via: String,
    jobs: Sender<writer::Job>,
    wake: WakeFd,
    queued: AtomicU64,
    queue_max: u64,
    stopped: AtomicBool,
    /// The tier above (RAM): hits there count for the second chance.
    upper: std::sync::OnceLock<Arc<dyn Tier>>,
}

impl DiskShared {
    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// File offset of segment `s`.
    fn seg_base(&self, s: u32) -> u64 {
        BLOCK + u64::from(s) * self.segment_bytes
    }

    /// Largest record a segment takes (half a segment, so tails waste little).
    fn max_record(&self) -> u64 {
        self.segment_bytes / 2
    }

    /// Whether segment `s` still has sequence number `seq`.
    fn current(&self, s: u32, seq: u64) -> bool {
        self.seg_seq
            .get(s as usize)
            .is_some_and(|x| x.load(Ordering::SeqCst) == seq)
    }

    /// Makes a freshly written entry visible.
    fn publish(&self, e: Arc<Entry>) {
        self.c.objects.fetch_add(1, Ordering::Relaxed);
        self.c.bytes.fetch_add(e.record_len, Ordering::Relaxed);
        bump(&self.c.inserted);
        for old in self.index.insert(e) {
            self.forget(&old);
        }
    }

    /// Adds an entry found at start-up.
    fn restore(&self, e: Arc<Entry>) {
        self.c.objects.fetch_add(1, Ordering::Relaxed);
        self.c.bytes.fetch_add(e.record_len, Ordering::Relaxed);
        for old in self.index.insert(e) {
            self.forget(&old);
        }
    }

    /// Accounts for a published entry leaving the index (once).
    fn forget(&self, e: &Entry) -> bool {
        if e.set_gone() {
            self.c.objects.fetch_sub(1, Ordering::Relaxed);
            self.c.bytes.fetch_sub(e.record_len, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Whether an object was used since its record was written: read from disk, or
    /// hit in the tier above.
    fn used(&self, e: &Entry) -> bool {
        e.hits() > 0
            || self.upper.get().is_some_and(|up| {
                let primary = CacheKey::from_text(e.key.primary_text());
                up.objects_of(&primary)
                    .iter()
                    .any(|v| v.key.text == e.key.text && v.hits > 0)
            })
    }

    /// Drops an entry whose record turned out bad.
    fn drop_entry(&self, e: &Arc<Entry>) {
        if self.index.remove_entry(e) {
            self.forget(e);
        }
    }

    fn view(&self, e: &Entry, ring: &mut Ring) -> Option<StoredView> {
        let off = self.seg_base(e.segment) + e.offset;
        let len = format::align_up(u64::from(e.header_len)) as usize;
        let buf = read_sync(ring, self.fd(), off, len).ok()?;
        let format::Header::Object(h) = format::decode_header(buf.as_slice()).ok()? else {
            return None;
        };
        if h.seq != e.seq || *h.key != *e.key.text || !self.current(e.segment, e.seq) {
            return None;
        }
        let head = ResponseHead::restore(h.status, h.fields, h.content_length, h.timing, &self.via);
        Some(StoredView {
            key: e.key.clone(),
            customer: e.customer.clone(),
            head: Arc::new(head),
            body_len: e.body_len,
            charged: e.record_len,
            stored_at: e.stored_at,
            hits: u64::from(e.hits()),
            disk: Some((off, e.record_len)),
        })
    }
}

/// A disk-tier object found by a lookup: read it with [`DiskRef::load`].
#[derive(Clone)]
pub struct DiskRef {
    sh: Arc<DiskShared>,
    e: Arc<Entry>,
}

impl std::fmt::Debug for DiskRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DiskRef({} at segment {} + {})",
            self.e.key.text, self.e.segment, self.e.offset
        )
    }
}

impl DiskRef {
    pub fn key(&self) -> &CacheKey {
        &self.e.key
    }

    pub fn body_len(&self) -> u64 {
        self.e.body_len
    }

    /// The body is streamed in chunks rather than read whole.
    pub fn streams(&self) -> bool {
        self.e.body_len > self.sh.promote_max
    }

    /// Starts reading the record.
    pub fn load(self) -> DiskLoad {
        DiskLoad::new(self)
    }

    /// Counts a load that failed (the object is then a miss) and drops the entry when
    /// the record is bad.
    pub fn failed(&self, err: &LoadError) {
        bump(&self.sh.c.misses);
        match err {
            LoadError::Moved => {}
            LoadError::Corrupt(why) => {
                bump(&self.sh.c.checksum_failures);
                tracing::warn!(key = %self.e.key.text, segment = self.e.segment, offset = self.e.offset, %why, "disk tier: bad record dropped; fetching the object again");
                self.sh.drop_entry(&self.e);
            }
            LoadError::Io(e) => {
                bump(&self.sh.c.io_errors);
                tracing::warn!(key = %self.e.key.text, path = %self.sh.path.display(), error = %e, "disk tier: read failed; serving the object from the origin");
                self.sh.drop_entry(&self.e);
            }
        }
    }

    fn hit(&self) -> u32 {
        bump(&self.sh.c.hits);
        self.e.hit()
    }
}

/// The disk tier.
pub struct DiskTier {
    sh: Arc<DiskShared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// What start-up found.
    pub report: ScanReport,
}

/// Opens `path` for direct I/O (buffered if the filesystem refuses O_DIRECT).
fn open_file(path: &Path) -> Result<(File, bool), DiskError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| DiskError::Open {
            path: path.to_owned(),
            source,
        })?;
    }
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true).truncate(false);
        if direct {
            o.custom_flags(libc::O_DIRECT | libc::O_CLOEXEC);
        }
        o.open(path)
    };
    match open(true) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(path = %path.display(), "the filesystem does not support O_DIRECT; the disk tier reads through the page cache");
            open(false)
                .map(|f| (f, false))
                .map_err(|source| DiskError::Open {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(source) => Err(DiskError::Open {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Makes the file at least `want` bytes, allocated (a device must already be).
fn size_file(file: &File, path: &Path, want: u64) -> Result<(), DiskError> {
    let meta = file.metadata().map_err(|source| DiskError::Open {
        path: path.to_owned(),
        source,
    })?;
    if meta.file_type().is_block_device() {
        let have = {
            use std::io::{Seek, SeekFrom};
            let mut f = file;
            f.seek(SeekFrom::End(0)).map_err(|source| DiskError::Io {
                path: path.to_owned(),
                source,
            })?
        };
        if have < want {
            return Err(DiskError::TooSmall {
                path: path.to_owned(),
                have,
                want,
            });
        }
        return Ok(());
    }
    if meta.len() >= want {
        return Ok(());
    }
    match crate::uring::allocate(file, want) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            file.set_len(want).map_err(|source| DiskError::Allocate {
                path: path.to_owned(),
                want,
                source,
            })
        }
        Err(source) => Err(DiskError::Allocate {
            path: path.to_owned(),
            want,
            source,
        }),
    }
}

/// Reads `len` bytes (block multiples) at `offset`, waiting on `ring` (which has
/// nothing else in flight).
fn read_sync(ring: &mut Ring, fd: RawFd, offset: u64, len: usize) -> io::Result<AlignedBuf> {
    ring.submit(
        0,
        Op::ReadAt {
            fd,
            offset,
            buf: AlignedBuf::new(len),
        },
    )?;
    match wait_one(ring)? {
        Event::Read { mut buf, result } => {
            let n = result?;
            if n < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read {n} of {len} bytes at {offset}"),
                ));
            }
            buf.set_len(len);
            Ok(buf)
        }
        _ => Err(io::Error::other("unexpected completion")),
    }
}

/// Writes `data` (block multiples) at `offset`, waiting on `ring`.
fn write_sync(ring: &mut Ring, fd: RawFd, offset: u64, data: &[u8]) -> io::Result<()> {
    let mut buf = AlignedBuf::new(data.len());
    buf.spare_mut()[..data.len()].copy_from_slice(data);
    buf.set_len(format::align_up(data.len() as u64) as usize);
    let len = buf.len();
    ring.submit(0, Op::WriteAt { fd, offset, buf })?;
    match wait_one(ring)? {
        Event::Written { result, .. } => match result? {
            n if n == len => Ok(()),
            n => Err(io::Error::other(format!("wrote {n} of {len} bytes"))),
        },
        _ => Err(io::Error::other("unexpected completion")),
    }
}

/// The next completion of a ring used for one operation at a time.
fn wait_one(ring: &mut Ring) -> io::Result<Event> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        ring.wait(Duration::from_millis(100))?;
        ring.drain(&mut out);
        if let Some(c) = out.pop() {
            return Ok(c.event);
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the disk did not answer within 30 s",
            ));
        }
    }
}

/// How long `open` waits for the store's lock. A process killed with -9 lets go of its
/// flock only when the kernel has torn down its io_uring rings (which hold the file),
/// and that teardown runs asynchronously after the process has been reaped.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Takes the exclusive lock that makes one process the store's only writer: two
/// writers would overwrite each other's segments.
fn lock_store(file: &File, path: &Path) -> Result<(), DiskError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DiskError::InUse {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(DiskError::Open {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

impl DiskTier {
    /// Opens (or creates and formats) the store, rebuilds the index from it and
    /// starts the writer.
    pub fn open(s: &DiskSettings) -> Result<DiskTier, DiskError> {
        let started = Instant::now();
        if s.segment_bytes < 16 * BLOCK || !s.segment_bytes.is_multiple_of(BLOCK) {
            return Err(DiskError::Geometry(format!(
                "segment size {} must be a multiple of 4096 and at least 65536",
                s.segment_bytes
            )));
        }
        let segments = s.bytes.saturating_sub(BLOCK) / s.segment_bytes;
        if segments < 4 || segments > u64::from(u32::MAX) {
            return Err(DiskError::Geometry(format!(
                "{} bytes hold {segments} segments of {}; the disk tier needs at least 4",
                s.bytes, s.segment_bytes
            )));
        }
        let segments = segments as u32;
        let want = BLOCK + u64::from(segments) * s.segment_bytes;
        let (file, direct) = open_file(&s.path)?;
        lock_store(&file, &s.path)?;
        size_file(&file, &s.path, want)?;
        let io_err = |source| DiskError::Io {
            path: s.path.clone(),
            source,
        };
        let mut ring = Ring::new(128).map_err(DiskError::Uring)?;
        let sb = read_sync(&mut ring, file.as_raw_fd(), 0, BLOCK as usize).map_err(io_err)?;
        let fresh = match format::Superblock::decode(sb.as_slice()) {
            Ok(sb) if sb.segment_bytes == s.segment_bytes && sb.segments == segments => {
                Some(sb.store_id)
            }
            Ok(sb) => {
                tracing::warn!(path = %s.path.display(), old_segment_bytes = sb.segment_bytes, old_segments = sb.segments, "the disk tier's size changed: starting it empty");
                None
            }
            Err(_) => None,
        };
        let (store_id, formatted) = match fresh {
            Some(id) => (id, false),
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let id = xxhash_rust::xxh3::xxh3_64(
                    format!(
                        "{}:{}:{}",
                        now.as_nanos(),
                        std::process::id(),
                        s.path.display()
                    )
                    .as_bytes(),
                );
                let sb = format::Superblock {
                    store_id: id,
                    segment_bytes: s.segment_bytes,
                    segments,
                    created: now.as_secs(),
                };
                write_sync(&mut ring, file.as_raw_fd(), 0, &sb.encode()).map_err(io_err)?;
                (id, true)
            }
        };
        let (tx, rx): (Sender<writer::Job>, Receiver<writer::Job>) = crossbeam_channel::unbounded();
        let sh = Arc::new(DiskShared {
            path: s.path.clone(),
            file,
            direct,
            store_id,
            segment_bytes: s.segment_bytes,
            segments,
            seg_seq: (0..segments).map(|_| AtomicU64::new(0)).collect(),
            pins: (0..segments).map(|_| AtomicU32::new(0)).collect(),
            index: index::Index::new(),
            c: Counters::default(),
            promote_hits: s.promote_hits,
            promote_max: s.promote_max_bytes,
            via: s.via.clone(),
            jobs: tx,
            wake: WakeFd::new().map_err(DiskError::Uring)?,
            queued: AtomicU64::new(0),
            queue_max: (64 << 20).max(2 * s.max_object_bytes),
            stopped: AtomicBool::new(false),
            upper: std::sync::OnceLock::new(),
        });
        let rec = if formatted {
            scan::Recovered::empty(segments)
        } else {
            scan::scan(&sh, &mut ring).map_err(io_err)?
        };
        drop(ring);
        let mut report = rec.report.clone();
        report.formatted = formatted;
        report.elapsed = started.elapsed();
        // The writer's ring must be made on the thread that uses it.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let wsh = sh.clone();
        let handle = std::thread::Builder::new()
            .name("cache-disk".into())
            .spawn(move || match writer::Writer::new(wsh, rx, rec) {
                Ok(w) => {
                    let _ = ready_tx.send(Ok(()));
                    w.run();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(DiskError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(DiskError::Uring(e)),
            Err(_) => {
                return Err(DiskError::Uring(io::Error::other(
                    "the disk writer ended during start-up",
                )));
            }
        }
        tracing::info!(
            path = %s.path.display(),
            direct,
            segments,
            segment_bytes = s.segment_bytes,
            objects = sh.c.objects.load(Ordering::Relaxed),
            bytes = sh.c.bytes.load(Ordering::Relaxed),
            formatted,
            walked = report.walked,
            bad_records = report.bad_records,
            ms = report.elapsed.as_millis() as u64,
            "disk tier ready"
        );
        Ok(DiskTier {
            sh,
            writer: Mutex::new(Some(handle)),
            report,
        })
    }

    /// Lets hits in `upper` (the RAM tier) count when choosing what gets a second chance.
    pub fn watch_upper(&self, upper: Arc<dyn Tier>) {
        let _ = self.sh.upper.set(upper);
    }

    /// Whether the store is opened with O_DIRECT.
    pub fn direct(&self) -> bool {
        self.sh.direct
    }

    fn send(&self, job: writer::Job) -> bool {
        if self.sh.stopped.load(Ordering::Acquire) || self.sh.jobs.send(job).is_err() {
            return false;
        }
        self.sh.wake.wake();
        true
    }

    /// Waits until everything queued so far is written and visible (or `within` passed).
    pub fn flush(&self, within: Duration) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(writer::Job::Flush { done: tx }) && rx.recv_timeout(within).is_ok()
    }

    /// Writes what is queued, seals the open segment and stops the writer.
    pub fn shutdown(&self) {
        self.sh.stopped.store(true, Ordering::Release);
        self.sh.wake.wake();
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
            // Nothing writes any more: another tier (a restarted server) may take it.
            let _ = self.sh.file.unlock();
        }
    }
}

impl Drop for DiskTier {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Tier for DiskTier {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn lookup(&self, primary: &CacheKey) -> Found {
        match self.sh.index.lookup(primary) {
            index::Look::Object(e) => Found::OnDisk(DiskRef {
                sh: self.sh.clone(),
                e,
            }),
            index::Look::Vary(names) => Found::Vary(names),
            index::Look::Miss => {
                bump(&self.sh.c.misses);
                Found::Miss
            }
        }
    }

    fn lookup_variant(&self, primary: u128, variant: &CacheKey) -> Found {
        match self.sh.index.lookup_variant(primary, variant) {
            Some(e) => Found::OnDisk(DiskRef {
                sh: self.sh.clone(),
                e,
            }),
            None => {
                bump(&self.sh.c.misses);
                Found::Miss
            }
        }
    }

    fn insert(&self, obj: Arc<StoredObject>, vary: Option<VaryNames>) -> bool {
        let estimate = obj.body.len() as u64
            + obj.key.text.len() as u64
            + obj.head.block.len() as u64
            + 8 * (obj.body.len() as u64).div_ceil(CHUNK)
            + 4 * BLOCK;
        if estimate > self.sh.max_record() {
            return false;
        }
        let charge = obj.body.len() as u64;
        if self.sh.queued.fetch_add(charge, Ordering::AcqRel) + charge > self.sh.queue_max {
            self.sh.queued.fetch_sub(charge, Ordering::AcqRel);
            bump(&self.sh.c.dropped_writes);
            return false;
        }
        if self.send(writer::Job::Insert { obj, vary, charge }) {
            true
        } else {
            self.sh.queued.fetch_sub(charge, Ordering::AcqRel);
            false
        }
    }

    fn remove_url(&self, primary: &CacheKey) -> usize {
        self.purge(&Matcher::Url(primary.clone()))
    }

    fn purge(&self, m: &Matcher) -> usize {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.send(writer::Job::Purge {
            m: m.clone(),
            done: tx,
        }) && let Ok(n) = rx.recv_timeout(Duration::from_secs(10))
        {
            return n;
        }
        // The writer is stopped or stuck: purge the index at least.
        let gone = self.sh.index.remove_matching(m, None);
        let n = gone.iter().filter(|e| self.sh.forget(e)).count();
        self.sh.c.purged.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    fn objects_of(&self, primary: &CacheKey) -> Vec<StoredView> {
        let entries = self.sh.index.objects_of(primary);
        if entries.is_empty() {
            return Vec::new();
        }
        let Ok(mut ring) = Ring::new(4) else {
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|e| self.sh.view(e, &mut ring))
            .collect()
    }

    fn stats(&self) -> TierStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.sh.c;
        TierStats {
            tier: "disk".into(),
            eviction: "fifo-segments+second-chance".into(),
            objects: g(&c.objects),
            bytes: g(&c.bytes),
            capacity: u64::from(self.sh.segments) * self.sh.segment_bytes,
            inserted: g(&c.inserted),
            evicted: g(&c.evicted),
            purged: g(&c.purged),
            hits: g(&c.hits),
            misses: g(&c.misses),
            checksum_failures: g(&c.checksum_failures),
            io_errors: g(&c.io_errors),
            rewritten: g(&c.rewritten),
            dropped_writes: g(&c.dropped_writes),
            segments: u64::from(self.sh.segments),
            segments_used: g(&c.segments_used),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ResponseHead;
    use bytes::Bytes;
    use std::os::unix::fs::FileExt;

    fn obj(key: &str, n: usize) -> Arc<StoredObject> {
        let k = CacheKey::from_text(key);
        let head = ResponseHead::from_origin(
            200,
            [("Cache-Control", b"max-age=600".as_slice())].into_iter(),
            1,
            1,
            "1.1 t (popnet)",
        );
        let body: Vec<u8> = (0..n).map(|i| (i * 7 + key.len()) as u8).collect();
        let h = k.hash;
        Arc::new(StoredObject::new(
            k,
            h,
            "c".into(),
            Arc::new(head),
            Bytes::from(body),
            5,
        ))
    }

    fn settings(path: &Path) -> DiskSettings {
        DiskSettings {
            path: path.to_owned(),
            bytes: 8 * (1 << 20) + BLOCK,
            segment_bytes: 1 << 20,
            promote_hits: 2,
            promote_max_bytes: 1 << 20,
            max_object_bytes: 256 << 10,
            via: "1.1 t (popnet)".into(),
        }
    }

    /// Reads an object the way a worker does, on a ring of our own.
    fn load(t: &DiskTier, key: &str) -> Option<Result<Arc<StoredObject>, String>> {
        let Found::OnDisk(r) = t.lookup(&CacheKey::from_text(key)) else {
            return None;
        };
        let mut ring = Ring::new(8).unwrap();
        ring.add_fixed_buffers(1, IO_BUF);
        let mut l = r.load();
        loop {
            let ask = l.next_read(IO_BUF);
            let buf = ring.take_buf().unwrap();
            ring.submit(
                1,
                Op::ReadFixed {
                    fd: ask.fd,
                    offset: ask.offset,
                    buf,
                    len: ask.len,
                },
            )
            .unwrap();
            let Event::Fixed { buf, result } = wait_one(&mut ring).unwrap() else {
                panic!("not a fixed read")
            };
            let n = result.unwrap();
            let step = l.on_read(ring.lend(buf, n));
            match step {
                Ok(None) => continue,
                Ok(Some(Loaded::Whole { obj, .. })) => return Some(Ok(obj)),
                Ok(Some(Loaded::Stream(_))) => panic!("small objects load whole"),
                Err(e) => {
                    l.disk_ref().failed(&e);
                    return Some(Err(e.to_string()));
                }
            }
        }
    }

    #[test]
    fn a_crash_image_is_walked_and_only_sound_records_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let t = DiskTier::open(&settings(&path)).unwrap();
        assert!(t.report.formatted);
        let keys: Vec<String> = (0..6).map(|i| format!("h/{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            assert!(t.insert(obj(k, 40_000 + i * 1000), None));
        }
        assert!(t.flush(Duration::from_secs(10)));
        let places: Vec<(u64, u64)> = keys
            .iter()
            .map(|k| t.objects_of(&CacheKey::from_text(k))[0].disk.unwrap())
            .collect();
        // The writer is idle with its segment open: the file is what a kill -9 leaves.
        let image = dir.path().join("image");
        std::fs::copy(&path, &image).unwrap();
        drop(t);

        let case = |name: &str, damage: &dyn Fn(&File)| -> DiskTier {
            let p = dir.path().join(name);
            std::fs::copy(&image, &p).unwrap();
            damage(&OpenOptions::new().write(true).open(&p).unwrap());
            DiskTier::open(&settings(&p)).unwrap()
        };
        // Intact: the open segment is walked, every record verified and kept.
        let t = case("intact", &|_| {});
        assert_eq!(
            (t.report.walked, t.report.objects),
            (1, 6),
            "{:?}",
            t.report
        );
        for (i, k) in keys.iter().enumerate() {
            let o = load(&t, k).unwrap().unwrap();
            assert_eq!(o.body, obj(k, 40_000 + i * 1000).body);
            assert_eq!(o.head.lifetime, 600);
        }
        drop(t);
        // A torn body (its header made it to disk): that record alone is left out.
        let (off, len) = places[3];
        let t = case("torn-body", &|f| {
            f.write_all_at(&[0u8; 4096], off + len - 8192).unwrap()
        });
        assert_eq!(t.report.bad_records, 1, "{:?}", t.report);
        assert_eq!(t.report.objects, 5);
        assert!(load(&t, "h/3").is_none());
        assert!(load(&t, "h/4").unwrap().is_ok());
        drop(t);
        // A header never written: the walk stops there; nothing after it is trusted.
        let (off, _) = places[2];
        let t = case("torn-header", &|f| {
            f.write_all_at(&[0u8; 4096], off).unwrap()
        });
        assert_eq!(t.report.objects, 2, "{:?}", t.report);
        assert!(load(&t, "h/1").unwrap().is_ok());
        assert!(load(&t, "h/2").is_none() && load(&t, "h/5").is_none());
        drop(t);
        // The recovered segment was sealed: the next start reads its summary.
        let t = DiskTier::open(&settings(&dir.path().join("torn-body"))).unwrap();
        assert_eq!(
            (t.report.walked, t.report.sealed, t.report.objects),
            (0, 1, 5)
        );
        // Damage found only when reading: a miss, the entry dropped, counted.
        let (off, len) = places[4];
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join("torn-body"))
            .unwrap();
        f.write_all_at(b"X", off + len / 2).unwrap();
        assert!(load(&t, "h/4").unwrap().is_err());
        assert!(load(&t, "h/4").is_none(), "dropped from the index");
        let s = t.stats();
        assert_eq!((s.checksum_failures, s.objects, s.hits), (1, 4, 0), "{s:?}");
    }

    #[test]
    fn a_changed_geometry_starts_empty_and_purges_are_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let t = DiskTier::open(&settings(&path)).unwrap();
        for k in ["a/1", "a/2", "b/1"] {
            t.insert(obj(k, 5000), None);
        }
        assert!(t.flush(Duration::from_secs(10)));
        assert_eq!(t.purge(&Matcher::Prefix("a/".into())), 2);
        t.insert(obj("a/2", 6000), None);
        assert!(t.flush(Duration::from_secs(10)));
        drop(t);
        let t = DiskTier::open(&settings(&path)).unwrap();
        assert_eq!(t.report.objects, 2, "{:?}", t.report);
        assert!(load(&t, "a/1").is_none(), "purged before the restart");
        assert_eq!(load(&t, "a/2").unwrap().unwrap().body.len(), 6000);
        assert!(load(&t, "b/1").unwrap().is_ok());
        drop(t);
        let held = DiskTier::open(&settings(&path)).unwrap();
        assert!(matches!(
            DiskTier::open(&settings(&path)),
            Err(DiskError::InUse { .. })
        ));
        drop(held);
        let mut s = settings(&path);
        s.segment_bytes = 2 << 20;
        let t = DiskTier::open(&s).unwrap();
        assert!(t.report.formatted);
        assert_eq!(t.stats().objects, 0);
    }
}
