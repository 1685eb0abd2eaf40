//! The disk tier's on-disk format: superblock, segment header, records, segment summary and seal, all little-endian and checksummed.
//!
//! The store is one file (or block device): a 4 KiB superblock, then `segments`
//! segments of `segment_bytes` each. A segment is a log: its first block is the
//! segment header (with the segment's sequence number, which grows by one every time
//! any segment is (re)opened), then records, each starting on a 4 KiB boundary and
//! padded to one. When the segment is sealed, the *summary* (every record's offset and
//! header, in order) is written after the last record and the *seal* block at the
//! segment's last 4 KiB points at it, so start-up reads three small pieces per sealed
//! segment instead of every record.
//!
//! | piece | bytes | layout |
//! |---|---|---|
//! | superblock | 4096 at 0 | `POPNETDS` · version u32 · block u32 · store id u64 · segment bytes u64 · segments u32 · 0 u32 · created u64 · xxh3 of 0..48 |
//! | segment header | 4096 at segment start | `POPNSEG1` · store id u64 · seq u64 · index u32 · 0 u32 · opened u64 · xxh3 of 0..40 |
//! | record header | 64 + variable | magic (`POBJ` object, `PPRG` purge) · header len u32 · record len u64 · seq u64 · body len u64 · chunk u32 · flags u32 · stored at u64 · 0 u64 · checksum u64 |
//! | object variable part | | key (u32 len + bytes) · customer (u16 len + bytes) · vary names (u16 count, each u16 len + bytes) · status u16 · content length u64 (MAX = none) · request time, response time, date, age u64 · fields (u32 count, each u16 name len + name + u32 value len + value) · chunk checksums (u32 count + u64 each) |
//! | purge variable part | | kind u8 (0 URL, 1 prefix, 2 customer) · text (u32 len + bytes) · applies before: seq u64, offset u64 |
//! | body | body len | right after the header; then zeros to the record length |
//! | summary | | per record: offset u64 · its header bytes |
//! | seal | 4096 at segment end | `POPNSEAL` · store id u64 · seq u64 · summary offset u64 · summary len u64 · xxh3 of the summary · records u32 · 0 u32 · xxh3 of 0..56 |
//!
//! The record checksum is xxh3-64 of the header's first 56 bytes, continued (as the
//! seed) over the variable part, whose chunk table holds the xxh3-64 of every
//! [`CHUNK`] of the body: header and body are covered, and a streamed body is checked
//! chunk by chunk before any byte of a chunk is sent. A record belongs to its segment
//! only if its seq is the segment header's: bytes left over from an earlier use of the
//! segment never pass for records of the current one.

use std::sync::Arc;

use bytes::Bytes;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::key::CacheKey;
use crate::object::{StoredObject, Timing};
use crate::purge::Matcher;
use crate::store::VaryNames;

/// The unit of alignment and of O_DIRECT transfers.
pub const BLOCK: u64 = 4096;
/// Body checksum granularity (and the unit of streamed reads).
pub const CHUNK: u64 = 1 << 20;
/// Longest record header accepted (a head, a key and the chunk table).
pub const MAX_HEADER: usize = 256 * 1024;
/// The fixed part of a record header.
pub const FIXED: usize = 64;

const SUPER_MAGIC: &[u8; 8] = b"POPNETDS";
const SEG_MAGIC: &[u8; 8] = b"POPNSEG1";
const SEAL_MAGIC: &[u8; 8] = b"POPNSEAL";
const OBJ_MAGIC: &[u8; 4] = b"POBJ";
const PURGE_MAGIC: &[u8; 4] = b"PPRG";
const VERSION: u32 = 1;
const FLAG_VARIANT: u32 = 1;

