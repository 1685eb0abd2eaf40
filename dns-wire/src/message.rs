//! Whole DNS messages: header, question, and the three record sections (RFC 1035 4.1).

use std::fmt;

use crate::decode::{DecodeError, Decoder};
use crate::edns::Edns;
use crate::encode::{EncodeError, Encoder};
use crate::name::Name;
use crate::record::Record;
use crate::types::{Opcode, RClass, RType, Rcode};

/// Size of the fixed header.
pub const HEADER_LEN: usize = 12;

/// The 12-byte message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Header {
    pub id: u16,
    /// QR, OPCODE, AA, TC, RD, RA, Z, AD, CD and the low 4 RCODE bits.
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

macro_rules! flag {
    ($get:ident, $set:ident, $mask:ident) => {
        pub fn $get(&self) -> bool {
            self.flags & Header::$mask != 0
        }

        pub fn $set(&mut self, on: bool) {
            if on {
                self.flags |= Header::$mask;
            } else {
                self.flags &= !Header::$mask;
            }
        }
    };
}

impl Header {
    pub const QR: u16 = 0x8000;
    pub const OPCODE_MASK: u16 = 0x7800;
    pub const AA: u16 = 0x0400;
    pub const TC: u16 = 0x0200;
    pub const RD: u16 = 0x0100;
    pub const RA: u16 = 0x0080;
    pub const Z: u16 = 0x0040;
    pub const AD: u16 = 0x0020;
    pub const CD: u16 = 0x0010;
    pub const RCODE_MASK: u16 = 0x000f;

    flag!(qr, set_qr, QR);
    flag!(aa, set_aa, AA);
    flag!(tc, set_tc, TC);
    flag!(rd, set_rd, RD);
    flag!(ra, set_ra, RA);
    flag!(z, set_z, Z);
    flag!(ad, set_ad, AD);
    flag!(cd, set_cd, CD);

    pub fn opcode(&self) -> Opcode {
        Opcode(((self.flags & Header::OPCODE_MASK) >> 11) as u8)
    }

    pub fn set_opcode(&mut self, op: Opcode) {
        self.flags =
            (self.flags & !Header::OPCODE_MASK) | ((u16::from(op.0) << 11) & Header::OPCODE_MASK);
    }

    /// The low 4 RCODE bits in the header.
    pub fn rcode_low(&self) -> u8 {
        (self.flags & Header::RCODE_MASK) as u8
    }

    pub fn set_rcode_low(&mut self, low4: u8) {
        self.flags = (self.flags & !Header::RCODE_MASK) | (u16::from(low4) & Header::RCODE_MASK);
    }

    /// Reads the header at the decoder's position.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<Header, DecodeError> {
        Ok(Header {
            id: dec.u16_as("header")?,
            flags: dec.u16_as("header")?,
            qdcount: dec.u16_as("header")?,
            ancount: dec.u16_as("header")?,
            nscount: dec.u16_as("header")?,
            arcount: dec.u16_as("header")?,
        })
    }

    /// Reads the header from the first 12 bytes of `buf`.
    pub fn from_bytes(buf: &[u8]) -> Result<Header, DecodeError> {
        Header::decode(&mut Decoder::new(buf))
    }

    /// The header on the wire.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let fields = [
            self.id,
            self.flags,
            self.qdcount,
            self.ancount,
            self.nscount,
            self.arcount,
        ];
        for (chunk, v) in out.chunks_exact_mut(2).zip(fields) {
            chunk.copy_from_slice(&v.to_be_bytes());
        }
        out
    }
}

/// A question entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Question {
    pub name: Name,
    pub qtype: RType,
    pub qclass: RClass,
}

impl Question {
    /// Reads a question (its name may be compressed).
    pub fn decode(dec: &mut Decoder<'_>) -> Result<Question, DecodeError> {
        Ok(Question {
            name: dec.read_name()?,
            qtype: RType(dec.u16_as("QTYPE")?),
            qclass: RClass(dec.u16_as("QCLASS")?),
        })
    }
}

impl fmt::Display for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.name, self.qclass, self.qtype)
    }
}

