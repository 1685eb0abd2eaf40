//! Values of plain zone records (`[[customers.records]]`), parsed from their text form.

use std::net::{Ipv4Addr, Ipv6Addr};

use dns_wire::Name;

/// A parsed record value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordValue {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(Name),
    /// TXT character-strings, each at most 255 bytes.
    Txt(Vec<Vec<u8>>),
    Mx {
        preference: u16,
        exchange: Name,
    },
}

/// Why a record value was rejected, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordProblem {
    pub problem: String,
    pub fix: String,
}

fn bad(problem: String, fix: &str) -> RecordProblem {
    RecordProblem {
        problem,
        fix: fix.to_string(),
    }
}

/// Longest TXT value accepted (it is split into 255-byte character-strings).
pub const MAX_TXT_BYTES: usize = 4000;

/// Parses `value` as a record of type `rtype` (A, AAAA, CNAME, TXT, MX).
pub fn parse_record(rtype: &str, value: &str) -> Result<RecordValue, RecordProblem> {
    match rtype.to_ascii_uppercase().as_str() {
        "A" => value.trim().parse().map(RecordValue::A).map_err(|_| {
            bad(
                format!("{value:?} is not an IPv4 address"),
                "write an address such as \"192.0.2.10\"",
            )
        }),
        "AAAA" => value.trim().parse().map(RecordValue::Aaaa).map_err(|_| {
            bad(
                format!("{value:?} is not an IPv6 address"),
                "write an address such as \"2001:db8::10\"",
            )
        }),
        "CNAME" => target(value).map(RecordValue::Cname),
        "TXT" => {
            if value.len() > MAX_TXT_BYTES {
                return Err(bad(
                    format!("{} bytes of TXT", value.len()),
                    "keep TXT values under 4000 bytes",
                ));
            }
            let chunks = if value.is_empty() {
                vec![Vec::new()]
            } else {
                value.as_bytes().chunks(255).map(<[u8]>::to_vec).collect()
            };
            Ok(RecordValue::Txt(chunks))
        }
        "MX" => {
            let mut parts = value.split_whitespace();
            let (Some(pref), Some(host), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad(
                    format!("{value:?} is not \"PREFERENCE HOST\""),
                    "write e.g. \"10 mail.example.com\"",
                ));
            };
            let preference = pref.parse().map_err(|_| {
                bad(
                    format!("{pref:?} is not a preference 0-65535"),
                    "write e.g. \"10 mail.example.com\"",
                )
            })?;
            Ok(RecordValue::Mx {
                preference,
                exchange: target(host)?,
            })
        }
        other => Err(bad(
            format!("record type {other:?} is not supported in a zone"),
            "use A, AAAA, CNAME, TXT or MX; balanced names are [[customers.domains]]",
        )),
    }
}

fn target(text: &str) -> Result<Name, RecordProblem> {
    match Name::from_ascii(text.trim()) {
        Ok(n) if n.label_count() > 0 => Ok(n),
        Ok(_) => Err(bad(
            "the root name is not a valid target".to_string(),
            "write a host name",
        )),
        Err(e) => Err(bad(
            format!("{text:?} is not a domain name ({e})"),
            "write a host name such as \"www.example.com\"",
        )),
    }
}