/// Why bytes read from the store are not what they should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("no {0} here (wrong magic)")]
    Magic(&'static str),
    #[error("{0} checksum mismatch")]
    Checksum(&'static str),
    #[error("{0} is cut short")]
    Truncated(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
}

/// Rounds `n` up to a whole number of blocks.
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// Rounds `n` down to a block boundary.
pub fn align_down(n: u64) -> u64 {
    n / BLOCK * BLOCK
}

/// Appends little-endian values.
struct Put<'a>(&'a mut Vec<u8>);

impl Put<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    /// A string with a u16 length; `None` when it is too long.
    fn str16(&mut self, s: &[u8]) -> Option<()> {
        self.u16(u16::try_from(s.len()).ok()?);
        self.bytes(s);
        Some(())
    }
    fn str32(&mut self, s: &[u8]) -> Option<()> {
        self.u32(u32::try_from(s.len()).ok()?);
        self.bytes(s);
        Some(())
    }
}

/// Reads little-endian values; every read is bounds-checked.
struct Get<'a> {
    b: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Get<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Get<'a> {
        Get { b, at: 0, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(FormatError::Truncated(self.what))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or([0; 2]),
        ))
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn str16(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn str32(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn text16(&mut self) -> Result<Box<str>, FormatError> {
        std::str::from_utf8(self.str16()?)
            .map(Into::into)
            .map_err(|_| FormatError::Invalid("text is not UTF-8"))
    }
    fn text32(&mut self) -> Result<Box<str>, FormatError> {
        std::str::from_utf8(self.str32()?)
            .map(Into::into)
            .map_err(|_| FormatError::Invalid("text is not UTF-8"))
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

/// The store's geometry and identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub store_id: u64,
    pub segment_bytes: u64,
    pub segments: u32,
    pub created: u64,
}

impl Superblock {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(BLOCK as usize);
        let mut p = Put(&mut v);
        p.bytes(SUPER_MAGIC);
        p.u32(VERSION);
        p.u32(BLOCK as u32);
        p.u64(self.store_id);
        p.u64(self.segment_bytes);
        p.u32(self.segments);
        p.u32(0);
        p.u64(self.created);
        let sum = xxh3_64(&v[..48]);
        v.extend_from_slice(&sum.to_le_bytes());
        v.resize(BLOCK as usize, 0);
        v
    }

    pub fn decode(b: &[u8]) -> Result<Superblock, FormatError> {
        if b.len() < 56 {
            return Err(FormatError::Truncated("superblock"));
        }
        if &b[..8] != SUPER_MAGIC {
            return Err(FormatError::Magic("superblock"));
        }
        if xxh3_64(&b[..48]) != le64(b, 48) {
            return Err(FormatError::Checksum("superblock"));
        }
        if le32(b, 8) != VERSION || le32(b, 12) != BLOCK as u32 {
            return Err(FormatError::Invalid("another format version"));
        }
        Ok(Superblock {
            store_id: le64(b, 16),
            segment_bytes: le64(b, 24),
            segments: le32(b, 32),
            created: le64(b, 40),
        })
    }
}

/// The first block of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub store_id: u64,
    pub seq: u64,
    pub index: u32,
    pub opened: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(BLOCK as usize);
        let mut p = Put(&mut v);
        p.bytes(SEG_MAGIC);
        p.u64(self.store_id);
        p.u64(self.seq);
        p.u32(self.index);
        p.u32(0);
        p.u64(self.opened);
        let sum = xxh3_64(&v[..40]);
        v.extend_from_slice(&sum.to_le_bytes());
        v.resize(BLOCK as usize, 0);
        v
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, FormatError> {
        if b.len() < 48 {
            return Err(FormatError::Truncated("segment header"));
        }
        if &b[..8] != SEG_MAGIC {
            return Err(FormatError::Magic("segment header"));
        }
        if xxh3_64(&b[..40]) != le64(b, 40) {
            return Err(FormatError::Checksum("segment header"));
        }
        Ok(SegmentHeader {
            store_id: le64(b, 8),
            seq: le64(b, 16),
            index: le32(b, 24),
            opened: le64(b, 32),
        })
    }
}

/// The last block of a sealed segment: where its summary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    pub store_id: u64,
    pub seq: u64,
    pub summary_offset: u64,
    pub summary_len: u64,
    pub summary_sum: u64,
    pub records: u32,
}

