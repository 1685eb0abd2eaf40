//! Owned domain names in uncompressed wire form, compared ASCII-case-insensitively.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Longest name on the wire, root byte included (RFC 1035 3.1).
pub const MAX_NAME_LEN: usize = 255;
/// Longest label (RFC 1035 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Most labels a name can have (127 one-byte labels plus the root).
pub const MAX_LABELS: usize = 127;

/// Error from building or validating a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The presentation-format text is empty.
    #[error("empty name")]
    Empty,
    /// An empty label (`a..b`, `.a`) in presentation format, or an empty label to prepend.
    #[error("empty label at offset {offset}")]
    EmptyLabel { offset: usize },
    /// A label longer than 63 bytes.
    #[error("label longer than 63 bytes at offset {offset}")]
    LabelTooLong { offset: usize },
    /// The name is longer than 255 bytes in wire form.
    #[error("name longer than 255 bytes at offset {offset}")]
    NameTooLong { offset: usize },
    /// A bad `\` escape in presentation format.
    #[error("bad escape at offset {offset}")]
    BadEscape { offset: usize },
    /// A wire label type other than 0b00 (pointers are not allowed in an uncompressed name).
    #[error("bad label type at offset {offset}")]
    BadLabelType { offset: usize },
    /// The wire name runs past the end of the slice.
    #[error("wire name truncated at offset {offset}")]
    Truncated { offset: usize },
    /// The wire name ends (root label) before the end of the slice.
    #[error("bytes after the end of the wire name at offset {offset}")]
    TrailingBytes { offset: usize },
}

impl NameError {
    /// Byte offset in the input where the problem is (0 for [`NameError::Empty`]).
    pub fn offset(&self) -> usize {
        match *self {
            NameError::Empty => 0,
            NameError::EmptyLabel { offset }
            | NameError::LabelTooLong { offset }
            | NameError::NameTooLong { offset }
            | NameError::BadEscape { offset }
            | NameError::BadLabelType { offset }
            | NameError::Truncated { offset }
            | NameError::TrailingBytes { offset } => offset,
        }
    }
}

/// An owned domain name: length-prefixed labels ending with the root byte.
///
/// Case is preserved; equality, hashing and ordering ignore ASCII case.
/// Ordering is the canonical DNS order of RFC 4034 6.1 (label by label from the root).
#[derive(Clone)]
pub struct Name {
    wire: Vec<u8>,
}

impl Name {
    /// The root name `.`.
    pub fn root() -> Name {
        Name { wire: vec![0] }
    }

    /// Builds from wire bytes already known to be a valid uncompressed name.
    pub(crate) fn from_wire_unchecked(wire: Vec<u8>) -> Name {
        debug_assert!(Name::from_wire(&wire).is_ok());
        Name { wire }
    }

