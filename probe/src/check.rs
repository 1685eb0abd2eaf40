//! One service check against one address as a non-blocking state machine: TCP connect, HTTP GET, DNS query.
//!
//! An [`Attempt`] owns one socket, registered with a mio [`Registry`]; the caller feeds
//! it readiness events ([`Attempt::advance`]) until it returns an [`Outcome`], and
//! enforces the timeout itself (a check that is still pending at its deadline failed).
//!
//! * TCP: passes when the connection is established (with `refused_ok`, a refusal —
//!   a RST — passes too: the host answered).
//! * HTTP: connect, `GET path HTTP/1.1` with `Connection: close`, read the head (status
//!   must be `expect_status`), then the body to its end (Content-Length, chunked, or the
//!   close). With a content check, the body (at most [`MAX_CHECKED_BODY`] bytes) must
//!   contain `body_contains` and/or hash (xxh3-64) to `body_xxh3`; without one, at most
//!   that many body bytes are read and the check passes there.
//! * DNS: one UDP query (type A, RD clear) for the check's name; any response with the
//!   query's id passes (with `refused_ok`, an ICMP port unreachable passes too).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use popnet_config::{Check, CheckKind};

/// Body bytes an HTTP check reads (and keeps, when it checks them).
pub const MAX_CHECKED_BODY: usize = 1 << 20;
/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// What to check, resolved from a config [`Check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckSpec {
    Tcp {
        /// A refused connection counts as an answer (latency probes).
        refused_ok: bool,
    },
    Http(HttpCheck),
    Dns {
        /// The query's question section (name, type A, class IN) after the header.
        question: Vec<u8>,
        /// An ICMP port unreachable counts as an answer (latency probes).
        refused_ok: bool,
    },
}

/// An HTTP GET and what its answer must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    pub path: String,
    /// `Host` header; `None` = the address probed.
    pub host: Option<String>,
    pub expect_status: u16,
    pub body_contains: Option<Vec<u8>>,
    pub body_xxh3: Option<u64>,
    /// Extra header lines (e.g. `Authorization: Bearer ...`), each without CRLF.
    pub headers: Vec<String>,
    /// Hand the body back in the [`Outcome`] (the load agent reads the cache's stats).
    pub keep_body: bool,
}

impl HttpCheck {
    /// A plain `GET path` expecting 200.
    pub fn get(path: &str) -> HttpCheck {
        HttpCheck {
            path: path.to_string(),
            host: None,
            expect_status: 200,
            body_contains: None,
            body_xxh3: None,
            headers: Vec::new(),
            keep_body: false,
        }
    }

    fn checks_body(&self) -> bool {
        self.body_contains.is_some() || self.body_xxh3.is_some() || self.keep_body
    }
}

/// Why a config check cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    #[error("body_xxh3 {0:?} is not 16 hex digits")]
    BadXxh3(String),
    #[error("query_name {0:?} is not a DNS name: {1}")]
    BadName(String, String),
    #[error("a dns check needs query_name")]
    NoQueryName,
}

impl CheckSpec {
    /// The spec of a config check; `None` for `kind = "none"` (never probed).
    pub fn from_config(c: &Check) -> Result<Option<CheckSpec>, CheckError> {
        Ok(Some(match c.kind {
            CheckKind::None => return Ok(None),
            CheckKind::Tcp => CheckSpec::Tcp { refused_ok: false },
            CheckKind::Http => CheckSpec::Http(HttpCheck {
                path: c.path.clone(),
                host: c.host.clone(),
                expect_status: c.expect_status,
                body_contains: c.body_contains.as_ref().map(|s| s.as_bytes().to_vec()),
                body_xxh3: match &c.body_xxh3 {
                    Some(h) if h.len() == 16 => Some(
                        u64::from_str_radix(h, 16).map_err(|_| CheckError::BadXxh3(h.clone()))?,
                    ),
                    Some(h) => return Err(CheckError::BadXxh3(h.clone())),
                    None => None,
                },
                headers: Vec::new(),
                keep_body: false,
            }),
            CheckKind::Dns => {
                let name = c.query_name.as_deref().ok_or(CheckError::NoQueryName)?;
                CheckSpec::Dns {
                    question: dns_question(name)?,
                    refused_ok: false,
                }
            }
        }))
    }