impl Seal {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(BLOCK as usize);
        let mut p = Put(&mut v);
        p.bytes(SEAL_MAGIC);
        p.u64(self.store_id);
        p.u64(self.seq);
        p.u64(self.summary_offset);
        p.u64(self.summary_len);
        p.u64(self.summary_sum);
        p.u32(self.records);
        p.u32(0);
        let sum = xxh3_64(&v[..56]);
        v.extend_from_slice(&sum.to_le_bytes());
        v.resize(BLOCK as usize, 0);
        v
    }

    pub fn decode(b: &[u8]) -> Result<Seal, FormatError> {
        if b.len() < 64 {
            return Err(FormatError::Truncated("seal"));
        }
        if &b[..8] != SEAL_MAGIC {
            return Err(FormatError::Magic("seal"));
        }
        if xxh3_64(&b[..56]) != le64(b, 56) {
            return Err(FormatError::Checksum("seal"));
        }
        Ok(Seal {
            store_id: le64(b, 8),
            seq: le64(b, 16),
            summary_offset: le64(b, 24),
            summary_len: le64(b, 32),
            summary_sum: le64(b, 40),
            records: le32(b, 48),
        })
    }
}

/// The fixed part of a record header, enough to know its kind and extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    pub purge: bool,
    pub header_len: u32,
    pub record_len: u64,
    pub seq: u64,
    pub body_len: u64,
}

impl Fixed {
    /// Parses the first [`FIXED`] bytes of a record (not yet checksummed).
    pub fn peek(b: &[u8]) -> Result<Fixed, FormatError> {
        if b.len() < FIXED {
            return Err(FormatError::Truncated("record header"));
        }
        let purge = match &b[..4] {
            m if m == OBJ_MAGIC => false,
            m if m == PURGE_MAGIC => true,
            _ => return Err(FormatError::Magic("record")),
        };
        let f = Fixed {
            purge,
            header_len: le32(b, 4),
            record_len: le64(b, 8),
            seq: le64(b, 16),
            body_len: le64(b, 24),
        };
        let hl = f.header_len as u64;
        if (f.header_len as usize) < FIXED
            || f.header_len as usize > MAX_HEADER
            || !f.record_len.is_multiple_of(BLOCK)
            || hl.checked_add(f.body_len).is_none_or(|n| n > f.record_len)
        {
            return Err(FormatError::Invalid("record extent is impossible"));
        }
        Ok(f)
    }
}

/// An object record's header, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectHeader {
    pub seq: u64,
    pub header_len: u32,
    pub record_len: u64,
    pub body_len: u64,
    pub stored_at: u64,
    pub key: Box<str>,
    pub customer: Box<str>,
    /// The URL's Vary names when this is a variant.
    pub vary: Option<Vec<Box<str>>>,
    pub status: u16,
    pub content_length: Option<u64>,
    pub timing: Timing,
    pub fields: Vec<(Box<str>, Bytes)>,
    pub chunk_sums: Vec<u64>,
}

/// A purge that must survive restarts: it removes matching objects logged before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRecord {
    pub matcher: Matcher,
    /// Applies to records at positions (seq, offset) before this one.
    pub before: (u64, u64),
}

/// A decoded record header.
#[derive(Debug, Clone, PartialEq)]
pub enum Header {
    Object(ObjectHeader),
    Purge(PurgeRecord),
}

/// The checksum of a header whose fixed part is `b[..FIXED]`.
fn header_sum(b: &[u8]) -> u64 {
    xxh3_64_with_seed(&b[FIXED..], xxh3_64(&b[..56]))
}

/// Xxh3 of each [`CHUNK`] of a body.
pub fn chunk_sums(body: &[u8]) -> Vec<u64> {
    body.chunks(CHUNK as usize).map(xxh3_64).collect()
}

fn fixed(v: &mut Vec<u8>, magic: &[u8; 4], seq: u64, body_len: u64, flags: u32, stored_at: u64) {
    let mut p = Put(v);
    p.bytes(magic);
    p.u32(0); // header length, filled in by finish
    p.u64(0); // record length, filled in by finish
    p.u64(seq);
    p.u64(body_len);
    p.u32(CHUNK as u32);
    p.u32(flags);
    p.u64(stored_at);
    p.u64(0);
    p.u64(0); // checksum
}

