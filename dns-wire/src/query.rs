//! Allocation-free server-side view of an incoming query (one question, optional OPT).

use crate::decode::{DecodeError, Decoder};
use crate::edns::{Edns, decode_options};
use crate::message::{HEADER_LEN, Header};
use crate::name::{MAX_NAME_LEN, Name};
use crate::rdata::RData;
use crate::types::{Opcode, RClass, RType};

/// Why a packet is dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DropReason {
    /// Shorter than the 12-byte header.
    #[error("packet shorter than the DNS header")]
    ShortHeader,
    /// The QR bit is set: a response, not a query.
    #[error("packet is a response")]
    IsResponse,
}

/// Where the question is, once it parsed: `packet[12..12 + name_len + 4]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuestionSpan {
    pub name_len: usize,
    pub qtype: RType,
    pub qclass: RClass,
}

/// Why [`QueryView::parse`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Never answered.
    #[error("dropped: {0}")]
    Drop(DropReason),
    /// Answer FORMERR, echoing the header (and question, if it parsed).
    #[error("malformed query: {error}")]
    Malformed {
        header: Header,
        question: Option<QuestionSpan>,
        error: DecodeError,
    },
}

/// A validated query, borrowing the packet.
///
/// Parsing checks the whole packet as strictly as [`crate::Message::decode`] and more:
/// exactly one question, whose name is not compressed.
///
/// ```
/// use std::net::Ipv4Addr;
/// use dns_wire::{Encoder, Message, QueryView, RData, Record};
///
/// // A query from `dig www.Example.com A +noedns`.
/// let packet = b"\xbf\x42\x01\x20\x00\x01\x00\x00\x00\x00\x00\x00\
///                \x03www\x07Example\x03com\x00\x00\x01\x00\x01";
/// let view = QueryView::parse(packet).unwrap();
/// let mut key = [0u8; 255];
/// let len = view.lowercase_qname(&mut key);
/// assert_eq!(&key[..len], b"\x03www\x07example\x03com\x00");
///
/// // Answer: echo the question bytes, let the answer owner point at them.
/// let mut header = *view.header();
/// header.set_qr(true);
/// header.set_aa(true);
/// header.ancount = 1;
/// let mut enc = Encoder::with_capacity(512);
/// enc.put_slice(&header.to_bytes());
/// enc.put_slice(view.question_wire());
/// enc.register_name(&view.qname(), 12);
/// let owner = view.qname().to_lowercase();
/// enc.put_record(&Record::new_in(owner, 300, RData::A(Ipv4Addr::new(192, 0, 2, 1))).unwrap())
///     .unwrap();
/// let reply = enc.into_bytes();
/// assert_eq!(&reply[33..35], &[0xc0, 0x0c]);
/// let m = Message::decode(&reply).unwrap();
/// assert_eq!(m.answers[0].to_string(), "www.Example.com. 300 IN A 192.0.2.1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryView<'a> {
    packet: &'a [u8],
    header: Header,
    question: QuestionSpan,
    edns: Option<Edns>,
    opt_count: usize,
}

