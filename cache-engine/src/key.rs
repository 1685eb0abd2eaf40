//! Cache keys: host + path + query, and the variant keys of responses that `Vary`.
//!
//! The primary key text is `host` (lowercased, without port or trailing dot) followed
//! by the request target (`/path?query`, as sent). A variant key appends, for every
//! field name of the stored response's `Vary`, `\n` + name + `:` + the request's
//! (trimmed, comma-joined) values of that field. `\n` cannot occur in a host or a
//! target, so no two distinct requests share a key text. Tiers index by the 128-bit
//! xxh3 of the text and compare the full text on every hit, so a hash collision is
//! a miss, never a wrong object.

use std::fmt::Write as _;

use xxhash_rust::xxh3::xxh3_128;

use crate::http::trim;

/// A cache key: its text and the hash tiers index it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    pub text: Box<str>,
    pub hash: u128,
}

impl CacheKey {
    pub fn from_text(text: &str) -> CacheKey {
        CacheKey {
            hash: xxh3_128(text.as_bytes()),
            text: text.into(),
        }
    }

    /// The primary key of `target` on `host` (already normalised by [`normalize_host`]).
    pub fn primary(host: &str, target: &str) -> CacheKey {
        let mut t = String::with_capacity(host.len() + target.len());
        t.push_str(host);
        t.push_str(target);
        CacheKey {
            hash: xxh3_128(t.as_bytes()),
            text: t.into_boxed_str(),
        }
    }

    /// The key of `url` (`http://host/path?q`, or `host/path?q`), as purge and
    /// inspection requests name objects. `None` when it is not such a URL.
    pub fn from_url(url: &str) -> Option<CacheKey> {
        let (host, target) = split_url(url)?;
        Some(CacheKey::primary(&normalize_host(host), target))
    }

    /// The variant key for a response varying on `names`, given a request's headers.
    pub fn variant<'a>(
        &self,
        names: &[Box<str>],
        headers: impl Fn(&str) -> Vec<&'a [u8]>,
    ) -> CacheKey {
        let mut t = String::with_capacity(self.text.len() + 32 * names.len());
        t.push_str(&self.text);
        for n in names {
            let _ = write!(t, "\n{n}:");
            for (i, v) in headers(n).into_iter().enumerate() {
                if i > 0 {
                    t.push(',');
                }
                t.push_str(&String::from_utf8_lossy(trim(v)));
            }
        }
        CacheKey {
            hash: xxh3_128(t.as_bytes()),
            text: t.into_boxed_str(),
        }
    }

    /// The primary key text of this (possibly variant) key.
    pub fn primary_text(&self) -> &str {
        self.text.split('\n').next().unwrap_or("")
    }
}

/// Splits `http://host/path?q` (or `host/path?q`) into host and target; a bare host
/// gets the target `/`.
pub fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("HTTP://"))
        .unwrap_or(url);
    if rest.contains("://") {
        return None;
    }
    let (host, target) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => rest.split_at(i),
        Some(_) => return None,
        None => (rest, "/"),
    };
    if host.is_empty() || host.contains(['\n', ' ', '@']) || target.contains(['\n', ' ']) {
        return None;
    }
    Some((host, target))
}

/// Lowercases a host, drops its port and a trailing dot.
pub fn normalize_host(host: &str) -> String {
    let mut s = String::with_capacity(host.len());
    normalize_host_into(host, &mut s);
    s
}

/// [`normalize_host`] into a reused buffer.
pub fn normalize_host_into(host: &str, out: &mut String) {
    out.clear();
    let no_port = if host.starts_with('[') {
        // [v6]:port
        match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        }
    } else {
        match host.rfind(':') {
            Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
            _ => host,
        }
    };
    let no_dot = no_port.strip_suffix('.').unwrap_or(no_port);
    out.extend(no_dot.chars().map(|c| c.to_ascii_lowercase()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            normalize_host("Static.Demo.Example.:8080"),
            "static.demo.example"
        );
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        let k = CacheKey::primary("a.example", "/x?y=1");
        assert_eq!(&*k.text, "a.example/x?y=1");
        assert_eq!(
            CacheKey::from_url("http://A.example:80/x?y=1"),
            Some(k.clone())
        );
        assert_eq!(
            CacheKey::from_url("a.example"),
            Some(CacheKey::primary("a.example", "/"))
        );
        assert_eq!(CacheKey::from_url("https://a.example/"), None);
        let names: Vec<Box<str>> = vec!["accept-encoding".into()];
        let v1 = k.variant(&names, |_| vec![b" gzip ".as_slice()]);
        let v2 = k.variant(&names, |_| vec![b"br".as_slice()]);
        assert_ne!(v1.hash, v2.hash);
        assert_eq!(v1.primary_text(), "a.example/x?y=1");
        assert_eq!(&*v1.text, "a.example/x?y=1\naccept-encoding:gzip");
    }
}
