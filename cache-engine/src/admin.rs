//! The admin listener: purge, stats and object inspection over a small HTTP/1.1 JSON endpoint.
//!
//! | request                  | body / answer                                                      |
//! |--------------------------|--------------------------------------------------------------------|
//! | `GET /health`            | `ok`                                                               |
//! | `GET /stats`             | [`StatsReply`]: requests, connections, origin, tiers (RAM, disk), in-flight |
//! | `GET /metrics`           | the same counters (and the access-log shipper's) in the Prometheus text format |
//! | `GET /object?url=URL`    | [`ObjectReply`]: every stored variant of a URL (age, size, tier and place on disk, hits) |
//! | `POST /purge`            | a [`Purge`] as JSON, e.g. `{"url":"http://h/p"}`, `{"prefix":"http://h/d/"}`, `{"customer":"demo"}`; answers [`PurgeReply`] |
//!
//! One request per connection, bounded head and body, short timeouts. With a token in
//! the config every request needs `Authorization: Bearer <token hex>`.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::http::{format_date, unix_now};
use crate::key::CacheKey;
use crate::origin::OriginStats;
use crate::purge::{Matcher, Purge};
use crate::server::Shared;
use crate::stats::{ConnectionStats, RequestStats, sum};
use crate::store::TierStats;

