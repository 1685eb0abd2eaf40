//! Three POPs, a resolver and two origins in namespaces with real delays between them; real `popnet dns`, `cache` and `probe` processes; the answers the resolver gets follow what the probes measure.
//!
//! One test walks through every scenario on one lab, in order (a lab takes seconds to
//! settle, and the scenarios need its processes in a known state).

use std::time::{Duration, Instant};

use hwtests::poplab::{INTERVAL, POPS, PopLab};
use hwtests::privileged;

const POP_A: &str = "192.0.2.10";
const POP_B: &str = "192.0.2.20";
const POP_C: &str = "192.0.2.30";
const ORIGIN_X: &str = "203.0.113.10";
const ORIGIN_Y: &str = "203.0.113.20";

fn img(lab: &PopLab) -> Vec<String> {
    lab.dig("img.shop.example")
}

fn www(lab: &PopLab) -> Vec<String> {
    lab.dig("www.shop.example")
}

/// The resolver's entry in `/resolvers`.
fn resolver(lab: &PopLab) -> Option<serde_json::Value> {
    let v = lab.admin_json("/resolvers");
    v["resolvers"]
        .as_array()?
        .iter()
        .find(|r| r["address"] == "198.51.100.53")
        .cloned()
}

fn rtt_ms(r: &serde_json::Value, pop: &str) -> Option<f64> {
    r["rtt"]
        .as_array()?
        .iter()
        .find(|m| m["pop"] == pop)?
        .get("ms")?
        .as_f64()
}

fn server<'v>(servers: &'v serde_json::Value, id: &str) -> &'v serde_json::Value {
    servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no server {id} in {servers}"))
}

