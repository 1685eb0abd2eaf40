//! The batch wire format: a numbered, zstd-compressed, HMAC-authenticated batch of records, and its acknowledgement.
//!
//! A sender opens a TCP connection to a log server and writes batch frames; the log
//! server answers every frame with an ack frame, in order. All integers are big-endian.
//!
//! ```text
//! batch: "PNLB" ver=1 kind:u8 flags:u16=0 stream:[16] seq:u64 created_ms:u64
//!        records:u32 raw_len:u32 payload_len:u32 source_len:u8 source
//!        payload (one zstd frame of raw_len bytes: JSON lines)  mac:[32]
//! ack:   "PNLA" ver=1 status:u8 reserved:u16=0 stream:[16] seq:u64 mac:[32]
//! ```
//!
//! `stream` identifies one sender's sequence towards one log server (random, kept in
//! the sender's spool); `seq` numbers its batches from 1 without gaps unless the sender
//! had to drop spooled batches. The MAC is HMAC-SHA256 with the network's `[logs] key`
//! over every byte before it, so neither a batch nor an ack can be forged or altered; a
//! replayed batch is recognised by its `(stream, seq)` and acknowledged as a duplicate.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Current version of both frames.
pub const VERSION: u8 = 1;
/// Magic of a batch frame.
pub const BATCH_MAGIC: &[u8; 4] = b"PNLB";
/// Magic of an ack frame.
pub const ACK_MAGIC: &[u8; 4] = b"PNLA";
/// Fixed part of a batch before the source name.
pub const BATCH_HEAD: usize = 4 + 1 + 1 + 2 + 16 + 8 + 8 + 4 + 4 + 4 + 1;
/// Length of the MAC.
pub const MAC_LEN: usize = 32;
/// Length of an ack frame.
pub const ACK_LEN: usize = 4 + 1 + 1 + 2 + 16 + 8 + MAC_LEN;
/// Largest compressed payload accepted.
pub const MAX_PAYLOAD: u32 = 16 << 20;
/// Largest uncompressed payload accepted (bounds the memory a batch can make us spend).
pub const MAX_RAW: u32 = 64 << 20;
/// Longest source name.
pub const MAX_SOURCE: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// What a batch's records are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// Cache access records ([`crate::record::AccessRecord`]).
    Access,
    /// DNS answer counts ([`crate::record::DnsRecord`]).
    Dns,
    /// Probe check results ([`crate::record::ProbeRecord`]).
    Probe,
}

impl Kind {
    pub fn code(self) -> u8 {
        match self {
            Kind::Access => 1,
            Kind::Dns => 2,
            Kind::Probe => 3,
        }
    }

    pub fn from_code(c: u8) -> Option<Kind> {
        match c {
            1 => Some(Kind::Access),
            2 => Some(Kind::Dns),
            3 => Some(Kind::Probe),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Access => "access",
            Kind::Dns => "dns",
            Kind::Probe => "probe",
        }
    }
}

/// A stream id.
pub type StreamId = [u8; 16];

/// A batch, decoded (the payload still compressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub kind: Kind,
    pub stream: StreamId,
    pub seq: u64,
    pub created_ms: u64,
    pub records: u32,
    pub raw_len: u32,
    pub source: String,
    pub payload: Vec<u8>,
}

/// How a log server answered a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckStatus {
    /// Stored (durably) now.
    Stored,
    /// Already stored earlier; dropped.
    Duplicate,
}

impl AckStatus {
    fn code(self) -> u8 {
        match self {
            AckStatus::Stored => 0,
            AckStatus::Duplicate => 1,
        }
    }
}

/// An ack, decoded and authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub status: AckStatus,
    pub stream: StreamId,
    pub seq: u64,
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("not a popnet log frame (magic {0:02x?})")]
    Magic([u8; 4]),
    #[error("frame version {0} is not supported (this side speaks {VERSION})")]
    Version(u8),
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("unknown ack status {0}")]
    Status(u8),
    #[error("reserved bits are set")]
    Reserved,
    #[error("compressed payload of {0} bytes is over the limit of {MAX_PAYLOAD}")]
    PayloadTooLarge(u32),
    #[error("payload of {0} bytes uncompressed is over the limit of {MAX_RAW}")]
    RawTooLarge(u32),
    #[error("source name is not 1-{MAX_SOURCE} printable ASCII characters")]
    Source,
    #[error("the frame is cut short")]
    Truncated,
    #[error("the MAC does not match (wrong [logs] key, or the frame was altered)")]
    Mac,
    #[error("the payload does not decompress to the {expected} bytes announced: {why}")]
    Decompress { expected: u32, why: String },
    #[error("sequence number 0 is not used")]
    SeqZero,
}

