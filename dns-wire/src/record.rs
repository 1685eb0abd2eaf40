//! Resource records: owner, type, class, TTL and typed RDATA.

use std::fmt;

use crate::decode::{DecodeError, Decoder};
use crate::encode::{EncodeError, Encoder};
use crate::name::Name;
use crate::rdata::RData;
use crate::types::{RClass, RType};

/// A resource record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    pub name: Name,
    pub rtype: RType,
    pub rclass: RClass,
    pub ttl: u32,
    pub rdata: RData,
}

impl Record {
    /// A class IN record whose type comes from `rdata` (`Unknown` RDATA needs an explicit
    /// type: build the struct directly).
    pub fn new_in(name: Name, ttl: u32, rdata: RData) -> Option<Record> {
        Some(Record {
            name,
            rtype: rdata.rtype()?,
            rclass: RClass::IN,
            ttl,
            rdata,
        })
    }

    /// Decodes one record at the decoder's position.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<Record, DecodeError> {
        let name = dec.read_name()?;
        let rtype = RType(dec.u16_as("TYPE")?);
        let rclass = RClass(dec.u16_as("CLASS")?);
        let ttl = dec.u32_as("TTL")?;
        let rdlen = dec.u16_as("RDLENGTH")?;
        let mut rd = dec.limited(usize::from(rdlen), "RDATA")?;
        let rdata = RData::decode(rtype, rclass, &mut rd)?;
        Ok(Record {
            name,
            rtype,
            rclass,
            ttl,
            rdata,
        })
    }

    /// Writes the record (same as [`Encoder::put_record`]).
    pub fn encode(&self, enc: &mut Encoder) -> Result<(), EncodeError> {
        enc.put_record(self)
    }

    /// Byte-exact equality: like `==` but owner names and names in RDATA compare
    /// case-sensitively.
    pub fn eq_exact(&self, other: &Record) -> bool {
        self == other
            && self.name.eq_exact(&other.name)
            && rdata_names_exact(&self.rdata, &other.rdata)
    }
}

fn rdata_names_exact(a: &RData, b: &RData) -> bool {
    match (a, b) {
        (RData::Ns(x), RData::Ns(y))
        | (RData::Cname(x), RData::Cname(y))
        | (RData::Ptr(x), RData::Ptr(y)) => x.eq_exact(y),
        (RData::Soa(x), RData::Soa(y)) => x.mname.eq_exact(&y.mname) && x.rname.eq_exact(&y.rname),
        (RData::Mx { exchange: x, .. }, RData::Mx { exchange: y, .. }) => x.eq_exact(y),
        _ => true,
    }
}

/// Zone-file presentation: `www.example. 300 IN A 192.0.2.1`.
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            self.name, self.ttl, self.rclass, self.rtype, self.rdata
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn display_and_roundtrip() {
        let r = Record::new_in(
            Name::from_ascii("www.example").unwrap(),
            300,
            RData::A(Ipv4Addr::new(192, 0, 2, 1)),
        )
        .unwrap();
        assert_eq!(r.to_string(), "www.example. 300 IN A 192.0.2.1");
        let mut e = Encoder::new();
        e.put_record(&r).unwrap();
        assert_eq!(
            e.as_slice(),
            b"\x03www\x07example\x00\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc0\x00\x02\x01"
        );
        let back = Record::decode(&mut Decoder::new(e.as_slice())).unwrap();
        assert!(back.eq_exact(&r));
        let unknown = Record {
            rtype: RType(65000),
            rclass: RClass(7),
            rdata: RData::Unknown(vec![1, 2]),
            ..r
        };
        assert_eq!(
            unknown.to_string(),
            r"www.example. 300 CLASS7 TYPE65000 \# 2 0102"
        );
    }

    #[test]
    fn failed_record_writes_nothing() {
        let r = Record {
            name: Name::from_ascii("t.example").unwrap(),
            rtype: RType::TXT,
            rclass: RClass::IN,
            ttl: 0,
            rdata: RData::Txt(vec![vec![0; 256]]),
        };
        let mut e = Encoder::new();
        e.put_u8(7);
        assert!(e.put_record(&r).is_err());
        assert_eq!(e.as_slice(), &[7]);
        // The owner name written before the failure is no compression target any more.
        e.put_name(&Name::from_ascii("t.example").unwrap());
        assert_eq!(e.position(), 1 + 11);
        let huge = Record {
            rdata: RData::Txt(vec![vec![0; 255]; 300]),
            ..r
        };
        assert!(matches!(
            e.put_record(&huge),
            Err(EncodeError::RdataTooLong { .. })
        ));
        assert_eq!(e.position(), 12);
    }
}
