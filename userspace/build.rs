//! Builds the BPF program (`ebpf/program`) for the BPF target with aya-build
//! and leaves the object in OUT_DIR, where `datapath` embeds it.
//!
//! Also records the build's provenance for `tollgate --version` and the
//! `tollgate_build_info` metric, as compile-time environment variables:
//!
//! - `TOLLGATE_GIT_REVISION`: the git commit, short hash, with `-dirty` when
//!   tracked files differ from it; `unknown` outside a git checkout (or
//!   without git).
//! - `TOLLGATE_BPF_HASH`: the 64-bit FNV-1a hash of the embedded BPF object,
//!   16 hex digits (an identity, not a security check: no new dependency).
//! - `TOLLGATE_VERSION`: `<version> (commit <revision>, bpf <hash>)`, what
//!   `--version` prints after the name.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "tollgate-ebpf")
        .ok_or_else(|| anyhow!("tollgate-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        // A cargo-fuzz build (`--cfg fuzzing`) runs parsers and the model,
        // never the kernel: it embeds an empty object rather than build the
        // BPF program again, about a minute of CI's fuzzing smoke.
        std::fs::write(out_dir.join("tollgate"), []).context("write the empty BPF object")?;
    } else {
        aya_build::build_ebpf(
            [aya_build::Package {
                name: ebpf.name.as_str(),
                root_dir: root_dir.as_str(),
                ..Default::default()
            }],
            aya_build::Toolchain::default(),
        )?;
    }

    // The object `datapath` embeds (include_bytes_aligned!(OUT_DIR/tollgate)).
    let object = std::fs::read(out_dir.join("tollgate")).context("read the BPF object")?;
    let bpf_hash = format!("{:016x}", fnv1a64(&object));
    let revision = git_revision(metadata.workspace_root.as_std_path());
    let version = std::env::var("CARGO_PKG_VERSION").context("CARGO_PKG_VERSION")?;
    println!("cargo:rustc-env=TOLLGATE_GIT_REVISION={revision}");
    println!("cargo:rustc-env=TOLLGATE_BPF_HASH={bpf_hash}");
    println!("cargo:rustc-env=TOLLGATE_VERSION={version} (commit {revision}, bpf {bpf_hash})");
    Ok(())
}

/// FNV-1a, 64 bits: offset basis 0xcbf29ce484222325, prime 0x100000001b3.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The short commit hash, `-dirty` when tracked files changed; `unknown`
/// outside git. Asks cargo to run this again when the commit, the index or
/// any source changes, so the mark stays true.
fn git_revision(workspace: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    // The sources, not all of userspace/: the fuzz crate's target and
    // artifacts live there and change on every fuzz run.
    for path in [
        "userspace/src",
        "userspace/build.rs",
        "userspace/Cargo.toml",
        "ebpf",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    let Some(hash) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    for file in ["HEAD", "index"] {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", file])
            .filter(|p| Path::new(p).exists())
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    // HEAD names a branch: its ref moves on every commit.
    if let Some(path) = git(&["rev-parse", "--symbolic-full-name", "HEAD"])
        .filter(|r| r.starts_with("refs/"))
        .and_then(|r| git(&["rev-parse", "--path-format=absolute", "--git-path", &r]))
        // A packed ref has no file of its own (packed-refs changes instead).
        .filter(|p| Path::new(p).exists())
    {
        println!("cargo:rerun-if-changed={path}");
    }
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if changes.is_empty() => hash,
        Some(_) => format!("{hash}-dirty"),
        None => "unknown".into(),
    }
}
