//! Metric reports: the versioned, HMAC-SHA256-authenticated UDP datagram probes send to DNS servers.
//!
//! # Wire format, version 1
//!
//! All integers are big-endian. A datagram is one report:
//!
//! ```text
//! magic        4   "PNMR"
//! version      1   1
//! flags        1   0 (reserved)
//! reserved     2   0
//! sender       1+n length-prefixed UTF-8, 1..=64 bytes: the probe's id
//! seq          8   per-sender sequence number
//! sent_at      8   unix time in milliseconds when the report was sent
//! count        2   number of entries
//! entries      ...
//! mac         32   HMAC-SHA256(key, every byte before the mac)
//! ```
//!
//! An entry, the figures about one server (`server` is a POP name, or `customer/origin`):
//!
//! ```text
//! server       1+n length-prefixed UTF-8, 1..=128 bytes
//! measured_at  8   unix ms when these figures were measured
//! present      1   bit 0 health, 1 load, 2 loss, 3 rtt, 4 latency; other bits must be 0
//! health       3   up (0|1), availability in 1/10000 (0..=10000)        if bit 0
//! load         2   utilisation in 1/10000 (0..=65535, 10000 = fully used) if bit 1
//! loss         2   packet loss in 1/10000 (0..=10000)                    if bit 2
//! rtt          4   probe's service response time, microseconds          if bit 3
//! latency      1+  count, then per view: 1+n view name, 4 µs            if bit 4
//! ```
//!
//! Receivers verify the MAC before reading anything else, refuse unknown versions and
//! flag bits, and order reports of one sender by `(sent_at, seq)` to drop replays.

use crate::wire::{self, Bad, Cursor};

/// First bytes of every report.
pub const MAGIC: [u8; 4] = *b"PNMR";
/// The version this code writes and reads.
pub const VERSION: u8 = 1;
/// Length of the trailing MAC.
pub const MAC_LEN: usize = wire::MAC_LEN;
/// Largest datagram a receiver accepts.
pub const MAX_DATAGRAM: usize = 65_507;
/// Size the sender keeps each datagram under, so reports are never IP-fragmented.
pub const TARGET_DATAGRAM: usize = 1400;

const MAX_SENDER: usize = 64;
const MAX_SERVER: usize = 128;
const MAX_VIEW: usize = 64;
const HEADER_FIXED: usize = 4 + 1 + 1 + 2 + 8 + 8 + 2;

const HAS_HEALTH: u8 = 1;
const HAS_LOAD: u8 = 2;
const HAS_LOSS: u8 = 4;
const HAS_RTT: u8 = 8;
const HAS_LATENCY: u8 = 16;
const KNOWN_BITS: u8 = HAS_HEALTH | HAS_LOAD | HAS_LOSS | HAS_RTT | HAS_LATENCY;

/// Up/down as a probe saw it, and the fraction of recent checks that passed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    pub up: bool,
    /// 0.0 ..= 1.0
    pub availability: f32,
}

/// Figures about one server. A `None` field was not measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entry {
    pub server: String,
    pub measured_at_ms: u64,
    pub health: Option<Health>,
    /// Utilisation, 0.0 = idle, 1.0 = fully used (may exceed 1 when overloaded).
    pub load: Option<f32>,
    /// Packet loss fraction, 0.0 ..= 1.0.
    pub loss: Option<f32>,
    /// Service response time seen by the probe, in milliseconds.
    pub rtt_ms: Option<f32>,
    /// Latency from this server to clients of each view, in milliseconds.
    pub latency_ms: Vec<(String, f32)>,
}

/// One datagram's worth of figures from one probe.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub sender: String,
    pub seq: u64,
    pub sent_at_ms: u64,
    pub entries: Vec<Entry>,
}

/// Why a datagram is not a report we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    #[error("datagram of {len} bytes is too short to be a report")]
    TooShort { len: usize },
    #[error("datagram of {len} bytes is larger than {MAX_DATAGRAM}")]
    TooLarge { len: usize },
    #[error("not a popnet metric report (bad magic)")]
    BadMagic,
    #[error("report version {0} is not supported (this server reads version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("report MAC does not verify: wrong key or altered datagram")]
    BadMac,
    #[error("malformed report at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    #[error("cannot encode report: {0}")]
    Unencodable(&'static str),
}

