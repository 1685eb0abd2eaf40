//! Per-packet cost of the XDP program (BPF_PROG_TEST_RUN, repeated) next to the userspace answer path for the same queries. Needs root.
//!
//! Usage: `cargo run --release -p benches --bin xdp-cost [REPEAT]` (default 1,000,000):
//! each case runs in five batches of REPEAT live frames; the median and best batch are
//! reported, since this machine is shared and noisy.

use std::hint::black_box;
use std::time::Instant;

use benches::query;
use dns_fastpath::respond::{Transport, respond};
use dns_fastpath::xdp::{FastPath, ProgramSettings, XDP_PASS, XDP_TX};
use dns_wire::RType;
use hwtests::frames::{self, Datagram};
use hwtests::{XDP_CONFIG, idle_table};
use popnet_config::Config;

fn main() {
    let repeat: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let cfg = Config::from_toml(XDP_CONFIG, "xdp-bench").expect("valid");
    let table = idle_table(&cfg);
    let settings = ProgramSettings {
        listen: cfg.pops[0].dns.as_ref().expect("dns").listen.clone(),
        udp_payload: cfg.dns.udp_payload,
        track_resolvers: false,
    };
    let fp = match FastPath::load(&settings, &table.catalog.views, &table) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("xdp-cost: {e}");
            std::process::exit(1);
        }
    };
    println!("# XDP program cost per packet (BPF_PROG_TEST_RUN)");
    println!();
    println!(
        "- date: {}",
        std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let uname = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "- machine: {model}, {} cores, kernel {uname}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("- command: cargo run --release -p benches --bin xdp-cost {repeat}");
    println!();
    println!(
        "| query | XDP action | XDP program ns/packet, median (best) | whole test run ns/packet | userspace respond() ns/query | program / userspace |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    const BATCHES: usize = 5;
    let batches = |frame: &[u8]| -> (f64, f64, f64, Option<u32>) {
        let mut p: Vec<f64> = Vec::new();
        let mut t: Vec<f64> = Vec::new();
        let mut v = None;
        for _ in 0..BATCHES {
            let c = fp.cost(frame, repeat).expect("live test run");
            p.push(c.program_ns);
            t.push(c.total_ns);
            v = c.verified_insns;
        }
        p.sort_by(f64::total_cmp);
        t.sort_by(f64::total_cmp);
        (p[BATCHES / 2], p[0], t[BATCHES / 2], v)
    };
    let src = "198.51.100.7".parse().unwrap();
    let dst = "192.0.2.1".parse().unwrap();
    let cases = [
        (
            "A, EDNS (typical resolver query)",
            query("www.shop.example", RType::A, true),
        ),
        ("A, no EDNS", query("www.shop.example", RType::A, false)),
        ("AAAA, EDNS", query("img.shop.example", RType::AAAA, true)),
        (
            "MX, EDNS (name compressed twice)",
            query("shop.example", RType::MX, true),
        ),
        (
            "A for a name the same in every view (second lookup)",
            query("mail.shop.example", RType::A, true),
        ),
        (
            "miss (NXDOMAIN): passed",
            query("nothing.shop.example", RType::A, true),
        ),
        (
            "miss (type not in the map): passed",
            query("www.shop.example", RType::SRV, true),
        ),
    ];
    let mut verified = None;
    // The floor: an empty program that returns XDP_TX, run on the typical query's frame
    // the same way (the statistic has to be on while it runs).
    let floor = benches::floor::EmptyXdp::load(XDP_TX).expect("loading an empty XDP program");
    let typical = frames::build(&Datagram::query(src, dst, 40000, cases[0].1.clone()));
    let (floor_med, floor_best, floor_total) = {
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF statistics");
        let mut p = Vec::new();
        let mut t = Vec::new();
        for _ in 0..BATCHES {
            let c = floor.cost(&typical, repeat).expect("live test run");
            p.push(c.program_ns);
            t.push(c.total_ns);
        }
        p.sort_by(f64::total_cmp);
        t.sort_by(f64::total_cmp);
        (p[BATCHES / 2], p[0], t[BATCHES / 2])
    };
    println!(
        "| (floor: an empty program, `r0 = XDP_TX; exit`, on the typical query) | TX | {floor_med:.0} ({floor_best:.0}) | {floor_total:.0} | - | - |"
    );
    let mut typical_med = None;
    // Baseline: a frame passed at the UDP port check, before any DNS parsing.
    let mut other = Datagram::query(src, dst, 40000, cases[0].1.clone());
    other.dport = 5353;
    let other = frames::build(&other);
    let (med, best, total, _) = batches(&other);
    println!(
        "| (not our port: passed before DNS parsing) | PASS | {med:.0} ({best:.0}) | {total:.0} | - | - |"
    );
    for (what, q) in cases {
        let frame = frames::build(&Datagram::query(src, dst, 40000, q.clone()));
        // The action on one run; the cost over `repeat` live runs on fresh copies.
        let run = fp.test_run(&frame, 1).expect("test run");
        let (med, best, total, v) = batches(&frame);
        verified = v;
        typical_med.get_or_insert(med);
        let action = match run.action {
            XDP_TX => "TX",
            XDP_PASS => "PASS",
            _ => "other",
        };
        let mut out = Vec::with_capacity(1232);
        let n = repeat.min(2_000_000);
        let t0 = Instant::now();
        for _ in 0..n {
            black_box(respond(
                &table,
                1232,
                black_box(&q),
                src,
                Transport::Udp,
                &mut out,
            ));
        }
        let user_ns = t0.elapsed().as_nanos() as f64 / f64::from(n);
        println!(
            "| {what} | {action} | {med:.0} ({best:.0}) | {total:.0} | {user_ns:.0} | {:.2} |",
            med / user_ns
        );
    }
    println!();
    if let Some(med) = typical_med {
        println!(
            "- typical A query with EDNS: {med:.0} ns median − {floor_med:.0} ns floor = **{:.0} ns of the program's own work** per answer",
            med - floor_med
        );
        println!();
    }
    println!(
        "The program column is the kernel's BPF run-time statistic per packet, over {BATCHES} batches of {repeat} live-frame runs, each run on a fresh copy of the frame (parse, lookups, checksum, rewrite). The test-run column adds frame setup and the transmit of XDP_TX frames (out of loopback, where they are dropped); for passed frames both columns include cold caches, since the stack takes each passed frame between runs. The userspace column is its answer path alone (parse, view, table, splice), without the socket calls around it. The floor row is a two-instruction program measured the same way: the statistic's own cost (two clock reads per run on this VM) plus the fresh frame, which no program goes under. The verifier walked {} instructions to load the program.",
        verified.map_or("?".to_string(), |v| v.to_string())
    );
}
