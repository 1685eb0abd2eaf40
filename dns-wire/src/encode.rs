//! A growable message writer with RFC 1035 name compression and record back-patching.

use crate::message::Question;
use crate::name::{MAX_LABELS, Name};
use crate::record::Record;

/// Compression pointers can only reach offsets below this.
const POINTER_LIMIT: usize = 0x4000;

/// Why a value could not be written. Offsets are positions in the output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A character-string (TXT, HINFO) longer than 255 bytes.
    #[error("character-string longer than 255 bytes at offset {offset}")]
    CharacterStringTooLong { offset: usize },
    /// RDATA longer than 65535 bytes.
    #[error("RDATA longer than 65535 bytes at offset {offset}")]
    RdataTooLong { offset: usize },
    /// An EDNS option that would not decode again (bad ECS, bad cookie length, too long).
    #[error("bad EDNS option {code} at offset {offset}: {reason}")]
    BadEdnsOption {
        offset: usize,
        code: u16,
        reason: &'static str,
    },
    /// More than 65535 entries in one section.
    #[error("more than 65535 entries in a section (offset {offset})")]
    TooManyRecords { offset: usize },
}

impl EncodeError {
    /// Offset in the output where the problem is.
    pub fn offset(&self) -> usize {
        match *self {
            EncodeError::CharacterStringTooLong { offset }
            | EncodeError::RdataTooLong { offset }
            | EncodeError::BadEdnsOption { offset, .. }
            | EncodeError::TooManyRecords { offset } => offset,
        }
    }
}

/// A name suffix present in the buffer: where it starts and its uncompressed length.
#[derive(Debug, Clone, Copy)]
struct Target {
    offset: u16,
    len: u8,
}

