//! The catalog: everything the server is authoritative for, compiled once from a config.
//!
//! Zones (the network zone and every customer zone) with their SOA and NS, every owner
//! name with its plain RRsets, the empty non-terminals between them (so that they answer
//! NODATA, not NXDOMAIN: RFC 8020), the balanced domains with their candidate servers,
//! and the names of the network's own services (`ns.<pop>.<zone>`, `cache.<pop>.<zone>`,
//! `probe.<pop>.<zone>`, `log.<pop>.<zone>`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dns_wire::{Name, RData, RType, Soa};
use popnet_config::{Config, DomainKind, Policy, RecordValue};

use crate::views::{ViewId, Views};

/// Index of a zone in [`Catalog::zones`].
pub type ZoneId = usize;
/// Index of a balanced domain in [`Catalog::domains`].
pub type DomainId = usize;
/// Index of a server in [`Catalog::servers`].
pub type ServerIdx = usize;

/// Why a config could not be compiled into a catalog (a validated config always can).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl std::fmt::Display) -> CatalogError {
    CatalogError::Invalid {
        path: path.into(),
        message: message.to_string(),
    }
}

fn name(path: &str, text: &str) -> Result<Name, CatalogError> {
    Name::from_ascii(text)
        .map(|n| n.to_lowercase())
        .map_err(|e| invalid(path, format!("{text:?}: {e}")))
}

/// One RRset: records of one type at one name, sharing a TTL.
#[derive(Debug, Clone, PartialEq)]
pub struct RRset {
    pub rtype: RType,
    pub ttl: u32,
    pub rdata: Vec<RData>,
}

/// A zone we are authoritative for.
#[derive(Debug, Clone)]
pub struct Zone {
    pub apex: Name,
    pub soa: Soa,
    pub soa_ttl: u32,
    pub ns_ttl: u32,
    pub ns: Vec<Name>,
    /// Customer owning the zone; `None` for the network zone.
    pub customer: Option<String>,
}

impl Zone {
    /// TTL of the SOA in negative answers (RFC 2308 §5: min of SOA TTL and MINIMUM).
    pub fn negative_ttl(&self) -> u32 {
        self.soa_ttl.min(self.soa.minimum)
    }
}

/// Everything at one owner name.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub zone: ZoneId,
    pub rrsets: Vec<RRset>,
    /// Set when the name is balanced by the selector (its A/AAAA come from there).
    pub domain: Option<DomainId>,
}

impl Node {
    pub fn rrset(&self, t: RType) -> Option<&RRset> {
        self.rrsets.iter().find(|r| r.rtype == t)
    }

    pub fn cname(&self) -> Option<(&Name, u32)> {
        self.rrset(RType::CNAME)
            .and_then(|r| match r.rdata.first() {
                Some(RData::Cname(n)) => Some((n, r.ttl)),
                _ => None,
            })
    }

    /// True if the name holds nothing (an empty non-terminal).
    pub fn is_empty(&self) -> bool {
        self.rrsets.is_empty() && self.domain.is_none()
    }
}

/// A candidate server of a balanced domain.
#[derive(Debug, Clone)]
pub struct Server {
    /// Id in metric reports: the POP name, or `customer/origin`.
    pub id: String,
    pub kind: ServerKind,
    pub region: Option<String>,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    /// Relative capacity (origins); 1 for POP caches.
    pub weight: f64,
    pub cost: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    PopCache,
    Origin,
}

/// Address family of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(t: RType) -> Option<Family> {
        match t {
            RType::A => Some(Family::V4),
            RType::AAAA => Some(Family::V6),
            _ => None,
        }
    }

    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];
}

impl Server {
    pub fn has(&self, f: Family) -> bool {
        match f {
            Family::V4 => !self.v4.is_empty(),
            Family::V6 => !self.v6.is_empty(),
        }
    }
}

