//! Micro-benchmarks of the DNS hot path: query parsing, answering from the table, and the slow path.

use std::hint::black_box;
use std::net::IpAddr;

use benches::{idle_table, query};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dns_fastpath::respond::{Transport, respond};
use dns_wire::{QueryView, RType};
use popnet_config::Config;

fn dns(c: &mut Criterion) {
    let cfg = Config::demo();
    let table = idle_table(&cfg);
    let src: IpAddr = [127, 0, 0, 1].into();
    let mut out = Vec::with_capacity(1232);

    let cases = [
        ("balanced_a_edns", query("www.demo.example", RType::A, true)),
        (
            "balanced_a_plain",
            query("WwW.DeMo.ExAmPlE", RType::A, false),
        ),
        (
            "static_aaaa_edns",
            query("static.demo.example", RType::AAAA, true),
        ),
        (
            "cname_chain_edns",
            query("images.demo.example", RType::A, true),
        ),
        (
            "nxdomain_edns",
            query("nothing-here.demo.example", RType::A, true),
        ),
        ("refused_edns", query("www.example.com", RType::A, true)),
    ];
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("query_view_a_edns", |b| {
        b.iter(|| QueryView::parse(black_box(&cases[0].1)).map(|q| q.qtype()))
    });
    g.finish();

    let mut g = c.benchmark_group("respond");
    g.throughput(Throughput::Elements(1));
    for (name, q) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| respond(&table, 1232, black_box(q), src, Transport::Udp, &mut out))
        });
    }
    g.finish();

    let three = Config::from_toml(include_str!("../../examples/three-pop.toml"), "three-pop")
        .expect("valid");
    c.bench_function("answer_table_build/three_pop", |b| {
        b.iter(|| idle_table(black_box(&three)).len())
    });
}

criterion_group!(benches, dns);
criterion_main!(benches);
