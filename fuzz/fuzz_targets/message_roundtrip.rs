//! Fuzz target: whatever `Message::decode` accepts re-encodes and re-decodes exactly.
#![no_main]

use dns_wire::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(first) = Message::decode(data) else {
        return;
    };
    let bytes = first
        .try_encode()
        .expect("a decoded message must be encodable");
    assert_eq!(first.encode(), bytes);
    let again = Message::decode(&bytes).expect("our own encoding must decode");
    assert!(
        again.eq_exact(&first),
        "round-trip changed the message:\n{first:#?}\n{again:#?}"
    );
    assert_eq!(again.encode(), bytes, "encoding is not stable");
});
