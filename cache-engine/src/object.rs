//! Responses as the cache keeps them: the head as ready-to-send bytes with the RFC 9111 facts about it, and the body.
//!
//! [`ResponseHead::from_origin`] turns an origin's response head into the stored form:
//! hop-by-hop fields (and those named by `Connection`), `Content-Length`,
//! `Transfer-Encoding` and `Age` are removed, our `Via` is added, and the rest is
//! rendered once into [`ResponseHead::block`]. A hit then only writes the status line,
//! that block, `Age`, `X-Cache` and `Content-Length` in front of the body.
//!
//! Freshness (RFC 9111 §4.2): the lifetime is `s-maxage`, else `max-age`, else
//! `Expires - Date`, else (for heuristically cacheable statuses with `Last-Modified`)
//! 10 % of `Date - Last-Modified`, at most a day. Ages follow §4.2.3 exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};

use crate::http::{self, connection_tokens, is_hop_by_hop, parse_date, parse_u64, trim};
use crate::key::CacheKey;
use crate::store::EvictMeta;

/// Longest heuristic freshness lifetime.
pub const MAX_HEURISTIC_SECS: u64 = 86_400;

/// Statuses cacheable without explicit freshness (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Response `Cache-Control` directives a shared cache acts on (RFC 9111 §5.2.2, RFC 5861).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` value given. Unknown directives are ignored;
    /// a malformed delta-seconds counts as 0 (stale), the safe reading.
    pub fn parse<'a>(values: impl Iterator<Item = &'a [u8]>) -> CacheControl {
        let mut cc = CacheControl::default();
        for v in values {
            for d in split_directives(v) {
                let (name, arg) = match d.iter().position(|&b| b == b'=') {
                    Some(i) => (trim(&d[..i]), Some(unquote(trim(&d[i + 1..])))),
                    None => (trim(d), None),
                };
                let secs = || arg.and_then(parse_u64).unwrap_or(0);
                let n = name.to_ascii_lowercase();
                match n.as_slice() {
                    b"max-age" => cc.max_age = Some(secs()),
                    b"s-maxage" => cc.s_maxage = Some(secs()),
                    b"no-store" => cc.no_store = true,
                    // Qualified forms (no-cache="field") are treated as unqualified.
                    b"no-cache" => cc.no_cache = true,
                    b"private" => cc.private = true,
                    b"public" => cc.public = true,
                    b"must-revalidate" => cc.must_revalidate = true,
                    b"proxy-revalidate" => cc.proxy_revalidate = true,
                    b"stale-while-revalidate" => cc.stale_while_revalidate = Some(secs()),
                    b"stale-if-error" => cc.stale_if_error = Some(secs()),
                    _ => {}
                }
            }
        }
        cc
    }

    /// Stale responses may not be served without revalidation (must-revalidate,
    /// proxy-revalidate, and s-maxage which implies it).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

/// Splits a directive list on commas outside quoted strings.
fn split_directives(v: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, &b) in v.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&v[start..]);
    out.into_iter().filter(|d| !trim(d).is_empty()).collect()
}

fn unquote(v: &[u8]) -> &[u8] {
    v.strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(v)
}

/// What `Vary` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    None,
    /// Lowercased field names, in order.
    Fields(Arc<[Box<str>]>),
    /// `Vary: *`: never reusable.
    Any,
}

/// The clock facts of one response (Unix seconds), for ages and freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// When the request that got this response was sent.
    pub request_time: u64,
    /// When the response (head) arrived.
    pub response_time: u64,
    /// `Date`, or the response time when absent.
    pub date: u64,
    /// `Age` as received.
    pub age_value: u64,
}

impl Timing {
    /// corrected_initial_age (RFC 9111 §4.2.3).
    pub fn initial_age(&self) -> u64 {
        let apparent = self.response_time.saturating_sub(self.date);
        let delay = self.response_time.saturating_sub(self.request_time);
        apparent.max(self.age_value + delay)
    }

