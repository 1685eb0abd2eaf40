//! Builds the XDP program (crate `popnet-ebpf`) for `bpfel-unknown-none` with aya-build.
//!
//! It needs the pinned nightly toolchain with `rust-src` and `bpf-linker`, which
//! `.ci/install-ebpf-toolchain` installs. Without them the crate builds without the XDP
//! fast path (the server then says so when asked to attach) and cargo prints a warning;
//! with `POPNET_REQUIRE_XDP=1` (set by CI) a missing toolchain is an error instead.

use std::process::Command;

/// Must match `.ci/install-ebpf-toolchain`: a nightly whose LLVM major is bpf-linker's.
const PINNED_NIGHTLY: &str = "nightly-2026-05-20";

fn missing_prerequisites(toolchain: &str) -> Vec<String> {
    let mut missing = Vec::new();
    let ok = |cmd: &mut Command| {
        cmd.env("RUSTUP_AUTO_INSTALL", "0")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok(Command::new("rustup").args(["run", toolchain, "rustc", "--version"])) {
        missing.push(format!("the {toolchain} toolchain"));
    } else {
        let src = Command::new("rustup")
            .args(["component", "list", "--installed", "--toolchain", toolchain])
            .env("RUSTUP_AUTO_INSTALL", "0")
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with("rust-src"))
            });
        if !src {
            missing.push(format!("rust-src for {toolchain}"));
        }
    }
    if !ok(Command::new("bpf-linker").arg("--version")) {
        missing.push("bpf-linker".to_string());
    }
    missing
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(popnet_xdp)");
    println!("cargo::rerun-if-env-changed=POPNET_REQUIRE_XDP");
    println!("cargo::rerun-if-env-changed=EBPF_NIGHTLY");
    let required = std::env::var("POPNET_REQUIRE_XDP").is_ok_and(|v| v == "1");
    let toolchain = std::env::var("EBPF_NIGHTLY")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| PINNED_NIGHTLY.into());

    let missing = missing_prerequisites(&toolchain);
    if !missing.is_empty() {
        let msg = format!(
            "building without the XDP fast path: missing {}; run .ci/install-ebpf-toolchain and rebuild",
            missing.join(", ")
        );
        if required {
            panic!("{msg} (POPNET_REQUIRE_XDP=1)");
        }
        println!("cargo::warning={msg}");
        return;
    }

    let meta = match cargo_metadata::MetadataCommand::new().no_deps().exec() {
        Ok(m) => m,
        Err(e) => panic!("cargo metadata failed: {e}"),
    };
    let Some(pkg) = meta
        .packages
        .iter()
        .find(|p| p.name.as_str() == "popnet-ebpf")
    else {
        panic!("the popnet-ebpf package is not in the workspace");
    };
    let Some(root) = pkg.manifest_path.parent() else {
        panic!("{} has no parent directory", pkg.manifest_path);
    };
    let package = aya_build::Package {
        name: pkg.name.as_str(),
        root_dir: root.as_str(),
        ..Default::default()
    };
    if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain)) {
        panic!("building the XDP program failed: {e:#}");
    }
    println!("cargo::rustc-cfg=popnet_xdp");
}