/// A name whose addresses the selector chooses.
#[derive(Debug, Clone)]
pub struct Domain {
    pub name: Name,
    pub customer: String,
    pub kind: DomainKind,
    pub policy: Policy,
    /// POP caches (static) or origins (dynamic), in config order.
    pub primary: Vec<ServerIdx>,
    /// Static names with `origin_fallback`: origins that may win when they beat every POP.
    pub fallback: Vec<ServerIdx>,
}

/// Everything the server answers for.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub serial: u32,
    pub zones: Vec<Zone>,
    zone_by_apex: HashMap<Name, ZoneId>,
    nodes: HashMap<Name, Node>,
    pub domains: Vec<Domain>,
    pub servers: Vec<Server>,
    pub views: Views,
    /// Region of each view id (index = view id; the default view has none).
    pub view_regions: Vec<Option<String>>,
    /// The dynamic views: `near:<pop>` for every POP with a probe, holding the resolvers
    /// whose lowest measured latency is from that POP (see `resolvers`).
    pub near_views: Vec<NearView>,
    /// `probes.overload_response` in ms: a server without a load figure counts as loaded
    /// by its service response time ÷ this.
    pub overload_ms: f64,
    /// Answers handed out per domain, view, family and server (shared by every answer
    /// table built from this catalog).
    pub tally: std::sync::Arc<crate::tally::Tally>,
}

/// A view of the resolvers nearest to one POP.
#[derive(Debug, Clone)]
pub struct NearView {
    pub view: ViewId,
    pub pop: String,
    /// The POP's latency probe (`[pops.probe] listen`).
    pub probe: std::net::SocketAddr,
}

fn split(addrs: &[IpAddr]) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for a in addrs {
        match a {
            IpAddr::V4(x) if !v4.contains(x) => v4.push(*x),
            IpAddr::V6(x) if !v6.contains(x) => v6.push(*x),
            _ => {}
        }
    }
    (v4, v6)
}

fn address_rrsets(addrs: &[IpAddr], ttl: u32) -> Vec<RRset> {
    let (v4, v6) = split(addrs);
    let mut out = Vec::new();
    if !v4.is_empty() {
        out.push(RRset {
            rtype: RType::A,
            ttl,
            rdata: v4.into_iter().map(RData::A).collect(),
        });
    }
    if !v6.is_empty() {
        out.push(RRset {
            rtype: RType::AAAA,
            ttl,
            rdata: v6.into_iter().map(RData::Aaaa).collect(),
        });
    }
    out
}

/// TTL of the network's own service names.
const SERVICE_TTL: u32 = 300;

