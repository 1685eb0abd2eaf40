//! Latency probes on the wire: DNS servers ask a POP's probe, in batches, for its round trip to resolvers.
//!
//! A DNS server sends a [`LatencyRequest`] (many resolver addresses in one UDP datagram)
//! to a probe's `[pops.probe] listen` address. The probe measures its round trip to each
//! address and answers the requesting socket with [`LatencyResponse`]s as measurements
//! finish: a response may carry any subset of the request's addresses, and one request
//! may be answered by several responses (each echoing the request's `seq`).
//!
//! # Wire format, version 1
//!
//! All integers are big-endian. Both datagrams end with a MAC:
//! HMAC-SHA256(`probes.report_key`, every byte before the MAC), the same key and tag as
//! the metric reports of [`crate::report`]. A receiver verifies the MAC before it reads
//! any other byte, then refuses unknown magic, versions, flags and families, counts out
//! of range and bytes after the last address.
//!
//! Request (DNS server → probe):
//!
//! ```text
//! magic        4   "PNLQ"
//! version      1   1
//! flags        1   0 (reserved)
//! reserved     2   0
//! sender       1+n length-prefixed UTF-8, 1..=64 bytes: the DNS server's id (its POP name)
//! seq          8   per-sender sequence number
//! sent_at_ms   8   unix time in milliseconds when the request was sent
//! count        2   1..=64 addresses
//! addresses    ... per address: family (4 or 6) 1, address 4 or 16
//! mac         32
//! ```
//!
//! Response (probe → the socket the request came from):
//!
//! ```text
//! magic        4   "PNLR"
//! version      1   1
//! flags        1   0 (reserved)
//! reserved     2   0
//! sender       1+n length-prefixed UTF-8, 1..=64 bytes: the probe's POP name
//! seq          8   the request's seq, echoed
//! sent_at_ms   8   unix ms when the response was sent
//! count        2   1..=64 results
//! results      ... per result: family 1, address 4 or 16,
//!                  rtt_us 4 (u32::MAX = no answer within the timeout),
//!                  measured_at_ms 8 (unix ms of the measurement)
//! mac         32
//! ```
//!
//! A full request is at most 1211 bytes; a response of 64 IPv6 results is about 2 kB,
//! so the responder in this crate also cuts a response short of
//! [`crate::report::TARGET_DATAGRAM`] bytes to stay unfragmented.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::{self, Bad, Cursor, MAC_LEN};

/// First bytes of a request.
pub const REQUEST_MAGIC: [u8; 4] = *b"PNLQ";
/// First bytes of a response.
pub const RESPONSE_MAGIC: [u8; 4] = *b"PNLR";
/// The version this code writes and reads.
pub const VERSION: u8 = 1;
/// Most addresses in one request, and most results in one response.
pub const MAX_ADDRS_PER_REQUEST: usize = 64;
/// `rtt_us` on the wire when the address did not answer within the timeout.
pub const NO_ANSWER: u32 = u32::MAX;

const MAX_SENDER: usize = 64;
/// magic, version, flags, reserved, seq, sent_at, count (the sender comes on top).
const HEADER_FIXED: usize = 4 + 1 + 1 + 2 + 8 + 8 + 2;
const MIN_DATAGRAM: usize = HEADER_FIXED + 2 + 5 + MAC_LEN;
const MAX_RESULT: usize = 1 + 16 + 4 + 8;
/// Largest datagram of either kind (a response of 64 IPv6 results from a 64-byte sender).
pub const MAX_DATAGRAM: usize =
    HEADER_FIXED + 1 + MAX_SENDER + MAX_ADDRS_PER_REQUEST * MAX_RESULT + MAC_LEN;

/// A batch of resolver addresses a DNS server wants the probe's round trip to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyRequest {
    /// The requesting DNS server's id (its POP name).
    pub sender: String,
    pub seq: u64,
    pub sent_at_ms: u64,
    /// 1..=[`MAX_ADDRS_PER_REQUEST`] addresses.
    pub addrs: Vec<IpAddr>,
}

