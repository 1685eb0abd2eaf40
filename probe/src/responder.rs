//! The latency responder: measures this POP's round trip to the resolvers that DNS servers ask about, and answers in signed batches.
//!
//! A request ([`crate::latency`]) is verified (MAC, format, and a `sent_at_ms` within
//! [`ResponderOptions::max_age`] of now, which bounds replays), then charged to its
//! requester's token bucket (keyed by source IP: [`ResponderOptions::rate_per_s`]
//! addresses per second, the same as burst); a request that does not fit is dropped
//! whole and counted. Each
//! address is then answered from a measurement finished within the last
//! [`FRESH_FOR`], joined to a measurement in flight, or measured anew. At most
//! [`ResponderOptions::max_concurrent`] measurements run at once; more wait in a queue
//! of [`ResponderOptions::max_queue`], past which addresses are dropped (counted as
//! `overloaded`, no result).
//!
//! A measurement tries, each for [`ResponderOptions::timeout`]:
//! 1. ICMP echo, when a raw ICMP socket could be opened (CAP_NET_RAW);
//! 2. a DNS query (`. NS`) to the resolver's port 53: any response counts, and so does
//!    an ICMP port unreachable (the host answered);
//! 3. a TCP connect to port 53: established or refused (RST) both count.
//!
//! The first that answers gives the round trip; if none does, the result is "no answer"
//! (`rtt_us` = u32::MAX on the wire). Results go back to the requesting socket as they
//! finish, in responses of at most 64 results and under
//! [`crate::report::TARGET_DATAGRAM`] bytes, sent when full, when every address of the
//! request is answered, or [`BATCH_DELAY`] after the first result waiting.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::check::{Attempt, CheckSpec};
use crate::latency::{
    LatencyError, LatencyRequest, LatencyResponse, LatencyResult, MAX_ADDRS_PER_REQUEST,
    MAX_DATAGRAM, result_len,
};
use crate::report::TARGET_DATAGRAM;
use crate::slab::Slab;
use crate::unix_ms;

/// A measurement this recent answers a request without measuring again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// Longest a finished result waits for others to share its response datagram.
pub const BATCH_DELAY: Duration = Duration::from_millis(50);

const LISTEN: Token = Token(usize::MAX);
const ICMP4: Token = Token(usize::MAX - 1);
const ICMP6: Token = Token(usize::MAX - 2);
const WAKE: Token = Token(usize::MAX - 3);
const ECHO_MARK: &[u8; 8] = b"popnetlq";

/// How the responder runs.
#[derive(Debug, Clone)]
pub struct ResponderOptions {
    /// Sender id of responses: this POP's name.
    pub pop: String,
    /// `probes.report_key`.
    pub key: Vec<u8>,
    pub listen: SocketAddr,
    /// Per measurement method.
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub max_queue: usize,
    /// Addresses per second (and burst) per requester IP.
    pub rate_per_s: u32,
    /// Port of the DNS and TCP fallbacks (53; tests use their own).
    pub target_port: u16,
    /// Try ICMP echo (needs CAP_NET_RAW; without it the fallbacks are used).
    pub icmp: bool,
    /// Requests sent longer ago than this (or as far in the future) are dropped.
    pub max_age: Duration,
}

