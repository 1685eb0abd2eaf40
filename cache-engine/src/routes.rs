//! Host routing: which customer, and which of its origins, serve a request's `Host` at this POP.
//!
//! Built once from the config: every static domain whose POP list includes this POP,
//! and every CNAME of the customer that points at such a domain, maps to a [`Route`].
//! A dynamic domain, or a static one served by other POPs, maps to a clear refusal
//! (never a fetch), and so does any other host.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use popnet_config::{Config, DomainKind};

/// One origin server of a route.
#[derive(Debug, Clone)]
pub struct OriginTarget {
    pub name: Arc<str>,
    pub addrs: Vec<SocketAddr>,
    /// Relative capacity (config `weight`).
    pub weight: f64,
    /// Relative cost (config `cost`).
    pub cost: f64,
}

/// What the cache does for one host.
#[derive(Debug)]
pub struct Route {
    pub customer: Arc<str>,
    /// The balanced domain serving this host.
    pub domain: Arc<str>,
    pub origins: Vec<OriginTarget>,
}

/// Why a host is not served here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    #[error("no customer of this network serves host {0:?}")]
    UnknownHost(String),
    #[error(
        "{host:?} is a dynamic name: it is served by customer {customer:?}'s origins, not by the cache"
    )]
    Dynamic { host: String, customer: String },
    #[error("{host:?} is not served by POP {pop:?} (its domain lists other POPs)")]
    OtherPop { host: String, pop: String },
}

enum HostRoute {
    Serve(Arc<Route>),
    Refuse(RouteError),
}

/// Every host this POP's cache knows.
pub struct Routes {
    hosts: HashMap<Box<str>, HostRoute>,
}

impl Routes {
    /// The routes of POP `pop` in `cfg`.
    pub fn build(cfg: &Config, pop: &str) -> Routes {
        let mut hosts: HashMap<Box<str>, HostRoute> = HashMap::new();
        let norm = |n: &str| -> Box<str> { n.trim_end_matches('.').to_ascii_lowercase().into() };
        for c in &cfg.customers {
            for d in &c.domains {
                let host = norm(&d.name);
                let r = match d.kind {
                    DomainKind::Dynamic => HostRoute::Refuse(RouteError::Dynamic {
                        host: host.to_string(),
                        customer: c.name.clone(),
                    }),
                    DomainKind::Static if !d.pops(cfg).iter().any(|p| p.name == pop) => {
                        HostRoute::Refuse(RouteError::OtherPop {
                            host: host.to_string(),
                            pop: pop.to_string(),
                        })
                    }
                    DomainKind::Static => HostRoute::Serve(Arc::new(Route {
                        customer: c.name.as_str().into(),
                        domain: host.clone().into(),
                        origins: d
                            .origins(c)
                            .into_iter()
                            .map(|o| OriginTarget {
                                name: o.name.as_str().into(),
                                addrs: o
                                    .addresses
                                    .iter()
                                    .map(|ip| SocketAddr::new(*ip, o.port))
                                    .collect(),
                                weight: o.weight,
                                cost: o.cost,
                            })
                            .collect(),
                    })),
                };
                hosts.insert(host, r);
            }
        }
        // CNAMEs to served domains (e.g. images.demo.example -> static.demo.example).
        let mut aliases = Vec::new();
        for c in &cfg.customers {
            for r in &c.records {
                if r.rtype.eq_ignore_ascii_case("CNAME")
                    && let Some(HostRoute::Serve(route)) = hosts.get(&norm(&r.value))
                    && &*route.customer == c.name.as_str()
                {
                    aliases.push((norm(&r.name), route.clone()));
                }
            }
        }
        for (name, route) in aliases {
            hosts.entry(name).or_insert(HostRoute::Serve(route));
        }
        Routes { hosts }
    }

    /// The route of a normalised host (see [`crate::key::normalize_host`]).
    pub fn find(&self, host: &str) -> Result<&Arc<Route>, RouteError> {
        match self.hosts.get(host) {
            Some(HostRoute::Serve(r)) => Ok(r),
            Some(HostRoute::Refuse(e)) => Err(e.clone()),
            None => Err(RouteError::UnknownHost(host.to_string())),
        }
    }

    /// How many hosts this POP's cache serves.
    pub fn hosts(&self) -> usize {
        self.hosts
            .values()
            .filter(|r| matches!(r, HostRoute::Serve(_)))
            .count()
    }

    /// The customer names served here.
    pub fn customers(&self) -> Vec<Arc<str>> {
        let mut v: Vec<Arc<str>> = self
            .hosts
            .values()
            .filter_map(|r| match r {
                HostRoute::Serve(r) => Some(r.customer.clone()),
                HostRoute::Refuse(_) => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_routes() {
        let cfg = Config::demo();
        let r = Routes::build(&cfg, "local");
        let s = r.find("static.demo.example").unwrap();
        assert_eq!(&*s.customer, "demo");
        assert_eq!(s.origins.len(), 2);
        assert_eq!(s.origins[0].addrs[0], "127.0.0.1:8081".parse().unwrap());
        assert!(r.find("images.demo.example").is_ok());
        assert!(matches!(
            r.find("www.demo.example"),
            Err(RouteError::Dynamic { .. })
        ));
        assert!(matches!(
            r.find("example.com"),
            Err(RouteError::UnknownHost(_))
        ));
        assert!(matches!(
            Routes::build(&cfg, "elsewhere").find("static.demo.example"),
            Err(RouteError::OtherPop { .. })
        ));
    }
}
