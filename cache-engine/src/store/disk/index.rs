//! The disk tier's index: where every live object is, in sharded hash maps in memory.
//!
//! Like the RAM tier, 64 shards keyed by the key hash; a URL and all its variants live
//! in the shard of the URL's primary hash, and a URL whose responses vary has a vary
//! entry listing its variants. An [`Entry`] holds the full key text (compared on every
//! lookup, so a hash collision is a miss, and read back from the record to be sure),
//! the customer (purges by prefix and customer are answered from memory) and the
//! record's place. Entries are replaced, never changed; a removed entry is marked
//! gone exactly once, which is where the tier's object and byte counts change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use crate::key::CacheKey;
use crate::purge::Matcher;
use crate::store::VaryNames;

const SHARDS: usize = 64;

/// Where one object lives.
#[derive(Debug)]
pub struct Entry {
    pub key: CacheKey,
    pub primary: u128,
    pub customer: Arc<str>,
    /// The URL's Vary names when this is a variant.
    pub vary: Option<VaryNames>,
    pub segment: u32,
    /// The sequence number of the segment when the record was written.
    pub seq: u64,
    /// Byte offset of the record in its segment.
    pub offset: u64,
    pub record_len: u64,
    pub header_len: u32,
    pub body_len: u64,
    pub stored_at: u64,
    hits: AtomicU32,
    gone: AtomicBool,
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: CacheKey,
        customer: Arc<str>,
        vary: Option<VaryNames>,
        segment: u32,
        seq: u64,
        offset: u64,
        record_len: u64,
        header_len: u32,
        body_len: u64,
        stored_at: u64,
    ) -> Entry {
        let primary = xxhash_rust::xxh3::xxh3_128(key.primary_text().as_bytes());
        Entry {
            key,
            primary,
            customer,
            vary,
            segment,
            seq,
            offset,
            record_len,
            header_len,
            body_len,
            stored_at,
            hits: AtomicU32::new(0),
            gone: AtomicBool::new(false),
        }
    }

    /// Counts a disk hit; returns the count.
    pub fn hit(&self) -> u32 {
        self.hits.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    pub fn hits(&self) -> u32 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Marks the entry gone; true for the caller that did it first.
    pub fn set_gone(&self) -> bool {
        !self.gone.swap(true, Ordering::AcqRel)
    }
}

enum Slot {
    Object(Arc<Entry>),
    Vary {
        names: VaryNames,
        variants: Vec<u128>,
    },
}

type Map = HashMap<u128, Slot>;

/// What the index holds under a primary key.
pub enum Look {
    Object(Arc<Entry>),
    Vary(VaryNames),
    Miss,
}

/// The index. Every method takes at most one shard lock at a time.
pub struct Index {
    shards: Box<[RwLock<Map>]>,
}

impl Default for Index {
    fn default() -> Self {
        Index::new()
    }
}

fn shard_of(primary: u128) -> usize {
    (primary as usize) & (SHARDS - 1)
}

