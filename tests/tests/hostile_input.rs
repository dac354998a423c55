//! Hostile policy directories: every class of input that once crashed,
//! hung, leaked or fooled the loader, run through the real `tollgate check`
//! under a memory bound (`prlimit --as`, 512 MiB) and a time bound. Each
//! must be rejected with exit code 1 and an error naming the file, and never
//! panic. The same inputs dropped into a running daemon's directory leave
//! the last good policy in force while `status` keeps answering.

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use testkit::daemon_process::Daemon;

const GOOD: &str = "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n    \
                    rules:\n      - allow: {to: 203.0.113.0/24, proto: udp, ports: [7000]}\n";
/// Address space for one `check`: far more than any valid policy here needs.
const MEMORY_BOUND: &str = "--as=536870912";
const TIME_BOUND: Duration = Duration::from_secs(20);

/// One hostile case: writes itself into a fresh directory (which already
/// holds a valid policy file) and names the file the error must name.
struct Case {
    name: &'static str,
    /// Writes the input; returns the path (relative to the directory) the
    /// error must name.
    write: fn(&Path, &Path) -> String,
    /// Text the error must contain.
    says: &'static str,
    /// Extra `limits:` for the config `check` runs with.
    limits: &'static str,
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    std::fs::write(dir.join(name), text).unwrap();
    name.into()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "sequences nested 100,000 deep",
            write: |d, _| write(d, "deep.yaml", &"[".repeat(100_000)),
            says: "nested more than 64 levels deep",
            limits: "",
        },
        Case {
            name: "mappings nested 50,000 deep",
            write: |d, _| write(d, "deep.yaml", &"{a: ".repeat(50_000)),
            says: "nested more than 64 levels deep",
            limits: "",
        },
        Case {
            name: "an anchored list referenced 300 times",
            write: |d, _| {
                let items: Vec<String> = (0..20_000)
                    .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
                    .collect();
                let mut text = format!("lists:\n  big: &big [{}]\n", items.join(", "));
                for i in 0..300 {
                    text.push_str(&format!("  copy{i}: *big\n"));
                }
                write(d, "bomb.yaml", &text)
            },
            says: "anchors and aliases",
            limits: "",
        },
        Case {
            name: "a symlink to /dev/zero",
            write: |d, _| {
                symlink("/dev/zero", d.join("zero.yaml")).unwrap();
                "zero.yaml".into()
            },
            says: "a symlink to outside the policy directory",
            limits: "",
        },
        Case {
            name: "a symlink to a FIFO outside",
            write: |d, outside| {
                let fifo = outside.join("fifo");
                mkfifo(&fifo);
                symlink(&fifo, d.join("fifo.yaml")).unwrap();
                "fifo.yaml".into()
            },
            says: "a symlink to outside the policy directory",
            limits: "",
        },
        Case {
            name: "a FIFO inside",
            write: |d, _| {
                mkfifo(&d.join("fifo.yaml"));
                "fifo.yaml".into()
            },
            says: "not a regular file (a FIFO)",
            limits: "",
        },
        Case {
            name: "a socket inside",
            write: |d, _| {
                let s = std::os::unix::net::UnixListener::bind(d.join("sock.yaml")).unwrap();
                std::mem::forget(s);
                "sock.yaml".into()
            },
            says: "not a regular file (a socket)",
            limits: "",
        },
        Case {
            name: "a symlink to a secret file outside",
            write: |d, outside| {
                let secret = outside.join("secret");
                std::fs::write(&secret, "SECRET-LINE: hunter2\n").unwrap();
                symlink(&secret, d.join("secret.yaml")).unwrap();
                "secret.yaml".into()
            },
            says: "a symlink to outside the policy directory",
            limits: "",
        },
        Case {
            name: "symlink loops with fan-out",
            write: |d, _| {
                for name in ["a", "b", "c"] {
                    symlink(".", d.join(name)).unwrap();
                }
                "a".into()
            },
            says: "a directory already read (a symlink loop)",
            limits: "",
        },
        Case {
            name: "a file over limits.policy-file-bytes",
            write: |d, _| {
                let f = std::fs::File::create(d.join("huge.yaml")).unwrap();
                // Sparse: the size is what counts, and it is never read.
                f.set_len(65 << 20).unwrap();
                "huge.yaml".into()
            },
            says: "more than limits.policy-file-bytes (67108864)",
            limits: "",
        },
        Case {
            name: "files over limits.policy-bytes together",
            write: |d, _| {
                for i in 0..5 {
                    write(
                        d,
                        &format!("pad{i}.yaml"),
                        &format!("# {}\n", "x".repeat(400)),
                    );
                }
                "pad4.yaml".into()
            },
            says: "more than limits.policy-bytes (2000)",
            limits: "policy-bytes: 2000\n",
        },
        Case {
            name: "more files than limits.policy-files",
            write: |d, _| {
                for i in 0..30 {
                    write(d, &format!("f{i:02}.yaml"), "# empty\n");
                }
                "f20.yaml".into()
            },
            says: "more than 20 policy files (limits.policy-files)",
            limits: "policy-files: 20\n",
        },
        Case {
            name: "directories deeper than limits.policy-depth",
            write: |d, _| {
                let deep: PathBuf = (0..20).map(|i| format!("d{i}")).collect();
                std::fs::create_dir_all(d.join(&deep)).unwrap();
                std::fs::write(d.join(&deep).join("x.yaml"), GOOD).unwrap();
                "d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12/d13/d14/d15/d16".into()
            },
            says: "nested more than 16 directories deep",
            limits: "",
        },
        Case {
            name: "ports: [443.0]",
            write: |d, _| instead_of_good(d, &GOOD.replace("[7000]", "[443.0]")),
            says: "n.yaml:6:57: groups.meters.rules[0].allow.ports[0]: \"443.0\" is not a decimal integer",
            limits: "",
        },
        Case {
            name: "ports: [0x1bb]",
            write: |d, _| instead_of_good(d, &GOOD.replace("[7000]", "[0x1bb]")),
            says: "n.yaml:6:57: groups.meters.rules[0].allow.ports[0]: \"0x1bb\" is not a decimal integer",
            limits: "",
        },
        Case {
            name: "ports: ['+22']",
            write: |d, _| instead_of_good(d, &GOOD.replace("[7000]", "['+22']")),
            says: "n.yaml:6:57: groups.meters.rules[0].allow.ports[0]: \"+22\" is not a port",
            limits: "",
        },
        Case {
            name: "ports: [1e3]",
            write: |d, _| instead_of_good(d, &GOOD.replace("[7000]", "[1e3]")),
            says: "n.yaml:6:57: groups.meters.rules[0].allow.ports[0]: \"1e3\" is not a decimal integer",
            limits: "",
        },
        Case {
            name: "proto: 6.0",
            write: |d, _| instead_of_good(d, &GOOD.replace("proto: udp", "proto: 6.0")),
            says: "n.yaml:6:44: groups.meters.rules[0].allow.proto: \"6.0\" is not a decimal integer",
            limits: "",
        },
        Case {
            name: "long unknown list names",
            write: |d, _| {
                let mut text = String::from("lists:\n");
                for i in 0..2000 {
                    text.push_str(&format!("  l{i}: [10.{}.{}.0/24]\n", i / 256, i % 256));
                }
                text.push_str(
                    "groups:\n  g:\n    devices: [10.99.0.0/16]\n    default: deny\n    rules:\n",
                );
                for i in 0..2000 {
                    text.push_str(&format!("      - allow: {{to: {}{i}}}\n", "q".repeat(2000)));
                }
                write(d, "names.yaml", &text)
            },
            says: "is not a CIDR, an address, a defined list or a keyword",
            limits: "",
        },
        Case {
            name: "not UTF-8",
            write: |d, _| {
                std::fs::write(d.join("bin.yaml"), b"groups:\n  \xff\xfe: {}\n").unwrap();
                "bin.yaml".into()
            },
            says: "not UTF-8 text",
            limits: "",
        },
    ]
}

