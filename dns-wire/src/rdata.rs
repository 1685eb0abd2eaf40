//! Typed RDATA for the well-known types, raw bytes for the rest (RFC 1035, 3596, 3597).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::decode::{DecodeError, Decoder};
use crate::edns::{EdnsOption, decode_options};
use crate::encode::{EncodeError, Encoder};
use crate::name::Name;
use crate::types::{RClass, RType};

/// SOA RDATA (RFC 1035 3.3.13).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Soa {
    pub mname: Name,
    pub rname: Name,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

/// RDATA of a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ns(Name),
    Cname(Name),
    Ptr(Name),
    Soa(Soa),
    Mx {
        preference: u16,
        exchange: Name,
    },
    /// Character-strings of at most 255 bytes each; empty RDATA is an empty list.
    Txt(Vec<Vec<u8>>),
    Hinfo {
        cpu: Vec<u8>,
        os: Vec<u8>,
    },
    Opt(Vec<EdnsOption>),
    /// Raw RDATA of any other type (or class, see [`RData::decode`]); never decompressed.
    Unknown(Vec<u8>),
}

/// Which RDATA format applies to a (type, class, length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    A,
    Aaaa,
    Ns,
    Cname,
    Ptr,
    Soa,
    Mx,
    Txt,
    Hinfo,
    Opt,
    Raw,
}

fn format_of(rtype: RType, rclass: RClass, rdlen: usize) -> Format {
    if rtype == RType::OPT {
        return Format::Opt;
    }
    // RFC 2136: class ANY / NONE with empty RDATA (UPDATE deletions and prerequisites).
    if rdlen == 0 && (rclass == RClass::ANY || rclass == RClass::NONE) {
        return Format::Raw;
    }
    let address_class = rclass == RClass::IN || rclass == RClass::NONE || rclass == RClass::ANY;
    match rtype {
        RType::A if address_class => Format::A,
        RType::AAAA if address_class => Format::Aaaa,
        RType::NS => Format::Ns,
        RType::CNAME => Format::Cname,
        RType::PTR => Format::Ptr,
        RType::SOA => Format::Soa,
        RType::MX => Format::Mx,
        RType::TXT => Format::Txt,
        RType::HINFO => Format::Hinfo,
        _ => Format::Raw,
    }
}

/// Turns a read past the RDATA end into `BadRdata`.
fn in_rdata(rtype: RType) -> impl Fn(DecodeError) -> DecodeError {
    move |e| match e {
        DecodeError::Truncated { offset, .. } => DecodeError::BadRdata {
            offset,
            rtype: rtype.0,
            reason: "RDATA too short",
        },
        other => other,
    }
}

fn read_character_string<'a>(dec: &mut Decoder<'a>) -> Result<&'a [u8], DecodeError> {
    let len = dec.u8_as("character-string length")?;
    dec.take(usize::from(len), "character-string")
}