/// Which record section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The counts are ignored on encode: they come from the section lengths.
    pub header: Header,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Message {
    /// Decodes a whole message strictly: every record the header counts must be there,
    /// nothing may follow them, and there may be at most one OPT, in the additional
    /// section, owned by the root. Names may be compressed (never into the header).
    pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
        let mut dec = Decoder::new(buf).with_pointer_floor(HEADER_LEN);
        let header = Header::decode(&mut dec)?;
        // Never trust the counts for allocation: a question is at least 5 bytes, a
        // record at least 11.
        let mut questions =
            Vec::with_capacity(usize::from(header.qdcount).min(dec.remaining() / 5));
        for _ in 0..header.qdcount {
            questions.push(Question::decode(&mut dec)?);
        }
        let mut opt_seen = false;
        let answers = decode_section(&mut dec, header.ancount, Section::Answer, &mut opt_seen)?;
        let authorities =
            decode_section(&mut dec, header.nscount, Section::Authority, &mut opt_seen)?;
        let additionals =
            decode_section(&mut dec, header.arcount, Section::Additional, &mut opt_seen)?;
        if !dec.is_empty() {
            return Err(DecodeError::TrailingBytes {
                offset: dec.position(),
            });
        }
        Ok(Message {
            header,
            questions,
            answers,
            authorities,
            additionals,
        })
    }

    /// Encodes with name compression. Compression only reuses byte-identical names, so
    /// decoding the result gives back exactly this message (case included).
    ///
    /// If some record cannot be put on the wire (see [`Message::try_encode`]) this
    /// returns a SERVFAIL header with the question section only, never a corrupt message.
    pub fn encode(&self) -> Vec<u8> {
        match self.try_encode() {
            Ok(bytes) => bytes,
            Err(_) => self.servfail_fallback(),
        }
    }

    /// Encodes, or says why a record cannot be represented (character-string over
    /// 255 bytes, RDATA over 65535, a bad EDNS option, more than 65535 entries).
    pub fn try_encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut enc = Encoder::with_capacity(512);
        enc.set_case_sensitive(true);
        self.encode_into(&mut enc)?;
        Ok(enc.into_bytes())
    }

    /// Appends the message to `enc` (with whatever compression settings it has).
    pub fn encode_into(&self, enc: &mut Encoder) -> Result<(), EncodeError> {
        let start = enc.position();
        let count =
            |n: usize| u16::try_from(n).map_err(|_| EncodeError::TooManyRecords { offset: start });
        let header = Header {
            qdcount: count(self.questions.len())?,
            ancount: count(self.answers.len())?,
            nscount: count(self.authorities.len())?,
            arcount: count(self.additionals.len())?,
            ..self.header
        };
        enc.put_slice(&header.to_bytes());
        for q in &self.questions {
            enc.put_question(q);
        }
        for r in self
            .answers
            .iter()
            .chain(&self.authorities)
            .chain(&self.additionals)
        {
            if let Err(e) = enc.put_record(r) {
                enc.truncate(start);
                return Err(e);
            }
        }
        Ok(())
    }

    fn servfail_fallback(&self) -> Vec<u8> {
        let mut header = Header {
            ancount: 0,
            nscount: 0,
            arcount: 0,
            ..self.header
        };
        header.set_rcode_low(Rcode::SERVFAIL.low4());
        let mut enc = Encoder::new();
        enc.set_case_sensitive(true);
        match u16::try_from(self.questions.len()) {
            Ok(qd) => {
                header.qdcount = qd;
                enc.put_slice(&header.to_bytes());
                for q in &self.questions {
                    enc.put_question(q);
                }
            }
            Err(_) => {
                header.qdcount = 0;
                enc.put_slice(&header.to_bytes());
            }
        }
        enc.into_bytes()
    }

    /// The OPT record, if any.
    pub fn opt(&self) -> Option<&Record> {
        self.additionals.iter().find(|r| r.rtype == RType::OPT)
    }

    /// The EDNS data of the OPT record, if there is one.
    pub fn edns(&self) -> Option<Result<Edns, DecodeError>> {
        self.opt().map(Edns::from_record)
    }

    /// The full RCODE: header low 4 bits plus the OPT's extended 8 bits.
    pub fn rcode(&self) -> Rcode {
        let ext = self.opt().map_or(0, |r| (r.ttl >> 24) as u8);
        Rcode::from_parts(ext, self.header.rcode_low())
    }

    /// Sets the full RCODE: the low 4 bits in the header and, if there is an OPT record,
    /// the upper 8 in its TTL (without OPT only the low 4 bits can be sent).
    pub fn set_rcode(&mut self, rcode: Rcode) {
        self.header.set_rcode_low(rcode.low4());
        if let Some(opt) = self.additionals.iter_mut().find(|r| r.rtype == RType::OPT) {
            opt.ttl = (opt.ttl & 0x00ff_ffff) | (u32::from(rcode.ext8()) << 24);
        }
    }

    /// Byte-exact equality: every name compares case-sensitively. Header counts are not
    /// compared (the section lengths are, and encoding takes the counts from them).
    pub fn eq_exact(&self, other: &Message) -> bool {
        fn records(a: &[Record], b: &[Record]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_exact(y))
        }
        self.header.id == other.header.id
            && self.header.flags == other.header.flags
            && self.questions.len() == other.questions.len()
            && self
                .questions
                .iter()
                .zip(&other.questions)
                .all(|(x, y)| x == y && x.name.eq_exact(&y.name))
            && records(&self.answers, &other.answers)
            && records(&self.authorities, &other.authorities)
            && records(&self.additionals, &other.additionals)
    }
}