fn mac(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    // HMAC takes keys of any length.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(data);
    m.finalize().into_bytes().into()
}

fn verify(key: &[u8], data: &[u8], tag: &[u8]) -> Result<(), WireError> {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(data);
    m.verify_slice(tag).map_err(|_| WireError::Mac)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn valid_source(s: &[u8]) -> bool {
    !s.is_empty() && s.len() <= MAX_SOURCE && s.iter().all(|b| b.is_ascii_graphic())
}

impl Batch {
    /// Compresses `raw` (JSON lines) into a batch.
    pub fn seal(
        kind: Kind,
        stream: StreamId,
        seq: u64,
        created_ms: u64,
        records: u32,
        source: &str,
        raw: &[u8],
    ) -> std::io::Result<Batch> {
        if raw.len() > MAX_RAW as usize {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "batch over the raw size limit",
            ));
        }
        let payload = zstd::bulk::compress(raw, 3)?;
        Ok(Batch {
            kind,
            stream,
            seq,
            created_ms,
            records,
            raw_len: raw.len() as u32,
            source: source
                .chars()
                .filter(char::is_ascii_graphic)
                .take(MAX_SOURCE)
                .collect(),
            payload,
        })
    }

    /// The frame, MAC included.
    pub fn encode(&self, key: &[u8]) -> Vec<u8> {
        let src = self.source.as_bytes();
        let mut out = Vec::with_capacity(BATCH_HEAD + src.len() + self.payload.len() + MAC_LEN);
        out.extend_from_slice(BATCH_MAGIC);
        out.push(VERSION);
        out.push(self.kind.code());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.stream);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.records.to_be_bytes());
        out.extend_from_slice(&self.raw_len.to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.push(src.len() as u8);
        out.extend_from_slice(src);
        out.extend_from_slice(&self.payload);
        let tag = mac(key, &out);
        out.extend_from_slice(&tag);
        out
    }

    /// Checks a frame's fixed head (the first [`BATCH_HEAD`] bytes) and returns the
    /// length of the whole frame, so a reader knows how much more to read before
    /// allocating anything large.
    pub fn frame_len(head: &[u8]) -> Result<usize, WireError> {
        if head.len() < BATCH_HEAD {
            return Err(WireError::Truncated);
        }
        let magic: [u8; 4] = [head[0], head[1], head[2], head[3]];
        if &magic != BATCH_MAGIC {
            return Err(WireError::Magic(magic));
        }
        if head[4] != VERSION {
            return Err(WireError::Version(head[4]));
        }
        Kind::from_code(head[5]).ok_or(WireError::Kind(head[5]))?;
        if head[6] != 0 || head[7] != 0 {
            return Err(WireError::Reserved);
        }
        let raw_len = be32(&head[44..]);
        let payload_len = be32(&head[48..]);
        if payload_len > MAX_PAYLOAD {
            return Err(WireError::PayloadTooLarge(payload_len));
        }
        if raw_len > MAX_RAW {
            return Err(WireError::RawTooLarge(raw_len));
        }
        let source_len = usize::from(head[52]);
        if source_len == 0 || source_len > MAX_SOURCE {
            return Err(WireError::Source);
        }
        Ok(BATCH_HEAD + source_len + payload_len as usize + MAC_LEN)
    }

    /// Decodes and authenticates a whole frame.
    pub fn decode(frame: &[u8], key: &[u8]) -> Result<Batch, WireError> {
        let len = Batch::frame_len(frame)?;
        if frame.len() != len {
            return Err(WireError::Truncated);
        }
        let (body, tag) = frame.split_at(len - MAC_LEN);
        verify(key, body, tag)?;
        let kind = Kind::from_code(frame[5]).ok_or(WireError::Kind(frame[5]))?;
        let seq = be64(&frame[24..]);
        if seq == 0 {
            return Err(WireError::SeqZero);
        }
        let source_len = usize::from(frame[52]);
        let src = &frame[BATCH_HEAD..BATCH_HEAD + source_len];
        if !valid_source(src) {
            return Err(WireError::Source);
        }
        let mut stream = [0u8; 16];
        stream.copy_from_slice(&frame[8..24]);
        Ok(Batch {
            kind,
            stream,
            seq,
            created_ms: be64(&frame[32..]),
            records: be32(&frame[40..]),
            raw_len: be32(&frame[44..]),
            source: String::from_utf8_lossy(src).into_owned(),
            payload: body[BATCH_HEAD + source_len..].to_vec(),
        })
    }

    /// The JSON lines, decompressed; never more than the announced length.
    pub fn decompress(&self) -> Result<Vec<u8>, WireError> {
        let raw = zstd::bulk::decompress(&self.payload, self.raw_len as usize).map_err(|e| {
            WireError::Decompress {
                expected: self.raw_len,
                why: e.to_string(),
            }
        })?;
        if raw.len() != self.raw_len as usize {
            return Err(WireError::Decompress {
                expected: self.raw_len,
                why: format!("got {} bytes", raw.len()),
            });
        }
        Ok(raw)
    }
}

