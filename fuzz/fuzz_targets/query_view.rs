//! Fuzz target: `QueryView::parse` never panics and agrees with `Message::decode`.
#![no_main]

use dns_wire::{Message, QueryError, QueryView};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match QueryView::parse(data) {
        Ok(view) => {
            let m = Message::decode(data).expect("QueryView accepted what Message::decode rejects");
            assert_eq!(m.questions.len(), 1);
            let q = &m.questions[0];
            assert_eq!(q.name.as_wire(), view.qname_wire());
            assert_eq!(q.qtype, view.qtype());
            assert_eq!(q.qclass, view.qclass());
            assert_eq!(
                &data[12..12 + view.qname_wire().len() + 4],
                view.question_wire()
            );
            assert_eq!(*view.header(), m.header);
            let edns = m.edns().map(|e| e.expect("OPT decodes"));
            assert_eq!(edns.as_ref(), view.edns());
            assert_eq!(view.opt_count(), usize::from(edns.is_some()));
            let mut out = [0u8; 255];
            let len = view.lowercase_qname(&mut out);
            assert_eq!(&out[..len], q.name.to_lowercase().as_wire());
        }
        Err(QueryError::Malformed {
            header,
            question,
            error,
        }) => {
            assert!(error.offset() <= data.len());
            assert!(!header.qr());
            if let Some(span) = question {
                assert!(12 + span.name_len + 4 <= data.len());
            }
        }
        Err(QueryError::Drop(_)) => assert!(data.len() < 12 || data[2] & 0x80 != 0),
        Err(_) => unreachable!("QueryError has no other variants"),
    }
});