impl Catalog {
    /// Compiles a validated config.
    pub fn compile(cfg: &Config) -> Result<Catalog, CatalogError> {
        let mut cat = Catalog {
            serial: cfg.network.version,
            zones: Vec::new(),
            zone_by_apex: HashMap::new(),
            nodes: HashMap::new(),
            domains: Vec::new(),
            servers: Vec::new(),
            views: Views::from_config(&cfg.views),
            view_regions: std::iter::once(None)
                .chain(cfg.views.iter().map(|v| v.region.clone()))
                .collect(),
            near_views: Vec::new(),
            overload_ms: cfg.probes.overload_response.as_secs_f64() * 1000.0,
            tally: std::sync::Arc::new(crate::tally::Tally::new(Vec::new(), 0)),
        };
        for pop in &cfg.pops {
            if let Some(p) = &pop.probe {
                let view = cat.views.add_dynamic(format!("near:{}", pop.name));
                cat.view_regions.push(Some(pop.region.clone()));
                cat.near_views.push(NearView {
                    view,
                    pop: pop.name.clone(),
                    probe: p.listen,
                });
            }
        }
        let net_zone = name("network.zone", &cfg.network.zone)?;
        let hostmaster = name("network.hostmaster", &cfg.hostmaster())?;
        let t = &cfg.network.soa;

        // The network's name servers: ns.<pop>.<zone> for every POP running DNS.
        let mut ns_names = Vec::new();
        let mut service_names: Vec<(Name, Vec<RRset>)> = Vec::new();
        for (i, pop) in cfg.pops.iter().enumerate() {
            let pop_zone = net_zone
                .prepend_label(pop.name.as_bytes())
                .map_err(|e| invalid(format!("pops[{i}].name"), e))?;
            let label = |l: &str| {
                pop_zone
                    .prepend_label(l.as_bytes())
                    .map_err(|e| invalid(format!("pops[{i}].name"), e))
            };
            if let Some(d) = &pop.dns {
                let ns = label("ns")?;
                ns_names.push(ns.clone());
                service_names.push((ns, address_rrsets(&d.effective_addresses(), SERVICE_TTL)));
            }
            if let Some(c) = &pop.cache {
                service_names.push((label("cache")?, address_rrsets(&c.addresses, SERVICE_TTL)));
            }
            if let Some(p) = &pop.probe {
                service_names.push((
                    label("probe")?,
                    address_rrsets(&[p.listen.ip()], SERVICE_TTL),
                ));
            }
            if let Some(l) = pop
                .log_server
                .as_ref()
                .and_then(|l| cfg.log_servers.iter().find(|s| &s.name == l))
            {
                service_names.push((
                    label("log")?,
                    address_rrsets(&[l.address.ip()], SERVICE_TTL),
                ));
            }
        }
        // Every log server also as <name>.log.<zone>: senders of customers it keeps find it there.
        if !cfg.log_servers.is_empty() {
            let log_zone = net_zone
                .prepend_label(b"log")
                .map_err(|e| invalid("network.zone".to_string(), e))?;
            for (i, l) in cfg.log_servers.iter().enumerate() {
                let n = log_zone
                    .prepend_label(l.name.as_bytes())
                    .map_err(|e| invalid(format!("log_servers[{i}].name"), e))?;
                service_names.push((n, address_rrsets(&[l.address.ip()], SERVICE_TTL)));
            }
        }
        let mname = ns_names
            .first()
            .cloned()
            .unwrap_or_else(|| net_zone.clone());
        let add_zone = |cat: &mut Catalog, apex: Name, customer: Option<String>| -> ZoneId {
            let id = cat.zones.len();
            cat.zones.push(Zone {
                apex: apex.clone(),
                soa: Soa {
                    mname: mname.clone(),
                    rname: hostmaster.clone(),
                    serial: cfg.network.version,
                    refresh: t.refresh,
                    retry: t.retry,
                    expire: t.expire,
                    minimum: t.negative_ttl,
                },
                soa_ttl: t.ttl,
                ns_ttl: t.ttl,
                ns: ns_names.clone(),
                customer,
            });
            cat.zone_by_apex.insert(apex.clone(), id);
            let z = &cat.zones[id];
            let apex_sets = vec![
                RRset {
                    rtype: RType::SOA,
                    ttl: z.soa_ttl,
                    rdata: vec![RData::Soa(z.soa.clone())],
                },
                RRset {
                    rtype: RType::NS,
                    ttl: z.ns_ttl,
                    rdata: z.ns.iter().cloned().map(RData::Ns).collect(),
                },
            ];
            cat.nodes.insert(
                apex,
                Node {
                    zone: id,
                    rrsets: apex_sets,
                    domain: None,
                },
            );
            id
        };

        let net_id = add_zone(&mut cat, net_zone.clone(), None);
        for (n, rrsets) in service_names {
            for r in rrsets {
                cat.add_rrset(net_id, &n, r);
            }
        }

        // Servers: every POP cache, then every origin.
        let mut pop_idx: HashMap<&str, ServerIdx> = HashMap::new();
        for pop in &cfg.pops {
            if let Some(c) = &pop.cache {
                let (v4, v6) = split(&c.addresses);
                pop_idx.insert(&pop.name, cat.servers.len());
                cat.servers.push(Server {
                    id: popnet_config::pop_server_id(&pop.name),
                    kind: ServerKind::PopCache,
                    region: Some(pop.region.clone()),
                    v4,
                    v6,
                    weight: 1.0,
                    cost: pop.cost,
                });
            }
        }

        for (ci, c) in cfg.customers.iter().enumerate() {
            let mut zone_ids = Vec::new();
            for (zi, z) in c.zones.iter().enumerate() {
                let apex = name(&format!("customers[{ci}].zones[{zi}]"), z)?;
                zone_ids.push(add_zone(&mut cat, apex, Some(c.name.clone())));
            }
            let mut origin_idx: HashMap<&str, ServerIdx> = HashMap::new();
            for o in &c.origins {
                let (v4, v6) = split(&o.addresses);
                origin_idx.insert(&o.name, cat.servers.len());
                cat.servers.push(Server {
                    id: popnet_config::origin_server_id(&c.name, &o.name),
                    kind: ServerKind::Origin,
                    region: o.region.clone(),
                    v4,
                    v6,
                    weight: o.weight,
                    cost: o.cost,
                });
            }
            for (di, d) in c.domains.iter().enumerate() {
                let path = format!("customers[{ci}].domains[{di}]");
                let dname = name(&format!("{path}.name"), &d.name)?;
                let zone = cat
                    .zone_of(&dname)
                    .ok_or_else(|| invalid(&path, "outside the customer's zones"))?;
                let origins: Vec<ServerIdx> = d
                    .origins(c)
                    .iter()
                    .filter_map(|o| origin_idx.get(o.name.as_str()).copied())
                    .collect();
                let (primary, fallback) = match d.kind {
                    DomainKind::Dynamic => (origins, Vec::new()),
                    DomainKind::Static => {
                        let pops: Vec<ServerIdx> = d
                            .pops(cfg)
                            .iter()
                            .filter_map(|p| pop_idx.get(p.name.as_str()).copied())
                            .collect();
                        (
                            pops,
                            if d.policy.origin_fallback {
                                origins
                            } else {
                                Vec::new()
                            },
                        )
                    }
                };
                let id = cat.domains.len();
                cat.domains.push(Domain {
                    name: dname.clone(),
                    customer: c.name.clone(),
                    kind: d.kind,
                    policy: d.policy.clone(),
                    primary,
                    fallback,
                });
                cat.node_mut(zone, &dname).domain = Some(id);
            }
            for (ri, r) in c.records.iter().enumerate() {
                let path = format!("customers[{ci}].records[{ri}]");
                let owner = name(&format!("{path}.name"), &r.name)?;
                let zone = cat
                    .zone_of(&owner)
                    .ok_or_else(|| invalid(&path, "outside the customer's zones"))?;
                let value = popnet_config::parse_record(&r.rtype, &r.value)
                    .map_err(|e| invalid(&path, e.problem))?;
                let (rtype, rdata) = match value {
                    RecordValue::A(a) => (RType::A, RData::A(a)),
                    RecordValue::Aaaa(a) => (RType::AAAA, RData::Aaaa(a)),
                    RecordValue::Cname(n) => (RType::CNAME, RData::Cname(n)),
                    RecordValue::Txt(t) => (RType::TXT, RData::Txt(t)),
                    RecordValue::Mx {
                        preference,
                        exchange,
                    } => (
                        RType::MX,
                        RData::Mx {
                            preference,
                            exchange,
                        },
                    ),
                };
                cat.add_rrset(
                    zone,
                    &owner,
                    RRset {
                        rtype,
                        ttl: r.ttl,
                        rdata: vec![rdata],
                    },
                );
            }
        }
        let candidates = cat
            .domains
            .iter()
            .map(|d| {
                let mut c = d.primary.clone();
                c.extend(d.fallback.iter().filter(|s| !d.primary.contains(s)));
                c
            })
            .collect();
        cat.tally = std::sync::Arc::new(crate::tally::Tally::new(candidates, cat.view_count()));
        Ok(cat)
    }

