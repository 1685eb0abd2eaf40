//! Reading one disk-tier object: what to read next, and checking what came back (the I/O itself is the caller's, on its own ring).
//!
//! [`DiskLoad`] reads a record from its start: the whole record for objects up to the
//! promote limit (then header and every body chunk are verified and a complete
//! [`StoredObject`] comes out), or just the header for larger ones (a [`StreamHead`]).
//! [`DiskStream`] then reads a body range chunk by chunk, each chunk whole and
//! verified before any byte of it is handed out. Reads are handed in as `Bytes` (a
//! lent read buffer): a body read in one piece is served from it without a copy,
//! unless it is promoted (RAM keeps its own copy, so read buffers are never held
//! for long). After every read both check that the
//! segment was not reused meanwhile ([`LoadError::Moved`]): the writer changes a
//! segment's sequence number before it writes anything new into it.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::format::{self, BLOCK, CHUNK, FormatError, Header, ObjectHeader};
use super::{DiskRef, VaryNames};
use crate::object::{ResponseHead, StoredObject};

/// Why a load gave no object; the request is then a miss.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The segment was reused since the lookup (not an error).
    #[error("the record was evicted while it was read")]
    Moved,
    /// The bytes are not the record the index points at (checksum, magic, key).
    #[error("bad record: {0}")]
    Corrupt(FormatError),
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// One read to issue: `len` bytes at `offset` of `fd` (both block-aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAsk {
    pub fd: RawFd,
    pub offset: u64,
    pub len: usize,
}

/// What a finished [`DiskLoad`] gives.
pub enum Loaded {
    /// The whole object, verified. `promote`: the policy wants it in RAM now.
    Whole {
        obj: Arc<StoredObject>,
        vary: Option<VaryNames>,
        promote: bool,
    },
    /// The head of an object to stream.
    Stream(StreamHead),
}

/// The verified head of an object whose body is streamed.
pub struct StreamHead {
    pub head: Arc<ResponseHead>,
    pub body_len: u64,
    pub stored_at: u64,
    r: DiskRef,
    sums: Arc<[u64]>,
}

impl StreamHead {
    /// Streams body bytes `start..end`; `None` if the segment is being reused.
    pub fn stream(&self, start: u64, end: u64) -> Option<DiskStream> {
        let sh = &self.r.sh;
        let s = self.r.e.segment as usize;
        sh.pins[s].fetch_add(1, Ordering::SeqCst);
        let st = DiskStream {
            r: self.r.clone(),
            sums: self.sums.clone(),
            pos: start,
            end: end.min(self.body_len),
            ask: None,
        };
        // Dropping `st` unpins.
        sh.current(self.r.e.segment, self.r.e.seq).then_some(st)
    }

    /// Reports a stream that failed (the object is dropped when its record is bad).
    pub fn failed(&self, err: &LoadError) {
        self.r.failed(err);
    }
}

/// Reads a record from its start.
pub struct DiskLoad {
    r: DiskRef,
    whole: bool,
    got: Vec<u8>,
    want: usize,
    asked: usize,
}

impl DiskLoad {
    pub(super) fn new(r: DiskRef) -> DiskLoad {
        let whole = !r.streams();
        let want = if whole {
            r.e.record_len
        } else {
            format::align_up(u64::from(r.e.header_len)).min(r.e.record_len)
        } as usize;
        DiskLoad {
            r,
            whole,
            got: Vec::with_capacity(want),
            want,
            asked: 0,
        }
    }

    pub fn disk_ref(&self) -> &DiskRef {
        &self.r
    }

    /// The next read, for buffers of `buf_size` bytes (a multiple of the block size).
    pub fn next_read(&mut self, buf_size: usize) -> ReadAsk {
        let e = &self.r.e;
        let len = (self.want - self.got.len()).min(buf_size / BLOCK as usize * BLOCK as usize);
        self.asked = len;
        ReadAsk {
            fd: self.r.sh.fd(),
            offset: self.r.sh.seg_base(e.segment) + e.offset + self.got.len() as u64,
            len,
        }
    }

