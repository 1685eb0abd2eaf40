//! Storage tiers behind a small trait, and the tiered store the workers ask.
//!
//! A [`Tier`] holds complete objects under their keys. The [`Store`] asks its RAM tier
//! first, then each lower tier in order. A lower tier either has the object at hand
//! ([`Found::Object`]: promoted into RAM at once) or knows where it is on disk
//! ([`Found::OnDisk`]): the worker then reads it on its own io_uring ([`disk`]) and,
//! if the disk tier's policy says so, promotes it with [`Store::promote`]. New objects
//! are written to every tier, lowest first (origin → disk → RAM, as the architecture
//! describes), so a RAM eviction does not lose what the disk keeps.

pub mod disk;
mod eviction;
mod ram;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use disk::{DiskRef, DiskSettings, DiskTier};
pub use eviction::{EvictMeta, Eviction, S3Fifo};
pub use ram::RamTier;

use crate::key::CacheKey;
use crate::object::{ResponseHead, StoredObject};
use crate::purge::Matcher;

/// The field names a stored response varies on.
pub type VaryNames = Arc<[Box<str>]>;

/// What a tier holds under a key.
#[derive(Debug)]
pub enum Found {
    Object(Arc<StoredObject>),
    /// The URL's responses vary on these request fields: look up the variant key.
    Vary(VaryNames),
    /// The object is on disk: read it before use.
    OnDisk(DiskRef),
    Miss,
}

/// What the store has for a request.
#[derive(Debug)]
pub enum Lookup {
    /// In RAM (or promoted there just now).
    Hit(Arc<StoredObject>),
    /// On disk only: read it with [`DiskRef::load`].
    OnDisk(DiskRef),
    Miss,
}

/// One stored object as inspection shows it (without its body).
#[derive(Debug, Clone)]
pub struct StoredView {
    pub key: CacheKey,
    pub customer: Arc<str>,
    pub head: Arc<ResponseHead>,
    pub body_len: u64,
    /// Bytes charged to the tier.
    pub charged: u64,
    pub stored_at: u64,
    pub hits: u64,
    /// The record's byte offset in the disk tier's file, and its length.
    pub disk: Option<(u64, u64)>,
}

impl StoredView {
    pub fn of(o: &StoredObject) -> StoredView {
        StoredView {
            key: o.key.clone(),
            customer: o.customer.clone(),
            head: o.head.clone(),
            body_len: o.body.len() as u64,
            charged: o.size(),
            stored_at: o.stored_at,
            hits: o.hits.load(std::sync::atomic::Ordering::Relaxed),
            disk: None,
        }
    }
}

/// One storage tier.
///
/// Contract: every method may be called from any thread at any time. `lookup` and
/// `lookup_variant` are on the hit path and must not block on anything slower than a
/// short read lock: a tier whose objects are slow to reach answers
/// [`Found::OnDisk`] and leaves the reading to the caller. An object is complete and
/// immutable once inserted; replacing the object under a key is an insert. A tier
/// must compare the full key text before answering, so that a hash collision is a
/// miss. A tier may refuse an object (`insert` returns false), e.g. one larger than it
/// is willing to hold, and may make an accepted one visible a little later (the disk
/// tier, once written). After `remove_url` or `purge` return, lookups no longer find
/// what they removed, and inserts made before they were called are covered too.
pub trait Tier: Send + Sync {
    /// Short name shown in stats and inspection ("ram", "disk").
    fn name(&self) -> &'static str;
    /// The object (or the vary field names) stored for a URL.
    fn lookup(&self, primary: &CacheKey) -> Found;
    /// The variant `variant` of the URL whose primary hash is `primary`
    /// ([`Found::Object`], [`Found::OnDisk`] or [`Found::Miss`]).
    fn lookup_variant(&self, primary: u128, variant: &CacheKey) -> Found;
    /// Stores `obj` under its key; `vary` is set when the key is a variant key.
    fn insert(&self, obj: Arc<StoredObject>, vary: Option<VaryNames>) -> bool;
    /// Removes a URL with all its variants; returns the number of objects removed.
    fn remove_url(&self, primary: &CacheKey) -> usize;
    /// Removes every object `m` selects; returns how many.
    fn purge(&self, m: &Matcher) -> usize;
    /// Every object stored for a URL (one, or one per variant).
    fn objects_of(&self, primary: &CacheKey) -> Vec<StoredView>;
    fn stats(&self) -> TierStats;
}

/// Figures of one tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierStats {
    pub tier: String,
    pub eviction: String,
    pub objects: u64,
    pub bytes: u64,
    pub capacity: u64,
    pub inserted: u64,
    pub evicted: u64,
    pub purged: u64,
    /// Lookups that found an object here (for the disk tier: read and verified).
    #[serde(default)]
    pub hits: u64,
    /// Lookups that reached this tier and found nothing usable.
    #[serde(default)]
    pub misses: u64,
    /// Records that failed their checksum when read (each dropped and refetched).
    #[serde(default)]
    pub checksum_failures: u64,
    /// Failed reads and writes (logged; the object is treated as a miss).
    #[serde(default)]
    pub io_errors: u64,
    /// Objects given a second chance: copied forward when their segment was evicted.
    #[serde(default)]
    pub rewritten: u64,
    /// Inserts not written (write queue full, object too large, writer stopped).
    #[serde(default)]
    pub dropped_writes: u64,
    #[serde(default)]
    pub segments: u64,
    #[serde(default)]
    pub segments_used: u64,
}