impl Report {
    /// Encodes and authenticates this report with `key`.
    pub fn encode(&self, key: &[u8]) -> Result<Vec<u8>, ReportError> {
        let mut out = Vec::with_capacity(HEADER_FIXED + 64 + self.entries.len() * 48 + MAC_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        put_str(
            &mut out,
            &self.sender,
            MAX_SENDER,
            "sender must be 1..=64 bytes",
        )?;
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        let count = u16::try_from(self.entries.len())
            .map_err(|_| ReportError::Unencodable("more than 65535 entries"))?;
        out.extend_from_slice(&count.to_be_bytes());
        for e in &self.entries {
            encode_entry(&mut out, e)?;
        }
        let mac = wire::mac(key, &out);
        out.extend_from_slice(&mac);
        if out.len() > MAX_DATAGRAM {
            return Err(ReportError::Unencodable(
                "report larger than a UDP datagram",
            ));
        }
        Ok(out)
    }

    /// Verifies `datagram` with `key` and decodes it.
    pub fn decode(datagram: &[u8], key: &[u8]) -> Result<Report, ReportError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(ReportError::TooLarge {
                len: datagram.len(),
            });
        }
        if datagram.len() < HEADER_FIXED + 1 + MAC_LEN {
            return Err(ReportError::TooShort {
                len: datagram.len(),
            });
        }
        if datagram[..4] != MAGIC {
            return Err(ReportError::BadMagic);
        }
        if datagram[4] != VERSION {
            return Err(ReportError::UnsupportedVersion(datagram[4]));
        }
        let body = wire::verify(key, datagram).ok_or(ReportError::BadMac)?;

        let mut c = Cursor::new(body, 5);
        if c.u8("flags")? != 0 {
            return Err(c.bad("unknown flags").into());
        }
        if c.u16("reserved")? != 0 {
            return Err(c.bad("reserved bytes not zero").into());
        }
        let sender = c.string(MAX_SENDER, "sender")?;
        let seq = c.u64("seq")?;
        let sent_at_ms = c.u64("sent_at")?;
        let count = c.u16("count")?;
        let mut entries = Vec::with_capacity(usize::from(count).min(body.len() / 12));
        for _ in 0..count {
            entries.push(decode_entry(&mut c)?);
        }
        if c.pos != body.len() {
            return Err(c.bad("bytes after the last entry").into());
        }
        Ok(Report {
            sender,
            seq,
            sent_at_ms,
            entries,
        })
    }
}

/// Splits `entries` into reports that each encode under [`TARGET_DATAGRAM`] bytes,
/// numbering them from `*seq` (which is advanced).
pub fn batch(
    sender: &str,
    seq: &mut u64,
    sent_at_ms: u64,
    entries: Vec<Entry>,
    key: &[u8],
) -> Result<Vec<Vec<u8>>, ReportError> {
    let mut out = Vec::new();
    let mut current = Report {
        sender: sender.to_string(),
        seq: *seq,
        sent_at_ms,
        entries: Vec::new(),
    };
    let mut size = HEADER_FIXED + 1 + sender.len() + MAC_LEN;
    for e in entries {
        let mut scratch = Vec::new();
        encode_entry(&mut scratch, &e)?;
        if !current.entries.is_empty() && size + scratch.len() > TARGET_DATAGRAM {
            out.push(current.encode(key)?);
            *seq += 1;
            current.seq = *seq;
            current.entries.clear();
            size = HEADER_FIXED + 1 + sender.len() + MAC_LEN;
        }
        size += scratch.len();
        current.entries.push(e);
    }
    if !current.entries.is_empty() {
        out.push(current.encode(key)?);
        *seq += 1;
    }
    Ok(out)
}

