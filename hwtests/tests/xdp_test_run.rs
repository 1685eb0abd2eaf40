//! The XDP program under BPF_PROG_TEST_RUN: its answers are byte-identical to userspace's, and hostile frames never get a reply.

use std::net::IpAddr;

use dns_fastpath::respond::{Outcome, Transport, respond};
use dns_fastpath::xdp::{FastPath, ProgramSettings, XDP_PASS, XDP_TX};
use dns_wire::{ClientSubnet, Edns, EdnsOption, Message, Name, Question, RClass, RType};
use hwtests::frames::{self, Datagram};
use hwtests::{XDP_CONFIG, idle_table, privileged, xdp_config_with_big_txt};
use popnet_config::Config;

const SERVER4: &str = "192.0.2.1";
const SERVER6: &str = "2001:db8::1";

struct Fixture {
    table: dns_fastpath::answer::AnswerTable,
    fp: FastPath,
}

fn fixture(config: &str) -> Fixture {
    let cfg = Config::from_toml(config, "xdp-test").expect("valid");
    let table = idle_table(&cfg);
    let settings = ProgramSettings {
        listen: cfg.pops[0].dns.as_ref().unwrap().listen.clone(),
        udp_payload: cfg.dns.udp_payload,
        track_resolvers: false,
    };
    let fp = FastPath::load(&settings, &table.catalog.views, &table)
        .unwrap_or_else(|e| panic!("loading the XDP program: {e}"));
    Fixture { table, fp }
}

fn query(id: u16, name: &str, qtype: RType, edns: Option<Edns>, flags: u16) -> Vec<u8> {
    let mut m = Message::default();
    m.header.id = id;
    m.header.flags = flags;
    m.questions.push(Question {
        name: Name::from_ascii(name).unwrap(),
        qtype,
        qclass: RClass::IN,
    });
    if let Some(e) = edns {
        m.additionals.push(e.to_record());
    }
    m.encode()
}

fn edns(payload: u16, dnssec_ok: bool, options: Vec<EdnsOption>) -> Option<Edns> {
    Some(Edns {
        udp_payload: payload,
        dnssec_ok,
        options,
        ..Edns::default()
    })
}

