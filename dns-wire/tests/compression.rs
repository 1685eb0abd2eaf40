//! Exact byte layout of encoded messages and name compression.

mod common;

use std::net::Ipv4Addr;

use common::{n, query, rec, response};
use dns_wire::{Decoder, Encoder, Message, QueryView, RData, RType, Record};

#[test]
fn small_response_exact_bytes() {
    let q = query(0x1234, "www.example.com", RType::A, None);
    assert_eq!(
        q.encode(),
        [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, //
            3, b'w', b'w', b'w', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm',
            0, //
            0, 1, 0, 1,
        ]
    );
    let r = response(
        &q,
        vec![rec(
            "www.example.com",
            300,
            RData::A(Ipv4Addr::new(192, 0, 2, 1)),
        )],
        vec![],
        vec![],
    );
    let expected: &[u8] = &[
        0x12, 0x34, 0x85, 0x00, 0, 1, 0, 1, 0, 0, 0, 0, //
        3, b'w', b'w', b'w', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm',
        0, //
        0, 1, 0, 1, //
        0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4, 192, 0, 2, 1,
    ];
    assert_eq!(r.encode(), expected);
    assert!(Message::decode(expected).unwrap().eq_exact(&r));
}

#[test]
fn cname_chain_layout() {
    let q = query(7, "www.example.com", RType::A, None);
    let r = response(
        &q,
        vec![
            rec("www.example.com", 60, RData::Cname(n("web.example.com"))),
            rec("web.example.com", 60, RData::A(Ipv4Addr::new(192, 0, 2, 2))),
            rec(
                "example.com",
                60,
                RData::Mx {
                    preference: 5,
                    exchange: n("example.com"),
                },
            ),
        ],
        vec![],
        vec![],
    );
    let b = r.encode();
    // Answer 1: owner -> question name, RDATA "web" + pointer to "example.com" (offset 16).
    assert_eq!(&b[33..45], &[0xc0, 0x0c, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6]);
    assert_eq!(&b[45..51], &[3, b'w', b'e', b'b', 0xc0, 16]);
    // Answer 2: owner -> the CNAME target at offset 45.
    assert_eq!(&b[51..53], &[0xc0, 45]);
    // Answer 3: owner and exchange both -> offset 16.
    assert_eq!(&b[67..69], &[0xc0, 16]);
    assert_eq!(&b[77..], &[0, 4, 0, 5, 0xc0, 16]);
    assert!(Message::decode(&b).unwrap().eq_exact(&r));
}

#[test]
fn case_differences_are_not_compressed_by_message_encode() {
    let q = query(1, "WWW.Example.com", RType::A, None);
    let r = response(
        &q,
        vec![rec(
            "www.example.com",
            1,
            RData::A(Ipv4Addr::new(192, 0, 2, 3)),
        )],
        vec![],
        vec![],
    );
    let b = r.encode();
    // "com" is shared (same case), "www.example" is not.
    assert_eq!(&b[33..47], b"\x03www\x07example\xc0\x18");
    let back = Message::decode(&b).unwrap();
    assert!(back.eq_exact(&r));
    assert_eq!(back.answers[0].name.to_string(), "www.example.com.");
}

#[test]
fn server_style_encoding_echoes_question_case() {
    // The way a server answers: copy the question bytes, register the name, let the
    // (case-insensitive) encoder point the answer owner at it.
    let packet = q_bytes("wWw.ExAmPlE.cOm");
    let view = QueryView::parse(&packet).unwrap();
    let mut enc = Encoder::with_capacity(512);
    let mut header = *view.header();
    header.set_qr(true);
    header.ancount = 1;
    header.arcount = 0;
    enc.put_slice(&header.to_bytes());
    enc.put_slice(view.question_wire());
    enc.register_name(&view.qname(), 12);
    let answer = Record::new_in(
        n("www.example.com"),
        30,
        RData::A(Ipv4Addr::new(198, 51, 100, 1)),
    )
    .unwrap();
    enc.put_record(&answer).unwrap();
    let b = enc.into_bytes();
    assert_eq!(&b[33..35], &[0xc0, 0x0c]);
    let m = Message::decode(&b).unwrap();
    assert!(m.answers[0].name.eq_exact(&n("wWw.ExAmPlE.cOm")));
    assert_eq!(m.answers[0].rdata, answer.rdata);
}

fn q_bytes(name: &str) -> Vec<u8> {
    query(9, name, RType::A, None).encode()
}

#[test]
fn rdata_names_point_back_and_decode() {
    let q = query(2, "example.com", RType::SOA, None);
    let r = response(
        &q,
        vec![rec("example.com", 1, RData::Soa(common::soa()))],
        vec![],
        vec![],
    );
    let b = r.encode();
    // mname "ns1" + ptr(12), rname "hostmaster" + ptr(12).
    assert_eq!(&b[41..47], b"\x03ns1\xc0\x0c");
    assert_eq!(&b[47..60], b"\x0ahostmaster\xc0\x0c");
    let mut d = Decoder::new(&b);
    d.seek(41).unwrap();
    assert_eq!(d.read_name().unwrap(), n("ns1.example.com"));
    assert!(Message::decode(&b).unwrap().eq_exact(&r));
}
