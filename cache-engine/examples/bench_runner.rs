//! Runs the cache or the demo origin alone, for peer benchmarks (`benches/cache-vs-nginx-varnish.sh`).
//!
//! `bench_runner origin ADDR` serves the demo origin on ADDR.
//! `bench_runner cache LISTEN ADMIN ORIGIN WORKERS` runs the cache of a one-POP network
//! whose customer `demo` serves `static.demo.example` from ORIGIN.
//! Both run until killed.

use std::net::SocketAddr;

use cache_engine::demo_origin::DemoOrigin;
use cache_engine::{CacheOptions, CacheServer};
use popnet_config::Config;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = |i: usize| -> SocketAddr {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match args.get(1).map(String::as_str) {
        Some("origin") => {
            let o = DemoOrigin::start(&[addr(2)]).unwrap_or_else(|e| {
                eprintln!("bench_runner: cannot start the origin: {e}");
                std::process::exit(1)
            });
            eprintln!("demo origin on {:?}", o.addrs);
            loop {
                std::thread::park();
            }
        }
        Some("cache") => {
            let (listen, admin, origin) = (addr(2), addr(3), addr(4));
            let workers: usize = args.get(5).and_then(|w| w.parse().ok()).unwrap_or(0);
            let text = popnet_config::DEMO_TOML
                .replace(
                    "addresses = [\"127.0.0.1\", \"::1\"]\nport = 8081",
                    &format!("addresses = [\"{}\"]\nport = {}", origin.ip(), origin.port()),
                )
                .replace(
                    "[[customers.origins]]\nname = \"origin-b\"\naddresses = [\"127.0.0.2\"]\nport = 8081\nregion = \"local\"\n",
                    "",
                )
                .replace("ram_bytes = 268_435_456", "ram_bytes = 1_073_741_824");
            let cfg = Config::from_toml(&text, "bench").unwrap_or_else(|e| {
                eprintln!("bench_runner: {e}");
                std::process::exit(1)
            });
            let s = CacheServer::start(
                &cfg,
                &CacheOptions {
                    listen: Some(vec![listen]),
                    admin: Some(admin),
                    workers: Some(workers),
                    ..CacheOptions::default()
                },
            )
            .unwrap_or_else(|e| {
                eprintln!("bench_runner: {e}");
                std::process::exit(1)
            });
            eprintln!(
                "cache on {:?} ({} workers), admin {}",
                s.listen, s.workers, s.admin
            );
            loop {
                std::thread::park();
            }
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: bench_runner origin ADDR | bench_runner cache LISTEN ADMIN ORIGIN WORKERS");
    std::process::exit(2)
}
