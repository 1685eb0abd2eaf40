//! Answers: resolving a question against the catalog and the selections, and encoding it.
//!
//! An [`Answer`] is everything of a response that does not depend on the query's bytes:
//! the flags we set, the section counts and the encoded records that follow the question.
//! The records are encoded as if the (lowercased) question name stood at offset 12, so
//! their compression pointers stay valid for any spelling of the name (0x20 case
//! randomisation does not change its length). The server splices an answer behind the
//! query's own header id and question; the [`AnswerTable`] holds the answers of every
//! name and common type precomputed, and anything else is resolved on demand by the
//! same code, so an answer from the table and one computed on the spot are the same bytes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use dns_wire::{Encoder, Header, Name, Question, RClass, RData, RType, Rcode, Record};
use xxhash_rust::xxh3::Xxh3Builder;

use crate::catalog::{Catalog, Family, Node, RRset, ZoneId};
use crate::selector::Selections;
use crate::views::{ViewId, ViewMatch};

/// Longest CNAME chain followed inside our zones.
const MAX_CHAIN: usize = 8;

/// Key view for answers that are the same in every view.
pub const VIEW_ANY: ViewId = ViewId::MAX;

/// Query types whose answers are precomputed for every name.
pub const TABLE_TYPES: [RType; 8] = [
    RType::A,
    RType::AAAA,
    RType::CNAME,
    RType::NS,
    RType::SOA,
    RType::TXT,
    RType::MX,
    RType::ANY,
];

/// The query-independent part of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// QR, AA and the RCODE; the server adds the query's opcode, RD and CD.
    pub flags: u16,
    pub ancount: u16,
    pub nscount: u16,
    /// Additional records, not counting the OPT the server may append.
    pub arcount: u16,
    /// The encoded answer, authority and additional sections.
    pub body: Box<[u8]>,
    /// True if the answer depends on the client's view (a balanced name was consulted).
    pub view_dependent: bool,
    /// The catalog's [`crate::tally::Tally`] counters of the servers in the answer.
    pub tally: Box<[u32]>,
}

impl Answer {
    /// An answer with no records (REFUSED, or errors).
    pub fn empty(rcode: Rcode, authoritative: bool) -> Answer {
        Answer {
            flags: Header::QR
                | if authoritative { Header::AA } else { 0 }
                | u16::from(rcode.low4()),
            ancount: 0,
            nscount: 0,
            arcount: 0,
            body: Box::new([]),
            view_dependent: false,
            tally: Box::new([]),
        }
    }

    pub fn rcode(&self) -> u16 {
        self.flags & Header::RCODE_MASK
    }
}

/// The records of a response before encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub rcode: Rcode,
    pub authoritative: bool,
    pub answer: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    pub view_dependent: bool,
    /// Tally counters of the balanced servers in the answer.
    pub tally: Vec<u32>,
}

impl Resolution {
    fn new() -> Resolution {
        Resolution {
            rcode: Rcode::NOERROR,
            authoritative: true,
            answer: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            view_dependent: false,
            tally: Vec::new(),
        }
    }
}

fn records<'a>(owner: &'a Name, set: &'a RRset) -> impl Iterator<Item = Record> + 'a {
    set.rdata.iter().map(move |rd| Record {
        name: owner.clone(),
        rtype: set.rtype,
        rclass: RClass::IN,
        ttl: set.ttl,
        rdata: rd.clone(),
    })
}

/// Resolves questions against one catalog and one set of selections.
pub struct Resolver<'a> {
    pub catalog: &'a Catalog,
    pub selections: &'a Selections,
}

