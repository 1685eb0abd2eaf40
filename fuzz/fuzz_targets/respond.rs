//! The whole server answer path on hostile packets: whatever `respond` writes is a well-formed response to that packet.
#![no_main]

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use dns_fastpath::answer::AnswerTable;
use dns_fastpath::catalog::Catalog;
use dns_fastpath::metrics::{MetricsTable, unix_ms};
use dns_fastpath::respond::{Outcome, Transport, respond};
use dns_fastpath::selector::Selector;
use dns_wire::{Message, QueryView};
use libfuzzer_sys::fuzz_target;
use popnet_config::Config;

static TABLE: LazyLock<AnswerTable> = LazyLock::new(|| {
    let cfg = Config::demo();
    let cat = Arc::new(Catalog::compile(&cfg).expect("demo compiles"));
    let metrics = MetricsTable::new(b"k", 5_000, cat.servers.iter().map(|s| s.id.clone()), Vec::new());
    let mut sel = Selector::new(&cat, cfg.probes.recovery);
    sel.reselect(&cat, &metrics, std::time::Instant::now(), unix_ms());
    AnswerTable::build(cat, sel.selections().clone(), Default::default(), 1)
});

fuzz_target!(|data: &[u8]| {
    // The first byte picks the transport and the client's address.
    let Some((&sel, packet)) = data.split_first() else { return };
    let transport = if sel & 1 == 0 { Transport::Udp } else { Transport::Tcp };
    let src: IpAddr = if sel & 2 == 0 { [127, 0, 0, 1].into() } else { [203, 0, 113, sel].into() };
    let mut out = Vec::new();
    match respond(&TABLE, 1232, packet, src, transport, &mut out) {
        Outcome::Dropped(_) => {
            assert!(packet.len() < 12 || packet[2] & 0x80 != 0, "dropped a query that had a header");
        }
        Outcome::Answered { .. } => {
            let m = Message::decode(&out).unwrap_or_else(|e| panic!("response does not parse: {e}"));
            assert!(m.header.qr());
            assert_eq!(&out[..2], &packet[..2], "id not copied");
            if transport == Transport::Udp {
                let limit = match QueryView::parse(packet).ok().and_then(|q| q.edns().map(|e| e.udp_payload)) {
                    Some(p) => usize::from(p.clamp(512, 1232)),
                    None => 512,
                };
                assert!(out.len() <= limit, "{} bytes over a {limit}-byte limit", out.len());
            }
            if let Ok(q) = QueryView::parse(packet) {
                // The question is echoed byte for byte.
                assert_eq!(&out[12..12 + q.question_wire().len()], q.question_wire());
            }
        }
    }
});
