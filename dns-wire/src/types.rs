//! Numeric DNS code points (TYPE, CLASS, OPCODE, RCODE) as newtypes with mnemonics.

use std::fmt;
use std::str::FromStr;

/// Error from parsing a TYPE or CLASS mnemonic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MnemonicError {
    /// The text is neither a known mnemonic nor the generic `TYPEnnn` / `CLASSnnn` form.
    #[error("unknown mnemonic at offset {offset}")]
    Unknown { offset: usize },
    /// The number in a generic `TYPEnnn` / `CLASSnnn` form is not a 16-bit decimal.
    #[error("bad number in generic mnemonic at offset {offset}")]
    BadNumber { offset: usize },
}

impl MnemonicError {
    /// Byte offset in the input text where the problem is.
    pub fn offset(&self) -> usize {
        match *self {
            MnemonicError::Unknown { offset } | MnemonicError::BadNumber { offset } => offset,
        }
    }
}

/// Parses `PREFIXnnn` (prefix matched case-insensitively) into a u16.
fn parse_generic(s: &str, prefix: &str) -> Option<Result<u16, MnemonicError>> {
    let head = s.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let digits = s.get(prefix.len()..)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(MnemonicError::BadNumber {
            offset: prefix.len(),
        }));
    }
    Some(digits.parse::<u16>().map_err(|_| MnemonicError::BadNumber {
        offset: prefix.len(),
    }))
}

/// A resource record TYPE (RFC 1035 3.2.2, RFC 3597).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RType(pub u16);

impl RType {
    pub const A: RType = RType(1);
    pub const NS: RType = RType(2);
    pub const CNAME: RType = RType(5);
    pub const SOA: RType = RType(6);
    pub const PTR: RType = RType(12);
    pub const HINFO: RType = RType(13);
    pub const MX: RType = RType(15);
    pub const TXT: RType = RType(16);
    pub const AAAA: RType = RType(28);
    pub const SRV: RType = RType(33);
    pub const OPT: RType = RType(41);
    pub const DS: RType = RType(43);
    pub const RRSIG: RType = RType(46);
    pub const NSEC: RType = RType(47);
    pub const DNSKEY: RType = RType(48);
    pub const SVCB: RType = RType(64);
    pub const HTTPS: RType = RType(65);
    pub const IXFR: RType = RType(251);
    pub const AXFR: RType = RType(252);
    pub const MAILB: RType = RType(253);
    pub const MAILA: RType = RType(254);
    pub const ANY: RType = RType(255);
    pub const CAA: RType = RType(257);

    const NAMES: &'static [(RType, &'static str)] = &[
        (RType::A, "A"),
        (RType::NS, "NS"),
        (RType::CNAME, "CNAME"),
        (RType::SOA, "SOA"),
        (RType::PTR, "PTR"),
        (RType::HINFO, "HINFO"),
        (RType::MX, "MX"),
        (RType::TXT, "TXT"),
        (RType::AAAA, "AAAA"),
        (RType::SRV, "SRV"),
        (RType::OPT, "OPT"),
        (RType::DS, "DS"),
        (RType::RRSIG, "RRSIG"),
        (RType::NSEC, "NSEC"),
        (RType::DNSKEY, "DNSKEY"),
        (RType::SVCB, "SVCB"),
        (RType::HTTPS, "HTTPS"),
        (RType::IXFR, "IXFR"),
        (RType::AXFR, "AXFR"),
        (RType::MAILB, "MAILB"),
        (RType::MAILA, "MAILA"),
        (RType::ANY, "ANY"),
        (RType::CAA, "CAA"),
    ];

    /// The mnemonic of a known type, `None` for others.
    pub fn mnemonic(self) -> Option<&'static str> {
        Self::NAMES
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, name)| *name)
    }

    /// True for the meta/query-only types (OPT, IXFR, AXFR, MAILB, MAILA, ANY).
    pub fn is_meta(self) -> bool {
        matches!(self.0, 41 | 128..=255)
    }
}

