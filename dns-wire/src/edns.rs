//! EDNS(0) (RFC 6891): the OPT pseudo-record, Client Subnet (RFC 7871) and Cookies (RFC 7873).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::decode::{DecodeError, Decoder};
use crate::encode::{EncodeError, Encoder};
use crate::name::Name;
use crate::rdata::RData;
use crate::record::Record;
use crate::types::{RClass, RType};

/// EDNS option code of Client Subnet (RFC 7871).
pub const OPT_CODE_ECS: u16 = 8;
/// EDNS option code of DNS Cookies (RFC 7873).
pub const OPT_CODE_COOKIE: u16 = 10;

/// ECS address family for IPv4.
pub const ECS_FAMILY_IPV4: u16 = 1;
/// ECS address family for IPv6.
pub const ECS_FAMILY_IPV6: u16 = 2;

/// An EDNS Client Subnet option (RFC 7871 6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientSubnet {
    /// 1 (IPv4) or 2 (IPv6).
    pub family: u16,
    pub source_prefix: u8,
    pub scope_prefix: u8,
    /// The address, zero beyond `source_prefix`.
    pub address: IpAddr,
}

impl ClientSubnet {
    /// A subnet of `address` with `source_prefix` bits (clamped to the family's size),
    /// scope 0, address bits past the prefix cleared.
    pub fn new(address: IpAddr, source_prefix: u8) -> ClientSubnet {
        let (family, max) = match address {
            IpAddr::V4(_) => (ECS_FAMILY_IPV4, 32),
            IpAddr::V6(_) => (ECS_FAMILY_IPV6, 128),
        };
        let source_prefix = source_prefix.min(max);
        ClientSubnet {
            family,
            source_prefix,
            scope_prefix: 0,
            address: mask(address, source_prefix),
        }
    }

    /// Decodes the option data; `offset` is where the data starts in the message.
    pub fn decode(data: &[u8], offset: usize) -> Result<ClientSubnet, DecodeError> {
        let bad = |at: usize, reason| DecodeError::BadEdnsOption {
            offset: offset + at,
            code: OPT_CODE_ECS,
            reason,
        };
        let &[f0, f1, source_prefix, scope_prefix, ref addr @ ..] = data else {
            return Err(bad(0, "ECS shorter than 4 bytes"));
        };
        let family = u16::from_be_bytes([f0, f1]);
        let max: u8 = match family {
            ECS_FAMILY_IPV4 => 32,
            ECS_FAMILY_IPV6 => 128,
            _ => return Err(bad(0, "unknown ECS family")),
        };
        if source_prefix > max {
            return Err(bad(2, "ECS source prefix longer than the address"));
        }
        if scope_prefix > max {
            return Err(bad(3, "ECS scope prefix longer than the address"));
        }
        if addr.len() != usize::from(source_prefix).div_ceil(8) {
            return Err(bad(
                4,
                "ECS address length does not match the source prefix",
            ));
        }
        let mut full = [0u8; 16];
        for (dst, src) in full.iter_mut().zip(addr) {
            *dst = *src;
        }
        let rem = source_prefix % 8;
        if rem != 0 {
            let last = addr.last().copied().unwrap_or(0);
            if last & (0xffu8 >> rem) != 0 {
                return Err(bad(
                    4 + addr.len() - 1,
                    "ECS address bits set past the source prefix",
                ));
            }
        }
        let address = if family == ECS_FAMILY_IPV4 {
            IpAddr::V4(Ipv4Addr::new(full[0], full[1], full[2], full[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(full))
        };
        Ok(ClientSubnet {
            family,
            source_prefix,
            scope_prefix,
            address,
        })
    }

    /// Writes the option data (exactly ceil(source_prefix / 8) address bytes; bits past
    /// the prefix are cleared). Errors if family, address and prefixes do not agree.
    pub fn encode_data(&self, enc: &mut Encoder) -> Result<(), EncodeError> {
        let bad = |reason| EncodeError::BadEdnsOption {
            offset: enc.position(),
            code: OPT_CODE_ECS,
            reason,
        };
        let (octets, max): (Vec<u8>, u8) = match (self.family, self.address) {
            (ECS_FAMILY_IPV4, IpAddr::V4(a)) => (a.octets().to_vec(), 32),
            (ECS_FAMILY_IPV6, IpAddr::V6(a)) => (a.octets().to_vec(), 128),
            _ => return Err(bad("ECS family does not match the address")),
        };
        if self.source_prefix > max || self.scope_prefix > max {
            return Err(bad("ECS prefix longer than the address"));
        }
        let n = usize::from(self.source_prefix).div_ceil(8);
        enc.put_u16(self.family);
        enc.put_u8(self.source_prefix);
        enc.put_u8(self.scope_prefix);
        let masked = mask_bytes(&octets, self.source_prefix);
        enc.put_slice(masked.get(..n).unwrap_or(&[]));
        Ok(())
    }
}

fn mask_bytes(octets: &[u8], prefix: u8) -> Vec<u8> {
    let prefix = usize::from(prefix);
    octets
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let bits_before = i * 8;
            if prefix >= bits_before + 8 {
                b
            } else if prefix <= bits_before {
                0
            } else {
                b & (0xffu8 << (8 - (prefix - bits_before)))
            }
        })
        .collect()
}

fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(a) => {
            let m = mask_bytes(&a.octets(), prefix);
            let mut o = [0u8; 4];
            for (d, s) in o.iter_mut().zip(&m) {
                *d = *s;
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        IpAddr::V6(a) => {
            let m = mask_bytes(&a.octets(), prefix);
            let mut o = [0u8; 16];
            for (d, s) in o.iter_mut().zip(&m) {
                *d = *s;
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
    }
}

/// One EDNS option.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EdnsOption {
    ClientSubnet(ClientSubnet),
    /// A DNS cookie: the 8-byte client cookie and a server cookie of 8..=32 bytes,
    /// or empty when absent.
    Cookie {
        client: [u8; 8],
        server: Vec<u8>,
    },
    /// Any other option, raw.
    Other {
        code: u16,
        data: Vec<u8>,
    },
}

impl EdnsOption {
    /// The option code.
    pub fn code(&self) -> u16 {
        match self {
            EdnsOption::ClientSubnet(_) => OPT_CODE_ECS,
            EdnsOption::Cookie { .. } => OPT_CODE_COOKIE,
            EdnsOption::Other { code, .. } => *code,
        }
    }

    /// Decodes an option's data; `offset` is where the data starts in the message.
    pub fn decode(code: u16, data: &[u8], offset: usize) -> Result<EdnsOption, DecodeError> {
        match code {
            OPT_CODE_ECS => ClientSubnet::decode(data, offset).map(EdnsOption::ClientSubnet),
            OPT_CODE_COOKIE => {
                if data.len() != 8 && !(16..=40).contains(&data.len()) {
                    return Err(DecodeError::BadEdnsOption {
                        offset,
                        code,
                        reason: "cookie length is not 8 or 16..=40",
                    });
                }
                let mut client = [0u8; 8];
                for (d, s) in client.iter_mut().zip(data) {
                    *d = *s;
                }
                Ok(EdnsOption::Cookie {
                    client,
                    server: data.get(8..).unwrap_or(&[]).to_vec(),
                })
            }
            _ => Ok(EdnsOption::Other {
                code,
                data: data.to_vec(),
            }),
        }
    }

    /// Writes code, length and data. Errors if the option would not decode again.
    pub fn encode(&self, enc: &mut Encoder) -> Result<(), EncodeError> {
        let start = enc.position();
        let code = self.code();
        enc.put_u16(code);
        enc.put_u16(0);
        match self {
            EdnsOption::ClientSubnet(ecs) => ecs.encode_data(enc)?,
            EdnsOption::Cookie { client, server } => {
                if !server.is_empty() && !(8..=32).contains(&server.len()) {
                    return Err(EncodeError::BadEdnsOption {
                        offset: start,
                        code,
                        reason: "server cookie length is not 8..=32",
                    });
                }
                enc.put_slice(client);
                enc.put_slice(server);
            }
            EdnsOption::Other { data, .. } => {
                if EdnsOption::decode(code, data, 0).is_err() {
                    return Err(EncodeError::BadEdnsOption {
                        offset: start,
                        code,
                        reason: "raw data of a known option does not decode",
                    });
                }
                enc.put_slice(data);
            }
        }
        let len = enc.position() - start - 4;
        let len = u16::try_from(len).map_err(|_| EncodeError::BadEdnsOption {
            offset: start,
            code,
            reason: "option longer than 65535 bytes",
        })?;
        enc.patch_u16(start + 2, len);
        Ok(())
    }
}

/// Decodes options until the end of `dec` (which should be limited to the OPT RDATA).
pub fn decode_options(dec: &mut Decoder<'_>) -> Result<Vec<EdnsOption>, DecodeError> {
    let mut options = Vec::new();
    while !dec.is_empty() {
        let at = dec.position();
        let code = dec
            .u16_as("EDNS option code")
            .map_err(|_| DecodeError::BadEdnsOption {
                offset: at,
                code: 0,
                reason: "truncated option header",
            })?;
        let len = dec
            .u16_as("EDNS option length")
            .map_err(|_| DecodeError::BadEdnsOption {
                offset: at,
                code,
                reason: "truncated option header",
            })?;
        let data_at = dec.position();
        let data = dec
            .take(usize::from(len), "EDNS option data")
            .map_err(|_| DecodeError::BadEdnsOption {
                offset: at,
                code,
                reason: "option data runs past the OPT RDATA",
            })?;
        options.push(EdnsOption::decode(code, data, data_at)?);
    }
    Ok(options)
}

/// The contents of an OPT record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Edns {
    /// Requestor's UDP payload size (the OPT CLASS).
    pub udp_payload: u16,
    /// Upper 8 bits of the extended RCODE.
    pub ext_rcode: u8,
    pub version: u8,
    /// The DO bit.
    pub dnssec_ok: bool,
    /// The other 15 flag bits.
    pub z: u16,
    pub options: Vec<EdnsOption>,
}

