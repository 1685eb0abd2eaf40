//! The scheduler against loopback servers: jitter spreads first probes over the interval, the concurrency bound holds, rounds repeat, time out and pick the best address.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use probe::check::{CheckSpec, HttpCheck};
use probe::engine::{Engine, EngineConfig, EngineTarget, RoundResult, jitter_offset};
use support::{Reply, closed_port, full_backlog, http_server};

fn run(engine: &mut Engine, for_: Duration) -> Vec<RoundResult> {
    let end = Instant::now() + for_;
    let mut out = Vec::new();
    while Instant::now() < end {
        engine.turn(end, &mut out).unwrap();
    }
    out
}

fn tcp(id: &str, addrs: Vec<SocketAddr>) -> EngineTarget {
    EngineTarget {
        id: id.into(),
        addrs,
        spec: CheckSpec::Tcp { refused_ok: false },
    }
}

#[test]
fn jitter_spreads_first_probes_over_the_interval_deterministically() {
    let interval = Duration::from_millis(1000);
    // Twenty targets, each with its own server, so a server's first connection is its
    // target's first probe.
    let servers: Vec<_> = (0..20).map(|_| http_server(Reply::ok("x"))).collect();
    let ids: Vec<String> = (0..20).map(|i| format!("customer/origin-{i}")).collect();
    let offsets: Vec<Duration> = ids.iter().map(|id| jitter_offset(id, interval)).collect();
    assert_eq!(
        offsets,
        ids.iter()
            .map(|id| jitter_offset(id, interval))
            .collect::<Vec<_>>()
    );
    let targets = ids
        .iter()
        .zip(&servers)
        .map(|(id, s)| tcp(id, vec![s.addr]))
        .collect();
    let start = Instant::now();
    let mut e = Engine::new(
        targets,
        EngineConfig {
            interval,
            timeout: Duration::from_millis(500),
            max_concurrent: 64,
        },
        start,
    )
    .unwrap();
    run(&mut e, Duration::from_millis(1500));
    let firsts: Vec<Duration> = servers
        .iter()
        .map(|s| {
            let at = *s.accepted.lock().unwrap().first().expect("probed");
            at.duration_since(start)
        })
        .collect();
    // Each first probe came at its target's offset (up to 400 ms late on a busy box)...
    for (i, (got, want)) in firsts.iter().zip(&offsets).enumerate() {
        let diff = got.as_millis() as i64 - want.as_millis() as i64;
        assert!(
            (-5..400).contains(&diff),
            "target {i}: at {got:?}, offset {want:?}"
        );
    }
    // ...and the offsets cover the interval: at least 6 of its 10 tenths are used.
    let mut tenths: Vec<u128> = offsets.iter().map(|o| o.as_millis() / 100).collect();
    tenths.sort();
    tenths.dedup();
    assert!(tenths.len() >= 6, "{offsets:?}");
    let spread = firsts
        .iter()
        .max()
        .unwrap()
        .saturating_sub(*firsts.iter().min().unwrap());
    assert!(spread >= Duration::from_millis(500), "{firsts:?}");
}

#[test]
fn at_most_max_concurrent_checks_are_open() {
    // Each HTTP check takes 600 ms; twelve targets spread over one second would overlap
    // about seven deep without the bound.
    let srv = http_server(Reply {
        delay: Duration::from_millis(600),
        ..Reply::ok("slow")
    });
    let targets = (0..12)
        .map(|i| EngineTarget {
            id: format!("t{i}"),
            addrs: vec![srv.addr],
            spec: CheckSpec::Http(HttpCheck::get("/")),
        })
        .collect();
    let mut e = Engine::new(
        targets,
        EngineConfig {
            interval: Duration::from_millis(1000),
            timeout: Duration::from_secs(3),
            max_concurrent: 3,
        },
        Instant::now(),
    )
    .unwrap();
    let out = run(&mut e, Duration::from_millis(2500));
    assert_eq!(
        srv.max_open.load(Ordering::SeqCst),
        3,
        "the bound is what limits"
    );
    let s = e.stats();
    assert!(s.max_open <= 3, "{s:?}");
    assert!(out.iter().all(|r| r.outcome.passed()));
    assert!(out.len() >= 4, "{} rounds done: {s:?}", out.len());
    let seen = srv.requests().len() as u64;
    assert!(
        seen <= s.checks_started && seen + s.open >= s.checks_started,
        "{seen} {s:?}"
    );
}

#[test]
fn rounds_repeat_every_interval_and_fail_on_timeouts() {
    let up = http_server(Reply::ok("up"));
    let (_held, blackhole) = full_backlog();
    let mut e = Engine::new(
        vec![tcp("up", vec![up.addr]), tcp("hole", vec![blackhole])],
        EngineConfig {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(150),
            max_concurrent: 8,
        },
        Instant::now(),
    )
    .unwrap();
    let out = run(&mut e, Duration::from_millis(1050));
    let ups: Vec<_> = out.iter().filter(|r| r.target == 0).collect();
    let holes: Vec<_> = out.iter().filter(|r| r.target == 1).collect();
    assert!((4..=6).contains(&ups.len()), "{} rounds", ups.len());
    assert!(ups.iter().all(|r| r.outcome.passed()));
    assert!(holes.len() >= 4, "{} rounds", holes.len());
    for r in &holes {
        let e = r.outcome.result.clone().unwrap_err();
        assert!(e.contains("connect timed out"), "{e}");
    }
    // Rounds are due one interval apart.
    for w in ups.windows(2) {
        assert_eq!(w[1].due - w[0].due, Duration::from_millis(200));
    }
    assert!(e.stats().checks_timed_out >= 4);
}

#[test]
fn a_round_passes_when_one_address_does() {
    let up = http_server(Reply::ok("up"));
    let mut e = Engine::new(
        vec![
            tcp("one-dead", vec![closed_port(), up.addr]),
            tcp("all-dead", vec![closed_port(), closed_port()]),
        ],
        EngineConfig {
            interval: Duration::from_millis(300),
            timeout: Duration::from_millis(200),
            max_concurrent: 8,
        },
        Instant::now(),
    )
    .unwrap();
    let out = run(&mut e, Duration::from_millis(350));
    let one = out.iter().find(|r| r.target == 0).expect("a round");
    assert!(one.outcome.passed(), "{one:?}");
    let all = out.iter().find(|r| r.target == 1).expect("a round");
    assert!(!all.outcome.passed());
}