    /// Parses presentation format (`www.example.com`, trailing dot optional, `.` is root).
    ///
    /// Escapes: `\X` for any non-digit `X` stands for `X`; `\DDD` is a decimal byte value.
    pub fn from_ascii(s: &str) -> Result<Name, NameError> {
        let bytes = s.as_bytes();
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes == b"." {
            return Ok(Name::root());
        }
        let mut wire = Vec::with_capacity(bytes.len() + 2);
        let mut label_start = 0usize; // index in wire of the current label's length byte
        let mut label_text_start = 0usize; // index in s where the current label starts
        wire.push(0);
        let mut i = 0usize;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'.' => {
                    let len = wire.len() - label_start - 1;
                    if len == 0 {
                        return Err(NameError::EmptyLabel { offset: i });
                    }
                    close_label(&mut wire, label_start, label_text_start)?;
                    i += 1;
                    if i == bytes.len() {
                        // Trailing dot: the name is complete.
                        wire.push(0);
                        return finish(wire, i);
                    }
                    label_start = wire.len();
                    label_text_start = i;
                    wire.push(0);
                    continue;
                }
                b'\\' => {
                    let (value, used) = parse_escape(bytes, i)?;
                    wire.push(value);
                    i += used;
                }
                _ => {
                    wire.push(b);
                    i += 1;
                }
            }
            if wire.len() - label_start - 1 > MAX_LABEL_LEN {
                return Err(NameError::LabelTooLong {
                    offset: label_text_start,
                });
            }
        }
        if wire.len() - label_start - 1 == 0 {
            return Err(NameError::EmptyLabel { offset: i });
        }
        close_label(&mut wire, label_start, label_text_start)?;
        wire.push(0);
        finish(wire, i)
    }

    /// Validates an uncompressed wire name that must span the whole slice.
    pub fn from_wire(wire: &[u8]) -> Result<Name, NameError> {
        let len = validate_wire(wire)?;
        if len != wire.len() {
            return Err(NameError::TrailingBytes { offset: len });
        }
        Ok(Name {
            wire: wire.to_vec(),
        })
    }

    /// The uncompressed wire form, root byte included.
    pub fn as_wire(&self) -> &[u8] {
        &self.wire
    }

    /// Length of the wire form (1 for the root).
    pub fn wire_len(&self) -> usize {
        self.wire.len()
    }

    /// Number of labels, not counting the root (so the root has 0).
    pub fn label_count(&self) -> usize {
        self.labels().count()
    }

    /// True for the root name.
    pub fn is_root(&self) -> bool {
        self.wire.len() == 1
    }

    /// True if the first label is `*`.
    pub fn is_wildcard(&self) -> bool {
        self.wire.get(..2) == Some(&[1, b'*'])
    }

    /// The labels from the leftmost to the one before the root.
    pub fn labels(&self) -> Labels<'_> {
        Labels { rest: &self.wire }
    }

    /// A copy with ASCII letters lowercased.
    pub fn to_lowercase(&self) -> Name {
        // Length bytes are at most 63, below b'A', so lowercasing the whole wire is safe.
        Name {
            wire: self.wire.to_ascii_lowercase(),
        }
    }

    /// True if `self` is `other` or below it (ignoring case); everything is below the root.
    pub fn is_subdomain_of(&self, other: &Name) -> bool {
        let ours = self.label_count();
        let theirs = other.label_count();
        if ours < theirs {
            return false;
        }
        let mut rest: &[u8] = &self.wire;
        for _ in 0..ours - theirs {
            let skip = rest.first().map_or(0, |&l| usize::from(l) + 1);
            rest = rest.get(skip..).unwrap_or(&[]);
        }
        rest.eq_ignore_ascii_case(&other.wire)
    }

    /// The name with its first label removed; `None` for the root.
    pub fn parent(&self) -> Option<Name> {
        let first = usize::from(*self.wire.first()?);
        if first == 0 {
            return None;
        }
        let rest = self.wire.get(first + 1..)?;
        Some(Name {
            wire: rest.to_vec(),
        })
    }

    /// A new name with `label` in front of this one.
    pub fn prepend_label(&self, label: &[u8]) -> Result<Name, NameError> {
        if label.is_empty() {
            return Err(NameError::EmptyLabel { offset: 0 });
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong { offset: 0 });
        }
        let total = 1 + label.len() + self.wire.len();
        if total > MAX_NAME_LEN {
            return Err(NameError::NameTooLong { offset: 0 });
        }
        let mut wire = Vec::with_capacity(total);
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
        wire.extend_from_slice(&self.wire);
        Ok(Name { wire })
    }

    /// Byte-for-byte (case-sensitive) equality.
    pub fn eq_exact(&self, other: &Name) -> bool {
        self.wire == other.wire
    }
}

/// Closes the label whose length byte is at `label_start`.
fn close_label(wire: &mut [u8], label_start: usize, text_start: usize) -> Result<(), NameError> {
    let len = wire.len() - label_start - 1;
    if len > MAX_LABEL_LEN {
        return Err(NameError::LabelTooLong { offset: text_start });
    }
    if let Some(slot) = wire.get_mut(label_start) {
        *slot = len as u8;
    }
    Ok(())
}