    /// Short name for logs and stats.
    pub fn kind(&self) -> &'static str {
        match self {
            CheckSpec::Tcp { .. } => "tcp",
            CheckSpec::Http(_) => "http",
            CheckSpec::Dns { .. } => "dns",
        }
    }
}

/// The question section for `name`, type A, class IN.
pub fn dns_question(name: &str) -> Result<Vec<u8>, CheckError> {
    let n = dns_wire::Name::from_ascii(name)
        .map_err(|e| CheckError::BadName(name.to_string(), e.to_string()))?;
    let mut enc = dns_wire::Encoder::new();
    enc.put_question(&dns_wire::Question {
        name: n,
        qtype: dns_wire::RType::A,
        qclass: dns_wire::RClass::IN,
    });
    Ok(enc.into_bytes())
}

/// A body's xxh3-64 as `body_xxh3` is written in a config: 16 hex digits.
pub fn body_xxh3_hex(body: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(body))
}

/// How a check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `Err(reason)` when the check failed.
    pub result: Result<(), String>,
    /// Time to the established connection (TCP and HTTP).
    pub connect: Option<Duration>,
    /// Time to the first response byte (HTTP).
    pub first_byte: Option<Duration>,
    /// Time to the last byte: the whole check.
    pub total: Duration,
    /// HTTP status.
    pub status: Option<u16>,
    /// The body, for an [`HttpCheck`] with `keep_body`.
    pub body: Option<Vec<u8>>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.result.is_ok()
    }

    /// A failure after `total` with no figures.
    pub fn failed(total: Duration, why: impl Into<String>) -> Outcome {
        Outcome {
            result: Err(why.into()),
            connect: None,
            first_byte: None,
            total,
            status: None,
            body: None,
        }
    }
}

enum Sock {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Sending,
    Reading,
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
    None,
}

/// One check in flight.
pub struct Attempt {
    sock: Sock,
    addr: SocketAddr,
    started: Instant,
    phase: Phase,
    connected: Option<Duration>,
    first_byte: Option<Duration>,
    /// DNS: the query id. HTTP: the request bytes and how many were written.
    dns_id: u16,
    request: Vec<u8>,
    written: usize,
    /// HTTP response bytes read so far (head, then raw body).
    buf: Vec<u8>,
    head_len: Option<usize>,
    status: Option<u16>,
    framing: Framing,
    /// Chunked: the decoded body and where decoding stands in `buf`.
    body: Vec<u8>,
    chunk_pos: usize,
    body_bytes: usize,
}

