//! Origin fetches: a pool of fetcher threads speaking HTTP/1.1 to customer origins, filling in-flight fetches and the store.
//!
//! Fetches run on plain blocking threads with socket timeouts, apart from the io_uring
//! workers: they are the miss path (a fraction of requests), their logic is linear
//! (connect, retry on the next origin, read the head, stream the body), and a slow
//! origin then never delays a hit. Threads are started on demand up to
//! [`MAX_FETCHERS`] and exit after a minute idle. Idle origin connections are kept
//! per address and reused (HTTP/1.1 keep-alive).
//!
//! For every fetch: the [`OriginSelector`] ranks the route's origin addresses; a
//! connect failure (or timeout) tries the next one; a reused connection that turns out
//! closed is retried once on a fresh one. No response head within `origin_timeout`
//! (or a pause that long inside the body) ends the fetch with 504. The head is
//! published to the [`Fetch`] as soon as it arrives and the body in chunks as they
//! are read, so clients receive a large object while it is still arriving. A
//! storable, complete body becomes a [`StoredObject`] — unless a purge that covers
//! it happened meanwhile.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};

use crate::coalesce::{Fetch, FetchError, FetchHead, MissLock};
use crate::http::{ChunkedDecoder, Method, format_date, parse_u64, trim, unix_now};
use crate::key::{CacheKey, normalize_host, split_url};
use crate::object::{ResponseHead, StoredObject, Vary};
use crate::purge::PurgeLog;
use crate::routes::Route;
use crate::selector::{Attempt, Candidate, OriginSelector};
use crate::store::Store;

/// Most fetcher threads at once.
pub const MAX_FETCHERS: usize = 256;
/// Largest origin response head.
const MAX_ORIGIN_HEAD: usize = 64 * 1024;
/// Idle origin connections kept per address, and for how long.
const POOL_PER_ADDR: usize = 32;
const POOL_IDLE: Duration = Duration::from_secs(4);
/// How long a URL whose response was not storable skips coalescing (hit-for-pass).
const PASS_FOR: Duration = Duration::from_secs(10);

/// A request to send to an origin.
#[derive(Debug, Clone)]
pub struct OriginRequest {
    pub method: Method,
    pub target: String,
    /// The `Host` the client sent.
    pub host: String,
    /// End-to-end request fields to forward.
    pub fields: Vec<(Box<str>, Bytes)>,
    pub body: Bytes,
    pub client: IpAddr,
}

impl OriginRequest {
    /// The values of a forwarded field (for variant keys).
    pub fn values(&self, name: &str) -> Vec<&[u8]> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
            .collect()
    }
}

/// One fetch to run.
pub struct FetchJob {
    pub fetch: Arc<Fetch>,
    pub route: Arc<Route>,
    pub req: OriginRequest,
    /// The URL's primary key.
    pub primary: CacheKey,
    /// The stale object being revalidated (its validators are sent).
    pub revalidate: Option<Arc<StoredObject>>,
    /// The request carried `Authorization` (restricts storing, RFC 9111 §3.5).
    pub authorized: bool,
    /// [`PurgeLog::mark`] when the request arrived.
    pub purge_mark: u64,
}

/// Origin counters, over every fetcher.
#[derive(Debug, Default)]
pub struct OriginCounters {
    pub requests: AtomicU64,
    pub connect_failures: AtomicU64,
    pub timeouts: AtomicU64,
    pub broken: AtomicU64,
    pub not_modified: AtomicU64,
    pub stored: AtomicU64,
    pub bytes: AtomicU64,
    pub reused_connections: AtomicU64,
}

/// Snapshot of [`OriginCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginStats {
    pub requests: u64,
    pub connect_failures: u64,
    pub timeouts: u64,
    pub broken: u64,
    pub not_modified: u64,
    pub stored: u64,
    pub bytes: u64,
    pub reused_connections: u64,
    pub in_flight: u64,
}

impl OriginCounters {
    pub fn snapshot(&self, in_flight: usize) -> OriginStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        OriginStats {
            requests: g(&self.requests),
            connect_failures: g(&self.connect_failures),
            timeouts: g(&self.timeouts),
            broken: g(&self.broken),
            not_modified: g(&self.not_modified),
            stored: g(&self.stored),
            bytes: g(&self.bytes),
            reused_connections: g(&self.reused_connections),
            in_flight: in_flight as u64,
        }
    }
}

