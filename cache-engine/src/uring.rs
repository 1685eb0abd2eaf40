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
//! [`WakeFd`] (an eventfd) lets other threads wake a worker blocked in [`Ring::wait`].

use std::fs::File;
use std::io::{self, Write};
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{IoUring, opcode, squeue, types};

/// `IORING_RECVSEND_POLL_FIRST`: a receive is posted when the worker has just
/// answered, so the peer's next bytes are not there yet; wait for readiness instead of
/// trying (and failing) a receive first.
const RECVSEND_POLL_FIRST: u16 = 1;

/// Most buffers one vectored send carries.
pub const MAX_IOVECS: usize = 64;

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
}

// SAFETY: `Held` contains raw pointers (inside iovec/msghdr) that only point into
// buffers owned by the same `InFlight`; moving the ring to another thread moves them
// all together. The ring itself is used by one thread at a time (`&mut self`).
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
        })
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
        }
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
        for s in self.slots.drain(..).flatten() {
            std::mem::forget(s);
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
}
