//! Sample messages shared by the integration tests and the corpus generator.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dns_wire::{
    ClientSubnet, Edns, EdnsOption, Header, Message, Name, Opcode, Question, RClass, RData, RType,
    Record, Soa,
};

/// Queries captured from `dig` 9.18 / `kdig` 3.2 sent to a local UDP socket.
pub const DIG_PLAIN: &str = "bf420120000100000000000003777777074578616d706c6503636f6d0000010001";
pub const DIG_EDNS: &str =
    "55420120000100000000000103777777076578616d706c6503636f6d00001c000100002904d0000000000000";
pub const DIG_ECS: &str = "1a640120000100000000000103575757076578616d706c6503636f6d000001000100002904d000000000000b0008000700011800c00002";
pub const DIG_COOKIE: &str = "108c0120000100000000000103777777076578616d706c6503636f6d000001000100002904d000000000000c000a00085d6ec5a967d1e953";
pub const KDIG_ECS6_DO: &str = "294c0120000100000000000103696d670473686f70076578616d706c6500001c0001000029100000008000000e0008000a0002300020010db80001";

pub fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

pub fn rec(name: &str, ttl: u32, rdata: RData) -> Record {
    Record::new_in(n(name), ttl, rdata).unwrap()
}

pub fn query(id: u16, name: &str, qtype: RType, edns: Option<Edns>) -> Message {
    let mut header = Header {
        id,
        ..Header::default()
    };
    header.set_rd(true);
    Message {
        header,
        questions: vec![Question {
            name: n(name),
            qtype,
            qclass: RClass::IN,
        }],
        answers: vec![],
        authorities: vec![],
        additionals: edns.into_iter().map(|e| e.to_record()).collect(),
    }
}

pub fn response(
    q: &Message,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
) -> Message {
    let mut header = q.header;
    header.set_qr(true);
    header.set_aa(true);
    Message {
        header,
        questions: q.questions.clone(),
        answers,
        authorities,
        additionals,
    }
}

pub fn soa() -> Soa {
    Soa {
        mname: n("ns1.example.com"),
        rname: n("hostmaster.example.com"),
        serial: 2024010101,
        refresh: 7200,
        retry: 3600,
        expire: 1209600,
        minimum: 300,
    }
}

pub fn ecs_edns(addr: &str, prefix: u8) -> Edns {
    Edns {
        options: vec![EdnsOption::ClientSubnet(ClientSubnet::new(
            addr.parse().unwrap(),
            prefix,
        ))],
        ..Edns::default()
    }
}

