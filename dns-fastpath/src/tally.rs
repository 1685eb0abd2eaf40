//! Answer tallies: how many answers carried each server, per balanced domain, view and family, counted on the answer path without locks or allocation.
//!
//! Every precomputed answer of a balanced name carries the indices of the counters of
//! the servers in it ([`crate::answer::Answer::tally`]); the query worker adds one to
//! each (a relaxed atomic add; usually one or two) when it sends the answer untruncated.
//! The counters belong to the [`crate::catalog::Catalog`], so every answer table built
//! from it counts into the same array and a new table loses nothing. The DNS log
//! ([`crate::dnslog`]) takes them with [`Tally::drain`] every interval.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::catalog::{DomainId, Family, ServerIdx};
use crate::views::ViewId;

/// The counters of one catalog.
pub struct Tally {
    /// First counter of each domain.
    base: Vec<usize>,
    /// Candidate servers of each domain (primary, then fallback), in counter order.
    candidates: Vec<Vec<ServerIdx>>,
    views: usize,
    counts: Box<[AtomicU64]>,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally")
            .field("domains", &self.base.len())
            .field("views", &self.views)
            .field("counters", &self.counts.len())
            .finish()
    }
}

/// Answers counted for one (domain, view, family, server) since the last drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub domain: DomainId,
    pub view: ViewId,
    pub family: Family,
    pub server: ServerIdx,
    pub answers: u64,
}

fn family_index(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl Tally {
    /// Counters for `candidates[d]` of every domain, in `views` views and both families.
    pub fn new(candidates: Vec<Vec<ServerIdx>>, views: usize) -> Tally {
        let mut base = Vec::with_capacity(candidates.len());
        let mut n = 0usize;
        for c in &candidates {
            base.push(n);
            n += c.len() * views * 2;
        }
        Tally {
            base,
            candidates,
            views,
            counts: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The counter of answers for domain `d` in view `v`, family `f`, carrying server `s`.
    pub fn index(&self, d: DomainId, v: ViewId, f: Family, s: ServerIdx) -> Option<u32> {
        let cands = self.candidates.get(d)?;
        let v = usize::from(v);
        if v >= self.views {
            return None;
        }
        let pos = cands.iter().position(|&c| c == s)?;
        let i = self.base[d] + (v * 2 + family_index(f)) * cands.len() + pos;
        u32::try_from(i).ok()
    }

    /// Counts one answer on counter `i` (from [`Tally::index`]).
    #[inline]
    pub fn add(&self, i: u32) {
        if let Some(c) = self.counts.get(i as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts `n` answers on counter `i` (answers the XDP program sent, read from its
    /// per-answer hit counters).
    pub fn add_n(&self, i: u32, n: u64) {
        if let Some(c) = self.counts.get(i as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Takes every non-zero counter (resetting it): nothing counted is lost or taken twice.
    pub fn drain(&self) -> Vec<Counted> {
        let mut out = Vec::new();
        for (d, cands) in self.candidates.iter().enumerate() {
            if cands.is_empty() {
                continue;
            }
            for v in 0..self.views {
                for (fi, family) in Family::BOTH.into_iter().enumerate() {
                    let first = self.base[d] + (v * 2 + fi) * cands.len();
                    for (pos, &server) in cands.iter().enumerate() {
                        let c = &self.counts[first + pos];
                        if c.load(Ordering::Relaxed) == 0 {
                            continue;
                        }
                        let answers = c.swap(0, Ordering::Relaxed);
                        if answers > 0 {
                            out.push(Counted {
                                domain: d,
                                view: ViewId::try_from(v).unwrap_or(ViewId::MAX),
                                family,
                                server,
                                answers,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_separate_per_domain_view_family_and_server_and_drain_once() {
        let t = Tally::new(vec![vec![3, 5], vec![], vec![5]], 2);
        let a = t.index(0, 1, Family::V6, 5).unwrap();
        let b = t.index(2, 0, Family::V4, 5).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            t.index(1, 0, Family::V4, 3),
            None,
            "domain without candidates"
        );
        assert_eq!(t.index(0, 2, Family::V4, 3), None, "view out of range");
        assert_eq!(t.index(0, 0, Family::V4, 4), None, "not a candidate");
        for _ in 0..3 {
            t.add(a);
        }
        t.add(b);
        let mut got = t.drain();
        got.sort_by_key(|c| c.domain);
        assert_eq!(
            got,
            vec![
                Counted {
                    domain: 0,
                    view: 1,
                    family: Family::V6,
                    server: 5,
                    answers: 3
                },
                Counted {
                    domain: 2,
                    view: 0,
                    family: Family::V4,
                    server: 5,
                    answers: 1
                },
            ]
        );
        assert!(t.drain().is_empty(), "a drain takes the counts once");
    }
}