impl RData {
    /// Decodes RDATA from `dec`, which must be limited to exactly the RDATA (see
    /// [`Decoder::limited`]); every byte must be used.
    ///
    /// A and AAAA are typed only in classes IN, NONE and ANY; any type with empty RDATA
    /// in class ANY or NONE (RFC 2136 updates) is `Unknown(vec![])`; OPT is always typed.
    pub fn decode(
        rtype: RType,
        rclass: RClass,
        dec: &mut Decoder<'_>,
    ) -> Result<RData, DecodeError> {
        let start = dec.position();
        let map = in_rdata(rtype);
        let rdata = match format_of(rtype, rclass, dec.remaining()) {
            Format::A => {
                let b = dec.take(4, "A").map_err(&map)?;
                let mut o = [0u8; 4];
                o.copy_from_slice(b);
                RData::A(Ipv4Addr::from(o))
            }
            Format::Aaaa => {
                let b = dec.take(16, "AAAA").map_err(&map)?;
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                RData::Aaaa(Ipv6Addr::from(o))
            }
            Format::Ns => RData::Ns(dec.read_name().map_err(&map)?),
            Format::Cname => RData::Cname(dec.read_name().map_err(&map)?),
            Format::Ptr => RData::Ptr(dec.read_name().map_err(&map)?),
            Format::Soa => RData::Soa(Soa {
                mname: dec.read_name().map_err(&map)?,
                rname: dec.read_name().map_err(&map)?,
                serial: dec.u32_as("SOA").map_err(&map)?,
                refresh: dec.u32_as("SOA").map_err(&map)?,
                retry: dec.u32_as("SOA").map_err(&map)?,
                expire: dec.u32_as("SOA").map_err(&map)?,
                minimum: dec.u32_as("SOA").map_err(&map)?,
            }),
            Format::Mx => RData::Mx {
                preference: dec.u16_as("MX").map_err(&map)?,
                exchange: dec.read_name().map_err(&map)?,
            },
            Format::Txt => {
                let mut strings = Vec::new();
                while !dec.is_empty() {
                    strings.push(read_character_string(dec).map_err(&map)?.to_vec());
                }
                RData::Txt(strings)
            }
            Format::Hinfo => RData::Hinfo {
                cpu: read_character_string(dec).map_err(&map)?.to_vec(),
                os: read_character_string(dec).map_err(&map)?.to_vec(),
            },
            Format::Opt => RData::Opt(decode_options(dec)?),
            Format::Raw => RData::Unknown(dec.take(dec.remaining(), "RDATA")?.to_vec()),
        };
        if !dec.is_empty() {
            return Err(DecodeError::BadRdata {
                offset: dec.position(),
                rtype: rtype.0,
                reason: "bytes left at the end of RDATA",
            });
        }
        debug_assert!(dec.position() >= start);
        Ok(rdata)
    }

    /// Checks RDATA exactly as [`RData::decode`] does, without allocating
    /// (except for OPT options, which are returned by the caller's own path).
    pub(crate) fn validate(
        rtype: RType,
        rclass: RClass,
        dec: &mut Decoder<'_>,
    ) -> Result<(), DecodeError> {
        let map = in_rdata(rtype);
        match format_of(rtype, rclass, dec.remaining()) {
            Format::A => {
                dec.take(4, "A").map_err(&map)?;
            }
            Format::Aaaa => {
                dec.take(16, "AAAA").map_err(&map)?;
            }
            Format::Ns | Format::Cname | Format::Ptr => {
                dec.skip_name().map_err(&map)?;
            }
            Format::Soa => {
                dec.skip_name().map_err(&map)?;
                dec.skip_name().map_err(&map)?;
                for _ in 0..5 {
                    dec.u32_as("SOA").map_err(&map)?;
                }
            }
            Format::Mx => {
                dec.u16_as("MX").map_err(&map)?;
                dec.skip_name().map_err(&map)?;
            }
            Format::Txt => {
                while !dec.is_empty() {
                    read_character_string(dec).map_err(&map)?;
                }
            }
            Format::Hinfo => {
                read_character_string(dec).map_err(&map)?;
                read_character_string(dec).map_err(&map)?;
            }
            Format::Opt => {
                decode_options(dec)?;
            }
            Format::Raw => {
                dec.take(dec.remaining(), "RDATA")?;
            }
        }
        if !dec.is_empty() {
            return Err(DecodeError::BadRdata {
                offset: dec.position(),
                rtype: rtype.0,
                reason: "bytes left at the end of RDATA",
            });
        }
        Ok(())
    }

    /// The type this variant is the RDATA of (`None` for `Unknown`).
    pub fn rtype(&self) -> Option<RType> {
        Some(match self {
            RData::A(_) => RType::A,
            RData::Aaaa(_) => RType::AAAA,
            RData::Ns(_) => RType::NS,
            RData::Cname(_) => RType::CNAME,
            RData::Ptr(_) => RType::PTR,
            RData::Soa(_) => RType::SOA,
            RData::Mx { .. } => RType::MX,
            RData::Txt(_) => RType::TXT,
            RData::Hinfo { .. } => RType::HINFO,
            RData::Opt(_) => RType::OPT,
            RData::Unknown(_) => return None,
        })
    }