impl Default for Edns {
    fn default() -> Edns {
        Edns {
            udp_payload: 1232,
            ext_rcode: 0,
            version: 0,
            dnssec_ok: false,
            z: 0,
            options: Vec::new(),
        }
    }
}

impl Edns {
    /// Builds from the OPT record's CLASS, TTL and options.
    pub fn from_parts(class: u16, ttl: u32, options: Vec<EdnsOption>) -> Edns {
        Edns {
            udp_payload: class,
            ext_rcode: (ttl >> 24) as u8,
            version: (ttl >> 16) as u8,
            dnssec_ok: ttl & 0x8000 != 0,
            z: (ttl & 0x7fff) as u16,
            options,
        }
    }

    /// The OPT TTL field.
    pub fn ttl(&self) -> u32 {
        (u32::from(self.ext_rcode) << 24)
            | (u32::from(self.version) << 16)
            | (u32::from(self.dnssec_ok) << 15)
            | u32::from(self.z & 0x7fff)
    }

    /// Reads an OPT record. Offsets in errors are relative to the record's RDATA when
    /// options have to be decoded from raw bytes.
    pub fn from_record(r: &Record) -> Result<Edns, DecodeError> {
        if r.rtype != RType::OPT {
            return Err(DecodeError::BadRdata {
                offset: 0,
                rtype: r.rtype.0,
                reason: "not an OPT record",
            });
        }
        if !r.name.is_root() {
            return Err(DecodeError::OptNotRoot { offset: 0 });
        }
        let options = match &r.rdata {
            RData::Opt(options) => options.clone(),
            RData::Unknown(raw) => decode_options(&mut Decoder::new(raw))?,
            _ => {
                return Err(DecodeError::BadRdata {
                    offset: 0,
                    rtype: r.rtype.0,
                    reason: "OPT record without OPT RDATA",
                });
            }
        };
        Ok(Edns::from_parts(r.rclass.0, r.ttl, options))
    }

    /// The OPT record for this EDNS.
    pub fn to_record(&self) -> Record {
        Record {
            name: Name::root(),
            rtype: RType::OPT,
            rclass: RClass(self.udp_payload),
            ttl: self.ttl(),
            rdata: RData::Opt(self.options.clone()),
        }
    }

    /// The first Client Subnet option, if any.
    pub fn client_subnet(&self) -> Option<&ClientSubnet> {
        self.options.iter().find_map(|o| match o {
            EdnsOption::ClientSubnet(ecs) => Some(ecs),
            _ => None,
        })
    }

    /// The first cookie option as (client, server), if any.
    pub fn cookie(&self) -> Option<(&[u8; 8], &[u8])> {
        self.options.iter().find_map(|o| match o {
            EdnsOption::Cookie { client, server } => Some((client, server.as_slice())),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ecs(data: &[u8]) -> Result<ClientSubnet, DecodeError> {
        ClientSubnet::decode(data, 100)
    }

    #[test]
    fn ecs_decode_strict() {
        let ok = ecs(&[0, 1, 24, 0, 192, 0, 2]).unwrap();
        assert_eq!(ok.address, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)));
        assert_eq!(ok.source_prefix, 24);
        let ok = ecs(&[0, 1, 0, 0]).unwrap();
        assert_eq!(ok.address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let ok = ecs(&[0, 2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0]).unwrap();
        assert_eq!(ok.address, "2001:db8::".parse::<IpAddr>().unwrap());
        let ok = ecs(&[0, 1, 23, 0, 192, 0, 2]).unwrap();
        assert_eq!(ok.address, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)));
        // Bit 24 set with a /23 prefix.
        assert_eq!(
            ecs(&[0, 1, 23, 0, 192, 0, 3]),
            Err(DecodeError::BadEdnsOption {
                offset: 106,
                code: 8,
                reason: "ECS address bits set past the source prefix"
            })
        );
        assert!(matches!(
            ecs(&[0, 3, 0, 0]),
            Err(DecodeError::BadEdnsOption { offset: 100, .. })
        ));
        assert!(ecs(&[0, 0, 0, 0]).is_err());
        // Address longer / shorter than the prefix needs.
        assert!(ecs(&[0, 1, 24, 0, 192, 0, 2, 0]).is_err());
        assert!(ecs(&[0, 1, 24, 0, 192, 0]).is_err());
        assert!(ecs(&[0, 1, 33, 0, 1, 2, 3, 4, 5]).is_err());
        assert!(ecs(&[0, 1, 24, 33, 192, 0, 2]).is_err());
        assert!(ecs(&[0, 1, 24]).is_err());
        assert!(ecs(&[]).is_err());
    }

