//! The authoritative DNS server through real clients: dig and kdig over UDP and TCP, and raw sockets for what they cannot send.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::{Server, test_config};
use dns_wire::{Message, Name, Question, RClass, RType};

fn server() -> Server {
    Server::start(&test_config())
}

/// A query message, for raw socket tests.
fn query(id: u16, name: &str, qtype: RType) -> Vec<u8> {
    let mut m = Message::default();
    m.header.id = id;
    m.questions.push(Question {
        name: Name::from_ascii(name).unwrap(),
        qtype,
        qclass: RClass::IN,
    });
    m.encode()
}

fn udp_exchange(s: &Server, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    sock.send_to(packet, s.dns).unwrap();
    let mut buf = [0u8; 4096];
    sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn answers_every_record_type() {
    let s = server();
    let d = s.dig(&["www.shop.example", "A"]);
    assert_eq!(d.status, "NOERROR");
    assert!(d.has_flag("aa"), "{}", d.raw);
    assert!(
        !d.has_flag("ra"),
        "an authoritative server does not offer recursion"
    );
    assert_eq!(d.answer.len(), 1);
    assert_eq!(d.answer[0].ttl, 30);
    assert_eq!(s.answers("www.shop.example", "AAAA"), ["2001:db8:1::10"]);
    assert_eq!(s.answers("mail.shop.example", "A"), ["203.0.113.25"]);
    assert_eq!(s.answers("shop.example", "TXT"), ["\"v=spf1 -all\""]);
    assert_eq!(s.answers("shop.example", "MX"), ["10 mail.shop.example."]);
    assert_eq!(
        s.answers("shop.example", "NS"),
        ["ns.pop-east.popnet.test.example."]
    );
    let soa = s.answers("shop.example", "SOA");
    assert_eq!(
        soa,
        ["ns.pop-east.popnet.test.example. hostmaster.popnet.test.example. 7 3600 600 604800 60"]
    );

    // NS answers carry the name servers' addresses.
    let ns = s.dig(&["shop.example", "NS"]);
    assert_eq!(ns.additional.len(), 1, "{}", ns.raw);
    assert_eq!(ns.additional[0].data, "127.0.0.1");

    // A CNAME inside our zones is followed; one leaving them is not.
    let c = s.dig(&["static.shop.example", "A"]);
    assert_eq!(c.answer.len(), 2, "{}", c.raw);
    assert_eq!(
        (c.answer[0].rtype.as_str(), c.answer[0].data.as_str()),
        ("CNAME", "img.shop.example.")
    );
    assert_eq!(c.answer[1].name, "img.shop.example.");
    assert_eq!(
        s.answers("static.shop.example", "CNAME"),
        ["img.shop.example."]
    );
    let away = s.dig(&["away.shop.example", "A"]);
    assert_eq!(away.status, "NOERROR");
    assert_eq!(away.answer.len(), 1);
    assert_eq!(away.answer[0].data, "elsewhere.example.");
}

#[test]
fn internal_services_are_names_too() {
    let s = server();
    assert_eq!(
        s.answers("ns.pop-east.popnet.test.example", "A"),
        ["127.0.0.1"]
    );
    assert_eq!(
        s.answers("cache.pop-east.popnet.test.example", "A"),
        ["192.0.2.1"]
    );
    assert_eq!(
        s.answers("cache.pop-east.popnet.test.example", "AAAA"),
        ["2001:db8::1"]
    );
    assert_eq!(
        s.answers("cache.pop-west.popnet.test.example", "A"),
        ["192.0.2.2"]
    );
    assert_eq!(
        s.answers("probe.pop-east.popnet.test.example", "A"),
        ["127.0.0.1"]
    );
    assert_eq!(
        s.answers("log.pop-east.popnet.test.example", "A"),
        ["127.0.0.9"]
    );
    assert_eq!(
        s.dig(&["log.pop-west.popnet.test.example", "A"]).status,
        "NXDOMAIN"
    );
    // Every log server also by its own name, for the senders of the customers it keeps.
    assert_eq!(
        s.answers("log1.log.popnet.test.example", "A"),
        ["127.0.0.9"]
    );
    assert_eq!(
        s.dig(&["log2.log.popnet.test.example", "A"]).status,
        "NXDOMAIN"
    );
}

#[test]
fn nxdomain_nodata_and_empty_non_terminals() {
    let s = server();
    let nx = s.dig(&["nothing.shop.example", "A"]);
    assert_eq!(nx.status, "NXDOMAIN");
    assert!(nx.has_flag("aa"));
    assert!(nx.answer.is_empty());
    assert_eq!(nx.authority.len(), 1);
    assert_eq!(nx.authority[0].rtype, "SOA");
    assert_eq!(nx.authority[0].name, "shop.example.");
    assert_eq!(
        nx.authority[0].ttl, 60,
        "negative TTL = min(SOA TTL, MINIMUM)"
    );

    let nodata = s.dig(&["mail.shop.example", "TXT"]);
    assert_eq!(nodata.status, "NOERROR");
    assert!(nodata.answer.is_empty());
    assert_eq!(nodata.authority[0].rtype, "SOA");

    // a.b.shop.example holds nothing but has a child: NODATA, not NXDOMAIN (RFC 8020).
    let ent = s.dig(&["a.b.shop.example", "A"]);
    assert_eq!(ent.status, "NOERROR", "{}", ent.raw);
    assert_eq!(ent.authority[0].rtype, "SOA");
    assert_eq!(s.dig(&["x.deep.a.b.shop.example", "A"]).status, "NXDOMAIN");
    // A type nobody stores is NODATA too.
    assert_eq!(s.dig(&["www.shop.example", "SRV"]).status, "NOERROR");
}

#[test]
fn refuses_names_outside_its_zones_and_never_recurses() {
    let s = server();
    for name in ["example.com", "example", ".", "shop.example.com"] {
        let d = s.dig(&["+rec", name, "A"]);
        assert_eq!(d.status, "REFUSED", "{name}: {}", d.raw);
        assert!(!d.has_flag("aa"), "{name}");
        assert!(!d.has_flag("ra"), "{name}");
        assert!(d.answer.is_empty());
    }
    let d = s.dig(&["+rec", "shop.example", "A"]);
    assert!(d.has_flag("rd"), "RD is copied");
    assert!(!d.has_flag("ra"));
}

#[test]
fn preserves_the_question_case() {
    let s = server();
    let d = s.dig(&["WwW.ShOp.ExAmPlE", "A"]);
    assert_eq!(d.status, "NOERROR");
    assert!(
        d.question[0].starts_with("WwW.ShOp.ExAmPlE."),
        "{:?}",
        d.question
    );
    assert_eq!(d.answer[0].name, "WwW.ShOp.ExAmPlE.");
    // Raw bytes: the question comes back byte for byte.
    let q = query(0x2020, "mAiL.sHoP.eXaMpLe", RType::A);
    let r = udp_exchange(&s, &q).expect("answer");
    let qlen = q.len() - 12;
    assert_eq!(&r[12..12 + qlen], &q[12..], "question bytes differ");
    assert_eq!(&r[..2], &[0x20, 0x20], "id copied");
}

#[test]
fn tcp_with_several_pipelined_queries_per_connection() {
    let s = server();
    let d = s.dig(&["+tcp", "www.shop.example", "A"]);
    assert_eq!(d.status, "NOERROR");
    assert!(d.raw.contains("(TCP)"), "{}", d.raw);

    let mut conn = TcpStream::connect(s.dns).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let names = [
        "www.shop.example",
        "mail.shop.example",
        "nothing.shop.example",
    ];
    let mut wire = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let q = query(100 + i as u16, n, RType::A);
        wire.extend_from_slice(&(q.len() as u16).to_be_bytes());
        wire.extend_from_slice(&q);
    }
    // All three in one write, split at an awkward place to exercise reassembly.
    conn.write_all(&wire[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    conn.write_all(&wire[5..]).unwrap();
    for (i, n) in names.iter().enumerate() {
        let mut len = [0u8; 2];
        conn.read_exact(&mut len).unwrap();
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        conn.read_exact(&mut msg).unwrap();
        let m = Message::decode(&msg).unwrap();
        assert_eq!(m.header.id, 100 + i as u16);
        assert_eq!(m.questions[0].name.to_string(), format!("{n}."));
        let want_rcode = if n.starts_with("nothing") { 3 } else { 0 };
        assert_eq!(m.header.rcode_low(), want_rcode);
    }
    // The connection stays open for more.
    let q = query(7, "shop.example", RType::SOA);
    conn.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    conn.write_all(&q).unwrap();
    let mut len = [0u8; 2];
    conn.read_exact(&mut len).unwrap();
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    conn.read_exact(&mut msg).unwrap();
    assert_eq!(Message::decode(&msg).unwrap().answers.len(), 1);
}

#[test]
fn edns_is_echoed_with_our_payload_and_the_do_bit() {
    let s = server();
    let d = s.dig(&["+bufsize=4096", "www.shop.example", "A"]);
    let edns = d.edns.expect("OPT in the response");
    assert!(edns.contains("version: 0"), "{edns}");
    assert!(edns.contains("udp: 1232"), "{edns}");
    assert!(!edns.contains("do"), "{edns}");
    let d = s.dig(&["+dnssec", "www.shop.example", "A"]);
    assert!(d.edns.expect("OPT").contains("flags: do"));
    let d = s.dig(&["+noedns", "www.shop.example", "A"]);
    assert!(
        d.edns.is_none(),
        "no OPT back without one in the query: {}",
        d.raw
    );
    assert_eq!(d.status, "NOERROR");
}

#[test]
fn edns_version_above_zero_is_badvers() {
    let s = server();
    let d = s.dig(&["+edns=1", "+noednsnegotiation", "www.shop.example", "A"]);
    assert_eq!(d.status, "BADVERS", "{}", d.raw);
    assert!(d.edns.expect("OPT").contains("version: 0"));
    assert!(d.answer.is_empty());
}

#[test]
fn truncation_and_tcp_fallback() {
    let s = server();
    // 700 bytes of TXT do not fit in 512: TC=1 and no records.
    let d = s.dig(&["+noedns", "+ignore", "big.shop.example", "TXT"]);
    assert!(d.has_flag("tc"), "{}", d.raw);
    assert!(d.answer.is_empty());
    assert!(d.has_flag("aa"));
    // With EDNS 1232 it fits over UDP.
    let d = s.dig(&["+ignore", "big.shop.example", "TXT"]);
    assert!(!d.has_flag("tc"), "{}", d.raw);
    assert_eq!(d.answer.len(), 1);
    // A client advertising 512 gets TC, and dig falls back to TCP on its own.
    let d = s.dig(&["+bufsize=512", "big.shop.example", "TXT"]);
    assert!(
        d.raw.contains("Truncated, retrying in TCP mode"),
        "{}",
        d.raw
    );
    assert_eq!(d.answer.len(), 1);
    assert!(d.answer[0].data.len() > 700);
}

#[test]
fn any_gets_one_rrset() {
    let s = server();
    let d = s.dig(&["shop.example", "ANY"]);
    assert_eq!(d.status, "NOERROR");
    let types: std::collections::HashSet<&str> =
        d.answer.iter().map(|r| r.rtype.as_str()).collect();
    assert_eq!(types.len(), 1, "RFC 8482: one RRset, got {types:?}");
    let d = s.dig(&["www.shop.example", "ANY"]);
    assert_eq!(d.answer.len(), 1);
    assert_eq!(d.answer[0].rtype, "A");
}

#[test]
fn zone_transfers_are_refused() {
    let s = server();
    let d = s.dig(&["shop.example", "AXFR"]);
    assert!(d.raw.contains("Transfer failed"), "{}", d.raw);
    let d = s.kdig(&["shop.example", "AXFR"]);
    assert!(d.raw.contains("REFUSED"), "{}", d.raw);
    let r = udp_exchange(&s, &query(9, "shop.example", RType::IXFR)).expect("answer");
    assert_eq!(r[3] & 0x0f, 5, "IXFR → REFUSED");
}

#[test]
fn unknown_opcodes_and_classes() {
    let s = server();
    let d = s.dig(&["+opcode=3", "www.shop.example", "A"]);
    assert_eq!(d.status, "NOTIMP", "{}", d.raw);
    let d = s.dig(&["+opcode=5", "www.shop.example", "A"]);
    assert_eq!(d.status, "NOTIMP", "UPDATE is not accepted: {}", d.raw);
    let d = s.dig(&["-c", "CH", "version.bind", "TXT"]);
    assert_eq!(d.status, "REFUSED");
    let d = s.dig(&["shop.example", "MAILB"]);
    assert_eq!(d.status, "NOTIMP");
}

#[test]
fn malformed_queries_get_formerr_or_silence_never_a_crash() {
    let mut s = server();
    // Too short for a header: silence.
    assert_eq!(udp_exchange(&s, &[1, 2, 3]), None);
    // A response (QR=1): silence.
    let mut resp = query(1, "www.shop.example", RType::A);
    resp[2] |= 0x80;
    assert_eq!(udp_exchange(&s, &resp), None);
    // Two questions: FORMERR with the id.
    let mut two = query(0x1234, "www.shop.example", RType::A);
    two[5] = 2;
    let r = udp_exchange(&s, &two).expect("FORMERR");
    assert_eq!((&r[..2], r[3] & 0x0f), (&[0x12u8, 0x34][..], 1));
    // A label running past the end.
    let mut cut = query(2, "www.shop.example", RType::A);
    cut.truncate(20);
    let r = udp_exchange(&s, &cut).expect("FORMERR");
    assert_eq!(r[3] & 0x0f, 1);
    // A compression pointer in the question.
    let mut ptr = query(3, "www.shop.example", RType::A);
    ptr[12] = 0xc0;
    ptr[13] = 0x0c;
    assert_eq!(udp_exchange(&s, &ptr).expect("FORMERR")[3] & 0x0f, 1);
    // Trailing garbage.
    let mut tail = query(4, "www.shop.example", RType::A);
    tail.extend_from_slice(&[0xde, 0xad]);
    assert_eq!(udp_exchange(&s, &tail).expect("FORMERR")[3] & 0x0f, 1);
    // A query with an answer section.
    let mut m = Message::decode(&query(5, "www.shop.example", RType::A)).unwrap();
    m.answers.push(dns_wire::Record {
        name: Name::from_ascii("x.shop.example").unwrap(),
        rtype: RType::A,
        rclass: RClass::IN,
        ttl: 1,
        rdata: dns_wire::RData::A([192, 0, 2, 1].into()),
    });
    assert_eq!(udp_exchange(&s, &m.encode()).expect("FORMERR")[3] & 0x0f, 1);
    // QTYPE OPT.
    assert_eq!(
        udp_exchange(&s, &query(6, "www.shop.example", RType::OPT)).expect("FORMERR")[3] & 0x0f,
        1
    );

    // Thousands of mutated queries, then the server still answers.
    let base = query(7, "www.shop.example", RType::A);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..20_000 {
        let mut p = base.clone();
        for _ in 0..(1 + (x % 4)) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % p.len();
            p[i] = (x >> 32) as u8;
        }
        if x.is_multiple_of(5) {
            p.truncate((x as usize >> 8) % p.len());
        }
        let _ = sock.send_to(&p, s.dns);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.alive(), "the server died");
    assert_eq!(s.dig(&["www.shop.example", "A"]).status, "NOERROR");
    let st = s.admin_json("/stats");
    assert!(st["queries"]["formerr"].as_u64().unwrap() > 0);
    assert!(st["queries"]["received"].as_u64().unwrap() > 1_000);
}

#[test]
fn one_udp_socket_per_worker_with_reuseport() {
    let s = Server::start_with(&test_config(), 3);
    let port = format!(":{:04X} ", s.dns.port());
    let udp = std::fs::read_to_string("/proc/net/udp").unwrap();
    let bound = udp
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| format!("{a} ").ends_with(&port))
        })
        .count();
    assert_eq!(
        bound,
        3,
        "expected 3 UDP sockets on port {}:\n{udp}",
        s.dns.port()
    );
    // A second server on the same port is refused, instead of silently sharing it (its
    // own spool, or the first one's spool lock would refuse it first).
    let dir = tempfile::tempdir().unwrap();
    let second = dir.path().join("second.toml");
    std::fs::write(
        &second,
        common::own_spool(&test_config(), &dir.path().join("spool")),
    )
    .unwrap();
    let out = std::process::Command::new(common::popnet_bin())
        .args(["dns", "--config"])
        .arg(&second)
        .args([
            "--listen",
            &s.dns.to_string(),
            "--reports",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains("already running"),
        "{err}"
    );
}

