//! A bounds-checked cursor over a borrowed DNS message, and the decode error type.

use crate::name::{MAX_LABEL_LEN, MAX_NAME_LEN, Name};

/// Most compression pointers followed while reading one name.
pub const MAX_POINTER_HOPS: usize = 128;

/// Everything that can be wrong with a message on the wire. Offsets are from the
/// start of the buffer given to [`Decoder::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer ends before a field that must be there.
    #[error("truncated at offset {offset}: needed {needed}")]
    Truncated { offset: usize, needed: &'static str },
    /// A name longer than 255 bytes.
    #[error("name longer than 255 bytes at offset {offset}")]
    NameTooLong { offset: usize },
    /// A label with type bits 0b01 or 0b10 (extended or reserved label types).
    #[error("unsupported label type at offset {offset}")]
    BadLabelType { offset: usize },
    /// A compression pointer that does not point strictly before the name it is in,
    /// points into the header, or is not allowed here.
    #[error("bad compression pointer at offset {offset}")]
    BadPointer { offset: usize },
    /// More than [`MAX_POINTER_HOPS`] pointers in one name.
    #[error("too many compression pointers at offset {offset}")]
    TooManyPointers { offset: usize },
    /// RDATA that does not match its type's format.
    #[error("bad RDATA for type {rtype} at offset {offset}: {reason}")]
    BadRdata {
        offset: usize,
        rtype: u16,
        reason: &'static str,
    },
    /// Bytes after the last record the header announces.
    #[error("trailing bytes at offset {offset}")]
    TrailingBytes { offset: usize },
    /// More than one OPT record.
    #[error("second OPT record at offset {offset}")]
    MultipleOpt { offset: usize },
    /// An OPT record whose owner is not the root.
    #[error("OPT record with a non-root owner at offset {offset}")]
    OptNotRoot { offset: usize },
    /// An OPT record outside the additional section.
    #[error("OPT record outside the additional section at offset {offset}")]
    OptNotInAdditional { offset: usize },
    /// A malformed EDNS option.
    #[error("bad EDNS option {code} at offset {offset}: {reason}")]
    BadEdnsOption {
        offset: usize,
        code: u16,
        reason: &'static str,
    },
    /// A query whose QDCOUNT is not 1.
    #[error("QDCOUNT is {count}, expected 1 (offset {offset})")]
    BadQuestionCount { offset: usize, count: u16 },
}

impl DecodeError {
    /// Byte offset where the problem is.
    pub fn offset(&self) -> usize {
        match *self {
            DecodeError::Truncated { offset, .. }
            | DecodeError::NameTooLong { offset }
            | DecodeError::BadLabelType { offset }
            | DecodeError::BadPointer { offset }
            | DecodeError::TooManyPointers { offset }
            | DecodeError::BadRdata { offset, .. }
            | DecodeError::TrailingBytes { offset }
            | DecodeError::MultipleOpt { offset }
            | DecodeError::OptNotRoot { offset }
            | DecodeError::OptNotInAdditional { offset }
            | DecodeError::BadEdnsOption { offset, .. }
            | DecodeError::BadQuestionCount { offset, .. } => offset,
        }
    }
}

