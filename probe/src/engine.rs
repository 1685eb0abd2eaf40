//! The service-probe scheduler: rounds of checks on a fixed interval, jittered per target, at most N checks open at once, one mio poll.
//!
//! Every target has a round every `interval`. Its first round starts at a fixed offset
//! into the interval computed from its id ([`jitter_offset`]: xxh3 of the id), so
//! targets are spread over the interval and keep their place across restarts. A round
//! checks every address of the target at once and passes when one of them passes (the
//! caches and clients fall over to the next address too); its figures are the fastest
//! passing address's.
//!
//! At most `max_concurrent` checks are open at any time; the others wait in FIFO order.
//! A check still waiting when its target's next round is due is dropped, and a round
//! whose checks were all dropped ends without a result ([`EngineStats::overrun`]): an
//! overloaded probe reports nothing (its figures go stale, i.e. unknown) rather than
//! calling healthy servers down. A round still running when the next one is due makes
//! that one skip ([`EngineStats::skipped`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use crate::check::{Attempt, CheckSpec, Outcome};
use crate::slab::Slab;

/// One thing to probe.
#[derive(Debug, Clone)]
pub struct EngineTarget {
    /// Server id in reports (a POP name or `customer/origin`).
    pub id: String,
    pub addrs: Vec<SocketAddr>,
    pub spec: CheckSpec,
}

/// How rounds run.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub max_concurrent: usize,
}

/// The end of one round of one target.
#[derive(Debug, Clone)]
pub struct RoundResult {
    /// Index of the target in the engine's list.
    pub target: usize,
    /// The fastest passing address's outcome, else the first failure.
    pub outcome: Outcome,
    /// When the round was due.
    pub due: Instant,
}

/// Counters of the scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineStats {
    pub rounds_started: u64,
    pub rounds_done: u64,
    /// Rounds not started because the previous one was still running.
    pub skipped: u64,
    /// Rounds that ended without a result: every check waited too long for a slot, or
    /// could not be started for a local reason (no socket).
    pub overrun: u64,
    pub checks_started: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub checks_timed_out: u64,
    /// Checks that could not start: no socket, no route (local, not the target's fault).
    pub local_errors: u64,
    /// Checks dropped from the queue because their round's time was up.
    pub dropped: u64,
    /// Most checks open at once so far.
    pub max_open: u64,
    pub open: u64,
}

/// Offset of a target's rounds into the interval: deterministic per id, spread uniformly.
pub fn jitter_offset(id: &str, interval: Duration) -> Duration {
    let us = interval.as_micros().max(1) as u64;
    Duration::from_micros(xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % us)
}

struct Round {
    due: Instant,
    pending: usize,
    best: Option<Outcome>,
    /// Some check produced a verdict about the target (not a local error or drop).
    judged: bool,
}

struct TargetRun {
    target: EngineTarget,
    next_due: Instant,
    round: Option<Round>,
}

struct Job {
    target: usize,
    addr: usize,
    not_after: Instant,
}

struct Running {
    target: usize,
    attempt: Attempt,
    deadline: Instant,
}

/// Rounds of checks over a fixed list of targets.
pub struct Engine {
    poll: Poll,
    events: Events,
    cfg: EngineConfig,
    targets: Vec<TargetRun>,
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    queue: VecDeque<Job>,
    running: Slab<Running>,
    deadlines: VecDeque<(Instant, Token)>,
    seed: u64,
    stats: EngineStats,
}

