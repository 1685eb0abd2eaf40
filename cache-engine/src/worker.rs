//! The per-core event loop: one io_uring, one SO_REUSEPORT listener per address, every connection of this worker.
//!
//! A connection reads (one `Recv` in flight, into its own buffer, at most
//! [`MAX_HEAD`] plus the request body limit), parses every complete request in the
//! buffer in order (pipelining), and answers each before parsing the next. A hit is
//! answered at once: the stored head block and body `Bytes` go to the connection's
//! output queue, and one vectored `SendMsg` carries as many queued responses as fit.
//! A miss attaches the connection to an in-flight [`Fetch`] (its own, or one another
//! request leads) and streams from it as the origin delivers; the worker is woken
//! through its [`Mailbox`].
//!
//! A hit on the disk tier is read on this worker's own ring (`ReadFixed` into its
//! registered buffers, one read in flight per connection): a small object is read
//! whole and verified, then served like a RAM hit (and promoted if the disk tier's
//! policy says so); a large one is streamed chunk by chunk, each chunk verified
//! before it is queued, its head sent only once the first chunk checked out, and the
//! next read issued only when the output queue is below [`HIGH_WATER`]. The bytes go
//! out straight from the read buffer (lent as `Bytes`; copied instead when few
//! buffers are free, so clients that do not read cannot pin them all). A record that
//! fails its checks is a miss: the request goes to the origin like any other.
//!
//! Reading pauses while a response is in progress or the output queue is above
//! [`HIGH_WATER`], so a client that sends without reading cannot make the worker
//! buffer without bound. A request that is refused (malformed, too large, too slow)
//! gets its error response and the connection closes after it: the bytes after a bad
//! request are never parsed as a request. Timers (head, body, idle, send) are checked
//! by a sweep every [`TICK`].

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::access_log::{AccessLog, FLUSH_AT, Record};
use crate::coalesce::{Acquired, BodyPoll, Fetch, FetchError, HeadPoll, Mailbox, WakeRef};
use crate::http::{
    BodyFraming, ChunkedDecoder, DateLine, MAX_HEAD, MAX_HEADERS, Method, RangeAsk, Reject,
    Request, connection_tokens, is_hop_by_hop, parse_request, reason, resolve_range, unix_now,
};
use crate::key::{CacheKey, normalize_host_into};
use crate::object::{ResponseHead, StoredObject};
use crate::origin::{FetchJob, OriginRequest};
use crate::routes::Route;
use crate::server::Shared;
use crate::stats::{CacheStatus, Counters, bump};
use crate::store::Lookup;
use crate::store::disk::{DiskLoad, DiskStream, IO_BUF, LoadError, Loaded, ReadAsk};
use crate::uring::{BufId, Completion, Event, MAX_IOVECS, Op, Ring};

/// Output queued beyond this pauses reading and streaming for that connection.
pub const HIGH_WATER: usize = 256 * 1024;
/// How often timers are checked.
pub const TICK: Duration = Duration::from_millis(100);
/// Bodies up to this size are copied next to their head (one buffer per response).
const COPY_BODY: usize = 16 * 1024;
/// How long a closing connection is drained before it is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// Requests handled per connection before others get a turn.
const BURST: usize = 64;
/// Registered buffers for disk reads (each [`IO_BUF`] bytes): disk reads in flight at
/// once on one worker.
const DISK_BUFS: usize = 16;

/// Completion tags: the top two bits say what finished (0 = a connection, whose token
/// fills the rest), the low bits which one.
const KIND: u64 = 3 << 62;
const KIND_LISTENER: u64 = 1 << 62;
const KIND_WAKE: u64 = 2 << 62;
/// A disk read for the connection whose token fills the low bits.
const KIND_DISK: u64 = 3 << 62;

fn token(slot: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | slot as u64
}

/// The request facts a response depends on, borrowed from the parsed head or from an
/// owned [`ReqInfo`].
#[derive(Clone, Copy)]
struct Facts<'a> {
    method: Method,
    http10: bool,
    keep_alive: bool,
    host: &'a str,
    target: &'a str,
    range: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
    inm: Option<&'a [u8]>,
    ims: Option<&'a [u8]>,
    started: Instant,
}

/// A request kept beyond its receive buffer (misses, bodies).
struct ReqInfo {
    method: Method,
    host: String,
    host_raw: String,
    target: String,
    http10: bool,
    keep_alive: bool,
    range: Option<Bytes>,
    if_range: Option<Bytes>,
    inm: Option<Bytes>,
    ims: Option<Bytes>,
    authorized: bool,
    /// End-to-end request fields (forwardable).
    fields: Vec<(Box<str>, Bytes)>,
    body: Bytes,
    started: Instant,
    restarts: u8,
}

impl ReqInfo {
    fn from_request(req: &Request<'_, '_>, host: &str, started: Instant) -> ReqInfo {
        let listed = connection_tokens(req.headers.iter().map(|h| (h.name, h.value)));
        let fields = req
            .headers
            .iter()
            .filter(|h| {
                let n = h.name;
                !(n.eq_ignore_ascii_case("host")
                    || n.eq_ignore_ascii_case("content-length")
                    || n.eq_ignore_ascii_case("expect")
                    || is_hop_by_hop(n)
                    || listed.iter().any(|l| n.eq_ignore_ascii_case(l)))
            })
            .map(|h| (Box::from(h.name), Bytes::copy_from_slice(h.value)))
            .collect();
        let b = |n: &str| req.header(n).map(Bytes::copy_from_slice);
        ReqInfo {
            method: req.method,
            host: host.to_string(),
            host_raw: req.host.to_string(),
            target: req.target.to_string(),
            http10: req.http10,
            keep_alive: req.keep_alive,
            range: b("range"),
            if_range: b("if-range"),
            inm: b("if-none-match"),
            ims: b("if-modified-since"),
            authorized: req.header("authorization").is_some(),
            fields,
            body: Bytes::new(),
            started,
            restarts: 0,
        }
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            method: self.method,
            http10: self.http10,
            keep_alive: self.keep_alive,
            host: &self.host,
            target: &self.target,
            range: self.range.as_deref(),
            if_range: self.if_range.as_deref(),
            inm: self.inm.as_deref(),
            ims: self.ims.as_deref(),
            started: self.started,
        }
    }

    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
            .collect()
    }

    /// The request to send to the origin: a cache fill drops conditionals and Range
    /// (the cache wants the whole current object) and turns HEAD into GET.
    fn origin_request(&self, fill: bool, client: SocketAddr) -> OriginRequest {
        const FILL_DROPS: [&str; 6] = [
            "range",
            "if-range",
            "if-none-match",
            "if-modified-since",
            "if-match",
            "if-unmodified-since",
        ];
        let fields = self
            .fields
            .iter()
            .filter(|(n, _)| !(fill && FILL_DROPS.iter().any(|d| n.eq_ignore_ascii_case(d))))
            .filter(|(n, _)| !n.eq_ignore_ascii_case("transfer-encoding"))
            .cloned()
            .collect();
        OriginRequest {
            method: if fill && self.method == Method::Head {
                Method::Get
            } else {
                self.method
            },
            target: self.target.clone(),
            host: self.host_raw.clone(),
            fields,
            body: self.body.clone(),
            client: client.ip(),
        }
    }
}

/// A request body being read before the request is dispatched.
struct BodyRead {
    info: ReqInfo,
    route: Result<Arc<Route>, String>,
    length: Option<u64>,
    decoder: Option<ChunkedDecoder>,
    collected: Vec<u8>,
}

enum Phase {
    Head,
    Body {
        offset: u64,
        end: Option<u64>,
        chunked: bool,
    },
}

/// A connection reading its response from a fetch.
struct FetchReader {
    fetch: Arc<Fetch>,
    reader: u64,
    lead: bool,
    info: ReqInfo,
    route: Arc<Route>,
    primary: CacheKey,
    stale: Option<Arc<StoredObject>>,
    phase: Phase,
    status: u16,
    cache: CacheStatus,
    origin: Option<Arc<str>>,
    origin_us: Option<u64>,
    ttfb_us: u64,
}

impl Drop for FetchReader {
    fn drop(&mut self) {
        self.fetch.leave(self.reader);
    }
}