impl Resolver<'_> {
    /// The RRset of type `t` at `node`, synthesizing balanced A/AAAA from the selection.
    fn rrset<'n>(
        &self,
        node: &'n Node,
        t: RType,
        view: ViewId,
        res: &mut Resolution,
    ) -> Option<Cow<'n, RRset>> {
        if let (Some(d), Some(fam)) = (node.domain, Family::of(t)) {
            res.view_dependent = true;
            let dom = &self.catalog.domains[d];
            let tally = &self.catalog.tally;
            let rdata: Vec<RData> = self
                .selections
                .get(d, view, fam)
                .iter()
                .filter_map(|&s| {
                    let srv = &self.catalog.servers[s];
                    let rd = match fam {
                        Family::V4 => srv.v4.first().map(|a| RData::A(*a)),
                        Family::V6 => srv.v6.first().map(|a| RData::Aaaa(*a)),
                    }?;
                    res.tally.extend(tally.index(d, view, fam, s));
                    Some(rd)
                })
                .collect();
            return (!rdata.is_empty()).then_some(Cow::Owned(RRset {
                rtype: t,
                ttl: dom.policy.ttl,
                rdata,
            }));
        }
        node.rrset(t).map(Cow::Borrowed)
    }

    fn soa(&self, zone: ZoneId) -> Record {
        let z = &self.catalog.zones[zone];
        Record {
            name: z.apex.clone(),
            rtype: RType::SOA,
            rclass: RClass::IN,
            ttl: z.negative_ttl(),
            rdata: RData::Soa(z.soa.clone()),
        }
    }

    /// Addresses of the name servers we answer for, for the additional section.
    fn glue(&self, targets: &[Name], res: &mut Resolution) {
        for t in targets {
            if let Some(node) = self.catalog.node(t) {
                for ty in [RType::A, RType::AAAA] {
                    if let Some(set) = node.rrset(ty) {
                        res.additional.extend(records(t, set));
                    }
                }
            }
        }
    }

    /// Resolves `qname` (lowercase) / `qtype` for clients of `view`.
    pub fn resolve(&self, qname: &Name, qtype: RType, view: ViewId) -> Resolution {
        let mut res = Resolution::new();
        let Some(mut zone) = self.catalog.zone_of(qname) else {
            res.rcode = Rcode::REFUSED;
            res.authoritative = false;
            return res;
        };
        let mut current = qname.clone();
        for _ in 0..MAX_CHAIN {
            let Some(node) = self.catalog.node(&current) else {
                res.rcode = Rcode::NXDOMAIN;
                res.authority.push(self.soa(zone));
                return res;
            };
            if qtype != RType::CNAME
                && let Some((target, ttl)) = node.cname()
            {
                res.answer.push(Record {
                    name: current.clone(),
                    rtype: RType::CNAME,
                    rclass: RClass::IN,
                    ttl,
                    rdata: RData::Cname(target.clone()),
                });
                match self.catalog.zone_of(target) {
                    Some(z) if !res.answer.iter().any(|r| r.name == *target) => {
                        zone = z;
                        current = target.clone();
                        continue;
                    }
                    // Outside our zones (the resolver follows it) or a loop.
                    _ => return res,
                }
            }
            let wanted: &[RType] = if qtype == RType::ANY {
                // RFC 8482: one RRset is a complete answer to ANY.
                &[
                    RType::A,
                    RType::AAAA,
                    RType::MX,
                    RType::TXT,
                    RType::NS,
                    RType::SOA,
                ]
            } else {
                std::slice::from_ref(&qtype)
            };
            for &t in wanted {
                if let Some(set) = self.rrset(node, t, view, &mut res) {
                    res.answer.extend(records(&current, &set));
                    if t == RType::NS {
                        let targets: Vec<Name> = set
                            .rdata
                            .iter()
                            .filter_map(|r| match r {
                                RData::Ns(n) => Some(n.clone()),
                                _ => None,
                            })
                            .collect();
                        self.glue(&targets, &mut res);
                    }
                    return res;
                }
            }
            // The name exists but not with this type: NODATA (RFC 2308 §2.2).
            res.authority.push(self.soa(zone));
            return res;
        }
        res
    }

    /// Resolves and encodes.
    pub fn answer(&self, qname: &Name, qtype: RType, view: ViewId) -> Answer {
        encode(qname, qtype, &self.resolve(qname, qtype, view))
    }
}

/// Encodes the sections of `res` that follow the question `qname`/`qtype`.
pub fn encode(qname: &Name, qtype: RType, res: &Resolution) -> Answer {
    let mut enc = Encoder::with_capacity(512);
    enc.put_slice(&[0; 12]);
    enc.put_question(&Question {
        name: qname.clone(),
        qtype,
        qclass: RClass::IN,
    });
    let start = enc.position();
    let written = res
        .answer
        .iter()
        .chain(&res.authority)
        .chain(&res.additional)
        .try_for_each(|r| enc.put_record(r));
    let count = |v: &Vec<Record>| u16::try_from(v.len()).unwrap_or(u16::MAX);
    match written {
        Ok(()) => Answer {
            flags: Header::QR
                | if res.authoritative { Header::AA } else { 0 }
                | u16::from(res.rcode.low4()),
            ancount: count(&res.answer),
            nscount: count(&res.authority),
            arcount: count(&res.additional),
            body: enc.as_slice()[start..].into(),
            view_dependent: res.view_dependent,
            tally: res.tally.as_slice().into(),
        },
        Err(e) => {
            // Catalog data is validated, so this is a defect; answer SERVFAIL, not garbage.
            tracing::error!(name = %qname, qtype = %qtype, error = %e, "cannot encode answer");
            Answer::empty(Rcode::SERVFAIL, false)
        }
    }
}

/// Length of the longest table key: a wire name, the type and the view.
pub const MAX_KEY: usize = dns_wire::name::MAX_NAME_LEN + 4;

