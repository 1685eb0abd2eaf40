//! Start-up: the index rebuilt from the segments, from the summaries of sealed ones and a verifying walk of the others.
//!
//! Every segment's first and last block are read (64 reads in flight); a segment with
//! a valid header and seal has its summary read and each header in it checked. A
//! segment with a valid header but no valid seal was open when the process stopped:
//! it is walked record by record, each record read whole and verified, up to the first
//! header that is missing, torn or left from an older use of the segment, and then
//! sealed. Records are replayed in log order (segment sequence, then offset), so a
//! later record of a key replaces an earlier one and a purge removes what was logged
//! before it.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64;

use super::format::{self, BLOCK, FIXED, Fixed, Header, Seal, SegmentHeader};
use super::index::Entry;
use super::writer::{Seg, State};
use super::{DiskShared, write_sync};
use crate::key::CacheKey;
use crate::uring::{AlignedBuf, Event, Op, Ring};

/// Reads of up to this much at a time while walking a segment.
const WINDOW: u64 = 4 << 20;
/// Reads in flight while reading headers, seals and summaries.
const DEPTH: usize = 64;

/// What start-up found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// The store was (re)formatted: it starts empty.
    pub formatted: bool,
    pub segments: u32,
    /// Sealed segments read from their summaries.
    pub sealed: u32,
    /// Segments walked and verified record by record (open at a crash, or a bad summary).
    pub walked: u32,
    pub records: u64,
    pub objects: u64,
    /// Records left out: torn, or failing their checksum.
    pub bad_records: u64,
    pub elapsed: Duration,
}

/// The writer's starting state.
pub(crate) struct Recovered {
    pub segs: Vec<Seg>,
    pub free: VecDeque<u32>,
    pub next_seq: u64,
    pub report: ScanReport,
}

impl Recovered {
    pub fn empty(segments: u32) -> Recovered {
        Recovered {
            segs: (0..segments).map(|_| Seg::default()).collect(),
            free: (0..segments).collect(),
            next_seq: 1,
            report: ScanReport {
                segments,
                ..ScanReport::default()
            },
        }
    }
}

/// Reads every `(offset, len)`, up to [`DEPTH`] at a time.
fn read_many(ring: &mut Ring, fd: RawFd, reqs: &[(u64, usize)]) -> Vec<io::Result<AlignedBuf>> {
    let mut out: Vec<Option<io::Result<AlignedBuf>>> = (0..reqs.len()).map(|_| None).collect();
    let (mut next, mut in_flight, mut done) = (0, 0, 0);
    let mut completions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done < reqs.len() {
        while in_flight < DEPTH && next < reqs.len() {
            let (offset, len) = reqs[next];
            let op = Op::ReadAt {
                fd,
                offset,
                buf: AlignedBuf::new(len),
            };
            match ring.submit(next as u64, op) {
                Ok(()) => in_flight += 1,
                Err(e) => {
                    out[next] = Some(Err(e));
                    done += 1;
                }
            }
            next += 1;
        }
        if in_flight == 0 {
            continue;
        }
        if Instant::now() > deadline {
            for o in out.iter_mut().filter(|o| o.is_none()) {
                *o = Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the disk did not answer",
                )));
            }
            break;
        }
        if let Err(e) = ring.wait(Duration::from_millis(100)) {
            tracing::warn!(error = %e, "disk scan: waiting on the ring failed");
        }
        ring.drain(&mut completions);
        for c in completions.drain(..) {
            let i = c.tag as usize;
            let want = reqs.get(i).map_or(0, |r| r.1);
            let r = match c.event {
                Event::Read { mut buf, result } => match result {
                    Ok(n) if n >= want => {
                        buf.set_len(want);
                        Ok(buf)
                    }
                    Ok(n) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("short read: {n} of {want} bytes"),
                    )),
                    Err(e) => Err(e),
                },
                _ => Err(io::Error::other("unexpected completion")),
            };
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(r);
                in_flight -= 1;
                done += 1;
            }
        }
    }
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Err(io::Error::other("not read"))))
        .collect()
}

/// One record found in a segment.
struct Found {
    seg: u32,
    seq: u64,
    offset: u64,
    header: Header,
    header_len: u32,
}

/// What one segment holds.
enum Segment {
    /// No valid header of this store: free.
    Free,
    Sealed {
        seq: u64,
        seal: Seal,
    },
    /// Open at a crash, or its summary is bad.
    Walk {
        seq: u64,
    },
}

