//! popctl as users run it: config checks, the demo config, usage errors, an unreachable server.

use std::path::Path;
use std::process::Command;

fn popctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_popctl"))
}

#[test]
fn config_check_accepts_the_examples_and_demo_prints_the_builtin_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = popctl()
        .args(["config", "check"])
        .arg(root.join("examples/single-pop.toml"))
        .arg(root.join("examples/three-pop.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches(": valid")
            .count(),
        2
    );
    let out = popctl().args(["config", "demo"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        popnet_config::DEMO_TOML
    );
}

#[test]
fn a_broken_file_is_reported_with_its_place_and_exit_1() {
    let dir = std::env::temp_dir().join(format!("popctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        popnet_config::DEMO_TOML.replace("ttl = 20", "ttl = 9999999"),
    )
    .unwrap();
    let out = popctl().args(["config", "check"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("customers[0].domains[0].policy.ttl: TTL 9999999 is longer than a week; use at most 604800 seconds"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn usage_errors_exit_2_and_an_unreachable_server_says_what_to_do() {
    let out = popctl().args(["dns", "frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = popctl().args(["cache", "purge"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "purge needs one of --url, --prefix, --customer"
    );
    // Nothing listens on this port: the error names the address and how to start popnet.
    let out = popctl()
        .args(["--admin", "127.0.0.1:9", "dns", "stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the admin listener at 127.0.0.1:9") && err.contains("popnet up"),
        "{err}"
    );
}