impl fmt::Display for RType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mnemonic() {
            Some(name) => f.write_str(name),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

impl FromStr for RType {
    type Err = MnemonicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((t, _)) = Self::NAMES
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(s))
        {
            return Ok(*t);
        }
        match parse_generic(s, "TYPE") {
            Some(r) => r.map(RType),
            None => Err(MnemonicError::Unknown { offset: 0 }),
        }
    }
}

/// A resource record CLASS (RFC 1035 3.2.4, RFC 3597).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RClass(pub u16);

impl RClass {
    pub const IN: RClass = RClass(1);
    pub const CH: RClass = RClass(3);
    pub const HS: RClass = RClass(4);
    pub const NONE: RClass = RClass(254);
    pub const ANY: RClass = RClass(255);

    /// The mnemonic of a known class, `None` for others.
    pub fn mnemonic(self) -> Option<&'static str> {
        match self {
            RClass::IN => Some("IN"),
            RClass::CH => Some("CH"),
            RClass::HS => Some("HS"),
            RClass::NONE => Some("NONE"),
            RClass::ANY => Some("ANY"),
            _ => None,
        }
    }
}

impl fmt::Display for RClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mnemonic() {
            Some(name) => f.write_str(name),
            None => write!(f, "CLASS{}", self.0),
        }
    }
}

impl FromStr for RClass {
    type Err = MnemonicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const NAMES: &[(&str, RClass)] = &[
            ("IN", RClass::IN),
            ("CH", RClass::CH),
            ("CHAOS", RClass::CH),
            ("HS", RClass::HS),
            ("NONE", RClass::NONE),
            ("ANY", RClass::ANY),
        ];
        if let Some((_, c)) = NAMES.iter().find(|(name, _)| name.eq_ignore_ascii_case(s)) {
            return Ok(*c);
        }
        match parse_generic(s, "CLASS") {
            Some(r) => r.map(RClass),
            None => Err(MnemonicError::Unknown { offset: 0 }),
        }
    }
}

/// A header OPCODE (4 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Opcode(pub u8);

impl Opcode {
    pub const QUERY: Opcode = Opcode(0);
    pub const IQUERY: Opcode = Opcode(1);
    pub const STATUS: Opcode = Opcode(2);
    pub const NOTIFY: Opcode = Opcode(4);
    pub const UPDATE: Opcode = Opcode(5);
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Opcode::QUERY => f.write_str("QUERY"),
            Opcode::IQUERY => f.write_str("IQUERY"),
            Opcode::STATUS => f.write_str("STATUS"),
            Opcode::NOTIFY => f.write_str("NOTIFY"),
            Opcode::UPDATE => f.write_str("UPDATE"),
            Opcode(n) => write!(f, "OPCODE{n}"),
        }
    }
}

/// An extended RCODE (12 bits: 8 from the OPT TTL, 4 from the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Rcode(pub u16);

impl Rcode {
    pub const NOERROR: Rcode = Rcode(0);
    pub const FORMERR: Rcode = Rcode(1);
    pub const SERVFAIL: Rcode = Rcode(2);
    pub const NXDOMAIN: Rcode = Rcode(3);
    pub const NOTIMP: Rcode = Rcode(4);
    pub const REFUSED: Rcode = Rcode(5);
    pub const YXDOMAIN: Rcode = Rcode(6);
    pub const YXRRSET: Rcode = Rcode(7);
    pub const NXRRSET: Rcode = Rcode(8);
    pub const NOTAUTH: Rcode = Rcode(9);
    pub const NOTZONE: Rcode = Rcode(10);
    pub const BADVERS: Rcode = Rcode(16);
    pub const BADCOOKIE: Rcode = Rcode(23);

    /// Builds an rcode from the OPT extended 8 bits and the header's low 4 bits.
    pub fn from_parts(ext8: u8, low4: u8) -> Rcode {
        Rcode((u16::from(ext8) << 4) | u16::from(low4 & 0x0f))
    }

    /// The low 4 bits, which go in the header.
    pub fn low4(self) -> u8 {
        (self.0 & 0x0f) as u8
    }