    /// Adds records to an RRset (merging with an existing one of the same type; the
    /// RRset takes the lowest TTL, RFC 2181 §5.2).
    fn add_rrset(&mut self, zone: ZoneId, owner: &Name, set: RRset) {
        let node = self.node_mut(zone, owner);
        match node.rrsets.iter_mut().find(|r| r.rtype == set.rtype) {
            Some(existing) => {
                existing.ttl = existing.ttl.min(set.ttl);
                for rd in set.rdata {
                    if !existing.rdata.contains(&rd) {
                        existing.rdata.push(rd);
                    }
                }
            }
            None => node.rrsets.push(set),
        }
    }

    /// The node at `owner` (lowercase), created with its empty non-terminals if missing.
    fn node_mut(&mut self, zone: ZoneId, owner: &Name) -> &mut Node {
        let apex = self.zones[zone].apex.clone();
        let mut n = owner.parent();
        while let Some(p) = n {
            if !p.is_subdomain_of(&apex) || p == apex {
                break;
            }
            self.nodes.entry(p.clone()).or_insert(Node {
                zone,
                ..Node::default()
            });
            n = p.parent();
        }
        self.nodes.entry(owner.clone()).or_insert(Node {
            zone,
            ..Node::default()
        })
    }

    /// The zone holding `name` (longest matching apex), if we are authoritative for it.
    pub fn zone_of(&self, name: &Name) -> Option<ZoneId> {
        let mut n = Some(name.clone());
        while let Some(cur) = n {
            if let Some(&z) = self.zone_by_apex.get(&cur) {
                return Some(z);
            }
            n = cur.parent();
        }
        None
    }