fn finish(wire: Vec<u8>, end: usize) -> Result<Name, NameError> {
    if wire.len() > MAX_NAME_LEN {
        return Err(NameError::NameTooLong { offset: end });
    }
    Ok(Name { wire })
}

/// Parses the escape starting with the backslash at `at`; returns (byte, bytes consumed).
fn parse_escape(bytes: &[u8], at: usize) -> Result<(u8, usize), NameError> {
    let err = NameError::BadEscape { offset: at };
    let first = *bytes.get(at + 1).ok_or(err.clone())?;
    if !first.is_ascii_digit() {
        return Ok((first, 2));
    }
    let digits = bytes.get(at + 1..at + 4).ok_or(err.clone())?;
    let mut value: u32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(err);
        }
        value = value * 10 + u32::from(d - b'0');
    }
    u8::try_from(value).map(|v| (v, 4)).map_err(|_| err)
}

/// Checks an uncompressed wire name at the start of `wire`; returns its length.
pub(crate) fn validate_wire(wire: &[u8]) -> Result<usize, NameError> {
    let mut pos = 0usize;
    loop {
        let len = *wire.get(pos).ok_or(NameError::Truncated { offset: pos })?;
        if len & 0xc0 != 0 {
            return Err(NameError::BadLabelType { offset: pos });
        }
        let len = usize::from(len);
        if pos + 1 + len > MAX_NAME_LEN {
            return Err(NameError::NameTooLong { offset: pos });
        }
        if len == 0 {
            return Ok(pos + 1);
        }
        if wire.len() < pos + 1 + len {
            return Err(NameError::Truncated { offset: pos });
        }
        pos += 1 + len;
    }
}

/// Iterator over the labels of a [`Name`], leftmost first, root excluded.
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(*self.rest.first()?);
        if len == 0 {
            self.rest = &[];
            return None;
        }
        let label = self.rest.get(1..1 + len)?;
        self.rest = self.rest.get(1 + len..).unwrap_or(&[]);
        Some(label)
    }
}

/// Start offsets of each label in a valid wire name; returns how many were written.
fn label_offsets(wire: &[u8], out: &mut [u8; MAX_LABELS]) -> usize {
    let mut n = 0;
    let mut pos = 0usize;
    while let Some(&len) = wire.get(pos) {
        if len == 0 || n >= MAX_LABELS {
            break;
        }
        if let Some(slot) = out.get_mut(n) {
            *slot = pos as u8;
        }
        n += 1;
        pos += 1 + usize::from(len);
    }
    n
}

fn label_at(wire: &[u8], offset: u8) -> &[u8] {
    let start = usize::from(offset);
    let len = wire.get(start).map_or(0, |&l| usize::from(l));
    wire.get(start + 1..start + 1 + len).unwrap_or(&[])
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.wire.eq_ignore_ascii_case(&other.wire)
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut buf = [0u8; MAX_NAME_LEN];
        let n = self.wire.len().min(MAX_NAME_LEN);
        for (dst, src) in buf.iter_mut().zip(&self.wire) {
            *dst = src.to_ascii_lowercase();
        }
        state.write(buf.get(..n).unwrap_or(&[]));
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        let mut a = [0u8; MAX_LABELS];
        let mut b = [0u8; MAX_LABELS];
        let na = label_offsets(&self.wire, &mut a);
        let nb = label_offsets(&other.wire, &mut b);
        let la = a.get(..na).unwrap_or(&[]);
        let lb = b.get(..nb).unwrap_or(&[]);
        for (&oa, &ob) in la.iter().rev().zip(lb.iter().rev()) {
            let xa = label_at(&self.wire, oa);
            let xb = label_at(&other.wire, ob);
            let ord = xa
                .iter()
                .map(u8::to_ascii_lowercase)
                .cmp(xb.iter().map(u8::to_ascii_lowercase));
            if ord != Ordering::Equal {
                return ord;
            }
        }
        na.cmp(&nb)
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str(".");
        }
        for label in self.labels() {
            for &b in label {
                match b {
                    b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                        write!(f, "\\{}", char::from(b))?
                    }
                    0x21..=0x7e => write!(f, "{}", char::from(b))?,
                    _ => write!(f, "\\{b:03}")?,
                }
            }
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