/// A connection reading its response from the disk tier.
struct DiskReader {
    info: ReqInfo,
    route: Arc<Route>,
    primary: CacheKey,
    /// The key a fill would lock (the variant key for varying URLs).
    lock: CacheKey,
    state: DiskState,
    /// A read is in flight.
    reading: bool,
    /// A read that completed and is not processed yet.
    landed: Option<(BufId, io::Result<usize>)>,
}

enum DiskState {
    /// Reading the record (whole, or its header).
    Load(DiskLoad),
    /// Streaming the body; `head` is sent with the first verified chunk.
    Stream {
        stream: DiskStream,
        head: Option<Bytes>,
        status: u16,
        ttfb_us: u64,
    },
}

enum Current {
    Body(Box<BodyRead>),
    Fetch(Box<FetchReader>),
    Disk(Box<DiskReader>),
}

enum Step {
    Done,
    Blocked,
}

struct Conn {
    fd: OwnedFd,
    peer: SocketAddr,
    generation: u32,
    rbuf: Vec<u8>,
    recv_busy: bool,
    send_busy: bool,
    /// A disk read for this connection is in flight.
    disk_busy: bool,
    out: VecDeque<Bytes>,
    out_bytes: usize,
    wbuf: BytesMut,
    cur: Option<Current>,
    read_closed: bool,
    /// No more requests: flush, then close.
    closing: bool,
    /// Write side shut; draining input until EOF or this deadline.
    linger: Option<Instant>,
    /// Shut down; dropped once no operation is in flight.
    dead: bool,
    head_started: Option<Instant>,
    last_read: Instant,
    last_sent: Instant,
    last_active: Instant,
    resp_bytes: u64,
}

impl Conn {
    fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.out_bytes += b.len();
        self.resp_bytes += b.len() as u64;
        self.out.push_back(b);
    }

    /// Moves what was composed in `wbuf` to the output queue.
    fn push_wbuf(&mut self) {
        let b = self.wbuf.split().freeze();
        self.push(b);
    }

    fn reserve(&mut self, n: usize) {
        if self.wbuf.capacity() - self.wbuf.len() < n {
            self.wbuf.reserve(n.max(4096));
        }
    }
}

/// Length framing of a response.
enum Length {
    Known(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, unknown length).
    Close,
    /// No body framing header (304, 1xx-like answers).
    Omit,
}

/// Writes a status line and head fields into `w`.
#[allow(clippy::too_many_arguments)]
fn write_head(
    w: &mut BytesMut,
    status: u16,
    head: Option<&ResponseHead>,
    date: Option<&str>,
    age: Option<u64>,
    cache: Option<CacheStatus>,
    length: Length,
    extra: &[(&str, &str)],
    facts_close: bool,
    http10: bool,
) {
    let _ = write!(w.writer(), "HTTP/1.1 {status} {}\r\n", reason(status));
    if let Some(h) = head {
        w.put_slice(&h.block);
    } else {
        w.put_slice(b"Server: popnet\r\n");
    }
    if let Some(d) = date {
        w.put_slice(d.as_bytes());
    }
    if let Some(a) = age {
        let _ = write!(w.writer(), "Age: {a}\r\n");
    }
    if let Some(c) = cache {
        w.put_slice(b"X-Cache: ");
        w.put_slice(c.as_str().as_bytes());
        w.put_slice(b"\r\n");
    }
    for (n, v) in extra {
        let _ = write!(w.writer(), "{n}: {v}\r\n");
    }
    match length {
        Length::Known(n) => {
            let _ = write!(w.writer(), "Content-Length: {n}\r\n");
        }
        Length::Chunked => w.put_slice(b"Transfer-Encoding: chunked\r\n"),
        Length::Close | Length::Omit => {}
    }
    if facts_close || matches!(length, Length::Close) {
        w.put_slice(b"Connection: close\r\n");
    } else if http10 {
        w.put_slice(b"Connection: keep-alive\r\n");
    }
    w.put_slice(b"\r\n");
}

pub(crate) struct Worker {
    // Dropped first: cancels and reaps every operation before sockets close.
    ring: Ring,
    id: usize,
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    accept_paused: Vec<Option<Instant>>,
    conns: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free: Vec<usize>,
    mailbox: Arc<Mailbox>,
    counters: Arc<Counters>,
    date: DateLine,
    now: Instant,
    now_unix: u64,
    host_buf: String,
    log_buf: Vec<u8>,
    last_flush: Instant,
    /// Connections waiting for a disk buffer, and those to resume because one came free.
    buf_waiters: VecDeque<u64>,
    buf_ready: Vec<u64>,
}

impl Worker {
    pub(crate) fn new(
        id: usize,
        shared: Arc<Shared>,
        listeners: Vec<TcpListener>,
        mailbox: Arc<Mailbox>,
        counters: Arc<Counters>,
    ) -> io::Result<Worker> {
        let mut ring = Ring::new(1024)?;
        if shared.store.disk().is_some() && !ring.add_fixed_buffers(DISK_BUFS, IO_BUF) {
            tracing::info!(
                worker = id,
                "disk read buffers not registered (locked-memory limit); using plain reads"
            );
        }
        let n = listeners.len();
        Ok(Worker {
            ring,
            id,
            shared,
            listeners,
            accept_paused: vec![None; n],
            conns: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            mailbox,
            counters,
            date: DateLine::new(),
            now: Instant::now(),
            now_unix: unix_now(),
            host_buf: String::new(),
            log_buf: Vec::new(),
            last_flush: Instant::now(),
            buf_waiters: VecDeque::new(),
            buf_ready: Vec::new(),
        })
    }