/// Fills in the lengths and the checksum; returns the record length.
fn finish(v: &mut [u8], body_len: u64) -> Option<u64> {
    if v.len() > MAX_HEADER {
        return None;
    }
    let record_len = align_up(v.len() as u64 + body_len);
    let hl = v.len() as u32;
    v[4..8].copy_from_slice(&hl.to_le_bytes());
    v[8..16].copy_from_slice(&record_len.to_le_bytes());
    let sum = header_sum(v);
    v[56..64].copy_from_slice(&sum.to_le_bytes());
    Some(record_len)
}

impl ObjectHeader {
    /// The header of a record for `obj` (sequence, lengths and checksum are set when
    /// it is encoded). `sums` are the body's [`chunk_sums`].
    pub fn of(obj: &StoredObject, vary: Option<&VaryNames>, sums: Vec<u64>) -> ObjectHeader {
        ObjectHeader {
            seq: 0,
            header_len: 0,
            record_len: 0,
            body_len: obj.body.len() as u64,
            stored_at: obj.stored_at,
            key: obj.key.text.clone(),
            customer: obj.customer.as_ref().into(),
            vary: vary.map(|n| n.to_vec()),
            status: obj.head.status,
            content_length: obj.head.content_length,
            timing: obj.head.timing,
            fields: obj.head.fields.clone(),
            chunk_sums: sums,
        }
    }

    /// The header bytes for a segment of sequence `seq`, and the record length
    /// (header, body, padding); `None` when a part is too large to encode.
    pub fn encode(&self, seq: u64) -> Option<(Vec<u8>, u64)> {
        let mut v = Vec::with_capacity(FIXED + self.key.len() + 64 * self.fields.len() + 128);
        let flags = if self.vary.is_some() { FLAG_VARIANT } else { 0 };
        fixed(&mut v, OBJ_MAGIC, seq, self.body_len, flags, self.stored_at);
        let mut p = Put(&mut v);
        p.str32(self.key.as_bytes())?;
        p.str16(self.customer.as_bytes())?;
        let names: &[Box<str>] = self.vary.as_deref().unwrap_or(&[]);
        p.u16(u16::try_from(names.len()).ok()?);
        for n in names {
            p.str16(n.as_bytes())?;
        }
        p.u16(self.status);
        p.u64(self.content_length.unwrap_or(u64::MAX));
        let t = self.timing;
        p.u64(t.request_time);
        p.u64(t.response_time);
        p.u64(t.date);
        p.u64(t.age_value);
        p.u32(u32::try_from(self.fields.len()).ok()?);
        for (n, val) in &self.fields {
            p.str16(n.as_bytes())?;
            p.str32(val)?;
        }
        p.u32(u32::try_from(self.chunk_sums.len()).ok()?);
        for s in &self.chunk_sums {
            p.u64(*s);
        }
        let len = finish(&mut v, self.body_len)?;
        Some((v, len))
    }
}

/// The header of a purge record (it has no body).
pub fn encode_purge(seq: u64, rec: &PurgeRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(FIXED + 64);
    fixed(&mut v, PURGE_MAGIC, seq, 0, 0, 0);
    let mut p = Put(&mut v);
    let (kind, text): (u8, &str) = match &rec.matcher {
        Matcher::Url(k) => (0, &k.text),
        Matcher::Prefix(t) => (1, t),
        Matcher::Customer(c) => (2, c),
    };
    p.u8(kind);
    // Purge texts come from admin requests of bounded size.
    let _ = p.str32(text.as_bytes());
    p.u64(rec.before.0);
    p.u64(rec.before.1);
    let _ = finish(&mut v, 0);
    v
}