    /// Writes the RDATA (without RDLENGTH). Names in NS, CNAME, PTR, SOA and MX are
    /// compressed.
    pub fn encode(&self, enc: &mut Encoder) -> Result<(), EncodeError> {
        match self {
            RData::A(a) => enc.put_slice(&a.octets()),
            RData::Aaaa(a) => enc.put_slice(&a.octets()),
            RData::Ns(n) | RData::Cname(n) | RData::Ptr(n) => enc.put_name(n),
            RData::Soa(soa) => {
                enc.put_name(&soa.mname);
                enc.put_name(&soa.rname);
                for v in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
                    enc.put_u32(v);
                }
            }
            RData::Mx {
                preference,
                exchange,
            } => {
                enc.put_u16(*preference);
                enc.put_name(exchange);
            }
            RData::Txt(strings) => {
                for s in strings {
                    enc.put_character_string(s)?;
                }
            }
            RData::Hinfo { cpu, os } => {
                enc.put_character_string(cpu)?;
                enc.put_character_string(os)?;
            }
            RData::Opt(options) => {
                for o in options {
                    o.encode(enc)?;
                }
            }
            RData::Unknown(raw) => enc.put_slice(raw),
        }
        Ok(())
    }
}

/// Writes a quoted character-string with `"` and `\` escaped and other non-printable
/// bytes as `\DDD`.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &[u8]) -> fmt::Result {
    f.write_str("\"")?;
    for &b in s {
        match b {
            b'"' | b'\\' => write!(f, "\\{}", char::from(b))?,
            0x20..=0x7e => write!(f, "{}", char::from(b))?,
            _ => write!(f, "\\{b:03}")?,
        }
    }
    f.write_str("\"")
}

/// Writes RFC 3597 generic RDATA: `\# len hex`.
fn write_generic(f: &mut fmt::Formatter<'_>, raw: &[u8]) -> fmt::Result {
    write!(f, "\\# {}", raw.len())?;
    if !raw.is_empty() {
        f.write_str(" ")?;
        for b in raw {
            write!(f, "{b:02x}")?;
        }
    }
    Ok(())
}