impl Index {
    pub fn new() -> Index {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::new(Map::new())).collect(),
        }
    }

    fn write(&self, primary: u128) -> RwLockWriteGuard<'_, Map> {
        self.shards[shard_of(primary)]
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn lookup(&self, primary: &CacheKey) -> Look {
        let map = self.shards[shard_of(primary.hash)]
            .read()
            .unwrap_or_else(|p| p.into_inner());
        match map.get(&primary.hash) {
            Some(Slot::Object(e)) if e.key.text == primary.text => Look::Object(e.clone()),
            Some(Slot::Vary { names, .. }) => Look::Vary(names.clone()),
            _ => Look::Miss,
        }
    }

    pub fn lookup_variant(&self, primary: u128, variant: &CacheKey) -> Option<Arc<Entry>> {
        let map = self.shards[shard_of(primary)]
            .read()
            .unwrap_or_else(|p| p.into_inner());
        match map.get(&variant.hash) {
            Some(Slot::Object(e)) if e.key.text == variant.text => Some(e.clone()),
            _ => None,
        }
    }

    /// Removes whatever a slot was, pushing the entries that left into `out`.
    fn drop_slot(map: &mut Map, slot: Slot, out: &mut Vec<Arc<Entry>>) {
        match slot {
            Slot::Object(e) => out.push(e),
            Slot::Vary { variants, .. } => {
                for v in variants {
                    if let Some(Slot::Object(e)) = map.remove(&v) {
                        out.push(e);
                    }
                }
            }
        }
    }

    /// Removes the object `key` of URL `primary` (unlisting a variant from its URL).
    fn remove_object(map: &mut Map, key: u128, primary: u128) -> Option<Arc<Entry>> {
        let Some(Slot::Object(e)) = map.remove(&key) else {
            return None;
        };
        if key != primary
            && let Some(Slot::Vary { variants, .. }) = map.get_mut(&primary)
        {
            variants.retain(|v| *v != key);
            if variants.is_empty() {
                map.remove(&primary);
            }
        }
        Some(e)
    }

    /// Makes `e` the object under its key; returns the entries it displaced (the
    /// previous object, or a vary record's variants when the URL stops varying or
    /// varies on other fields).
    pub fn insert(&self, e: Arc<Entry>) -> Vec<Arc<Entry>> {
        let mut out = Vec::new();
        let mut map = self.write(e.primary);
        match &e.vary {
            None => {
                if let Some(old) = map.remove(&e.key.hash) {
                    Self::drop_slot(&mut map, old, &mut out);
                }
            }
            Some(names) => {
                let listed = match map.get_mut(&e.primary) {
                    Some(Slot::Vary { names: n, variants }) if n == names => {
                        if !variants.contains(&e.key.hash) {
                            variants.push(e.key.hash);
                        }
                        true
                    }
                    _ => false,
                };
                if !listed {
                    if let Some(old) = map.remove(&e.primary) {
                        Self::drop_slot(&mut map, old, &mut out);
                    }
                    map.insert(
                        e.primary,
                        Slot::Vary {
                            names: names.clone(),
                            variants: vec![e.key.hash],
                        },
                    );
                }
                if let Some(Slot::Object(old)) = map.remove(&e.key.hash) {
                    out.push(old);
                }
            }
        }
        map.insert(e.key.hash, Slot::Object(e));
        out
    }

    /// Removes `e` if it is still the object under its key.
    pub fn remove_entry(&self, e: &Arc<Entry>) -> bool {
        let mut map = self.write(e.primary);
        let same = matches!(map.get(&e.key.hash), Some(Slot::Object(x)) if Arc::ptr_eq(x, e));
        same && Self::remove_object(&mut map, e.key.hash, e.primary).is_some()
    }

    /// Whether `e` is the object under its key now.
    pub fn holds(&self, e: &Arc<Entry>) -> bool {
        let map = self.shards[shard_of(e.primary)]
            .read()
            .unwrap_or_else(|p| p.into_inner());
        matches!(map.get(&e.key.hash), Some(Slot::Object(x)) if Arc::ptr_eq(x, e))
    }

    /// Removes every object `m` selects (only those logged before position
    /// `before` = (seq, offset), if given); returns them.
    pub fn remove_matching(&self, m: &Matcher, before: Option<(u64, u64)>) -> Vec<Arc<Entry>> {
        let mut out = Vec::new();
        let older = |e: &Entry| before.is_none_or(|b| (e.seq, e.offset) < b);
        if let Matcher::Url(k) = m {
            let mut map = self.write(k.hash);
            let doomed: Vec<(u128, u128)> = match map.get(&k.hash) {
                Some(Slot::Object(e)) if e.key.text == k.text && older(e) => {
                    vec![(e.key.hash, e.primary)]
                }
                Some(Slot::Vary { variants, .. }) => variants
                    .iter()
                    .filter_map(|v| match map.get(v) {
                        Some(Slot::Object(e)) if older(e) => Some((e.key.hash, e.primary)),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for (key, p) in doomed {
                if let Some(e) = Self::remove_object(&mut map, key, p) {
                    out.push(e);
                }
            }
            return out;
        }
        for shard in self.shards.iter() {
            let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
            let doomed: Vec<(u128, u128)> = map
                .values()
                .filter_map(|s| match s {
                    Slot::Object(e) if m.matches(&e.key, &e.customer) && older(e) => {
                        Some((e.key.hash, e.primary))
                    }
                    _ => None,
                })
                .collect();
            for (k, p) in doomed {
                if let Some(e) = Self::remove_object(&mut map, k, p) {
                    out.push(e);
                }
            }
        }
        out
    }

    /// Every object stored for a URL.
    pub fn objects_of(&self, primary: &CacheKey) -> Vec<Arc<Entry>> {
        let map = self.shards[shard_of(primary.hash)]
            .read()
            .unwrap_or_else(|p| p.into_inner());
        match map.get(&primary.hash) {
            Some(Slot::Object(e)) if e.key.text == primary.text => vec![e.clone()],
            Some(Slot::Vary { variants, .. }) => variants
                .iter()
                .filter_map(|v| match map.get(v) {
                    Some(Slot::Object(e)) if e.key.primary_text() == &*primary.text => {
                        Some(e.clone())
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: CacheKey, vary: Option<VaryNames>, offset: u64) -> Arc<Entry> {
        Arc::new(Entry::new(
            key,
            "c".into(),
            vary,
            0,
            1,
            offset,
            4096,
            100,
            10,
            0,
        ))
    }

    #[test]
    fn replace_vary_and_purge() {
        let ix = Index::new();
        let a = CacheKey::from_text("h/a");
        let e1 = entry(a.clone(), None, 4096);
        assert!(ix.insert(e1.clone()).is_empty());
        assert!(matches!(ix.lookup(&a), Look::Object(e) if Arc::ptr_eq(&e, &e1)));
        let e2 = entry(a.clone(), None, 8192);
        let out = ix.insert(e2.clone());
        assert!(out.len() == 1 && Arc::ptr_eq(&out[0], &e1));
        assert!(
            !ix.remove_entry(&e1),
            "a replaced entry is not removed again"
        );
        assert!(ix.holds(&e2));

        // The URL starts to vary: the plain object goes, variants are listed.
        let names: VaryNames = vec![Box::<str>::from("accept")].into();
        let v1 = a.variant(&names, |_| vec![b"x".as_slice()]);
        let v2 = a.variant(&names, |_| vec![b"y".as_slice()]);
        let ev1 = entry(v1.clone(), Some(names.clone()), 12288);
        let out = ix.insert(ev1.clone());
        assert!(out.len() == 1 && Arc::ptr_eq(&out[0], &e2));
        ix.insert(entry(v2.clone(), Some(names.clone()), 16384));
        assert!(matches!(ix.lookup(&a), Look::Vary(_)));
        assert!(ix.lookup_variant(a.hash, &v1).is_some());
        assert_eq!(ix.objects_of(&a).len(), 2);
        assert!(ix.remove_entry(&ev1));
        assert_eq!(ix.objects_of(&a).len(), 1);

        let b = CacheKey::from_text("h/b/1");
        ix.insert(entry(b.clone(), None, 20480));
        // Entries logged after a purge's position are not touched by it.
        assert!(
            ix.remove_matching(&Matcher::Prefix("h/b".into()), Some((1, 20480)))
                .is_empty()
        );
        assert_eq!(
            ix.remove_matching(&Matcher::Prefix("h/b".into()), Some((1, 20481)))
                .len(),
            1
        );
        assert!(matches!(ix.lookup(&b), Look::Miss));
        assert_eq!(ix.remove_matching(&Matcher::Url(a.clone()), None).len(), 1);
        assert!(matches!(ix.lookup(&a), Look::Miss));
        // A colliding hash with other text is a miss.
        let fake = CacheKey {
            text: "h/other".into(),
            hash: b.hash,
        };
        ix.insert(entry(b.clone(), None, 4096));
        assert!(matches!(ix.lookup(&fake), Look::Miss));
    }
}