#[test]
fn client_subnet_chooses_the_view_and_sets_the_scope() {
    let s = server();
    // No metrics: each view prefers the origin in its own region.
    let east = s.dig(&["+subnet=198.51.100.0/24", "www.shop.example", "A"]);
    assert_eq!(east.answer[0].data, "203.0.113.10");
    let cs = east.client_subnet.expect("ECS echoed");
    assert!(cs.contains("198.51.100.0/24/24"), "{cs}");
    let west = s.dig(&["+subnet=203.0.113.0/24", "www.shop.example", "A"]);
    assert_eq!(west.answer[0].data, "203.0.113.20");
    // A name that is the same everywhere gets scope 0.
    let fixed = s.dig(&["+subnet=203.0.113.0/24", "mail.shop.example", "A"]);
    assert!(
        fixed
            .client_subnet
            .expect("ECS")
            .contains("203.0.113.0/24/0")
    );
    // Bits set beyond the source prefix are a FORMERR (RFC 7871 §6): 203.0.113/20
    // leaves the low 4 bits of 113 set.
    let mut q = query(11, "www.shop.example", RType::A);
    q[11] = 1; // ARCOUNT
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 11]);
    q.extend_from_slice(&[0, 8, 0, 7, 0, 1, 20, 0, 203, 0, 113]);
    assert_eq!(udp_exchange(&s, &q).expect("FORMERR")[3] & 0x0f, 1);
    // The same with the bits cleared is answered.
    let n = q.len();
    q[n - 1] = 112;
    let r = udp_exchange(&s, &q).expect("answer");
    assert_eq!(r[3] & 0x0f, 0);
}