fn encode_entry(out: &mut Vec<u8>, e: &Entry) -> Result<(), ReportError> {
    put_str(
        out,
        &e.server,
        MAX_SERVER,
        "server id must be 1..=128 bytes",
    )?;
    out.extend_from_slice(&e.measured_at_ms.to_be_bytes());
    let mut present = 0;
    if e.health.is_some() {
        present |= HAS_HEALTH;
    }
    if e.load.is_some() {
        present |= HAS_LOAD;
    }
    if e.loss.is_some() {
        present |= HAS_LOSS;
    }
    if e.rtt_ms.is_some() {
        present |= HAS_RTT;
    }
    if !e.latency_ms.is_empty() {
        present |= HAS_LATENCY;
    }
    out.push(present);
    if let Some(h) = e.health {
        out.push(u8::from(h.up));
        out.extend_from_slice(
            &fixed(h.availability, 1.0, "availability must be 0..=1")?.to_be_bytes(),
        );
    }
    if let Some(l) = e.load {
        out.extend_from_slice(&fixed(l, 6.5535, "load must be 0..=6.5535")?.to_be_bytes());
    }
    if let Some(l) = e.loss {
        out.extend_from_slice(&fixed(l, 1.0, "loss must be 0..=1")?.to_be_bytes());
    }
    if let Some(r) = e.rtt_ms {
        out.extend_from_slice(&micros(r)?.to_be_bytes());
    }
    if !e.latency_ms.is_empty() {
        let n = u8::try_from(e.latency_ms.len())
            .map_err(|_| ReportError::Unencodable("more than 255 views in one entry"))?;
        out.push(n);
        for (view, ms) in &e.latency_ms {
            put_str(out, view, MAX_VIEW, "view name must be 1..=64 bytes")?;
            out.extend_from_slice(&micros(*ms)?.to_be_bytes());
        }
    }
    Ok(())
}

fn decode_entry(c: &mut Cursor<'_>) -> Result<Entry, ReportError> {
    let server = c.string(MAX_SERVER, "server")?;
    let measured_at_ms = c.u64("measured_at")?;
    let present = c.u8("present")?;
    if present & !KNOWN_BITS != 0 {
        return Err(c.bad("unknown field bits in entry").into());
    }
    let mut e = Entry {
        server,
        measured_at_ms,
        ..Entry::default()
    };
    if present & HAS_HEALTH != 0 {
        let up = match c.u8("health")? {
            0 => false,
            1 => true,
            _ => return Err(c.bad("health is neither 0 nor 1").into()),
        };
        let availability = c.fraction(10_000, "availability")?;
        e.health = Some(Health { up, availability });
    }
    if present & HAS_LOAD != 0 {
        e.load = Some(c.fraction(u16::MAX, "load")?);
    }
    if present & HAS_LOSS != 0 {
        e.loss = Some(c.fraction(10_000, "loss")?);
    }
    if present & HAS_RTT != 0 {
        e.rtt_ms = Some(c.u32("rtt")? as f32 / 1000.0);
    }
    if present & HAS_LATENCY != 0 {
        let n = c.u8("latency count")?;
        if n == 0 {
            return Err(c.bad("latency present with no views").into());
        }
        for _ in 0..n {
            let view = c.string(MAX_VIEW, "view")?;
            let us = c.u32("latency")?;
            e.latency_ms.push((view, us as f32 / 1000.0));
        }
    }
    Ok(e)
}

fn put_str(out: &mut Vec<u8>, s: &str, max: usize, why: &'static str) -> Result<(), ReportError> {
    wire::put_str(out, s, max).ok_or(ReportError::Unencodable(why))
}

fn fixed(v: f32, max: f32, why: &'static str) -> Result<u16, ReportError> {
    if !(v.is_finite() && (0.0..=max).contains(&v)) {
        return Err(ReportError::Unencodable(why));
    }
    Ok((v * 10_000.0).round() as u16)
}

fn micros(ms: f32) -> Result<u32, ReportError> {
    if !(ms.is_finite() && (0.0..4_294_967.0).contains(&ms)) {
        return Err(ReportError::Unencodable("time must be 0..4294967 ms"));
    }
    Ok((ms * 1000.0).round() as u32)
}

