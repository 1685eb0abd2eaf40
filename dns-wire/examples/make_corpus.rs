//! Writes the fuzz seed corpus: `cargo run -p dns-wire --example make_corpus -- fuzz/corpus`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use dns_wire::{Edns, EdnsOption, RType};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.bin")), bytes)
}

/// Queries that QueryView must reject, kept as seeds so the error paths get explored.
fn malformed_queries() -> Vec<(&'static str, Vec<u8>)> {
    let base = common::query(0x4242, "www.example.com", RType::A, Some(Edns::default())).encode();
    let mut two_opt = base.clone();
    two_opt[11] = 2;
    two_opt.extend_from_slice(&base[33..]);
    let mut compressed_qname = common::query(0x4343, "a.example.com", RType::A, None);
    compressed_qname
        .questions
        .push(compressed_qname.questions[0].clone());
    let mut compressed_qname = compressed_qname.encode();
    // Drop the first question: the second one's name is "a" + pointer, now dangling.
    compressed_qname[5] = 1;
    compressed_qname.drain(12..12 + 15 + 4);
    let bad_ecs = common::query(
        0x4444,
        "img.shop.example",
        RType::A,
        Some(Edns {
            options: vec![EdnsOption::Other {
                code: 65000,
                data: vec![0, 1, 23, 0, 192, 0, 3],
            }],
            ..Edns::default()
        }),
    )
    .encode();
    // Turn the option code 65000 into 8 (ECS): the /23 has a bit set past the prefix.
    let mut bad_ecs = bad_ecs;
    let at = bad_ecs.len() - 11;
    bad_ecs[at..at + 2].copy_from_slice(&8u16.to_be_bytes());
    let mut trailing = base.clone();
    trailing.extend_from_slice(&[0, 0]);
    vec![
        ("malformed_two_opt", two_opt),
        ("malformed_compressed_qname", compressed_qname),
        ("malformed_ecs_bits_past_prefix", bad_ecs),
        ("malformed_trailing_bytes", trailing),
    ]
}

fn main() -> std::io::Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fuzz/corpus"));
    let samples = common::sample_messages();
    let mut counts = (0, 0);
    for (name, bytes) in &samples {
        write(&dir, "message_roundtrip", name, bytes)?;
        counts.0 += 1;
        if name.starts_with("query_") || *name == "response_a_compressed" {
            write(&dir, "query_view", name, bytes)?;
            counts.1 += 1;
        }
    }
    for (name, bytes) in malformed_queries() {
        match dns_wire::QueryView::parse(&bytes) {
            Err(dns_wire::QueryError::Malformed { error, .. }) => println!("{name}: {error}"),
            other => {
                return Err(std::io::Error::other(format!(
                    "{name} is not malformed: {other:?}"
                )));
            }
        }
        write(&dir, "query_view", name, &bytes)?;
        write(&dir, "message_roundtrip", name, &bytes)?;
        counts.0 += 1;
        counts.1 += 1;
    }
    println!(
        "wrote {} message_roundtrip and {} query_view seeds under {}",
        counts.0,
        counts.1,
        dir.display()
    );
    Ok(())
}