/// A cursor over `&'a [u8]`.
///
/// Reads stop at the decoder's end (the whole buffer, or the end of a region made
/// with [`Decoder::limited`]); compression pointers may point anywhere earlier in the
/// whole buffer, but never at or after the start of the name being read, and never
/// below the pointer floor (12 for messages, so no name can point into the header).
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    pointer_floor: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `buf`, with pointer floor 0.
    pub fn new(buf: &'a [u8]) -> Decoder<'a> {
        Decoder {
            buf,
            pos: 0,
            end: buf.len(),
            pointer_floor: 0,
        }
    }

    /// Sets the lowest offset a compression pointer may point to (12 for a message).
    pub fn with_pointer_floor(mut self, floor: usize) -> Decoder<'a> {
        self.pointer_floor = floor;
        self
    }

    /// Current offset from the start of the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left before the end.
    pub fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    /// True if nothing is left before the end.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The whole underlying buffer.
    pub fn buffer(&self) -> &'a [u8] {
        self.buf
    }

    /// Moves to `pos`, which must not be past the end.
    pub fn seek(&mut self, pos: usize) -> Result<(), DecodeError> {
        if pos > self.end {
            return Err(DecodeError::Truncated {
                offset: self.end,
                needed: "seek target",
            });
        }
        self.pos = pos;
        Ok(())
    }

    /// A decoder over the next `len` bytes (sharing the whole buffer for pointers);
    /// `self` moves past them.
    pub fn limited(
        &mut self,
        len: usize,
        needed: &'static str,
    ) -> Result<Decoder<'a>, DecodeError> {
        let start = self.pos;
        self.take(len, needed)?;
        Ok(Decoder {
            buf: self.buf,
            pos: start,
            end: start + len,
            pointer_floor: self.pointer_floor,
        })
    }

    pub(crate) fn take(&mut self, n: usize, needed: &'static str) -> Result<&'a [u8], DecodeError> {
        let truncated = DecodeError::Truncated {
            offset: self.pos,
            needed,
        };
        let stop = self.pos.checked_add(n).ok_or(truncated.clone())?;
        if stop > self.end {
            return Err(truncated);
        }
        let s = self.buf.get(self.pos..stop).ok_or(truncated)?;
        self.pos = stop;
        Ok(s)
    }

    pub(crate) fn u8_as(&mut self, needed: &'static str) -> Result<u8, DecodeError> {
        let s = self.take(1, needed)?;
        Ok(s.first().copied().unwrap_or(0))
    }

    pub(crate) fn u16_as(&mut self, needed: &'static str) -> Result<u16, DecodeError> {
        let s = self.take(2, needed)?;
        let mut b = [0u8; 2];
        b.copy_from_slice(s);
        Ok(u16::from_be_bytes(b))
    }

    pub(crate) fn u32_as(&mut self, needed: &'static str) -> Result<u32, DecodeError> {
        let s = self.take(4, needed)?;
        let mut b = [0u8; 4];
        b.copy_from_slice(s);
        Ok(u32::from_be_bytes(b))
    }

    /// Reads one byte.
    pub fn read_u8(&mut self) -> Result<u8, DecodeError> {
        self.u8_as("u8")
    }

    /// Reads a big-endian u16.
    pub fn read_u16(&mut self) -> Result<u16, DecodeError> {
        self.u16_as("u16")
    }

    /// Reads a big-endian u32.
    pub fn read_u32(&mut self) -> Result<u32, DecodeError> {
        self.u32_as("u32")
    }

    /// Reads `n` bytes.
    pub fn read_slice(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.take(n, "bytes")
    }

    /// Reads a possibly compressed name (RFC 1035 4.1.4).
    pub fn read_name(&mut self) -> Result<Name, DecodeError> {
        let mut wire = Vec::with_capacity(32);
        self.walk_name(|label| {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label);
        })?;
        wire.push(0);
        Ok(Name::from_wire_unchecked(wire))
    }

    /// Validates and skips a possibly compressed name; returns its uncompressed length.
    pub fn skip_name(&mut self) -> Result<usize, DecodeError> {
        self.walk_name(|_| {})
    }

    /// Reads an uncompressed name and returns its wire bytes as borrowed; a pointer is
    /// [`DecodeError::BadPointer`].
    pub fn read_name_uncompressed(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let mut pos = start;
        loop {
            let len = self.byte_at(pos, self.end, "label length")?;
            match len >> 6 {
                0 => {
                    let len = usize::from(len);
                    if pos - start + 1 + len + usize::from(len != 0) > MAX_NAME_LEN {
                        return Err(DecodeError::NameTooLong { offset: pos });
                    }
                    if len == 0 {
                        pos += 1;
                        break;
                    }
                    if pos + 1 + len > self.end {
                        return Err(DecodeError::Truncated {
                            offset: pos,
                            needed: "label",
                        });
                    }
                    pos += 1 + len;
                }
                3 => return Err(DecodeError::BadPointer { offset: pos }),
                _ => return Err(DecodeError::BadLabelType { offset: pos }),
            }
        }
        self.take(pos - start, "name")
    }

    fn byte_at(&self, pos: usize, end: usize, needed: &'static str) -> Result<u8, DecodeError> {
        if pos >= end {
            return Err(DecodeError::Truncated {
                offset: pos,
                needed,
            });
        }
        self.buf.get(pos).copied().ok_or(DecodeError::Truncated {
            offset: pos,
            needed,
        })
    }

    /// Walks a name, calling `on_label` for each non-root label; returns the
    /// uncompressed wire length and leaves the cursor after the name.
    fn walk_name(&mut self, mut on_label: impl FnMut(&'a [u8])) -> Result<usize, DecodeError> {
        let mut pos = self.pos;
        // Reads before the first pointer stop at `self.end`; after a jump they may use
        // the whole buffer, since the pointed-to data comes earlier in the message.
        let mut end = self.end;
        let mut segment_start = self.pos;
        let mut resume: Option<usize> = None;
        let mut hops = 0usize;
        let mut wire_len = 0usize;
        loop {
            let len = self.byte_at(pos, end, "label length")?;
            match len >> 6 {
                0 => {
                    let len = usize::from(len);
                    debug_assert!(len <= MAX_LABEL_LEN);
                    if wire_len + 1 + len + usize::from(len != 0) > MAX_NAME_LEN {
                        return Err(DecodeError::NameTooLong { offset: pos });
                    }
                    if len == 0 {
                        wire_len += 1;
                        pos += 1;
                        break;
                    }
                    let label = self
                        .buf
                        .get(pos + 1..pos + 1 + len)
                        .filter(|_| pos + 1 + len <= end)
                        .ok_or(DecodeError::Truncated {
                            offset: pos,
                            needed: "label",
                        })?;
                    on_label(label);
                    wire_len += 1 + len;
                    pos += 1 + len;
                }
                3 => {
                    let low = self.byte_at(pos + 1, end, "compression pointer")?;
                    let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                    if target >= segment_start || target < self.pointer_floor {
                        return Err(DecodeError::BadPointer { offset: pos });
                    }
                    hops += 1;
                    if hops > MAX_POINTER_HOPS {
                        return Err(DecodeError::TooManyPointers { offset: pos });
                    }
                    if resume.is_none() {
                        resume = Some(pos + 2);
                    }
                    end = self.buf.len();
                    segment_start = target;
                    pos = target;
                }
                _ => return Err(DecodeError::BadLabelType { offset: pos }),
            }
        }
        self.pos = resume.unwrap_or(pos);
        Ok(wire_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_truncation() {
        let mut d = Decoder::new(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(d.read_u8(), Ok(1));
        assert_eq!(d.read_u16(), Ok(0x0203));
        assert_eq!(d.read_u32(), Ok(0x04050607));
        assert!(d.is_empty());
        assert_eq!(
            d.read_u8(),
            Err(DecodeError::Truncated {
                offset: 7,
                needed: "u8"
            })
        );
        let mut d = Decoder::new(&[1]);
        assert_eq!(d.read_u16().unwrap_err().offset(), 0);
        assert_eq!(d.position(), 0);
        assert!(d.read_slice(usize::MAX).is_err());
        assert!(d.seek(2).is_err());
        assert!(d.seek(1).is_ok());
    }

    #[test]
    fn limited_region() {
        let buf = [1, 2, 3, 4];
        let mut d = Decoder::new(&buf);
        let mut sub = d.limited(2, "rdata").unwrap();
        assert_eq!(d.position(), 2);
        assert_eq!(sub.read_u16(), Ok(0x0102));
        assert!(sub.read_u8().is_err());
        assert!(d.limited(3, "rdata").is_err());
    }

    #[test]
    fn names_with_pointers() {
        // 0: example.com, 13: www -> 0, 19: ptr -> 13
        let mut buf = b"\x07example\x03com\x00".to_vec();
        buf.extend_from_slice(b"\x03www\xc0\x00");
        buf.extend_from_slice(b"\xc0\x0d");
        let mut d = Decoder::new(&buf);
        assert_eq!(d.read_name().unwrap().to_string(), "example.com.");
        assert_eq!(d.position(), 13);
        assert_eq!(d.read_name().unwrap().to_string(), "www.example.com.");
        assert_eq!(d.position(), 19);
        let mut d2 = d.clone();
        assert_eq!(d.read_name().unwrap().to_string(), "www.example.com.");
        assert_eq!(d.position(), 21);
        assert_eq!(d2.skip_name(), Ok(17));
        assert_eq!(d2.position(), 21);
    }

    #[test]
    fn pointer_rules() {
        // Self pointer.
        let mut d = Decoder::new(b"\xc0\x00");
        assert_eq!(d.read_name(), Err(DecodeError::BadPointer { offset: 0 }));
        // Forward pointer.
        let mut d = Decoder::new(b"\xc0\x02\x00");
        assert_eq!(d.read_name(), Err(DecodeError::BadPointer { offset: 0 }));
        // Loop: 0 -> label then pointer to 0 (the start of the current name).
        let mut d = Decoder::new(b"\x01a\xc0\x00");
        assert_eq!(d.read_name(), Err(DecodeError::BadPointer { offset: 2 }));
        // Two-name loop: name at 2 points to 0, whose pointer then points to 2.
        let buf = b"\xc0\x02\xc0\x00";
        let mut d = Decoder::new(buf);
        d.seek(2).unwrap();
        assert_eq!(d.read_name(), Err(DecodeError::BadPointer { offset: 0 }));
        // Floor.
        let mut d = Decoder::new(b"\x00\xc0\x00").with_pointer_floor(1);
        d.seek(1).unwrap();
        assert_eq!(d.read_name(), Err(DecodeError::BadPointer { offset: 1 }));
        // Truncated pointer.
        let mut d = Decoder::new(b"\xc0");
        assert!(matches!(d.read_name(), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn label_types() {
        let mut d = Decoder::new(b"\x40\x00");
        assert_eq!(d.read_name(), Err(DecodeError::BadLabelType { offset: 0 }));
        let mut d = Decoder::new(b"\x01a\x80\x00");
        assert_eq!(d.skip_name(), Err(DecodeError::BadLabelType { offset: 2 }));
    }

    #[test]
    fn uncompressed_name() {
        let mut d = Decoder::new(b"\x01a\x00\x01");
        assert_eq!(d.read_name_uncompressed(), Ok(&b"\x01a\x00"[..]));
        assert_eq!(d.position(), 3);
        let mut d = Decoder::new(b"\x01a\xc0\x00");
        assert_eq!(
            d.read_name_uncompressed(),
            Err(DecodeError::BadPointer { offset: 2 })
        );
        let mut d = Decoder::new(b"\x01");
        assert!(matches!(
            d.read_name_uncompressed(),
            Err(DecodeError::Truncated { offset: 0, .. })
        ));
    }

    #[test]
    fn long_names() {
        let mut buf = Vec::new();
        for _ in 0..3 {
            buf.push(63);
            buf.extend_from_slice(&[b'a'; 63]);
        }
        buf.push(61);
        buf.extend_from_slice(&[b'b'; 61]);
        buf.push(0);
        assert_eq!(buf.len(), 255);
        assert_eq!(Decoder::new(&buf).read_name().unwrap().wire_len(), 255);
        assert!(Decoder::new(&buf).read_name_uncompressed().is_ok());
        let mut long = buf.clone();
        long[192] = 62;
        long.insert(193, b'b');
        assert_eq!(long.len(), 256);
        assert_eq!(
            Decoder::new(&long).read_name(),
            Err(DecodeError::NameTooLong { offset: 192 })
        );
        assert_eq!(
            Decoder::new(&long).read_name_uncompressed(),
            Err(DecodeError::NameTooLong { offset: 192 })
        );
    }
}
