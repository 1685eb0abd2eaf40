//! io_uring operations that own their buffers: the crate's only `unsafe` code.
//!
//! A [`Ring`] is one io_uring instance, driven by one worker thread. Every operation
//! handed to [`Ring::submit`] moves its buffers into the ring ([`Op`]): the receive
//! buffer, the send buffers with their iovec array and message header, the accept
//! address. They stay in the ring's own slot table, at heap addresses that never move,
//! until the kernel has posted the operation's completion; only then are they handed
//! back in a [`Completion`]. So no buffer the kernel may still read or write can be
//! dropped, moved or touched by the caller (the monoio / tokio-uring model).
//!
//! File descriptors are the caller's: it must keep a socket open while an operation on
//! it is in flight (the worker shuts a socket down to make its operations complete, and
//! closes it only once none is left). When a [`Ring`] is dropped with operations in
//! flight it cancels them and waits for their completions; the buffers of any that do
//! not complete in time are leaked rather than freed under the kernel.
//!
//! File I/O for the disk tier goes through the same rings: positioned reads and
//! writes into [`AlignedBuf`]s (block-aligned, as `O_DIRECT` needs), either owned by
//! the operation, or taken from the ring's own set of *registered* buffers
//! ([`Ring::add_fixed_buffers`], `ReadFixed`/`WriteFixed`: the kernel maps them once
//! instead of pinning pages on every operation). A registered buffer is lent out as a
//! [`BufId`], which is not `Clone`: while an operation on it is in flight the ring
//! holds the lease, so the caller cannot look at bytes the kernel is writing. The
//! buffers themselves belong to the ring; if the kernel refuses to register them
//! (RLIMIT_MEMLOCK for unprivileged users) the same buffers are used with plain
//! `Read`/`Write`. What a read brought in can be handed on without a copy
//! ([`Ring::lend`]): the buffer becomes a `Bytes`, and returns to the ring's pool only
//! when the last `Bytes` of it is dropped (the memory stays allocated as long as any
//! of them, or the ring, exists).
//!
//! [`WakeFd`] (an eventfd) lets other threads wake a worker blocked in [`Ring::wait`].

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::File;
use std::io::{self, Write};
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{IoUring, opcode, squeue, types};

/// `IORING_RECVSEND_POLL_FIRST`: a receive is posted when the worker has just
/// answered, so the peer's next bytes are not there yet; wait for readiness instead of
/// trying (and failing) a receive first.
const RECVSEND_POLL_FIRST: u16 = 1;

/// Most buffers one vectored send carries.
pub const MAX_IOVECS: usize = 64;

/// Alignment of [`AlignedBuf`]s, and the unit of `O_DIRECT` offsets and lengths.
pub const ALIGN: usize = 4096;

/// A zero-initialised heap buffer aligned to [`ALIGN`], with a length up to its capacity.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: the buffer is a plain owned allocation (like a Vec<u8>).
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only read it.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of at least `cap` bytes (rounded up to [`ALIGN`]), length 0.
    pub fn new(cap: usize) -> AlignedBuf {
        let cap = cap.max(1).div_ceil(ALIGN) * ALIGN;
        let layout = match Layout::from_size_align(cap, ALIGN) {
            Ok(l) => l,
            Err(_) => std::alloc::handle_alloc_error(Layout::new::<u8>()),
        };
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, cap, len: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the length (at most the capacity); the bytes are always initialised.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.cap);
    }

    /// The first `len` bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the allocation is `cap` initialised bytes and `len <= cap`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole capacity, for filling.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }

    /// The whole capacity, read-only.
    pub fn full(&self) -> &[u8] {
        // SAFETY: as in `as_slice`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.cap) }
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The allocation's address, for views whose exclusivity the caller guarantees.
    fn raw(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this size and alignment.
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.cap, ALIGN),
            )
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} of {})", self.len, self.cap)
    }
}

/// A ring's file buffers, shared with the `Bytes` lent out of them.
struct Arena {
    bufs: Vec<AlignedBuf>,
    /// Buffers whose lent `Bytes` are all gone, to put back in the pool.
    back: Mutex<Vec<u16>>,
}