    /// current_age at `now`.
    pub fn current_age(&self, now: u64) -> u64 {
        self.initial_age() + now.saturating_sub(self.response_time)
    }
}

/// A response head in stored form.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    /// End-to-end fields in order (name as received, value).
    pub fields: Vec<(Box<str>, Bytes)>,
    /// `fields` and our `Via`, rendered as `Name: value\r\n` lines.
    pub block: Bytes,
    /// Body length announced by the origin, if any.
    pub content_length: Option<u64>,
    pub etag: Option<Bytes>,
    pub last_modified: Option<u64>,
    pub vary: Vary,
    pub cc: CacheControl,
    pub timing: Timing,
    /// Freshness lifetime in seconds.
    pub lifetime: u64,
    /// The response sets a cookie (never stored, like nginx).
    pub set_cookie: bool,
    pub has_expires: bool,
}

impl ResponseHead {
    /// The stored form of an origin response head.
    pub fn from_origin<'a>(
        status: u16,
        headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
        timing_req: u64,
        timing_resp: u64,
        via: &str,
    ) -> ResponseHead {
        let conn_listed = connection_tokens(headers.clone());
        let mut fields = Vec::new();
        let mut content_length = None;
        let mut age_value = 0;
        for (n, v) in headers {
            if n.eq_ignore_ascii_case("content-length") {
                content_length = parse_u64(trim(v));
                continue;
            }
            if n.eq_ignore_ascii_case("age") {
                age_value = parse_u64(trim(v)).unwrap_or(0);
                continue;
            }
            if is_hop_by_hop(n) || conn_listed.iter().any(|c| n.eq_ignore_ascii_case(c)) {
                continue;
            }
            fields.push((Box::from(n), Bytes::copy_from_slice(v)));
        }
        ResponseHead::build(
            status,
            fields,
            content_length,
            timing_req,
            timing_resp,
            age_value,
            via,
        )
    }

    fn build(
        status: u16,
        fields: Vec<(Box<str>, Bytes)>,
        content_length: Option<u64>,
        request_time: u64,
        response_time: u64,
        age_value: u64,
        via: &str,
    ) -> ResponseHead {
        let get = |name: &'static str| field_values(&fields, name);
        let cc = CacheControl::parse(get("cache-control"));
        let date = get("date")
            .next()
            .and_then(parse_date)
            .unwrap_or(response_time);
        let last_modified = get("last-modified").next().and_then(parse_date);
        let etag = get("etag").next().map(|v| Bytes::copy_from_slice(trim(v)));
        let expires = get("expires").next();
        let has_expires = expires.is_some();
        let mut vary_names: Vec<Box<str>> = Vec::new();
        let mut any = false;
        for v in get("vary") {
            for t in v.split(|&b| b == b',') {
                let t = trim(t);
                if t == b"*" {
                    any = true;
                } else if !t.is_empty() {
                    let name: Box<str> = String::from_utf8_lossy(t).to_ascii_lowercase().into();
                    if !vary_names.contains(&name) {
                        vary_names.push(name);
                    }
                }
            }
        }
        let vary = if any {
            Vary::Any
        } else if vary_names.is_empty() {
            Vary::None
        } else {
            Vary::Fields(vary_names.into())
        };
        let set_cookie = get("set-cookie").next().is_some();
        let timing = Timing {
            request_time,
            response_time,
            date,
            age_value,
        };
        let lifetime = if let Some(s) = cc.s_maxage {
            s
        } else if let Some(m) = cc.max_age {
            m
        } else if let Some(e) = expires {
            // An invalid Expires (e.g. "0") means already expired.
            parse_date(e).map_or(0, |e| e.saturating_sub(date))
        } else if (heuristically_cacheable(status) || cc.public)
            && let Some(lm) = last_modified
        {
            (date.saturating_sub(lm) / 10).min(MAX_HEURISTIC_SECS)
        } else {
            0
        };
        let mut block = BytesMut::with_capacity(256);
        for (n, v) in &fields {
            block.put_slice(n.as_bytes());
            block.put_slice(b": ");
            block.put_slice(v);
            block.put_slice(b"\r\n");
        }
        block.put_slice(b"Via: ");
        block.put_slice(via.as_bytes());
        block.put_slice(b"\r\n");
        ResponseHead {
            status,
            fields,
            block: block.freeze(),
            content_length,
            etag,
            last_modified,
            vary,
            cc,
            timing,
            lifetime,
            set_cookie,
            has_expires,
        }
    }

    /// A head as the disk tier stored it: the same fields, body length and clock facts
    /// give the same derived facts (freshness, validators, Vary) as when it was stored.
    pub fn restore(
        status: u16,
        fields: Vec<(Box<str>, Bytes)>,
        content_length: Option<u64>,
        timing: Timing,
        via: &str,
    ) -> ResponseHead {
        let mut h = ResponseHead::build(
            status,
            fields,
            content_length,
            timing.request_time,
            timing.response_time,
            timing.age_value,
            via,
        );
        h.timing = timing;
        h
    }

    /// This head updated by a 304 to a revalidation (RFC 9111 §4.3.4): fields the 304
    /// carries replace the stored ones of the same name; the clock restarts.
    pub fn updated_by<'a>(
        &self,
        not_modified: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
        request_time: u64,
        response_time: u64,
        via: &str,
    ) -> ResponseHead {
        let fresh = ResponseHead::from_origin(304, not_modified, request_time, response_time, via);
        let mut fields: Vec<(Box<str>, Bytes)> = self
            .fields
            .iter()
            .filter(|(n, _)| !fresh.fields.iter().any(|(m, _)| m.eq_ignore_ascii_case(n)))
            .cloned()
            .collect();
        fields.extend(
            fresh
                .fields
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("content-encoding"))
                .cloned(),
        );
        ResponseHead::build(
            self.status,
            fields,
            self.content_length,
            request_time,
            response_time,
            fresh.timing.age_value,
            via,
        )
    }

    /// Whether a shared cache may store this response to a GET (RFC 9111 §3), given
    /// whether the request carried `Authorization`.
    pub fn storable(&self, authorized: bool) -> Result<(), &'static str> {
        if matches!(self.status, 100..=199 | 206 | 304) {
            return Err("status is not storable");
        }
        if self.cc.no_store {
            return Err("no-store");
        }
        if self.cc.private {
            return Err("private");
        }
        if self.set_cookie {
            return Err("Set-Cookie");
        }
        if self.vary == Vary::Any {
            return Err("Vary: *");
        }
        if authorized && !(self.cc.public || self.cc.s_maxage.is_some() || self.cc.must_revalidate)
        {
            return Err("request had Authorization");
        }
        let explicit = self.cc.max_age.is_some() || self.cc.s_maxage.is_some() || self.has_expires;
        if !explicit && !heuristically_cacheable(self.status) && !self.cc.public {
            return Err("status needs explicit freshness");
        }
        if self.lifetime == 0 && self.etag.is_none() && self.last_modified.is_none() {
            return Err("no freshness and no validator");
        }
        Ok(())
    }

    /// Fresh at `now`: usable without contacting the origin.
    pub fn is_fresh(&self, now: u64) -> bool {
        !self.cc.no_cache && self.timing.current_age(now) < self.lifetime
    }

    /// Seconds the response has been stale at `now` (0 while fresh).
    pub fn staleness(&self, now: u64) -> u64 {
        self.timing.current_age(now).saturating_sub(self.lifetime)
    }

    /// May be served stale while a revalidation runs in the background.
    pub fn stale_while_revalidate_ok(&self, now: u64) -> bool {
        !self.cc.forbids_stale()
            && self
                .cc
                .stale_while_revalidate
                .is_some_and(|w| self.staleness(now) <= w)
    }

    /// May be served stale because the origin failed.
    pub fn stale_if_error_ok(&self, now: u64) -> bool {
        !self.cc.forbids_stale()
            && self
                .cc
                .stale_if_error
                .is_some_and(|w| self.staleness(now) <= w)
    }

    /// Has a validator to revalidate with.
    pub fn has_validator(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }

    /// The first value of a stored field.
    pub fn field(&self, name: &str) -> Option<&Bytes> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether the client's conditionals (`If-None-Match`, else `If-Modified-Since`)
    /// hold for this response, i.e. a 304 is the answer (RFC 9110 §13.2.2).
    pub fn not_modified_for(
        &self,
        if_none_match: Option<&[u8]>,
        if_modified_since: Option<&[u8]>,
    ) -> bool {
        if !(200..300).contains(&self.status) {
            return false;
        }
        if let Some(inm) = if_none_match {
            let Some(etag) = &self.etag else {
                return false;
            };
            let ours = weak(etag);
            return inm
                .split(|&b| b == b',')
                .map(trim)
                .any(|t| t == b"*" || weak(t) == ours);
        }
        if let (Some(ims), Some(lm)) = (
            if_modified_since.and_then(http::parse_date),
            self.last_modified,
        ) {
            return lm <= ims;
        }
        false
    }

    /// Whether `If-Range` allows a partial response (a strong ETag or the exact date).
    pub fn if_range_holds(&self, if_range: &[u8]) -> bool {
        let v = trim(if_range);
        if v.starts_with(b"\"") || v.starts_with(b"W/") {
            return !v.starts_with(b"W/")
                && self
                    .etag
                    .as_deref()
                    .is_some_and(|e| !e.starts_with(b"W/") && e == v);
        }
        match (http::parse_date(v), self.last_modified) {
            (Some(d), Some(lm)) => d == lm,
            _ => false,
        }
    }
}