/// Writes the table key for (lowercase wire name, type, view) into `buf`.
pub fn table_key<'b>(
    buf: &'b mut [u8; MAX_KEY],
    name: &[u8],
    qtype: RType,
    view: ViewId,
) -> &'b [u8] {
    let n = name.len().min(dns_wire::name::MAX_NAME_LEN);
    buf[..n].copy_from_slice(&name[..n]);
    buf[n..n + 2].copy_from_slice(&qtype.0.to_be_bytes());
    buf[n + 2..n + 4].copy_from_slice(&view.to_be_bytes());
    &buf[..n + 4]
}

/// Precomputed answers of every name for the common types, per view where they differ,
/// with the catalog and selections they were computed from.
pub struct AnswerTable {
    pub catalog: Arc<Catalog>,
    pub selections: Selections,
    /// Resolvers placed in a dynamic view by latency (exact addresses, consulted before
    /// the configured prefixes).
    pub resolver_views: Arc<HashMap<IpAddr, ViewId>>,
    /// Increases with every table published.
    pub generation: u64,
    map: HashMap<Box<[u8]>, Arc<Answer>, Xxh3Builder>,
}

impl AnswerTable {
    /// Computes every answer of `catalog` under `selections`.
    pub fn build(
        catalog: Arc<Catalog>,
        selections: Selections,
        resolver_views: Arc<HashMap<IpAddr, ViewId>>,
        generation: u64,
    ) -> AnswerTable {
        let mut map = HashMap::with_hasher(Xxh3Builder::new());
        let mut kbuf = [0u8; MAX_KEY];
        {
            let r = Resolver {
                catalog: &catalog,
                selections: &selections,
            };
            for (name, _) in catalog.nodes() {
                for t in TABLE_TYPES {
                    let first = r.answer(name, t, 0);
                    if first.view_dependent {
                        map.insert(
                            table_key(&mut kbuf, name.as_wire(), t, 0).into(),
                            Arc::new(first),
                        );
                        for v in 1..catalog.view_count() {
                            let v = ViewId::try_from(v).unwrap_or(VIEW_ANY - 1);
                            map.insert(
                                table_key(&mut kbuf, name.as_wire(), t, v).into(),
                                Arc::new(r.answer(name, t, v)),
                            );
                        }
                    } else {
                        map.insert(
                            table_key(&mut kbuf, name.as_wire(), t, VIEW_ANY).into(),
                            Arc::new(first),
                        );
                    }
                }
            }
        }
        AnswerTable {
            catalog,
            selections,
            resolver_views,
            generation,
            map,
        }
    }

    /// The view of a client: its resolver's dynamic view if it has one (only for a
    /// source address, not a client subnet), else the longest configured prefix.
    pub fn view_of(&self, addr: IpAddr, from_subnet: bool) -> ViewMatch {
        if !from_subnet && let Some(&view) = self.resolver_views.get(&addr) {
            let bits = if addr.is_ipv4() { 32 } else { 128 };
            return ViewMatch {
                view,
                prefix_len: bits,
            };
        }
        self.catalog.views.lookup(addr)
    }

    /// The precomputed answer for a lowercase wire name, if there is one.
    pub fn lookup(&self, lc_name: &[u8], qtype: RType, view: ViewId) -> Option<&Arc<Answer>> {
        let mut kbuf = [0u8; MAX_KEY];
        self.map
            .get(table_key(&mut kbuf, lc_name, qtype, view))
            .or_else(|| self.map.get(table_key(&mut kbuf, lc_name, qtype, VIEW_ANY)))
    }

    /// The answer for a lowercase wire name: from the table (`true`), or resolved now.
    pub fn answer(&self, lc_name: &[u8], qtype: RType, view: ViewId) -> (Cow<'_, Answer>, bool) {
        if let Some(a) = self.lookup(lc_name, qtype, view) {
            return (Cow::Borrowed(a), true);
        }
        let computed = match Name::from_wire(lc_name) {
            Ok(name) => Resolver {
                catalog: &self.catalog,
                selections: &self.selections,
            }
            .answer(&name, qtype, view),
            // The query parser only hands over valid names.
            Err(_) => Answer::empty(Rcode::FORMERR, false),
        };
        (Cow::Owned(computed), false)
    }

    /// Every precomputed entry: (lowercase wire name, type, view or [`VIEW_ANY`], answer).
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], RType, ViewId, &Answer)> {
        self.map.iter().map(|(k, a)| {
            let n = k.len() - 4;
            let t = RType(u16::from_be_bytes([k[n], k[n + 1]]));
            let v = u16::from_be_bytes([k[n + 2], k[n + 3]]);
            (&k[..n], t, v, a.as_ref())
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
