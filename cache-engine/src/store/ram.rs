//! The RAM tier: objects in sharded hash maps, bounded by bytes, evicted by a pluggable policy.
//!
//! 64 shards, each a `RwLock<HashMap>` keyed by the key hash; a URL and all its
//! variants live in the shard of the URL's primary hash. A hit takes one shard read
//! lock and clones an `Arc`; there is no global lock on the hit path. Inserts and
//! evictions are serialised by the policy's mutex (they follow origin fetches, so they
//! are rare next to hits); lock order is policy, then one shard at a time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};

use super::{EvictMeta, Eviction, Found, S3Fifo, StoredView, Tier, TierStats, VaryNames};
use crate::key::CacheKey;
use crate::object::StoredObject;
use crate::purge::Matcher;

const SHARDS: usize = 64;

/// Keys are already xxh3 hashes: use them as they are.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = (i as u64) ^ ((i >> 64) as u64);
    }
}

enum Entry {
    Object(Arc<StoredObject>),
    Vary {
        names: VaryNames,
        variants: Vec<u128>,
    },
}

type Map = HashMap<u128, Entry, BuildHasherDefault<IdHasher>>;

/// A shard's lookup counters, next to its lock (whose cache line a lookup touches anyway).
#[derive(Default)]
#[repr(align(64))]
struct Looks {
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The RAM tier.
pub struct RamTier<E: Eviction = S3Fifo> {
    shards: Box<[RwLock<Map>]>,
    looks: Box<[Looks]>,
    policy: Mutex<E>,
    capacity: u64,
    used: AtomicU64,
    objects: AtomicU64,
    inserted: AtomicU64,
    evicted: AtomicU64,
    purged: AtomicU64,
}

fn shard_of(primary: u128) -> usize {
    (primary as usize) & (SHARDS - 1)
}

impl<E: Eviction> RamTier<E> {
    /// A tier holding at most `capacity` bytes (see [`StoredObject::charge`]).
    pub fn new(capacity: u64, policy: E) -> RamTier<E> {
        RamTier {
            shards: (0..SHARDS).map(|_| RwLock::new(Map::default())).collect(),
            looks: (0..SHARDS).map(|_| Looks::default()).collect(),
            policy: Mutex::new(policy),
            capacity,
            used: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            inserted: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            purged: AtomicU64::new(0),
        }
    }

    fn write(&self, primary: u128) -> RwLockWriteGuard<'_, Map> {
        self.shards[shard_of(primary)]
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Accounts for an object leaving the tier.
    fn forget(&self, o: &StoredObject) {
        o.evict.set_gone();
        self.used.fetch_sub(o.size(), Ordering::Relaxed);
        self.objects.fetch_sub(1, Ordering::Relaxed);
    }

    /// Removes whatever `entry` was (an object, or a vary record and all its variants).
    fn drop_entry(&self, map: &mut Map, entry: Entry) -> usize {
        match entry {
            Entry::Object(o) => {
                self.forget(&o);
                1
            }
            Entry::Vary { variants, .. } => {
                let mut n = 0;
                for v in variants {
                    if let Some(Entry::Object(o)) = map.remove(&v) {
                        self.forget(&o);
                        n += 1;
                    }
                }
                n
            }
        }
    }

    /// Removes the object with key `key` of URL `primary` from `map` (variants are also
    /// unlisted from their URL's vary record).
    fn remove_object(&self, map: &mut Map, key: u128, primary: u128) -> bool {
        let Some(Entry::Object(o)) = map.remove(&key) else {
            return false;
        };
        self.forget(&o);
        if key != primary
            && let Some(Entry::Vary { variants, .. }) = map.get_mut(&primary)
        {
            variants.retain(|v| *v != key);
            if variants.is_empty() {
                map.remove(&primary);
            }
        }
        true
    }