/// Round trips the probe measured, for (a subset of) one request's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyResponse {
    /// The probe's POP name.
    pub sender: String,
    /// The request's seq.
    pub seq: u64,
    pub sent_at_ms: u64,
    /// 1..=[`MAX_ADDRS_PER_REQUEST`] results.
    pub results: Vec<LatencyResult>,
}

/// The probe's round trip to one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyResult {
    pub addr: IpAddr,
    /// Round trip in microseconds; `None` when nothing answered within the timeout.
    pub rtt_us: Option<u32>,
    /// Unix ms when it was measured.
    pub measured_at_ms: u64,
}

/// Why a datagram is not a latency request or response we accept, or cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LatencyError {
    #[error("datagram of {len} bytes is too short to be a latency probe message")]
    TooShort { len: usize },
    #[error("datagram of {len} bytes is larger than {MAX_DATAGRAM}")]
    TooLarge { len: usize },
    #[error("latency probe MAC does not verify: wrong key or altered datagram")]
    BadMac,
    #[error("not a popnet latency {0} (bad magic)")]
    BadMagic(&'static str),
    #[error("latency probe version {0} is not supported (this code reads version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("malformed latency probe message at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    #[error("cannot encode latency probe message: {0}")]
    Unencodable(&'static str),
}

impl From<Bad> for LatencyError {
    fn from(b: Bad) -> LatencyError {
        LatencyError::Malformed {
            offset: b.offset,
            reason: b.reason,
        }
    }
}

impl LatencyRequest {
    /// Encodes and authenticates this request with `key`.
    pub fn encode(&self, key: &[u8]) -> Result<Vec<u8>, LatencyError> {
        let mut out = header(
            REQUEST_MAGIC,
            &self.sender,
            self.seq,
            self.sent_at_ms,
            self.addrs.len(),
            17,
        )?;
        for a in &self.addrs {
            put_addr(&mut out, *a);
        }
        Ok(seal(out, key))
    }

    /// Verifies `datagram` with `key` and decodes it.
    pub fn decode(datagram: &[u8], key: &[u8]) -> Result<LatencyRequest, LatencyError> {
        let (mut c, sender, seq, sent_at_ms, count) =
            open(datagram, key, REQUEST_MAGIC, "request")?;
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            addrs.push(addr(&mut c)?);
        }
        if !c.at_end() {
            return Err(c.bad("bytes after the last address").into());
        }
        Ok(LatencyRequest {
            sender,
            seq,
            sent_at_ms,
            addrs,
        })
    }
}

impl LatencyResponse {
    /// Encodes and authenticates this response with `key`.
    pub fn encode(&self, key: &[u8]) -> Result<Vec<u8>, LatencyError> {
        let mut out = header(
            RESPONSE_MAGIC,
            &self.sender,
            self.seq,
            self.sent_at_ms,
            self.results.len(),
            MAX_RESULT,
        )?;
        for r in &self.results {
            put_addr(&mut out, r.addr);
            let rtt = match r.rtt_us {
                Some(NO_ANSWER) => {
                    return Err(LatencyError::Unencodable(
                        "an rtt of u32::MAX µs is the no-answer marker",
                    ));
                }
                Some(us) => us,
                None => NO_ANSWER,
            };
            out.extend_from_slice(&rtt.to_be_bytes());
            out.extend_from_slice(&r.measured_at_ms.to_be_bytes());
        }
        Ok(seal(out, key))
    }

    /// Verifies `datagram` with `key` and decodes it.
    pub fn decode(datagram: &[u8], key: &[u8]) -> Result<LatencyResponse, LatencyError> {
        let (mut c, sender, seq, sent_at_ms, count) =
            open(datagram, key, RESPONSE_MAGIC, "response")?;
        let mut results = Vec::with_capacity(count);
        for _ in 0..count {
            let addr = addr(&mut c)?;
            let rtt = c.u32("rtt_us")?;
            let measured_at_ms = c.u64("measured_at_ms")?;
            results.push(LatencyResult {
                addr,
                rtt_us: (rtt != NO_ANSWER).then_some(rtt),
                measured_at_ms,
            });
        }
        if !c.at_end() {
            return Err(c.bad("bytes after the last result").into());
        }
        Ok(LatencyResponse {
            sender,
            seq,
            sent_at_ms,
            results,
        })
    }