/// The values of every field named `name`.
fn field_values<'a>(
    fields: &'a [(Box<str>, Bytes)],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    fields
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// An entity tag without its weakness marker (weak comparison).
fn weak(t: &[u8]) -> &[u8] {
    t.strip_prefix(b"W/").unwrap_or(t)
}

/// A complete response in a tier: its key, head, body and bookkeeping.
#[derive(Debug)]
pub struct StoredObject {
    /// The key it is stored under (a variant key when the response varies).
    pub key: CacheKey,
    /// The primary key hash (tiers shard by it, so every variant lives beside its URL).
    pub primary: u128,
    pub customer: Arc<str>,
    pub head: Arc<ResponseHead>,
    pub body: Bytes,
    /// Unix seconds when it was stored.
    pub stored_at: u64,
    pub hits: AtomicU64,
    /// The eviction policy's per-object state (the only thing hits touch).
    pub evict: Arc<EvictMeta>,
}

impl StoredObject {
    /// Bytes this object is charged for in a tier.
    pub fn charge(key: &CacheKey, head: &ResponseHead, body: &Bytes) -> u64 {
        (body.len() + head.block.len() + key.text.len() + 256) as u64
    }

    pub fn new(
        key: CacheKey,
        primary: u128,
        customer: Arc<str>,
        head: Arc<ResponseHead>,
        body: Bytes,
        now: u64,
    ) -> StoredObject {
        let size = StoredObject::charge(&key, &head, &body);
        let evict = Arc::new(EvictMeta::new(key.hash, primary, size));
        StoredObject {
            key,
            primary,
            customer,
            head,
            body,
            stored_at: now,
            hits: AtomicU64::new(0),
            evict,
        }
    }