impl ResponderOptions {
    /// Defaults for a POP: 1000 addresses/s per requester, 256 measurements at once.
    pub fn new(pop: &str, key: &[u8], listen: SocketAddr, timeout: Duration) -> ResponderOptions {
        ResponderOptions {
            pop: pop.to_string(),
            key: key.to_vec(),
            listen,
            timeout,
            max_concurrent: 256,
            max_queue: 8192,
            rate_per_s: 1000,
            target_port: 53,
            icmp: true,
            max_age: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    addresses: AtomicU64,
    bad_mac: AtomicU64,
    malformed: AtomicU64,
    stale: AtomicU64,
    rate_limited_requests: AtomicU64,
    rate_limited_addresses: AtomicU64,
    deduped: AtomicU64,
    joined: AtomicU64,
    overloaded: AtomicU64,
    measured: AtomicU64,
    by_icmp: AtomicU64,
    by_dns: AtomicU64,
    by_tcp: AtomicU64,
    no_answer: AtomicU64,
    responses: AtomicU64,
    results_sent: AtomicU64,
    send_errors: AtomicU64,
    max_active: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

/// The responder's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ResponderStats {
    /// Requests accepted (MAC, format and age good).
    pub requests: u64,
    /// Addresses in accepted requests.
    pub addresses: u64,
    pub bad_mac: u64,
    /// Too short, too long, wrong magic or version, or malformed after a good MAC.
    pub malformed: u64,
    /// Sent too long ago or too far in the future.
    pub stale: u64,
    pub rate_limited_requests: u64,
    pub rate_limited_addresses: u64,
    /// Addresses answered from a measurement of the last second.
    pub deduped: u64,
    /// Addresses that joined a measurement in flight.
    pub joined: u64,
    /// Addresses dropped because the measurement queue was full.
    pub overloaded: u64,
    /// Measurements finished, and how.
    pub measured: u64,
    pub by_icmp: u64,
    pub by_dns: u64,
    pub by_tcp: u64,
    pub no_answer: u64,
    /// Response datagrams and results sent.
    pub responses: u64,
    pub results_sent: u64,
    pub send_errors: u64,
    /// Most measurements running at once so far.
    pub max_active: u64,
    /// Whether ICMP echo is in use.
    pub icmp: bool,
}

/// Reads a responder's counters.
#[derive(Clone)]
pub struct ResponderStatsHandle {
    counters: Arc<Counters>,
    icmp: bool,
}

impl ResponderStatsHandle {
    pub fn get(&self) -> ResponderStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ResponderStats {
            requests: g(&c.requests),
            addresses: g(&c.addresses),
            bad_mac: g(&c.bad_mac),
            malformed: g(&c.malformed),
            stale: g(&c.stale),
            rate_limited_requests: g(&c.rate_limited_requests),
            rate_limited_addresses: g(&c.rate_limited_addresses),
            deduped: g(&c.deduped),
            joined: g(&c.joined),
            overloaded: g(&c.overloaded),
            measured: g(&c.measured),
            by_icmp: g(&c.by_icmp),
            by_dns: g(&c.by_dns),
            by_tcp: g(&c.by_tcp),
            no_answer: g(&c.no_answer),
            responses: g(&c.responses),
            results_sent: g(&c.results_sent),
            send_errors: g(&c.send_errors),
            max_active: g(&c.max_active),
            icmp: self.icmp,
        }
    }
}

/// The running responder thread.
pub struct Responder {
    local: SocketAddr,
    icmp: bool,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    /// Binds `opts.listen` and starts answering.
    pub fn start(opts: ResponderOptions) -> io::Result<Responder> {
        let poll = Poll::new()?;
        let mut sock = UdpSocket::bind(opts.listen)?;
        let local = sock.local_addr()?;
        poll.registry()
            .register(&mut sock, LISTEN, Interest::READABLE)?;
        let mut icmp4 = None;
        let mut icmp6 = None;
        if opts.icmp {
            for v6 in [false, true] {
                match open_icmp(v6) {
                    Ok(mut s) => {
                        let t = if v6 { ICMP6 } else { ICMP4 };
                        poll.registry().register(&mut s, t, Interest::READABLE)?;
                        if v6 {
                            icmp6 = Some(s);
                        } else {
                            icmp4 = Some(s);
                        }
                    }
                    Err(e) => tracing::info!(
                        ipv6 = v6,
                        error = %e,
                        "probe: no raw ICMP socket (needs CAP_NET_RAW); resolver latency falls back to DNS and TCP to port 53"
                    ),
                }
            }
        }
        let icmp = icmp4.is_some() || icmp6.is_some();
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut lp = Loop {
            poll,
            sock,
            icmp4,
            icmp6,
            ident: (std::process::id() as u16) ^ 0x5a17,
            next_seq: 0,
            opts,
            counters: counters.clone(),
            measures: HashMap::new(),
            next_id: 1,
            inflight: HashMap::new(),
            fresh: HashMap::new(),
            queue: VecDeque::new(),
            active: 0,
            attempts: Slab::new(),
            icmp_wait: HashMap::new(),
            deadlines: BinaryHeap::new(),
            buckets: HashMap::new(),
            pending: HashMap::new(),
            last_prune: Instant::now(),
            dns_spec: CheckSpec::Dns {
                // ". IN NS": any resolver answers it from its cache or refuses it.
                question: vec![0, 0, 2, 0, 1],
                refused_ok: true,
            },
            tcp_spec: CheckSpec::Tcp { refused_ok: true },
        };
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("probe-latency".into())
            .spawn(move || lp.run(&stop2))?;
        Ok(Responder {
            local,
            icmp,
            counters,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> ResponderStats {
        self.stats_handle().get()
    }

    /// A handle that reads the counters from another thread.
    pub fn stats_handle(&self) -> ResponderStatsHandle {
        ResponderStatsHandle {
            counters: self.counters.clone(),
            icmp: self.icmp,
        }
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A raw ICMP (or ICMPv6) socket. It is handed to mio as a `UdpSocket` only for its
/// datagram calls (`send_to`, `recv_from`), which are the same system calls on a raw
/// socket; the port of the addresses is 0 and ignored by the kernel.
fn open_icmp(v6: bool) -> io::Result<UdpSocket> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let s = Socket::new(domain, Type::RAW, Some(proto))?;
    s.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(std::net::UdpSocket::from(s)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Icmp,
    Dns,
    Tcp,
}

struct Measure {
    addr: IpAddr,
    waiters: Vec<(SocketAddr, u64)>,
    step: Step,
    step_no: u32,
    step_started: Instant,
    attempt: Option<Token>,
    icmp_seq: Option<u16>,
}

struct Fresh {
    rtt_us: Option<u32>,
    measured_at_ms: u64,
    at: Instant,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Pending {
    results: Vec<LatencyResult>,
    first_at: Option<Instant>,
    /// Results still to come.
    outstanding: usize,
}

struct Loop {
    poll: Poll,
    sock: UdpSocket,
    icmp4: Option<UdpSocket>,
    icmp6: Option<UdpSocket>,
    ident: u16,
    next_seq: u16,
    opts: ResponderOptions,
    counters: Arc<Counters>,
    measures: HashMap<u64, Measure>,
    next_id: u64,
    inflight: HashMap<IpAddr, u64>,
    fresh: HashMap<IpAddr, Fresh>,
    queue: VecDeque<u64>,
    active: usize,
    attempts: Slab<(u64, Attempt)>,
    icmp_wait: HashMap<u16, u64>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    buckets: HashMap<IpAddr, Bucket>,
    pending: HashMap<(SocketAddr, u64), Pending>,
    last_prune: Instant,
    dns_spec: CheckSpec,
    tcp_spec: CheckSpec,
}

impl Loop {
    fn run(&mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(256);
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut wake = now + Duration::from_secs(1);
            if let Some(Reverse((at, _, _))) = self.deadlines.peek() {
                wake = wake.min(*at);
            }
            for p in self.pending.values() {
                if let Some(f) = p.first_at {
                    wake = wake.min(f + BATCH_DELAY);
                }
            }
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(wake.saturating_duration_since(now)))
                && e.kind() != ErrorKind::Interrupted
            {
                tracing::warn!(error = %e, "probe: latency responder poll failed");
                std::thread::sleep(Duration::from_millis(100));
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTEN => self.read_requests(),
                    ICMP4 => self.read_icmp(false),
                    ICMP6 => self.read_icmp(true),
                    WAKE => {}
                    t => self.advance_attempt(t),
                }
            }
            self.expire();
            self.start_queued();
            self.flush(false);
            if self.last_prune.elapsed() >= FRESH_FOR {
                self.prune();
            }
        }
    }

    fn read_requests(&mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => self.request(&buf[..n], from),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "probe: latency socket receive failed");
                    return;
                }
            }
        }
    }

