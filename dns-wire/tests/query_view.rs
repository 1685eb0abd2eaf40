//! The server-side QueryView on real dig/kdig queries and on broken ones.

mod common;

use common::{
    DIG_COOKIE, DIG_ECS, DIG_EDNS, DIG_PLAIN, KDIG_ECS6_DO, hex, ip, n, query, sample_messages,
};
use dns_wire::{
    ClientSubnet, DecodeError, DropReason, EdnsOption, Message, Opcode, QueryError, QueryView,
    RClass, RType,
};

#[test]
fn dig_without_edns_keeps_case() {
    let p = hex(DIG_PLAIN);
    let v = QueryView::parse(&p).unwrap();
    assert_eq!(v.id(), 0xbf42);
    assert_eq!(v.flags(), 0x0120);
    assert!(v.header().rd() && v.header().ad());
    assert_eq!(v.opcode(), Opcode::QUERY);
    assert_eq!(v.qname_wire(), b"\x03www\x07Example\x03com\x00");
    assert_eq!(
        v.question_wire(),
        b"\x03www\x07Example\x03com\x00\x00\x01\x00\x01"
    );
    assert_eq!(v.qtype(), RType::A);
    assert_eq!(v.qclass(), RClass::IN);
    assert!(v.qname().eq_exact(&n("www.Example.com")));
    let mut out = [0u8; 255];
    let len = v.lowercase_qname(&mut out);
    assert_eq!(&out[..len], b"\x03www\x07example\x03com\x00");
    assert!(v.edns().is_none());
    assert_eq!(v.opt_count(), 0);
    assert_eq!((v.ancount(), v.nscount(), v.arcount()), (0, 0, 0));
    assert_eq!(v.question_span().name_len, 17);
}

#[test]
fn dig_with_edns() {
    let p = hex(DIG_EDNS);
    let v = QueryView::parse(&p).unwrap();
    assert_eq!(v.qtype(), RType::AAAA);
    let e = v.edns().unwrap();
    assert_eq!(e.udp_payload, 1232);
    assert_eq!(e.version, 0);
    assert!(!e.dnssec_ok);
    assert!(e.options.is_empty());
    assert_eq!(v.opt_count(), 1);
    assert_eq!(v.arcount(), 1);
}

#[test]
fn dig_with_client_subnet() {
    let p = hex(DIG_ECS);
    let v = QueryView::parse(&p).unwrap();
    assert_eq!(v.qname_wire(), b"\x03WWW\x07example\x03com\x00");
    let mut out = [0u8; 255];
    let len = v.lowercase_qname(&mut out);
    assert_eq!(&out[..len], b"\x03www\x07example\x03com\x00");
    let ecs = v.edns().unwrap().client_subnet().unwrap();
    assert_eq!(ecs, &ClientSubnet::new(ip("192.0.2.0"), 24));
    assert_eq!(ecs.family, 1);
    assert_eq!(ecs.scope_prefix, 0);
}

#[test]
fn kdig_with_v6_subnet_and_do() {
    let p = hex(KDIG_ECS6_DO);
    let v = QueryView::parse(&p).unwrap();
    assert!(v.qname().eq_exact(&n("img.shop.example")));
    let e = v.edns().unwrap();
    assert!(e.dnssec_ok);
    assert_eq!(e.udp_payload, 4096);
    assert_eq!(
        e.client_subnet(),
        Some(&ClientSubnet::new(ip("2001:db8:1::"), 48))
    );
}

#[test]
fn dig_with_cookie() {
    let p = hex(DIG_COOKIE);
    let v = QueryView::parse(&p).unwrap();
    let (client, server) = v.edns().unwrap().cookie().unwrap();
    assert_eq!(client, &[0x5d, 0x6e, 0xc5, 0xa9, 0x67, 0xd1, 0xe9, 0x53]);
    assert!(server.is_empty());
}

#[test]
fn drops() {
    for len in 0..12 {
        assert_eq!(
            QueryView::parse(&hex(DIG_PLAIN)[..len]),
            Err(QueryError::Drop(DropReason::ShortHeader))
        );
    }
    let mut p = hex(DIG_PLAIN);
    p[2] |= 0x80;
    assert_eq!(
        QueryView::parse(&p),
        Err(QueryError::Drop(DropReason::IsResponse))
    );
    // A response is dropped even when the rest is garbage.
    assert_eq!(
        QueryView::parse(&[0, 0, 0x80, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xc0]),
        Err(QueryError::Drop(DropReason::IsResponse))
    );
}

#[test]
fn malformed_echoes_what_parsed() {
    let mut p = hex(DIG_EDNS);
    p.push(0);
    match QueryView::parse(&p) {
        Err(QueryError::Malformed {
            header,
            question: Some(q),
            error,
        }) => {
            assert_eq!(header.id, 0x5542);
            assert_eq!(q.name_len, 17);
            assert_eq!(q.qtype, RType::AAAA);
            assert_eq!(
                error,
                DecodeError::TrailingBytes {
                    offset: p.len() - 1
                }
            );
        }
        other => panic!("{other:?}"),
    }
    // QDCOUNT 0 and 2.
    for count in [0u16, 2] {
        let mut p = hex(DIG_PLAIN);
        p[4..6].copy_from_slice(&count.to_be_bytes());
        match QueryView::parse(&p) {
            Err(QueryError::Malformed {
                question: None,
                error,
                header,
            }) => {
                assert_eq!(error, DecodeError::BadQuestionCount { offset: 4, count });
                assert_eq!(header.qdcount, count);
            }
            other => panic!("{other:?}"),
        }
    }
    // Question cut in the middle of QTYPE.
    let p = hex(DIG_PLAIN);
    match QueryView::parse(&p[..p.len() - 3]) {
        Err(QueryError::Malformed {
            question: None,
            error: DecodeError::Truncated { .. },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn agrees_with_full_decoder_on_samples() {
    for (label, p) in sample_messages() {
        let m = Message::decode(&p).unwrap();
        match QueryView::parse(&p) {
            Ok(v) => {
                assert_eq!(m.questions.len(), 1, "{label}");
                assert!(m.questions[0].name.eq_exact(&v.qname()), "{label}");
                assert_eq!(m.questions[0].qtype, v.qtype());
                assert_eq!(m.edns().map(|e| e.unwrap()).as_ref(), v.edns(), "{label}");
            }
            Err(QueryError::Drop(DropReason::IsResponse)) => assert!(m.header.qr(), "{label}"),
            Err(e) => panic!("{label}: {e}"),
        }
    }
}

#[test]
fn options_survive_in_order() {
    let e = dns_wire::Edns {
        options: vec![
            EdnsOption::Other {
                code: 65001,
                data: vec![1, 2, 3],
            },
            EdnsOption::ClientSubnet(ClientSubnet::new(ip("198.51.100.77"), 22)),
            EdnsOption::Cookie {
                client: [7; 8],
                server: vec![8; 8],
            },
        ],
        ..Default::default()
    };
    let p = query(5, "a.b.example", RType::TXT, Some(e.clone())).encode();
    let v = QueryView::parse(&p).unwrap();
    assert_eq!(v.edns(), Some(&e));
    assert_eq!(
        e.client_subnet().unwrap().address,
        ip("198.51.100.0"),
        "masked to the /22"
    );
}
