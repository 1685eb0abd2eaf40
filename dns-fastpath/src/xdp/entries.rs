//! The answer map's contents: answer-table entries as map keys and values, their differences, and their decoding for display.

use std::collections::HashMap;

use dns_wire::{Message, Name, RType};
use popnet_common::{
    AnswerKey, AnswerValue, MAX_BODY, MAX_NAME, NO_SLOT, OPT_LEN, VIEW_ANY, sum_bytes,
};

use crate::answer::{Answer, AnswerTable};
use crate::views::ViewId;

/// The map key of (lowercase wire name, type, view), if the name fits.
pub fn key(name: &[u8], qtype: RType, view: ViewId) -> Option<AnswerKey> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut k = AnswerKey {
        name: [0; MAX_NAME],
        qtype: qtype.0,
        view,
    };
    k.name[..name.len()].copy_from_slice(name);
    Some(k)
}

/// The map value of an answer, with the OPT record the program appends for EDNS
/// queries (`payload` = our EDNS payload size), if it fits.
pub fn value(a: &Answer, payload: u16) -> Option<AnswerValue> {
    let len = a.body.len();
    if len + OPT_LEN > MAX_BODY {
        return None;
    }
    let mut body = [0u8; MAX_BODY];
    body[..len].copy_from_slice(&a.body);
    let p = payload.to_be_bytes();
    body[len..len + OPT_LEN].copy_from_slice(&[0, 0, 41, p[0], p[1], 0, 0, 0, 0, 0, 0]);
    Some(AnswerValue {
        flags: a.flags,
        ancount: a.ancount,
        nscount: a.nscount,
        arcount: a.arcount,
        body_len: len as u16,
        slot: NO_SLOT,
        body_sum: u32::from(sum_bytes(&a.body)),
        body,
    })
}

/// Map entries with the tally counters of each answer's servers.
pub type CountedEntries = HashMap<AnswerKey, (AnswerValue, Box<[u32]>)>;

/// What the map should hold for `table`, each value with its answer's tally counters
/// (the servers it carries; empty for answers that are not counted) and no hit slot yet
/// ([`NO_SLOT`]); and how many table entries do not fit (names longer than `MAX_NAME` or
/// bodies longer than `MAX_BODY`: userspace answers those).
pub fn counted_entries_of(table: &AnswerTable, payload: u16) -> (CountedEntries, usize) {
    let mut out = HashMap::with_capacity(table.len());
    let mut skipped = 0;
    for (name, qtype, view, answer) in table.entries() {
        match (key(name, qtype, view), value(answer, payload)) {
            (Some(k), Some(v)) => {
                out.insert(k, (v, answer.tally.clone()));
            }
            _ => skipped += 1,
        }
    }
    (out, skipped)
}

/// The changes that turn `old` into `new`.
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    pub upserts: Vec<(AnswerKey, AnswerValue)>,
    pub removals: Vec<AnswerKey>,
}