/// Walks a segment whose seal is missing or bad; every record is read and verified.
/// Returns the records and the end of the last one.
fn walk(
    sh: &DiskShared,
    ring: &mut Ring,
    seg: u32,
    seq: u64,
    report: &mut ScanReport,
) -> (Vec<(Found, Vec<u8>)>, u64) {
    let base = sh.seg_base(seg);
    let limit = sh.segment_bytes - BLOCK;
    let mut out = Vec::new();
    let mut pos = BLOCK;
    let mut win_start = 0;
    let mut win = AlignedBuf::new(BLOCK as usize);
    let read = |ring: &mut Ring, at: u64, len: u64| -> Option<AlignedBuf> {
        let v = read_many(ring, sh.fd(), &[(base + at, len as usize)]);
        v.into_iter().next()?.ok()
    };
    while pos + FIXED as u64 <= limit {
        let covers = |start: u64, w: &AlignedBuf, from: u64, len: u64| {
            from >= start && from + len <= start + w.len() as u64
        };
        if !covers(win_start, &win, pos, BLOCK) {
            match read(ring, pos, WINDOW.min(limit - pos)) {
                Some(w) => {
                    win = w;
                    win_start = pos;
                }
                None => break,
            }
        }
        let at = (pos - win_start) as usize;
        let Ok(f) = Fixed::peek(&win.as_slice()[at..]) else {
            break;
        };
        if f.seq != seq || pos + f.record_len > limit {
            break;
        }
        if !covers(win_start, &win, pos, f.record_len) {
            match read(ring, pos, WINDOW.max(f.record_len).min(limit - pos)) {
                Some(w) => {
                    win = w;
                    win_start = pos;
                }
                None => break,
            }
        }
        let at = (pos - win_start) as usize;
        let rec = &win.as_slice()[at..at + f.record_len as usize];
        let Ok(header) = format::decode_header(rec) else {
            break;
        };
        let hl = f.header_len as usize;
        if let Header::Object(h) = &header
            && !format::body_ok(&h.chunk_sums, &rec[hl..hl + h.body_len as usize])
        {
            // A torn or damaged body under a sound header: skip just this record.
            report.bad_records += 1;
            pos += f.record_len;
            continue;
        }
        out.push((
            Found {
                seg,
                seq,
                offset: pos,
                header,
                header_len: f.header_len,
            },
            rec[..hl].to_vec(),
        ));
        pos += f.record_len;
    }
    (out, pos)
}