const MAX_HEAD: usize = 8192;
const MAX_BODY: usize = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/stats` returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatsReply {
    pub pop: String,
    pub uptime_s: u64,
    pub workers: usize,
    pub requests: RequestStats,
    pub connections: ConnectionStats,
    pub origin: OriginStats,
    pub tiers: Vec<TierStats>,
    /// Customers served by this cache.
    pub customers: Vec<String>,
}

/// One stored object of a URL.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub customer: String,
    pub tier: String,
    pub status: u16,
    /// Body bytes.
    pub size: u64,
    /// Bytes charged to the tier.
    pub charged: u64,
    /// Current age (RFC 9111 §4.2.3), seconds.
    pub age_s: u64,
    /// Freshness lifetime, seconds.
    pub lifetime_s: u64,
    pub fresh: bool,
    pub stored_s_ago: u64,
    pub hits: u64,
    /// Disk tier: the record's byte offset in the store file, and its length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_len: Option<u64>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub vary: Vec<String>,
    pub cache_control: Option<String>,
}

/// What `/object` returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectReply {
    pub url: String,
    pub objects: Vec<ObjectInfo>,
}

/// What `/purge` returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PurgeReply {
    pub purged: u64,
}

/// Everything the admin listener reads.
pub struct AdminContext {
    pub shared: Arc<Shared>,
    pub token: Option<Vec<u8>>,
}

/// Starts the admin listener thread on an already bound listener.
pub fn start(listener: TcpListener, ctx: AdminContext) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("cache-admin".into())
        .spawn(move || {
            while !ctx.shared.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        if let Err(e) = handle(s, &ctx) {
                            tracing::debug!(error = %e, "cache admin request failed");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cache admin accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
}

struct AdminRequest {
    method: String,
    path: String,
    auth: Option<Vec<u8>>,
    body: Vec<u8>,
}

fn read_request(s: &mut TcpStream) -> io::Result<Result<Option<AdminRequest>, (u16, String)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(Ok(None));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let get = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value.to_vec())
                };
                let len = get("content-length")
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if get("transfer-encoding").is_some() {
                    return Ok(Err((411, "send the body with Content-Length".into())));
                }
                if len > MAX_BODY {
                    return Ok(Err((413, format!("body larger than {MAX_BODY} bytes"))));
                }
                let method = req.method.unwrap_or("").to_string();
                let path = req.path.unwrap_or("/").to_string();
                let auth = get("authorization");
                let mut body = buf[head..].to_vec();
                while body.len() < len {
                    let n = s.read(&mut chunk)?;
                    if n == 0 {
                        return Ok(Err((400, "the body ended early".into())));
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(len);
                return Ok(Ok(Some(AdminRequest {
                    method,
                    path,
                    auth,
                    body,
                })));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Ok(Err((431, "request head too large".into())));
            }
            Err(e) => return Ok(Err((400, format!("bad request: {e}")))),
        }
    }
}

fn handle(mut s: TcpStream, ctx: &AdminContext) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let req = match read_request(&mut s)? {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(()),
        Err((status, msg)) => {
            return reply(&mut s, status, "text/plain", format!("{msg}\n").as_bytes());
        }
    };
    if let Some(token) = &ctx.token {
        let want = format!("Bearer {}", hex::encode(token));
        if req.auth.as_deref() != Some(want.as_bytes()) {
            return reply(
                &mut s,
                401,
                "text/plain",
                b"missing or wrong admin token (Authorization: Bearer <hex>)\n",
            );
        }
    }
    let (path, query) = match req.path.split_once('?') {
        Some((p, q)) => (p, q),
        None => (req.path.as_str(), ""),
    };
    let sh = &ctx.shared;
    match (req.method.as_str(), path) {
        ("GET", "/health") => reply(&mut s, 200, "text/plain", b"ok\n"),
        ("GET", "/stats") => reply(&mut s, 200, "application/json", &json(&stats_reply(sh))),
        ("GET", "/metrics") => reply(&mut s, 200, promtext::CONTENT_TYPE, metrics(sh).as_bytes()),
        ("GET", "/object") => {
            let Some(url) = query_param(query, "url") else {
                return reply(
                    &mut s,
                    400,
                    "text/plain",
                    b"give the URL: /object?url=http://host/path\n",
                );
            };
            let Some(key) = CacheKey::from_url(&url) else {
                return reply(
                    &mut s,
                    400,
                    "text/plain",
                    format!("{url:?} is not an http URL such as http://host/path\n").as_bytes(),
                );
            };
            let now = unix_now();
            let objects: Vec<ObjectInfo> = sh
                .store
                .objects_of(&key)
                .into_iter()
                .map(|(tier, o)| ObjectInfo {
                    key: o.key.text.replace('\n', " "),
                    customer: o.customer.to_string(),
                    tier: tier.to_string(),
                    status: o.head.status,
                    size: o.body_len,
                    charged: o.charged,
                    age_s: o.head.timing.current_age(now),
                    lifetime_s: o.head.lifetime,
                    fresh: o.head.is_fresh(now),
                    stored_s_ago: now.saturating_sub(o.stored_at),
                    hits: o.hits,
                    disk_offset: o.disk.map(|d| d.0),
                    disk_len: o.disk.map(|d| d.1),
                    etag: o
                        .head
                        .etag
                        .as_ref()
                        .map(|e| String::from_utf8_lossy(e).into_owned()),
                    last_modified: o.head.last_modified.map(format_date),
                    vary: match &o.head.vary {
                        crate::object::Vary::Fields(n) => n.iter().map(|n| n.to_string()).collect(),
                        crate::object::Vary::Any => vec!["*".into()],
                        crate::object::Vary::None => Vec::new(),
                    },
                    cache_control: o
                        .head
                        .field("cache-control")
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                })
                .collect();
            if objects.is_empty() {
                return reply(
                    &mut s,
                    404,
                    "text/plain",
                    format!("nothing is stored for {url}\n").as_bytes(),
                );
            }
            reply(
                &mut s,
                200,
                "application/json",
                &json(&ObjectReply { url, objects }),
            )
        }
        ("POST", "/purge") => {
            let p: Purge = match serde_json::from_slice(&req.body) {
                Ok(p) => p,
                Err(e) => {
                    return reply(
                        &mut s,
                        400,
                        "text/plain",
                        format!(
                            "the body must be one of {{\"url\":\"http://host/path\"}}, {{\"prefix\":\"http://host/dir/\"}}, {{\"customer\":\"name\"}} ({e})\n"
                        )
                        .as_bytes(),
                    );
                }
            };
            if let Purge::Customer(c) = &p
                && !sh
                    .routes
                    .load()
                    .customers()
                    .iter()
                    .any(|x| &**x == c.as_str())
            {
                return reply(
                    &mut s,
                    404,
                    "text/plain",
                    format!("this cache serves no customer named {c:?}\n").as_bytes(),
                );
            }
            let m = match Matcher::from_purge(&p) {
                Ok(m) => m,
                Err(e) => return reply(&mut s, 400, "text/plain", format!("{e}\n").as_bytes()),
            };
            sh.purges.record(m.clone());
            let purged = sh.store.purge(&m) as u64;
            tracing::info!(?p, purged, "cache purge");
            reply(
                &mut s,
                200,
                "application/json",
                &json(&PurgeReply { purged }),
            )
        }
        (_, "/health" | "/stats" | "/metrics" | "/object" | "/purge") => reply(
            &mut s,
            405,
            "text/plain",
            b"use GET for /health, /stats, /metrics, /object and POST for /purge\n",
        ),
        _ => reply(
            &mut s,
            404,
            "text/plain",
            b"not found; try /stats, /metrics, /object?url=URL, POST /purge\n",
        ),
    }
}

fn stats_reply(sh: &Shared) -> StatsReply {
    let workers = sh.all_counters();
    let (requests, connections) = sum(
        workers.iter().map(|c| c.as_ref()),
        sh.open.load(Ordering::Relaxed) as u64,
    );
    StatsReply {
        pop: sh.pop.to_string(),
        uptime_s: sh.started.elapsed().as_secs(),
        workers: sh.workers,
        requests,
        connections,
        origin: sh.fetchers.ctx.counters.snapshot(sh.misses.in_flight()),
        tiers: sh.store.stats(),
        customers: sh
            .routes
            .load()
            .customers()
            .iter()
            .map(|c| c.to_string())
            .collect(),
    }
}

/// The cache's counters in the Prometheus text format, then the access-log sink's.
pub fn metrics(sh: &Shared) -> String {
    let st = stats_reply(sh);
    let pop = st.pop.as_str();
    let l = [("pop", pop)];
    let mut m = promtext::Metrics::new();
    m.gauge(
        "popnet_cache_uptime_seconds",
        "Seconds since the cache started.",
    )
    .sample(&l, st.uptime_s);
    let r = &st.requests;
    m.counter(
        "popnet_cache_requests_total",
        "Requests answered, by how the cache answered them.",
    )
    .sample(&[("pop", pop), ("cache", "HIT")], r.hits)
    .sample(&[("pop", pop), ("cache", "MISS")], r.misses)
    .sample(&[("pop", pop), ("cache", "STALE")], r.stale)
    .sample(&[("pop", pop), ("cache", "REVALIDATED")], r.revalidated)
    .sample(&[("pop", pop), ("cache", "PASS")], r.pass)
    .sample(&[("pop", pop), ("cache", "ERROR")], r.errors);
    m.counter(
        "popnet_cache_responses_total",
        "Responses sent, by status class.",
    )
    .sample(&[("pop", pop), ("class", "2xx")], r.status_2xx)
    .sample(&[("pop", pop), ("class", "3xx")], r.status_3xx)
    .sample(&[("pop", pop), ("class", "4xx")], r.status_4xx)
    .sample(&[("pop", pop), ("class", "5xx")], r.status_5xx);
    m.counter(
        "popnet_cache_sent_bytes_total",
        "Bytes sent to clients (heads and bodies).",
    )
    .sample(&l, r.bytes_out);
    m.counter(
        "popnet_cache_coalesced_requests_total",
        "Requests that waited for another request's origin fetch.",
    )
    .sample(&l, r.coalesced);
    m.counter(
        "popnet_cache_rejected_requests_total",
        "Requests refused as malformed, too large or too slow.",
    )
    .sample(&l, r.rejected);
    let c = &st.connections;
    m.gauge("popnet_cache_connections_open", "Client connections open.")
        .sample(&l, c.open);
    m.counter(
        "popnet_cache_connections_accepted_total",
        "Client connections accepted.",
    )
    .sample(&l, c.accepted);
    m.counter(
        "popnet_cache_connections_refused_total",
        "Client connections refused at max_connections.",
    )
    .sample(&l, c.refused);
    m.counter(
        "popnet_cache_timeouts_total",
        "Client connections timed out, by phase.",
    )
    .sample(&[("pop", pop), ("phase", "head")], c.timeouts_head)
    .sample(&[("pop", pop), ("phase", "body")], c.timeouts_body)
    .sample(&[("pop", pop), ("phase", "idle")], c.timeouts_idle)
    .sample(&[("pop", pop), ("phase", "send")], c.timeouts_send);
    let o = &st.origin;
    m.counter(
        "popnet_cache_origin_requests_total",
        "Requests sent to origins.",
    )
    .sample(&l, o.requests);
    m.counter(
        "popnet_cache_origin_failures_total",
        "Origin requests that failed, by kind.",
    )
    .sample(&[("pop", pop), ("kind", "connect")], o.connect_failures)
    .sample(&[("pop", pop), ("kind", "timeout")], o.timeouts)
    .sample(&[("pop", pop), ("kind", "broken")], o.broken);
    m.counter(
        "popnet_cache_origin_received_bytes_total",
        "Body bytes received from origins.",
    )
    .sample(&l, o.bytes);
    m.gauge(
        "popnet_cache_origin_fetches_in_flight",
        "Origin fetches under way.",
    )
    .sample(&l, o.in_flight);
    macro_rules! per_tier {
        ($kind:ident, $name:literal, $help:literal, $field:ident) => {{
            let mut f = m.$kind($name, $help);
            for t in &st.tiers {
                f.sample(&[("pop", pop), ("tier", &t.tier)], t.$field);
            }
        }};
    }
    per_tier!(
        gauge,
        "popnet_cache_tier_objects",
        "Objects stored per tier.",
        objects
    );
    per_tier!(
        gauge,
        "popnet_cache_tier_bytes",
        "Bytes stored per tier.",
        bytes
    );
    per_tier!(
        gauge,
        "popnet_cache_tier_capacity_bytes",
        "Capacity per tier.",
        capacity
    );
    per_tier!(
        counter,
        "popnet_cache_tier_hits_total",
        "Lookups that found an object, per tier.",
        hits
    );
    per_tier!(
        counter,
        "popnet_cache_tier_misses_total",
        "Lookups that found nothing usable, per tier.",
        misses
    );
    per_tier!(
        counter,
        "popnet_cache_tier_evicted_total",
        "Objects evicted per tier.",
        evicted
    );
    per_tier!(
        counter,
        "popnet_cache_tier_checksum_failures_total",
        "Records that failed their checksum when read, per tier.",
        checksum_failures
    );
    per_tier!(
        counter,
        "popnet_cache_tier_io_errors_total",
        "Failed reads and writes per tier.",
        io_errors
    );
    if let Some(log) = &sh.access_log {
        log.sink_metrics(&mut m);
    }
    m.finish()
}

/// The percent-decoded value of `name` in a query string.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 3 <= b.len()
            && let Some(x) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v)
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    out.push(b'\n');
    out
}

fn reply(s: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        crate::http::reason(status),
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_param("a=1&url=http%3A%2F%2Fh%2Fp%3Fq%3D1", "url").as_deref(),
            Some("http://h/p?q=1")
        );
        assert_eq!(query_param("url=x%2", "url").as_deref(), Some("x%2"));
        assert_eq!(query_param("a=1", "url"), None);
    }
}