impl FromStr for Name {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Name, NameError> {
        Name::from_ascii(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn hash_of(name: &Name) -> u64 {
        let mut h = DefaultHasher::new();
        name.hash(&mut h);
        h.finish()
    }

    #[test]
    fn parse_basic() {
        assert_eq!(
            n("www.example.com").as_wire(),
            b"\x03www\x07example\x03com\x00"
        );
        assert_eq!(
            n("www.example.com.").as_wire(),
            b"\x03www\x07example\x03com\x00"
        );
        assert_eq!(n(".").as_wire(), b"\x00");
        assert!(n(".").is_root());
        assert_eq!(Name::from_ascii(""), Err(NameError::Empty));
        assert_eq!(
            Name::from_ascii("a..b"),
            Err(NameError::EmptyLabel { offset: 2 })
        );
        assert_eq!(
            Name::from_ascii(".a"),
            Err(NameError::EmptyLabel { offset: 0 })
        );
        assert_eq!(
            Name::from_ascii("a.."),
            Err(NameError::EmptyLabel { offset: 2 })
        );
    }

    #[test]
    fn parse_escapes() {
        assert_eq!(n(r"a\.b.c").as_wire(), b"\x03a.b\x01c\x00");
        assert_eq!(n(r"a\\b").as_wire(), b"\x03a\\b\x00");
        assert_eq!(n(r"\000\255").as_wire(), b"\x02\x00\xff\x00");
        assert_eq!(n(r"\065").as_wire(), b"\x01A\x00");
        assert_eq!(
            Name::from_ascii(r"\256"),
            Err(NameError::BadEscape { offset: 0 })
        );
        assert_eq!(
            Name::from_ascii(r"ab\1"),
            Err(NameError::BadEscape { offset: 2 })
        );
        assert_eq!(
            Name::from_ascii(r"ab\12x"),
            Err(NameError::BadEscape { offset: 2 })
        );
        assert_eq!(
            Name::from_ascii("ab\\"),
            Err(NameError::BadEscape { offset: 2 })
        );
    }

    #[test]
    fn label_and_name_limits() {
        let l63 = "a".repeat(63);
        let l64 = "a".repeat(64);
        assert!(Name::from_ascii(&l63).is_ok());
        assert_eq!(
            Name::from_ascii(&format!("x.{l64}.y")),
            Err(NameError::LabelTooLong { offset: 2 })
        );
        // 3 * 64 + 62 + 1 = 255 bytes: ok.
        let ok = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
        assert_eq!(n(&ok).wire_len(), 255);
        let too_long = format!("{l63}.{l63}.{l63}.{}", "b".repeat(62));
        assert!(matches!(
            Name::from_ascii(&too_long),
            Err(NameError::NameTooLong { .. })
        ));
        // Escaped bytes count once.
        let esc = r"\097".repeat(64);
        assert!(matches!(
            Name::from_ascii(&esc),
            Err(NameError::LabelTooLong { offset: 0 })
        ));
    }

    #[test]
    fn from_wire_validation() {
        assert!(Name::from_wire(b"\x03www\x00").is_ok());
        assert_eq!(
            Name::from_wire(b""),
            Err(NameError::Truncated { offset: 0 })
        );
        assert_eq!(
            Name::from_wire(b"\x03ww"),
            Err(NameError::Truncated { offset: 0 })
        );
        assert_eq!(
            Name::from_wire(b"\x03www"),
            Err(NameError::Truncated { offset: 4 })
        );
        assert_eq!(
            Name::from_wire(b"\x00\x00"),
            Err(NameError::TrailingBytes { offset: 1 })
        );
        assert_eq!(
            Name::from_wire(b"\xc0\x0c"),
            Err(NameError::BadLabelType { offset: 0 })
        );
        assert_eq!(
            Name::from_wire(b"\x41a\x00"),
            Err(NameError::BadLabelType { offset: 0 })
        );
        let mut long = Vec::new();
        for _ in 0..4 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        assert!(matches!(
            Name::from_wire(&long),
            Err(NameError::NameTooLong { .. })
        ));
    }

    #[test]
    fn case_insensitive_eq_hash_ord() {
        let a = n("WWW.Example.COM");
        let b = n("www.example.com");
        assert_eq!(a, b);
        assert!(!a.eq_exact(&b));
        assert!(a.eq_exact(&a.clone()));
        assert_eq!(hash_of(&a), hash_of(&b));
        assert_eq!(a.cmp(&b), Ordering::Equal);
        assert_eq!(a.to_string(), "WWW.Example.COM.");
        assert!(a.to_lowercase().eq_exact(&b));
    }

    #[test]
    fn canonical_order() {
        // RFC 4034 6.1 example order.
        let sorted = [
            "example.",
            "a.example.",
            "yljkjljk.a.example.",
            "Z.a.example.",
            "zABC.a.EXAMPLE.",
            "z.example.",
            r"\001.z.example.",
            "*.z.example.",
            r"\200.z.example.",
        ];
        let names: Vec<Name> = sorted.iter().map(|s| n(s)).collect();
        for w in names.windows(2) {
            assert!(w[0] < w[1], "{} < {}", w[0], w[1]);
        }
        assert!(Name::root() < n("a"));
    }

    #[test]
    fn display_escapes() {
        assert_eq!(Name::root().to_string(), ".");
        assert_eq!(n(r"a\.b\\c.d").to_string(), r"a\.b\\c.d.");
        assert_eq!(n(r"a\032b\000").to_string(), r"a\032b\000.");
        assert_eq!(n(r"\200").to_string(), r"\200.");
        for s in [r"a\.b\\c.d.", r#"x\;y\(\)\@\$\"z."#, r"\000\001\127.\255."] {
            assert!(n(s).eq_exact(&n(&n(s).to_string())));
        }
    }

    #[test]
    fn labels_parent_subdomain() {
        let name = n("www.Example.com");
        let labels: Vec<&[u8]> = name.labels().collect();
        assert_eq!(labels, vec![&b"www"[..], b"Example", b"com"]);
        assert_eq!(name.label_count(), 3);
        assert_eq!(Name::root().label_count(), 0);
        assert_eq!(name.parent(), Some(n("example.com")));
        assert_eq!(n("com").parent(), Some(Name::root()));
        assert_eq!(Name::root().parent(), None);
        assert!(name.is_subdomain_of(&n("EXAMPLE.COM")));
        assert!(name.is_subdomain_of(&name));
        assert!(name.is_subdomain_of(&Name::root()));
        assert!(Name::root().is_subdomain_of(&Name::root()));
        assert!(!name.is_subdomain_of(&n("ample.com")));
        assert!(!n("example.com").is_subdomain_of(&name));
        assert!(!name.is_subdomain_of(&n("www.example.org")));
        assert!(n("*.example.com").is_wildcard());
        assert!(!name.is_wildcard());
    }

    #[test]
    fn prepend() {
        let name = n("example.com");
        assert!(
            name.prepend_label(b"www")
                .unwrap()
                .eq_exact(&n("www.example.com"))
        );
        assert_eq!(
            name.prepend_label(b""),
            Err(NameError::EmptyLabel { offset: 0 })
        );
        assert_eq!(
            name.prepend_label(&[b'a'; 64]),
            Err(NameError::LabelTooLong { offset: 0 })
        );
        let mut big = Name::root();
        for _ in 0..3 {
            big = big.prepend_label(&[b'a'; 63]).unwrap();
        }
        big = big.prepend_label(&[b'b'; 61]).unwrap();
        assert_eq!(big.wire_len(), 255);
        assert_eq!(
            big.parent().unwrap().prepend_label(&[b'b'; 62]),
            Err(NameError::NameTooLong { offset: 0 })
        );
    }
}