impl Engine {
    /// An engine whose first rounds are due at `start` + each target's jitter offset.
    pub fn new(
        targets: Vec<EngineTarget>,
        cfg: EngineConfig,
        start: Instant,
    ) -> io::Result<Engine> {
        let cfg = EngineConfig {
            max_concurrent: cfg.max_concurrent.max(1),
            ..cfg
        };
        let mut due = BinaryHeap::with_capacity(targets.len());
        let targets: Vec<TargetRun> = targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let at = start + jitter_offset(&t.id, cfg.interval);
                due.push(Reverse((at, i)));
                TargetRun {
                    target: t,
                    next_due: at,
                    round: None,
                }
            })
            .collect();
        Ok(Engine {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            cfg,
            targets,
            due,
            queue: VecDeque::new(),
            running: Slab::new(),
            deadlines: VecDeque::new(),
            seed: std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15,
            stats: EngineStats::default(),
        })
    }

    pub fn targets(&self) -> impl Iterator<Item = &EngineTarget> {
        self.targets.iter().map(|t| &t.target)
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            open: self.running.len() as u64,
            ..self.stats
        }
    }

    /// Runs due rounds and open checks until `until` or until one poll returned;
    /// finished rounds are appended to `out`.
    pub fn turn(&mut self, until: Instant, out: &mut Vec<RoundResult>) -> io::Result<()> {
        let now = Instant::now();
        self.start_due(now);
        self.launch(now, out);
        let mut wake = until;
        if let Some(Reverse((at, _))) = self.due.peek() {
            wake = wake.min(*at);
        }
        if let Some((at, _)) = self.deadlines.front() {
            wake = wake.min(*at);
        }
        if !self.queue.is_empty() && self.running.len() < self.cfg.max_concurrent {
            wake = now;
        }
        let timeout = wake.saturating_duration_since(now);
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let tokens: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
        for t in tokens {
            let Some(r) = self.running.get_mut(t) else {
                continue;
            };
            let spec = &self.targets[r.target].target.spec;
            if let Some(o) = r.attempt.advance(spec) {
                self.finish(t, Some(o), out);
            }
        }
        let now = Instant::now();
        while let Some(&(at, t)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(r) = self.running.get_mut(t)
                && r.deadline == at
            {
                let spec = &self.targets[r.target].target.spec;
                let o = r.attempt.timed_out(spec);
                self.stats.checks_timed_out += 1;
                self.finish(t, Some(o), out);
            }
        }
        self.launch(now, out);
        Ok(())
    }

    fn start_due(&mut self, now: Instant) {
        let interval = self.cfg.interval;
        while let Some(&Reverse((at, i))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            let t = &mut self.targets[i];
            // The next round keeps the target's place in the interval; rounds missed
            // while the loop was held up count as skipped.
            let mut next = at + interval;
            while next <= now {
                next += interval;
                self.stats.skipped += 1;
            }
            t.next_due = next;
            self.due.push(Reverse((next, i)));
            if t.round.is_some() {
                self.stats.skipped += 1;
                continue;
            }
            self.stats.rounds_started += 1;
            t.round = Some(Round {
                due: at,
                pending: t.target.addrs.len(),
                best: None,
                judged: false,
            });
            for a in 0..t.target.addrs.len() {
                self.queue.push_back(Job {
                    target: i,
                    addr: a,
                    not_after: next,
                });
            }
        }
    }

    fn launch(&mut self, now: Instant, out: &mut Vec<RoundResult>) {
        while self.running.len() < self.cfg.max_concurrent {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            if job.not_after <= now {
                self.stats.dropped += 1;
                self.settle(job.target, None, out);
                continue;
            }
            let token = self.running.vacant_token();
            let t = &self.targets[job.target].target;
            let addr = t.addrs[job.addr];
            self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            self.stats.checks_started += 1;
            match Attempt::start(addr, &t.spec, self.seed, self.poll.registry(), token) {
                Ok(Ok(attempt)) => {
                    let deadline = Instant::now() + self.cfg.timeout;
                    let got = self.running.insert(Running {
                        target: job.target,
                        attempt,
                        deadline,
                    });
                    debug_assert_eq!(got, token);
                    self.deadlines.push_back((deadline, token));
                    self.stats.max_open = self.stats.max_open.max(self.running.len() as u64);
                }
                Ok(Err(outcome)) => self.record(job.target, outcome, out),
                Err(e) => {
                    tracing::debug!(target_id = %t.id, %addr, error = %e, "probe: cannot start a check");
                    self.stats.local_errors += 1;
                    self.settle(job.target, None, out);
                }
            }
        }
    }

    fn finish(&mut self, t: Token, o: Option<Outcome>, out: &mut Vec<RoundResult>) {
        if let Some(mut r) = self.running.remove(t) {
            r.attempt.deregister(self.poll.registry());
            match o {
                Some(o) => self.record(r.target, o, out),
                None => self.settle(r.target, None, out),
            }
        }
    }

    fn record(&mut self, target: usize, o: Outcome, out: &mut Vec<RoundResult>) {
        if o.passed() {
            self.stats.checks_passed += 1;
        } else {
            self.stats.checks_failed += 1;
        }
        self.settle(target, Some(o), out);
    }

    /// One check of `target`'s round is over (`None`: it produced no verdict).
    fn settle(&mut self, target: usize, o: Option<Outcome>, out: &mut Vec<RoundResult>) {
        let t = &mut self.targets[target];
        let Some(round) = t.round.as_mut() else {
            return;
        };
        if let Some(o) = o {
            round.judged = true;
            let better = match &round.best {
                None => true,
                Some(b) => match (o.passed(), b.passed()) {
                    (true, false) => true,
                    (true, true) => o.total < b.total,
                    _ => false,
                },
            };
            if better {
                round.best = Some(o);
            }
        }
        round.pending -= 1;
        if round.pending > 0 {
            return;
        }
        let round = t.round.take().expect("the round is there");
        match (round.judged, round.best) {
            (true, Some(outcome)) => {
                self.stats.rounds_done += 1;
                out.push(RoundResult {
                    target,
                    outcome,
                    due: round.due,
                });
            }
            _ => self.stats.overrun += 1,
        }
    }
}