impl Attempt {
    /// Opens the socket and starts the check against `addr`. An error here is a local
    /// failure (no socket, no route), not the target's; a refused connection that the
    /// kernel reports at once is returned as a finished outcome.
    pub fn start(
        addr: SocketAddr,
        spec: &CheckSpec,
        id_seed: u64,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Result<Attempt, Outcome>> {
        let started = Instant::now();
        let mut a = Attempt {
            sock: match spec {
                CheckSpec::Tcp { .. } | CheckSpec::Http(_) => match TcpStream::connect(addr) {
                    Ok(s) => Sock::Tcp(s),
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        return Ok(Err(refused(spec, started)));
                    }
                    Err(e) => return Err(e),
                },
                CheckSpec::Dns { .. } => {
                    let local: SocketAddr = match addr.ip() {
                        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                    };
                    let s = UdpSocket::bind(local)?;
                    s.connect(addr)?;
                    Sock::Udp(s)
                }
            },
            addr,
            started,
            phase: Phase::Connecting,
            connected: None,
            first_byte: None,
            dns_id: (id_seed ^ (id_seed >> 16) ^ (id_seed >> 32) ^ (id_seed >> 48)) as u16,
            request: Vec::new(),
            written: 0,
            buf: Vec::new(),
            head_len: None,
            status: None,
            framing: Framing::None,
            body: Vec::new(),
            chunk_pos: 0,
            body_bytes: 0,
        };
        match &mut a.sock {
            Sock::Tcp(s) => registry.register(s, token, Interest::READABLE | Interest::WRITABLE)?,
            Sock::Udp(s) => {
                registry.register(s, token, Interest::READABLE)?;
                let CheckSpec::Dns { question, .. } = spec else {
                    unreachable!("a UDP socket is only opened for a DNS check")
                };
                let mut q = dns_wire::Header {
                    id: a.dns_id,
                    flags: 0,
                    qdcount: 1,
                    ..dns_wire::Header::default()
                }
                .to_bytes()
                .to_vec();
                q.extend_from_slice(question);
                match s.send(&q) {
                    Ok(_) => a.phase = Phase::Reading,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        let _ = registry.deregister(s);
                        return Ok(Err(refused(spec, started)));
                    }
                    Err(e) => {
                        let _ = registry.deregister(s);
                        return Err(e);
                    }
                }
            }
        }
        Ok(Ok(a))
    }

    /// When the check started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Takes the socket out of `registry` (before dropping the attempt).
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = match &mut self.sock {
            Sock::Tcp(s) => registry.deregister(s),
            Sock::Udp(s) => registry.deregister(s),
        };
    }

    /// The failure at the deadline, naming the phase it was stuck in.
    pub fn timed_out(&self, spec: &CheckSpec) -> Outcome {
        let what = match (spec, self.phase) {
            (CheckSpec::Dns { .. }, _) => "no DNS response",
            (_, Phase::Connecting) => "connect timed out",
            (_, Phase::Sending) => "request not taken in time",
            (_, Phase::Reading) if self.head_len.is_none() => "no response head in time",
            (_, Phase::Reading) => "response body not complete in time",
        };
        let mut o = Outcome::failed(self.started.elapsed(), format!("{what} ({})", self.addr));
        o.connect = self.connected;
        o.first_byte = self.first_byte;
        o.status = self.status;
        o
    }

    /// Makes as much progress as the socket allows; `Some` when the check is over.
    pub fn advance(&mut self, spec: &CheckSpec) -> Option<Outcome> {
        let r = match spec {
            CheckSpec::Tcp { refused_ok } => self.advance_tcp(*refused_ok),
            CheckSpec::Http(h) => self.advance_http(h),
            CheckSpec::Dns { refused_ok, .. } => self.advance_dns(*refused_ok),
        };
        match r {
            Ok(done) => done,
            Err(e) => Some(self.fail(format!("{e} ({})", self.addr))),
        }
    }

    fn fail(&self, why: String) -> Outcome {
        let mut o = Outcome::failed(self.started.elapsed(), why);
        o.connect = self.connected;
        o.first_byte = self.first_byte;
        o.status = self.status;
        o
    }

    fn pass(&self, body: Option<Vec<u8>>) -> Outcome {
        Outcome {
            result: Ok(()),
            connect: self.connected,
            first_byte: self.first_byte,
            total: self.started.elapsed(),
            status: self.status,
            body,
        }
    }

    /// Connecting: `Ok(true)` once established.
    fn connect_done(&mut self) -> io::Result<bool> {
        let Sock::Tcp(s) = &self.sock else {
            return Ok(true);
        };
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
        match s.peer_addr() {
            Ok(_) => {
                self.connected = Some(self.started.elapsed());
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn advance_tcp(&mut self, refused_ok: bool) -> io::Result<Option<Outcome>> {
        match self.connect_done() {
            Ok(true) => Ok(Some(self.pass(None))),
            Ok(false) => Ok(None),
            Err(e) if refused_ok && e.kind() == ErrorKind::ConnectionRefused => {
                Ok(Some(self.pass(None)))
            }
            Err(e) => Err(e),
        }
    }

    fn advance_dns(&mut self, refused_ok: bool) -> io::Result<Option<Outcome>> {
        let Sock::Udp(s) = &self.sock else {
            unreachable!("a DNS check has a UDP socket")
        };
        let mut buf = [0u8; 512];
        loop {
            match s.recv(&mut buf) {
                Ok(n) if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == self.dns_id => {
                    return Ok(Some(self.pass(None)));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused && refused_ok => {
                    return Ok(Some(self.pass(None)));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn advance_http(&mut self, h: &HttpCheck) -> io::Result<Option<Outcome>> {
        if self.phase == Phase::Connecting {
            if !self.connect_done()? {
                return Ok(None);
            }
            self.request = http_request(h, self.addr).into_bytes();
            self.phase = Phase::Sending;
        }
        if self.phase == Phase::Sending {
            let Sock::Tcp(s) = &mut self.sock else {
                unreachable!("an HTTP check has a TCP socket")
            };
            while self.written < self.request.len() {
                match s.write(&self.request[self.written..]) {
                    Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "request not sent")),
                    Ok(n) => self.written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.phase = Phase::Reading;
        }
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let Sock::Tcp(s) = &mut self.sock else {
                unreachable!("an HTTP check has a TCP socket")
            };
            let n = match s.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n > 0 && self.first_byte.is_none() {
                self.first_byte = Some(self.started.elapsed());
            }
            let eof = n == 0;
            if let Some(done) = self.take_bytes(&chunk[..n], eof, h) {
                return Ok(Some(done));
            }
            if eof {
                return Ok(Some(self.fail(format!(
                    "connection closed before the response was complete ({})",
                    self.addr
                ))));
            }
        }
    }

    /// Adds response bytes; `Some` once the check is decided.
    fn take_bytes(&mut self, data: &[u8], eof: bool, h: &HttpCheck) -> Option<Outcome> {
        let keep = h.checks_body();
        if self.head_len.is_none() {
            self.buf.extend_from_slice(data);
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.unwrap_or(0);
                    if (100..200).contains(&status) {
                        // An interim response (100 Continue): the real one follows.
                        self.buf.drain(..len);
                        return self.take_bytes(&[], eof, h);
                    }
                    self.status = Some(status);
                    if status != h.expect_status {
                        return Some(self.fail(format!(
                            "status {status}, expected {} ({})",
                            h.expect_status, self.addr
                        )));
                    }
                    self.framing = framing(resp.headers, status);
                    self.head_len = Some(len);
                    let rest = self.buf.split_off(len);
                    self.buf.clear();
                    return self.take_body(&rest, eof, h, keep);
                }
                Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                    return Some(self.fail(format!(
                        "response head larger than {MAX_HEAD} bytes ({})",
                        self.addr
                    )));
                }
                Ok(httparse::Status::Partial) => return None,
                Err(e) => {
                    return Some(
                        self.fail(format!("malformed response head: {e} ({})", self.addr)),
                    );
                }
            }
        }
        self.take_body(data, eof, h, keep)
    }

    fn take_body(&mut self, data: &[u8], eof: bool, h: &HttpCheck, keep: bool) -> Option<Outcome> {
        match self.framing {
            Framing::None => Some(self.finish_body(Vec::new(), false, h)),
            Framing::Length(len) => {
                let want = len - self.body_bytes;
                let take = data.len().min(want);
                self.body_bytes += take;
                if keep && self.buf.len() < MAX_CHECKED_BODY {
                    let room = MAX_CHECKED_BODY - self.buf.len();
                    self.buf.extend_from_slice(&data[..take.min(room)]);
                }
                if self.body_bytes == len || self.body_bytes >= MAX_CHECKED_BODY {
                    let body = std::mem::take(&mut self.buf);
                    return Some(self.finish_body(body, self.body_bytes < len, h));
                }
                if eof {
                    return Some(self.fail(format!(
                        "body ended after {} of {len} bytes ({})",
                        self.body_bytes, self.addr
                    )));
                }
                None
            }
            Framing::Close => {
                self.body_bytes += data.len();
                if keep && self.buf.len() < MAX_CHECKED_BODY {
                    let room = MAX_CHECKED_BODY - self.buf.len();
                    self.buf.extend_from_slice(&data[..data.len().min(room)]);
                }
                if eof || self.body_bytes >= MAX_CHECKED_BODY {
                    let body = std::mem::take(&mut self.buf);
                    return Some(self.finish_body(body, !eof, h));
                }
                None
            }
            Framing::Chunked => {
                self.buf.extend_from_slice(data);
                loop {
                    let rest = &self.buf[self.chunk_pos..];
                    match httparse::parse_chunk_size(rest) {
                        Ok(httparse::Status::Complete((line, 0))) => {
                            // The last chunk; trailers (if any) end with an empty line.
                            let tail = &rest[line..];
                            if tail.starts_with(b"\r\n") || find(tail, b"\r\n\r\n").is_some() {
                                let body = std::mem::take(&mut self.body);
                                return Some(self.finish_body(body, false, h));
                            }
                            break;
                        }
                        Ok(httparse::Status::Complete((line, size))) => {
                            let size = usize::try_from(size).unwrap_or(usize::MAX);
                            let need = line.saturating_add(size).saturating_add(2);
                            if rest.len() < need {
                                if self.body.len() + (rest.len() - line) > MAX_CHECKED_BODY {
                                    // A huge chunk: judge what we have.
                                    let have = &rest[line..];
                                    let room = MAX_CHECKED_BODY.saturating_sub(self.body.len());
                                    let mut body = std::mem::take(&mut self.body);
                                    body.extend_from_slice(&have[..have.len().min(room)]);
                                    return Some(self.finish_body(body, true, h));
                                }
                                break;
                            }
                            if &rest[line + size..need] != b"\r\n" {
                                return Some(
                                    self.fail(format!("malformed chunked body ({})", self.addr)),
                                );
                            }
                            let data = &rest[line..line + size];
                            self.body.extend_from_slice(data);
                            self.body_bytes += size;
                            self.chunk_pos += need;
                            if self.body.len() > MAX_CHECKED_BODY {
                                let mut body = std::mem::take(&mut self.body);
                                body.truncate(MAX_CHECKED_BODY);
                                return Some(self.finish_body(body, true, h));
                            }
                        }
                        Ok(httparse::Status::Partial) => break,
                        Err(_) => {
                            return Some(
                                self.fail(format!("malformed chunk size ({})", self.addr)),
                            );
                        }
                    }
                }
                // Keep only what is not decoded yet.
                self.buf.drain(..self.chunk_pos);
                self.chunk_pos = 0;
                if eof {
                    return Some(self.fail(format!(
                        "connection closed inside a chunked body ({})",
                        self.addr
                    )));
                }
                None
            }
        }
    }

    /// Judges the body; `truncated` when only its first [`MAX_CHECKED_BODY`] bytes were read.
    fn finish_body(&self, body: Vec<u8>, truncated: bool, h: &HttpCheck) -> Outcome {
        if truncated && (h.body_contains.is_some() || h.body_xxh3.is_some()) {
            return self.fail(format!(
                "body larger than {MAX_CHECKED_BODY} bytes: not checked ({})",
                self.addr
            ));
        }
        if let Some(needle) = &h.body_contains
            && find(&body, needle).is_none()
        {
            return self.fail(format!(
                "body does not contain {:?} ({})",
                String::from_utf8_lossy(needle),
                self.addr
            ));
        }
        if let Some(want) = h.body_xxh3 {
            let got = xxhash_rust::xxh3::xxh3_64(&body);
            if got != want {
                return self.fail(format!(
                    "body xxh3 is {got:016x}, expected {want:016x} ({})",
                    self.addr
                ));
            }
        }
        self.pass(h.keep_body.then_some(body))
    }
}

/// Runs one check to its end (blocking), failing it at `timeout`.
pub fn check_once(addr: SocketAddr, spec: &CheckSpec, timeout: Duration) -> io::Result<Outcome> {
    let mut poll = mio::Poll::new()?;
    let mut events = mio::Events::with_capacity(8);
    let token = Token(0);
    let mut a = match Attempt::start(addr, spec, 0x5eed, poll.registry(), token)? {
        Ok(a) => a,
        Err(done) => return Ok(done),
    };
    let deadline = a.started() + timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            a.deregister(poll.registry());
            return Ok(a.timed_out(spec));
        }
        match poll.poll(&mut events, Some(deadline - now)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if !events.is_empty()
            && let Some(o) = a.advance(spec)
        {
            a.deregister(poll.registry());
            return Ok(o);
        }
    }
}

fn refused(spec: &CheckSpec, started: Instant) -> Outcome {
    let ok = matches!(
        spec,
        CheckSpec::Tcp { refused_ok: true }
            | CheckSpec::Dns {
                refused_ok: true,
                ..
            }
    );
    if ok {
        Outcome {
            result: Ok(()),
            connect: None,
            first_byte: None,
            total: started.elapsed(),
            status: None,
            body: None,
        }
    } else {
        Outcome::failed(started.elapsed(), "connection refused")
    }
}

fn http_request(h: &HttpCheck, addr: SocketAddr) -> String {
    let host = match &h.host {
        Some(h) => h.clone(),
        None => addr.to_string(),
    };
    let mut r = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: popnet-probe\r\nAccept: */*\r\nConnection: close\r\n",
        h.path
    );
    for line in &h.headers {
        r.push_str(line);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

fn framing(headers: &[httparse::Header<'_>], status: u16) -> Framing {
    if status == 204 || status == 304 {
        return Framing::None;
    }
    let mut length = None;
    for hd in headers {
        if hd.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(hd.value)
                .to_ascii_lowercase()
                .contains("chunked")
        {
            return Framing::Chunked;
        }
        if hd.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(hd.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        }
    }
    match length {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    }
}

/// First position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