    /// The node at `name`, if the name exists (including empty non-terminals).
    pub fn node(&self, name: &Name) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Every owner name (lowercase) with its node.
    pub fn nodes(&self) -> impl Iterator<Item = (&Name, &Node)> {
        self.nodes.iter()
    }

    /// Number of views including the default view (ids `0..view_count()`).
    pub fn view_count(&self) -> usize {
        self.view_regions.len()
    }

    /// Region of a view, if it has one.
    pub fn view_region(&self, v: ViewId) -> Option<&str> {
        self.view_regions
            .get(usize::from(v))
            .and_then(|r| r.as_deref())
    }

    /// Name of a view for display (`default` for view 0).
    pub fn view_name(&self, v: ViewId) -> &str {
        self.views.name(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Catalog {
        Catalog::compile(&Config::demo()).expect("demo compiles")
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn zones_and_service_names() {
        let c = demo();
        assert_eq!(c.zones.len(), 2);
        assert_eq!(c.zone_of(&n("www.demo.example")), Some(1));
        assert_eq!(c.zone_of(&n("ns.local.popnet.example")), Some(0));
        assert_eq!(c.zone_of(&n("example")), None);
        let ns = c.node(&n("ns.local.popnet.example")).expect("ns name");
        assert!(ns.rrset(RType::A).is_some());
        // The POP label between the zone and the service name is an empty non-terminal.
        assert!(c.node(&n("local.popnet.example")).expect("ENT").is_empty());
        assert_eq!(c.zones[1].ns, vec![n("ns.local.popnet.example")]);
    }

    #[test]
    fn domains_have_their_candidates() {
        let c = demo();
        let www = &c.domains[c.node(&n("www.demo.example")).unwrap().domain.unwrap()];
        assert_eq!(www.kind, DomainKind::Dynamic);
        assert_eq!(www.primary.len(), 2);
        assert!(www.fallback.is_empty());
        let st = &c.domains[c.node(&n("static.demo.example")).unwrap().domain.unwrap()];
        assert_eq!(st.kind, DomainKind::Static);
        assert_eq!(c.servers[st.primary[0]].kind, ServerKind::PopCache);
        assert_eq!(st.fallback.len(), 2);
    }
}
