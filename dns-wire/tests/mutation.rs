//! Property test: mutate valid messages many times with a deterministic PRNG; decoding
//! never panics, and whatever decodes re-encodes to an exactly equal message.

mod common;

use common::sample_messages;
use dns_wire::{Message, QueryError, QueryView};

/// xorshift64*: small, deterministic, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn mutate(rng: &mut Rng, buf: &mut Vec<u8>, pool: &[Vec<u8>]) {
    let len = buf.len();
    match rng.below(10) {
        0 => {
            if len > 0 {
                let i = rng.below(len);
                buf[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            if len > 0 {
                let i = rng.below(len);
                buf[i] = rng.byte();
            }
        }
        2 => {
            let i = rng.below(len + 1);
            buf.insert(i, rng.byte());
        }
        3 => {
            if len > 0 {
                buf.remove(rng.below(len));
            }
        }
        4 => buf.truncate(rng.below(len + 1)),
        5 => {
            // A compression pointer somewhere, to an interesting offset.
            if len >= 2 {
                let i = rng.below(len - 1);
                let target = rng.below(len.max(1)) as u16;
                buf[i..i + 2].copy_from_slice(&(0xc000 | target).to_be_bytes());
            }
        }
        6 => {
            // A header count field.
            if len >= 12 {
                let field = 4 + 2 * rng.below(4);
                let v = [0u16, 1, 2, 3, 0xffff][rng.below(5)];
                buf[field..field + 2].copy_from_slice(&v.to_be_bytes());
            }
        }
        7 => {
            // Duplicate a chunk (records, names, options).
            if len > 0 {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                let chunk = buf[a..b].to_vec();
                let at = rng.below(len + 1);
                buf.splice(at..at, chunk);
            }
        }
        8 => {
            // Splice in a piece of another sample.
            let other = &pool[rng.below(pool.len())];
            if !other.is_empty() {
                let a = rng.below(other.len());
                let b = (a + 1 + rng.below(48)).min(other.len());
                let at = rng.below(len + 1);
                buf.splice(at..at, other[a..b].iter().copied());
            }
        }
        _ => {
            // Flip the QR bit or a length byte-ish value.
            if len > 2 {
                buf[2] ^= 0x80;
            }
        }
    }
}

fn check(input: &[u8], stats: &mut [usize; 3]) {
    match Message::decode(input) {
        Ok(m) => {
            stats[0] += 1;
            let first = m
                .try_encode()
                .expect("a decoded message is always encodable");
            let again = Message::decode(&first).expect("re-decode of our own encoding");
            assert!(
                again.eq_exact(&m),
                "round-trip changed the message: {input:02x?}"
            );
            assert_eq!(
                again.encode(),
                first,
                "encoding is not stable: {input:02x?}"
            );
        }
        Err(e) => {
            assert!(e.offset() <= input.len(), "{e} past the end");
        }
    }
    match QueryView::parse(input) {
        Ok(v) => {
            stats[1] += 1;
            let m = Message::decode(input).expect("QueryView accepted what Message rejects");
            assert_eq!(m.questions.len(), 1);
            assert_eq!(m.questions[0].name.as_wire(), v.qname_wire());
            assert_eq!(m.questions[0].qtype, v.qtype());
            assert_eq!(m.questions[0].qclass, v.qclass());
            assert_eq!(m.edns().map(|e| e.expect("edns")).as_ref(), v.edns());
            let mut out = [0u8; 255];
            let len = v.lowercase_qname(&mut out);
            assert_eq!(&out[..len], m.questions[0].name.to_lowercase().as_wire());
        }
        Err(QueryError::Malformed {
            question, error, ..
        }) => {
            stats[2] += 1;
            assert!(error.offset() <= input.len());
            if let Some(q) = question {
                assert!(12 + q.name_len + 4 <= input.len());
            }
        }
        Err(_) => {}
    }
}

#[test]
fn mutated_messages_never_panic_and_roundtrip() {
    let pool: Vec<Vec<u8>> = sample_messages().into_iter().map(|(_, b)| b).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut stats = [0usize; 3];
    let rounds = 4000;
    for sample in &pool {
        for _ in 0..rounds {
            let mut buf = sample.clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut buf, &pool);
            }
            check(&buf, &mut stats);
        }
    }
    let total = pool.len() * rounds;
    eprintln!(
        "decoded {}, queries {}, malformed queries {} of {total}",
        stats[0], stats[1], stats[2]
    );
    // The mutations must exercise both paths, not just produce garbage.
    assert!(
        stats[0] > total / 20,
        "too few decodable mutants: {stats:?} of {total}"
    );
    assert!(
        stats[1] > total / 50,
        "too few parseable queries: {stats:?} of {total}"
    );
    assert!(
        stats[2] > total / 50,
        "too few malformed queries: {stats:?} of {total}"
    );
}