impl Fixture {
    /// What userspace would answer to `d` (None if it would not answer).
    fn userspace(&self, d: &Datagram) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match respond(
            &self.table,
            1232,
            &d.payload,
            d.src,
            Transport::Udp,
            &mut out,
        ) {
            Outcome::Answered { .. } => Some(out),
            Outcome::Dropped(_) => None,
        }
    }

    /// Runs the program on `d`: Some(reply datagram) if it answered, None if it passed
    /// the frame on unchanged. Panics on anything else.
    fn xdp(&self, d: &Datagram) -> Option<Datagram> {
        let frame = frames::build(d);
        self.run(&frame)
    }

    fn run(&self, frame: &[u8]) -> Option<Datagram> {
        let r = self.fp.test_run(frame, 1).expect("test run");
        match r.action {
            XDP_PASS => {
                assert_eq!(r.frame, frame, "a passed frame must be unchanged");
                None
            }
            XDP_TX => Some(frames::parse(&r.frame).unwrap_or_else(|e| {
                panic!("the program sent a malformed frame ({e}) for {frame:02x?}")
            })),
            other => panic!("unexpected XDP action {other} for {frame:02x?}"),
        }
    }

    /// Asserts the program answers `d` exactly as userspace would, addressed back.
    fn assert_same(&self, d: &Datagram) {
        let reply = self.xdp(d).unwrap_or_else(|| {
            panic!(
                "the program passed a query it should answer: {:02x?}",
                d.payload
            )
        });
        let want = self.userspace(d).expect("userspace answers");
        assert_eq!(
            reply.payload,
            want,
            "XDP and userspace differ for {:?}",
            Message::decode(&d.payload).map(|m| m.to_string())
        );
        assert_eq!(
            (reply.src, reply.dst, reply.sport, reply.dport),
            (d.dst, d.src, d.dport, d.sport)
        );
        assert_eq!(
            (reply.src_mac, reply.dst_mac, reply.vlan),
            (d.dst_mac, d.src_mac, d.vlan)
        );
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn answers_are_byte_identical_to_userspace() {
    if !privileged("answers_are_byte_identical_to_userspace") {
        return;
    }
    let f = fixture(XDP_CONFIG);
    let names = [
        "www.shop.example",
        "WwW.ShOp.ExAmPlE",
        "img.shop.example",
        "pair.shop.example",
        "mail.shop.example",
        "shop.example",
        "static.shop.example",
        "ns.pop1.popnet.test.example",
        "cache.pop1.popnet.test.example",
    ];
    let types = [
        RType::A,
        RType::AAAA,
        RType::TXT,
        RType::MX,
        RType::NS,
        RType::SOA,
        RType::CNAME,
        RType::ANY,
    ];
    let clients = [
        ("198.51.100.7", SERVER4),     // east view
        ("198.51.100.200", SERVER4),   // west view
        ("192.0.2.77", SERVER4),       // default view
        ("2001:db8:100::7", SERVER6),  // east over IPv6
        ("2001:db8:200::9", SERVER6),  // west over IPv6
        ("2001:db8:ffff::1", SERVER6), // default over IPv6
    ];
    let ednses = [
        None,
        edns(1232, false, vec![]),
        edns(4096, true, vec![]),
        edns(512, false, vec![]),
        edns(
            1400,
            false,
            vec![EdnsOption::Cookie {
                client: [1, 2, 3, 4, 5, 6, 7, 8],
                server: vec![],
            }],
        ),
        edns(
            1232,
            false,
            vec![EdnsOption::Other {
                code: 12,
                data: vec![0; 7],
            }],
        ),
    ];
    let mut n = 0;
    let mut answered = 0;
    for (ci, (src, dst)) in clients.iter().enumerate() {
        for name in names {
            for (ti, t) in types.iter().enumerate() {
                let e = ednses[(ci + ti) % ednses.len()].clone();
                let flags = if ti % 2 == 0 { 0x0100 } else { 0x0110 }; // RD, RD+CD
                for vlan in [None, Some(42)] {
                    let mut d = Datagram::query(
                        ip(src),
                        ip(dst),
                        30000 + n as u16,
                        query(n as u16, name, *t, e.clone(), flags),
                    );
                    d.vlan = vlan;
                    n += 1;
                    match f.xdp(&d) {
                        Some(_) => {
                            f.assert_same(&d);
                            answered += 1;
                        }
                        None => {
                            // Passed: only because userspace would not fit it in the table.
                            let lc = Name::from_ascii(name).unwrap().to_lowercase();
                            let view = f.table.catalog.views.lookup(d.src).view;
                            assert!(
                                f.table.lookup(lc.as_wire(), *t, view).is_none(),
                                "{name} {t} from {src} was passed but is in the table"
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(answered > n / 2, "only {answered} of {n} answered in XDP");
}

#[test]
fn everything_unusual_is_passed_unchanged() {
    if !privileged("everything_unusual_is_passed_unchanged") {
        return;
    }
    let f = fixture(&xdp_config_with_big_txt(700));
    let src = ip("198.51.100.7");
    let dst = ip(SERVER4);
    let pass = |d: Datagram, why: &str| {
        assert!(f.xdp(&d).is_none(), "answered in XDP, should pass: {why}");
    };
    let ok = || {
        Datagram::query(
            src,
            dst,
            40000,
            query(1, "www.shop.example", RType::A, None, 0x0100),
        )
    };
    f.assert_same(&ok());
    // A miss, a name outside our zones, NXDOMAIN: userspace answers them.
    pass(
        Datagram::query(
            src,
            dst,
            1,
            query(1, "nothing.shop.example", RType::A, None, 0),
        ),
        "NXDOMAIN",
    );
    pass(
        Datagram::query(src, dst, 1, query(1, "example.com", RType::A, None, 0)),
        "REFUSED",
    );
    pass(
        Datagram::query(
            src,
            dst,
            1,
            query(1, "www.shop.example", RType::SRV, None, 0),
        ),
        "type not in the table",
    );
    // Truncation cases: 700 bytes of TXT over plain UDP, and a 512-byte EDNS client.
    pass(
        Datagram::query(
            src,
            dst,
            1,
            query(1, "big.shop.example", RType::TXT, None, 0),
        ),
        "too big for 512",
    );
    pass(
        Datagram::query(
            src,
            dst,
            1,
            query(
                1,
                "big.shop.example",
                RType::TXT,
                edns(512, false, vec![]),
                0,
            ),
        ),
        "too big for the client",
    );
    // ECS, EDNS version 1, a bad cookie, an opcode, QR, TC, two questions.
    let ecs = EdnsOption::ClientSubnet(ClientSubnet::new(ip("203.0.113.0"), 24));
    pass(
        Datagram::query(
            src,
            dst,
            1,
            query(
                1,
                "www.shop.example",
                RType::A,
                edns(1232, false, vec![ecs]),
                0,
            ),
        ),
        "ECS",
    );
    let v1 = Edns {
        version: 1,
        ..Edns::default()
    };
    pass(
        Datagram::query(
            src,
            dst,
            1,
            query(1, "www.shop.example", RType::A, Some(v1), 0),
        ),
        "EDNS version 1",
    );
    // A cookie of 12 bytes (valid lengths are 8 and 16..=40): userspace answers FORMERR.
    let mut q = query(1, "www.shop.example", RType::A, None, 0);
    q[11] = 1;
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 16, 0, 10, 0, 12]);
    q.extend_from_slice(&[7; 12]);
    pass(Datagram::query(src, dst, 1, q), "bad cookie length");
    pass(
        Datagram::query(
            src,
            dst,
            1,
            query(1, "www.shop.example", RType::A, None, 0x2800),
        ),
        "UPDATE opcode",
    );
    pass(
        Datagram::query(
            src,
            dst,
            1,
            query(1, "www.shop.example", RType::A, None, 0x8000),
        ),
        "QR set",
    );
    pass(
        Datagram::query(
            src,
            dst,
            1,
            query(1, "www.shop.example", RType::A, None, 0x0200),
        ),
        "TC set",
    );
    let mut two = query(1, "www.shop.example", RType::A, None, 0);
    two[5] = 2;
    pass(Datagram::query(src, dst, 1, two), "QDCOUNT 2");
    let mut an = query(1, "www.shop.example", RType::A, None, 0);
    an[7] = 1;
    pass(Datagram::query(src, dst, 1, an), "ANCOUNT 1");
    // Class CH, a compression pointer, a 64-byte label, a name longer than the map's.
    let mut ch = query(1, "www.shop.example", RType::A, None, 0);
    let l = ch.len();
    ch[l - 1] = 3;
    pass(Datagram::query(src, dst, 1, ch), "class CH");
    let mut ptr = query(1, "www.shop.example", RType::A, None, 0);
    ptr[12] = 0xc0;
    ptr[13] = 0x0c;
    pass(Datagram::query(src, dst, 1, ptr), "pointer in the question");
    let mut label64 = vec![0u8; 12];
    label64[5] = 1;
    label64.push(64);
    label64.extend(std::iter::repeat_n(b'a', 64));
    label64.extend_from_slice(&[0, 0, 1, 0, 1]);
    pass(Datagram::query(src, dst, 1, label64), "label of 64");
    // A name of 321 bytes: longer than DNS allows (255); userspace answers FORMERR.
    let mut over255 = vec![0u8; 12];
    over255[5] = 1;
    for _ in 0..5 {
        over255.push(63);
        over255.extend(std::iter::repeat_n(b'x', 63));
    }
    over255.extend_from_slice(&[0, 0, 1, 0, 1]);
    pass(Datagram::query(src, dst, 1, over255), "name over 255 bytes");
    let long = format!("{}.shop.example", ["abcdefghij"; 13].join("."));
    pass(
        Datagram::query(src, dst, 1, query(1, &long, RType::A, None, 0)),
        "name longer than MAX_NAME",
    );
    // Trailing garbage after the question.
    let mut tail = query(1, "www.shop.example", RType::A, None, 0);
    tail.push(0);
    pass(Datagram::query(src, dst, 1, tail), "trailing byte");
    // Not our port, not our address, v4-mapped source.
    let mut other_port = ok();
    other_port.dport = 5353;
    pass(other_port, "port 5353");
    pass(
        Datagram::query(
            src,
            ip("192.0.2.99"),
            1,
            query(1, "www.shop.example", RType::A, None, 0),
        ),
        "another address",
    );
    pass(
        Datagram::query(
            ip("::ffff:198.51.100.7"),
            ip(SERVER6),
            1,
            query(1, "www.shop.example", RType::A, None, 0),
        ),
        "v4-mapped source",
    );

    // Frame-level damage to a good query.
    let good = frames::build(&ok());
    let expect_pass =
        |frame: Vec<u8>, why: &str| assert!(f.run(&frame).is_none(), "answered a frame with {why}");
    let mut frag = good.clone();
    frag[14 + 6] = 0x20; // MF
    fix_ip_csum(&mut frag);
    expect_pass(frag, "MF set");
    let mut frag2 = good.clone();
    frag2[14 + 7] = 1; // offset 8
    fix_ip_csum(&mut frag2);
    expect_pass(frag2, "a fragment offset");
    let mut opts = good.clone();
    opts[14] = 0x46;
    opts.splice(14 + 20..14 + 20, [1, 1, 1, 0]);
    let tot = u16::from_be_bytes([opts[16], opts[17]]) + 4;
    opts[16..18].copy_from_slice(&tot.to_be_bytes());
    fix_ip_csum(&mut opts);
    expect_pass(opts, "IP options");
    let mut bad_csum = good.clone();
    bad_csum[14 + 10] ^= 0xff;
    expect_pass(bad_csum, "a wrong IPv4 checksum");
    let mut long_ip = good.clone();
    let tot = u16::from_be_bytes([long_ip[16], long_ip[17]]) + 1;
    long_ip[16..18].copy_from_slice(&tot.to_be_bytes());
    fix_ip_csum(&mut long_ip);
    expect_pass(long_ip, "an IP length past the frame");
    let mut long_udp = good.clone();
    long_udp[14 + 20 + 5] += 1;
    expect_pass(long_udp, "a UDP length past the IP payload");
    let mut short_udp = good.clone();
    short_udp[14 + 20 + 5] -= 1;
    expect_pass(short_udp, "a UDP length that cuts the question");
    let mut qinq = good.clone();
    qinq.splice(12..12, [0x81, 0x00, 0, 5, 0x81, 0x00, 0, 6]);
    expect_pass(qinq, "two VLAN tags");
    // Cut at every offset (BPF_PROG_TEST_RUN needs at least an Ethernet header, and
    // drivers never deliver less).
    for cut in 14..good.len() {
        expect_pass(good[..cut].to_vec(), &format!("the frame cut at {cut}"));
    }
    let six = frames::build(&Datagram::query(
        ip("2001:db8:100::7"),
        ip(SERVER6),
        9,
        query(
            1,
            "www.shop.example",
            RType::AAAA,
            edns(1232, true, vec![]),
            0,
        ),
    ));
    assert!(f.run(&six).is_some());
    for cut in 14..six.len() {
        expect_pass(six[..cut].to_vec(), &format!("the IPv6 frame cut at {cut}"));
    }
}

fn fix_ip_csum(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame[14 + 10] = 0;
    frame[14 + 11] = 0;
    let mut s = 0u32;
    for pair in frame[14..14 + ihl].chunks(2) {
        s += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    frame[14 + 10..14 + 12].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

#[test]
fn a_million_random_and_mutated_frames_never_get_a_wrong_reply() {
    if !privileged("a_million_random_and_mutated_frames_never_get_a_wrong_reply") {
        return;
    }
    let f = fixture(XDP_CONFIG);
    let seeds: Vec<Datagram> = [
        ("198.51.100.7", SERVER4, "www.shop.example", RType::A, None),
        (
            "198.51.100.200",
            SERVER4,
            "img.shop.example",
            RType::AAAA,
            edns(1232, true, vec![]),
        ),
        (
            "2001:db8:100::7",
            SERVER6,
            "shop.example",
            RType::MX,
            edns(
                4096,
                false,
                vec![EdnsOption::Cookie {
                    client: [7; 8],
                    server: vec![],
                }],
            ),
        ),
        ("192.0.2.50", SERVER4, "static.shop.example", RType::A, None),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (s, d, n, t, e))| {
        let mut dg = Datagram::query(
            ip(s),
            ip(d),
            50000 + i as u16,
            query(i as u16, n, t, e, 0x0100),
        );
        if i == 3 {
            dg.vlan = Some(7);
        }
        dg
    })
    .collect();
    let seed_frames: Vec<Vec<u8>> = seeds.iter().map(frames::build).collect();
    let mut x: u64 = 0x2545f4914f6cdd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut tx, mut total) = (0u64, 0u64);
    let rounds: u64 = std::env::var("XDP_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    for round in 0..rounds {
        let frame = if round % 8 == 0 {
            // Entirely random bytes with a plausible IPv4/UDP start half of the time.
            let len = (next() % 200) as usize + 14;
            let mut fr: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 16 == 0 && fr.len() > 40 {
                fr[..seed_frames[0].len().min(36)]
                    .copy_from_slice(&seed_frames[0][..seed_frames[0].len().min(36)]);
            }
            fr
        } else {
            let mut fr = seed_frames[(next() % seed_frames.len() as u64) as usize].clone();
            for _ in 0..1 + next() % 3 {
                let i = (next() as usize) % fr.len();
                fr[i] = next() as u8;
            }
            match next() % 6 {
                0 => {
                    let cut = 14 + (next() as usize) % (fr.len() - 14);
                    fr.truncate(cut);
                }
                1 => fr.push(next() as u8),
                _ => {}
            }
            fr
        };
        total += 1;
        let r = f.fp.test_run(&frame, 1).expect("test run");
        match r.action {
            XDP_PASS => assert_eq!(r.frame, frame, "a passed frame was changed"),
            XDP_TX => {
                tx += 1;
                // Only a well-formed query for a mapped name is answered, and the reply is
                // exactly what userspace sends to that query.
                let sent = frames::parse(&r.frame)
                    .unwrap_or_else(|e| panic!("malformed reply ({e}) to {frame:02x?}"));
                let asked = frames::parse_query(&frame).unwrap_or_else(|e| {
                    panic!("answered a frame that does not parse ({e}): {frame:02x?}")
                });
                let mut want = Vec::new();
                let o = respond(
                    &f.table,
                    1232,
                    &asked.payload,
                    asked.src,
                    Transport::Udp,
                    &mut want,
                );
                assert!(
                    matches!(
                        o,
                        Outcome::Answered {
                            precomputed: true,
                            truncated: false,
                            ..
                        }
                    ),
                    "XDP answered what userspace treats as {o:?}: {frame:02x?}"
                );
                assert_eq!(
                    sent.payload, want,
                    "reply differs from userspace for {frame:02x?}"
                );
            }
            other => panic!("action {other} for {frame:02x?}"),
        }
    }
    eprintln!("{total} frames, {tx} answered in XDP (every one identical to userspace)");
    assert!(
        tx > 0,
        "no mutated frame was still a valid query: the generator is broken"
    );
}

/// [`XDP_CONFIG`] with a second POP in the west and a latency probe at both, so the
/// catalog has the dynamic views near:pop1 and near:pop2.
fn config_with_near_views() -> String {
    XDP_CONFIG
        .replace(
            "listen = [\"192.0.2.10:80\"]\n",
            "listen = [\"192.0.2.10:80\"]\n[pops.probe]\nlisten = \"127.0.0.1:5355\"\n",
        )
        .replace(
            "[[customers]]",
            "[[pops]]\nname = \"pop2\"\nregion = \"west\"\n[pops.cache]\naddresses = [\"192.0.2.20\"]\nlisten = [\"192.0.2.20:80\"]\n[pops.probe]\nlisten = \"127.0.0.2:5355\"\n\n[[customers]]",
        )
}

#[test]
fn resolvers_placed_by_latency_get_their_view_in_the_program_and_others_are_sampled() {
    if !privileged("resolvers_placed_by_latency_get_their_view_in_the_program") {
        return;
    }
    let cfg = Config::from_toml(&config_with_near_views(), "xdp-test").expect("valid");
    let idle = idle_table(&cfg);
    let near2 = idle
        .catalog
        .near_views
        .iter()
        .find(|n| n.pop == "pop2")
        .expect("near:pop2")
        .view;
    // 198.51.100.7 is in the east view by prefix; latency placed it near pop2.
    let placed = ip("198.51.100.7");
    let views: std::collections::HashMap<IpAddr, u16> = [(placed, near2)].into();
    let table = dns_fastpath::answer::AnswerTable::build(
        idle.catalog.clone(),
        idle.selections.clone(),
        std::sync::Arc::new(views.clone()),
        2,
    );
    let settings = ProgramSettings {
        listen: cfg.pops[0].dns.as_ref().unwrap().listen.clone(),
        udp_payload: cfg.dns.udp_payload,
        track_resolvers: true,
    };
    let mut fp = FastPath::load(&settings, &table.catalog.views, &table)
        .unwrap_or_else(|e| panic!("loading the XDP program: {e}"));
    assert_eq!(fp.publish_resolver_views(&views).unwrap(), 1);
    let f = Fixture { table, fp };

    let img = |src: &str, id: u16| {
        Datagram::query(
            ip(src),
            ip(SERVER4),
            40000 + id,
            query(
                id,
                "img.shop.example",
                RType::A,
                edns(1232, false, vec![]),
                0,
            ),
        )
    };
    let a_of = |d: &Datagram| -> Vec<String> {
        let reply = f.xdp(d).expect("answered in XDP");
        Message::decode(&reply.payload)
            .unwrap()
            .answers
            .iter()
            .map(|r| r.rdata.to_string())
            .collect()
    };
    // The placed resolver gets the near:pop2 answer, byte-identical to userspace's.
    f.assert_same(&img("198.51.100.7", 1));
    assert_eq!(a_of(&img("198.51.100.7", 2)), ["192.0.2.20"]);
    // Its neighbour in the same prefix keeps the east answer.
    f.assert_same(&img("198.51.100.8", 3));
    assert_eq!(a_of(&img("198.51.100.8", 4)), ["192.0.2.10"]);

    // Unplaced sources are sampled into SEEN4 (1 in 16); placed ones never are.
    let mut fp = f.fp;
    fp.drain_seen().unwrap();
    for i in 0..400u16 {
        let q = img(
            if i % 2 == 0 {
                "198.51.100.9"
            } else {
                "198.51.100.7"
            },
            i,
        );
        let r = fp.test_run(&frames::build(&q), 1).expect("test run");
        assert_eq!(r.action, XDP_TX);
    }
    let seen = fp.drain_seen().unwrap();
    assert!(
        seen.contains(&ip("198.51.100.9")),
        "200 queries from an unplaced resolver were never sampled: {seen:?}"
    );
    assert!(!seen.contains(&placed), "a placed resolver was sampled");
    assert!(fp.drain_seen().unwrap().is_empty(), "drained");

    // Unplacing it removes the exact entry: back to the east view.
    assert_eq!(fp.publish_resolver_views(&Default::default()).unwrap(), 1);
    let r = fp
        .test_run(&frames::build(&img("198.51.100.7", 9)), 1)
        .unwrap();
    let reply = frames::parse(&r.frame).unwrap();
    let addrs: Vec<String> = Message::decode(&reply.payload)
        .unwrap()
        .answers
        .iter()
        .map(|r| r.rdata.to_string())
        .collect();
    assert_eq!(addrs, ["192.0.2.10"]);
}

/// The tally counters of `table`'s catalog as (domain name, view name, server id, answers),
/// drained.
fn drained(table: &dns_fastpath::answer::AnswerTable) -> Vec<(String, String, String, u64)> {
    let cat = &table.catalog;
    let mut v: Vec<_> = cat
        .tally
        .drain()
        .into_iter()
        .map(|c| {
            (
                cat.domains[c.domain].name.to_string(),
                cat.view_name(c.view).to_string(),
                cat.servers[c.server].id.clone(),
                c.answers,
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn answers_the_program_sends_are_counted_for_the_servers_in_them() {
    if !privileged("answers_the_program_sends_are_counted_for_the_servers_in_them") {
        return;
    }
    let mut f = fixture(XDP_CONFIG);
    assert!(drained(&f.table).is_empty());
    let ask = |f: &Fixture, src: &str, name: &str, t: RType, n: u16| {
        for i in 0..n {
            let d = Datagram::query(
                ip(src),
                ip(SERVER4),
                40000 + i,
                query(i, name, t, None, 0x0100),
            );
            assert!(f.xdp(&d).is_some(), "the program answers {name} {t:?}");
        }
    };
    // Seven answers for the east view, three for the west; a fixed record (MX) and the
    // zone apex are answered by the program but belong to no server.
    ask(&f, "198.51.100.7", "www.shop.example", RType::A, 7);
    ask(&f, "198.51.100.200", "WWW.shop.example", RType::A, 3);
    ask(&f, "198.51.100.7", "pair.shop.example", RType::A, 2);
    ask(&f, "198.51.100.7", "mail.shop.example", RType::MX, 5);
    assert!(
        drained(&f.table).is_empty(),
        "nothing reaches userspace's tallies until the hits are read"
    );
    assert_eq!(f.fp.drain_hits().unwrap(), 7 + 3 + 2);
    let got = drained(&f.table);
    let count = |domain: &str, view: &str| -> Vec<(String, u64)> {
        got.iter()
            .filter(|g| g.0 == domain && g.1 == view)
            .map(|g| (g.2.clone(), g.3))
            .collect()
    };
    let www_east = count("www.shop.example.", "east");
    assert_eq!(www_east.len(), 1, "{got:?}");
    assert_eq!(www_east[0].1, 7, "{got:?}");
    assert_eq!(count("www.shop.example.", "west")[0].1, 3, "{got:?}");
    // Two servers in each answer of pair: each counted twice.
    let pair = count("pair.shop.example.", "east");
    assert_eq!(pair.len(), 2, "{got:?}");
    assert!(pair.iter().all(|p| p.1 == 2), "{got:?}");
    assert_eq!(f.fp.drain_hits().unwrap(), 0, "a read takes the hits once");

    // Republishing the same table keeps every entry's slot: hits go on counting.
    f.fp.publish(&f.table).unwrap();
    ask(&f, "198.51.100.7", "www.shop.example", RType::A, 4);
    assert_eq!(f.fp.drain_hits().unwrap(), 4);
    assert_eq!(drained(&f.table).iter().map(|g| g.3).sum::<u64>(), 4);
    // Emptied map: hits sent before are read at the removal, nothing after.
    ask(&f, "198.51.100.7", "www.shop.example", RType::A, 2);
    f.fp.clear().unwrap();
    assert_eq!(drained(&f.table).iter().map(|g| g.3).sum::<u64>(), 2);
    assert_eq!(f.fp.drain_hits().unwrap(), 0);
}
