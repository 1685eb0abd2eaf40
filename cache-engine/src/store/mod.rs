//! Storage tiers behind a small trait, and the tiered store the workers ask.
//!
//! A [`Tier`] holds complete objects under their keys. The [`Store`] asks its RAM tier
//! first, then each lower tier in order; an object found below is promoted into RAM.
//! New objects are written to every tier, lowest first (origin → disk → RAM, as the
//! architecture describes), so a RAM eviction does not lose what the disk keeps.
//!
//! The disk tier (issue 6) plugs in as a lower tier: its index lives in memory, so
//! [`Tier::lookup`] answers synchronously whether and where an object is; reading the
//! body is the slow part. That tier will add a `Found::Load` answer carrying the
//! object's location, which the worker completes with an io_uring `ReadFixed` of the
//! O_DIRECT log before serving and promoting it; the contract below is otherwise
//! unchanged.

mod eviction;
mod ram;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use eviction::{EvictMeta, Eviction, S3Fifo};
pub use ram::RamTier;

use crate::key::CacheKey;
use crate::object::StoredObject;

/// The field names a stored response varies on.
pub type VaryNames = Arc<[Box<str>]>;

/// What a tier holds under a primary key.
#[derive(Debug)]
pub enum Found {
    Object(Arc<StoredObject>),
    /// The URL's responses vary on these request fields: look up the variant key.
    Vary(VaryNames),
    Miss,
}

/// One storage tier.
///
/// Contract: every method may be called from any thread at any time. `lookup` and
/// `lookup_variant` are on the hit path and must not block on anything slower than a
/// short read lock. An object is complete and immutable once inserted; replacing the
/// object under a key is an insert. A tier must compare the full key text before
/// answering, so that a hash collision is a miss. A tier may refuse an object
/// (`insert` returns false), e.g. one larger than it is willing to hold.
pub trait Tier: Send + Sync {
    /// Short name shown in stats and inspection ("ram", "disk").
    fn name(&self) -> &'static str;
    /// The object (or the vary field names) stored for a URL.
    fn lookup(&self, primary: &CacheKey) -> Found;
    /// The variant `variant` of the URL whose primary hash is `primary`.
    fn lookup_variant(&self, primary: u128, variant: &CacheKey) -> Option<Arc<StoredObject>>;
    /// Stores `obj` under its key; `vary` is set when the key is a variant key.
    fn insert(&self, obj: Arc<StoredObject>, vary: Option<VaryNames>) -> bool;
    /// Removes a URL with all its variants; returns the number of objects removed.
    fn remove_url(&self, primary: &CacheKey) -> usize;
    /// Removes every object `pred` selects; returns how many.
    fn purge(&self, pred: &dyn Fn(&StoredObject) -> bool) -> usize;
    /// Every object stored for a URL (one, or one per variant).
    fn objects_of(&self, primary: &CacheKey) -> Vec<Arc<StoredObject>>;
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
}

/// The tiers of this cache, fastest first.
pub struct Store {
    ram: Arc<dyn Tier>,
    lower: Vec<Arc<dyn Tier>>,
}

impl Store {
    pub fn new(ram: Arc<dyn Tier>, lower: Vec<Arc<dyn Tier>>) -> Store {
        Store { ram, lower }
    }

    fn tiers(&self) -> impl Iterator<Item = &Arc<dyn Tier>> {
        std::iter::once(&self.ram).chain(self.lower.iter())
    }

    /// The object for a request: `primary` and, for varying responses, the request's
    /// values of the Vary'd fields from `fields`. Counts a hit on the object found. The
    /// second value is the variant key when the URL varies (coalescing locks it).
    pub fn lookup<'a>(
        &self,
        primary: &CacheKey,
        fields: impl Fn(&str) -> Vec<&'a [u8]> + Copy,
    ) -> (Option<Arc<StoredObject>>, Option<(CacheKey, VaryNames)>) {
        let mut variant = None;
        for (i, tier) in self.tiers().enumerate() {
            let obj = match tier.lookup(primary) {
                Found::Object(o) => Some(o),
                Found::Vary(names) => {
                    let v = primary.variant(&names, fields);
                    let o = tier.lookup_variant(primary.hash, &v);
                    variant = Some((v, names));
                    o
                }
                Found::Miss => None,
            };
            if let Some(o) = obj {
                if i > 0 {
                    self.ram
                        .insert(o.clone(), variant.as_ref().map(|(_, n)| n.clone()));
                }
                o.touch();
                return (Some(o), variant);
            }
        }
        (None, variant)
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

    /// Removes what `pred` selects from every tier.
    pub fn purge(&self, pred: &dyn Fn(&StoredObject) -> bool) -> usize {
        self.tiers().map(|t| t.purge(pred)).sum()
    }

    /// Every object of a URL, with the tier holding it.
    pub fn objects_of(&self, primary: &CacheKey) -> Vec<(&'static str, Arc<StoredObject>)> {
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
        assert!(Arc::ptr_eq(&found.unwrap(), &o));
        assert!(matches!(ram.lookup(&k), Found::Object(_)));
        assert_eq!(store.remove_url(&k), 2);
        assert!(store.lookup(&k, |_| Vec::new()).0.is_none());
    }
}
