//! Rollups: the per-minute and per-hour sums that graphs, stats and bills read, built from records in memory before they are written.

use std::collections::HashMap;

use logship::{AccessRecord, DnsRecord, ProbeRecord};
use serde::{Deserialize, Serialize};

/// Resolutions kept: per minute and per hour (seconds per bucket).
pub const RESOLUTIONS: [i64; 2] = [crate::time::MINUTE, crate::time::HOUR];

/// HTTP sums of one bucket (one customer, one POP, one minute or hour).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http {
    pub requests: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    /// STALE and REVALIDATED answers.
    pub stale: u64,
    pub pass: u64,
    pub errors: u64,
    pub s2xx: u64,
    pub s3xx: u64,
    pub s4xx: u64,
    pub s5xx: u64,
    /// 1xx and anything out of range.
    pub s_other: u64,
    /// Sum of times to first byte, microseconds (divide by requests for the mean).
    pub ttfb_us: u64,
}

impl Http {
    pub fn add_record(&mut self, r: &AccessRecord) {
        self.requests += 1;
        self.bytes = self.bytes.saturating_add(r.bytes);
        match r.cache.as_str() {
            "HIT" => self.hits += 1,
            "MISS" => self.misses += 1,
            "STALE" | "REVALIDATED" => self.stale += 1,
            "PASS" => self.pass += 1,
            _ => self.errors += 1,
        }
        match r.status / 100 {
            2 => self.s2xx += 1,
            3 => self.s3xx += 1,
            4 => self.s4xx += 1,
            5 => self.s5xx += 1,
            _ => self.s_other += 1,
        }
        self.ttfb_us = self.ttfb_us.saturating_add(r.ttfb_us);
    }

    pub fn add(&mut self, o: &Http) {
        self.requests += o.requests;
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.hits += o.hits;
        self.misses += o.misses;
        self.stale += o.stale;
        self.pass += o.pass;
        self.errors += o.errors;
        self.s2xx += o.s2xx;
        self.s3xx += o.s3xx;
        self.s4xx += o.s4xx;
        self.s5xx += o.s5xx;
        self.s_other += o.s_other;
        self.ttfb_us = self.ttfb_us.saturating_add(o.ttfb_us);
    }

    /// Hits over hits and misses (what the cache could have served), 0 without either.
    pub fn hit_ratio(&self) -> f64 {
        let d = self.hits + self.stale + self.misses;
        if d == 0 {
            0.0
        } else {
            (self.hits + self.stale) as f64 / d as f64
        }
    }
}

/// Probe sums of one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub checks: u64,
    pub failures: u64,
    pub total_us: u64,
    pub max_us: u64,
}

/// Key of an HTTP bucket: (resolution, bucket start, customer, POP).
pub type HttpKey = (i64, i64, String, String);
/// Key of a DNS bucket: (resolution, start, customer, POP, domain, server, server kind).
pub type DnsKey = (i64, i64, String, String, String, String, String);
/// Key of a probe bucket: (resolution, start, customer, POP, target).
pub type ProbeKey = (i64, i64, String, String, String);

/// The rollup increments of one batch.
#[derive(Debug, Default)]
pub struct Increments {
    pub http: HashMap<HttpKey, Http>,
    pub dns: HashMap<DnsKey, u64>,
    pub probe: HashMap<ProbeKey, Probe>,
}

fn bucket(ts: i64, res: i64) -> i64 {
    ts - ts.rem_euclid(res)
}

impl Increments {
    pub fn access(&mut self, ts: i64, r: &AccessRecord) {
        for res in RESOLUTIONS {
            self.http
                .entry((res, bucket(ts, res), r.customer.clone(), r.pop.clone()))
                .or_default()
                .add_record(r);
        }
    }

    pub fn dns(&mut self, ts: i64, r: &DnsRecord) {
        for res in RESOLUTIONS {
            let k = (
                res,
                bucket(ts, res),
                r.customer.clone(),
                r.pop.clone(),
                r.domain.clone(),
                r.server.clone(),
                r.server_kind.clone(),
            );
            let v = self.dns.entry(k).or_default();
            *v = v.saturating_add(r.answers);
        }
    }

    pub fn probe(&mut self, ts: i64, r: &ProbeRecord) {
        for res in RESOLUTIONS {
            let p = self
                .probe
                .entry((
                    res,
                    bucket(ts, res),
                    r.customer.clone(),
                    r.pop.clone(),
                    r.target.clone(),
                ))
                .or_default();
            p.checks += 1;
            p.failures += u64::from(!r.ok);
            p.total_us = p.total_us.saturating_add(r.total_us);
            p.max_us = p.max_us.max(r.total_us);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: u16, cache: &str, bytes: u64) -> AccessRecord {
        AccessRecord {
            ts_ms: 0,
            pop: "p".into(),
            customer: "c".into(),
            client: "127.0.0.1:1".into(),
            method: "GET".into(),
            host: "h".into(),
            path: "/".into(),
            status,
            bytes,
            cache: cache.into(),
            origin: None,
            ttfb_us: 10,
            total_us: 20,
            origin_us: None,
        }
    }

    #[test]
    fn records_fall_into_minute_and_hour_buckets() {
        let mut inc = Increments::default();
        inc.access(3_599, &rec(200, "HIT", 100));
        inc.access(3_600, &rec(404, "MISS", 50));
        inc.access(3_659, &rec(502, "ERROR", 7));
        assert_eq!(inc.http.len(), 4); // minutes 3540, 3600; hours 0, 3600
        let h = inc.http[&(3600, 3600, "c".into(), "p".into())];
        assert_eq!((h.requests, h.bytes, h.misses, h.errors), (2, 57, 1, 1));
        assert_eq!((h.s4xx, h.s5xx), (1, 1));
        let m = inc.http[&(60, 3540, "c".into(), "p".into())];
        assert_eq!((m.requests, m.hits, m.s2xx), (1, 1, 1));
        assert_eq!(h.hit_ratio(), 0.0);
        assert_eq!(m.hit_ratio(), 1.0);
    }
}