    /// Bytes this response encodes to (its results are not checked).
    pub fn encoded_len(&self) -> usize {
        HEADER_FIXED
            + 1
            + self.sender.len()
            + self
                .results
                .iter()
                .map(|r| result_len(r.addr))
                .sum::<usize>()
            + MAC_LEN
    }
}

/// Bytes one result for `addr` adds to a response.
pub fn result_len(addr: IpAddr) -> usize {
    match addr {
        IpAddr::V4(_) => 1 + 4 + 4 + 8,
        IpAddr::V6(_) => MAX_RESULT,
    }
}

fn header(
    magic: [u8; 4],
    sender: &str,
    seq: u64,
    sent_at_ms: u64,
    count: usize,
    per_item: usize,
) -> Result<Vec<u8>, LatencyError> {
    if count == 0 || count > MAX_ADDRS_PER_REQUEST {
        return Err(LatencyError::Unencodable("count must be 1..=64"));
    }
    let mut out = Vec::with_capacity(HEADER_FIXED + 1 + sender.len() + count * per_item + MAC_LEN);
    out.extend_from_slice(&magic);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&[0, 0]);
    wire::put_str(&mut out, sender, MAX_SENDER)
        .ok_or(LatencyError::Unencodable("sender must be 1..=64 bytes"))?;
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&sent_at_ms.to_be_bytes());
    out.extend_from_slice(&(count as u16).to_be_bytes());
    Ok(out)
}

fn seal(mut out: Vec<u8>, key: &[u8]) -> Vec<u8> {
    let tag = wire::mac(key, &out);
    out.extend_from_slice(&tag);
    out
}

/// Checks size and MAC, then reads the header up to and including the count.
fn open<'a>(
    datagram: &'a [u8],
    key: &[u8],
    magic: [u8; 4],
    kind: &'static str,
) -> Result<(Cursor<'a>, String, u64, u64, usize), LatencyError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(LatencyError::TooLarge {
            len: datagram.len(),
        });
    }
    if datagram.len() < MIN_DATAGRAM {
        return Err(LatencyError::TooShort {
            len: datagram.len(),
        });
    }
    let body = wire::verify(key, datagram).ok_or(LatencyError::BadMac)?;
    if body[..4] != magic {
        return Err(LatencyError::BadMagic(kind));
    }
    if body[4] != VERSION {
        return Err(LatencyError::UnsupportedVersion(body[4]));
    }
    let mut c = Cursor::new(body, 5);
    if c.u8("flags")? != 0 {
        return Err(c.bad("unknown flags").into());
    }
    if c.u16("reserved")? != 0 {
        return Err(c.bad("reserved bytes not zero").into());
    }
    let sender = c.string(MAX_SENDER, "sender")?;
    let seq = c.u64("seq")?;
    let sent_at_ms = c.u64("sent_at_ms")?;
    let count = usize::from(c.u16("count")?);
    if count == 0 || count > MAX_ADDRS_PER_REQUEST {
        return Err(c.bad("count is not 1..=64").into());
    }
    Ok((c, sender, seq, sent_at_ms, count))
}

