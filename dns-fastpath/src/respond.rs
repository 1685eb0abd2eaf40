//! Answering one query packet: validation, the RFC rules for odd queries, view, splice.
//!
//! The response to a well-formed query is `id · flags · counts · question as received ·
//! answer body · OPT`, where the answer body comes from the [`AnswerTable`]. Everything
//! the query contributes (id, opcode, RD, CD, the question's exact bytes, the DO bit) is
//! copied; everything else is the answer's. Rules for the rest:
//!
//! | query                                   | response                              |
//! |-----------------------------------------|---------------------------------------|
//! | shorter than a header, or QR set        | dropped                               |
//! | anything that does not parse            | FORMERR, question echoed if it parsed, no OPT |
//! | EDNS version > 0                        | BADVERS with an OPT of version 0 (RFC 6891 §6.1.3) |
//! | opcode other than QUERY                 | NOTIMP                                |
//! | records in the answer/authority section | FORMERR                               |
//! | class other than IN                     | REFUSED                               |
//! | QTYPE OPT, or TSIG/TKEY without a key   | FORMERR                               |
//! | AXFR, IXFR                              | REFUSED (no zone transfers)           |
//! | MAILA, MAILB and other meta types       | NOTIMP                                |
//! | a name outside our zones                | REFUSED, not authoritative (never an open resolver) |
//! | an answer larger than the client allows | TC=1 with the question only (retry over TCP) |

use std::net::IpAddr;

use dns_wire::{ClientSubnet, DropReason, Header, QueryError, QueryView, RClass, RType, Rcode};

use crate::answer::{Answer, AnswerTable};

/// What carried the query; decides the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Largest UDP response without EDNS (RFC 1035 §4.2.1).
pub const PLAIN_UDP_LIMIT: usize = 512;

/// What happened to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response was written. `rcode` is the full (extended) rcode.
    Answered {
        rcode: u16,
        truncated: bool,
        precomputed: bool,
    },
    /// Nothing is sent.
    Dropped(DropReason),
}

/// What goes into the OPT record of a response.
#[derive(Debug, Clone)]
struct OptReply {
    payload: u16,
    ext_rcode: u8,
    dnssec_ok: bool,
    ecs: Option<(ClientSubnet, u8)>,
}

impl OptReply {
    fn len(&self) -> usize {
        11 + self.ecs.as_ref().map_or(0, |(cs, _)| {
            4 + 4 + usize::from(cs.source_prefix).div_ceil(8)
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(0); // root owner
        out.extend_from_slice(&RType::OPT.0.to_be_bytes());
        out.extend_from_slice(&self.payload.to_be_bytes());
        out.push(self.ext_rcode);
        out.push(0); // version 0
        out.extend_from_slice(&(if self.dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
        match &self.ecs {
            None => out.extend_from_slice(&[0, 0]),
            Some((cs, scope)) => {
                let addr_len = usize::from(cs.source_prefix).div_ceil(8);
                out.extend_from_slice(&((8 + addr_len) as u16).to_be_bytes());
                out.extend_from_slice(&dns_wire::edns::OPT_CODE_ECS.to_be_bytes());
                out.extend_from_slice(&((4 + addr_len) as u16).to_be_bytes());
                out.extend_from_slice(&cs.family.to_be_bytes());
                out.push(cs.source_prefix);
                out.push(*scope);
                match cs.address {
                    IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..addr_len]),
                    IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..addr_len]),
                }
            }
        }
    }
}

/// Writes a header.
fn header(out: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
}

/// Flags the response copies from the query: opcode, RD, CD.
fn copied(query_flags: u16) -> u16 {
    query_flags & (Header::OPCODE_MASK | Header::RD | Header::CD)
}

/// A response carrying only the question (if any) and the OPT (if any).
fn bare(
    out: &mut Vec<u8>,
    id: u16,
    qflags: u16,
    flags: u16,
    question: &[u8],
    opt: Option<&OptReply>,
) {
    out.clear();
    let qd = u16::from(!question.is_empty());
    header(
        out,
        id,
        flags | copied(qflags),
        [qd, 0, 0, u16::from(opt.is_some())],
    );
    out.extend_from_slice(question);
    if let Some(o) = opt {
        o.write(out);
    }
}