    pub fn size(&self) -> u64 {
        self.evict.size
    }

    /// Records a hit: the hit counter and the eviction policy's access bit.
    pub fn touch(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.evict.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[(&str, &str)], status: u16, now: u64) -> ResponseHead {
        ResponseHead::from_origin(
            status,
            fields.iter().map(|(n, v)| (*n, v.as_bytes())),
            now,
            now,
            "1.1 test (popnet)",
        )
    }

    #[test]
    fn freshness_sources() {
        let now = 1_700_000_000;
        let date = http::format_date(now);
        let h = head(
            &[
                ("Date", &date),
                ("Cache-Control", "max-age=60, s-maxage=120"),
            ],
            200,
            now,
        );
        assert_eq!(h.lifetime, 120);
        assert!(h.cc.forbids_stale());
        let exp = http::format_date(now + 30);
        let h = head(&[("Date", &date), ("Expires", &exp)], 200, now);
        assert_eq!(h.lifetime, 30);
        let h = head(&[("Date", &date), ("Expires", "0")], 200, now);
        assert_eq!(h.lifetime, 0);
        let lm = http::format_date(now - 1000);
        let h = head(&[("Date", &date), ("Last-Modified", &lm)], 200, now);
        assert_eq!(h.lifetime, 100);
        assert!(h.storable(false).is_ok());
        let h = head(&[("Date", &date), ("Last-Modified", &lm)], 302, now);
        assert_eq!(h.lifetime, 0);
        assert!(h.storable(false).is_err());
        // Age from upstream counts against the lifetime.
        let h = head(
            &[
                ("Date", &date),
                ("Cache-Control", "max-age=60"),
                ("Age", "50"),
            ],
            200,
            now,
        );
        assert!(h.is_fresh(now + 9));
        assert!(!h.is_fresh(now + 10));
        let h = head(&[("Cache-Control", "private, max-age=60")], 200, now);
        assert_eq!(h.storable(false), Err("private"));
        let h = head(&[("Cache-Control", "max-age=60")], 200, now);
        assert_eq!(h.storable(true), Err("request had Authorization"));
        let h = head(&[("Cache-Control", "public, max-age=60")], 200, now);
        assert!(h.storable(true).is_ok());
        let h = head(
            &[(
                "Cache-Control",
                "max-age=1, stale-while-revalidate=10, stale-if-error=100",
            )],
            200,
            now,
        );
        assert!(h.stale_while_revalidate_ok(now + 5));
        assert!(!h.stale_while_revalidate_ok(now + 20));
        assert!(h.stale_if_error_ok(now + 50));
        let h = head(
            &[(
                "Cache-Control",
                "max-age=1, must-revalidate, stale-if-error=100",
            )],
            200,
            now,
        );
        assert!(!h.stale_if_error_ok(now + 50));
    }