impl Diff {
    pub fn between(
        old: &HashMap<AnswerKey, AnswerValue>,
        new: &HashMap<AnswerKey, AnswerValue>,
    ) -> Diff {
        Diff {
            upserts: new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|(k, v)| (*k, *v))
                .collect(),
            removals: old
                .keys()
                .filter(|k| !new.contains_key(*k))
                .copied()
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// A map entry in readable form.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EntryView {
    pub name: String,
    pub qtype: String,
    /// View name, or `*` for entries that hold in every view.
    pub view: String,
    pub rcode: String,
    pub flags: String,
    /// The records, in zone-file form, section by section.
    pub answer: Vec<String>,
    pub authority: Vec<String>,
    pub additional: Vec<String>,
    pub body_bytes: usize,
}

/// Decodes a map entry by splicing it behind a question, as the XDP program does.
pub fn describe(
    k: &AnswerKey,
    v: &AnswerValue,
    view_name: impl Fn(ViewId) -> String,
) -> Option<EntryView> {
    // The wire name ends at its root label; the rest of the key is padding.
    let mut len = 0usize;
    while len < MAX_NAME {
        let l = usize::from(k.name[len]);
        len += 1;
        if l == 0 {
            break;
        }
        len += l;
    }
    let name = Name::from_wire(k.name.get(..len)?).ok()?;
    let body = v.body.get(..usize::from(v.body_len))?;
    let mut msg = Vec::with_capacity(12 + len + 4 + body.len());
    msg.extend_from_slice(&[0, 0]);
    msg.extend_from_slice(&v.flags.to_be_bytes());
    for c in [1, v.ancount, v.nscount, v.arcount] {
        msg.extend_from_slice(&c.to_be_bytes());
    }
    msg.extend_from_slice(name.as_wire());
    msg.extend_from_slice(&k.qtype.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes());
    msg.extend_from_slice(body);
    let m = Message::decode(&msg).ok()?;
    let show = |rs: &[dns_wire::Record]| rs.iter().map(ToString::to_string).collect();
    let mut flags = Vec::new();
    if m.header.aa() {
        flags.push("aa");
    }
    Some(EntryView {
        name: name.to_string(),
        qtype: RType(k.qtype).to_string(),
        view: if k.view == VIEW_ANY {
            "*".to_string()
        } else {
            view_name(k.view)
        },
        rcode: m.rcode().to_string(),
        flags: flags.join(" "),
        answer: show(&m.answers),
        authority: show(&m.authorities),
        additional: show(&m.additionals),
        body_bytes: body.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::metrics::{MetricsTable, unix_ms};
    use crate::selector::Selector;
    use popnet_config::Config;
    use std::sync::Arc;

    fn table() -> AnswerTable {
        let cfg = Config::demo();
        let cat = Arc::new(Catalog::compile(&cfg).unwrap());
        let m = MetricsTable::new(
            b"k",
            5_000,
            cat.servers.iter().map(|s| s.id.clone()),
            Vec::new(),
        );
        let mut sel = Selector::new(&cat, cfg.probes.recovery);
        sel.reselect(&cat, &m, std::time::Instant::now(), unix_ms());
        AnswerTable::build(cat, sel.selections().clone(), Default::default(), 1)
    }

    /// The map entries of `table` without their tally counters.
    fn entries_of(table: &AnswerTable, payload: u16) -> (HashMap<AnswerKey, AnswerValue>, usize) {
        let (m, skipped) = counted_entries_of(table, payload);
        (m.into_iter().map(|(k, (v, _))| (k, v)).collect(), skipped)
    }

    #[test]
    fn every_table_entry_becomes_a_map_entry_that_decodes_back() {
        let t = table();
        let (map, skipped) = entries_of(&t, 1232);
        assert_eq!(skipped, 0);
        assert_eq!(map.len(), t.len());
        let www = Name::from_ascii("www.demo.example").unwrap();
        let k = key(www.as_wire(), RType::A, 1).unwrap();
        let v = map.get(&k).expect("www A for the loopback view");
        let e = describe(&k, v, |v| format!("view{v}")).unwrap();
        assert_eq!(e.name, "www.demo.example.");
        assert_eq!(e.qtype, "A");
        assert_eq!(e.view, "view1");
        assert_eq!(e.rcode, "NOERROR");
        assert_eq!(e.answer, ["www.demo.example. 20 IN A 127.0.0.1"]);
        assert_eq!(
            u32::from(sum_bytes(&v.body[..usize::from(v.body_len)])),
            v.body_sum
        );
    }

    #[test]
    fn diffs_name_exactly_what_changed() {
        let (a, _) = entries_of(&table(), 1232);
        let mut b = a.clone();
        let (k0, mut v0) = b.iter().next().map(|(k, v)| (*k, *v)).unwrap();
        v0.body[0] ^= 1;
        b.insert(k0, v0);
        let gone = *b.keys().find(|k| **k != k0).unwrap();
        b.remove(&gone);
        let d = Diff::between(&a, &b);
        assert_eq!(d.upserts, vec![(k0, v0)]);
        assert_eq!(d.removals, vec![gone]);
        assert!(Diff::between(&a, &a).is_empty());
    }

    #[test]
    fn oversized_names_and_bodies_stay_out() {
        let long = vec![1u8; MAX_NAME + 1];
        assert!(key(&long, RType::A, 0).is_none());
        let a = Answer {
            flags: 0x8400,
            ancount: 1,
            nscount: 0,
            arcount: 0,
            body: vec![0u8; MAX_BODY + 1].into(),
            view_dependent: false,
            tally: Box::new([]),
        };
        assert!(value(&a, 1232).is_none());
    }
}