/// One RData of every variant, with its record type.
pub fn every_rdata() -> Vec<(RType, RClass, RData)> {
    vec![
        (RType::A, RClass::IN, RData::A(Ipv4Addr::new(192, 0, 2, 1))),
        (
            RType::AAAA,
            RClass::IN,
            RData::Aaaa(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ),
        (RType::NS, RClass::IN, RData::Ns(n("ns1.example.com"))),
        (
            RType::CNAME,
            RClass::IN,
            RData::Cname(n("target.Example.com")),
        ),
        (RType::PTR, RClass::IN, RData::Ptr(n("host.example.com"))),
        (RType::SOA, RClass::IN, RData::Soa(soa())),
        (
            RType::MX,
            RClass::IN,
            RData::Mx {
                preference: 10,
                exchange: n("mail.example.com"),
            },
        ),
        (
            RType::TXT,
            RClass::IN,
            RData::Txt(vec![
                b"v=spf1 -all".to_vec(),
                vec![],
                b"quote\" back\\slash \x00\xff".to_vec(),
                vec![b'x'; 255],
            ]),
        ),
        (RType::TXT, RClass::IN, RData::Txt(vec![])),
        (RType::TXT, RClass::CH, RData::Txt(vec![b"popnet".to_vec()])),
        (
            RType::HINFO,
            RClass::IN,
            RData::Hinfo {
                cpu: b"x86_64".to_vec(),
                os: vec![],
            },
        ),
        (
            RType(65000),
            RClass::IN,
            RData::Unknown(vec![0xc0, 0x0c, 1, 2, 3]),
        ),
        (RType(65001), RClass::IN, RData::Unknown(vec![])),
        (
            RType::SRV,
            RClass::IN,
            RData::Unknown(vec![0, 1, 0, 2, 0x01, 0xbb, 0]),
        ),
        (
            RType::CAA,
            RClass::IN,
            RData::Unknown(b"\x00\x05issueca.example".to_vec()),
        ),
        (RType::A, RClass::CH, RData::Unknown(vec![0x7f, 1])),
        (RType::A, RClass::ANY, RData::Unknown(vec![])),
    ]
}

/// Named sample messages (valid, encoded by this crate or captured from dig).
pub fn sample_messages() -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, Vec<u8>)> = vec![
        ("query_dig_plain_mixed_case", hex(DIG_PLAIN)),
        ("query_dig_edns_aaaa", hex(DIG_EDNS)),
        ("query_dig_ecs_v4", hex(DIG_ECS)),
        ("query_dig_cookie", hex(DIG_COOKIE)),
        ("query_kdig_ecs_v6_do", hex(KDIG_ECS6_DO)),
    ];
    let q_a = query(0x1234, "www.example.com", RType::A, None);
    out.push(("query_a_no_edns", q_a.encode()));
    out.push((
        "query_a_edns",
        query(2, "www.example.com", RType::A, Some(Edns::default())).encode(),
    ));
    out.push(("query_root_ns", query(3, ".", RType::NS, None).encode()));
    out.push((
        "query_any",
        query(4, "example.com", RType::ANY, Some(Edns::default())).encode(),
    ));
    let bad_version = Edns {
        version: 1,
        ..Edns::default()
    };
    out.push((
        "query_edns_version1",
        query(5, "www.example.com", RType::A, Some(bad_version)).encode(),
    ));
    out.push((
        "query_ecs_prefix0",
        query(
            6,
            "img.shop.example",
            RType::A,
            Some(ecs_edns("0.0.0.0", 0)),
        )
        .encode(),
    ));
    out.push((
        "query_ecs_v6_56",
        query(
            7,
            "img.shop.example",
            RType::AAAA,
            Some(ecs_edns("2001:db8:aa:bb00::", 56)),
        )
        .encode(),
    ));
    let cookies = Edns {
        dnssec_ok: true,
        options: vec![
            EdnsOption::Cookie {
                client: [1, 2, 3, 4, 5, 6, 7, 8],
                server: vec![9; 16],
            },
            EdnsOption::Other {
                code: 12,
                data: vec![0; 20],
            },
            EdnsOption::Other {
                code: 65001,
                data: vec![],
            },
        ],
        ..Edns::default()
    };
    out.push((
        "query_cookie_server_padding",
        query(8, "www.example.com", RType::A, Some(cookies)).encode(),
    ));
    let long = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
    out.push((
        "query_name_255_bytes",
        query(9, &long, RType::A, None).encode(),
    ));
    out.push((
        "query_binary_label",
        query(10, r"\000\255\.x.Example", RType::TXT, None).encode(),
    ));
    let mut chaos = query(11, "version.bind", RType::TXT, None);
    chaos.questions[0].qclass = RClass::CH;
    out.push(("query_chaos_version_bind", chaos.encode()));
    let mut tsig_like = query(12, "example.com", RType::SOA, Some(Edns::default()));
    tsig_like.additionals.push(Record {
        name: n("key.example"),
        rtype: RType(250),
        rclass: RClass::ANY,
        ttl: 0,
        rdata: RData::Unknown(vec![1, 2, 3, 4]),
    });
    out.push(("query_edns_and_tsig_like", tsig_like.encode()));

    // Responses.
    out.push((
        "response_a_compressed",
        response(
            &q_a,
            vec![rec(
                "www.example.com",
                300,
                RData::A(Ipv4Addr::new(192, 0, 2, 1)),
            )],
            vec![],
            vec![],
        )
        .encode(),
    ));
    let q_cname = query(
        20,
        "WWW.shop.example",
        RType::A,
        Some(ecs_edns("198.51.100.0", 24)),
    );
    let mut answer_edns = ecs_edns("198.51.100.0", 24);
    if let Some(EdnsOption::ClientSubnet(c)) = answer_edns.options.first_mut() {
        c.scope_prefix = 20;
    }
    out.push((
        "response_cname_chain_ecs_scope",
        response(
            &q_cname,
            vec![
                rec("WWW.shop.example", 60, RData::Cname(n("pop1.cdn.example"))),
                rec(
                    "pop1.cdn.example",
                    20,
                    RData::A(Ipv4Addr::new(203, 0, 113, 7)),
                ),
                rec(
                    "pop1.cdn.example",
                    20,
                    RData::A(Ipv4Addr::new(203, 0, 113, 8)),
                ),
            ],
            vec![],
            vec![answer_edns.to_record()],
        )
        .encode(),
    ));
    let q_ns = query(21, "sub.example.com", RType::A, None);
    let mut referral = response(
        &q_ns,
        vec![],
        vec![
            rec("sub.example.com", 3600, RData::Ns(n("ns1.sub.example.com"))),
            rec("sub.example.com", 3600, RData::Ns(n("ns2.sub.example.com"))),
        ],
        vec![
            rec(
                "ns1.sub.example.com",
                3600,
                RData::A(Ipv4Addr::new(192, 0, 2, 53)),
            ),
            rec(
                "ns2.sub.example.com",
                3600,
                RData::Aaaa("2001:db8::53".parse().unwrap()),
            ),
        ],
    );
    referral.header.set_aa(false);
    out.push(("response_referral_ns_glue", referral.encode()));
    let q_nx = query(22, "nope.example.com", RType::A, Some(Edns::default()));
    let mut nx = response(
        &q_nx,
        vec![],
        vec![rec("example.com", 300, RData::Soa(soa()))],
        vec![Edns::default().to_record()],
    );
    nx.header.set_rcode_low(3);
    out.push(("response_nxdomain_soa", nx.encode()));
    let q_mx = query(23, "example.com", RType::MX, None);
    out.push((
        "response_mx_txt_hinfo",
        response(
            &q_mx,
            vec![
                rec(
                    "example.com",
                    300,
                    RData::Mx {
                        preference: 10,
                        exchange: n("mail.example.com"),
                    },
                ),
                rec(
                    "example.com",
                    300,
                    RData::Txt(vec![b"hello world".to_vec(), b"\"quoted\"".to_vec()]),
                ),
                rec("example.com", 300, RData::Txt(vec![])),
                rec(
                    "example.com",
                    300,
                    RData::Hinfo {
                        cpu: b"ARM".to_vec(),
                        os: b"Linux".to_vec(),
                    },
                ),
            ],
            vec![],
            vec![rec(
                "mail.example.com",
                300,
                RData::A(Ipv4Addr::new(192, 0, 2, 25)),
            )],
        )
        .encode(),
    ));
    let q_ptr = query(24, "1.2.0.192.in-addr.arpa", RType::PTR, None);
    out.push((
        "response_ptr",
        response(
            &q_ptr,
            vec![rec(
                "1.2.0.192.in-addr.arpa",
                86400,
                RData::Ptr(n("host.example.com")),
            )],
            vec![],
            vec![],
        )
        .encode(),
    ));
    let q_unknown = query(25, "example.com", RType(65000), None);
    out.push((
        "response_unknown_srv_caa",
        response(
            &q_unknown,
            vec![
                Record {
                    name: n("example.com"),
                    rtype: RType(65000),
                    rclass: RClass::IN,
                    ttl: 1,
                    rdata: RData::Unknown(vec![0xc0, 0x0c]),
                },
                Record {
                    name: n("_sip._udp.example.com"),
                    rtype: RType::SRV,
                    rclass: RClass::IN,
                    ttl: 1,
                    rdata: RData::Unknown(vec![0, 1, 0, 2, 0x13, 0xc4, 0]),
                },
                Record {
                    name: n("example.com"),
                    rtype: RType::CAA,
                    rclass: RClass::IN,
                    ttl: 1,
                    rdata: RData::Unknown(b"\x00\x05issueca.example".to_vec()),
                },
            ],
            vec![],
            vec![],
        )
        .encode(),
    ));
    let mut chaos_q = query(26, "version.bind", RType::TXT, None);
    chaos_q.questions[0].qclass = RClass::CH;
    out.push((
        "response_chaos_txt",
        response(
            &chaos_q,
            vec![Record {
                name: n("version.bind"),
                rtype: RType::TXT,
                rclass: RClass::CH,
                ttl: 0,
                rdata: RData::Txt(vec![b"popnet".to_vec()]),
            }],
            vec![],
            vec![],
        )
        .encode(),
    ));
    let q_case = query(27, "Mixed.EXAMPLE.com", RType::A, None);
    out.push((
        "response_mixed_case_names",
        response(
            &q_case,
            vec![
                rec("mixed.example.com", 5, RData::Cname(n("OTHER.example.COM"))),
                rec(
                    "other.example.com",
                    5,
                    RData::A(Ipv4Addr::new(192, 0, 2, 9)),
                ),
            ],
            vec![],
            vec![],
        )
        .encode(),
    ));
    let mut update = Message::default();
    update.header.id = 28;
    update.header.set_opcode(Opcode::UPDATE);
    update.questions.push(Question {
        name: n("example.com"),
        qtype: RType::SOA,
        qclass: RClass::IN,
    });
    update.authorities.push(Record {
        name: n("old.example.com"),
        rtype: RType::A,
        rclass: RClass::ANY,
        ttl: 0,
        rdata: RData::Unknown(vec![]),
    });
    update.authorities.push(Record {
        name: n("gone.example.com"),
        rtype: RType::MX,
        rclass: RClass::NONE,
        ttl: 0,
        rdata: RData::Unknown(vec![]),
    });
    update.authorities.push(rec(
        "new.example.com",
        60,
        RData::A(Ipv4Addr::new(192, 0, 2, 44)),
    ));
    out.push(("update_delete_add", update.encode()));
    let mut notify = query(29, "example.com", RType::SOA, None);
    notify.header.set_opcode(Opcode::NOTIFY);
    notify.header.set_rd(false);
    notify
        .answers
        .push(rec("example.com", 300, RData::Soa(soa())));
    out.push(("notify_with_soa", notify.encode()));
    out
}

/// Byte-exact message equality, with a readable failure.
pub fn assert_exact(a: &Message, b: &Message) {
    assert!(a.eq_exact(b), "messages differ:\n{a:#?}\n{b:#?}");
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
