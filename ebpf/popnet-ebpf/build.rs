//! Rebuilds the program when the bpf-linker binary changes (the eBPF link has an undeclared dependency on it).
fn main() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(linker) = std::env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| p.is_file())
    {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
