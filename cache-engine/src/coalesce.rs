//! Request coalescing: the miss lock (one origin fetch per key at a time) and the in-flight fetch its waiters read.
//!
//! A [`Fetch`] is one origin response on its way in: its head, then its body as a list
//! of `Bytes` chunks, then its end. The fetcher thread appends; any number of client
//! connections, on any worker, read it from their own offset while it arrives, so the
//! first bytes of a large object reach every waiting client before the last bytes
//! have left the origin. Readers are woken through their worker's [`Mailbox`].
//!
//! A body that may be stored is kept whole (it becomes the stored object). One that
//! will not be (too large, or not storable) is kept only until every reader has passed
//! it, and the fetcher waits while the slowest reader is more than [`WINDOW`] behind,
//! so memory stays bounded however large the object is.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::key::CacheKey;
use crate::object::ResponseHead;
use crate::uring::WakeFd;

/// How far the fetcher of an unstored body may run ahead of its slowest reader.
pub const WINDOW: u64 = 1 << 20;

/// A worker's inbox of connection tokens to wake, and the eventfd that wakes it.
pub struct Mailbox {
    queue: Mutex<Vec<u64>>,
    fd: WakeFd,
}

impl Mailbox {
    pub fn new() -> std::io::Result<Mailbox> {
        Ok(Mailbox {
            queue: Mutex::new(Vec::new()),
            fd: WakeFd::new()?,
        })
    }

    /// Queues `token` and wakes the worker if its inbox was empty.
    pub fn post(&self, token: u64) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let e = q.is_empty();
            q.push(token);
            e
        };
        if was_empty {
            self.fd.wake();
        }
    }

    /// Wakes the worker without a token (e.g. to stop).
    pub fn ring(&self) {
        self.fd.wake();
    }

    /// Moves every queued token into `into`.
    pub fn take(&self, into: &mut Vec<u64>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        into.append(&mut q);
    }

    pub fn fd(&self) -> &WakeFd {
        &self.fd
    }
}

/// Who to wake when a fetch makes progress.
#[derive(Clone)]
pub struct WakeRef {
    pub mailbox: Arc<Mailbox>,
    pub token: u64,
}

/// Why a fetch produced no (complete) response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("no origin could be reached ({0})")]
    Unreachable(String),
    #[error("origin {0} did not answer in time")]
    Timeout(String),
    #[error("origin {0} sent a broken response")]
    BadResponse(String),
    #[error("the fetch was abandoned")]
    Aborted,
}

impl FetchError {
    /// The status a client gets when nothing stale can stand in.
    pub fn status(&self) -> u16 {
        match self {
            FetchError::Timeout(_) => 504,
            _ => 502,
        }
    }
}

/// The head of a fetched response and what the cache decided about it.
#[derive(Debug, Clone)]
pub struct FetchHead {
    pub head: Arc<ResponseHead>,
    /// Waiters other than the requester may be given this response (it is storable).
    pub shareable: bool,
    /// The origin answered a revalidation with 304: `head` is the updated stored head.
    pub revalidated: bool,
    /// The lead request's variant key, when the response varies.
    pub variant: Option<CacheKey>,
    /// The origin that answered.
    pub origin: Arc<str>,
    /// From the start of the fetch to the response head.
    pub ttfb: Duration,
}

#[derive(Default)]
struct Inner {
    head: Option<FetchHead>,
    chunks: VecDeque<Bytes>,
    /// Offset of `chunks[0]` in the body.
    base: u64,
    received: u64,
    end: Option<Result<(), FetchError>>,
    waiters: Vec<WakeRef>,
    readers: HashMap<u64, u64>,
    next_reader: u64,
    /// Every chunk is kept (the body may be stored).
    drop_read: bool,
    had_readers: bool,
}

/// One origin response in flight, shared by the fetcher and its readers.
pub struct Fetch {
    pub key: CacheKey,
    /// Not coalesced and never stored (a pass request).
    pub pass: bool,
    pub started: Instant,
    inner: Mutex<Inner>,
    room: Condvar,
}

/// The head, as a reader sees it.
pub enum HeadPoll {
    Pending,
    Ready(FetchHead),
    Failed(FetchError),
}

/// The body, as a reader sees it.
pub enum BodyPoll {
    /// Bytes from the reader's offset on.
    Data(Vec<Bytes>),
    Pending,
    /// The body is complete and the reader has all of it.
    End,
    Failed(FetchError),
}