    fn request(&mut self, datagram: &[u8], from: SocketAddr) {
        let c = self.counters.clone();
        let req = match LatencyRequest::decode(datagram, &self.opts.key) {
            Ok(r) => r,
            Err(e) => {
                bump(if e == LatencyError::BadMac {
                    &c.bad_mac
                } else {
                    &c.malformed
                });
                tracing::debug!(%from, error = %e, "probe: latency request dropped");
                return;
            }
        };
        let now_ms = unix_ms();
        let max_age = self.opts.max_age.as_millis() as u64;
        if req.sent_at_ms.saturating_add(max_age) < now_ms
            || req.sent_at_ms > now_ms.saturating_add(max_age)
        {
            bump(&c.stale);
            return;
        }
        // The token bucket of this requester.
        let now = Instant::now();
        let rate = f64::from(self.opts.rate_per_s);
        let b = self.buckets.entry(from.ip()).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(rate);
        b.last = now;
        let n = req.addrs.len() as f64;
        if b.tokens < n {
            bump(&c.rate_limited_requests);
            add(&c.rate_limited_addresses, req.addrs.len());
            return;
        }
        b.tokens -= n;
        bump(&c.requests);
        add(&c.addresses, req.addrs.len());

        let key = (from, req.seq);
        let mut addrs = req.addrs;
        let mut seen = Vec::with_capacity(addrs.len());
        addrs.retain(|a| {
            let new = !seen.contains(a);
            seen.push(*a);
            new
        });
        self.pending
            .entry(key)
            .or_insert(Pending {
                results: Vec::new(),
                first_at: None,
                outstanding: 0,
            })
            .outstanding += addrs.len();
        for addr in addrs {
            if let Some(f) = self.fresh.get(&addr)
                && f.at.elapsed() < FRESH_FOR
            {
                bump(&c.deduped);
                let r = LatencyResult {
                    addr,
                    rtt_us: f.rtt_us,
                    measured_at_ms: f.measured_at_ms,
                };
                self.deliver(key, r);
                continue;
            }
            if let Some(id) = self.inflight.get(&addr)
                && let Some(m) = self.measures.get_mut(id)
            {
                bump(&c.joined);
                m.waiters.push(key);
                continue;
            }
            if self.active >= self.opts.max_concurrent && self.queue.len() >= self.opts.max_queue {
                bump(&c.overloaded);
                if let Some(p) = self.pending.get_mut(&key) {
                    p.outstanding -= 1;
                }
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let first = if self.icmp_for(addr).is_some() {
                Step::Icmp
            } else {
                Step::Dns
            };
            self.measures.insert(
                id,
                Measure {
                    addr,
                    waiters: vec![key],
                    step: first,
                    step_no: 0,
                    step_started: now,
                    attempt: None,
                    icmp_seq: None,
                },
            );
            self.inflight.insert(addr, id);
            self.queue.push_back(id);
        }
        self.start_queued();
        self.flush(false);
    }

    fn icmp_for(&self, addr: IpAddr) -> Option<&UdpSocket> {
        match addr {
            IpAddr::V4(_) => self.icmp4.as_ref(),
            IpAddr::V6(_) => self.icmp6.as_ref(),
        }
    }

    /// Starts `step` of measurement `id`; moves on at once when it cannot start.
    fn begin(&mut self, id: u64, step: Step) {
        let now = Instant::now();
        let Some(m) = self.measures.get_mut(&id) else {
            return;
        };
        m.step = step;
        m.step_no += 1;
        m.step_started = now;
        let step_no = m.step_no;
        let addr = m.addr;
        let started = match step {
            Step::Icmp => self.send_echo(id, addr),
            Step::Dns | Step::Tcp => {
                let spec = if step == Step::Dns {
                    &self.dns_spec
                } else {
                    &self.tcp_spec
                };
                let token = self.attempts.vacant_token();
                let target = SocketAddr::new(addr, self.opts.target_port);
                match Attempt::start(target, spec, id, self.poll.registry(), token) {
                    Ok(Ok(a)) => {
                        let got = self.attempts.insert((id, a));
                        debug_assert_eq!(got, token);
                        if let Some(m) = self.measures.get_mut(&id) {
                            m.attempt = Some(token);
                        }
                        true
                    }
                    Ok(Err(o)) if o.passed() => {
                        self.complete(id, Some(o.total));
                        return;
                    }
                    Ok(Err(_)) => false,
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "probe: latency check not started");
                        false
                    }
                }
            }
        };
        if started {
            self.deadlines
                .push(Reverse((now + self.opts.timeout, id, step_no)));
        } else {
            self.next_step(id);
        }
    }

    fn next_step(&mut self, id: u64) {
        let Some(m) = self.measures.get_mut(&id) else {
            return;
        };
        if let Some(seq) = m.icmp_seq.take() {
            self.icmp_wait.remove(&seq);
        }
        if let Some(t) = m.attempt.take()
            && let Some((_, mut a)) = self.attempts.remove(t)
        {
            a.deregister(self.poll.registry());
        }
        match m.step {
            Step::Icmp => self.begin(id, Step::Dns),
            Step::Dns => self.begin(id, Step::Tcp),
            Step::Tcp => self.complete(id, None),
        }
    }

    fn send_echo(&mut self, id: u64, addr: IpAddr) -> bool {
        // A sequence number not waiting for a reply.
        let mut seq = self.next_seq;
        for _ in 0..=u16::MAX {
            seq = seq.wrapping_add(1);
            if !self.icmp_wait.contains_key(&seq) {
                break;
            }
        }
        self.next_seq = seq;
        let v6 = addr.is_ipv6();
        let mut pkt = Vec::with_capacity(24);
        pkt.push(if v6 { 128 } else { 8 });
        pkt.push(0);
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(&self.ident.to_be_bytes());
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&id.to_be_bytes());
        pkt.extend_from_slice(ECHO_MARK);
        if !v6 {
            // The kernel fills in the ICMPv6 checksum (it covers a pseudo-header), not ICMP's.
            let sum = inet_checksum(&pkt);
            pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        let Some(sock) = self.icmp_for(addr) else {
            return false;
        };
        match sock.send_to(&pkt, SocketAddr::new(addr, 0)) {
            Ok(_) => {
                self.icmp_wait.insert(seq, id);
                if let Some(m) = self.measures.get_mut(&id) {
                    m.icmp_seq = Some(seq);
                }
                true
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "probe: ICMP echo not sent");
                false
            }
        }
    }

    fn read_icmp(&mut self, v6: bool) {
        let mut buf = [0u8; 1500];
        loop {
            let sock = if v6 { &self.icmp6 } else { &self.icmp4 };
            let Some(sock) = sock else { return };
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "probe: ICMP receive failed");
                    return;
                }
            };
            let Some((seq, id)) = parse_echo_reply(&buf[..n], v6, self.ident) else {
                continue;
            };
            if self.icmp_wait.get(&seq) != Some(&id) {
                continue;
            }
            let Some(m) = self.measures.get(&id) else {
                continue;
            };
            if m.step != Step::Icmp || m.addr != from.ip() {
                continue;
            }
            let rtt = m.step_started.elapsed();
            self.complete(id, Some(rtt));
        }
    }

    fn advance_attempt(&mut self, t: Token) {
        let Some((id, a)) = self.attempts.get_mut(t) else {
            return;
        };
        let id = *id;
        let Some(m) = self.measures.get(&id) else {
            return;
        };
        let spec = if m.step == Step::Dns {
            &self.dns_spec
        } else {
            &self.tcp_spec
        };
        let Some(o) = a.advance(spec) else {
            return;
        };
        if let Some((_, mut a)) = self.attempts.remove(t) {
            a.deregister(self.poll.registry());
        }
        if let Some(m) = self.measures.get_mut(&id) {
            m.attempt = None;
        }
        if o.passed() {
            self.complete(id, Some(o.total));
        } else {
            self.next_step(id);
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, id, step_no))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self.measures.get(&id).is_some_and(|m| m.step_no == step_no) {
                self.next_step(id);
            }
        }
    }

    /// Measurement `id` is over: hand its result to every waiter, start a queued one.
    fn complete(&mut self, id: u64, rtt: Option<Duration>) {
        let Some(mut m) = self.measures.remove(&id) else {
            return;
        };
        if let Some(seq) = m.icmp_seq.take() {
            self.icmp_wait.remove(&seq);
        }
        if let Some(t) = m.attempt.take()
            && let Some((_, mut a)) = self.attempts.remove(t)
        {
            a.deregister(self.poll.registry());
        }
        self.inflight.remove(&m.addr);
        let c = self.counters.clone();
        bump(&c.measured);
        match (rtt, m.step) {
            (None, _) => bump(&c.no_answer),
            (Some(_), Step::Icmp) => bump(&c.by_icmp),
            (Some(_), Step::Dns) => bump(&c.by_dns),
            (Some(_), Step::Tcp) => bump(&c.by_tcp),
        }
        let rtt_us = rtt.map(|d| d.as_micros().clamp(1, u128::from(u32::MAX - 1)) as u32);
        let measured_at_ms = unix_ms();
        self.fresh.insert(
            m.addr,
            Fresh {
                rtt_us,
                measured_at_ms,
                at: Instant::now(),
            },
        );
        for key in std::mem::take(&mut m.waiters) {
            self.deliver(
                key,
                LatencyResult {
                    addr: m.addr,
                    rtt_us,
                    measured_at_ms,
                },
            );
        }
        self.active -= 1;
    }

    /// Starts queued measurements while there is room (iteratively: a measurement that
    /// fails at once frees its slot for the next).
    fn start_queued(&mut self) {
        while self.active < self.opts.max_concurrent {
            let Some(next) = self.queue.pop_front() else {
                break;
            };
            let Some(addr) = self.measures.get(&next).map(|m| m.addr) else {
                continue;
            };
            self.active += 1;
            self.counters
                .max_active
                .fetch_max(self.active as u64, Ordering::Relaxed);
            let step = if self.icmp_for(addr).is_some() {
                Step::Icmp
            } else {
                Step::Dns
            };
            self.begin(next, step);
        }
    }

    fn deliver(&mut self, key: (SocketAddr, u64), r: LatencyResult) {
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        let size = LatencyResponse {
            sender: self.opts.pop.clone(),
            seq: key.1,
            sent_at_ms: 0,
            results: Vec::new(),
        }
        .encoded_len()
            + p.results.iter().map(|r| result_len(r.addr)).sum::<usize>();
        if !p.results.is_empty() && size + result_len(r.addr) > TARGET_DATAGRAM {
            self.send(key);
        }
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        p.results.push(r);
        p.outstanding = p.outstanding.saturating_sub(1);
        p.first_at.get_or_insert_with(Instant::now);
        if p.results.len() >= MAX_ADDRS_PER_REQUEST {
            self.send(key);
        }
    }

    /// Sends what is due: full batches, requests with nothing left to come, and batches
    /// whose first result has waited [`BATCH_DELAY`] (all of them when `all`).
    fn flush(&mut self, all: bool) {
        let now = Instant::now();
        let due: Vec<(SocketAddr, u64)> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                !p.results.is_empty()
                    && (all
                        || p.outstanding == 0
                        || p.first_at.is_some_and(|f| f + BATCH_DELAY <= now))
            })
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            self.send(k);
        }
        self.pending
            .retain(|_, p| p.outstanding > 0 || !p.results.is_empty());
    }

    fn send(&mut self, key: (SocketAddr, u64)) {
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        let results = std::mem::take(&mut p.results);
        p.first_at = None;
        if results.is_empty() {
            return;
        }
        let n = results.len();
        let resp = LatencyResponse {
            sender: self.opts.pop.clone(),
            seq: key.1,
            sent_at_ms: unix_ms(),
            results,
        };
        let c = &self.counters;
        match resp.encode(&self.opts.key) {
            Ok(bytes) => match self.sock.send_to(&bytes, key.0) {
                Ok(_) => {
                    bump(&c.responses);
                    add(&c.results_sent, n);
                }
                Err(e) => {
                    bump(&c.send_errors);
                    tracing::debug!(to = %key.0, error = %e, "probe: latency response not sent");
                }
            },
            Err(e) => {
                bump(&c.send_errors);
                tracing::warn!(error = %e, "probe: latency response not encodable");
            }
        }
    }

    fn prune(&mut self) {
        self.last_prune = Instant::now();
        self.fresh.retain(|_, f| f.at.elapsed() < FRESH_FOR);
        let rate = f64::from(self.opts.rate_per_s);
        let now = Instant::now();
        // A bucket that has refilled completely holds nothing worth keeping.
        self.buckets
            .retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < rate);
    }
}

/// The Internet checksum (RFC 1071) of `data`.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `(seq, measurement id)` of an echo reply to us. IPv4 raw sockets deliver the IP
/// header too; ICMPv6 raw sockets only the ICMPv6 message.
fn parse_echo_reply(pkt: &[u8], v6: bool, ident: u16) -> Option<(u16, u64)> {
    let icmp = if v6 {
        pkt
    } else {
        let ihl = usize::from(pkt.first()? & 0x0f) * 4;
        if pkt.first()? >> 4 != 4 || ihl < 20 {
            return None;
        }
        pkt.get(ihl..)?
    };
    let reply_type = if v6 { 129 } else { 0 };
    if icmp.len() < 24 || icmp[0] != reply_type || icmp[1] != 0 {
        return None;
    }
    if u16::from_be_bytes([icmp[4], icmp[5]]) != ident || &icmp[16..24] != ECHO_MARK {
        return None;
    }
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&icmp[8..16]);
    Some((seq, u64::from_be_bytes(id)))
}
