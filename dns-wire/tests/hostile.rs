//! Decoding hostile and broken input: every case must be a typed error, never a panic.

mod common;

use common::{n, query, sample_messages};
use dns_wire::{DecodeError, Edns, EdnsOption, Message, QueryError, QueryView, RType};

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    [id, flags, qd, an, ns, ar]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

/// A message with one question `name` (raw wire bytes), type A class IN.
fn with_qname(name: &[u8]) -> Vec<u8> {
    let mut b = header(1, 0, 1, 0, 0, 0);
    b.extend_from_slice(name);
    b.extend_from_slice(&[0, 1, 0, 1]);
    b
}

fn decode_err(b: &[u8]) -> DecodeError {
    Message::decode(b).expect_err("must not decode")
}

fn view_err(b: &[u8]) -> DecodeError {
    match QueryView::parse(b) {
        Err(QueryError::Malformed { error, .. }) => error,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

/// The question "www.example.com A IN" at 12..33, then `records` raw, with counts.
fn msg_with_records(an: u16, ns: u16, ar: u16, records: &[u8]) -> Vec<u8> {
    let mut b = header(2, 0, 1, an, ns, ar);
    b.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
    b.extend_from_slice(records);
    b
}

const OPT_EMPTY: &[u8] = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00";

fn opt_with(options: &[u8]) -> Vec<u8> {
    let mut r = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00".to_vec();
    r.extend_from_slice(&(options.len() as u16).to_be_bytes());
    r.extend_from_slice(options);
    r
}

#[test]
fn pointer_loops_and_bad_pointers() {
    // Self pointer in the question.
    assert_eq!(
        decode_err(&with_qname(b"\xc0\x0c")),
        DecodeError::BadPointer { offset: 12 }
    );
    // Label then a pointer back to the start of the same name: a loop.
    assert_eq!(
        decode_err(&with_qname(b"\x01a\xc0\x0c")),
        DecodeError::BadPointer { offset: 14 }
    );
    // Forward pointer (to the QTYPE bytes after the name).
    assert_eq!(
        decode_err(&with_qname(b"\xc0\x0e")),
        DecodeError::BadPointer { offset: 12 }
    );
    // Pointer past the end of the buffer.
    assert_eq!(
        decode_err(&with_qname(b"\xff\xff")),
        DecodeError::BadPointer { offset: 12 }
    );
    // Pointer into the header.
    assert_eq!(
        decode_err(&with_qname(b"\xc0\x04")),
        DecodeError::BadPointer { offset: 12 }
    );
    // Answer owner pointing at itself; and a two-step loop through the question name,
    // whose own pointer would go forward.
    let b = msg_with_records(1, 0, 0, b"\xc0\x21\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00");
    assert_eq!(decode_err(&b), DecodeError::BadPointer { offset: 33 });
    let mut b = header(3, 0, 1, 1, 0, 0);
    b.extend_from_slice(b"\x01a\xc0\x15\x00\x01\x00\x01"); // 12: "a" -> 21 (forward)
    b.extend_from_slice(b"\x01b\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00"); // 20
    assert_eq!(decode_err(&b), DecodeError::BadPointer { offset: 14 });
    // Pointer in the question is never accepted by QueryView, even a valid one.
    let mut q = query(4, "www.example.com", RType::A, None);
    q.questions.push(q.questions[0].clone());
    let two = q.encode();
    assert!(Message::decode(&two).is_ok());
    let mut one = two.clone();
    one[5] = 1; // QDCOUNT = 1, second question becomes trailing bytes
    assert!(matches!(
        view_err(&one),
        DecodeError::TrailingBytes { offset: 33 }
    ));
    let ptr_q = with_qname(b"\xc0\x0c");
    assert_eq!(view_err(&ptr_q), DecodeError::BadPointer { offset: 12 });
}

#[test]
fn a_chain_of_pointers_is_bounded() {
    // 200 names, each a pointer to the previous one: every pointer goes strictly
    // backwards, so this is legal until the hop cap.
    let mut b = header(5, 0, 1, 0, 0, 0);
    b.extend_from_slice(b"\x01a\x00");
    for i in 0..200u16 {
        let prev = if i == 0 { 12 } else { 15 + 2 * (i - 1) };
        b.extend_from_slice(&(0xc000 | prev).to_be_bytes());
    }
    let last = 15 + 2 * 199;
    let mut d = dns_wire::Decoder::new(&b).with_pointer_floor(12);
    d.seek(15 + 2 * 127).unwrap();
    assert_eq!(d.read_name().unwrap(), n("a"));
    d.seek(last).unwrap();
    assert!(matches!(
        d.read_name(),
        Err(DecodeError::TooManyPointers { .. })
    ));
}

#[test]
fn reserved_label_types() {
    assert_eq!(
        decode_err(&with_qname(b"\x40\x00")),
        DecodeError::BadLabelType { offset: 12 }
    );
    assert_eq!(
        decode_err(&with_qname(b"\x80\x00")),
        DecodeError::BadLabelType { offset: 12 }
    );
    assert_eq!(
        decode_err(&with_qname(b"\x01a\x41\x00")),
        DecodeError::BadLabelType { offset: 14 }
    );
    assert_eq!(
        view_err(&with_qname(b"\x80\x00")),
        DecodeError::BadLabelType { offset: 12 }
    );
}

fn long_name(last_label: usize) -> Vec<u8> {
    let mut w = Vec::new();
    for _ in 0..3 {
        w.push(63);
        w.extend_from_slice(&[b'a'; 63]);
    }
    w.push(last_label as u8);
    w.extend(std::iter::repeat_n(b'b', last_label));
    w.push(0);
    w
}

#[test]
fn name_and_label_length_limits() {
    let ok = long_name(61);
    assert_eq!(ok.len(), 255);
    let m = Message::decode(&with_qname(&ok)).unwrap();
    assert_eq!(m.questions[0].name.wire_len(), 255);
    let packet = with_qname(&ok);
    let v = QueryView::parse(&packet).unwrap();
    assert_eq!(v.qname_wire(), &ok[..]);

    let bad = long_name(62);
    assert_eq!(bad.len(), 256);
    assert_eq!(
        decode_err(&with_qname(&bad)),
        DecodeError::NameTooLong { offset: 12 + 192 }
    );
    assert_eq!(
        view_err(&with_qname(&bad)),
        DecodeError::NameTooLong { offset: 12 + 192 }
    );

    // 255 bytes reached through a pointer: the suffix is counted.
    let via_pointer = |prefix: &[u8]| {
        let mut b = header(6, 0, 2, 0, 0, 0);
        b.extend_from_slice(&long_name(61)[64..]); // 12: a 191-byte name
        b.extend_from_slice(&[0, 1, 0, 1]);
        b.extend_from_slice(prefix);
        b.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        b
    };
    let mut l63 = vec![63];
    l63.extend_from_slice(&[b'c'; 63]);
    let b = via_pointer(&l63);
    assert_eq!(
        Message::decode(&b).unwrap().questions[1].name.wire_len(),
        255
    );
    let mut l62 = b"\x01d\x3e".to_vec();
    l62.extend_from_slice(&[b'c'; 62]);
    let b = via_pointer(&l62);
    // 65 + 64 + 64 bytes so far: the 61-byte label at 12 + 128 (plus the root) makes 256.
    assert_eq!(
        decode_err(&b),
        DecodeError::NameTooLong { offset: 12 + 128 }
    );

    // Label of 63 ok; 64 is 0x40, a reserved label type.
    let mut l63 = vec![63];
    l63.extend_from_slice(&[b'x'; 63]);
    l63.push(0);
    assert!(Message::decode(&with_qname(&l63)).is_ok());
    let mut l64 = vec![64];
    l64.extend_from_slice(&[b'x'; 64]);
    l64.push(0);
    assert_eq!(
        decode_err(&with_qname(&l64)),
        DecodeError::BadLabelType { offset: 12 }
    );
    assert!(dns_wire::Name::from_ascii(&"x".repeat(64)).is_err());
}

#[test]
fn every_truncation_of_every_sample_fails() {
    for (label, msg) in sample_messages() {
        assert!(Message::decode(&msg).is_ok(), "{label} decodes");
        for i in 0..msg.len() {
            let cut = &msg[..i];
            assert!(Message::decode(cut).is_err(), "{label} cut at {i} decoded");
            if let Ok(v) = QueryView::parse(cut) {
                panic!("{label} cut at {i} parsed as a query: {v:?}");
            }
        }
    }
}

#[test]
fn wrong_rdlength_for_a() {
    let a4 = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01";
    assert!(Message::decode(&msg_with_records(1, 0, 0, a4)).is_ok());
    let a5 = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x05\xc0\x00\x02\x01\x01";
    assert!(matches!(
        decode_err(&msg_with_records(1, 0, 0, a5)),
        DecodeError::BadRdata {
            offset: 49,
            rtype: 1,
            ..
        }
    ));
    let a3 = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x03\xc0\x00\x02";
    assert!(matches!(
        decode_err(&msg_with_records(1, 0, 0, a3)),
        DecodeError::BadRdata {
            offset: 45,
            rtype: 1,
            ..
        }
    ));
    // RDLENGTH past the end of the message.
    let long = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x09\xc0\x00\x02\x01";
    assert!(matches!(
        decode_err(&msg_with_records(1, 0, 0, long)),
        DecodeError::Truncated { offset: 45, .. }
    ));
    // A CNAME whose name runs past RDLENGTH.
    let cname = b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x02\x03www\x00";
    assert!(matches!(
        decode_err(&msg_with_records(1, 0, 0, cname)),
        DecodeError::BadRdata { rtype: 5, .. }
    ));
    // The same records in a query are malformed for QueryView too.
    assert!(matches!(
        view_err(&msg_with_records(1, 0, 0, a5)),
        DecodeError::BadRdata {
            offset: 49,
            rtype: 1,
            ..
        }
    ));
}

#[test]
fn counts_claiming_more_than_present() {
    let a = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01";
    assert!(matches!(
        decode_err(&msg_with_records(2, 0, 0, a)),
        DecodeError::Truncated { offset: 49, .. }
    ));
    assert!(matches!(
        decode_err(&msg_with_records(0xffff, 0xffff, 0xffff, a)),
        DecodeError::Truncated { .. }
    ));
    let mut many_q = header(1, 0, 0xffff, 0, 0, 0);
    many_q.extend_from_slice(b"\x00\x00\x01\x00\x01");
    assert!(matches!(
        decode_err(&many_q),
        DecodeError::Truncated { offset: 17, .. }
    ));
    assert_eq!(
        view_err(&many_q),
        DecodeError::BadQuestionCount {
            offset: 4,
            count: 0xffff
        }
    );
    assert!(matches!(
        view_err(&msg_with_records(0, 0, 1, b"")),
        DecodeError::Truncated { offset: 33, .. }
    ));
    // Fewer records claimed than present: trailing bytes.
    assert_eq!(
        decode_err(&msg_with_records(0, 0, 0, a)),
        DecodeError::TrailingBytes { offset: 33 }
    );
}

#[test]
fn opt_placement_rules() {
    let mut two = OPT_EMPTY.to_vec();
    two.extend_from_slice(OPT_EMPTY);
    assert_eq!(
        decode_err(&msg_with_records(0, 0, 2, &two)),
        DecodeError::MultipleOpt { offset: 44 }
    );
    assert_eq!(
        view_err(&msg_with_records(0, 0, 2, &two)),
        DecodeError::MultipleOpt { offset: 44 }
    );
    assert_eq!(
        decode_err(&msg_with_records(1, 0, 0, OPT_EMPTY)),
        DecodeError::OptNotInAdditional { offset: 33 }
    );
    assert_eq!(
        view_err(&msg_with_records(0, 1, 0, OPT_EMPTY)),
        DecodeError::OptNotInAdditional { offset: 33 }
    );
    let mut named = b"\x01x\x00".to_vec();
    named.extend_from_slice(&OPT_EMPTY[1..]);
    assert_eq!(
        decode_err(&msg_with_records(0, 0, 1, &named)),
        DecodeError::OptNotRoot { offset: 33 }
    );
    assert_eq!(
        view_err(&msg_with_records(0, 0, 1, &named)),
        DecodeError::OptNotRoot { offset: 33 }
    );
    // A compressed owner that points at a root byte is still the root.
    let mut b = msg_with_records(0, 0, 1, b"");
    b.extend_from_slice(b"\xc0\x1c");
    b.extend_from_slice(&OPT_EMPTY[1..]);
    assert!(Message::decode(&b).unwrap().edns().unwrap().is_ok());
    assert!(QueryView::parse(&b).unwrap().edns().is_some());
}

fn ecs_case(option: &[u8]) -> (DecodeError, DecodeError) {
    let b = msg_with_records(0, 0, 1, &opt_with(option));
    (decode_err(&b), view_err(&b))
}

#[test]
fn bad_client_subnet_options() {
    // Non-zero bits past a /23 prefix (offset of the last address byte: 33+11+4+4+2).
    let (d, v) = ecs_case(b"\x00\x08\x00\x07\x00\x01\x17\x00\xc0\x00\x03");
    assert_eq!(
        d,
        DecodeError::BadEdnsOption {
            offset: 54,
            code: 8,
            reason: "ECS address bits set past the source prefix"
        }
    );
    assert_eq!(d, v);
    // Family 3.
    let (d, v) = ecs_case(b"\x00\x08\x00\x04\x00\x03\x00\x00");
    assert!(matches!(
        d,
        DecodeError::BadEdnsOption {
            offset: 48,
            code: 8,
            ..
        }
    ));
    assert_eq!(d, v);
    // Address longer than the prefix needs.
    let (d, v) = ecs_case(b"\x00\x08\x00\x08\x00\x01\x18\x00\xc0\x00\x02\x00");
    assert!(matches!(d, DecodeError::BadEdnsOption { code: 8, .. }));
    assert_eq!(d, v);
    // Address shorter than the prefix needs.
    let (d, _) = ecs_case(b"\x00\x08\x00\x06\x00\x01\x18\x00\xc0\x00");
    assert!(matches!(d, DecodeError::BadEdnsOption { code: 8, .. }));
    // IPv4 source prefix 33.
    let (d, _) = ecs_case(b"\x00\x08\x00\x09\x00\x01\x21\x00\xc0\x00\x02\x01\x00");
    assert!(matches!(d, DecodeError::BadEdnsOption { code: 8, .. }));
    // Option length past the OPT RDATA.
    let (d, v) = ecs_case(b"\x00\x08\x00\x09\x00\x01\x18\x00\xc0\x00\x02");
    assert!(matches!(
        d,
        DecodeError::BadEdnsOption {
            offset: 44,
            code: 8,
            ..
        }
    ));
    assert_eq!(d, v);
    // Cookie of 12 bytes.
    let (d, _) = ecs_case(b"\x00\x0a\x00\x0c\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c");
    assert!(matches!(d, DecodeError::BadEdnsOption { code: 10, .. }));
    // A good ECS still decodes.
    let b = msg_with_records(
        0,
        0,
        1,
        &opt_with(b"\x00\x08\x00\x07\x00\x01\x17\x00\xc0\x00\x02"),
    );
    let edns = Message::decode(&b).unwrap().edns().unwrap().unwrap();
    assert!(matches!(edns.options[0], EdnsOption::ClientSubnet(ref c) if c.source_prefix == 23));
    assert_eq!(Some(&edns), QueryView::parse(&b).unwrap().edns());
}

#[test]
fn edns_version_above_zero_still_parses() {
    let e = Edns {
        version: 1,
        ..Edns::default()
    };
    let b = query(9, "example.com", RType::A, Some(e.clone())).encode();
    let v = QueryView::parse(&b).unwrap();
    assert_eq!(v.edns(), Some(&e));
    assert_eq!(v.opt_count(), 1);
}

#[test]
fn garbage_never_panics() {
    for len in 0..64usize {
        for fill in [0x00u8, 0xc0, 0xff, 0x3f, 0x01, 0x29] {
            let b = vec![fill; len];
            let _ = Message::decode(&b);
            let _ = QueryView::parse(&b);
        }
    }
}
