//! The selector through real clients: metric reports sent over UDP move the answers dig sees.

mod common;

use std::time::{Duration, Instant};

use common::{Server, health, latency, load, now_ms, test_config};
use probe::report::Entry;

const EAST: &str = "203.0.113.10";
const WEST: &str = "203.0.113.20";

fn server() -> Server {
    Server::start(&test_config())
}

/// The A answers for `name` asked from resolver address `from`.
fn a_from(s: &Server, from: &str, name: &str) -> Vec<String> {
    s.dig(&["-b", from, name, "A"])
        .answer
        .iter()
        .map(|r| r.data.clone())
        .collect()
}

fn www(s: &Server) -> Vec<String> {
    a_from(s, "127.0.0.1", "www.shop.example")
}

/// Load and east-view latency of both origins in one report.
fn figures(east_load: f32, west_load: f32, east_ms: f32, west_ms: f32) -> Vec<Entry> {
    let mut e = load("shop/east", east_load);
    e.latency_ms = vec![("east".into(), east_ms)];
    let mut w = load("shop/west", west_load);
    w.latency_ms = vec![("east".into(), west_ms)];
    vec![e, w]
}

#[test]
fn the_view_comes_from_the_resolver_address() {
    let s = server();
    assert_eq!(a_from(&s, "127.0.0.1", "www.shop.example"), [EAST]);
    assert_eq!(a_from(&s, "127.0.0.200", "www.shop.example"), [WEST]);
    assert_eq!(a_from(&s, "127.0.0.1", "img.shop.example"), ["192.0.2.1"]);
    assert_eq!(a_from(&s, "127.0.0.200", "img.shop.example"), ["192.0.2.2"]);
}

#[test]
fn the_answer_moves_to_the_least_loaded_server() {
    let mut s = server();
    assert_eq!(www(&s), [EAST]);
    s.report(figures(0.9, 0.1, 10.0, 10.0));
    let took = s.wait_until(Duration::from_secs(2), || www(&s) == [WEST]);
    assert!(took.is_some(), "answer did not move to the lighter origin");
    // Load back the other way: it returns.
    s.report(figures(0.1, 0.9, 10.0, 10.0));
    assert!(
        s.wait_until(Duration::from_secs(2), || www(&s) == [EAST])
            .is_some()
    );
}

#[test]
fn the_answer_moves_to_the_lowest_latency_server() {
    let mut s = server();
    assert_eq!(www(&s), [EAST]);
    s.report(figures(0.5, 0.5, 90.0, 5.0));
    assert!(
        s.wait_until(Duration::from_secs(2), || www(&s) == [WEST])
            .is_some()
    );
    // The west view measured nothing: it keeps its own region's origin.
    assert_eq!(a_from(&s, "127.0.0.200", "www.shop.example"), [WEST]);
}

