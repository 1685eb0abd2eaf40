//! Encode/decode round-trips for every RDATA variant and for the sample messages.

mod common;

use common::{assert_exact, every_rdata, n, query, response, sample_messages};
use dns_wire::{Edns, EdnsOption, Message, RClass, RData, RType, Record};

#[test]
fn every_rdata_variant_roundtrips() {
    for (rtype, rclass, rdata) in every_rdata() {
        let q = query(1, "Host.Example.com", rtype, None);
        let record = Record {
            name: n("host.example.com"),
            rtype,
            rclass,
            ttl: 3600,
            rdata: rdata.clone(),
        };
        let m = response(&q, vec![record.clone()], vec![record.clone()], vec![record]);
        let bytes = m.encode();
        let back = Message::decode(&bytes).unwrap_or_else(|e| panic!("{rtype} {rdata:?}: {e}"));
        assert_exact(&back, &m);
        assert_eq!(back.answers[0].rdata, rdata, "{rtype}");
        assert_eq!(back.encode(), bytes);
    }
}

#[test]
fn opt_rdata_roundtrips() {
    let edns = Edns {
        udp_payload: 1400,
        ext_rcode: 1,
        version: 0,
        dnssec_ok: true,
        z: 0x10,
        options: vec![
            EdnsOption::ClientSubnet(dns_wire::ClientSubnet::new(
                common::ip("2001:db8:1:2::"),
                64,
            )),
            EdnsOption::Cookie {
                client: [0xaa; 8],
                server: vec![0xbb; 32],
            },
            EdnsOption::Other {
                code: 15,
                data: vec![0, 18],
            },
        ],
    };
    let m = query(3, "example.com", RType::A, Some(edns.clone()));
    let back = Message::decode(&m.encode()).unwrap();
    assert_exact(&back, &m);
    assert_eq!(back.edns().unwrap().unwrap(), edns);
    assert_eq!(back.rcode(), dns_wire::Rcode::BADVERS);
    assert!(matches!(back.additionals[0].rdata, RData::Opt(ref o) if o.len() == 3));
}

#[test]
fn samples_reencode_identically() {
    for (label, bytes) in sample_messages() {
        let m = Message::decode(&bytes).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(m.encode(), bytes, "{label}");
    }
}

#[test]
fn empty_txt_is_distinct_from_one_empty_string() {
    let q = query(1, "t.example", RType::TXT, None);
    for strings in [vec![], vec![vec![]], vec![vec![], vec![]]] {
        let m = response(
            &q,
            vec![common::rec("t.example", 1, RData::Txt(strings.clone()))],
            vec![],
            vec![],
        );
        let b = m.encode();
        let rdlen = u16::from_be_bytes([
            b[b.len() - strings.len() - 2],
            b[b.len() - strings.len() - 1],
        ]);
        assert_eq!(usize::from(rdlen), strings.len());
        assert_eq!(
            Message::decode(&b).unwrap().answers[0].rdata,
            RData::Txt(strings)
        );
    }
}

#[test]
fn presentation_format() {
    let m = Message::decode(
        &sample_messages()
            .iter()
            .find(|(l, _)| *l == "response_mx_txt_hinfo")
            .unwrap()
            .1,
    )
    .unwrap();
    let lines: Vec<String> = m
        .answers
        .iter()
        .chain(&m.additionals)
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "example.com. 300 IN MX 10 mail.example.com.",
            r#"example.com. 300 IN TXT "hello world" "\"quoted\"""#,
            r"example.com. 300 IN TXT \# 0",
            r#"example.com. 300 IN HINFO "ARM" "Linux""#,
            "mail.example.com. 300 IN A 192.0.2.25",
        ]
    );
    let unknown = Record {
        name: n("x.example"),
        rtype: RType(65000),
        rclass: RClass(7),
        ttl: 0,
        rdata: RData::Unknown(vec![0xde, 0xad, 0xbe, 0xef]),
    };
    assert_eq!(
        unknown.to_string(),
        r"x.example. 0 CLASS7 TYPE65000 \# 4 deadbeef"
    );
    let text = m.to_string();
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains(";example.com. IN MX"), "{text}");
}

#[test]
fn unencodable_records_fall_back_to_servfail() {
    let q = query(1, "t.example", RType::TXT, None);
    let m = response(
        &q,
        vec![common::rec("t.example", 1, RData::Txt(vec![vec![0; 300]]))],
        vec![],
        vec![],
    );
    assert!(m.try_encode().is_err());
    let back = Message::decode(&m.encode()).unwrap();
    assert_eq!(back.rcode(), dns_wire::Rcode::SERVFAIL);
    assert_eq!(back.questions, m.questions);
    assert!(back.answers.is_empty());
    let bad_cookie = query(
        2,
        "x.example",
        RType::A,
        Some(Edns {
            options: vec![EdnsOption::Cookie {
                client: [0; 8],
                server: vec![0; 4],
            }],
            ..Edns::default()
        }),
    );
    assert!(matches!(
        bad_cookie.try_encode(),
        Err(dns_wire::EncodeError::BadEdnsOption { code: 10, .. })
    ));
}