/// Decodes and checks a whole record header (`b` holds at least its header length).
pub fn decode_header(b: &[u8]) -> Result<Header, FormatError> {
    let f = Fixed::peek(b)?;
    let hl = f.header_len as usize;
    if b.len() < hl {
        return Err(FormatError::Truncated("record header"));
    }
    let b = &b[..hl];
    if header_sum(b) != le64(b, 56) {
        return Err(FormatError::Checksum("record header"));
    }
    let mut g = Get::new(&b[FIXED..], "record header");
    if f.purge {
        let kind = g.u8()?;
        let text = g.text32()?;
        let before = (g.u64()?, g.u64()?);
        let matcher = match kind {
            0 => Matcher::Url(CacheKey::from_text(&text)),
            1 => Matcher::Prefix(text.into()),
            2 => Matcher::Customer(text.into()),
            _ => return Err(FormatError::Invalid("unknown purge kind")),
        };
        return Ok(Header::Purge(PurgeRecord { matcher, before }));
    }
    if le32(b, 32) as u64 != CHUNK {
        return Err(FormatError::Invalid("another chunk size"));
    }
    let flags = le32(b, 36);
    let key = g.text32()?;
    let customer = g.text16()?;
    let n = g.u16()? as usize;
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        names.push(g.text16()?);
    }
    let vary = (flags & FLAG_VARIANT != 0).then_some(names);
    let status = g.u16()?;
    let content_length = Some(g.u64()?).filter(|&l| l != u64::MAX);
    let timing = Timing {
        request_time: g.u64()?,
        response_time: g.u64()?,
        date: g.u64()?,
        age_value: g.u64()?,
    };
    let nf = g.u32()? as usize;
    let mut fields = Vec::with_capacity(nf.min(256));
    for _ in 0..nf {
        let name = g.text16()?;
        let value = Bytes::copy_from_slice(g.str32()?);
        fields.push((name, value));
    }
    let nc = g.u32()? as usize;
    if nc as u64 != f.body_len.div_ceil(CHUNK) {
        return Err(FormatError::Invalid("chunk table does not match the body"));
    }
    let mut chunk_sums = Vec::with_capacity(nc);
    for _ in 0..nc {
        chunk_sums.push(g.u64()?);
    }
    Ok(Header::Object(ObjectHeader {
        seq: f.seq,
        header_len: f.header_len,
        record_len: f.record_len,
        body_len: f.body_len,
        stored_at: le64(b, 40),
        key,
        customer,
        vary,
        status,
        content_length,
        timing,
        fields,
        chunk_sums,
    }))
}

/// Checks body chunk `index` (whole chunk bytes) against the header's table.
pub fn chunk_ok(sums: &[u64], index: usize, chunk: &[u8]) -> bool {
    sums.get(index).is_some_and(|&s| xxh3_64(chunk) == s)
}

/// Checks a whole body.
pub fn body_ok(sums: &[u64], body: &[u8]) -> bool {
    let n = body.len().div_ceil(CHUNK as usize);
    n == sums.len()
        && body
            .chunks(CHUNK as usize)
            .enumerate()
            .all(|(i, c)| chunk_ok(sums, i, c))
}

/// Appends one summary entry.
pub fn summary_entry(out: &mut Vec<u8>, offset: u64, header: &[u8]) {
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(header);
}

/// Splits a summary into (record offset, header bytes) entries.
pub fn summary_entries(b: &[u8]) -> Result<Vec<(u64, &[u8])>, FormatError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        if b.len() - at < 8 + FIXED {
            return Err(FormatError::Truncated("summary"));
        }
        let offset = le64(b, at);
        let f = Fixed::peek(&b[at + 8..])?;
        let end = at + 8 + f.header_len as usize;
        if end > b.len() {
            return Err(FormatError::Truncated("summary"));
        }
        out.push((offset, &b[at + 8..end]));
        at = end;
    }
    Ok(out)
}