/// Rebuilds the index from the store; seals segments that were open.
pub(crate) fn scan(sh: &DiskShared, ring: &mut Ring) -> io::Result<Recovered> {
    let n = sh.segments;
    let mut report = ScanReport {
        segments: n,
        ..ScanReport::default()
    };
    let mut reqs = Vec::with_capacity(2 * n as usize);
    for s in 0..n {
        let base = sh.seg_base(s);
        reqs.push((base, BLOCK as usize));
        reqs.push((base + sh.segment_bytes - BLOCK, BLOCK as usize));
    }
    let blocks = read_many(ring, sh.fd(), &reqs);
    let mut kinds = Vec::with_capacity(n as usize);
    for s in 0..n {
        let i = 2 * s as usize;
        let header = blocks[i]
            .as_ref()
            .ok()
            .and_then(|b| SegmentHeader::decode(b.as_slice()).ok())
            .filter(|h| h.store_id == sh.store_id && h.index == s && h.seq > 0);
        let Some(h) = header else {
            kinds.push(Segment::Free);
            continue;
        };
        let limit = sh.segment_bytes - BLOCK;
        let seal = blocks[i + 1]
            .as_ref()
            .ok()
            .and_then(|b| Seal::decode(b.as_slice()).ok())
            .filter(|x| {
                x.store_id == sh.store_id
                    && x.seq == h.seq
                    && x.summary_offset >= BLOCK
                    && x.summary_offset.is_multiple_of(BLOCK)
                    && x.summary_offset + format::align_up(x.summary_len) <= limit
            });
        kinds.push(match seal {
            Some(seal) => Segment::Sealed { seq: h.seq, seal },
            None => Segment::Walk { seq: h.seq },
        });
    }

    // Summaries of the sealed segments.
    let mut sreqs = Vec::new();
    let mut sidx = Vec::new();
    for (s, k) in kinds.iter().enumerate() {
        if let Segment::Sealed { seal, .. } = k
            && seal.summary_len > 0
        {
            sreqs.push((
                sh.seg_base(s as u32) + seal.summary_offset,
                format::align_up(seal.summary_len) as usize,
            ));
            sidx.push(s);
        }
    }
    let summaries = read_many(ring, sh.fd(), &sreqs);
    let mut found: Vec<Found> = Vec::new();
    let mut seg_seq = vec![0u64; n as usize];
    let mut empty_sealed = vec![false; n as usize];
    for (s, k) in kinds.iter().enumerate() {
        if let Segment::Sealed { seq, seal } = k
            && seal.summary_len == 0
        {
            seg_seq[s] = *seq;
            empty_sealed[s] = true;
            report.sealed += 1;
        }
    }
    for (j, res) in summaries.into_iter().enumerate() {
        let s = sidx[j];
        let Segment::Sealed { seq, seal } = &kinds[s] else {
            continue;
        };
        let (seq, seal) = (*seq, *seal);
        let parsed = res.ok().and_then(|buf| {
            let b = &buf.as_slice()[..seal.summary_len as usize];
            if xxh3_64(b) != seal.summary_sum {
                return None;
            }
            let entries = format::summary_entries(b).ok()?;
            let mut recs = Vec::with_capacity(entries.len());
            for (offset, hb) in entries {
                let header = format::decode_header(hb).ok()?;
                let f = Fixed::peek(hb).ok()?;
                if f.seq != seq
                    || offset < BLOCK
                    || !offset.is_multiple_of(BLOCK)
                    || offset + f.record_len > seal.summary_offset
                {
                    return None;
                }
                recs.push(Found {
                    seg: s as u32,
                    seq,
                    offset,
                    header,
                    header_len: f.header_len,
                });
            }
            Some(recs)
        });
        match parsed {
            Some(recs) => {
                report.sealed += 1;
                seg_seq[s] = seq;
                found.extend(recs);
            }
            None => {
                tracing::warn!(
                    segment = s,
                    "disk tier: bad segment summary; verifying the segment record by record"
                );
                kinds[s] = Segment::Walk { seq };
            }
        }
    }

    // Segments open at a crash (or with a bad summary): walk, verify, seal.
    for s in 0..n {
        let Segment::Walk { seq } = kinds[s as usize] else {
            continue;
        };
        report.walked += 1;
        let (recs, end) = walk(sh, ring, s, seq, &mut report);
        if recs.is_empty() {
            continue;
        }
        let mut summary = Vec::new();
        for (f, hb) in &recs {
            format::summary_entry(&mut summary, f.offset, hb);
        }
        let limit = sh.segment_bytes - BLOCK;
        if end + format::align_up(summary.len() as u64) <= limit {
            let base = sh.seg_base(s);
            let seal = Seal {
                store_id: sh.store_id,
                seq,
                summary_offset: end,
                summary_len: summary.len() as u64,
                summary_sum: xxh3_64(&summary),
                records: recs.len() as u32,
            };
            let sealed = write_sync(ring, sh.fd(), base + end, &summary)
                .and_then(|()| write_sync(ring, sh.fd(), base + limit, &seal.encode()));
            if let Err(e) = sealed {
                tracing::warn!(segment = s, error = %e, "disk tier: cannot seal a recovered segment");
            }
        }
        seg_seq[s as usize] = seq;
        found.extend(recs.into_iter().map(|(f, _)| f));
    }

    // Replay in log order.
    found.sort_by_key(|f| (f.seq, f.offset));
    report.records = found.len() as u64;
    let mut segs: Vec<Seg> = (0..n).map(|_| Seg::default()).collect();
    let mut customers: HashMap<Box<str>, Arc<str>> = HashMap::new();
    for f in found {
        let seg = &mut segs[f.seg as usize];
        match f.header {
            Header::Object(h) => {
                let customer = customers
                    .entry(h.customer.clone())
                    .or_insert_with(|| Arc::from(&*h.customer))
                    .clone();
                let e = Arc::new(Entry::new(
                    CacheKey::from_text(&h.key),
                    customer,
                    format::vary_names(&h),
                    f.seg,
                    f.seq,
                    f.offset,
                    h.record_len,
                    f.header_len,
                    h.body_len,
                    h.stored_at,
                ));
                sh.restore(e.clone());
                seg.entries.push(e);
            }
            Header::Purge(p) => {
                for e in sh.index.remove_matching(&p.matcher, Some(p.before)) {
                    sh.forget(&e);
                }
                seg.purges.push(p);
            }
        }
    }
    let mut free = VecDeque::new();
    let mut next_seq = 1;
    for s in 0..n as usize {
        let used = seg_seq[s] > 0 && (!segs[s].entries.is_empty() || !segs[s].purges.is_empty());
        if used || (empty_sealed[s] && seg_seq[s] > 0) {
            segs[s].state = State::Sealed;
            segs[s].seq = seg_seq[s];
            sh.seg_seq[s].store(seg_seq[s], Ordering::SeqCst);
            next_seq = next_seq.max(seg_seq[s] + 1);
        } else {
            free.push_back(s as u32);
        }
    }
    // Segments whose header survived but that hold nothing still carry a sequence
    // number: never reuse it.
    for k in &kinds {
        if let Segment::Walk { seq } | Segment::Sealed { seq, .. } = k {
            next_seq = next_seq.max(seq + 1);
        }
    }
    report.objects = sh.c.objects.load(Ordering::Relaxed);
    Ok(Recovered {
        segs,
        free,
        next_seq,
        report,
    })
}