fn tcp_query(conn: &mut TcpStream, id: u16, name: &str) -> std::io::Result<Message> {
    let q = query(id, name, RType::A);
    conn.write_all(&(q.len() as u16).to_be_bytes())?;
    conn.write_all(&q)?;
    let mut len = [0u8; 2];
    conn.read_exact(&mut len)?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    conn.read_exact(&mut msg)?;
    Ok(Message::decode(&msg).expect("response parses"))
}

/// True once the server has closed `conn` (a read sees EOF or a reset).
fn closed(conn: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(conn.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn idle_tcp_connections_are_closed_and_the_oldest_makes_room() {
    let cfg = test_config().replacen(
        "[[views]]",
        "[dns]\ntcp_idle_timeout = \"400ms\"\ntcp_max_connections = 2\n\n[[views]]",
        1,
    );
    let s = Server::start(&cfg);

    // An idle client is closed after the timeout; an active one is not.
    let mut idle = TcpStream::connect(s.dns).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    tcp_query(&mut idle, 1, "www.shop.example").unwrap();
    let t = std::time::Instant::now();
    assert!(closed(&mut idle), "idle connection left open");
    let after = t.elapsed();
    assert!(
        after >= Duration::from_millis(300) && after < Duration::from_secs(2),
        "closed after {after:?}"
    );

    // A client that sends half a length prefix and stalls is timed out too.
    let mut slow = TcpStream::connect(s.dns).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    slow.write_all(&[0]).unwrap();
    assert!(closed(&mut slow), "stalled client left open");

    // At the cap, a new connection closes the one idle longest.
    let mut a = TcpStream::connect(s.dns).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    tcp_query(&mut a, 2, "www.shop.example").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut b = TcpStream::connect(s.dns).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    tcp_query(&mut b, 3, "www.shop.example").unwrap();
    let mut c = TcpStream::connect(s.dns).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(
        tcp_query(&mut c, 4, "www.shop.example").unwrap().header.id,
        4
    );
    assert!(
        closed(&mut a),
        "the oldest connection should have made room"
    );
    assert_eq!(
        tcp_query(&mut b, 5, "mail.shop.example").unwrap().header.id,
        5
    );
}