impl Ack {
    pub fn encode(&self, key: &[u8]) -> [u8; ACK_LEN] {
        let mut out = [0u8; ACK_LEN];
        out[..4].copy_from_slice(ACK_MAGIC);
        out[4] = VERSION;
        out[5] = self.status.code();
        out[8..24].copy_from_slice(&self.stream);
        out[24..32].copy_from_slice(&self.seq.to_be_bytes());
        let tag = mac(key, &out[..32]);
        out[32..].copy_from_slice(&tag);
        out
    }

    pub fn decode(b: &[u8], key: &[u8]) -> Result<Ack, WireError> {
        if b.len() != ACK_LEN {
            return Err(WireError::Truncated);
        }
        let magic: [u8; 4] = [b[0], b[1], b[2], b[3]];
        if &magic != ACK_MAGIC {
            return Err(WireError::Magic(magic));
        }
        if b[4] != VERSION {
            return Err(WireError::Version(b[4]));
        }
        verify(key, &b[..32], &b[32..])?;
        let status = match b[5] {
            0 => AckStatus::Stored,
            1 => AckStatus::Duplicate,
            s => return Err(WireError::Status(s)),
        };
        if b[6] != 0 || b[7] != 0 {
            return Err(WireError::Reserved);
        }
        let mut stream = [0u8; 16];
        stream.copy_from_slice(&b[8..24]);
        Ok(Ack {
            status,
            stream,
            seq: be64(&b[24..]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sample() -> Batch {
        let raw = b"{\"customer\":\"a\"}\n{\"customer\":\"b\"}\n".repeat(50);
        Batch::seal(
            Kind::Access,
            [7; 16],
            42,
            1_700_000_000_000,
            100,
            "iad1/cache",
            &raw,
        )
        .unwrap()
    }

    #[test]
    fn a_batch_round_trips() {
        let b = sample();
        let f = b.encode(KEY);
        assert_eq!(Batch::frame_len(&f[..BATCH_HEAD]).unwrap(), f.len());
        let d = Batch::decode(&f, KEY).unwrap();
        assert_eq!(d, b);
        assert_eq!(d.decompress().unwrap().len(), b.raw_len as usize);
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let f = sample().encode(KEY);
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x01;
            assert!(Batch::decode(&g, KEY).is_err(), "flip at {i} accepted");
        }
        assert_eq!(
            Batch::decode(&f, b"another key 0123456789"),
            Err(WireError::Mac)
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let f = sample().encode(KEY);
        for n in 0..f.len() {
            assert!(Batch::decode(&f[..n], KEY).is_err());
        }
    }

    #[test]
    fn huge_announced_sizes_are_refused_from_the_head() {
        let mut f = sample().encode(KEY);
        f[48..52].copy_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes());
        assert_eq!(
            Batch::frame_len(&f[..BATCH_HEAD]),
            Err(WireError::PayloadTooLarge(MAX_PAYLOAD + 1))
        );
        let mut f = sample().encode(KEY);
        f[44..48].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            Batch::frame_len(&f[..BATCH_HEAD]),
            Err(WireError::RawTooLarge(u32::MAX))
        );
    }

    #[test]
    fn a_lying_raw_length_does_not_decompress() {
        let raw = vec![b'x'; 100_000];
        let mut b = Batch::seal(Kind::Dns, [1; 16], 1, 0, 1, "s", &raw).unwrap();
        b.raw_len = 1000; // a bomb: announces less than it holds
        assert!(matches!(b.decompress(), Err(WireError::Decompress { .. })));
        b.raw_len = 200_000; // announces more
        assert!(matches!(b.decompress(), Err(WireError::Decompress { .. })));
        let mut b = Batch::seal(Kind::Dns, [1; 16], 1, 0, 1, "s", &raw).unwrap();
        b.payload = b"garbage".to_vec();
        assert!(matches!(b.decompress(), Err(WireError::Decompress { .. })));
    }

    #[test]
    fn acks_round_trip_and_are_authenticated() {
        let a = Ack {
            status: AckStatus::Duplicate,
            stream: [3; 16],
            seq: 9,
        };
        let f = a.encode(KEY);
        assert_eq!(Ack::decode(&f, KEY).unwrap(), a);
        for i in 0..f.len() {
            let mut g = f;
            g[i] ^= 0x80;
            assert!(Ack::decode(&g, KEY).is_err(), "flip at {i} accepted");
        }
        assert!(Ack::decode(&f[..10], KEY).is_err());
    }
}