impl Fetch {
    pub fn new(key: CacheKey, pass: bool) -> Arc<Fetch> {
        Arc::new(Fetch {
            key,
            pass,
            started: Instant::now(),
            inner: Mutex::new(Inner::default()),
            room: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a reader starting at offset 0; returns its id.
    pub fn join(&self) -> u64 {
        let mut g = self.lock();
        let id = g.next_reader;
        g.next_reader += 1;
        g.readers.insert(id, 0);
        g.had_readers = true;
        id
    }

    /// A reader is gone.
    pub fn leave(&self, id: u64) {
        let mut g = self.lock();
        g.readers.remove(&id);
        Self::trim(&mut g);
        drop(g);
        self.room.notify_all();
    }

    /// The head, or registers `waker` for when it arrives.
    pub fn poll_head(&self, waker: &WakeRef) -> HeadPoll {
        let mut g = self.lock();
        if let Some(h) = &g.head {
            return HeadPoll::Ready(h.clone());
        }
        if let Some(Err(e)) = &g.end {
            return HeadPoll::Failed(e.clone());
        }
        g.waiters.push(waker.clone());
        HeadPoll::Pending
    }

    /// The body bytes of reader `id` from `offset` on (the reader then has all bytes
    /// received so far), or registers `waker` for more.
    pub fn poll_body(&self, id: u64, offset: u64, waker: &WakeRef) -> BodyPoll {
        let mut g = self.lock();
        if offset < g.base {
            // Joined after the front of an unkept body was dropped: it cannot be served.
            return BodyPoll::Failed(FetchError::Aborted);
        }
        if offset < g.received {
            let mut out = Vec::new();
            let mut at = g.base;
            for c in &g.chunks {
                let end = at + c.len() as u64;
                if end > offset {
                    let skip = offset.saturating_sub(at) as usize;
                    out.push(c.slice(skip..));
                }
                at = end;
            }
            let received = g.received;
            if let Some(r) = g.readers.get_mut(&id) {
                *r = received;
            }
            if g.drop_read {
                Self::trim(&mut g);
                drop(g);
                self.room.notify_all();
            }
            return BodyPoll::Data(out);
        }
        match &g.end {
            Some(Ok(())) => BodyPoll::End,
            Some(Err(e)) => BodyPoll::Failed(e.clone()),
            None => {
                g.waiters.push(waker.clone());
                BodyPoll::Pending
            }
        }
    }

    /// Drops chunks every reader has passed (only for bodies that are not kept).
    fn trim(g: &mut Inner) {
        if !g.drop_read {
            return;
        }
        let min = g.readers.values().copied().min().unwrap_or(g.received);
        while let Some(c) = g.chunks.front() {
            if g.base + c.len() as u64 > min {
                break;
            }
            g.base += c.len() as u64;
            g.chunks.pop_front();
        }
    }

    fn wake(waiters: Vec<WakeRef>) {
        for w in waiters {
            w.mailbox.post(w.token);
        }
    }

    /// Publishes the head.
    pub fn set_head(&self, head: FetchHead) {
        let waiters = {
            let mut g = self.lock();
            g.head = Some(head);
            std::mem::take(&mut g.waiters)
        };
        Fetch::wake(waiters);
    }

    /// From now on the body is not kept whole: chunks every reader has passed are dropped.
    pub fn stop_keeping(&self) {
        let mut g = self.lock();
        g.drop_read = true;
        Self::trim(&mut g);
    }

    /// Appends body bytes. For a body that is not kept, waits while the slowest reader
    /// is more than [`WINDOW`] behind; returns false when nobody reads any more (a
    /// pass fetch whose clients all left), so the fetcher can stop.
    pub fn push(&self, data: Bytes, give_up_after: Duration) -> bool {
        let waiters = {
            let mut g = self.lock();
            g.received += data.len() as u64;
            g.chunks.push_back(data);
            std::mem::take(&mut g.waiters)
        };
        Fetch::wake(waiters);
        let deadline = Instant::now() + give_up_after;
        let mut g = self.lock();
        loop {
            if !g.drop_read {
                return true;
            }
            if g.readers.is_empty() {
                return !g.had_readers;
            }
            let min = g.readers.values().copied().min().unwrap_or(g.received);
            if g.received - min <= WINDOW {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .room
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(200)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Ends the fetch.
    pub fn finish(&self, result: Result<(), FetchError>) {
        let waiters = {
            let mut g = self.lock();
            if g.end.is_none() {
                g.end = Some(result);
            }
            std::mem::take(&mut g.waiters)
        };
        Fetch::wake(waiters);
    }

    /// The whole body, if every chunk was kept.
    pub fn body(&self) -> Option<Bytes> {
        let g = self.lock();
        if g.base != 0 {
            return None;
        }
        Some(match g.chunks.len() {
            0 => Bytes::new(),
            1 => g.chunks[0].clone(),
            _ => {
                let mut b = BytesMut::with_capacity(g.received as usize);
                for c in &g.chunks {
                    b.extend_from_slice(c);
                }
                b.freeze()
            }
        })
    }

    /// Body bytes received so far.
    pub fn received(&self) -> u64 {
        self.lock().received
    }

    /// The body is complete (`Some(true)`), failed (`Some(false)`) or still coming.
    pub fn ended(&self) -> Option<bool> {
        self.lock().end.as_ref().map(|r| r.is_ok())
    }
}

/// What [`MissLock::acquire`] gives a request that missed.
pub enum Acquired {
    /// Fetch it: the others wait for this fetch.
    Lead(Arc<Fetch>),
    /// Someone is fetching it: read that fetch.
    Follow(Arc<Fetch>),
    /// Recently found not storable: fetch alone, without waiting (hit-for-pass).
    Pass,
}

/// The miss lock: at most one origin fetch per key at a time.
///
/// Contract: `acquire` makes the caller the lead exactly when no fetch of the key is
/// registered, and registers a new [`Fetch`] for it atomically. The lead must call
/// `release` (with the same fetch) once later requests should no longer join it: after
/// the object is stored, or as soon as it is known not to be shareable. `pass_for`
/// makes `acquire` answer [`Acquired::Pass`] for that key for a while.
pub trait MissLock: Send + Sync {
    fn acquire(&self, key: &CacheKey) -> Acquired;
    fn release(&self, key: &CacheKey, fetch: &Arc<Fetch>);
    fn pass_for(&self, key: &CacheKey, how_long: Duration);
    /// Fetches registered now.
    fn in_flight(&self) -> usize;
}

enum Slot {
    Fetching(Arc<Fetch>),
    Pass(Instant),
}

/// The miss lock as sharded hash maps.
pub struct MissTable {
    shards: Vec<Mutex<HashMap<u128, Slot>>>,
    fetching: AtomicUsize,
}

impl Default for MissTable {
    fn default() -> Self {
        MissTable::new()
    }
}

impl MissTable {
    pub fn new() -> MissTable {
        MissTable {
            shards: (0..16).map(|_| Mutex::new(HashMap::new())).collect(),
            fetching: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: &CacheKey) -> MutexGuard<'_, HashMap<u128, Slot>> {
        self.shards[(key.hash as usize) & 15]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl MissLock for MissTable {
    fn acquire(&self, key: &CacheKey) -> Acquired {
        let mut s = self.shard(key);
        match s.get(&key.hash) {
            Some(Slot::Fetching(f)) if f.key == *key => return Acquired::Follow(f.clone()),
            Some(Slot::Pass(until)) if Instant::now() < *until => return Acquired::Pass,
            Some(Slot::Fetching(_)) => return Acquired::Pass,
            _ => {}
        }
        let f = Fetch::new(key.clone(), false);
        s.insert(key.hash, Slot::Fetching(f.clone()));
        self.fetching.fetch_add(1, Ordering::Relaxed);
        Acquired::Lead(f)
    }

    fn release(&self, key: &CacheKey, fetch: &Arc<Fetch>) {
        let mut s = self.shard(key);
        if matches!(s.get(&key.hash), Some(Slot::Fetching(f)) if Arc::ptr_eq(f, fetch)) {
            s.remove(&key.hash);
            self.fetching.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn pass_for(&self, key: &CacheKey, how_long: Duration) {
        let mut s = self.shard(key);
        if let Some(Slot::Fetching(_)) = s.insert(key.hash, Slot::Pass(Instant::now() + how_long)) {
            self.fetching.fetch_sub(1, Ordering::Relaxed);
        }
        // Expired pass markers are dropped lazily, a few at a time.
        let now = Instant::now();
        let expired: Vec<u128> = s
            .iter()
            .filter(|(_, v)| matches!(v, Slot::Pass(t) if *t <= now))
            .map(|(k, _)| *k)
            .take(8)
            .collect();
        for k in expired {
            s.remove(&k);
        }
    }

    fn in_flight(&self) -> usize {
        self.fetching.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lead_per_key_until_released() {
        let t = MissTable::new();
        let k = CacheKey::from_text("h/a");
        let Acquired::Lead(f) = t.acquire(&k) else {
            panic!("first is lead")
        };
        assert!(matches!(t.acquire(&k), Acquired::Follow(g) if Arc::ptr_eq(&f, &g)));
        assert!(matches!(
            t.acquire(&CacheKey::from_text("h/b")),
            Acquired::Lead(_)
        ));
        t.release(&k, &f);
        assert!(matches!(t.acquire(&k), Acquired::Lead(_)));
        t.pass_for(&k, Duration::from_secs(60));
        assert!(matches!(t.acquire(&k), Acquired::Pass));
    }

    #[test]
    fn unkept_bodies_are_dropped_once_read() {
        let mb = Arc::new(Mailbox::new().unwrap());
        let w = WakeRef {
            mailbox: mb.clone(),
            token: 9,
        };
        let f = Fetch::new(CacheKey::from_text("h/x"), true);
        let r = f.join();
        assert!(matches!(f.poll_body(r, 0, &w), BodyPoll::Pending));
        f.stop_keeping();
        assert!(f.push(Bytes::from_static(b"abc"), Duration::from_secs(1)));
        let mut woken = Vec::new();
        mb.take(&mut woken);
        assert_eq!(woken, vec![9]);
        let BodyPoll::Data(d) = f.poll_body(r, 1, &w) else {
            panic!("data")
        };
        assert_eq!(d, vec![Bytes::from_static(b"bc")]);
        assert!(
            f.body().is_none(),
            "read chunks of an unkept body are dropped"
        );
        f.finish(Ok(()));
        assert!(matches!(f.poll_body(r, 3, &w), BodyPoll::End));
        f.leave(r);
        // Nobody reads any more: the fetcher is told to stop.
        assert!(!f.push(Bytes::from_static(b"d"), Duration::from_secs(1)));
    }
}
