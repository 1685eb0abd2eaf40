//! Failover time: from a POP cache's death (SIGKILL) to the last DNS answer that still points at it, in the three-POP namespace lab with real probes, over N trials.
//!
//! Run as root: `cargo run --release -p benches --bin failover -- [TRIALS]` (default 20).
//! The resolver asks for the static name every 10 ms over UDP; a trial's figure is the
//! time from the kill to the arrival of the last answer naming the dead POP. Between
//! trials the cache is restarted and the answer allowed to come back (after
//! `probes.recovery`). The probe interval is 1 s, so the figures also read as intervals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hwtests::poplab::{INTERVAL, POPS, PopLab, answer_addrs, query};

const NAME: &str = "img.shop.example";

fn main() {
    let trials: usize = std::env::args()
        .nth(1)
        .map(|a| {
            a.parse()
                .unwrap_or_else(|_| panic!("TRIALS must be a number, not {a:?}"))
        })
        .unwrap_or(20);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("failover: needs root (network namespaces); run it with sudo");
        std::process::exit(2);
    }
    print_header(trials);
    let mut lab = PopLab::start([40, 10, 25]);
    let nearest = POPS[1].1; // pop-b: 10 ms one way
    let ok = lab.wait_until(Duration::from_secs(30), |l| {
        l.dig(NAME) == [nearest.to_string()]
    });
    assert!(ok.is_some(), "the lab never settled on pop-b");

    let mut figures = Vec::new();
    let mut void = 0;
    let mut trial = 0;
    while figures.len() < trials {
        trial += 1;
        if trial > trials * 2 {
            eprintln!(
                "failover: {void} of {trial} trials void (the answer was not pop-b at the kill); giving up"
            );
            std::process::exit(1);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sock = lab.resolver_socket();
        let s2 = stop.clone();
        // Every answer, timed: (when it arrived, whether it named pop-b).
        let querier = std::thread::spawn(move || {
            let mut answers: Vec<(Instant, bool)> = Vec::new();
            let mut id = 0u16;
            let mut buf = [0u8; 1500];
            while !s2.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                let _ = sock.send(&query(id, NAME));
                let sent = Instant::now();
                while sent.elapsed() < Duration::from_millis(300) {
                    let Ok(n) = sock.recv(&mut buf) else { break };
                    let Some(addrs) = answer_addrs(&buf[..n], id) else {
                        continue; // a late answer to an earlier query
                    };
                    if !addrs.is_empty() {
                        answers.push((Instant::now(), addrs.contains(&nearest)));
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            answers
        });
        std::thread::sleep(Duration::from_millis(500));
        let killed = lab.kill_cache("pop-b");
        std::thread::sleep(INTERVAL * 5);
        stop.store(true, Ordering::Relaxed);
        let answers = querier.join().expect("querier");
        // A trial counts only if the answer just before the kill named pop-b (after a
        // restart the selector may still be settling on it).
        let before = answers.iter().rev().find(|(t, _)| *t <= killed);
        if !matches!(before, Some((_, true))) {
            void += 1;
            println!("trial {trial:>2}: void (the answer before the kill did not name pop-b)");
        } else {
            let after = |t: &Instant| t.saturating_duration_since(killed);
            let last = answers
                .iter()
                .filter(|(t, with)| *with && *t > killed)
                .map(|(t, _)| after(t))
                .max()
                .unwrap_or(Duration::ZERO);
            let moved = answers
                .iter()
                .find(|(t, with)| !*with && *t > killed)
                .map(|(t, _)| after(t));
            println!(
                "trial {trial:>2}: last answer naming the dead cache {:>7.1} ms after the kill; first answer without it {}",
                last.as_secs_f64() * 1000.0,
                moved.map_or("never".to_string(), |m| format!(
                    "{:.1} ms",
                    m.as_secs_f64() * 1000.0
                ))
            );
            figures.push(last);
        }
        lab.start_cache("pop-b");
        let back = lab.wait_until(Duration::from_secs(30), |l| {
            l.dig(NAME) == [nearest.to_string()]
        });
        assert!(
            back.is_some(),
            "pop-b did not come back after trial {trial}"
        );
    }
    if void > 0 {
        println!("({void} void trials repeated)");
    }
    figures.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = figures[figures.len() / 2];
    let worst = *figures.last().expect("at least one trial");
    println!();
    println!(
        "failover over {trials} trials: median {:.0} ms ({:.2} probe intervals), worst {:.0} ms ({:.2} intervals), best {:.0} ms",
        ms(median),
        median.as_secs_f64() / INTERVAL.as_secs_f64(),
        ms(worst),
        worst.as_secs_f64() / INTERVAL.as_secs_f64(),
        ms(figures[0])
    );
}

fn print_header(trials: usize) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("# failover benchmark");
    println!("machine: {cpu}, {cores} cores, Linux {}", kernel.trim());
    println!("date:    {date}");
    println!("command: cargo run --release -p benches --bin failover -- {trials}   (as root)");
    println!(
        "lab:     3 POPs (one-way delays 40/10/25 ms), resolver, 2 origins in namespaces; probe interval {} ms, 2 failed rounds = down; a kill of pop-b's cache (SIGKILL) per trial",
        INTERVAL.as_millis()
    );
    println!();
}
