//! The test kit: what Tollgate's integration suites (`tests/tests/*.rs`)
//! and benchmarks (`tests/benches/`) share. They live in a package of their
//! own, `tollgate-tests`, and test the `tollgate` package from outside:
//! through its public library and its real binary.
//!
//! Tests that need root call [`require_root`] first: without root they fail
//! with a clear message instead of passing silently.
//!
//! # The binary under test
//!
//! Cargo hands `CARGO_BIN_EXE_tollgate` only to tests of the package that
//! has the binary, so [`tollgate_binary`] takes the path from the
//! `TOLLGATE_BIN` environment variable instead. `cargo nextest run` sets it:
//! its setup script (`.config/nextest.toml`, `scripts/build-test-binary.sh`)
//! runs `cargo build -p tollgate --bin tollgate` after the suites are built
//! and before any runs, and passes on the path cargo reports, so every run
//! (`make test` included) tests a binary built from the same sources as the
//! suites, whatever the target directory. Run any other way (`cargo test`),
//! build it yourself and set `TOLLGATE_BIN`; without it a test that runs the
//! binary fails and says so, rather than guess at a file that may be stale.

use std::sync::atomic::{AtomicU32, Ordering};

use tollgate::netns::Namespace;

pub mod bench;
pub mod chrony_server;
pub mod contract;
pub mod daemon_process;
/// The kernel-versus-model differential harness (its test and its bench run).
pub mod differential;
pub mod explicit_fleet;
pub mod exposition;
pub mod fleet;
pub mod frames;
pub mod ntp;
pub mod ntp_clients;
pub mod random;
pub mod tables;
pub mod tun;

/// Fails the test unless it runs as root (BPF, namespaces and XDP need it),
/// and clears what killed test runs left behind.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (BPF, network namespaces, XDP); run the suite with `make test` as root"
    );
    sweep_stale();
}

/// Test namespaces and pin directories carry the pid of the test process
/// that made them (`tg-<tag>-<pid>…`, `tollgate-test-<tag>-<pid>-…`); a
/// process killed before its guards ran leaves them. Remove those whose
/// process is gone.
fn sweep_stale() {
    let dead = |name: &str| {
        name.split('-')
            .filter_map(|part| part.parse::<u32>().ok())
            .any(|pid| pid > 1 && !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("tg-") && dead(&name) {
                let _ = tollgate::netns::ip(&["netns", "del", &name]);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("tollgate-test-") && dead(&name) {
                let _ = remove_pin_tree(&e.path());
            }
        }
    }
}

/// One group, `meters` (10.64.0.0/16), default deny, allowed only UDP to
/// `port` on 203.0.113.0/24: the policy the daemon suites start from and edit.
pub fn policy_allowing(port: u16) -> String {
    format!(
        "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n    rules:\n      \
         - allow: {{to: 203.0.113.0/24, proto: udp, ports: [{port}]}}\n"
    )
}

/// Creates a namespace whose name is unique to this process and call site.
pub fn namespace(tag: &str) -> Namespace {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("tg-{tag}-{}-{n}", std::process::id());
    Namespace::create(&name).unwrap_or_else(|e| panic!("create namespace {name}: {e:#}"))
}

/// Lets a test receiver absorb a burst without the socket dropping
/// datagrams (SO_RCVBUFFORCE: root may exceed rmem_max).
pub fn large_receive_buffer(socket: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 32 << 20;
    // SAFETY: valid fd and option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// A bpffs pin directory unique to this test, removed (with whatever is
/// pinned in it, which detaches pinned links) when dropped.
pub struct PinDir(pub std::path::PathBuf);

impl PinDir {
    pub fn new(tag: &str) -> PinDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        PinDir(std::path::PathBuf::from(format!(
            "/sys/fs/bpf/tollgate-test-{tag}-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = remove_pin_tree(&self.0) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Unpins everything under `dir`, in subdirectories too (a test may lay
/// out a pin directory below the one it owns, as tollgate.tmpfiles does
/// below /sys/fs/bpf), and removes the directories.
pub fn remove_pin_tree(dir: &std::path::Path) -> anyhow::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_pin_tree(&e.path())?;
            }
        }
    }
    tollgate::datapath::remove_pins(dir)
}

/// What `probe` finds once a detach has taken effect, or after `timeout`
/// what it found last. A link is released by the kernel after it is
/// unpinned and closed, but not synchronously: bpffs frees the pin's inode
/// after an RCU grace period, and the link's release runs on a workqueue
/// from there. Under load a probe sent at once still meets the program.
pub fn once_detached<T: PartialEq>(
    timeout: std::time::Duration,
    want: T,
    mut probe: impl FnMut() -> T,
) -> T {
    let start = std::time::Instant::now();
    loop {
        let found = probe();
        if found == want || start.elapsed() > timeout {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The repository root (tests run with the package directory, `tests/`, as
/// cwd).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The `tollgate` binary to run: `TOLLGATE_BIN`, which nextest's setup
/// script sets to the binary it has just built (see the crate's
/// documentation). Panics with what to do when it is unset or names no file.
pub fn tollgate_binary() -> std::path::PathBuf {
    let Some(path) = std::env::var_os("TOLLGATE_BIN") else {
        panic!(
            "TOLLGATE_BIN is not set: run the suites with `cargo nextest run` (or `make test`), \
             whose setup script builds the tollgate binary and sets it; otherwise \
             `cargo build -p tollgate --bin tollgate` and set TOLLGATE_BIN to the binary"
        );
    };
    let path = std::path::PathBuf::from(path);
    assert!(
        path.is_file(),
        "TOLLGATE_BIN names no file: {}; build it with `cargo build -p tollgate --bin tollgate`",
        path.display()
    );
    path
}

/// Output of the `tollgate` binary run from the repository root.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn tollgate(args: &[&str]) -> Run {
    let output = std::process::Command::new(tollgate_binary())
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

/// Runs `promtool check metrics` on an exposition; panics with its output
/// unless it passes. promtool comes from Debian's `prometheus` package.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: run scripts/setup.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Attaches a pass-everything XDP program (xdp-tools' filter in allow mode
/// with empty lists, `xdpfilt_alw_all.o`) natively to `interface` in `ns`:
/// a veth must run XDP itself to receive the frames its peer sends back
/// with native `XDP_TX` (README, "The fast path"). Tollgate's NTP fast path
/// on a native-XDP veth needs it on the device side.
pub fn xdp_pass_on(ns: &Namespace, interface: &str) {
    let object = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("bpf/xdpfilt_alw_all.o"))
        .find(|p| p.exists())
        .expect("xdp-tools' xdpfilt_alw_all.o under /usr/lib/*/bpf (scripts/setup.sh installs xdp-tools)");
    let out = ns
        .exec(
            "xdp-loader",
            &["load", "-m", "native", interface, &object.to_string_lossy()],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "xdp-loader load {interface}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