    /// Takes the bytes of the read asked last; `Ok(None)` means read more.
    pub fn on_read(&mut self, data: Bytes) -> Result<Option<Loaded>, LoadError> {
        let e = &self.r.e;
        if !self.r.sh.current(e.segment, e.seq) {
            return Err(LoadError::Moved);
        }
        if data.len() < self.asked {
            return Err(LoadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("short read: {} of {} bytes", data.len(), self.asked),
            )));
        }
        // A record read in one piece is used where it landed.
        let whole_read = self.got.is_empty() && self.asked == self.want;
        let record = if whole_read {
            data.slice(..self.asked)
        } else {
            self.got.extend_from_slice(&data[..self.asked]);
            if self.got.len() < self.want {
                return Ok(None);
            }
            Bytes::from(std::mem::take(&mut self.got))
        };
        let h = self.header(&record)?;
        let hl = h.header_len as usize;
        let sums: Arc<[u64]> = h.chunk_sums.into();
        let head = Arc::new(ResponseHead::restore(
            h.status,
            h.fields,
            h.content_length,
            h.timing,
            &self.r.sh.via,
        ));
        if !self.whole {
            self.r.hit();
            return Ok(Some(Loaded::Stream(StreamHead {
                head,
                body_len: h.body_len,
                stored_at: h.stored_at,
                r: self.r.clone(),
                sums,
            })));
        }
        let body_end = hl + h.body_len as usize;
        if !format::body_ok(&sums, &record[hl..body_end]) {
            return Err(LoadError::Corrupt(FormatError::Checksum("body")));
        }
        let hits = self.r.hit();
        let sh = &self.r.sh;
        let promote = sh.promote_hits > 0 && hits >= sh.promote_hits;
        let body = if promote && whole_read {
            Bytes::copy_from_slice(&record[hl..body_end])
        } else {
            record.slice(hl..body_end)
        };
        let obj = StoredObject::new(
            e.key.clone(),
            e.primary,
            e.customer.clone(),
            head,
            body,
            h.stored_at,
        );
        Ok(Some(Loaded::Whole {
            obj: Arc::new(obj),
            vary: e.vary.clone(),
            promote,
        }))
    }

    /// The record's header, checked against the index entry.
    fn header(&self, record: &[u8]) -> Result<ObjectHeader, LoadError> {
        let e = &self.r.e;
        let h = match format::decode_header(record) {
            Ok(Header::Object(h)) => h,
            Ok(Header::Purge(_)) => {
                return Err(LoadError::Corrupt(FormatError::Invalid(
                    "a purge record where an object was",
                )));
            }
            Err(err) => return Err(LoadError::Corrupt(err)),
        };
        if h.seq != e.seq {
            return Err(LoadError::Moved);
        }
        if *h.key != *e.key.text
            || h.header_len != e.header_len
            || h.body_len != e.body_len
            || h.record_len != e.record_len
        {
            return Err(LoadError::Corrupt(FormatError::Invalid(
                "the record is not the one indexed",
            )));
        }
        Ok(h)
    }
}

/// Reads body bytes of a large object chunk by chunk.
pub struct DiskStream {
    r: DiskRef,
    sums: Arc<[u64]>,
    pos: u64,
    end: u64,
    /// The chunk asked last: (index, bytes to skip in the read, chunk length).
    ask: Option<(u64, usize, usize)>,
}

impl DiskStream {
    /// Everything asked for was handed out.
    pub fn done(&self) -> bool {
        self.pos >= self.end
    }

    /// Body bytes handed out so far end here.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The read of the chunk holding the next bytes (fits in an `IO_BUF` buffer).
    pub fn next_read(&mut self) -> ReadAsk {
        let e = &self.r.e;
        let k = self.pos / CHUNK;
        let chunk_len = CHUNK.min(e.body_len - k * CHUNK);
        let start = self.r.sh.seg_base(e.segment) + e.offset + u64::from(e.header_len) + k * CHUNK;
        let aligned = format::align_down(start);
        let len = format::align_up(start + chunk_len) - aligned;
        self.ask = Some((k, (start - aligned) as usize, chunk_len as usize));
        ReadAsk {
            fd: self.r.sh.fd(),
            offset: aligned,
            len: len as usize,
        }
    }

    /// Takes the bytes of the read asked last: the verified next piece of the body
    /// (a slice of `data`, no copy).
    pub fn on_read(&mut self, data: Bytes) -> Result<Bytes, LoadError> {
        let e = &self.r.e;
        if !self.r.sh.current(e.segment, e.seq) {
            return Err(LoadError::Moved);
        }
        let Some((k, skip, len)) = self.ask.take() else {
            return Err(LoadError::Io(io::Error::other("no read was asked")));
        };
        if data.len() < skip + len {
            return Err(LoadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("short read: {} of {} bytes", data.len(), skip + len),
            )));
        }
        let chunk = &data[skip..skip + len];
        if !format::chunk_ok(&self.sums, k as usize, chunk) {
            return Err(LoadError::Corrupt(FormatError::Checksum("body chunk")));
        }
        let from = (self.pos - k * CHUNK) as usize;
        let to = ((self.end - k * CHUNK) as usize).min(len);
        self.pos = k * CHUNK + to as u64;
        Ok(data.slice(skip + from..skip + to))
    }

    /// Reports a failure (the object is dropped when its record is bad).
    pub fn failed(&self, err: &LoadError) {
        self.r.failed(err);
    }
}

impl Drop for DiskStream {
    fn drop(&mut self) {
        self.r.sh.pins[self.r.e.segment as usize].fetch_sub(1, Ordering::SeqCst);
    }
}
