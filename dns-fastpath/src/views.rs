//! Client views: longest-prefix match of a resolver or client-subnet address to a view id.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use popnet_config::View;

/// A view: 0 is the default view (addresses in no configured prefix), 1.. are the
/// config's `[[views]]` in order.
pub type ViewId = u16;
/// Clients whose address lies in no view prefix.
pub const DEFAULT_VIEW: ViewId = 0;

/// The result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewMatch {
    pub view: ViewId,
    /// Length of the prefix that matched (0 for the default view).
    pub prefix_len: u8,
}

/// Prefixes of one family, longest first: (length, network bits → view).
#[derive(Debug, Clone, Default)]
struct Table<K> {
    by_len: Vec<(u8, HashMap<K, ViewId>)>,
}

impl<K: Copy + Eq + std::hash::Hash> Table<K> {
    fn insert(&mut self, len: u8, key: K, view: ViewId) {
        match self.by_len.iter_mut().find(|(l, _)| *l == len) {
            Some((_, m)) => {
                m.entry(key).or_insert(view);
            }
            None => {
                self.by_len.push((len, HashMap::from([(key, view)])));
                self.by_len.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
            }
        }
    }

    fn lookup(&self, mask: impl Fn(u8) -> K) -> Option<ViewMatch> {
        self.by_len.iter().find_map(|(len, m)| {
            m.get(&mask(*len)).map(|&view| ViewMatch {
                view,
                prefix_len: *len,
            })
        })
    }
}

fn mask4(a: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask6(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(len)))
    }
}

/// Every view and its prefixes.
#[derive(Debug, Clone, Default)]
pub struct Views {
    names: Vec<String>,
    v4: Table<u32>,
    v6: Table<u128>,
    /// Every prefix and its view (for client-subnet scopes and the XDP view trie).
    prefixes: Vec<(IpNet, ViewId)>,
}

impl Views {
    pub fn from_config(views: &[View]) -> Views {
        let mut out = Views {
            names: vec!["default".to_string()],
            ..Views::default()
        };
        for (i, v) in views.iter().enumerate() {
            let id = ViewId::try_from(i + 1).unwrap_or(ViewId::MAX);
            out.names.push(v.name.clone());
            for p in &v.prefixes {
                let p = p.trunc();
                out.prefixes.push((p, id));
                match p {
                    IpNet::V4(n) => out.v4.insert(n.prefix_len(), u32::from(n.network()), id),
                    IpNet::V6(n) => out.v6.insert(n.prefix_len(), u128::from(n.network()), id),
                }
            }
        }
        out
    }

    /// The view of `addr` (longest matching prefix), or the default view.
    pub fn lookup(&self, addr: IpAddr) -> ViewMatch {
        let found = match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.lookup(|len| mask4(a, len))
            }
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => return self.lookup(IpAddr::V4(v4)),
                None => {
                    let a = u128::from(a);
                    self.v6.lookup(|len| mask6(a, len))
                }
            },
        };
        found.unwrap_or(ViewMatch {
            view: DEFAULT_VIEW,
            prefix_len: 0,
        })
    }

    /// The EDNS client-subnet SCOPE PREFIX-LENGTH (RFC 7871 §7.2.1) of an answer chosen
    /// for `addr` by view: the shortest prefix of `addr` that is at least as long as the
    /// matched prefix and overlaps no other view prefix, so the answer is valid for every
    /// address it covers.
    pub fn scope(&self, addr: IpAddr, m: ViewMatch) -> u8 {
        let addr = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        let mut scope = m.prefix_len;
        for (p, _) in &self.prefixes {
            if p.prefix_len() <= m.prefix_len {
                continue;
            }
            let common = match (addr, p) {
                (IpAddr::V4(a), IpNet::V4(n)) => {
                    (u32::from(a) ^ u32::from(n.network())).leading_zeros()
                }
                (IpAddr::V6(a), IpNet::V6(n)) => {
                    (u128::from(a) ^ u128::from(n.network())).leading_zeros()
                }
                _ => continue,
            };
            // `addr` is outside this more specific prefix (it would have matched it), so
            // they share fewer than prefix_len bits: one more bit separates them.
            let needed = (common + 1).min(u32::from(p.prefix_len())) as u8;
            scope = scope.max(needed);
        }
        scope
    }

    /// Every prefix with its view, in config order.
    pub fn entries(&self) -> impl Iterator<Item = (IpNet, ViewId)> + '_ {
        self.prefixes.iter().copied()
    }

    /// Adds a view without prefixes (resolvers join it by address at run time); returns
    /// its id.
    pub fn add_dynamic(&mut self, name: String) -> ViewId {
        self.names.push(name);
        ViewId::try_from(self.names.len() - 1).unwrap_or(ViewId::MAX)
    }

    /// Names of every view but the default one, in id order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().skip(1).map(String::as_str)
    }

    /// Display name of a view id.
    pub fn name(&self, v: ViewId) -> &str {
        self.names.get(usize::from(v)).map_or("?", String::as_str)
    }

    /// The id of the view named `name`.
    pub fn id(&self, name: &str) -> Option<ViewId> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| ViewId::try_from(i).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views() -> Views {
        let v = |name: &str, p: &[&str]| View {
            name: name.into(),
            region: None,
            prefixes: p.iter().map(|s| s.parse().unwrap()).collect(),
        };
        Views::from_config(&[
            v("wide", &["10.0.0.0/8", "2001:db8::/32"]),
            v("narrow", &["10.1.0.0/16", "2001:db8:1::/48"]),
        ])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let v = views();
        assert_eq!(v.lookup(ip("10.2.3.4")).view, 1);
        assert_eq!(v.lookup(ip("10.1.3.4")).view, 2);
        assert_eq!(
            v.lookup(ip("192.0.2.1")),
            ViewMatch {
                view: 0,
                prefix_len: 0
            }
        );
        assert_eq!(v.lookup(ip("2001:db8:1::5")).view, 2);
        assert_eq!(v.lookup(ip("2001:db8:2::5")).view, 1);
        assert_eq!(v.lookup(ip("::ffff:10.1.0.1")).view, 2);
        assert_eq!(v.id("narrow"), Some(2));
        assert_eq!(v.name(0), "default");
    }

    #[test]
    fn scope_never_covers_a_more_specific_view() {
        let v = views();
        // 10.2.3.4 matched the /8; 10.2.x and 10.1.x share 14 leading bits, so the
        // answer holds for 10.2.0.0/15 and no wider.
        let m = v.lookup(ip("10.2.3.4"));
        let s = v.scope(ip("10.2.3.4"), m);
        assert_eq!(s, 15);
        let block: ipnet::Ipv4Net = format!("10.2.3.4/{s}")
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .trunc();
        assert!(!block.contains(&"10.1.0.0".parse::<std::net::Ipv4Addr>().unwrap()));
        // An address in the most specific prefix gets that prefix as scope.
        let m = v.lookup(ip("10.1.3.4"));
        assert_eq!(v.scope(ip("10.1.3.4"), m), 16);
        // Default view: scope just wide enough to avoid every view.
        let m = v.lookup(ip("192.0.2.1"));
        let s = v.scope(ip("192.0.2.1"), m);
        assert_eq!(s, 1, "192/1 and 10/8 differ in the first bit");
    }
}