    #[test]
    fn stored_form_and_304_update() {
        let now = 1_700_000_000;
        let h = head(
            &[
                ("Connection", "close, X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Content-Length", "5"),
                ("ETag", "\"v1\""),
                ("X-Version", "1"),
                ("Cache-Control", "max-age=10"),
            ],
            200,
            now,
        );
        let text = String::from_utf8(h.block.to_vec()).unwrap();
        assert_eq!(
            text,
            "ETag: \"v1\"\r\nX-Version: 1\r\nCache-Control: max-age=10\r\nVia: 1.1 test (popnet)\r\n"
        );
        assert_eq!(h.content_length, Some(5));
        let u = h.updated_by(
            [
                ("X-Version", b"2".as_slice()),
                ("Cache-Control", b"max-age=99".as_slice()),
            ]
            .into_iter(),
            now + 20,
            now + 20,
            "1.1 test (popnet)",
        );
        assert_eq!(
            u.field("x-version").map(|v| v.as_ref()),
            Some(b"2".as_slice())
        );
        assert_eq!(u.lifetime, 99);
        assert!(u.is_fresh(now + 30));
        assert_eq!(u.etag.as_deref(), Some(b"\"v1\"".as_slice()));
        assert!(u.not_modified_for(Some(b"W/\"v1\""), None));
        assert!(!u.not_modified_for(Some(b"\"v2\""), None));
        assert!(u.if_range_holds(b"\"v1\""));
        assert!(!u.if_range_holds(b"W/\"v1\""));
    }
}