/// The bytes of a lent buffer; gives the buffer back to its ring when dropped.
struct Lent {
    arena: Arc<Arena>,
    index: u16,
    len: usize,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        let b = &self.arena.bufs[self.index as usize];
        // SAFETY: `len <= capacity` (checked in `lend`), the allocation lives as long as
        // the arena this holds, and nothing writes buffer `index` while it is lent: its
        // lease was consumed by `lend` and it is back in the pool only after this drops.
        unsafe { std::slice::from_raw_parts(b.raw(), self.len) }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.arena
            .back
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.index);
    }
}

/// The lease of one of a ring's registered buffers; give it back with [`Ring::put_buf`].
#[derive(Debug)]
#[must_use]
pub struct BufId(u16);

impl BufId {
    pub fn index(&self) -> u16 {
        self.0
    }
}

/// An operation to start; it owns every buffer involved.
pub enum Op {
    /// Accept one connection on a listening socket (the new socket is non-blocking).
    Accept { fd: RawFd },
    /// Receive into the spare capacity of `buf` (bytes land after `buf.len()`).
    Recv { fd: RawFd, buf: Vec<u8> },
    /// Send `bufs` in order with one `sendmsg` (MSG_NOSIGNAL); may send fewer bytes.
    Send { fd: RawFd, bufs: Vec<Bytes> },
    /// Wait until the [`WakeFd`] is signalled.
    Wake { fd: RawFd },
    /// Read `len` bytes at `offset` of a file into the registered buffer `buf`.
    ReadFixed {
        fd: RawFd,
        offset: u64,
        buf: BufId,
        len: usize,
    },
    /// Write the first `len` bytes of the registered buffer `buf` at `offset`.
    WriteFixed {
        fd: RawFd,
        offset: u64,
        buf: BufId,
        len: usize,
    },
    /// Read `buf.capacity()` bytes at `offset` into an owned buffer.
    ReadAt {
        fd: RawFd,
        offset: u64,
        buf: AlignedBuf,
    },
    /// Write `buf.len()` bytes of an owned buffer at `offset`.
    WriteAt {
        fd: RawFd,
        offset: u64,
        buf: AlignedBuf,
    },
    /// `fdatasync`.
    Datasync { fd: RawFd },
}

/// What a finished operation produced, with its buffers handed back.
pub enum Event {
    Accepted(io::Result<(OwnedFd, Option<SocketAddr>)>),
    /// `Ok(0)`: the peer closed its side. The received bytes are appended to `buf`.
    Received {
        buf: Vec<u8>,
        result: io::Result<usize>,
    },
    /// Bytes sent from the front of `bufs`.
    Sent {
        bufs: Vec<Bytes>,
        result: io::Result<usize>,
    },
    Woken,
    /// A `ReadFixed` or `WriteFixed` finished: bytes transferred.
    Fixed {
        buf: BufId,
        result: io::Result<usize>,
    },
    /// A `ReadAt` finished; `buf.len()` is the number of bytes read.
    Read {
        buf: AlignedBuf,
        result: io::Result<usize>,
    },
    /// A `WriteAt` finished.
    Written {
        buf: AlignedBuf,
        result: io::Result<usize>,
    },
    Synced(io::Result<usize>),
}

/// One finished operation: the caller's tag and what happened.
pub struct Completion {
    pub tag: u64,
    pub event: Event,
}

/// The address buffer of an accept, written by the kernel.
struct AcceptAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

/// The resources of one operation in flight.
enum Held {
    Accept(Box<AcceptAddr>),
    Recv(Vec<u8>),
    Send {
        bufs: Vec<Bytes>,
        _iov: Box<[libc::iovec]>,
        _msg: Box<libc::msghdr>,
    },
    Wake {
        _buf: Box<[u8; 8]>,
    },
    Fixed(BufId),
    Read(AlignedBuf),
    Write(AlignedBuf),
    Sync,
    /// A cancellation request (owns nothing).
    Cancel,
}

struct InFlight {
    tag: u64,
    held: Held,
}

/// One io_uring and the operations in flight on it.
pub struct Ring {
    ring: IoUring,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    in_flight: usize,
    /// The ring's file buffers (registered with the kernel when `registered`).
    fixed: Arc<Arena>,
    fixed_free: Vec<u16>,
    registered: bool,
}

// SAFETY: `Held` contains raw pointers (inside iovec/msghdr) that only point into
// buffers owned by the same `InFlight`, and fixed-buffer operations point into
// `fixed`, owned by the ring; moving the ring to another thread moves them all
// together. The ring itself is used by one thread at a time (`&mut self`).
unsafe impl Send for Ring {}

