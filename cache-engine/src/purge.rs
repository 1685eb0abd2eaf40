//! Purge requests and the log that keeps an in-flight fetch from storing an object purged while it was fetched.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::key::CacheKey;
use crate::object::StoredObject;

/// What to purge (the JSON body of `POST /purge`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purge {
    /// One URL with all its variants, e.g. `http://static.demo.example/obj/1k`.
    Url(String),
    /// Every URL starting with this one, e.g. `http://static.demo.example/obj/`.
    Prefix(String),
    /// Everything of one customer.
    Customer(String),
}

/// A purge resolved to key texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    Url(CacheKey),
    Prefix(String),
    Customer(String),
}

impl Matcher {
    /// Resolves a purge request; `Err` explains a malformed URL.
    pub fn from_purge(p: &Purge) -> Result<Matcher, String> {
        match p {
            Purge::Url(u) => CacheKey::from_url(u)
                .map(Matcher::Url)
                .ok_or_else(|| format!("{u:?} is not an http URL such as http://host/path")),
            Purge::Prefix(u) => {
                let (host, target) = crate::key::split_url(u).ok_or_else(|| {
                    format!("{u:?} is not an http URL prefix such as http://host/dir/")
                })?;
                let mut t = crate::key::normalize_host(host);
                // "http://host" purges the whole host; "http://host/a" everything under /a.
                if u.trim_end_matches('/').len() > u.find("//").map_or(0, |i| i + 2) + host.len() {
                    t.push_str(target);
                }
                Ok(Matcher::Prefix(t))
            }
            Purge::Customer(c) => Ok(Matcher::Customer(c.clone())),
        }
    }

    pub fn matches(&self, key: &CacheKey, customer: &str) -> bool {
        match self {
            Matcher::Url(k) => key.primary_text() == &*k.text,
            Matcher::Prefix(p) => key.text.starts_with(p.as_str()),
            Matcher::Customer(c) => customer == c,
        }
    }

    pub fn matches_object(&self, o: &StoredObject) -> bool {
        self.matches(&o.key, &o.customer)
    }
}

const KEPT: usize = 1024;

/// Recent purges, numbered, so that a fetch started before a purge does not store
/// what the purge meant to remove.
#[derive(Default)]
pub struct PurgeLog {
    seq: AtomicU64,
    recent: Mutex<VecDeque<(u64, Matcher)>>,
}

impl PurgeLog {
    /// The current purge number (taken when a fetch starts).
    pub fn mark(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Records a purge (before the tiers are purged).
    pub fn record(&self, m: Matcher) {
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        r.push_back((n, m));
        while r.len() > KEPT {
            r.pop_front();
        }
    }

    /// Whether a purge after `mark` covers this key (or so many happened that it
    /// cannot be told: then assume so).
    pub fn purged_since(&self, mark: u64, key: &CacheKey, customer: &str) -> bool {
        if self.seq.load(Ordering::Acquire) == mark {
            return false;
        }
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.front().is_some_and(|(n, _)| *n > mark + 1) {
            return true;
        }
        r.iter()
            .filter(|(n, _)| *n > mark)
            .any(|(_, m)| m.matches(key, customer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_and_log() {
        let k = CacheKey::from_url("http://a.example/x/y?z").unwrap();
        let m = |p: Purge| Matcher::from_purge(&p).unwrap();
        assert!(m(Purge::Url("http://A.example/x/y?z".into())).matches(&k, "c"));
        assert!(!m(Purge::Url("http://a.example/x/y".into())).matches(&k, "c"));
        assert!(m(Purge::Prefix("http://a.example/x/".into())).matches(&k, "c"));
        assert!(m(Purge::Prefix("http://a.example".into())).matches(&k, "c"));
        assert!(!m(Purge::Prefix("http://a.example/y".into())).matches(&k, "c"));
        assert!(m(Purge::Customer("c".into())).matches(&k, "c"));
        assert!(Matcher::from_purge(&Purge::Url("ftp://x/y".into())).is_err());
        let log = PurgeLog::default();
        let mark = log.mark();
        assert!(!log.purged_since(mark, &k, "c"));
        log.record(m(Purge::Customer("other".into())));
        assert!(!log.purged_since(mark, &k, "c"));
        log.record(m(Purge::Prefix("http://a.example/x".into())));
        assert!(log.purged_since(mark, &k, "c"));
    }
}