impl From<Bad> for ReportError {
    fn from(b: Bad) -> ReportError {
        ReportError::Malformed {
            offset: b.offset,
            reason: b.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sample() -> Report {
        Report {
            sender: "iad1".into(),
            seq: 7,
            sent_at_ms: 1_700_000_000_123,
            entries: vec![
                Entry {
                    server: "shop/east".into(),
                    measured_at_ms: 1_700_000_000_100,
                    health: Some(Health {
                        up: true,
                        availability: 0.75,
                    }),
                    load: Some(0.5),
                    loss: Some(0.01),
                    rtt_ms: Some(12.5),
                    latency_ms: vec![("na".into(), 20.0), ("eu".into(), 95.25)],
                },
                Entry {
                    server: "fra1".into(),
                    measured_at_ms: 1_700_000_000_000,
                    health: Some(Health {
                        up: false,
                        availability: 0.0,
                    }),
                    ..Entry::default()
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        let bytes = r.encode(KEY).unwrap();
        assert_eq!(&bytes[..4], b"PNMR");
        assert_eq!(Report::decode(&bytes, KEY).unwrap(), r);
    }

    #[test]
    fn wrong_key_and_flipped_bits_fail_the_mac() {
        let bytes = sample().encode(KEY).unwrap();
        assert_eq!(
            Report::decode(&bytes, b"another key of some length......"),
            Err(ReportError::BadMac)
        );
        for i in 5..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert_eq!(
                Report::decode(&b, KEY),
                Err(ReportError::BadMac),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn truncated_reports_are_refused_at_every_length() {
        let bytes = sample().encode(KEY).unwrap();
        for n in 0..bytes.len() {
            assert!(
                Report::decode(&bytes[..n], KEY).is_err(),
                "accepted {n} bytes"
            );
        }
    }

    #[test]
    fn version_and_magic_are_checked_before_the_mac() {
        let mut b = sample().encode(KEY).unwrap();
        b[4] = 2;
        assert_eq!(
            Report::decode(&b, KEY),
            Err(ReportError::UnsupportedVersion(2))
        );
        b[0] = b'X';
        assert_eq!(Report::decode(&b, KEY), Err(ReportError::BadMagic));
    }

    #[test]
    fn a_correctly_signed_but_malformed_body_is_malformed() {
        // Unknown entry bits, re-signed so the MAC passes.
        let mut body = sample().encode(KEY).unwrap();
        body.truncate(body.len() - MAC_LEN);
        let present_at = 8 + 5 + 8 + 8 + 2 + 10 + 8;
        assert_eq!(body[present_at], 0x1f);
        body[present_at] |= 0x80;
        let tag = wire::mac(KEY, &body);
        body.extend_from_slice(&tag);
        assert!(matches!(
            Report::decode(&body, KEY),
            Err(ReportError::Malformed { .. })
        ));
    }

    #[test]
    fn out_of_range_values_are_not_encoded() {
        let mut r = sample();
        r.entries[0].loss = Some(1.5);
        assert!(r.encode(KEY).is_err());
        r.entries[0].loss = Some(f32::NAN);
        assert!(r.encode(KEY).is_err());
        let mut r = sample();
        r.sender = String::new();
        assert!(r.encode(KEY).is_err());
    }

    #[test]
    fn batches_stay_under_the_target_size_and_number_consecutively() {
        let entries: Vec<Entry> = (0..200)
            .map(|i| Entry {
                server: format!("customer-{i}/origin"),
                measured_at_ms: 1,
                load: Some(0.25),
                latency_ms: vec![("na".into(), 1.0), ("eu".into(), 2.0)],
                ..Entry::default()
            })
            .collect();
        let mut seq = 10;
        let grams = batch("iad1", &mut seq, 5, entries.clone(), KEY).unwrap();
        assert!(grams.len() > 1);
        let mut back = Vec::new();
        for (i, g) in grams.iter().enumerate() {
            assert!(
                g.len() <= TARGET_DATAGRAM,
                "datagram {i} is {} bytes",
                g.len()
            );
            let r = Report::decode(g, KEY).unwrap();
            assert_eq!(r.seq, 10 + i as u64);
            back.extend(r.entries);
        }
        assert_eq!(seq, 10 + grams.len() as u64);
        assert_eq!(back, entries);
    }
}