fn decode_section(
    dec: &mut Decoder<'_>,
    count: u16,
    section: Section,
    opt_seen: &mut bool,
) -> Result<Vec<Record>, DecodeError> {
    let mut records = Vec::with_capacity(usize::from(count).min(dec.remaining() / 11));
    for _ in 0..count {
        let at = dec.position();
        let record = Record::decode(dec)?;
        if record.rtype == RType::OPT {
            if section != Section::Additional {
                return Err(DecodeError::OptNotInAdditional { offset: at });
            }
            if !record.name.is_root() {
                return Err(DecodeError::OptNotRoot { offset: at });
            }
            if *opt_seen {
                return Err(DecodeError::MultipleOpt { offset: at });
            }
            *opt_seen = true;
        }
        records.push(record);
    }
    Ok(records)
}

/// dig-like text: header line, then each section.
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        write!(
            f,
            ";; opcode: {}, status: {}, id: {}\n;; flags:",
            h.opcode(),
            self.rcode(),
            h.id
        )?;
        for (on, name) in [
            (h.qr(), "qr"),
            (h.aa(), "aa"),
            (h.tc(), "tc"),
            (h.rd(), "rd"),
            (h.ra(), "ra"),
            (h.ad(), "ad"),
            (h.cd(), "cd"),
        ] {
            if on {
                write!(f, " {name}")?;
            }
        }
        writeln!(f)?;
        for q in &self.questions {
            writeln!(f, ";{q}")?;
        }
        for (title, records) in [
            ("ANSWER", &self.answers),
            ("AUTHORITY", &self.authorities),
            ("ADDITIONAL", &self.additionals),
        ] {
            if !records.is_empty() {
                writeln!(f, ";; {title}")?;
                for r in records {
                    writeln!(f, "{r}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_flags() {
        let mut h = Header::default();
        h.set_qr(true);
        h.set_opcode(Opcode::NOTIFY);
        h.set_aa(true);
        h.set_rd(true);
        h.set_cd(true);
        h.set_rcode_low(Rcode::NXDOMAIN.low4());
        assert_eq!(h.flags, 0x8000 | (4 << 11) | 0x0400 | 0x0100 | 0x0010 | 3);
        assert!(h.qr() && h.aa() && h.rd() && h.cd());
        assert!(!h.tc() && !h.ra() && !h.ad() && !h.z());
        assert_eq!(h.opcode(), Opcode::NOTIFY);
        assert_eq!(h.rcode_low(), 3);
        h.set_aa(false);
        h.set_opcode(Opcode(0xff));
        assert!(!h.aa());
        assert_eq!(h.opcode(), Opcode(15));
        assert_eq!(h.rcode_low(), 3);
        h.id = 0xbeef;
        h.qdcount = 1;
        let bytes = h.to_bytes();
        assert_eq!(Header::from_bytes(&bytes), Ok(h));
        assert!(Header::from_bytes(&bytes[..11]).is_err());
    }

    #[test]
    fn rcode_with_opt() {
        let mut m = Message::default();
        m.set_rcode(Rcode::BADVERS);
        assert_eq!(m.rcode(), Rcode::NOERROR);
        m.additionals.push(Edns::default().to_record());
        m.set_rcode(Rcode::BADVERS);
        assert_eq!(m.rcode(), Rcode::BADVERS);
        assert_eq!(m.header.rcode_low(), 0);
        assert_eq!(m.edns().unwrap().unwrap().ext_rcode, 1);
        m.set_rcode(Rcode::NXDOMAIN);
        assert_eq!(m.rcode(), Rcode::NXDOMAIN);
    }
}
