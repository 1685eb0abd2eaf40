//! Shared inputs of popnet's benchmarks: the configs and queries they run against.

pub mod floor;

use std::sync::Arc;

use dns_fastpath::answer::AnswerTable;
use dns_fastpath::catalog::Catalog;
use dns_fastpath::selector::Selector;
use dns_wire::{Edns, Message, Name, Question, RClass, RType};
use popnet_config::Config;

/// The answer table of `cfg` with every selection made on an idle network.
pub fn idle_table(cfg: &Config) -> AnswerTable {
    let cat = Arc::new(Catalog::compile(cfg).expect("config compiles"));
    let key = cfg.probes.report_key.as_bytes();
    let metrics = dns_fastpath::metrics::MetricsTable::new(
        key,
        5_000,
        cat.servers.iter().map(|s| s.id.clone()),
        Vec::new(),
    );
    let mut sel = Selector::new(&cat, cfg.probes.recovery);
    sel.reselect(
        &cat,
        &metrics,
        std::time::Instant::now(),
        dns_fastpath::metrics::unix_ms(),
    );
    AnswerTable::build(cat, sel.selections().clone(), Default::default(), 1)
}

/// A query as a resolver sends it: RD clear, EDNS with a 1232-byte payload.
pub fn query(name: &str, qtype: RType, edns: bool) -> Vec<u8> {
    let mut m = Message::default();
    m.header.id = 0xbeef;
    m.questions.push(Question {
        name: Name::from_ascii(name).expect("valid name"),
        qtype,
        qclass: RClass::IN,
    });
    if edns {
        m.additionals.push(Edns::default().to_record());
    }
    m.encode()
}