    /// The upper 8 bits (of 12), which go in the OPT record's TTL.
    pub fn ext8(self) -> u8 {
        ((self.0 >> 4) & 0xff) as u8
    }
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Rcode::NOERROR => "NOERROR",
            Rcode::FORMERR => "FORMERR",
            Rcode::SERVFAIL => "SERVFAIL",
            Rcode::NXDOMAIN => "NXDOMAIN",
            Rcode::NOTIMP => "NOTIMP",
            Rcode::REFUSED => "REFUSED",
            Rcode::YXDOMAIN => "YXDOMAIN",
            Rcode::YXRRSET => "YXRRSET",
            Rcode::NXRRSET => "NXRRSET",
            Rcode::NOTAUTH => "NOTAUTH",
            Rcode::NOTZONE => "NOTZONE",
            Rcode::BADVERS => "BADVERS",
            Rcode::BADCOOKIE => "BADCOOKIE",
            Rcode(n) => return write!(f, "RCODE{n}"),
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtype_display_and_parse() {
        assert_eq!(RType::A.to_string(), "A");
        assert_eq!(RType::AAAA.to_string(), "AAAA");
        assert_eq!(RType(65000).to_string(), "TYPE65000");
        assert_eq!("aaaa".parse::<RType>(), Ok(RType::AAAA));
        assert_eq!("Cname".parse::<RType>(), Ok(RType::CNAME));
        assert_eq!("TYPE65000".parse::<RType>(), Ok(RType(65000)));
        assert_eq!("type1".parse::<RType>(), Ok(RType::A));
        assert_eq!(
            "TYPE65536".parse::<RType>(),
            Err(MnemonicError::BadNumber { offset: 4 })
        );
        assert_eq!(
            "TYPE".parse::<RType>(),
            Err(MnemonicError::BadNumber { offset: 4 })
        );
        assert_eq!(
            "TYPE+1".parse::<RType>(),
            Err(MnemonicError::BadNumber { offset: 4 })
        );
        assert_eq!(
            "BOGUS".parse::<RType>(),
            Err(MnemonicError::Unknown { offset: 0 })
        );
        assert_eq!(
            "".parse::<RType>(),
            Err(MnemonicError::Unknown { offset: 0 })
        );
        // Multi-byte UTF-8 must not panic on slicing.
        assert!("TYPé1".parse::<RType>().is_err());
        assert!("é".parse::<RType>().is_err());
        for (t, name) in RType::NAMES {
            assert_eq!(t.to_string(), *name);
            assert_eq!(name.parse::<RType>(), Ok(*t));
        }
    }

    #[test]
    fn rclass_display_and_parse() {
        assert_eq!(RClass::IN.to_string(), "IN");
        assert_eq!(RClass(7).to_string(), "CLASS7");
        assert_eq!("in".parse::<RClass>(), Ok(RClass::IN));
        assert_eq!("chaos".parse::<RClass>(), Ok(RClass::CH));
        assert_eq!("CLASS7".parse::<RClass>(), Ok(RClass(7)));
        assert!("CLASSX".parse::<RClass>().is_err());
        assert!("XX".parse::<RClass>().is_err());
    }

    #[test]
    fn rcode_parts() {
        assert_eq!(Rcode::BADVERS.low4(), 0);
        assert_eq!(Rcode::BADVERS.ext8(), 1);
        assert_eq!(Rcode::from_parts(1, 0), Rcode::BADVERS);
        assert_eq!(Rcode::from_parts(0, 3), Rcode::NXDOMAIN);
        assert_eq!(Rcode(0xfff).ext8(), 0xff);
        assert_eq!(Rcode(0xfff).low4(), 0xf);
        assert_eq!(Rcode::NOERROR.to_string(), "NOERROR");
        assert_eq!(Rcode::BADVERS.to_string(), "BADVERS");
        assert_eq!(Rcode(4000).to_string(), "RCODE4000");
        assert_eq!(Opcode::NOTIFY.to_string(), "NOTIFY");
        assert_eq!(Opcode(9).to_string(), "OPCODE9");
    }
}