impl Ring {
    /// A ring with room for `entries` submissions at once (completions: 4x), for use
    /// by the calling thread only: completion work is deferred until that thread waits
    /// (`DEFER_TASKRUN`, `SINGLE_ISSUER`), which saves interrupting it for every packet.
    /// Kernels without those flags get a plain ring.
    pub fn new(entries: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_cqsize(entries.saturating_mul(4))
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(entries.saturating_mul(4))
                    .build(entries)
            })?;
        Ok(Ring {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            fixed: Arc::new(Arena {
                bufs: Vec::new(),
                back: Mutex::new(Vec::new()),
            }),
            fixed_free: Vec::new(),
            registered: false,
        })
    }

    /// Gives the ring `count` file buffers of `size` bytes (rounded up to [`ALIGN`])
    /// and registers them with the kernel. Returns whether they are registered: when
    /// the kernel refuses (locked-memory limit), they are still usable, with plain
    /// reads and writes. Only the first call has an effect.
    pub fn add_fixed_buffers(&mut self, count: usize, size: usize) -> bool {
        if !self.fixed.bufs.is_empty() || count == 0 {
            return self.registered;
        }
        let count = count.min(u16::MAX as usize);
        self.fixed = Arc::new(Arena {
            bufs: (0..count).map(|_| AlignedBuf::new(size)).collect(),
            back: Mutex::new(Vec::new()),
        });
        self.fixed_free = (0..count as u16).rev().collect();
        let iov: Vec<libc::iovec> = self
            .fixed
            .bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.raw().cast(),
                iov_len: b.capacity(),
            })
            .collect();
        // SAFETY: every iovec describes a live allocation of the arena, which is never
        // resized, and freed only when the ring and every lent `Bytes` are gone (Drop
        // leaks it if an operation on it might still be in flight).
        self.registered = unsafe { self.ring.submitter().register_buffers(&iov) }.is_ok();
        self.registered
    }

    /// Whether the file buffers are registered with the kernel.
    pub fn buffers_registered(&self) -> bool {
        self.registered
    }

    /// Size of each file buffer (0 without any).
    pub fn fixed_size(&self) -> usize {
        self.fixed.bufs.first().map_or(0, AlignedBuf::capacity)
    }

    /// File buffers neither leased, lent nor in flight.
    pub fn free_buffers(&mut self) -> usize {
        self.reclaim();
        self.fixed_free.len()
    }

    /// Puts buffers whose lent `Bytes` are all gone back in the pool; returns how many.
    pub fn reclaim(&mut self) -> usize {
        let mut back = self.fixed.back.lock().unwrap_or_else(|p| p.into_inner());
        let n = back.len();
        self.fixed_free.append(&mut back);
        n
    }

    /// Leases a free file buffer.
    pub fn take_buf(&mut self) -> Option<BufId> {
        if self.fixed_free.is_empty() {
            self.reclaim();
        }
        self.fixed_free.pop().map(BufId)
    }

    /// Hands the first `len` bytes of a leased buffer on as `Bytes`, without a copy;
    /// the buffer returns to the pool once every `Bytes` of it is dropped (see
    /// [`Ring::reclaim`]).
    pub fn lend(&mut self, b: BufId, len: usize) -> Bytes {
        let len = len.min(self.fixed_size());
        Bytes::from_owner(Lent {
            arena: self.fixed.clone(),
            index: b.0,
            len,
        })
    }

    /// Returns a file buffer.
    pub fn put_buf(&mut self, b: BufId) {
        debug_assert!(!self.fixed_free.contains(&b.0));
        self.fixed_free.push(b.0);
    }

    /// The whole of a leased file buffer.
    pub fn buf(&self, b: &BufId) -> &[u8] {
        self.fixed.bufs[b.0 as usize].full()
    }

    /// The whole of a leased file buffer, for filling.
    pub fn buf_mut(&mut self, b: &BufId) -> &mut [u8] {
        let buf = &self.fixed.bufs[b.0 as usize];
        // SAFETY: the allocation is `capacity` initialised bytes that live as long as
        // the arena. `b` is the only lease of this buffer: it is not in flight (submit
        // takes the lease) and not lent (lend takes it too), so no other view of it
        // exists; `&mut self` keeps the ring from making one meanwhile.
        unsafe { std::slice::from_raw_parts_mut(buf.raw(), buf.capacity()) }
    }

    fn fixed_ptr(&mut self, b: &BufId, len: usize) -> io::Result<*mut u8> {
        let buf = self
            .fixed
            .bufs
            .get(b.0 as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no such buffer"))?;
        if len > buf.capacity() || len > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "transfer larger than the buffer",
            ));
        }
        Ok(buf.raw())
    }

    /// Operations submitted whose completion has not been drained yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn slot(&mut self, f: InFlight) -> usize {
        self.in_flight += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(f);
                i
            }
            None => {
                self.slots.push(Some(f));
                self.slots.len() - 1
            }
        }
    }

    /// Queues `entry` (whose pointers reference the held buffers of slot `user_data`),
    /// making room in a full submission queue by submitting what is queued.
    ///
    /// # Safety
    /// Every pointer in `entry` must point into buffers owned by the slot `user_data`
    /// (or be null), which stay allocated and unmoved until its completion is drained.
    unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from the caller's contract.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // The completion queue is full: the caller drains it on its next wait.
                    self.ring.submit_and_wait(0).ok();
                    std::thread::yield_now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts `op`; its completion will carry `tag`.
    pub fn submit(&mut self, tag: u64, op: Op) -> io::Result<()> {
        match op {
            Op::Accept { fd } => {
                // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
                let mut addr = Box::new(AcceptAddr {
                    storage: unsafe { zeroed() },
                    len: size_of::<libc::sockaddr_storage>() as libc::socklen_t,
                });
                let sa = (&mut addr.storage as *mut libc::sockaddr_storage).cast();
                let len = &mut addr.len as *mut libc::socklen_t;
                let idx = self.slot(InFlight {
                    tag,
                    held: Held::Accept(addr),
                });
                let e = opcode::Accept::new(types::Fd(fd), sa, len)
                    .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                    .build()
                    .user_data(idx as u64);
                // SAFETY: `sa` and `len` point into the boxed AcceptAddr held by slot idx.
                unsafe { self.push(e) }
            }
            Op::Recv { fd, mut buf } => {
                if buf.capacity() == buf.len() {
                    buf.reserve(4096);
                }
                let spare = buf.capacity() - buf.len();
                // SAFETY: `len <= capacity`, so the pointer stays inside (or one past)
                // the allocation.
                let ptr = unsafe { buf.as_mut_ptr().add(buf.len()) };
                let idx = self.slot(InFlight {
                    tag,
                    held: Held::Recv(buf),
                });
                let e = opcode::Recv::new(types::Fd(fd), ptr, spare.min(u32::MAX as usize) as u32)
                    .ioprio(RECVSEND_POLL_FIRST)
                    .build()
                    .user_data(idx as u64);
                // SAFETY: `ptr..ptr+spare` is the spare capacity of the Vec now held by
                // slot idx; moving a Vec does not move its heap buffer.
                unsafe { self.push(e) }
            }
            Op::Send { fd, mut bufs } => {
                bufs.truncate(MAX_IOVECS);
                let iov: Box<[libc::iovec]> = bufs
                    .iter()
                    .map(|b| libc::iovec {
                        iov_base: b.as_ptr() as *mut libc::c_void,
                        iov_len: b.len(),
                    })
                    .collect();
                // SAFETY: msghdr is plain old data; all-zero (no name, no control) is valid.
                let mut msg: Box<libc::msghdr> = Box::new(unsafe { zeroed() });
                msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = iov.len();
                let msg_ptr = &*msg as *const libc::msghdr;
                let idx = self.slot(InFlight {
                    tag,
                    held: Held::Send {
                        bufs,
                        _iov: iov,
                        _msg: msg,
                    },
                });
                let e = opcode::SendMsg::new(types::Fd(fd), msg_ptr)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
                    .user_data(idx as u64);
                // SAFETY: the msghdr, the iovec array and every `Bytes` they point to are
                // held by slot idx (boxed / reference-counted, so their addresses are
                // stable); the kernel only reads them.
                unsafe { self.push(e) }
            }
            Op::Wake { fd } => {
                let mut b = Box::new([0u8; 8]);
                let ptr = b.as_mut_ptr();
                let idx = self.slot(InFlight {
                    tag,
                    held: Held::Wake { _buf: b },
                });
                let e = opcode::Read::new(types::Fd(fd), ptr, 8)
                    .build()
                    .user_data(idx as u64);
                // SAFETY: `ptr` points at the 8-byte box held by slot idx.
                unsafe { self.push(e) }
            }
            Op::ReadFixed {
                fd,
                offset,
                buf,
                len,
            } => self.submit_fixed(tag, fd, offset, buf, len, false),
            Op::WriteFixed {
                fd,
                offset,
                buf,
                len,
            } => self.submit_fixed(tag, fd, offset, buf, len, true),
            Op::ReadAt {
                fd,
                offset,
                mut buf,
            } => {
                let ptr = buf.as_mut_ptr();
                let len = buf.capacity().min(u32::MAX as usize) as u32;
                let idx = self.slot(InFlight {
                    tag,
                    held: Held::Read(buf),
                });
                let e = opcode::Read::new(types::Fd(fd), ptr, len)
                    .offset(offset)
                    .build()
                    .user_data(idx as u64);
                // SAFETY: `ptr..ptr+len` is the heap allocation of the AlignedBuf held
                // by slot idx (moving the struct does not move its allocation).
                unsafe { self.push(e) }
            }
            Op::WriteAt {
                fd,
                offset,
                mut buf,
            } => {
                let ptr = buf.as_mut_ptr();
                let len = buf.len().min(u32::MAX as usize) as u32;
                let idx = self.slot(InFlight {
                    tag,
                    held: Held::Write(buf),
                });
                let e = opcode::Write::new(types::Fd(fd), ptr, len)
                    .offset(offset)
                    .build()
                    .user_data(idx as u64);
                // SAFETY: as for ReadAt; the kernel only reads the first `len` bytes.
                unsafe { self.push(e) }
            }
            Op::Datasync { fd } => {
                let idx = self.slot(InFlight {
                    tag,
                    held: Held::Sync,
                });
                let e = opcode::Fsync::new(types::Fd(fd))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(idx as u64);
                // SAFETY: an fsync carries no pointer.
                unsafe { self.push(e) }
            }
        }
    }

    /// Starts a read (`write` false) or write of `len` bytes of registered buffer `buf`.
    fn submit_fixed(
        &mut self,
        tag: u64,
        fd: RawFd,
        offset: u64,
        buf: BufId,
        len: usize,
        write: bool,
    ) -> io::Result<()> {
        let ptr = match self.fixed_ptr(&buf, len) {
            Ok(p) => p,
            Err(e) => {
                self.put_buf(buf);
                return Err(e);
            }
        };
        let index = buf.0;
        let registered = self.registered;
        let idx = self.slot(InFlight {
            tag,
            held: Held::Fixed(buf),
        });
        let (fd, len) = (types::Fd(fd), len as u32);
        let e = match (write, registered) {
            (false, true) => opcode::ReadFixed::new(fd, ptr, len, index)
                .offset(offset)
                .build(),
            (true, true) => opcode::WriteFixed::new(fd, ptr, len, index)
                .offset(offset)
                .build(),
            (false, false) => opcode::Read::new(fd, ptr, len).offset(offset).build(),
            (true, false) => opcode::Write::new(fd, ptr, len).offset(offset).build(),
        };
        // SAFETY: `ptr..ptr+len` lies inside buffer `index` of the arena (checked by
        // fixed_ptr), which the ring holds and which never moves or is freed while it
        // exists; the lease is held by slot idx until the completion is drained, so the
        // caller cannot touch the buffer meanwhile, and it is not lent.
        unsafe { self.push(e.user_data(idx as u64)) }
    }

    /// Submits what is queued and waits until at least one completion is ready or
    /// `timeout` has passed.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if !self.ring.completion().is_empty() {
            return self.ring.submit().map(|_| ());
        }
        let ts = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves every ready completion into `out`, handing back the operations' buffers.
    pub fn drain(&mut self, out: &mut Vec<Completion>) {
        let ready: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (idx, res) in ready {
            let Some(f) = self.slots.get_mut(idx as usize).and_then(Option::take) else {
                continue;
            };
            self.free.push(idx as usize);
            self.in_flight -= 1;
            let result = if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else {
                Ok(res as usize)
            };
            let event = match f.held {
                Held::Accept(addr) => Event::Accepted(result.map(|fd| {
                    // SAFETY: a successful accept returns a new descriptor that nothing
                    // else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
                    (fd, to_socket_addr(&addr.storage, addr.len))
                })),
                Held::Recv(mut buf) => {
                    if let Ok(n) = result {
                        let n = n.min(buf.capacity() - buf.len());
                        // SAFETY: the kernel initialised `n` bytes of the spare capacity
                        // right after `len` (the range handed to it at submission).
                        unsafe { buf.set_len(buf.len() + n) };
                    }
                    Event::Received { buf, result }
                }
                Held::Send { bufs, .. } => Event::Sent { bufs, result },
                Held::Wake { .. } => Event::Woken,
                Held::Fixed(buf) => Event::Fixed { buf, result },
                Held::Read(mut buf) => {
                    if let Ok(n) = result {
                        buf.set_len(n);
                    }
                    Event::Read { buf, result }
                }
                Held::Write(buf) => Event::Written { buf, result },
                Held::Sync => Event::Synced(result),
                Held::Cancel => continue,
            };
            out.push(Completion { tag: f.tag, event });
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        let pending: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Some(f) if !matches!(f.held, Held::Cancel)))
            .map(|(i, _)| i)
            .collect();
        for i in pending {
            let idx = self.slot(InFlight {
                tag: 0,
                held: Held::Cancel,
            });
            let e = opcode::AsyncCancel::new(i as u64)
                .build()
                .user_data(idx as u64);
            // SAFETY: a cancellation carries no pointer.
            if unsafe { self.push(e) }.is_err() {
                break;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut sink = Vec::new();
        while self.in_flight > 0 && Instant::now() < deadline {
            if self.wait(Duration::from_millis(50)).is_err() {
                break;
            }
            self.drain(&mut sink);
            sink.clear();
        }
        // Whatever is still in flight may yet be written by the kernel: leak it.
        let mut fixed_in_flight = false;
        for s in self.slots.drain(..).flatten() {
            fixed_in_flight |= matches!(s.held, Held::Fixed(_));
            std::mem::forget(s);
        }
        if fixed_in_flight {
            std::mem::forget(self.fixed.clone());
        }
    }
}