/// What fetcher threads share.
pub struct FetchContext {
    pub selector: Arc<dyn OriginSelector>,
    pub store: Arc<Store>,
    pub misses: Arc<dyn MissLock>,
    pub purges: Arc<PurgeLog>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_object: u64,
    /// Our `Via` entry, e.g. `1.1 local (popnet)`.
    pub via: String,
    pub counters: OriginCounters,
    pool: Mutex<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
}

impl FetchContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        selector: Arc<dyn OriginSelector>,
        store: Arc<Store>,
        misses: Arc<dyn MissLock>,
        purges: Arc<PurgeLog>,
        connect_timeout: Duration,
        timeout: Duration,
        max_object: u64,
        via: String,
    ) -> FetchContext {
        FetchContext {
            selector,
            store,
            misses,
            purges,
            connect_timeout,
            timeout,
            max_object,
            via,
            counters: OriginCounters::default(),
            pool: Mutex::new(HashMap::new()),
        }
    }

    fn pooled(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let list = p.get_mut(&addr)?;
        while let Some((s, at)) = list.pop() {
            if at.elapsed() < POOL_IDLE {
                return Some(s);
            }
        }
        None
    }

    fn put_back(&self, addr: SocketAddr, s: TcpStream) {
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let list = p.entry(addr).or_default();
        list.retain(|(_, at)| at.elapsed() < POOL_IDLE);
        if list.len() < POOL_PER_ADDR {
            list.push((s, Instant::now()));
        }
    }
}

/// The fetcher thread pool.
pub struct Fetchers {
    tx: Sender<FetchJob>,
    rx: Receiver<FetchJob>,
    idle: Arc<AtomicUsize>,
    threads: Arc<AtomicUsize>,
    pub ctx: Arc<FetchContext>,
}

impl Fetchers {
    pub fn new(ctx: Arc<FetchContext>) -> Fetchers {
        let (tx, rx) = crossbeam_channel::unbounded();
        Fetchers {
            tx,
            rx,
            idle: Arc::new(AtomicUsize::new(0)),
            threads: Arc::new(AtomicUsize::new(0)),
            ctx,
        }
    }

    /// Queues a fetch, starting a thread for it if none is idle.
    pub fn submit(&self, job: FetchJob) {
        if self.idle.load(Ordering::Acquire) == 0
            && self.threads.load(Ordering::Acquire) < MAX_FETCHERS
        {
            self.spawn();
        }
        if let Err(e) = self.tx.send(job) {
            e.0.fetch.finish(Err(FetchError::Aborted));
        }
    }

