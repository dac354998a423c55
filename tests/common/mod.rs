//! Shared helpers for the integration suites.
//!
//! Tests that need root call [`require_root`] first: without root they fail
//! with a clear message instead of passing silently.
#![allow(dead_code)] // each suite uses a different subset

use std::sync::atomic::{AtomicU32, Ordering};

use tollgate::netns::Namespace;

/// Fails the test unless it runs as root (BPF, namespaces and XDP need it).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (BPF, network namespaces, XDP); run the suite with `make test` as root"
    );
}

/// Creates a namespace whose name is unique to this process and call site.
pub fn namespace(tag: &str) -> Namespace {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("tg-{tag}-{}-{n}", std::process::id());
    Namespace::create(&name).unwrap_or_else(|e| panic!("create namespace {name}: {e:#}"))
}

/// The repository root (tests run with the package directory as cwd).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("userspace/ is inside the repository")
        .to_path_buf()
}

/// Output of the `tollgate` binary run from the repository root.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn tollgate(args: &[&str]) -> Run {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run the tollgate binary");
    Run {
        status: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// Golden files are rewritten instead of compared when this is set.
pub fn blessing() -> bool {
    std::env::var_os("TOLLGATE_BLESS").is_some()
}
