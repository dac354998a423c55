//! Rebuild when bpf-linker changes: cargo cannot see this undeclared
//! dependency of the BPF target's link step.
fn main() {
    let bpf_linker =
        which::which("bpf-linker").expect("bpf-linker not found: run scripts/setup.sh");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