/// Writes a DNS message into a `Vec<u8>`.
///
/// `put_name` compresses against every name suffix written so far (or declared with
/// [`Encoder::register_name`]) at an offset below 0x4000. Candidates are checked against
/// the bytes actually in the buffer, so a pointer is only ever written to an earlier
/// offset that really holds the same name. Matching ignores ASCII case unless
/// [`Encoder::set_case_sensitive`] is on.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    buf: Vec<u8>,
    targets: Vec<Target>,
    case_sensitive: bool,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// An empty encoder with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Encoder {
        Encoder {
            buf: Vec::with_capacity(n),
            targets: Vec::new(),
            case_sensitive: false,
        }
    }

    /// When on, compression only reuses byte-identical suffixes, so decoding gives back
    /// exactly the names that were written. Off by default.
    pub fn set_case_sensitive(&mut self, on: bool) {
        self.case_sensitive = on;
    }

    /// Bytes written so far.
    pub fn position(&self) -> usize {
        self.buf.len()
    }

    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn put_u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn put_slice(&mut self, s: &[u8]) {
        self.buf.extend_from_slice(s);
    }

    /// Writes a length-prefixed character-string (at most 255 bytes).
    pub fn put_character_string(&mut self, s: &[u8]) -> Result<(), EncodeError> {
        let len = u8::try_from(s.len()).map_err(|_| EncodeError::CharacterStringTooLong {
            offset: self.position(),
        })?;
        self.put_u8(len);
        self.put_slice(s);
        Ok(())
    }

    /// Overwrites two bytes at `at` (ignored if `at + 2` is past the end).
    pub fn patch_u16(&mut self, at: usize, value: u16) {
        if let Some(slot) = self.buf.get_mut(at..at.saturating_add(2)) {
            slot.copy_from_slice(&value.to_be_bytes());
        }
    }

    /// Writes `name`, replacing its longest suffix already present with a pointer.
    pub fn put_name(&mut self, name: &Name) {
        let wire = name.as_wire();
        let start = self.buf.len();
        let mut offsets = [0u8; MAX_LABELS];
        let n = label_offsets(wire, &mut offsets);
        let offsets = offsets.get(..n).unwrap_or(&[]);
        for (i, &off) in offsets.iter().enumerate() {
            let suffix = wire.get(usize::from(off)..).unwrap_or(&[]);
            if let Some(target) = self.find(suffix, start) {
                self.buf
                    .extend_from_slice(wire.get(..usize::from(off)).unwrap_or(&[]));
                self.put_u16(0xc000 | target);
                self.register_offsets(start, wire, offsets.get(..i).unwrap_or(&[]));
                return;
            }
        }
        self.buf.extend_from_slice(wire);
        self.register_offsets(start, wire, offsets);
    }

    /// Writes `name` without compression (it still becomes a compression target).
    pub fn put_name_uncompressed(&mut self, name: &Name) {
        let wire = name.as_wire();
        let start = self.buf.len();
        let mut offsets = [0u8; MAX_LABELS];
        let n = label_offsets(wire, &mut offsets);
        self.buf.extend_from_slice(wire);
        self.register_offsets(start, wire, offsets.get(..n).unwrap_or(&[]));
    }

    /// Declares that `name` is written uncompressed at `offset`, so later names may point
    /// into it. A wrong declaration is harmless: candidates are checked against the buffer.
    pub fn register_name(&mut self, name: &Name, offset: usize) {
        let wire = name.as_wire();
        let mut offsets = [0u8; MAX_LABELS];
        let n = label_offsets(wire, &mut offsets);
        self.register_offsets(offset, wire, offsets.get(..n).unwrap_or(&[]));
    }

    /// Writes a question entry.
    pub fn put_question(&mut self, q: &Question) {
        self.put_name(&q.name);
        self.put_u16(q.qtype.0);
        self.put_u16(q.qclass.0);
    }

    /// Writes a resource record, back-patching RDLENGTH. On error nothing is written.
    pub fn put_record(&mut self, r: &Record) -> Result<(), EncodeError> {
        let start = self.position();
        let result = self.put_record_inner(r);
        if result.is_err() {
            self.truncate(start);
        }
        result
    }

    fn put_record_inner(&mut self, r: &Record) -> Result<(), EncodeError> {
        self.put_name(&r.name);
        self.put_u16(r.rtype.0);
        self.put_u16(r.rclass.0);
        self.put_u32(r.ttl);
        let len_at = self.position();
        self.put_u16(0);
        r.rdata.encode(self)?;
        let len = self.position() - len_at - 2;
        let len = u16::try_from(len).map_err(|_| EncodeError::RdataTooLong { offset: len_at })?;
        self.patch_u16(len_at, len);
        Ok(())
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// The finished buffer.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Cuts the buffer to `len` bytes and forgets compression targets at or beyond it.
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
        self.targets.retain(|t| usize::from(t.offset) < len);
    }

    fn register_offsets(&mut self, start: usize, wire: &[u8], offsets: &[u8]) {
        for &off in offsets {
            let at = start.saturating_add(usize::from(off));
            let len = wire.len() - usize::from(off);
            if at < POINTER_LIMIT && len > 1 {
                self.targets.push(Target {
                    offset: at as u16,
                    len: len as u8,
                });
            }
        }
    }

    /// Finds a target before `before` whose name in the buffer equals `suffix`.
    fn find(&self, suffix: &[u8], before: usize) -> Option<u16> {
        if suffix.len() <= 1 {
            return None;
        }
        self.targets
            .iter()
            .filter(|t| usize::from(t.len) == suffix.len() && usize::from(t.offset) < before)
            .find(|t| self.matches(usize::from(t.offset), suffix))
            .map(|t| t.offset)
    }

    /// True if the (possibly compressed) name at `at` equals `suffix`. Pointers followed
    /// must point strictly before the start of their segment, as the decoder requires.
    fn matches(&self, at: usize, suffix: &[u8]) -> bool {
        let mut pos = at;
        let mut segment_start = at;
        let mut i = 0usize;
        let mut hops = 0usize;
        loop {
            let Some(&len) = self.buf.get(pos) else {
                return false;
            };
            match len >> 6 {
                0 => {
                    if suffix.get(i) != Some(&len) {
                        return false;
                    }
                    if len == 0 {
                        return i + 1 == suffix.len();
                    }
                    let n = usize::from(len);
                    let (Some(ours), Some(theirs)) = (
                        self.buf.get(pos + 1..pos + 1 + n),
                        suffix.get(i + 1..i + 1 + n),
                    ) else {
                        return false;
                    };
                    let same = if self.case_sensitive {
                        ours == theirs
                    } else {
                        ours.eq_ignore_ascii_case(theirs)
                    };
                    if !same {
                        return false;
                    }
                    pos += 1 + n;
                    i += 1 + n;
                }
                3 => {
                    let Some(&low) = self.buf.get(pos + 1) else {
                        return false;
                    };
                    let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                    hops += 1;
                    if target >= segment_start || hops > crate::decode::MAX_POINTER_HOPS {
                        return false;
                    }
                    segment_start = target;
                    pos = target;
                }
                _ => return false,
            }
        }
    }
}