    /// Runs until the server stops.
    pub(crate) fn run(mut self) -> io::Result<()> {
        for i in 0..self.listeners.len() {
            self.arm_accept(i)?;
        }
        self.ring.submit(
            KIND_WAKE,
            Op::Wake {
                fd: self.mailbox.fd().as_raw_fd(),
            },
        )?;
        let mut done = Vec::new();
        let mut woken = Vec::new();
        let mut last_sweep = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.ring.wait(TICK)?;
            self.now = Instant::now();
            self.now_unix = unix_now();
            self.ring.drain(&mut done);
            for c in done.drain(..) {
                self.on_completion(c)?;
            }
            self.mailbox.take(&mut woken);
            for t in woken.drain(..) {
                if let Some(slot) = self.slot_of(t) {
                    self.progress(slot);
                }
            }
            if !self.buf_waiters.is_empty() {
                self.reclaim_bufs();
            }
            while !self.buf_ready.is_empty() {
                for t in std::mem::take(&mut self.buf_ready) {
                    if let Some(slot) = self.slot_of(t) {
                        self.progress(slot);
                    }
                }
            }
            if self.now.duration_since(last_sweep) >= TICK {
                last_sweep = self.now;
                self.sweep();
            }
        }
        self.flush_log(true);
        for c in self.conns.iter().flatten() {
            let _ = socket2::SockRef::from(&c.fd).shutdown(Shutdown::Both);
        }
        tracing::debug!(worker = self.id, "cache worker stopped");
        Ok(())
    }

    fn arm_accept(&mut self, i: usize) -> io::Result<()> {
        self.ring.submit(
            KIND_LISTENER | i as u64,
            Op::Accept {
                fd: self.listeners[i].as_raw_fd(),
            },
        )
    }

    fn slot_of(&self, token: u64) -> Option<usize> {
        let slot = (token & 0xffff_ffff) as usize;
        let generation = ((token >> 32) & 0x3fff_ffff) as u32;
        match self.conns.get(slot) {
            Some(Some(c)) if c.generation == generation => Some(slot),
            _ => None,
        }
    }

    fn conn(&mut self, slot: usize) -> &mut Conn {
        match self.conns[slot].as_mut() {
            Some(c) => c,
            None => unreachable!("slot {slot} checked live by the caller"),
        }
    }

    fn waker(&self, slot: usize) -> WakeRef {
        let generation = self.conns[slot].as_ref().map_or(0, |c| c.generation);
        WakeRef {
            mailbox: self.mailbox.clone(),
            token: token(slot, generation),
        }
    }

    fn on_completion(&mut self, c: Completion) -> io::Result<()> {
        match c.tag & KIND {
            KIND_LISTENER => {
                let i = (c.tag & !KIND) as usize;
                match c.event {
                    Event::Accepted(Ok((fd, peer))) => {
                        self.arm_accept(i)?;
                        self.accepted(fd, peer);
                    }
                    Event::Accepted(Err(e)) => {
                        // Out of descriptors and the like: wait a tick before retrying.
                        tracing::warn!(error = %e, "cache accept failed");
                        self.accept_paused[i] = Some(self.now + TICK);
                    }
                    _ => {}
                }
            }
            KIND_WAKE => {
                self.ring.submit(
                    KIND_WAKE,
                    Op::Wake {
                        fd: self.mailbox.fd().as_raw_fd(),
                    },
                )?;
            }
            KIND_DISK => {
                if let Event::Fixed { buf, result } = c.event {
                    match self.slot_of(c.tag & !KIND) {
                        Some(slot) => self.disk_landed(slot, buf, result),
                        None => self.give_buf(buf),
                    }
                }
            }
            _ => {
                let Some(slot) = self.slot_of(c.tag) else {
                    return Ok(());
                };
                match c.event {
                    Event::Received { buf, result } => self.received(slot, buf, result),
                    Event::Sent { bufs, result } => self.sent(slot, bufs, result),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn accepted(&mut self, fd: OwnedFd, peer: Option<SocketAddr>) {
        let peer = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let open = self.shared.open.fetch_add(1, Ordering::AcqRel) + 1;
        if open > self.shared.settings.max_connections {
            self.shared.open.fetch_sub(1, Ordering::AcqRel);
            bump(&self.counters.refused_connections);
            let mut s = TcpStream::from(fd);
            let body = "popnet: too many connections; try again later\n";
            let _ = write!(
                s,
                "HTTP/1.1 503 Service Unavailable\r\nServer: popnet\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.shutdown(Shutdown::Write);
            return;
        }
        bump(&self.counters.accepted);
        let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.generations.push(0);
            self.conns.len() - 1
        });
        self.generations[slot] = self.generations[slot].wrapping_add(1) & 0x3fff_ffff;
        self.conns[slot] = Some(Conn {
            fd,
            peer,
            generation: self.generations[slot],
            rbuf: Vec::with_capacity(4096),
            recv_busy: false,
            send_busy: false,
            disk_busy: false,
            out: VecDeque::new(),
            out_bytes: 0,
            wbuf: BytesMut::new(),
            cur: None,
            read_closed: false,
            closing: false,
            linger: None,
            dead: false,
            head_started: None,
            last_read: self.now,
            last_sent: self.now,
            last_active: self.now,
            resp_bytes: 0,
        });
        self.want_recv(slot);
    }

    fn received(&mut self, slot: usize, buf: Vec<u8>, result: io::Result<usize>) {
        let now = self.now;
        let c = self.conn(slot);
        c.recv_busy = false;
        c.rbuf = buf;
        if c.dead {
            // Shut down while this receive was in flight: free it now if nothing else is.
            self.kill(slot);
            return;
        }
        match result {
            Ok(0) => c.read_closed = true,
            Ok(_) => {
                c.last_read = now;
                c.last_active = now;
                if c.linger.is_some() {
                    c.rbuf.clear();
                } else if c.cur.is_none() && c.head_started.is_none() {
                    c.head_started = Some(now);
                }
            }
            Err(_) => {
                self.kill(slot);
                return;
            }
        }
        if c.linger.is_some() {
            if c.read_closed {
                self.kill(slot);
            } else {
                self.want_recv(slot);
            }
            return;
        }
        self.progress(slot);
    }

    fn sent(&mut self, slot: usize, bufs: Vec<Bytes>, result: io::Result<usize>) {
        let now = self.now;
        let c = self.conn(slot);
        c.send_busy = false;
        if c.dead {
            self.kill(slot);
            return;
        }
        match result {
            Ok(mut n) => {
                c.out_bytes -= n.min(c.out_bytes);
                c.last_sent = now;
                let mut rest = Vec::new();
                for mut b in bufs {
                    if n >= b.len() {
                        n -= b.len();
                    } else {
                        let _ = b.split_to(n);
                        n = 0;
                        rest.push(b);
                    }
                }
                for b in rest.into_iter().rev() {
                    c.out.push_front(b);
                }
                self.progress(slot);
            }
            Err(_) => self.kill(slot),
        }
    }

    /// Makes all the progress possible on one connection.
    fn progress(&mut self, slot: usize) {
        for _ in 0..BURST {
            let c = self.conn(slot);
            if c.dead || c.linger.is_some() {
                return;
            }
            if c.cur.is_some() {
                match self.advance(slot) {
                    Step::Done => {
                        let now = self.now;
                        let c = self.conn(slot);
                        c.cur = None;
                        c.last_active = now;
                        c.head_started = (!c.rbuf.is_empty()).then_some(now);
                        continue;
                    }
                    Step::Blocked => break,
                }
            }
            let c = self.conn(slot);
            if c.closing || c.out_bytes > HIGH_WATER || c.rbuf.is_empty() {
                break;
            }
            let rbuf = std::mem::take(&mut c.rbuf);
            let used = self.parse_one(slot, &rbuf);
            let now = self.now;
            let c = self.conn(slot);
            c.rbuf = rbuf;
            match used {
                Some(n) => {
                    c.rbuf.drain(..n);
                    if c.cur.is_none() {
                        c.head_started = (!c.rbuf.is_empty()).then_some(now);
                    }
                }
                None => break,
            }
        }
        self.flush(slot);
        self.want_recv(slot);
        self.maybe_close(slot);
    }

    fn flush(&mut self, slot: usize) {
        let now = self.now;
        let c = self.conn(slot);
        if c.send_busy || c.out.is_empty() || c.dead {
            return;
        }
        let n = c.out.len().min(MAX_IOVECS);
        let bufs: Vec<Bytes> = c.out.drain(..n).collect();
        c.send_busy = true;
        c.last_sent = now;
        let fd = c.fd.as_raw_fd();
        let generation = c.generation;
        if self
            .ring
            .submit(token(slot, generation), Op::Send { fd, bufs })
            .is_err()
        {
            self.conn(slot).send_busy = false;
            self.kill(slot);
        }
    }

    fn want_recv(&mut self, slot: usize) {
        let c = self.conn(slot);
        if c.recv_busy || c.read_closed || c.dead {
            return;
        }
        let needs = c.linger.is_some()
            || (!c.closing
                && c.out_bytes <= HIGH_WATER
                && !matches!(c.cur, Some(Current::Fetch(_) | Current::Disk(_))));
        if !needs {
            return;
        }
        let limit = MAX_HEAD + self.shared.settings.max_request_body as usize + 4096;
        let c = self.conn(slot);
        let mut buf = std::mem::take(&mut c.rbuf);
        if buf.len() >= limit {
            c.rbuf = buf;
            return;
        }
        if buf.capacity() - buf.len() < 1024 {
            let room = (limit - buf.len()).min(buf.capacity().max(4096));
            buf.reserve(room);
        }
        c.recv_busy = true;
        let fd = c.fd.as_raw_fd();
        let generation = c.generation;
        if self
            .ring
            .submit(token(slot, generation), Op::Recv { fd, buf })
            .is_err()
        {
            self.conn(slot).recv_busy = false;
            self.kill(slot);
        }
    }

    /// Closes a connection that is done: write side first, then drain input briefly
    /// so the client reads the last response before the socket goes away.
    fn maybe_close(&mut self, slot: usize) {
        let now = self.now;
        let c = self.conn(slot);
        if c.dead || c.linger.is_some() || c.send_busy || !c.out.is_empty() {
            return;
        }
        // `closing` takes effect once the response in progress is complete.
        let finished = c.cur.is_none() && (c.closing || c.read_closed);
        if !finished {
            return;
        }
        if c.read_closed {
            self.kill(slot);
            return;
        }
        let _ = socket2::SockRef::from(&c.fd).shutdown(Shutdown::Write);
        c.linger = Some(now + LINGER);
        c.cur = None;
        c.rbuf.clear();
        self.want_recv(slot);
    }

    /// Shuts a connection down; it is dropped once its operations have completed.
    fn kill(&mut self, slot: usize) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        if !c.dead {
            c.dead = true;
            c.cur = None;
            c.out.clear();
            let _ = socket2::SockRef::from(&c.fd).shutdown(Shutdown::Both);
        }
        if !c.recv_busy && !c.send_busy && !c.disk_busy {
            self.conns[slot] = None;
            self.free.push(slot);
            self.shared.open.fetch_sub(1, Ordering::AcqRel);
            bump(&self.counters.closed);
        }
    }

    fn sweep(&mut self) {
        let s = &self.shared.settings;
        let (head_t, body_t, idle_t, send_t) = (
            s.head_timeout,
            s.body_timeout,
            s.idle_timeout,
            s.send_timeout,
        );
        let now = self.now;
        for i in 0..self.listeners.len() {
            if self.accept_paused[i].is_some_and(|t| now >= t) {
                self.accept_paused[i] = None;
                if let Err(e) = self.arm_accept(i) {
                    tracing::warn!(error = %e, "cache accept re-arm failed");
                    self.accept_paused[i] = Some(now + TICK);
                }
            }
        }
        for slot in 0..self.conns.len() {
            let Some(c) = self.conns[slot].as_ref() else {
                continue;
            };
            if c.dead {
                // Completions still owed; kill() frees it once they arrive.
                continue;
            }
            if let Some(l) = c.linger {
                if now >= l {
                    self.kill(slot);
                }
                continue;
            }
            if c.send_busy || !c.out.is_empty() {
                if now.duration_since(c.last_sent) >= send_t {
                    bump(&self.counters.timeouts_send);
                    self.kill(slot);
                }
                continue;
            }
            match &c.cur {
                Some(Current::Body(_)) => {
                    if now.duration_since(c.last_read) >= body_t {
                        bump(&self.counters.timeouts_body);
                        self.conn(slot).cur = None;
                        self.reject(slot, Reject::Timeout);
                        self.progress(slot);
                    }
                }
                Some(Current::Fetch(_) | Current::Disk(_)) => {}
                None => {
                    if let Some(t) = c.head_started {
                        if now.duration_since(t) >= head_t {
                            bump(&self.counters.timeouts_head);
                            self.reject(slot, Reject::Timeout);
                            self.progress(slot);
                        }
                    } else if now.duration_since(c.last_active) >= idle_t {
                        bump(&self.counters.timeouts_idle);
                        self.kill(slot);
                    }
                }
            }
        }
        self.flush_log(false);
    }

    fn flush_log(&mut self, force: bool) {
        if let Some(log) = &self.shared.access_log
            && (force
                || self.log_buf.len() >= FLUSH_AT
                || self.now.duration_since(self.last_flush) >= Duration::from_millis(250))
        {
            log.flush(&mut self.log_buf);
            self.last_flush = self.now;
        }
    }

    /// Parses and handles one request from the front of `rbuf`; returns the bytes
    /// consumed, or `None` when the head is incomplete.
    fn parse_one(&mut self, slot: usize, rbuf: &[u8]) -> Option<usize> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse_request(rbuf, &mut headers) {
            Ok(None) => {
                let c = self.conn(slot);
                if c.read_closed {
                    // The client closed mid-head: nothing more will come.
                    c.closing = true;
                }
                None
            }
            Err(r) => {
                self.reject(slot, r);
                Some(rbuf.len())
            }
            Ok(Some(req)) => {
                self.conn(slot).head_started = None;
                self.on_request(slot, &req);
                Some(req.head_len)
            }
        }
    }

    /// Answers a refused request and closes the connection after it.
    fn reject(&mut self, slot: usize, r: Reject) {
        bump(&self.counters.rejected_requests);
        let c = self.conn(slot);
        c.rbuf.clear();
        let msg = r.to_string();
        let now = self.now;
        self.error_response(slot, r.status(), &msg, None, now, true);
    }

    /// Writes a locally generated error response and logs the request.
    fn error_response(
        &mut self,
        slot: usize,
        status: u16,
        msg: &str,
        facts: Option<&Facts<'_>>,
        started: Instant,
        close: bool,
    ) {
        let body = format!("popnet: {msg}\n");
        let date = self.date.get(self.now_unix).to_string();
        let http10 = facts.is_some_and(|f| f.http10);
        let head_only = facts.is_some_and(|f| f.method == Method::Head);
        let close = close || facts.is_some_and(|f| !f.keep_alive);
        let c = self.conn(slot);
        c.resp_bytes = 0;
        c.reserve(body.len() + 256);
        write_head(
            &mut c.wbuf,
            status,
            None,
            Some(&date),
            None,
            None,
            Length::Known(body.len() as u64),
            &[("Content-Type", "text/plain; charset=utf-8")],
            close,
            http10,
        );
        if !head_only {
            c.wbuf.put_slice(body.as_bytes());
        }
        c.push_wbuf();
        if close {
            c.closing = true;
        }
        self.log(
            slot,
            facts,
            None,
            status,
            CacheStatus::Error,
            None,
            started,
            started.elapsed(),
            None,
        );
    }

    /// Counts and logs a finished response.
    #[allow(clippy::too_many_arguments)]
    fn log(
        &mut self,
        slot: usize,
        facts: Option<&Facts<'_>>,
        customer: Option<&str>,
        status: u16,
        cache: CacheStatus,
        origin: Option<&str>,
        started: Instant,
        ttfb: Duration,
        origin_us: Option<u64>,
    ) {
        let c = self.conn(slot);
        let bytes = c.resp_bytes;
        let peer = c.peer;
        self.counters.record(status, cache, bytes);
        if self.shared.access_log.is_none() {
            return;
        }
        let ts_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let rec = Record {
            ts_ms,
            pop: &self.shared.pop,
            customer: customer.unwrap_or("-"),
            client: peer,
            method: facts.map_or("-", |f| f.method.as_str()),
            host: facts.map_or("-", |f| f.host),
            path: facts.map_or("-", |f| f.target),
            status,
            bytes,
            cache,
            origin,
            ttfb_us: ttfb.as_micros() as u64,
            total_us: started.elapsed().as_micros() as u64,
            origin_us,
        };
        AccessLog::format(&mut self.log_buf, &rec);
        if self.log_buf.len() >= FLUSH_AT {
            self.flush_log(true);
        }
    }

    fn on_request(&mut self, slot: usize, req: &Request<'_, '_>) {
        let started = self.now;
        let mut host = std::mem::take(&mut self.host_buf);
        normalize_host_into(req.host, &mut host);
        let route = self
            .shared
            .routes
            .load()
            .find(&host)
            .cloned()
            .map_err(|e| e.to_string());
        if req.body != BodyFraming::None {
            let limit = self.shared.settings.max_request_body;
            let info = ReqInfo::from_request(req, &host, started);
            self.host_buf = host;
            if let BodyFraming::Length(n) = req.body
                && n > limit
            {
                let f = info.facts();
                self.reject_with(slot, Reject::BodyTooLarge, &f);
                return;
            }
            let c = self.conn(slot);
            let have = c.rbuf.len().saturating_sub(req.head_len);
            if req.expect_continue && !req.http10 && have == 0 {
                c.push(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"));
            }
            c.cur = Some(Current::Body(Box::new(BodyRead {
                info,
                route,
                length: match req.body {
                    BodyFraming::Length(n) => Some(n),
                    _ => None,
                },
                decoder: (req.body == BodyFraming::Chunked).then(|| ChunkedDecoder::new(limit)),
                collected: Vec::new(),
            })));
            return;
        }
        let facts = Facts {
            method: req.method,
            http10: req.http10,
            keep_alive: req.keep_alive,
            host: &host,
            target: req.target,
            range: req.header("range"),
            if_range: req.header("if-range"),
            inm: req.header("if-none-match"),
            ims: req.header("if-modified-since"),
            started,
        };
        match route {
            Err(msg) => self.error_response(slot, 421, &msg, Some(&facts), started, false),
            Ok(route) => {
                if matches!(req.method, Method::Get | Method::Head) {
                    self.cached(slot, req, &facts, &route, &host);
                } else {
                    let info = ReqInfo::from_request(req, &host, started);
                    self.start_pass(slot, info, route);
                }
            }
        }
        self.host_buf = host;
    }

    fn reject_with(&mut self, slot: usize, r: Reject, facts: &Facts<'_>) {
        bump(&self.counters.rejected_requests);
        let msg = r.to_string();
        self.error_response(slot, r.status(), &msg, Some(facts), facts.started, true);
    }

    /// GET and HEAD: answer from the store, or from a fetch.
    fn cached(
        &mut self,
        slot: usize,
        req: &Request<'_, '_>,
        facts: &Facts<'_>,
        route: &Arc<Route>,
        host: &str,
    ) {
        let primary = CacheKey::primary(host, req.target);
        let values = |n: &str| -> Vec<&[u8]> {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(n))
                .map(|h| h.value)
                .collect()
        };
        let (found, variant) = self.shared.store.lookup(&primary, values);
        let found = match found {
            Lookup::Hit(o) => Some(o),
            Lookup::Miss => None,
            Lookup::OnDisk(r) => {
                let info = ReqInfo::from_request(req, host, facts.started);
                let lock = variant.map_or_else(|| primary.clone(), |(k, _)| k);
                self.conn(slot).cur = Some(Current::Disk(Box::new(DiskReader {
                    info,
                    route: route.clone(),
                    primary,
                    lock,
                    state: DiskState::Load(r.load()),
                    reading: false,
                    landed: None,
                })));
                return;
            }
        };
        let now = self.now_unix;
        let (revalidate, stale) = match found {
            Some(o) if o.head.is_fresh(now) => {
                self.serve_object(slot, &o, CacheStatus::Hit, facts, &route.customer);
                return;
            }
            Some(o) if o.head.stale_while_revalidate_ok(now) => {
                self.serve_object(slot, &o, CacheStatus::Stale, facts, &route.customer);
                let info = ReqInfo::from_request(req, host, facts.started);
                let peer = self.conn_peer(slot);
                self.background_revalidate(o, &info, route, primary, peer);
                return;
            }
            Some(o) => (o.head.has_validator().then(|| o.clone()), Some(o)),
            None => (None, None),
        };
        let info = ReqInfo::from_request(req, host, facts.started);
        let lock = variant.map_or_else(|| primary.clone(), |(k, _)| k);
        self.start_fill(slot, info, route.clone(), primary, lock, revalidate, stale);
    }

    fn conn_peer(&mut self, slot: usize) -> SocketAddr {
        self.conn(slot).peer
    }

    fn background_revalidate(
        &mut self,
        o: Arc<StoredObject>,
        info: &ReqInfo,
        route: &Arc<Route>,
        primary: CacheKey,
        client: SocketAddr,
    ) {
        if let Acquired::Lead(fetch) = self.shared.misses.acquire(&o.key) {
            let job = FetchJob {
                fetch,
                route: route.clone(),
                req: info.origin_request(true, client),
                primary,
                revalidate: o.head.has_validator().then_some(o),
                authorized: info.authorized,
                purge_mark: self.shared.purges.mark(),
            };
            self.shared.fetchers.submit(job);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_fill(
        &mut self,
        slot: usize,
        info: ReqInfo,
        route: Arc<Route>,
        primary: CacheKey,
        lock: CacheKey,
        revalidate: Option<Arc<StoredObject>>,
        stale: Option<Arc<StoredObject>>,
    ) {
        let peer = self.conn_peer(slot);
        let mark = self.shared.purges.mark();
        let (fetch, lead) = match self.shared.misses.acquire(&lock) {
            Acquired::Lead(fetch) => {
                self.shared.fetchers.submit(FetchJob {
                    fetch: fetch.clone(),
                    route: route.clone(),
                    req: info.origin_request(true, peer),
                    primary: primary.clone(),
                    revalidate,
                    authorized: info.authorized,
                    purge_mark: mark,
                });
                (fetch, true)
            }
            Acquired::Follow(fetch) => {
                bump(&self.counters.coalesced);
                (fetch, false)
            }
            Acquired::Pass => {
                let fetch = Fetch::new(lock, true);
                self.shared.fetchers.submit(FetchJob {
                    fetch: fetch.clone(),
                    route: route.clone(),
                    req: info.origin_request(true, peer),
                    primary: primary.clone(),
                    revalidate: None,
                    authorized: info.authorized,
                    purge_mark: mark,
                });
                (fetch, true)
            }
        };
        self.attach(slot, fetch, lead, info, route, primary, stale);
    }

    /// Requests the cache does not answer itself (unsafe methods, OPTIONS).
    fn start_pass(&mut self, slot: usize, info: ReqInfo, route: Arc<Route>) {
        let peer = self.conn_peer(slot);
        let primary = CacheKey::primary(&info.host, &info.target);
        let fetch = Fetch::new(primary.clone(), true);
        self.shared.fetchers.submit(FetchJob {
            fetch: fetch.clone(),
            route: route.clone(),
            req: info.origin_request(false, peer),
            primary: primary.clone(),
            revalidate: None,
            authorized: info.authorized,
            purge_mark: self.shared.purges.mark(),
        });
        self.attach(slot, fetch, true, info, route, primary, None);
    }

    #[allow(clippy::too_many_arguments)]
    fn attach(
        &mut self,
        slot: usize,
        fetch: Arc<Fetch>,
        lead: bool,
        info: ReqInfo,
        route: Arc<Route>,
        primary: CacheKey,
        stale: Option<Arc<StoredObject>>,
    ) {
        let reader = fetch.join();
        self.conn(slot).cur = Some(Current::Fetch(Box::new(FetchReader {
            fetch,
            reader,
            lead,
            info,
            route,
            primary,
            stale,
            phase: Phase::Head,
            status: 0,
            cache: CacheStatus::Miss,
            origin: None,
            origin_us: None,
            ttfb_us: 0,
        })));
    }

    /// Writes (into `wbuf`, not yet queued) the head of a response from a stored
    /// object whose body is `len` bytes: 304 for matching conditionals, 206/416 for a
    /// range, HEAD without a body. Returns the status and the body bytes to send.
    fn object_head(
        &mut self,
        slot: usize,
        head: &ResponseHead,
        len: u64,
        cache: CacheStatus,
        f: &Facts<'_>,
    ) -> (u16, Option<std::ops::Range<u64>>) {
        let age = head.timing.current_age(self.now_unix);
        let close = !f.keep_alive;
        let c = self.conn(slot);
        c.resp_bytes = 0;
        c.reserve(head.block.len() + 192);
        if close {
            c.closing = true;
        }
        if head.not_modified_for(f.inm, f.ims) {
            write_head(
                &mut c.wbuf,
                304,
                Some(head),
                None,
                Some(age),
                Some(cache),
                Length::Omit,
                &[],
                close,
                f.http10,
            );
            return (304, None);
        }
        let range = match f.range {
            Some(r)
                if head.status == 200
                    && f.method == Method::Get
                    && f.if_range.is_none_or(|ir| head.if_range_holds(ir)) =>
            {
                resolve_range(r, len)
            }
            _ => RangeAsk::Full,
        };
        let (status, body) = match range {
            RangeAsk::Full => {
                let ar = head.status == 200 && head.field("accept-ranges").is_none();
                let extra: &[(&str, &str)] = if ar {
                    &[("Accept-Ranges", "bytes")]
                } else {
                    &[]
                };
                write_head(
                    &mut c.wbuf,
                    head.status,
                    Some(head),
                    None,
                    Some(age),
                    Some(cache),
                    Length::Known(len),
                    extra,
                    close,
                    f.http10,
                );
                (head.status, 0..len)
            }
            RangeAsk::Partial(r) => {
                let cr = format!("bytes {}-{}/{len}", r.start, r.end - 1);
                write_head(
                    &mut c.wbuf,
                    206,
                    Some(head),
                    None,
                    Some(age),
                    Some(cache),
                    Length::Known(r.end - r.start),
                    &[("Content-Range", &cr)],
                    close,
                    f.http10,
                );
                (206, r.start..r.end)
            }
            RangeAsk::Unsatisfiable => {
                let cr = format!("bytes */{len}");
                write_head(
                    &mut c.wbuf,
                    416,
                    Some(head),
                    None,
                    Some(age),
                    Some(cache),
                    Length::Known(0),
                    &[("Content-Range", &cr)],
                    close,
                    f.http10,
                );
                (416, 0..0)
            }
        };
        let send = f.method != Method::Head && !body.is_empty();
        (status, send.then_some(body))
    }

    /// Serves a stored object (conditionals, ranges and HEAD included) in full.
    fn serve_object(
        &mut self,
        slot: usize,
        o: &StoredObject,
        cache: CacheStatus,
        f: &Facts<'_>,
        customer: &str,
    ) {
        let (status, range) = self.object_head(slot, &o.head, o.body.len() as u64, cache, f);
        let c = self.conn(slot);
        match range {
            None => c.push_wbuf(),
            Some(r) => {
                let body = o.body.slice(r.start as usize..r.end as usize);
                if body.len() <= COPY_BODY {
                    c.reserve(body.len());
                    c.wbuf.put_slice(&body);
                    c.push_wbuf();
                } else {
                    c.push_wbuf();
                    c.push(body);
                }
            }
        }
        let ttfb = f.started.elapsed();
        self.log(
            slot,
            Some(f),
            Some(customer),
            status,
            cache,
            None,
            f.started,
            ttfb,
            None,
        );
    }

    /// Returns a disk buffer and resumes a connection that waits for one.
    fn give_buf(&mut self, buf: BufId) {
        self.ring.put_buf(buf);
        if let Some(t) = self.buf_waiters.pop_front() {
            self.buf_ready.push(t);
        }
    }

    /// Takes back disk buffers whose bytes are no longer referenced (sent, or
    /// dropped), resuming as many waiting connections.
    fn reclaim_bufs(&mut self) {
        for _ in 0..self.ring.free_buffers() {
            match self.buf_waiters.pop_front() {
                Some(t) => self.buf_ready.push(t),
                None => break,
            }
        }
    }

    /// A disk read of connection `slot` completed.
    fn disk_landed(&mut self, slot: usize, buf: BufId, result: io::Result<usize>) {
        let c = self.conn(slot);
        c.disk_busy = false;
        if c.dead {
            self.give_buf(buf);
            self.kill(slot);
            return;
        }
        match c.cur.as_mut() {
            Some(Current::Disk(d)) => {
                d.reading = false;
                d.landed = Some((buf, result));
            }
            _ => {
                self.give_buf(buf);
                return;
            }
        }
        self.progress(slot);
    }

    /// Issues a disk read for `slot`; `Ok(false)` when no buffer is free (the
    /// connection is resumed when one is).
    fn disk_read(&mut self, slot: usize, ask: ReadAsk) -> Result<bool, LoadError> {
        let Some(buf) = self.ring.take_buf() else {
            let c = self.conn(slot);
            let t = token(slot, c.generation);
            if !self.buf_waiters.contains(&t) {
                self.buf_waiters.push_back(t);
            }
            return Ok(false);
        };
        let c = self.conn(slot);
        let tag = KIND_DISK | token(slot, c.generation);
        self.ring.submit(
            tag,
            Op::ReadFixed {
                fd: ask.fd,
                offset: ask.offset,
                buf,
                len: ask.len,
            },
        )?;
        self.conn(slot).disk_busy = true;
        Ok(true)
    }

    /// Advances a response from the disk tier.
    fn advance_disk(&mut self, slot: usize, mut d: Box<DiskReader>) -> Step {
        if let Some((buf, result)) = d.landed.take() {
            let data = match result {
                // Lent while buffers are plentiful; copied when they run short, so
                // clients that do not read cannot hold every buffer of the worker.
                Ok(n) if self.ring.free_buffers() >= DISK_BUFS / 4 => Ok(self.ring.lend(buf, n)),
                Ok(n) => {
                    let copy = Bytes::copy_from_slice(&self.ring.buf(&buf)[..n.min(IO_BUF)]);
                    self.give_buf(buf);
                    Ok(copy)
                }
                Err(e) => {
                    self.give_buf(buf);
                    Err(LoadError::Io(e))
                }
            };
            match &mut d.state {
                DiskState::Load(load) => {
                    let r = data.and_then(|b| load.on_read(b));
                    self.reclaim_bufs();
                    match r {
                        Ok(None) => {}
                        Ok(Some(Loaded::Whole { obj, vary, promote })) => {
                            if promote {
                                self.shared.store.promote(obj.clone(), vary);
                            }
                            return self.disk_object(slot, d, obj);
                        }
                        Ok(Some(Loaded::Stream(head))) => {
                            return self.disk_stream_start(slot, d, head);
                        }
                        Err(e) => {
                            load.disk_ref().failed(&e);
                            return self.disk_miss(slot, d);
                        }
                    }
                }
                DiskState::Stream {
                    stream,
                    head,
                    status,
                    ttfb_us,
                } => {
                    let r = data.and_then(|b| stream.on_read(b));
                    self.reclaim_bufs();
                    match r {
                        Ok(chunk) => {
                            let c = self.conn(slot);
                            if let Some(h) = head.take() {
                                c.push(h);
                                *ttfb_us = d.info.started.elapsed().as_micros() as u64;
                            }
                            c.push(chunk);
                        }
                        Err(e) => {
                            stream.failed(&e);
                            if head.is_some() {
                                // Nothing sent yet: fetch it instead.
                                return self.disk_miss(slot, d);
                            }
                            // The head is out: close without completing the body.
                            tracing::debug!(error = %e, "disk stream failed mid-body");
                            let status = *status;
                            self.conn(slot).closing = true;
                            self.disk_done(slot, &d, status.max(1), 0);
                            return Step::Done;
                        }
                    }
                }
            }
        }
        if d.reading {
            self.conn(slot).cur = Some(Current::Disk(d));
            return Step::Blocked;
        }
        let ask = match &mut d.state {
            DiskState::Load(load) => load.next_read(IO_BUF),
            DiskState::Stream {
                stream,
                status,
                ttfb_us,
                ..
            } => {
                if stream.done() {
                    let (status, ttfb) = (*status, *ttfb_us);
                    self.disk_done(slot, &d, status, ttfb);
                    return Step::Done;
                }
                if self.conn(slot).out_bytes > HIGH_WATER {
                    self.conn(slot).cur = Some(Current::Disk(d));
                    return Step::Blocked;
                }
                stream.next_read()
            }
        };
        match self.disk_read(slot, ask) {
            Ok(started) => {
                d.reading = started;
                self.conn(slot).cur = Some(Current::Disk(d));
                Step::Blocked
            }
            Err(e) => {
                match &d.state {
                    DiskState::Load(load) => load.disk_ref().failed(&e),
                    DiskState::Stream { stream, .. } => stream.failed(&e),
                }
                if matches!(&d.state, DiskState::Stream { head: None, .. }) {
                    self.conn(slot).closing = true;
                    self.disk_done(slot, &d, 1, 0);
                    return Step::Done;
                }
                self.disk_miss(slot, d)
            }
        }
    }

    /// The disk gave nothing usable: fetch from the origin like any miss.
    fn disk_miss(&mut self, slot: usize, d: Box<DiskReader>) -> Step {
        let DiskReader {
            info,
            route,
            primary,
            lock,
            ..
        } = *d;
        let c = self.conn(slot);
        c.wbuf.clear();
        c.resp_bytes = 0;
        self.start_fill(slot, info, route, primary, lock, None, None);
        self.advance(slot)
    }

    /// A whole object read from disk: served like a RAM hit (fresh, stale while
    /// revalidating, or revalidated/refetched).
    fn disk_object(&mut self, slot: usize, d: Box<DiskReader>, o: Arc<StoredObject>) -> Step {
        let now = self.now_unix;
        let DiskReader {
            info,
            route,
            primary,
            lock,
            ..
        } = *d;
        if o.head.is_fresh(now) {
            let f = info.facts();
            self.serve_object(slot, &o, CacheStatus::Hit, &f, &route.customer);
            return Step::Done;
        }
        // Kept beyond this response (revalidation): off the read buffer.
        let o = Arc::new(StoredObject::new(
            o.key.clone(),
            o.primary,
            o.customer.clone(),
            o.head.clone(),
            Bytes::copy_from_slice(&o.body),
            o.stored_at,
        ));
        if o.head.stale_while_revalidate_ok(now) {
            let f = info.facts();
            self.serve_object(slot, &o, CacheStatus::Stale, &f, &route.customer);
            let peer = self.conn_peer(slot);
            self.background_revalidate(o, &info, &route, primary, peer);
            return Step::Done;
        }
        let revalidate = o.head.has_validator().then(|| o.clone());
        self.start_fill(slot, info, route, primary, lock, revalidate, Some(o));
        self.advance(slot)
    }

    /// The verified head of a large object on disk: answer conditionals, ranges and
    /// HEAD, and set up the stream of the body. A stale one is fetched again (its body
    /// is not in memory to revalidate with).
    fn disk_stream_start(
        &mut self,
        slot: usize,
        mut d: Box<DiskReader>,
        sh: crate::store::disk::StreamHead,
    ) -> Step {
        if !sh.head.is_fresh(self.now_unix) {
            return self.disk_miss(slot, d);
        }
        let f = d.info.facts();
        let (status, range) = self.object_head(slot, &sh.head, sh.body_len, CacheStatus::Hit, &f);
        let Some(range) = range else {
            self.conn(slot).push_wbuf();
            let ttfb = d.info.started.elapsed().as_micros() as u64;
            self.disk_done(slot, &d, status, ttfb);
            return Step::Done;
        };
        let Some(stream) = sh.stream(range.start, range.end) else {
            return self.disk_miss(slot, d);
        };
        let head = self.conn(slot).wbuf.split().freeze();
        d.state = DiskState::Stream {
            stream,
            head: Some(head),
            status,
            ttfb_us: 0,
        };
        self.advance_disk(slot, d)
    }

    /// Logs a response served from the disk tier.
    fn disk_done(&mut self, slot: usize, d: &DiskReader, status: u16, ttfb_us: u64) {
        let f = d.info.facts();
        let ttfb = if ttfb_us > 0 {
            Duration::from_micros(ttfb_us)
        } else {
            f.started.elapsed()
        };
        self.log(
            slot,
            Some(&f),
            Some(&d.route.customer),
            status,
            CacheStatus::Hit,
            None,
            f.started,
            ttfb,
            None,
        );
    }

    /// Advances the request in progress.
    fn advance(&mut self, slot: usize) -> Step {
        let Some(cur) = self.conn(slot).cur.take() else {
            return Step::Done;
        };
        match cur {
            Current::Body(b) => self.advance_body(slot, b),
            Current::Fetch(r) => self.advance_fetch(slot, r),
            Current::Disk(d) => self.advance_disk(slot, d),
        }
    }

    fn advance_body(&mut self, slot: usize, mut b: Box<BodyRead>) -> Step {
        let c = self.conn(slot);
        let input = std::mem::take(&mut c.rbuf);
        let used = match (&mut b.decoder, b.length) {
            (Some(dec), _) => {
                let collected = &mut b.collected;
                match dec.decode(&input, |d| collected.extend_from_slice(d)) {
                    Ok(n) => Some(n),
                    Err(crate::http::ChunkError::TooLarge) => None,
                    Err(_) => {
                        self.conn(slot).rbuf = input;
                        self.reject(slot, Reject::BadRequest("malformed chunked body"));
                        return Step::Done;
                    }
                }
            }
            (None, Some(n)) => {
                let want = (n as usize)
                    .saturating_sub(b.collected.len())
                    .min(input.len());
                b.collected.extend_from_slice(&input[..want]);
                Some(want)
            }
            (None, None) => Some(0),
        };
        let c = self.conn(slot);
        c.rbuf = input;
        let Some(used) = used else {
            let f = b.info.facts();
            self.reject_with(slot, Reject::BodyTooLarge, &f);
            return Step::Done;
        };
        c.rbuf.drain(..used);
        let complete = match (&b.decoder, b.length) {
            (Some(d), _) => d.is_done(),
            (None, Some(n)) => b.collected.len() as u64 >= n,
            (None, None) => true,
        };
        if !complete {
            if c.read_closed {
                c.closing = true;
                return Step::Done;
            }
            c.cur = Some(Current::Body(b));
            return Step::Blocked;
        }
        let BodyRead {
            mut info,
            route,
            collected,
            ..
        } = *b;
        info.body = Bytes::from(collected);
        match route {
            Err(msg) => {
                let f = info.facts();
                self.error_response(slot, 421, &msg, Some(&f), info.started, false);
                Step::Done
            }
            Ok(route) => {
                if matches!(info.method, Method::Get | Method::Head) {
                    // A body on GET/HEAD has no meaning for the cache: read and dropped.
                    info.body = Bytes::new();
                    let primary = CacheKey::primary(&info.host, &info.target);
                    self.start_fill(slot, info, route, primary.clone(), primary, None, None);
                } else {
                    self.start_pass(slot, info, route);
                }
                // The fetch continues from the connection's new current request.
                self.advance(slot)
            }
        }
    }

    fn advance_fetch(&mut self, slot: usize, mut r: Box<FetchReader>) -> Step {
        let waker = self.waker(slot);
        loop {
            match r.phase {
                Phase::Head => {
                    let fh = match r.fetch.poll_head(&waker) {
                        HeadPoll::Pending => {
                            self.conn(slot).cur = Some(Current::Fetch(r));
                            return Step::Blocked;
                        }
                        HeadPoll::Failed(e) => return self.fetch_failed(slot, r, e),
                        HeadPoll::Ready(fh) => fh,
                    };
                    r.origin = Some(fh.origin.clone());
                    r.origin_us = Some(fh.ttfb.as_micros() as u64);
                    let mismatch = !r.lead
                        && (!fh.shareable
                            || fh.variant.as_ref().is_some_and(|v| {
                                let names: Vec<Box<str>> = match &fh.head.vary {
                                    crate::object::Vary::Fields(n) => n.to_vec(),
                                    _ => Vec::new(),
                                };
                                r.primary.variant(&names, |n| r.info.values(n)) != *v
                            }));
                    if mismatch {
                        // Not a response this request may share: fetch its own.
                        r = self.refetch(slot, r);
                        continue;
                    }
                    let now = self.now_unix;
                    if fh.head.status >= 500
                        && let Some(s) = r.stale.clone()
                        && s.head.stale_if_error_ok(now)
                    {
                        let f = r.info.facts();
                        self.serve_object(slot, &s, CacheStatus::Stale, &f, &r.route.customer);
                        return Step::Done;
                    }
                    r.cache = if r.fetch.pass || !fh.shareable {
                        CacheStatus::Pass
                    } else if fh.revalidated {
                        CacheStatus::Revalidated
                    } else {
                        CacheStatus::Miss
                    };
                    return self.start_fetched_response(slot, r, fh.head);
                }
                Phase::Body {
                    mut offset,
                    end,
                    chunked,
                } => {
                    if self.conn(slot).out_bytes > HIGH_WATER {
                        self.conn(slot).cur = Some(Current::Fetch(r));
                        return Step::Blocked;
                    }
                    match r.fetch.poll_body(r.reader, offset, &waker) {
                        BodyPoll::Pending => {
                            r.phase = Phase::Body {
                                offset,
                                end,
                                chunked,
                            };
                            self.conn(slot).cur = Some(Current::Fetch(r));
                            return Step::Blocked;
                        }
                        BodyPoll::Data(chunks) => {
                            let c = self.conn(slot);
                            for mut d in chunks {
                                if let Some(e) = end {
                                    let room = e.saturating_sub(offset);
                                    if (d.len() as u64) > room {
                                        d.truncate(room as usize);
                                    }
                                }
                                if d.is_empty() {
                                    continue;
                                }
                                offset += d.len() as u64;
                                if chunked {
                                    c.reserve(24);
                                    let _ = write!((&mut c.wbuf).writer(), "{:x}\r\n", d.len());
                                    c.push_wbuf();
                                    c.push(d);
                                    c.push(Bytes::from_static(b"\r\n"));
                                } else {
                                    c.push(d);
                                }
                            }
                            r.phase = Phase::Body {
                                offset,
                                end,
                                chunked,
                            };
                            if end.is_some_and(|e| offset >= e) {
                                self.finish_fetched(slot, &r);
                                return Step::Done;
                            }
                        }
                        BodyPoll::End => {
                            if chunked {
                                self.conn(slot).push(Bytes::from_static(b"0\r\n\r\n"));
                            }
                            self.finish_fetched(slot, &r);
                            return Step::Done;
                        }
                        BodyPoll::Failed(e) => {
                            // The head is sent: the only honest signal left is to
                            // close without completing the body.
                            tracing::debug!(error = %e, "origin failed mid-body");
                            self.conn(slot).closing = true;
                            r.status = r.status.max(1);
                            self.finish_fetched(slot, &r);
                            return Step::Done;
                        }
                    }
                }
            }
        }
    }

    /// Replaces a follower's fetch by a fetch of its own (not coalesced, not stored).
    fn refetch(&mut self, slot: usize, r: Box<FetchReader>) -> Box<FetchReader> {
        let peer = self.conn_peer(slot);
        let FetchReader {
            ref info,
            ref route,
            ref primary,
            ref stale,
            ..
        } = *r;
        let fetch = Fetch::new(primary.clone(), true);
        let req = OriginRequest {
            body: Bytes::new(),
            ..info.origin_request(true, peer)
        };
        self.shared.fetchers.submit(FetchJob {
            fetch: fetch.clone(),
            route: route.clone(),
            req,
            primary: primary.clone(),
            revalidate: None,
            authorized: info.authorized,
            purge_mark: self.shared.purges.mark(),
        });
        let reader = fetch.join();
        let mut info2 = ReqInfo {
            fields: info.fields.clone(),
            body: info.body.clone(),
            host: info.host.clone(),
            host_raw: info.host_raw.clone(),
            target: info.target.clone(),
            range: info.range.clone(),
            if_range: info.if_range.clone(),
            inm: info.inm.clone(),
            ims: info.ims.clone(),
            ..*info
        };
        info2.restarts += 1;
        Box::new(FetchReader {
            fetch,
            reader,
            lead: true,
            info: info2,
            route: route.clone(),
            primary: primary.clone(),
            stale: stale.clone(),
            phase: Phase::Head,
            status: 0,
            cache: CacheStatus::Pass,
            origin: None,
            origin_us: None,
            ttfb_us: 0,
        })
    }

    fn fetch_failed(&mut self, slot: usize, r: Box<FetchReader>, e: FetchError) -> Step {
        let now = self.now_unix;
        let f = r.info.facts();
        if let Some(s) = r.stale.clone()
            && s.head.stale_if_error_ok(now)
        {
            self.serve_object(slot, &s, CacheStatus::Stale, &f, &r.route.customer);
            return Step::Done;
        }
        let msg = format!("{} for {}", e, r.route.customer);
        let status = e.status();
        // error_response logs without the customer: log here instead.
        let body = format!("popnet: {msg}\n");
        let date = self.date.get(self.now_unix).to_string();
        let close = !f.keep_alive;
        let c = self.conn(slot);
        c.resp_bytes = 0;
        c.reserve(body.len() + 256);
        write_head(
            &mut c.wbuf,
            status,
            None,
            Some(&date),
            None,
            Some(CacheStatus::Error),
            Length::Known(body.len() as u64),
            &[("Content-Type", "text/plain; charset=utf-8")],
            close,
            f.http10,
        );
        if f.method != Method::Head {
            c.wbuf.put_slice(body.as_bytes());
        }
        c.push_wbuf();
        if close {
            c.closing = true;
        }
        let ttfb = f.started.elapsed();
        self.log(
            slot,
            Some(&f),
            Some(&r.route.customer),
            status,
            CacheStatus::Error,
            None,
            f.started,
            ttfb,
            None,
        );
        Step::Done
    }

    /// Writes the head of a response coming from a fetch and sets up its body.
    fn start_fetched_response(
        &mut self,
        slot: usize,
        mut r: Box<FetchReader>,
        head: Arc<ResponseHead>,
    ) -> Step {
        let f = r.info.facts();
        let close = !f.keep_alive;
        let age = head.timing.current_age(self.now_unix);
        let ended = r.fetch.ended() == Some(true);
        let known = head
            .content_length
            .filter(|_| !(r.cache == CacheStatus::Revalidated && ended))
            .or_else(|| ended.then(|| r.fetch.received()));
        let cache = r.cache;
        let no_body = matches!(head.status, 204 | 304) || (100..200).contains(&head.status);
        let cacheable_method = matches!(f.method, Method::Get | Method::Head);
        let c = self.conn(slot);
        c.resp_bytes = 0;
        c.reserve(head.block.len() + 192);
        // Client conditionals on a response the cache fetched for it.
        if cacheable_method && cache != CacheStatus::Pass && head.not_modified_for(f.inm, f.ims) {
            write_head(
                &mut c.wbuf,
                304,
                Some(&head),
                None,
                Some(age),
                Some(cache),
                Length::Omit,
                &[],
                close,
                f.http10,
            );
            c.push_wbuf();
            if close {
                c.closing = true;
            }
            r.status = 304;
            self.finish_fetched(slot, &r);
            return Step::Done;
        }
        if f.method == Method::Head || no_body {
            let len = if no_body {
                Length::Omit
            } else {
                known.map_or(Length::Omit, Length::Known)
            };
            write_head(
                &mut c.wbuf,
                head.status,
                Some(&head),
                None,
                Some(age),
                Some(cache),
                len,
                &[],
                close,
                f.http10,
            );
            c.push_wbuf();
            if close {
                c.closing = true;
            }
            r.status = head.status;
            self.finish_fetched(slot, &r);
            return Step::Done;
        }
        // A single range of a full response whose length is known.
        if let (Some(range), Some(len), 200, Method::Get) = (f.range, known, head.status, f.method)
            && cache != CacheStatus::Pass
            && f.if_range.is_none_or(|ir| head.if_range_holds(ir))
        {
            match resolve_range(range, len) {
                RangeAsk::Partial(rg) => {
                    let cr = format!("bytes {}-{}/{len}", rg.start, rg.end - 1);
                    write_head(
                        &mut c.wbuf,
                        206,
                        Some(&head),
                        None,
                        Some(age),
                        Some(cache),
                        Length::Known(rg.end - rg.start),
                        &[("Content-Range", &cr)],
                        close,
                        f.http10,
                    );
                    c.push_wbuf();
                    if close {
                        c.closing = true;
                    }
                    r.status = 206;
                    r.ttfb_us = f.started.elapsed().as_micros() as u64;
                    r.phase = Phase::Body {
                        offset: rg.start,
                        end: Some(rg.end),
                        chunked: false,
                    };
                    return self.advance_fetch(slot, r);
                }
                RangeAsk::Unsatisfiable => {
                    let cr = format!("bytes */{len}");
                    write_head(
                        &mut c.wbuf,
                        416,
                        Some(&head),
                        None,
                        Some(age),
                        Some(cache),
                        Length::Known(0),
                        &[("Content-Range", &cr)],
                        close,
                        f.http10,
                    );
                    c.push_wbuf();
                    if close {
                        c.closing = true;
                    }
                    r.status = 416;
                    self.finish_fetched(slot, &r);
                    return Step::Done;
                }
                RangeAsk::Full => {}
            }
        }
        let (length, chunked, end) = match known {
            Some(n) => (Length::Known(n), false, Some(n)),
            None if f.http10 => (Length::Close, false, None),
            None => (Length::Chunked, true, None),
        };
        let ar = head.status == 200
            && cache != CacheStatus::Pass
            && head.field("accept-ranges").is_none();
        let extra: &[(&str, &str)] = if ar {
            &[("Accept-Ranges", "bytes")]
        } else {
            &[]
        };
        let close_after = close || matches!(length, Length::Close);
        write_head(
            &mut c.wbuf,
            head.status,
            Some(&head),
            None,
            Some(age),
            Some(cache),
            length,
            extra,
            close,
            f.http10,
        );
        c.push_wbuf();
        if close_after {
            c.closing = true;
        }
        r.status = head.status;
        r.ttfb_us = f.started.elapsed().as_micros() as u64;
        if end == Some(0) {
            self.finish_fetched(slot, &r);
            return Step::Done;
        }
        r.phase = Phase::Body {
            offset: 0,
            end,
            chunked,
        };
        self.advance_fetch(slot, r)
    }

    fn finish_fetched(&mut self, slot: usize, r: &FetchReader) {
        let f = r.info.facts();
        let ttfb = if r.ttfb_us > 0 {
            Duration::from_micros(r.ttfb_us)
        } else {
            f.started.elapsed()
        };
        self.log(
            slot,
            Some(&f),
            Some(&r.route.customer),
            r.status,
            r.cache,
            r.origin.as_deref(),
            f.started,
            ttfb,
            r.origin_us,
        );
    }
}