/// Polls the answer for `name` until it is not `from`, for up to `limit`; the time from
/// `since` to the first answer without it.
fn moved_away(
    lab: &PopLab,
    name: &str,
    from: &str,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    while since.elapsed() < limit {
        let a = lab.dig(name);
        if !a.is_empty() && !a.iter().any(|x| x == from) {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn answers_follow_latency_load_and_health_measured_by_real_probes() {
    if !privileged("answers_follow_latency_load_and_health_measured_by_real_probes") {
        return;
    }
    // One-way delays: a 40 ms, b 10 ms, c 25 ms. Round trips to the resolver: 80, 20, 50.
    let mut lab = PopLab::start([40, 10, 25]);
    let diag = |lab: &PopLab| {
        format!(
            "selections: {}\nresolvers: {}\nservers: {}\ndns log:\n{}",
            lab.admin("/selections").unwrap_or_default(),
            lab.admin("/resolvers").unwrap_or_default(),
            lab.admin("/servers").unwrap_or_default(),
            lab.log("dns.log")
        )
    };

    // 1. Latency: the resolver is measured from every POP and gets the nearest one.
    let first = img(&lab);
    assert_eq!(first.len(), 1, "img answered before any figures: {first:?}");
    let placed = lab.wait_until(Duration::from_secs(20), |l| img(l) == [POP_B]);
    assert!(
        placed.is_some(),
        "the resolver never got the nearest POP\n{}",
        diag(&lab)
    );
    let r = resolver(&lab).expect("the resolver is tracked");
    assert_eq!(r["near_view"], "near:pop-b", "{r}");
    for (pop, want) in [("pop-a", 80.0), ("pop-b", 20.0), ("pop-c", 50.0)] {
        let got = rtt_ms(&r, pop).unwrap_or_else(|| panic!("no {pop} round trip: {r}"));
        assert!(
            got >= want - 1.0 && got < want + 40.0,
            "{pop}: measured {got} ms, the link gives {want} ms: {r}"
        );
    }

    // 2. Killing the nearest POP's cache moves the answer within two probe intervals.
    let killed = lab.kill_cache("pop-b");
    let took = moved_away(&lab, "img.shop.example", POP_B, killed, INTERVAL * 6)
        .unwrap_or_else(|| panic!("the answer stayed on a dead cache\n{}", diag(&lab)));
    assert_eq!(img(&lab), [POP_C], "the next nearest POP takes over");
    assert!(
        took <= INTERVAL * 2 + Duration::from_millis(300),
        "failover took {took:?}, more than two probe intervals"
    );
    // Back: it returns once up for probes.recovery, not before.
    lab.start_cache("pop-b");
    let restarted = Instant::now();
    assert!(
        lab.wait_until(Duration::from_secs(15), |l| img(l) == [POP_B])
            .is_some(),
        "the restarted cache never came back\n{}",
        diag(&lab)
    );
    // Held out for probes.recovery (2 s) after the last failed round, which came at most
    // one interval before the restart.
    let back = restarted.elapsed();
    assert!(
        back >= Duration::from_secs(2) - INTERVAL,
        "back {back:?} after the restart, inside the recovery time"
    );

    // 3. Raising the nearest POP's load (its cache's connections near the limit) moves
    // the answer within two probe intervals; releasing it brings it back.
    let loaded = Instant::now();
    let conns = lab.hold_connections("pop-b", hwtests::poplab::CACHE_MAX_CONNECTIONS - 2);
    let took = moved_away(&lab, "img.shop.example", POP_B, loaded, INTERVAL * 6)
        .unwrap_or_else(|| panic!("load did not move the answer\n{}", diag(&lab)));
    assert_eq!(img(&lab), [POP_C]);
    assert!(
        took <= INTERVAL * 2 + Duration::from_millis(300),
        "moving off a loaded POP took {took:?}"
    );
    // What moved it: pop-b's reported load, 38 of 40 connections.
    let mut b_load = 0.0;
    lab.wait_until(INTERVAL * 3, |l| {
        b_load = server(&l.admin_json("/servers"), "pop-b")["load"]["value"]
            .as_f64()
            .unwrap_or(0.0);
        b_load >= 0.9
    });
    assert!(b_load >= 0.9, "pop-b load {b_load}\n{}", diag(&lab));
    drop(conns);
    assert!(
        lab.wait_until(Duration::from_secs(10), |l| img(l) == [POP_B])
            .is_some(),
        "the answer did not return once the load fell\n{}",
        diag(&lab)
    );

    // 4. A dynamic name moves between the origins as their load (response time) changes.
    lab.origins[0].set_delay(600);
    lab.origins[1].set_delay(0);
    assert!(
        lab.wait_until(Duration::from_secs(10), |l| www(l) == [ORIGIN_Y])
            .is_some(),
        "www did not move to the lighter origin y\n{}",
        diag(&lab)
    );
    lab.origins[0].set_delay(0);
    lab.origins[1].set_delay(600);
    assert!(
        lab.wait_until(Duration::from_secs(10), |l| www(l) == [ORIGIN_X])
            .is_some(),
        "www did not move to origin x once y was loaded\n{}",
        diag(&lab)
    );
    lab.origins[1].set_delay(0);

    // 5. A probe killed and restarted resumes: its reports (a new process, sequence
    // from 0) are taken again, and its latency figures are fresh again.
    let before = lab.admin_json("/stats")["reports"].clone();
    lab.kill_probe("pop-c");
    std::thread::sleep(Duration::from_secs(4)); // past stale_after (3 s)
    let servers = lab.admin_json("/servers");
    assert!(
        server(&servers, "pop-c")["load"].is_null(),
        "pop-c's load (only its own probe reports it) is stale: {servers}"
    );
    lab.start_probe("pop-c");
    assert!(
        lab.wait_until(Duration::from_secs(10), |l| {
            !server(&l.admin_json("/servers"), "pop-c")["load"].is_null()
        })
        .is_some(),
        "the restarted probe's reports were not taken\n{}",
        diag(&lab)
    );
    let after = lab.admin_json("/stats")["reports"].clone();
    assert_eq!(
        after["replayed"], before["replayed"],
        "a restarted probe's reports were refused as replays"
    );
    // Its latency responder answers again: the resolver's pop-c figure is refreshed.
    assert!(
        lab.wait_until(Duration::from_secs(10), |l| {
            let _ = img(l); // a resolver is measured while it keeps asking
            resolver(l).is_some_and(|r| {
                r["rtt"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["pop"] == "pop-c" && m["age_s"].as_u64().is_some_and(|a| a <= 2))
            })
        })
        .is_some(),
        "no fresh pop-c latency after the restart\n{}",
        diag(&lab)
    );
    assert_eq!(img(&lab), [POP_B]);
    let _ = (POP_A, POPS);
}