impl fmt::Display for RData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RData::A(a) => write!(f, "{a}"),
            RData::Aaaa(a) => write!(f, "{a}"),
            RData::Ns(n) | RData::Cname(n) | RData::Ptr(n) => write!(f, "{n}"),
            RData::Soa(s) => write!(
                f,
                "{} {} {} {} {} {} {}",
                s.mname, s.rname, s.serial, s.refresh, s.retry, s.expire, s.minimum
            ),
            RData::Mx {
                preference,
                exchange,
            } => write!(f, "{preference} {exchange}"),
            RData::Txt(strings) if strings.is_empty() => write_generic(f, &[]),
            RData::Txt(strings) => {
                for (i, s) in strings.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write_quoted(f, s)?;
                }
                Ok(())
            }
            RData::Hinfo { cpu, os } => {
                write_quoted(f, cpu)?;
                f.write_str(" ")?;
                write_quoted(f, os)
            }
            RData::Opt(options) => {
                let mut enc = Encoder::new();
                for o in options {
                    if o.encode(&mut enc).is_err() {
                        return f.write_str("; invalid OPT RDATA");
                    }
                }
                write_generic(f, enc.as_slice())
            }
            RData::Unknown(raw) => write_generic(f, raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn decode(rtype: RType, rclass: RClass, raw: &[u8]) -> Result<RData, DecodeError> {
        let mut d = Decoder::new(raw);
        let r = RData::decode(rtype, rclass, &mut d);
        let mut v = Decoder::new(raw);
        let checked = RData::validate(rtype, rclass, &mut v);
        assert_eq!(
            r.as_ref().err(),
            checked.as_ref().err(),
            "validate agrees with decode"
        );
        r
    }

    #[test]
    fn strict_lengths() {
        assert_eq!(
            decode(RType::A, RClass::IN, &[1, 2, 3, 4]),
            Ok(RData::A(Ipv4Addr::new(1, 2, 3, 4)))
        );
        assert_eq!(
            decode(RType::A, RClass::IN, &[1, 2, 3]),
            Err(DecodeError::BadRdata {
                offset: 0,
                rtype: 1,
                reason: "RDATA too short"
            })
        );
        assert_eq!(
            decode(RType::A, RClass::IN, &[1, 2, 3, 4, 5]),
            Err(DecodeError::BadRdata {
                offset: 4,
                rtype: 1,
                reason: "bytes left at the end of RDATA"
            })
        );
        assert!(decode(RType::AAAA, RClass::IN, &[0; 15]).is_err());
        assert!(decode(RType::AAAA, RClass::IN, &[0; 16]).is_ok());
        assert!(decode(RType::NS, RClass::IN, b"\x01a\x00\x00").is_err());
        assert!(decode(RType::NS, RClass::IN, b"\x01a").is_err());
        assert!(decode(RType::MX, RClass::IN, b"\x00").is_err());
        assert!(decode(RType::SOA, RClass::IN, b"\x00\x00").is_err());
        assert!(decode(RType::HINFO, RClass::IN, b"\x01a").is_err());
        assert!(decode(RType::HINFO, RClass::IN, b"\x01a\x01b\x00").is_err());
        assert!(decode(RType::TXT, RClass::IN, b"\x02a").is_err());
    }

    #[test]
    fn class_dependent_formats() {
        assert_eq!(
            decode(RType::A, RClass::CH, &[1, 2]),
            Ok(RData::Unknown(vec![1, 2]))
        );
        assert_eq!(
            decode(RType::A, RClass::ANY, &[]),
            Ok(RData::Unknown(vec![]))
        );
        assert_eq!(
            decode(RType::MX, RClass::NONE, &[]),
            Ok(RData::Unknown(vec![]))
        );
        assert!(decode(RType::MX, RClass::IN, &[]).is_err());
        assert_eq!(decode(RType::TXT, RClass::IN, &[]), Ok(RData::Txt(vec![])));
        assert_eq!(decode(RType::OPT, RClass::ANY, &[]), Ok(RData::Opt(vec![])));
        assert_eq!(
            decode(RType::TXT, RClass::CH, b"\x01x"),
            Ok(RData::Txt(vec![b"x".to_vec()]))
        );
    }

    #[test]
    fn display() {
        assert_eq!(
            RData::A(Ipv4Addr::new(192, 0, 2, 1)).to_string(),
            "192.0.2.1"
        );
        assert_eq!(
            RData::Aaaa("2001:db8::1".parse().unwrap()).to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            RData::Mx {
                preference: 10,
                exchange: n("mx.example")
            }
            .to_string(),
            "10 mx.example."
        );
        assert_eq!(
            RData::Txt(vec![b"a \"b\" \\c".to_vec(), vec![0, 200], vec![]]).to_string(),
            r#""a \"b\" \\c" "\000\200" """#
        );
        assert_eq!(RData::Txt(vec![]).to_string(), r"\# 0");
        assert_eq!(RData::Unknown(vec![0xde, 0xad]).to_string(), r"\# 2 dead");
        assert_eq!(
            RData::Hinfo {
                cpu: b"x86".to_vec(),
                os: b"Linux".to_vec()
            }
            .to_string(),
            r#""x86" "Linux""#
        );
        let soa = RData::Soa(Soa {
            mname: n("ns1.example"),
            rname: n("hostmaster.example"),
            serial: 1,
            refresh: 2,
            retry: 3,
            expire: 4,
            minimum: 5,
        });
        assert_eq!(
            soa.to_string(),
            "ns1.example. hostmaster.example. 1 2 3 4 5"
        );
        assert_eq!(
            RData::Opt(vec![EdnsOption::Other {
                code: 3,
                data: vec![1]
            }])
            .to_string(),
            r"\# 5 0003000101"
        );
    }
}
