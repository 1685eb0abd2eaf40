//! Query counters, one cache-line-aligned set per worker, summed when read.

use std::sync::atomic::{AtomicU64, Ordering};

use dns_wire::DropReason;
use serde::{Deserialize, Serialize};

use crate::respond::Outcome;

/// Rcodes counted individually (0..=15 and BADVERS = 16); others share the last slot.
const RCODE_SLOTS: usize = 18;

/// Counters of one worker (a UDP socket thread or the TCP loop).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Counters {
    pub received: AtomicU64,
    pub answered: AtomicU64,
    pub precomputed: AtomicU64,
    pub truncated: AtomicU64,
    pub dropped_short: AtomicU64,
    pub dropped_response: AtomicU64,
    pub dropped_oversize: AtomicU64,
    rcodes: [AtomicU64; RCODE_SLOTS],
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Records one packet's outcome.
    pub fn record(&self, o: &Outcome) {
        bump(&self.received);
        match *o {
            Outcome::Answered {
                rcode,
                truncated,
                precomputed,
            } => {
                bump(&self.answered);
                if truncated {
                    bump(&self.truncated);
                }
                if precomputed {
                    bump(&self.precomputed);
                }
                bump(&self.rcodes[usize::from(rcode).min(RCODE_SLOTS - 1)]);
            }
            Outcome::Dropped(DropReason::IsResponse) => bump(&self.dropped_response),
            Outcome::Dropped(_) => bump(&self.dropped_short),
        }
    }

    /// Records a datagram too large to be a query we read.
    pub fn record_oversize(&self) {
        bump(&self.received);
        bump(&self.dropped_oversize);
    }
}

/// Totals over every worker, as shown by the admin listener and popctl.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryStats {
    pub received: u64,
    pub answered: u64,
    /// Answered from the precomputed table (the rest were resolved on demand).
    pub precomputed: u64,
    pub truncated: u64,
    pub dropped: u64,
    pub dropped_short: u64,
    pub dropped_response: u64,
    pub dropped_oversize: u64,
    pub noerror: u64,
    pub formerr: u64,
    pub servfail: u64,
    pub nxdomain: u64,
    pub notimp: u64,
    pub refused: u64,
    pub badvers: u64,
    pub other_rcode: u64,
}

impl QueryStats {
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a Counters>) -> QueryStats {
        let mut s = QueryStats::default();
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for w in workers {
            s.received += g(&w.received);
            s.answered += g(&w.answered);
            s.precomputed += g(&w.precomputed);
            s.truncated += g(&w.truncated);
            s.dropped_short += g(&w.dropped_short);
            s.dropped_response += g(&w.dropped_response);
            s.dropped_oversize += g(&w.dropped_oversize);
            s.noerror += g(&w.rcodes[0]);
            s.formerr += g(&w.rcodes[1]);
            s.servfail += g(&w.rcodes[2]);
            s.nxdomain += g(&w.rcodes[3]);
            s.notimp += g(&w.rcodes[4]);
            s.refused += g(&w.rcodes[5]);
            s.badvers += g(&w.rcodes[16]);
            s.other_rcode += w
                .rcodes
                .iter()
                .enumerate()
                .filter(|(i, _)| ![0, 1, 2, 3, 4, 5, 16].contains(i))
                .map(|(_, c)| g(c))
                .sum::<u64>();
        }
        s.dropped = s.dropped_short + s.dropped_response + s.dropped_oversize;
        s
    }
}
