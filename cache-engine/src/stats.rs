//! Request counters, one cache-line-aligned set per worker, summed when read.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// How a request was answered, as `X-Cache` and the access log say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CacheStatus {
    /// Served from a tier, fresh.
    Hit,
    /// Fetched from the origin (stored if storable).
    Miss,
    /// Served stale (stale-while-revalidate, or stale-if-error when the origin failed).
    Stale,
    /// A stale object the origin confirmed with 304.
    Revalidated,
    /// Not cacheable: passed to the origin (unsafe methods, non-shareable responses).
    Pass,
    /// Answered by the cache itself with an error (bad request, unknown host, origin down).
    Error,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Pass => "PASS",
            CacheStatus::Error => "ERROR",
        }
    }
}

/// Counters of one worker.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Counters {
    pub requests: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale: AtomicU64,
    pub revalidated: AtomicU64,
    pub pass: AtomicU64,
    pub errors: AtomicU64,
    pub coalesced: AtomicU64,
    pub status_2xx: AtomicU64,
    pub status_3xx: AtomicU64,
    pub status_4xx: AtomicU64,
    pub status_5xx: AtomicU64,
    pub bytes_out: AtomicU64,
    pub rejected_requests: AtomicU64,
    pub accepted: AtomicU64,
    pub refused_connections: AtomicU64,
    pub closed: AtomicU64,
    pub timeouts_head: AtomicU64,
    pub timeouts_body: AtomicU64,
    pub timeouts_idle: AtomicU64,
    pub timeouts_send: AtomicU64,
}

#[inline]
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Records one finished response.
    pub fn record(&self, status: u16, cache: CacheStatus, bytes: u64) {
        bump(&self.requests);
        bump(match cache {
            CacheStatus::Hit => &self.hits,
            CacheStatus::Miss => &self.misses,
            CacheStatus::Stale => &self.stale,
            CacheStatus::Revalidated => &self.revalidated,
            CacheStatus::Pass => &self.pass,
            CacheStatus::Error => &self.errors,
        });
        bump(match status {
            200..=299 => &self.status_2xx,
            300..=399 => &self.status_3xx,
            400..=499 => &self.status_4xx,
            _ => &self.status_5xx,
        });
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Totals over every worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStats {
    pub requests: u64,
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub revalidated: u64,
    pub pass: u64,
    pub errors: u64,
    /// Requests that waited for another request's origin fetch.
    pub coalesced: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub bytes_out: u64,
    /// Requests refused as malformed, too large or too slow.
    pub rejected: u64,
}

/// Connection totals over every worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStats {
    pub open: u64,
    pub accepted: u64,
    /// Refused with 503 at `max_connections`.
    pub refused: u64,
    pub closed: u64,
    pub timeouts_head: u64,
    pub timeouts_body: u64,
    pub timeouts_idle: u64,
    pub timeouts_send: u64,
}

/// Sums every worker's counters.
pub fn sum<'a>(
    workers: impl IntoIterator<Item = &'a Counters>,
    open: u64,
) -> (RequestStats, ConnectionStats) {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut r = RequestStats::default();
    let mut c = ConnectionStats {
        open,
        ..ConnectionStats::default()
    };
    for w in workers {
        r.requests += g(&w.requests);
        r.hits += g(&w.hits);
        r.misses += g(&w.misses);
        r.stale += g(&w.stale);
        r.revalidated += g(&w.revalidated);
        r.pass += g(&w.pass);
        r.errors += g(&w.errors);
        r.coalesced += g(&w.coalesced);
        r.status_2xx += g(&w.status_2xx);
        r.status_3xx += g(&w.status_3xx);
        r.status_4xx += g(&w.status_4xx);
        r.status_5xx += g(&w.status_5xx);
        r.bytes_out += g(&w.bytes_out);
        r.rejected += g(&w.rejected_requests);
        c.accepted += g(&w.accepted);
        c.refused += g(&w.refused_connections);
        c.closed += g(&w.closed);
        c.timeouts_head += g(&w.timeouts_head);
        c.timeouts_body += g(&w.timeouts_body);
        c.timeouts_idle += g(&w.timeouts_idle);
        c.timeouts_send += g(&w.timeouts_send);
    }
    (r, c)
}