    fn count(&self, primary: u128, hit: bool) {
        let l = &self.looks[shard_of(primary)];
        let c = if hit { &l.hits } else { &l.misses };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn evict(&self, victim: &Arc<EvictMeta>) {
        let mut map = self.write(victim.primary);
        let same =
            matches!(map.get(&victim.key), Some(Entry::Object(o)) if Arc::ptr_eq(&o.evict, victim));
        if same && self.remove_object(&mut map, victim.key, victim.primary) {
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<E: Eviction> Tier for RamTier<E> {
    fn name(&self) -> &'static str {
        "ram"
    }

    fn lookup(&self, primary: &CacheKey) -> Found {
        let map = self.shards[shard_of(primary.hash)]
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let found = match map.get(&primary.hash) {
            Some(Entry::Object(o)) if o.key.text == primary.text => Found::Object(o.clone()),
            Some(Entry::Vary { names, .. }) => return Found::Vary(names.clone()),
            _ => Found::Miss,
        };
        drop(map);
        self.count(primary.hash, matches!(found, Found::Object(_)));
        found
    }

    fn lookup_variant(&self, primary: u128, variant: &CacheKey) -> Found {
        let map = self.shards[shard_of(primary)]
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let found = match map.get(&variant.hash) {
            Some(Entry::Object(o)) if o.key.text == variant.text => Found::Object(o.clone()),
            _ => Found::Miss,
        };
        drop(map);
        self.count(primary, matches!(found, Found::Object(_)));
        found
    }

    fn insert(&self, obj: Arc<StoredObject>, vary: Option<VaryNames>) -> bool {
        let size = obj.size();
        if size > self.capacity / 2 {
            return false;
        }
        let mut policy = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut map = self.write(obj.primary);
            match vary {
                None => {
                    if let Some(old) = map.remove(&obj.key.hash) {
                        self.drop_entry(&mut map, old);
                    }
                }
                Some(names) => {
                    let listed = match map.get_mut(&obj.primary) {
                        Some(Entry::Vary { names: n, variants }) if *n == names => {
                            if !variants.contains(&obj.key.hash) {
                                variants.push(obj.key.hash);
                            }
                            true
                        }
                        _ => false,
                    };
                    if !listed {
                        if let Some(old) = map.remove(&obj.primary) {
                            self.drop_entry(&mut map, old);
                        }
                        map.insert(
                            obj.primary,
                            Entry::Vary {
                                names,
                                variants: vec![obj.key.hash],
                            },
                        );
                    }
                    if let Some(Entry::Object(old)) = map.remove(&obj.key.hash) {
                        self.forget(&old);
                    }
                }
            }
            map.insert(obj.key.hash, Entry::Object(obj.clone()));
        }
        self.used.fetch_add(size, Ordering::Relaxed);
        self.objects.fetch_add(1, Ordering::Relaxed);
        self.inserted.fetch_add(1, Ordering::Relaxed);
        policy.admit(obj.evict.clone());
        while self.used.load(Ordering::Relaxed) > self.capacity {
            match policy.victim() {
                Some(v) => self.evict(&v),
                None => break,
            }
        }
        true
    }

    fn remove_url(&self, primary: &CacheKey) -> usize {
        let mut map = self.write(primary.hash);
        let matches = match map.get(&primary.hash) {
            Some(Entry::Object(o)) => o.key.text == primary.text,
            Some(Entry::Vary { .. }) => true,
            None => false,
        };
        if !matches {
            return 0;
        }
        let n = match map.remove(&primary.hash) {
            Some(e) => self.drop_entry(&mut map, e),
            None => 0,
        };
        self.purged.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    fn purge(&self, m: &Matcher) -> usize {
        if let Matcher::Url(k) = m {
            return self.remove_url(k);
        }
        let mut n = 0;
        for shard in self.shards.iter() {
            let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
            let doomed: Vec<(u128, u128)> = map
                .values()
                .filter_map(|e| match e {
                    Entry::Object(o) if m.matches_object(o) => Some((o.key.hash, o.primary)),
                    _ => None,
                })
                .collect();
            for (k, p) in doomed {
                if self.remove_object(&mut map, k, p) {
                    n += 1;
                }
            }
        }
        self.purged.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    fn objects_of(&self, primary: &CacheKey) -> Vec<StoredView> {
        let map = self.shards[shard_of(primary.hash)]
            .read()
            .unwrap_or_else(|p| p.into_inner());
        match map.get(&primary.hash) {
            Some(Entry::Object(o)) if o.key.text == primary.text => vec![StoredView::of(o)],
            Some(Entry::Vary { variants, .. }) => variants
                .iter()
                .filter_map(|v| match map.get(v) {
                    Some(Entry::Object(o)) if o.key.primary_text() == &*primary.text => {
                        Some(StoredView::of(o))
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn stats(&self) -> TierStats {
        let policy = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        TierStats {
            tier: "ram".into(),
            eviction: policy.name().into(),
            objects: self.objects.load(Ordering::Relaxed),
            bytes: self.used.load(Ordering::Relaxed),
            capacity: self.capacity,
            inserted: self.inserted.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            purged: self.purged.load(Ordering::Relaxed),
            hits: self
                .looks
                .iter()
                .map(|l| l.hits.load(Ordering::Relaxed))
                .sum(),
            misses: self
                .looks
                .iter()
                .map(|l| l.misses.load(Ordering::Relaxed))
                .sum(),
            ..TierStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ResponseHead;
    use bytes::Bytes;

    fn obj(key: CacheKey, primary: u128, body: usize) -> Arc<StoredObject> {
        let head = ResponseHead::from_origin(200, std::iter::empty(), 0, 0, "1.1 t (popnet)");
        Arc::new(StoredObject::new(
            key,
            primary,
            "c".into(),
            Arc::new(head),
            Bytes::from(vec![0u8; body]),
            0,
        ))
    }

    #[test]
    fn bounded_by_bytes_and_variants_share_their_url() {
        let t = RamTier::new(100_000, S3Fifo::new(100_000));
        for i in 0..200 {
            let k = CacheKey::from_text(&format!("h/{i}"));
            let h = k.hash;
            assert!(t.insert(obj(k, h, 1000), None));
            assert!(t.stats().bytes <= 100_000);
        }
        let s = t.stats();
        assert!(s.evicted > 100, "{s:?}");
        assert_eq!(s.objects, s.inserted - s.evicted);

        let p = CacheKey::from_text("h/v");
        let names: VaryNames = vec![Box::<str>::from("accept")].into();
        let a = p.variant(&names, |_| vec![b"a".as_slice()]);
        let b = p.variant(&names, |_| vec![b"b".as_slice()]);
        t.insert(obj(a.clone(), p.hash, 10), Some(names.clone()));
        t.insert(obj(b.clone(), p.hash, 10), Some(names.clone()));
        assert!(matches!(t.lookup(&p), Found::Vary(_)));
        assert!(matches!(t.lookup_variant(p.hash, &a), Found::Object(_)));
        assert_eq!(t.objects_of(&p).len(), 2);
        assert_eq!(t.remove_url(&p), 2);
        assert!(matches!(t.lookup_variant(p.hash, &b), Found::Miss));
        assert!(matches!(t.lookup(&p), Found::Miss));
        let before = t.stats().objects;
        assert_eq!(
            t.purge(&Matcher::Prefix("h/1".into())),
            t.stats().purged as usize - 2
        );
        let s = t.stats();
        assert!(s.hits >= 1 && s.misses >= 2, "{s:?}");
        assert!(t.stats().objects < before);
    }
}