impl<'a> QueryView<'a> {
    /// Parses and validates a query packet.
    pub fn parse(packet: &'a [u8]) -> Result<QueryView<'a>, QueryError> {
        let mut dec = Decoder::new(packet).with_pointer_floor(HEADER_LEN);
        let header =
            Header::decode(&mut dec).map_err(|_| QueryError::Drop(DropReason::ShortHeader))?;
        if header.qr() {
            return Err(QueryError::Drop(DropReason::IsResponse));
        }
        let malformed =
            |question: Option<QuestionSpan>, error: DecodeError| QueryError::Malformed {
                header,
                question,
                error,
            };
        if header.qdcount != 1 {
            return Err(malformed(
                None,
                DecodeError::BadQuestionCount {
                    offset: 4,
                    count: header.qdcount,
                },
            ));
        }
        let name = dec
            .read_name_uncompressed()
            .map_err(|e| malformed(None, e))?;
        let qtype = RType(dec.u16_as("QTYPE").map_err(|e| malformed(None, e))?);
        let qclass = RClass(dec.u16_as("QCLASS").map_err(|e| malformed(None, e))?);
        let question = QuestionSpan {
            name_len: name.len(),
            qtype,
            qclass,
        };
        let (edns, opt_count) =
            walk_records(&mut dec, &header).map_err(|e| malformed(Some(question), e))?;
        if !dec.is_empty() {
            return Err(malformed(
                Some(question),
                DecodeError::TrailingBytes {
                    offset: dec.position(),
                },
            ));
        }
        Ok(QueryView {
            packet,
            header,
            question,
            edns,
            opt_count,
        })
    }

    /// The whole packet.
    pub fn packet(&self) -> &'a [u8] {
        self.packet
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn id(&self) -> u16 {
        self.header.id
    }

    pub fn flags(&self) -> u16 {
        self.header.flags
    }

    pub fn opcode(&self) -> Opcode {
        self.header.opcode()
    }

    /// Where the question is.
    pub fn question_span(&self) -> QuestionSpan {
        self.question
    }

    /// The question name as received (case preserved), uncompressed wire form.
    pub fn qname_wire(&self) -> &'a [u8] {
        self.packet
            .get(HEADER_LEN..HEADER_LEN + self.question.name_len)
            .unwrap_or(&[])
    }

    /// QNAME, QTYPE and QCLASS exactly as received.
    pub fn question_wire(&self) -> &'a [u8] {
        self.packet
            .get(HEADER_LEN..HEADER_LEN + self.question.name_len + 4)
            .unwrap_or(&[])
    }

    /// The question name as an owned [`Name`] (allocates).
    pub fn qname(&self) -> Name {
        Name::from_wire_unchecked(self.qname_wire().to_vec())
    }

    pub fn qtype(&self) -> RType {
        self.question.qtype
    }

    pub fn qclass(&self) -> RClass {
        self.question.qclass
    }

    /// Writes the ASCII-lowercased question name (wire form) into `out`; returns its length.
    pub fn lowercase_qname(&self, out: &mut [u8; MAX_NAME_LEN]) -> usize {
        let wire = self.qname_wire();
        for (dst, src) in out.iter_mut().zip(wire) {
            *dst = src.to_ascii_lowercase();
        }
        wire.len().min(MAX_NAME_LEN)
    }

    /// The OPT record's contents, if the query has one (any EDNS version).
    pub fn edns(&self) -> Option<&Edns> {
        self.edns.as_ref()
    }

    /// Number of OPT records (0 or 1: more is an error).
    pub fn opt_count(&self) -> usize {
        self.opt_count
    }

    pub fn ancount(&self) -> u16 {
        self.header.ancount
    }

    pub fn nscount(&self) -> u16 {
        self.header.nscount
    }

    pub fn arcount(&self) -> u16 {
        self.header.arcount
    }
}

/// Validates every record after the question; decodes the OPT.
fn walk_records(
    dec: &mut Decoder<'_>,
    header: &Header,
) -> Result<(Option<Edns>, usize), DecodeError> {
    let mut edns = None;
    let mut opt_count = 0usize;
    let sections = [
        (header.ancount, false),
        (header.nscount, false),
        (header.arcount, true),
    ];
    for (count, additional) in sections {
        for _ in 0..count {
            let at = dec.position();
            let owner_len = dec.skip_name()?;
            let rtype = RType(dec.u16_as("TYPE")?);
            let rclass = RClass(dec.u16_as("CLASS")?);
            let ttl = dec.u32_as("TTL")?;
            let rdlen = dec.u16_as("RDLENGTH")?;
            let mut rd = dec.limited(usize::from(rdlen), "RDATA")?;
            if rtype == RType::OPT {
                // Same order of checks as Message::decode: RDATA first, then placement.
                let options = decode_options(&mut rd)?;
                if !additional {
                    return Err(DecodeError::OptNotInAdditional { offset: at });
                }
                if owner_len != 1 {
                    return Err(DecodeError::OptNotRoot { offset: at });
                }
                if opt_count > 0 {
                    return Err(DecodeError::MultipleOpt { offset: at });
                }
                opt_count += 1;
                edns = Some(Edns::from_parts(rclass.0, ttl, options));
            } else {
                RData::validate(rtype, rclass, &mut rd)?;
            }
        }
    }
    Ok((edns, opt_count))
}