    #[test]
    fn ecs_roundtrip_and_masking() {
        for (addr, prefix, wire_len) in [
            ("192.0.2.77", 24u8, 7usize),
            ("192.0.2.77", 32, 8),
            ("192.0.2.77", 0, 4),
            ("192.0.2.77", 17, 7),
            ("2001:db8::1", 48, 10),
            ("2001:db8::1", 128, 20),
            ("2001:db8::1", 1, 5),
        ] {
            let c = ClientSubnet::new(addr.parse().unwrap(), prefix);
            let mut e = Encoder::new();
            c.encode_data(&mut e).unwrap();
            assert_eq!(e.position(), wire_len, "{addr}/{prefix}");
            assert_eq!(ClientSubnet::decode(e.as_slice(), 0).unwrap(), c);
        }
        assert_eq!(
            ClientSubnet::new("192.0.2.77".parse().unwrap(), 20).address,
            "192.0.0.0".parse::<IpAddr>().unwrap()
        );
        let bad = ClientSubnet {
            family: 2,
            source_prefix: 8,
            scope_prefix: 0,
            address: "10.0.0.0".parse().unwrap(),
        };
        assert!(bad.encode_data(&mut Encoder::new()).is_err());
    }

    #[test]
    fn cookies() {
        let c = EdnsOption::decode(10, &[1; 8], 0).unwrap();
        assert_eq!(
            c,
            EdnsOption::Cookie {
                client: [1; 8],
                server: vec![]
            }
        );
        assert!(EdnsOption::decode(10, &[1; 16], 0).is_ok());
        assert!(EdnsOption::decode(10, &[1; 40], 0).is_ok());
        for bad in [0usize, 7, 9, 15, 41] {
            assert!(EdnsOption::decode(10, &vec![1; bad], 0).is_err(), "{bad}");
        }
        let bad = EdnsOption::Cookie {
            client: [0; 8],
            server: vec![1; 7],
        };
        assert!(bad.encode(&mut Encoder::new()).is_err());
    }

    #[test]
    fn options_list() {
        let raw = [
            0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2, 0xfd, 0xe9, 0, 2, 0xaa, 0xbb,
        ];
        let opts = decode_options(&mut Decoder::new(&raw)).unwrap();
        assert_eq!(opts.len(), 2);
        assert_eq!(
            opts[1],
            EdnsOption::Other {
                code: 65001,
                data: vec![0xaa, 0xbb]
            }
        );
        let mut e = Encoder::new();
        for o in &opts {
            o.encode(&mut e).unwrap();
        }
        assert_eq!(e.as_slice(), &raw);
        assert!(matches!(
            decode_options(&mut Decoder::new(&raw[..raw.len() - 1])),
            Err(DecodeError::BadEdnsOption { offset: 11, .. })
        ));
        assert!(decode_options(&mut Decoder::new(&[0, 1, 0])).is_err());
        assert!(decode_options(&mut Decoder::new(&[0])).is_err());
    }

    #[test]
    fn edns_record_roundtrip() {
        let e = Edns {
            udp_payload: 4096,
            ext_rcode: 1,
            version: 0,
            dnssec_ok: true,
            z: 0x1234,
            options: vec![EdnsOption::Cookie {
                client: [9; 8],
                server: vec![],
            }],
        };
        let r = e.to_record();
        assert_eq!(r.ttl, 0x0100_9234);
        assert_eq!(Edns::from_record(&r).unwrap(), e);
        let mut raw = Encoder::new();
        for o in &e.options {
            o.encode(&mut raw).unwrap();
        }
        let r2 = Record {
            rdata: RData::Unknown(raw.into_bytes()),
            ..r.clone()
        };
        assert_eq!(Edns::from_record(&r2).unwrap(), e);
        let r3 = Record {
            name: Name::from_ascii("x").unwrap(),
            ..r
        };
        assert_eq!(
            Edns::from_record(&r3),
            Err(DecodeError::OptNotRoot { offset: 0 })
        );
    }
}
