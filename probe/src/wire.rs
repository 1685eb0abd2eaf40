//! Pieces shared by the probe's datagram formats: the HMAC-SHA256 tag, strings and a bounds-checked reader.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of the trailing MAC of every datagram.
pub const MAC_LEN: usize = 32;

fn new_mac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        // HMAC accepts keys of any length (RFC 2104 §2).
        Err(_) => unreachable!("HMAC-SHA256 takes keys of every length"),
    }
}

/// HMAC-SHA256(key, body).
pub(crate) fn mac(key: &[u8], body: &[u8]) -> [u8; MAC_LEN] {
    let mut m = new_mac(key);
    m.update(body);
    m.finalize().into_bytes().into()
}

/// Checks the trailing MAC of `datagram` (which must be at least [`MAC_LEN`] long) in
/// constant time and returns the authenticated body before it.
pub(crate) fn verify<'a>(key: &[u8], datagram: &'a [u8]) -> Option<&'a [u8]> {
    let (body, tag) = datagram.split_at(datagram.len().checked_sub(MAC_LEN)?);
    let mut m = new_mac(key);
    m.update(body);
    m.verify_slice(tag).ok().map(|()| body)
}

/// Appends `s` as a 1-byte length and its bytes; `None` if it is empty or longer than `max`.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str, max: usize) -> Option<()> {
    if s.is_empty() || s.len() > max || s.len() > usize::from(u8::MAX) {
        return None;
    }
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
    Some(())
}

/// Where and why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bad {
    pub offset: usize,
    pub reason: &'static str,
}

/// A reader over an authenticated body that never reads past its end.
pub(crate) struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], pos: usize) -> Cursor<'a> {
        Cursor { buf, pos }
    }

    pub fn bad(&self, reason: &'static str) -> Bad {
        Bad {
            offset: self.pos,
            reason,
        }
    }

    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Bad> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Bad {
                offset: self.pos,
                reason: what,
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Bad> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, Bad> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, Bad> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, Bad> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, Bad> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A fixed-point fraction in 1/10000, at most `max`.
    pub fn fraction(&mut self, max: u16, what: &'static str) -> Result<f32, Bad> {
        let v = self.u16(what)?;
        if v > max {
            return Err(self.bad("fraction out of range"));
        }
        Ok(f32::from(v) / 10_000.0)
    }

    /// A 1-byte length (1..=`max`) and that many bytes of UTF-8.
    pub fn string(&mut self, max: usize, what: &'static str) -> Result<String, Bad> {
        let n = usize::from(self.u8(what)?);
        if n == 0 || n > max {
            return Err(self.bad("string length out of range"));
        }
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| Bad {
            offset: self.pos - n,
            reason: "string is not UTF-8",
        })
    }
}