/// The vary names of a header, shared.
pub fn vary_names(h: &ObjectHeader) -> Option<VaryNames> {
    h.vary.as_ref().map(|n| Arc::from(n.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ResponseHead;

    fn object(key: &str, body: usize) -> StoredObject {
        let k = CacheKey::from_text(key);
        let head = ResponseHead::from_origin(
            200,
            [
                ("Cache-Control", b"max-age=60".as_slice()),
                ("ETag", b"\"x\"".as_slice()),
                ("Content-Length", b"7".as_slice()),
            ]
            .into_iter(),
            100,
            101,
            "1.1 t (popnet)",
        );
        let h = k.hash;
        StoredObject::new(
            k,
            h,
            "cust".into(),
            Arc::new(head),
            Bytes::from((0..body).map(|i| i as u8).collect::<Vec<u8>>()),
            42,
        )
    }

    #[test]
    fn blocks_round_trip_and_reject_damage() {
        let s = Superblock {
            store_id: 7,
            segment_bytes: 1 << 20,
            segments: 9,
            created: 5,
        };
        let mut b = s.encode();
        assert_eq!(b.len(), BLOCK as usize);
        assert_eq!(Superblock::decode(&b), Ok(s));
        b[20] ^= 1;
        assert_eq!(
            Superblock::decode(&b),
            Err(FormatError::Checksum("superblock"))
        );
        let h = SegmentHeader {
            store_id: 7,
            seq: 3,
            index: 2,
            opened: 9,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        let seal = Seal {
            store_id: 7,
            seq: 3,
            summary_offset: 8192,
            summary_len: 100,
            summary_sum: 5,
            records: 2,
        };
        assert_eq!(Seal::decode(&seal.encode()), Ok(seal));
        assert!(Seal::decode(&h.encode()).is_err());
    }

    #[test]
    fn object_records_round_trip_and_every_flip_is_caught() {
        let o = object("h/a?b", 3 * CHUNK as usize / 2);
        let names: VaryNames = vec![Box::<str>::from("accept-encoding")].into();
        let sums = chunk_sums(&o.body);
        assert_eq!(sums.len(), 2);
        let (hdr, len) = ObjectHeader::of(&o, Some(&names), sums).encode(9).unwrap();
        assert_eq!(len, align_up(hdr.len() as u64 + o.body.len() as u64));
        let Header::Object(d) = decode_header(&hdr).unwrap() else {
            panic!("an object")
        };
        assert_eq!(&*d.key, "h/a?b");
        assert_eq!(&*d.customer, "cust");
        assert_eq!(
            d.vary.as_deref(),
            Some(&[Box::<str>::from("accept-encoding")][..])
        );
        assert_eq!(d.seq, 9);
        assert_eq!(d.status, 200);
        assert_eq!(d.content_length, Some(7));
        assert_eq!(d.timing, o.head.timing);
        assert_eq!(d.fields, o.head.fields);
        assert_eq!(d.stored_at, 42);
        assert!(body_ok(&d.chunk_sums, &o.body));
        let mut bad = o.body.to_vec();
        bad[CHUNK as usize + 5] ^= 0x10;
        assert!(!body_ok(&d.chunk_sums, &bad));
        assert!(!body_ok(&d.chunk_sums, &o.body[..o.body.len() - 1]));
        // The restored head is the stored one.
        let r = crate::object::ResponseHead::restore(
            d.status,
            d.fields.clone(),
            d.content_length,
            d.timing,
            "1.1 t (popnet)",
        );
        assert_eq!(r.block, o.head.block);
        assert_eq!(r.lifetime, o.head.lifetime);
        assert_eq!(r.etag, o.head.etag);
        for i in 0..hdr.len() {
            let mut b = hdr.clone();
            b[i] ^= 0x04;
            assert!(
                decode_header(&b).is_err(),
                "a flip at byte {i} went unnoticed"
            );
        }
        assert!(decode_header(&hdr[..hdr.len() - 1]).is_err());
    }

    #[test]
    fn purge_records_and_summaries() {
        let rec = PurgeRecord {
            matcher: Matcher::Prefix("h/a".into()),
            before: (4, 8192),
        };
        let p = encode_purge(5, &rec);
        assert_eq!(decode_header(&p), Ok(Header::Purge(rec)));
        let o = object("h/x", 10);
        let (hdr, _) = ObjectHeader::of(&o, None, chunk_sums(&o.body))
            .encode(5)
            .unwrap();
        let mut s = Vec::new();
        summary_entry(&mut s, 4096, &hdr);
        summary_entry(&mut s, 8192, &p);
        let e = summary_entries(&s).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0], (4096, hdr.as_slice()));
        assert_eq!(e[1].0, 8192);
        assert!(summary_entries(&s[..s.len() - 1]).is_err());
    }
}