    fn spawn(&self) {
        let rx = self.rx.clone();
        let idle = self.idle.clone();
        let threads = self.threads.clone();
        let ctx = self.ctx.clone();
        threads.fetch_add(1, Ordering::AcqRel);
        let spawned = std::thread::Builder::new()
            .name("cache-fetch".into())
            .spawn(move || {
                loop {
                    idle.fetch_add(1, Ordering::AcqRel);
                    let job = rx.recv_timeout(Duration::from_secs(60));
                    idle.fetch_sub(1, Ordering::AcqRel);
                    match job {
                        Ok(job) => run(&ctx, job),
                        Err(RecvTimeoutError::Timeout) => {
                            // Keep one thread warm.
                            if threads.load(Ordering::Acquire) > 1 {
                                break;
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                threads.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            self.threads.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

enum Failure {
    Connect(io::Error),
    Timeout,
    Broken(String),
    /// A reused connection was closed before answering: retry on a fresh one.
    Stale,
    /// Nobody wants the response any more.
    Abandoned,
}

fn io_failure(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Broken(e.to_string()),
    }
}

/// Runs one fetch to its end.
pub fn run(ctx: &FetchContext, job: FetchJob) {
    let mut errors = Vec::new();
    let candidates = ctx.selector.rank(&job.route);
    let mut outcome = Err(FetchError::Unreachable("the domain has no origin".into()));
    'outer: for c in &candidates {
        let mut reuse = true;
        for _ in 0..2 {
            ctx.counters.requests.fetch_add(1, Ordering::Relaxed);
            match attempt(ctx, &job, c, reuse) {
                Ok(()) => {
                    outcome = Ok(());
                    break 'outer;
                }
                Err(Failure::Stale) => {
                    reuse = false;
                    continue;
                }
                Err(Failure::Connect(e)) => {
                    ctx.counters
                        .connect_failures
                        .fetch_add(1, Ordering::Relaxed);
                    ctx.selector.record(c, Attempt::ConnectFailed);
                    errors.push(format!("{} ({}): {e}", c.origin, c.addr));
                    outcome = Err(FetchError::Unreachable(errors.join("; ")));
                    continue 'outer;
                }
                Err(Failure::Timeout) => {
                    ctx.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    ctx.selector.record(c, Attempt::Failed);
                    outcome = Err(FetchError::Timeout(c.origin.to_string()));
                    break 'outer;
                }
                Err(Failure::Broken(why)) => {
                    ctx.counters.broken.fetch_add(1, Ordering::Relaxed);
                    ctx.selector.record(c, Attempt::Failed);
                    tracing::debug!(origin = %c.origin, addr = %c.addr, %why, "broken origin response");
                    outcome = Err(FetchError::BadResponse(c.origin.to_string()));
                    break 'outer;
                }
                Err(Failure::Abandoned) => {
                    outcome = Err(FetchError::Aborted);
                    break 'outer;
                }
            }
        }
    }
    if let Err(e) = &outcome {
        tracing::debug!(key = %job.primary.text, error = %e, "origin fetch failed");
    }
    job.fetch.finish(outcome);
    ctx.misses.release(&job.fetch.key, &job.fetch);
}

/// The request head sent to the origin.
fn request_head(ctx: &FetchContext, job: &FetchJob) -> Vec<u8> {
    let r = &job.req;
    let mut h = Vec::with_capacity(512);
    let _ = write!(
        h,
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        r.method.as_str(),
        r.target,
        r.host
    );
    let mut xff: Option<String> = None;
    for (n, v) in &r.fields {
        if n.eq_ignore_ascii_case("x-forwarded-for") {
            xff = Some(String::from_utf8_lossy(v).into_owned());
            continue;
        }
        h.extend_from_slice(n.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v);
        h.extend_from_slice(b"\r\n");
    }
    let xff = match xff {
        Some(x) => format!("{x}, {}", r.client),
        None => r.client.to_string(),
    };
    let _ = write!(h, "X-Forwarded-For: {xff}\r\nVia: {}\r\n", ctx.via);
    if let Some(base) = &job.revalidate {
        if let Some(etag) = &base.head.etag {
            h.extend_from_slice(b"If-None-Match: ");
            h.extend_from_slice(etag);
            h.extend_from_slice(b"\r\n");
        }
        if let Some(lm) = base.head.last_modified {
            let _ = write!(h, "If-Modified-Since: {}\r\n", format_date(lm));
        }
    }
    if !r.body.is_empty() || matches!(r.method, Method::Post | Method::Put | Method::Patch) {
        let _ = write!(h, "Content-Length: {}\r\n", r.body.len());
    }
    h.extend_from_slice(b"Connection: keep-alive\r\n\r\n");
    h
}

fn connect(ctx: &FetchContext, c: &Candidate, reuse: bool) -> Result<(TcpStream, bool), Failure> {
    if reuse && let Some(s) = ctx.pooled(c.addr) {
        ctx.counters
            .reused_connections
            .fetch_add(1, Ordering::Relaxed);
        return Ok((s, true));
    }
    let t0 = Instant::now();
    let s = TcpStream::connect_timeout(&c.addr, ctx.connect_timeout).map_err(Failure::Connect)?;
    ctx.selector.record(c, Attempt::Connected(t0.elapsed()));
    let _ = s.set_nodelay(true);
    Ok((s, false))
}

/// One try at one origin address.
fn attempt(ctx: &FetchContext, job: &FetchJob, c: &Candidate, reuse: bool) -> Result<(), Failure> {
    let (mut s, reused) = connect(ctx, c, reuse)?;
    s.set_read_timeout(Some(ctx.timeout)).map_err(io_failure)?;
    s.set_write_timeout(Some(ctx.timeout)).map_err(io_failure)?;
    let request_time = unix_now();
    let head = request_head(ctx, job);
    let sent = s.write_all(&head).and_then(|()| s.write_all(&job.req.body));
    if let Err(e) = sent {
        return Err(if reused {
            Failure::Stale
        } else {
            io_failure(e)
        });
    }

    // The response head (1xx interim responses are skipped).
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0;
    let (status, fields, head_len, close) = loop {
        if len == buf.len() {
            if buf.len() >= MAX_ORIGIN_HEAD {
                return Err(Failure::Broken("response head too large".into()));
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = match s.read(&mut buf[len..]) {
            Ok(0) if len == 0 && reused => return Err(Failure::Stale),
            Ok(0) => return Err(Failure::Broken("closed before the response head".into())),
            Ok(n) => n,
            Err(e) if len == 0 && reused && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Failure::Stale);
            }
            Err(e) => return Err(io_failure(e)),
        };
        len += n;
        let mut hs = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(hl)) => {
                let code = resp.code.unwrap_or(0);
                if (100..200).contains(&code) && code != 101 {
                    buf.copy_within(hl..len, 0);
                    len -= hl;
                    continue;
                }
                let close = resp.version == Some(0)
                    || resp.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("connection")
                            && h.value
                                .split(|&b| b == b',')
                                .any(|t| trim(t).eq_ignore_ascii_case(b"close"))
                    });
                let fields: Vec<(String, Vec<u8>)> = resp
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect();
                break (code, fields, hl, close);
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(Failure::Broken(format!("unparsable response head: {e}"))),
        }
    };
    let response_time = unix_now();
    let fetch = &job.fetch;
    let field_iter = || fields.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    };

    // Unsafe methods invalidate the target (and Location / Content-Location on the
    // same host) once the origin accepted them (RFC 9111 §4.4).
    if job.req.method.is_unsafe() && (200..400).contains(&status) {
        ctx.store.remove_url(&job.primary);
        let host = normalize_host(&job.req.host);
        for f in ["location", "content-location"] {
            if let Some(v) = get(f).and_then(|v| std::str::from_utf8(v).ok()) {
                let key = if v.starts_with('/') {
                    Some(CacheKey::primary(&host, v))
                } else {
                    split_url(v)
                        .filter(|(h, _)| normalize_host(h) == host)
                        .map(|(_, t)| CacheKey::primary(&host, t))
                };
                if let Some(k) = key {
                    ctx.store.remove_url(&k);
                }
            }
        }
    }

    let rest = Bytes::copy_from_slice(&buf[head_len..len]);
    let ttfb = fetch.started.elapsed();

    // A revalidation answered 304: the stored object, with its head updated.
    if status == 304
        && !fetch.pass
        && let Some(base) = &job.revalidate
    {
        ctx.counters.not_modified.fetch_add(1, Ordering::Relaxed);
        let head =
            Arc::new(
                base.head
                    .updated_by(field_iter(), request_time, response_time, &ctx.via),
            );
        fetch.set_head(FetchHead {
            head: head.clone(),
            shareable: true,
            revalidated: true,
            variant: (base.key.hash != base.primary).then(|| base.key.clone()),
            origin: c.origin.clone(),
            ttfb,
        });
        fetch.push(base.body.clone(), ctx.timeout);
        let vary = match &head.vary {
            Vary::Fields(n) => Some(n.clone()),
            _ => None,
        };
        if !ctx
            .purges
            .purged_since(job.purge_mark, &base.key, &base.customer)
        {
            let obj = StoredObject::new(
                base.key.clone(),
                base.primary,
                base.customer.clone(),
                head,
                base.body.clone(),
                response_time,
            );
            if ctx.store.insert(Arc::new(obj), vary) {
                ctx.counters.stored.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !close && rest.is_empty() {
            ctx.put_back(c.addr, s);
        }
        return Ok(());
    }

    let head = Arc::new(ResponseHead::from_origin(
        status,
        field_iter(),
        request_time,
        response_time,
        &ctx.via,
    ));
    let stale_stands_in = status >= 500
        && job
            .revalidate
            .as_ref()
            .is_some_and(|b| b.head.stale_if_error_ok(response_time));
    let policy = head.storable(job.authorized);
    let too_big = head.content_length.is_some_and(|l| l > ctx.max_object);
    let store_it = !fetch.pass
        && job.req.method == Method::Get
        && policy.is_ok()
        && !too_big
        && !stale_stands_in;
    let (variant, vary_names) = match &head.vary {
        Vary::Fields(names) => (
            Some(job.primary.variant(names, |n| job.req.values(n))),
            Some(names.clone()),
        ),
        _ => (None, None),
    };
    fetch.set_head(FetchHead {
        head: head.clone(),
        shareable: !fetch.pass && (store_it || stale_stands_in),
        revalidated: false,
        variant: variant.clone(),
        origin: c.origin.clone(),
        ttfb,
    });
    if !store_it {
        if !fetch.pass {
            ctx.misses.release(&fetch.key, fetch);
            if policy.is_err() || too_big {
                ctx.misses.pass_for(&fetch.key, PASS_FOR);
            }
        }
        fetch.stop_keeping();
    }

    // The body.
    let te_chunked = get("transfer-encoding").is_some_and(|v| {
        v.split(|&b| b == b',')
            .any(|t| trim(t).eq_ignore_ascii_case(b"chunked"))
    });
    let no_body = matches!(status, 100..=199 | 204 | 304) || job.req.method == Method::Head;
    let length = get("content-length").and_then(|v| parse_u64(trim(v)));
    let mut kept = store_it;
    let mut total: u64 = 0;
    let mut reusable = !close;
    let deliver = |data: Bytes, total: &mut u64, kept: &mut bool| -> Result<(), Failure> {
        if data.is_empty() {
            return Ok(());
        }
        *total += data.len() as u64;
        ctx.counters
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if *kept && *total > ctx.max_object {
            // Larger than we store: keep streaming it, stop keeping it.
            *kept = false;
            ctx.misses.pass_for(&fetch.key, PASS_FOR);
            fetch.stop_keeping();
        }
        if fetch.push(data, ctx.timeout) {
            Ok(())
        } else {
            Err(Failure::Abandoned)
        }
    };
    let mut chunk = vec![0u8; 64 * 1024];
    let mut last = Bytes::new();
    if no_body {
        reusable &= rest.is_empty();
    } else if te_chunked {
        let mut dec = ChunkedDecoder::new(u64::MAX);
        let mut input = rest.to_vec();
        loop {
            let mut out = Vec::new();
            let used = dec
                .decode(&input, |b| out.extend_from_slice(b))
                .map_err(|e| Failure::Broken(e.to_string()))?;
            deliver(Bytes::from(out), &mut total, &mut kept)?;
            if dec.is_done() {
                reusable &= used == input.len();
                break;
            }
            let n = s.read(&mut chunk).map_err(io_failure)?;
            if n == 0 {
                return Err(Failure::Broken("closed inside a chunked body".into()));
            }
            input = chunk[..n].to_vec();
        }
    } else if let Some(len) = length {
        if rest.len() as u64 > len {
            return Err(Failure::Broken("more bytes than Content-Length".into()));
        }
        // The last piece is handed over only after the connection is back in the pool,
        // so a client that asks again right away finds it there.
        let mut got = rest.len() as u64;
        let mut pending = rest;
        while got < len {
            deliver(std::mem::take(&mut pending), &mut total, &mut kept)?;
            let want = ((len - got) as usize).min(chunk.len());
            let n = s.read(&mut chunk[..want]).map_err(io_failure)?;
            if n == 0 {
                return Err(Failure::Broken(format!(
                    "closed after {got} of {len} bytes"
                )));
            }
            got += n as u64;
            pending = Bytes::copy_from_slice(&chunk[..n]);
        }
        last = pending;
    } else {
        // Delimited by the origin closing the connection.
        reusable = false;
        deliver(rest, &mut total, &mut kept)?;
        loop {
            let n = s.read(&mut chunk).map_err(io_failure)?;
            if n == 0 {
                break;
            }
            deliver(Bytes::copy_from_slice(&chunk[..n]), &mut total, &mut kept)?;
        }
    }

    if reusable {
        ctx.put_back(c.addr, s);
    }
    deliver(last, &mut total, &mut kept)?;
    if kept && let Some(body) = fetch.body() {
        let key = variant.unwrap_or_else(|| job.primary.clone());
        if !ctx
            .purges
            .purged_since(job.purge_mark, &key, &job.route.customer)
        {
            let obj = StoredObject::new(
                key,
                job.primary.hash,
                job.route.customer.clone(),
                head,
                body,
                response_time,
            );
            if ctx.store.insert(Arc::new(obj), vary_names) {
                ctx.counters.stored.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}