/// The tiers of this cache, fastest first.
pub struct Store {
    ram: Arc<dyn Tier>,
    lower: Vec<Arc<dyn Tier>>,
    disk: Option<Arc<DiskTier>>,
}

impl Store {
    pub fn new(ram: Arc<dyn Tier>, lower: Vec<Arc<dyn Tier>>) -> Store {
        Store {
            ram,
            lower,
            disk: None,
        }
    }

    /// A RAM tier in front of a disk tier.
    pub fn with_disk(ram: Arc<dyn Tier>, disk: Arc<DiskTier>) -> Store {
        disk.watch_upper(ram.clone());
        Store {
            ram,
            lower: vec![disk.clone()],
            disk: Some(disk),
        }
    }

    /// The disk tier, if there is one.
    pub fn disk(&self) -> Option<&Arc<DiskTier>> {
        self.disk.as_ref()
    }

    fn tiers(&self) -> impl Iterator<Item = &Arc<dyn Tier>> {
        std::iter::once(&self.ram).chain(self.lower.iter())
    }

    /// The object for a request: `primary` and, for varying responses, the request's
    /// values of the Vary'd fields from `fields`. Counts a hit on an object found in
    /// RAM. The second value is the variant key when the URL varies (coalescing locks
    /// it).
    pub fn lookup<'a>(
        &self,
        primary: &CacheKey,
        fields: impl Fn(&str) -> Vec<&'a [u8]> + Copy,
    ) -> (Lookup, Option<(CacheKey, VaryNames)>) {
        let mut variant = None;
        for (i, tier) in self.tiers().enumerate() {
            let found = match tier.lookup(primary) {
                Found::Vary(names) => {
                    let v = primary.variant(&names, fields);
                    let f = tier.lookup_variant(primary.hash, &v);
                    variant = Some((v, names));
                    f
                }
                other => other,
            };
            match found {
                Found::Object(o) => {
                    if i > 0 {
                        self.ram
                            .insert(o.clone(), variant.as_ref().map(|(_, n)| n.clone()));
                    }
                    o.touch();
                    return (Lookup::Hit(o), variant);
                }
                Found::OnDisk(r) => return (Lookup::OnDisk(r), variant),
                Found::Vary(_) | Found::Miss => {}
            }
        }
        (Lookup::Miss, variant)
    }

    /// Puts an object read from a lower tier into RAM.
    pub fn promote(&self, obj: Arc<StoredObject>, vary: Option<VaryNames>) -> bool {
        self.ram.insert(obj, vary)
    }

    /// Stores an object in every tier, lowest first.
    pub fn insert(&self, obj: Arc<StoredObject>, vary: Option<VaryNames>) -> bool {
        let mut any = false;
        for t in self.lower.iter().rev() {
            any |= t.insert(obj.clone(), vary.clone());
        }
        any | self.ram.insert(obj, vary)
    }

    /// Removes a URL (all variants) from every tier.
    pub fn remove_url(&self, primary: &CacheKey) -> usize {
        self.tiers().map(|t| t.remove_url(primary)).sum()
    }

    /// Removes what `m` selects from every tier.
    pub fn purge(&self, m: &Matcher) -> usize {
        self.tiers().map(|t| t.purge(m)).sum()
    }

    /// Every object of a URL, with the tier holding it.
    pub fn objects_of(&self, primary: &CacheKey) -> Vec<(&'static str, StoredView)> {
        let mut out = Vec::new();
        for t in self.tiers() {
            for o in t.objects_of(primary) {
                out.push((t.name(), o));
            }
        }
        out
    }

    pub fn stats(&self) -> Vec<TierStats> {
        self.tiers().map(|t| t.stats()).collect()
    }

    /// Waits until the disk tier has written everything queued (tests, shutdown).
    pub fn flush(&self, within: std::time::Duration) -> bool {
        self.disk.as_ref().is_none_or(|d| d.flush(within))
    }

    /// Stops the disk tier's writer after it has written what is queued.
    pub fn shutdown(&self) {
        if let Some(d) = &self.disk {
            d.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ResponseHead;
    use bytes::Bytes;

    fn obj(key: &str, body: usize) -> Arc<StoredObject> {
        let k = CacheKey::from_text(key);
        let head = ResponseHead::from_origin(
            200,
            [("Cache-Control", b"max-age=60".as_slice())].into_iter(),
            0,
            0,
            "1.1 t (popnet)",
        );
        let h = k.hash;
        Arc::new(StoredObject::new(
            k,
            h,
            "c".into(),
            Arc::new(head),
            Bytes::from(vec![b'x'; body]),
            0,
        ))
    }

    #[test]
    fn lower_tier_hits_are_promoted_into_ram() {
        let ram = Arc::new(RamTier::new(1 << 20, S3Fifo::new(1 << 20)));
        let lower = Arc::new(RamTier::new(1 << 20, S3Fifo::new(1 << 20)));
        let store = Store::new(ram.clone(), vec![lower.clone()]);
        let o = obj("h/x", 100);
        assert!(lower.insert(o.clone(), None));
        let k = CacheKey::from_text("h/x");
        assert!(matches!(ram.lookup(&k), Found::Miss));
        let (found, _) = store.lookup(&k, |_| Vec::new());
        assert!(matches!(found, Lookup::Hit(f) if Arc::ptr_eq(&f, &o)));
        assert!(matches!(ram.lookup(&k), Found::Object(_)));
        assert_eq!(store.remove_url(&k), 2);
        assert!(matches!(store.lookup(&k, |_| Vec::new()).0, Lookup::Miss));
    }
}