/// Replaces the valid file (whose group it redefines) with `text`.
fn instead_of_good(dir: &Path, text: &str) -> String {
    std::fs::remove_file(dir.join("good.yaml")).unwrap();
    write(dir, "n.yaml", text)
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A scratch root with `policies/` (a valid file in it) and `outside/`.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        let s = Scratch(tempfile::tempdir().unwrap());
        std::fs::create_dir(s.policies()).unwrap();
        std::fs::create_dir(s.outside()).unwrap();
        std::fs::write(s.policies().join("good.yaml"), GOOD).unwrap();
        s
    }
    fn policies(&self) -> PathBuf {
        self.0.path().join("policies")
    }
    fn outside(&self) -> PathBuf {
        self.0.path().join("outside")
    }
}

#[test]
fn check_rejects_every_hostile_input_within_memory_and_time_bounds() {
    let mut failures = Vec::new();
    for case in cases() {
        let scratch = Scratch::new();
        let named = (case.write)(&scratch.policies(), &scratch.outside());
        let config = scratch.0.path().join("tollgate.yaml");
        std::fs::write(
            &config,
            format!(
                "interfaces: [eth9]\npolicy-dir: {}\nlimits:\n  {}",
                scratch.policies().display(),
                case.limits.replace('\n', "\n  ")
            ),
        )
        .unwrap();
        let started = Instant::now();
        let out = Command::new("timeout")
            .args([
                &format!("{}s", TIME_BOUND.as_secs()),
                "prlimit",
                MEMORY_BOUND,
                "--",
            ])
            .arg(testkit::tollgate_binary())
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let said = format!("{stdout}{stderr}");
        let file = scratch.policies().join(&named);
        let problem = if out.status.code() != Some(1) {
            Some(format!("exit {:?} (want 1)", out.status))
        } else if said.contains("panicked") {
            Some("panicked".into())
        } else if !said.contains(&file.display().to_string()) {
            Some(format!("does not name {}", file.display()))
        } else if !said.contains(case.says) {
            Some(format!("does not say {:?}", case.says))
        } else if said.contains("SECRET-LINE") || said.contains("hunter2") {
            Some("echoed the content of a file outside the directory".into())
        } else if said.lines().count() > 120 {
            Some(format!("{} lines of output", said.lines().count()))
        } else {
            None
        };
        eprintln!(
            "{}: exit {:?} in {:.0} ms{}",
            case.name,
            out.status.code(),
            took.as_secs_f64() * 1e3,
            problem
                .as_deref()
                .map_or(String::new(), |p| format!(": {p}"))
        );
        if let Some(p) = problem {
            failures.push(format!("{}: {p}\n{said}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn a_symlink_inside_the_root_and_a_swapped_root_symlink_still_work() {
    let scratch = Scratch::new();
    let root = scratch.policies();
    // Shared lists kept in a hidden directory, linked in by name.
    std::fs::create_dir(root.join(".shared")).unwrap();
    std::fs::write(
        root.join(".shared/cloud.yml"),
        "lists:\n  cloud: [203.0.113.0/24]\n",
    )
    .unwrap();
    symlink(".shared/cloud.yml", root.join("cloud.yaml")).unwrap();
    std::fs::write(
        root.join("good.yaml"),
        GOOD.replace("203.0.113.0/24", "cloud"),
    )
    .unwrap();
    // The root is a symlink to the checkout, as deploy tools swap it.
    let current = scratch.0.path().join("current");
    symlink(&root, &current).unwrap();
    let run = testkit::tollgate(&["check", current.to_str().unwrap()]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    // Swapped to another checkout: the new target is the new root.
    let next = scratch.0.path().join("next");
    std::fs::create_dir(&next).unwrap();
    std::fs::write(next.join("good.yaml"), GOOD).unwrap();
    std::fs::remove_file(&current).unwrap();
    symlink(&next, &current).unwrap();
    let run = testkit::tollgate(&["check", current.to_str().unwrap()]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
}

#[test]
fn hostile_inputs_in_a_running_daemons_directory_leave_the_last_good_policy() {
    testkit::require_root();
    let ns = testkit::namespace("hostile");
    ns.ip(&[
        "link", "add", "dev0", "type", "veth", "peer", "name", "dev1",
    ])
    .unwrap();
    let d = Daemon::start(&ns, "hostile", &["dev0"], "", &[("good.yaml", GOOD)]);
    let generation = d.status().policy.generation;
    let outside = tempfile::tempdir().unwrap();
    for case in cases().into_iter().filter(|c| c.limits.is_empty()) {
        let named = (case.write)(&d.policy_dir, outside.path());
        let before = d.status().last_reload.map(|r| r.at_unix);
        let started = Instant::now();
        // The reload fails; status answers all along.
        let s = d.wait_status(Duration::from_secs(20), |s| {
            s.last_reload
                .as_ref()
                .is_some_and(|r| !r.success && Some(r.at_unix) >= before)
        });
        assert_eq!(s.policy.generation, generation, "{}", case.name);
        eprintln!(
            "{}: reload refused in {:.0} ms, generation {generation} in force",
            case.name,
            started.elapsed().as_secs_f64() * 1e3
        );
        remove(&d.policy_dir.join(named.split('/').next().unwrap()));
        for extra in ["b", "c"] {
            let _ = std::fs::remove_file(d.policy_dir.join(extra));
        }
        if !d.policy_dir.join("good.yaml").exists() {
            d.write_policy("good.yaml", GOOD);
        }
        d.wait_status(Duration::from_secs(20), |s| {
            s.last_reload.as_ref().is_some_and(|r| r.success)
        });
    }
}

fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}