/// Splices `answer` behind the query's id and question, truncating to `limit`.
/// Returns whether it was truncated.
fn splice(
    out: &mut Vec<u8>,
    q: &QueryView<'_>,
    answer: &Answer,
    opt: Option<&OptReply>,
    limit: usize,
) -> bool {
    let question = q.question_wire();
    let opt_len = opt.map_or(0, OptReply::len);
    if 12 + question.len() + answer.body.len() + opt_len > limit {
        bare(
            out,
            q.id(),
            q.flags(),
            answer.flags | Header::TC,
            question,
            opt,
        );
        return true;
    }
    out.clear();
    let ar = answer.arcount + u16::from(opt.is_some());
    header(
        out,
        q.id(),
        answer.flags | copied(q.flags()),
        [1, answer.ancount, answer.nscount, ar],
    );
    out.extend_from_slice(question);
    out.extend_from_slice(&answer.body);
    if let Some(o) = opt {
        o.write(out);
    }
    false
}

/// Answers one query packet from `src` into `out` (cleared first).
pub fn respond(
    table: &AnswerTable,
    udp_payload: u16,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Outcome {
    let q = match QueryView::parse(packet) {
        Ok(q) => q,
        Err(QueryError::Drop(why)) => return Outcome::Dropped(why),
        Err(QueryError::Malformed {
            header: h,
            question,
            ..
        }) => {
            let qbytes = question
                .and_then(|s| packet.get(12..12 + s.name_len + 4))
                .unwrap_or(&[]);
            bare(
                out,
                h.id,
                h.flags,
                Header::QR | u16::from(Rcode::FORMERR.low4()),
                qbytes,
                None,
            );
            return answered(Rcode::FORMERR, false, false);
        }
        // QueryError is non-exhaustive: anything new is treated as unparseable.
        Err(_) => return Outcome::Dropped(DropReason::ShortHeader),
    };
    let mut opt = q.edns().map(|e| OptReply {
        payload: udp_payload,
        ext_rcode: 0,
        dnssec_ok: e.dnssec_ok,
        ecs: None,
    });
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => match q.edns() {
            Some(e) => usize::from(e.udp_payload.clamp(PLAIN_UDP_LIMIT as u16, udp_payload)),
            None => PLAIN_UDP_LIMIT,
        },
    };
    let error = |out: &mut Vec<u8>, rcode: Rcode, opt: Option<&OptReply>| {
        bare(
            out,
            q.id(),
            q.flags(),
            Header::QR | u16::from(rcode.low4()),
            q.question_wire(),
            opt,
        );
        answered(rcode, false, false)
    };

    if let Some(e) = q.edns()
        && e.version > 0
    {
        let o = opt.clone().map(|o| OptReply {
            ext_rcode: Rcode::BADVERS.ext8(),
            ..o
        });
        return error(out, Rcode::BADVERS, o.as_ref());
    }
    if q.opcode() != dns_wire::Opcode::QUERY {
        return error(out, Rcode::NOTIMP, opt.as_ref());
    }
    if q.ancount() != 0 || q.nscount() != 0 {
        return error(out, Rcode::FORMERR, opt.as_ref());
    }
    if q.qclass() != RClass::IN {
        return error(out, Rcode::REFUSED, opt.as_ref());
    }
    let qtype = q.qtype();
    match qtype {
        RType::OPT | RType(249) | RType(250) => return error(out, Rcode::FORMERR, opt.as_ref()),
        RType::AXFR | RType::IXFR => return error(out, Rcode::REFUSED, opt.as_ref()),
        RType(t) if (128..=254).contains(&t) => return error(out, Rcode::NOTIMP, opt.as_ref()),
        _ => {}
    }

    // The client's view: from EDNS Client Subnet when given (RFC 7871), else the source.
    let ecs = q.edns().and_then(|e| e.client_subnet()).cloned();
    let client = match &ecs {
        Some(cs) if cs.source_prefix > 0 => cs.address,
        _ => src,
    };
    let views = &table.catalog.views;
    let from_subnet = ecs.as_ref().is_some_and(|cs| cs.source_prefix > 0);
    let m = table.view_of(client, from_subnet);

    let mut lc = [0u8; dns_wire::name::MAX_NAME_LEN];
    let n = q.lowercase_qname(&mut lc);
    let (answer, precomputed) = table.answer(&lc[..n], qtype, m.view);

    if let (Some(o), Some(cs)) = (opt.as_mut(), ecs) {
        let scope = if answer.view_dependent && cs.source_prefix > 0 {
            views.scope(client, m)
        } else {
            0
        };
        o.ecs = Some((cs, scope));
    }
    let truncated = splice(out, &q, &answer, opt.as_ref(), limit);
    if !truncated {
        // The servers handed out (a truncated answer carries none; the retry over TCP counts).
        for &i in answer.tally.iter() {
            table.catalog.tally.add(i);
        }
    }
    answered(Rcode(answer.rcode()), truncated, precomputed)
}

fn answered(rcode: Rcode, truncated: bool, precomputed: bool) -> Outcome {
    Outcome::Answered {
        rcode: rcode.0,
        truncated,
        precomputed,
    }
}