fn put_addr(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

fn addr(c: &mut Cursor<'_>) -> Result<IpAddr, Bad> {
    match c.u8("family")? {
        4 => Ok(IpAddr::V4(Ipv4Addr::from(c.array::<4>("IPv4 address")?))),
        6 => Ok(IpAddr::V6(Ipv6Addr::from(c.array::<16>("IPv6 address")?))),
        _ => {
            c.pos -= 1;
            Err(c.bad("address family is neither 4 nor 6"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn request() -> LatencyRequest {
        LatencyRequest {
            sender: "iad1".into(),
            seq: 42,
            sent_at_ms: 1_700_000_000_123,
            addrs: vec![
                "192.0.2.53".parse().unwrap(),
                "2001:db8::53".parse().unwrap(),
            ],
        }
    }

    fn response() -> LatencyResponse {
        LatencyResponse {
            sender: "fra1".into(),
            seq: 42,
            sent_at_ms: 1_700_000_000_200,
            results: vec![
                LatencyResult {
                    addr: "192.0.2.53".parse().unwrap(),
                    rtt_us: Some(12_345),
                    measured_at_ms: 1_700_000_000_150,
                },
                LatencyResult {
                    addr: "2001:db8::53".parse().unwrap(),
                    rtt_us: None,
                    measured_at_ms: 1_700_000_000_190,
                },
            ],
        }
    }

    /// Replaces the MAC of a hand-altered body so only the body's content is at fault.
    fn resign(mut bytes: Vec<u8>) -> Vec<u8> {
        bytes.truncate(bytes.len() - MAC_LEN);
        seal(bytes, KEY)
    }

    #[test]
    fn round_trip() {
        let q = request();
        let b = q.encode(KEY).unwrap();
        assert_eq!(&b[..4], b"PNLQ");
        assert_eq!(b.len(), HEADER_FIXED + 5 + 5 + 17 + MAC_LEN);
        assert_eq!(LatencyRequest::decode(&b, KEY).unwrap(), q);
        let r = response();
        let b = r.encode(KEY).unwrap();
        assert_eq!(&b[..4], b"PNLR");
        assert_eq!(b.len(), r.encoded_len());
        let back = LatencyResponse::decode(&b, KEY).unwrap();
        assert_eq!(back, r);
        // No answer is u32::MAX on the wire.
        let at = b.len() - MAC_LEN - 8 - 4;
        assert_eq!(b[at..at + 4], [0xff; 4]);
    }

    #[test]
    fn full_batches_fit_the_declared_maximum() {
        let q = LatencyRequest {
            sender: "x".repeat(64),
            seq: 1,
            sent_at_ms: 1,
            addrs: vec![IpAddr::V6(Ipv6Addr::LOCALHOST); MAX_ADDRS_PER_REQUEST],
        };
        let b = q.encode(KEY).unwrap();
        assert_eq!(b.len(), 1211);
        assert_eq!(LatencyRequest::decode(&b, KEY).unwrap(), q);
        let r = LatencyResponse {
            sender: "x".repeat(64),
            seq: 1,
            sent_at_ms: 1,
            results: vec![
                LatencyResult {
                    addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    rtt_us: Some(1),
                    measured_at_ms: 1,
                };
                MAX_ADDRS_PER_REQUEST
            ],
        };
        let b = r.encode(KEY).unwrap();
        assert_eq!(b.len(), MAX_DATAGRAM);
        assert_eq!(LatencyResponse::decode(&b, KEY).unwrap(), r);
    }

    #[test]
    fn truncated_at_every_length_is_refused() {
        for b in [
            request().encode(KEY).unwrap(),
            response().encode(KEY).unwrap(),
        ] {
            for n in 0..b.len() {
                assert!(LatencyRequest::decode(&b[..n], KEY).is_err(), "{n}");
                assert!(LatencyResponse::decode(&b[..n], KEY).is_err(), "{n}");
            }
        }
    }

    #[test]
    fn wrong_key_and_every_flipped_bit_fail_the_mac() {
        let b = request().encode(KEY).unwrap();
        assert_eq!(
            LatencyRequest::decode(&b, b"some other key, long enough....."),
            Err(LatencyError::BadMac)
        );
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut x = b.clone();
                x[i] ^= 1 << bit;
                assert_eq!(
                    LatencyRequest::decode(&x, KEY),
                    Err(LatencyError::BadMac),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn oversized_batches_are_neither_encoded_nor_decoded() {
        let mut q = request();
        q.addrs = vec![IpAddr::V4(Ipv4Addr::LOCALHOST); MAX_ADDRS_PER_REQUEST + 1];
        assert!(matches!(q.encode(KEY), Err(LatencyError::Unencodable(_))));
        q.addrs.clear();
        assert!(matches!(q.encode(KEY), Err(LatencyError::Unencodable(_))));
        // A signed request claiming 65 addresses and carrying them.
        let mut b = request().encode(KEY).unwrap();
        b.truncate(b.len() - MAC_LEN);
        let count_at = HEADER_FIXED - 2 + 5;
        b[count_at..count_at + 2].copy_from_slice(&65u16.to_be_bytes());
        b.truncate(count_at + 2);
        for _ in 0..65 {
            put_addr(&mut b, IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let b = seal(b, KEY);
        assert!(matches!(
            LatencyRequest::decode(&b, KEY),
            Err(LatencyError::Malformed { .. })
        ));
        // Larger than any valid datagram: refused before the MAC is computed.
        let huge = vec![0u8; MAX_DATAGRAM + 1];
        assert!(matches!(
            LatencyRequest::decode(&huge, KEY),
            Err(LatencyError::TooLarge { .. })
        ));
    }

    #[test]
    fn signed_but_malformed_bodies_are_malformed() {
        let b = request().encode(KEY).unwrap();
        let fam_at = HEADER_FIXED + 5;
        assert_eq!(b[fam_at], 4);
        for bad in [0u8, 5, 41, 255] {
            let mut x = b.clone();
            x[fam_at] = bad;
            assert_eq!(
                LatencyRequest::decode(&resign(x), KEY),
                Err(LatencyError::Malformed {
                    offset: fam_at,
                    reason: "address family is neither 4 nor 6"
                })
            );
        }
        // A 6 where a 4 was: the addresses run past the end.
        let mut x = b.clone();
        x[fam_at] = 6;
        assert!(matches!(
            LatencyRequest::decode(&resign(x), KEY),
            Err(LatencyError::Malformed { .. })
        ));
        // Trailing bytes.
        let mut x = b.clone();
        x.truncate(x.len() - MAC_LEN);
        x.extend_from_slice(&[0, 0, 0]);
        assert!(matches!(
            LatencyRequest::decode(&seal(x, KEY), KEY),
            Err(LatencyError::Malformed {
                reason: "bytes after the last address",
                ..
            })
        ));
        // Flags, reserved, zero count, empty sender.
        for (at, v) in [(5, 1u8), (7, 1), (HEADER_FIXED + 5 - 1, 0), (8, 0)] {
            let mut x = b.clone();
            x[at] = v;
            assert!(
                matches!(
                    LatencyRequest::decode(&resign(x), KEY),
                    Err(LatencyError::Malformed { .. })
                ),
                "byte {at} = {v}"
            );
        }
        // Version and magic.
        let mut x = b.clone();
        x[4] = 2;
        assert_eq!(
            LatencyRequest::decode(&resign(x), KEY),
            Err(LatencyError::UnsupportedVersion(2))
        );
        // A request is not a response, and the other way round.
        assert_eq!(
            LatencyResponse::decode(&b, KEY),
            Err(LatencyError::BadMagic("response"))
        );
        let r = response().encode(KEY).unwrap();
        assert_eq!(
            LatencyRequest::decode(&r, KEY),
            Err(LatencyError::BadMagic("request"))
        );
    }

    #[test]
    fn the_no_answer_marker_cannot_be_a_measurement() {
        let mut r = response();
        r.results[0].rtt_us = Some(u32::MAX);
        assert!(r.encode(KEY).is_err());
        r.results[0].rtt_us = Some(u32::MAX - 1);
        assert_eq!(
            LatencyResponse::decode(&r.encode(KEY).unwrap(), KEY).unwrap(),
            r
        );
    }
}