#[test]
fn stale_figures_stop_counting() {
    let mut s = server();
    assert_eq!(www(&s), [EAST]);
    // Figures measured longer ago than stale_after (2 s) are refused on arrival.
    let old = now_ms() - 5_000;
    let mut e = figures(0.9, 0.0, 10.0, 10.0);
    for x in &mut e {
        x.measured_at_ms = old;
    }
    s.report(e);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(www(&s), [EAST], "stale figures moved the answer");
    assert_eq!(s.admin_json("/stats")["reports"]["stale_entries"], 2);

    // Fresh figures move it; once west's figures age out it moves back, while east's
    // stay fresh.
    s.report(figures(0.6, 0.0, 10.0, 10.0));
    assert!(
        s.wait_until(Duration::from_secs(2), || www(&s) == [WEST])
            .is_some()
    );
    let west_reported = Instant::now();
    let mut back = None;
    while west_reported.elapsed() < Duration::from_secs(6) {
        let mut e = load("shop/east", 0.6);
        e.latency_ms = vec![("east".into(), 10.0)];
        s.report(vec![e]);
        if www(&s) == [EAST] {
            back = Some(west_reported.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let back = back.expect("the answer never left the origin whose figures went stale");
    assert!(
        back >= Duration::from_millis(1_500),
        "moved back after {back:?}, before west's figures were stale"
    );
    let servers = s.admin_json("/servers");
    let west = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "shop/west")
        .unwrap();
    assert!(west["load"].is_null(), "stale load still shown: {west}");
}

#[test]
fn a_report_with_a_wrong_hmac_is_ignored_and_counted() {
    let mut s = server();
    assert_eq!(www(&s), [EAST]);
    s.report_with_key(
        vec![health("shop/east", false)],
        b"an attacker's key, not ours....",
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(www(&s), [EAST]);
    let st = s.admin_json("/stats");
    assert_eq!(st["reports"]["bad_mac"], 1);
    assert_eq!(st["reports"]["accepted"], 0);
    // popctl shows the same counter.
    let out = std::process::Command::new(common::popctl_bin())
        .args(["--admin", &s.admin.to_string(), "dns", "stats", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reports"]["bad_mac"], 1);
    // A correctly signed report is taken.
    s.report(vec![health("shop/east", false)]);
    assert!(
        s.wait_until(Duration::from_secs(2), || www(&s) == [WEST])
            .is_some()
    );
}

#[test]
fn persistence_holds_inside_the_window_and_ends_when_the_server_fails() {
    let mut s = server();
    let sticky = |s: &Server| a_from(s, "127.0.0.1", "sticky.shop.example");
    assert_eq!(sticky(&s), [EAST]);
    s.report(figures(0.95, 0.0, 10.0, 10.0));
    // www (no persistence) moves; sticky (60 s) does not.
    assert!(
        s.wait_until(Duration::from_secs(2), || www(&s) == [WEST])
            .is_some()
    );
    for _ in 0..5 {
        assert_eq!(sticky(&s), [EAST]);
        std::thread::sleep(Duration::from_millis(100));
    }
    s.report(vec![health("shop/east", false)]);
    assert!(
        s.wait_until(Duration::from_secs(2), || sticky(&s) == [WEST])
            .is_some(),
        "persistence outlived a failed server"
    );
}

#[test]
fn down_servers_are_not_handed_out_and_come_back_with_hysteresis() {
    let mut s = server();
    let pair = |s: &Server| a_from(s, "127.0.0.1", "pair.shop.example");
    assert_eq!(pair(&s), [EAST, WEST], "answers = 2");
    s.report(vec![health("shop/east", false), health("shop/west", true)]);
    assert!(
        s.wait_until(Duration::from_secs(2), || www(&s) == [WEST])
            .is_some()
    );
    assert_eq!(
        pair(&s),
        [WEST],
        "a down server is left out even when two answers are wanted"
    );
    // Back up: held out for the recovery time (1 s), then returns.
    s.report(vec![health("shop/east", true), health("shop/west", true)]);
    let up = Instant::now();
    let back = s
        .wait_until(Duration::from_secs(4), || www(&s) == [EAST])
        .expect("never came back");
    assert!(
        up.elapsed() >= Duration::from_millis(900),
        "came back after {back:?}, inside the recovery time"
    );
}

#[test]
fn an_origin_answers_a_static_name_only_when_it_beats_every_pop() {
    let mut s = server();
    let img = |s: &Server| a_from(s, "127.0.0.1", "img.shop.example");
    assert_eq!(img(&s), ["192.0.2.1"]);
    // The origin merely as light as the POP does not win.
    s.report(vec![load("pop-east", 0.3), load("shop/east", 0.3)]);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(img(&s), ["192.0.2.1"]);
    s.report(vec![
        load("pop-east", 0.95),
        load("pop-west", 0.95),
        load("shop/east", 0.0),
    ]);
    assert!(
        s.wait_until(Duration::from_secs(2), || img(&s) == [EAST])
            .is_some()
    );
    // The CNAME to it follows.
    let c = s.dig(&["-b", "127.0.0.1", "static.shop.example", "A"]);
    assert_eq!(c.answer.last().unwrap().data, EAST);
}

#[test]
fn popctl_shows_selections_and_figures() {
    let mut s = server();
    s.report(vec![
        latency("shop/west", "east", 12.5),
        load("shop/west", 0.25),
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::popctl_bin())
            .args(["--admin", &s.admin.to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let sel = run(&["dns", "selections"]);
    assert!(
        sel.lines().any(|l| l.starts_with("www.shop.example.")
            && l.contains("east")
            && l.contains("shop/east")),
        "{sel}"
    );
    let m = run(&["metrics"]);
    let west = m.lines().find(|l| l.starts_with("shop/west")).expect(&m);
    assert!(
        west.contains("0.250") && west.contains("east 12.500ms"),
        "{west}"
    );
    let j: serde_json::Value = serde_json::from_str(&run(&["metrics", "--json"])).unwrap();
    assert!(
        j.as_array()
            .unwrap()
            .iter()
            .any(|v| v["id"] == "shop/west" && v["load"]["value"] == 0.25)
    );
}