/// An eventfd that wakes a worker blocked in [`Ring::wait`] (via an [`Op::Wake`]).
pub struct WakeFd {
    file: File,
}

impl WakeFd {
    pub fn new() -> io::Result<WakeFd> {
        // SAFETY: plain system call; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(WakeFd {
            file: File::from(owned),
        })
    }

    /// Wakes the worker (a no-op if it is already being woken).
    pub fn wake(&self) {
        let _ = (&self.file).write(&1u64.to_ne_bytes());
    }
}

impl AsRawFd for WakeFd {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Allocates the first `len` bytes of a file (`fallocate`, mode 0), so later writes
/// need no block allocation.
pub fn allocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file size out of range"))?;
    // SAFETY: plain system call on a descriptor the caller keeps open; no pointers.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Converts a kernel-written socket address.
fn to_socket_addr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in, and
            // sockaddr_storage is large enough and suitably aligned for it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn next(ring: &mut Ring) -> Completion {
        let mut out = Vec::new();
        for _ in 0..100 {
            ring.wait(Duration::from_millis(100)).unwrap();
            ring.drain(&mut out);
            if let Some(c) = out.pop() {
                return c;
            }
        }
        panic!("no completion within 10 s");
    }

    #[test]
    fn accept_recv_send_round_trip() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut ring = Ring::new(64).unwrap();
        ring.submit(1, Op::Accept { fd: l.as_raw_fd() }).unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        let c = next(&mut ring);
        assert_eq!(c.tag, 1);
        let Event::Accepted(Ok((fd, peer))) = c.event else {
            panic!("no accept")
        };
        assert_eq!(peer, Some(client.local_addr().unwrap()));
        client.write_all(b"hello").unwrap();
        ring.submit(
            2,
            Op::Recv {
                fd: fd.as_raw_fd(),
                buf: b"x".to_vec(),
            },
        )
        .unwrap();
        let c = next(&mut ring);
        let Event::Received { buf, result } = c.event else {
            panic!("no recv")
        };
        assert_eq!(result.unwrap(), 5);
        assert_eq!(buf, b"xhello");
        ring.submit(
            3,
            Op::Send {
                fd: fd.as_raw_fd(),
                bufs: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")],
            },
        )
        .unwrap();
        let c = next(&mut ring);
        let Event::Sent { bufs, result } = c.event else {
            panic!("no send")
        };
        assert_eq!(result.unwrap(), 4);
        assert_eq!(bufs.len(), 2);
        let mut got = [0u8; 4];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcd");
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn wake_fd_and_drop_with_ops_in_flight() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut ring = Ring::new(8).unwrap();
        let w = WakeFd::new().unwrap();
        ring.submit(7, Op::Wake { fd: w.as_raw_fd() }).unwrap();
        w.wake();
        let c = next(&mut ring);
        assert_eq!(c.tag, 7);
        assert!(matches!(c.event, Event::Woken));
        // An accept that never completes is cancelled when the ring is dropped.
        ring.submit(8, Op::Accept { fd: l.as_raw_fd() }).unwrap();
        ring.wait(Duration::from_millis(10)).unwrap();
        assert_eq!(ring.in_flight(), 1);
        drop(ring);
    }

    #[test]
    fn direct_file_io_with_registered_and_owned_buffers() {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .or_else(|_| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
            })
            .unwrap();
        f.set_len(1 << 20).unwrap();
        let fd = f.as_raw_fd();
        let mut ring = Ring::new(16).unwrap();
        ring.add_fixed_buffers(2, 8192);
        assert_eq!(ring.fixed_size(), 8192);
        let b = ring.take_buf().unwrap();
        ring.buf_mut(&b)[..8192].fill(b'z');
        ring.buf_mut(&b)[..5].copy_from_slice(b"hello");
        ring.submit(
            1,
            Op::WriteFixed {
                fd,
                offset: 4096,
                buf: b,
                len: 8192,
            },
        )
        .unwrap();
        let c = next(&mut ring);
        let Event::Fixed { buf, result } = c.event else {
            panic!("no write")
        };
        assert_eq!(result.unwrap(), 8192);
        ring.submit(2, Op::Datasync { fd }).unwrap();
        assert!(matches!(next(&mut ring).event, Event::Synced(Ok(_))));
        // Read back into the other buffer (fixed), then into an owned one.
        ring.put_buf(buf);
        let b1 = ring.take_buf().unwrap();
        let b2 = ring.take_buf().unwrap();
        assert!(ring.take_buf().is_none());
        ring.submit(
            3,
            Op::ReadFixed {
                fd,
                offset: 4096,
                buf: b2,
                len: 4096,
            },
        )
        .unwrap();
        let Event::Fixed { buf, result } = next(&mut ring).event else {
            panic!("no read")
        };
        assert_eq!(result.unwrap(), 4096);
        assert_eq!(&ring.buf(&buf)[..6], b"helloz");
        ring.put_buf(buf);
        ring.put_buf(b1);
        ring.submit(
            4,
            Op::ReadAt {
                fd,
                offset: 8192,
                buf: AlignedBuf::new(8192),
            },
        )
        .unwrap();
        let Event::Read { buf, result } = next(&mut ring).event else {
            panic!("no owned read")
        };
        assert_eq!(result.unwrap(), 8192);
        assert_eq!(buf.len(), 8192);
        assert!(buf.as_slice()[..4096].iter().all(|&x| x == b'z'));
        assert!(buf.as_slice()[4096..].iter().all(|&x| x == 0));
        // A transfer larger than the buffer is refused, and the lease comes back.
        let b = ring.take_buf().unwrap();
        assert!(
            ring.submit(
                5,
                Op::ReadFixed {
                    fd,
                    offset: 0,
                    buf: b,
                    len: 1 << 20,
                },
            )
            .is_err()
        );
        assert_eq!(ring.free_buffers(), 2);
        assert_eq!(ring.in_flight(), 0);
        // A lent buffer comes back only when its last Bytes is dropped.
        let b = ring.take_buf().unwrap();
        ring.buf_mut(&b)[..3].copy_from_slice(b"abc");
        let bytes = ring.lend(b, 3);
        let part = bytes.slice(1..);
        drop(bytes);
        assert_eq!(ring.free_buffers(), 1);
        assert_eq!(&part[..], b"bc");
        drop(part);
        assert_eq!(ring.free_buffers(), 2);
    }
}