/// Start offsets of the labels of a valid wire name (root excluded).
fn label_offsets(wire: &[u8], out: &mut [u8; MAX_LABELS]) -> usize {
    let mut n = 0;
    let mut pos = 0usize;
    while let Some(&len) = wire.get(pos) {
        if len == 0 {
            break;
        }
        let Some(slot) = out.get_mut(n) else {
            break;
        };
        *slot = pos as u8;
        n += 1;
        pos += 1 + usize::from(len);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Decoder;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn compresses_suffixes() {
        let mut e = Encoder::new();
        e.put_name(&n("www.example.com"));
        e.put_name(&n("mail.EXAMPLE.com"));
        e.put_name(&n("www.example.com"));
        e.put_name(&n("com"));
        e.put_name(&Name::root());
        let b = e.as_slice();
        assert_eq!(&b[..17], b"\x03www\x07example\x03com\x00");
        assert_eq!(&b[17..24], b"\x04mail\xc0\x04");
        assert_eq!(&b[24..26], b"\xc0\x00");
        assert_eq!(&b[26..28], b"\xc0\x0c");
        assert_eq!(&b[28..], b"\x00");
        let mut d = Decoder::new(b);
        let names: Vec<String> = (0..5).map(|_| d.read_name().unwrap().to_string()).collect();
        assert_eq!(
            names,
            [
                "www.example.com.",
                "mail.example.com.",
                "www.example.com.",
                "com.",
                "."
            ]
        );
    }

    #[test]
    fn case_sensitive_mode() {
        let mut e = Encoder::new();
        e.set_case_sensitive(true);
        e.put_name(&n("a.EXAMPLE"));
        e.put_name(&n("b.example"));
        e.put_name(&n("c.EXAMPLE"));
        assert_eq!(&e.as_slice()[11..22], b"\x01b\x07example\x00");
        assert_eq!(&e.as_slice()[22..], b"\x01c\xc0\x02");
    }

    #[test]
    fn register_and_truncate() {
        let mut e = Encoder::new();
        e.put_slice(&[0; 12]);
        e.put_name_uncompressed(&n("example.org"));
        let mark = e.position();
        e.put_name(&n("zzz.test"));
        e.truncate(mark);
        e.put_u16(0xffff);
        // "test" was forgotten; "example.org" is still there.
        e.put_name(&n("a.test"));
        e.put_name(&n("b.example.org"));
        assert_eq!(&e.as_slice()[mark + 2..], b"\x01a\x04test\x00\x01b\xc0\x0c");

        // A wrong registration is never used.
        let mut e = Encoder::new();
        e.put_slice(b"\x03foo\x00");
        e.register_name(&n("bar"), 0);
        e.register_name(&n("foo"), 100);
        e.put_name(&n("bar"));
        e.register_name(&n("foo"), 0);
        e.put_name(&n("foo"));
        assert_eq!(e.as_slice(), b"\x03foo\x00\x03bar\x00\xc0\x00");
    }

    #[test]
    fn pointers_only_below_0x4000() {
        let mut e = Encoder::new();
        e.put_slice(&vec![0; 0x4000]);
        e.put_name(&n("far.example"));
        e.put_name(&n("far.example"));
        assert_eq!(e.position(), 0x4000 + 13 * 2);
    }

    #[test]
    fn character_strings() {
        let mut e = Encoder::new();
        assert!(e.put_character_string(&[1; 255]).is_ok());
        assert_eq!(
            e.put_character_string(&[1; 256]),
            Err(EncodeError::CharacterStringTooLong { offset: 256 })
        );
        assert_eq!(e.position(), 256);
        e.patch_u16(0, 0xabcd);
        e.patch_u16(255, 0xabcd);
        e.patch_u16(usize::MAX, 1);
        assert_eq!(&e.as_slice()[..2], &[0xab, 0xcd]);
    }
}
