//! The Debian package: `make deb` builds tollgate_<version>_<arch>.deb for
//! this host; this suite checks what it holds (`dpkg-deb --contents`), its
//! control data and maintainer scripts (`dpkg-deb --info`), lets lintian
//! judge it (errors fail, overrides are documented in
//! deploy/debian/lintian-overrides), then unpacks it into a throwaway root
//! where the binary runs (`tollgate --version`), the units pass
//! `systemd-analyze verify` with the root's paths, and the shipped sysusers
//! file creates the `tollgate` user; finally dpkg installs, removes and
//! purges it in a throwaway root (an overlay of /, in a mount namespace of
//! its own) to run the maintainer scripts: the user is created, nothing is
//! enabled, purge removes the configuration and the user it made.
//!
//! Needs root (setup.sh, as `make deb` runs it) and dpkg-dev, lintian,
//! cargo-deb (setup.sh installs them). Nothing skips: a missing tool fails.
//! The first run builds the release binary (minutes); later runs only
//! package it again (seconds).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The subcommands, each with its manual page tollgate-NAME(1).
const SUBCOMMANDS: &[&str] = &[
    "run",
    "check",
    "test",
    "diff",
    "explain",
    "status",
    "lab",
    "lists",
    "completions",
    "man",
];

/// Commands below a subcommand, each with its page tollgate-PARENT-NAME(1)
/// that its parent's SEE ALSO names: (parent, name).
const NESTED: &[(&str, &str)] = &[("lists", "import")];

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(testkit::repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}` ({e}); scripts/setup.sh installs it"))
}

fn success(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("tollgate-package-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// Builds the host's package with `make deb`; its path.
fn build_package() -> PathBuf {
    let repo = testkit::repo_root();
    success("make deb", run("make", &["--no-print-directory", "deb"]));
    let arch = success(
        "dpkg --print-architecture",
        run("dpkg", &["--print-architecture"]),
    );
    let deb = repo.join(format!(
        "target/debian/tollgate_{}_{}.deb",
        env!("CARGO_PKG_VERSION"),
        arch.trim()
    ));
    assert!(deb.is_file(), "make deb made no {}", deb.display());
    deb
}

#[test]
fn make_deb_builds_a_package_that_unpacks_runs_and_verifies() {
    testkit::require_root();
    let deb = build_package();
    let deb_str = deb.to_str().unwrap();
    let repo = testkit::repo_root();

    // ------------------------------------------------------------ contents
    let listing = success(
        "dpkg-deb --contents",
        run("dpkg-deb", &["--contents", deb_str]),
    );
    // `-rwxr-xr-x root/root 123 2024-01-01 00:00 ./usr/bin/tollgate`
    let files: BTreeSet<String> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    let mut expected: Vec<String> = [
        "/usr/bin/tollgate",
        "/lib/systemd/system/tollgate.service",
        "/lib/systemd/system/tollgate-policy-pull.service",
        "/lib/systemd/system/tollgate-policy-pull.timer",
        "/etc/tollgate/tollgate.yaml",
        "/usr/lib/sysusers.d/tollgate.conf",
        "/usr/lib/tmpfiles.d/tollgate.conf",
        "/usr/share/bash-completion/completions/tollgate",
        "/usr/share/zsh/vendor-completions/_tollgate",
        "/usr/share/fish/vendor_completions.d/tollgate.fish",
        "/usr/share/man/man1/tollgate.1.gz",
        "/usr/share/doc/tollgate/copyright",
    ]
    .map(String::from)
    .to_vec();
    for sub in SUBCOMMANDS {
        expected.push(format!("/usr/share/man/man1/tollgate-{sub}.1.gz"));
    }
    for (parent, name) in NESTED {
        expected.push(format!("/usr/share/man/man1/tollgate-{parent}-{name}.1.gz"));
    }
    // Every example policy, lists included.
    for entry in walk(&repo.join("policies")) {
        let relative = entry.strip_prefix(repo.join("policies")).unwrap();
        expected.push(format!(
            "/usr/share/doc/tollgate/examples/{}",
            relative.display()
        ));
    }
    let missing: Vec<&String> = expected.iter().filter(|p| !files.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "the package lacks {missing:?}; it holds:\n{listing}"
    );
    let binary_mode = listing
        .lines()
        .find(|l| l.ends_with("./usr/bin/tollgate"))
        .unwrap();
    assert!(binary_mode.starts_with("-rwxr-xr-x 0/0 "), "{binary_mode}");

    // ------------------------------------------------- control, scripts
    let info = success("dpkg-deb --info", run("dpkg-deb", &["--info", deb_str]));
    for field in [
        "Package: tollgate",
        &format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "Recommends: git",
    ] {
        assert!(
            info.contains(field),
            "dpkg-deb --info lacks {field}:\n{info}"
        );
    }
    let control = scratch("control");
    success(
        "dpkg-deb --control",
        run(
            "dpkg-deb",
            &["--control", deb_str, control.0.to_str().unwrap()],
        ),
    );
    let read = |name: &str| {
        std::fs::read_to_string(control.0.join(name))
            .unwrap_or_else(|e| panic!("control member {name}: {e}"))
    };
    assert_eq!(
        read("conffiles").trim(),
        "/etc/tollgate/tollgate.yaml",
        "conffiles"
    );
    let postinst = read("postinst");
    assert!(postinst.contains("systemd-sysusers /usr/lib/sysusers.d/tollgate.conf"));
    assert!(postinst.contains("adduser --system"), "the fallback");
    let postrm = read("postrm");
    assert!(postrm.contains(r#"if [ "$1" = purge ]; then"#));
    for (name, script) in [
        ("postinst", &postinst),
        ("postrm", &postrm),
        ("prerm", &read("prerm")),
    ] {
        // Nothing enabled or started without the operator (comments may
        // say how the operator does it).
        let code: String = script
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        for word in [
            "systemctl enable",
            "systemctl start",
            "systemctl restart",
            "deb-systemd-helper enable",
            "deb-systemd-invoke start",
            "deb-systemd-invoke restart",
        ] {
            assert!(!code.contains(word), "{name} runs `{word}`");
        }
        success(
            &format!("sh -n {name}"),
            run("sh", &["-n", control.0.join(name).to_str().unwrap()]),
        );
    }

    // ------------------------------------------------------------ lintian
    // Errors fail; warnings are printed. deploy/debian/lintian-overrides,
    // shipped in the package, documents every accepted tag.
    let lintian = run(
        "lintian",
        &["--fail-on", "error", "--tag-display-limit", "0", deb_str],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&lintian.stdout),
        String::from_utf8_lossy(&lintian.stderr)
    );
    assert!(lintian.status.success(), "lintian:\n{text}");
    eprintln!("lintian:\n{text}");

    // ----------------------------------------------- a throwaway root
    let root = scratch("root");
    let root_str = root.0.to_str().unwrap();
    success("dpkg-deb -x", run("dpkg-deb", &["-x", deb_str, root_str]));
    let version = success(
        "tollgate --version",
        run(&format!("{root_str}/usr/bin/tollgate"), &["--version"]),
    );
    let prefix = format!("tollgate {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&prefix), "{version}");
    assert!(version.contains(", bpf "), "{version}");

    // The units, pointing at the root's binary: systemd's own parser and
    // nothing else to say. The timer is verified with its service beside it.
    let units = root.0.join("lib/systemd/system");
    let checked = scratch("units");
    for unit in [
        "tollgate.service",
        "tollgate-policy-pull.service",
        "tollgate-policy-pull.timer",
    ] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        std::fs::write(
            checked.0.join(unit),
            text.replace(
                "/usr/bin/tollgate ",
                &format!("{root_str}/usr/bin/tollgate "),
            ),
        )
        .unwrap();
    }
    let service = std::fs::read_to_string(checked.0.join("tollgate.service")).unwrap();
    assert!(
        service.contains(&format!(
            "ExecStart={root_str}/usr/bin/tollgate run --config /etc/tollgate/tollgate.yaml"
        )),
        "the unit runs /usr/bin/tollgate"
    );
    for unit in [
        "tollgate.service",
        "tollgate-policy-pull.service",
        "tollgate-policy-pull.timer",
    ] {
        let out = run(
            "systemd-analyze",
            &["verify", checked.0.join(unit).to_str().unwrap()],
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify {unit}:\n{said}"
        );
    }
    let pull = std::fs::read_to_string(units.join("tollgate-policy-pull.service")).unwrap();
    assert!(pull.contains("ExecStart=/usr/bin/git -C /etc/tollgate/policies pull --ff-only"));
    let timer = std::fs::read_to_string(units.join("tollgate-policy-pull.timer")).unwrap();
    assert!(timer.contains("OnUnitActiveSec=5min") && timer.contains("RandomizedDelaySec="));

    // The shipped sysusers file makes the user in the root.
    success(
        "systemd-sysusers --root",
        run(
            "systemd-sysusers",
            &[
                &format!("--root={root_str}"),
                &format!("{root_str}/usr/lib/sysusers.d/tollgate.conf"),
            ],
        ),
    );
    let passwd = std::fs::read_to_string(root.0.join("etc/passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("tollgate:")),
        "{passwd}"
    );

    // Man pages: one per subcommand with EXAMPLES and EXIT STATUS, and
    // tollgate(1)'s SEE ALSO names every one of them.
    let man1 = root.0.join("usr/share/man/man1");
    let page = |name: &str| {
        success(
            &format!("zcat {name}"),
            run(
                "zcat",
                &[man1.join(format!("{name}.1.gz")).to_str().unwrap()],
            ),
        )
    };
    let top = page("tollgate");
    let see_also = top
        .split(".SH \"SEE ALSO\"")
        .nth(1)
        .unwrap_or_else(|| panic!("tollgate(1) has no SEE ALSO:\n{top}"));
    for sub in SUBCOMMANDS {
        let text = page(&format!("tollgate-{sub}"));
        assert!(text.contains(".SH EXAMPLES"), "tollgate-{sub}(1)");
        assert!(text.contains(".SH \"EXIT STATUS\""), "tollgate-{sub}(1)");
        assert!(
            see_also.contains(&format!("tollgate\\-{sub}(1)")),
            "tollgate(1) SEE ALSO lacks tollgate-{sub}(1)"
        );
    }
    for (parent, name) in NESTED {
        let text = page(&format!("tollgate-{parent}-{name}"));
        assert!(text.contains(".SH OPTIONS"), "tollgate-{parent}-{name}(1)");
        assert!(text.contains(".SH EXAMPLES"), "tollgate-{parent}-{name}(1)");
        assert!(
            page(&format!("tollgate-{parent}"))
                .contains(&format!("tollgate\\-{parent}\\-{name}(1)")),
            "tollgate-{parent}(1) does not name tollgate-{parent}-{name}(1)"
        );
    }
    let pages = std::fs::read_dir(&man1).unwrap().count();
    assert_eq!(
        pages,
        SUBCOMMANDS.len() + NESTED.len() + 1,
        "one page per command"
    );

    // postinst, prerm, postrm for real, in a throwaway root.
    maintainer_scripts_install_remove_purge(&deb);
}

/// Installs, removes and purges the package with dpkg in a throwaway root:
/// an overlay of this host's / (so dpkg and the maintainer scripts find a
/// system to run in) whose writes land in `dir`, in a mount namespace of
/// its own, with an empty dpkg database, no systemd running (/run empty)
/// and no bpffs. The host is not changed.
const MAINTAINER_SCRIPTS: &str = r#"
set -eu
B=$1; DEB=$2; R=$B/root
mkdir -p "$R" "$B/up" "$B/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$B/up,workdir=$B/work" "$R"
mv "$R/var/lib/dpkg" "$R/var/lib/dpkg.host"
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/triggers"
touch "$R/var/lib/dpkg/status" "$R/var/lib/dpkg/available"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/sys"
mount -t proc proc "$R/proc"
fail() { echo "FAIL: $*"; exit 1; }
# A root without the user (the host may have one from other tests).
if chroot "$R" getent passwd tollgate >/dev/null; then chroot "$R" userdel tollgate; fi
if chroot "$R" getent group tollgate >/dev/null; then chroot "$R" groupdel tollgate; fi
# --force-depends: the empty database lists no libc6.
dpkg --root="$R" --force-depends -i "$DEB"
chroot "$R" getent passwd tollgate || fail "postinst made no tollgate user"
for link in multi-user.target.wants/tollgate.service timers.target.wants/tollgate-policy-pull.timer; do
    [ ! -e "$R/etc/systemd/system/$link" ] || fail "installing enabled $link"
done
chroot "$R" /usr/bin/tollgate --version
dpkg --root="$R" -r tollgate
[ -f "$R/etc/tollgate/tollgate.yaml" ] || fail "remove took the conffile"
chroot "$R" getent passwd tollgate >/dev/null || fail "remove took the user"
dpkg --root="$R" -P tollgate
[ ! -e "$R/etc/tollgate/tollgate.yaml" ] || fail "purge left the conffile"
if chroot "$R" getent passwd tollgate; then fail "purge left the user it made"; fi
if chroot "$R" getent group tollgate; then fail "purge left the group it made"; fi
[ ! -e "$R/var/lib/tollgate" ] || fail "purge left /var/lib/tollgate"
echo "maintainer scripts: ok"
"#;

fn maintainer_scripts_install_remove_purge(deb: &Path) {
    let dir = scratch("dpkg");
    let out = run(
        "unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            MAINTAINER_SCRIPTS,
            "sh",
            dir.0.to_str().unwrap(),
            deb.to_str().unwrap(),
        ],
    );
    let said = success("dpkg -i, -r, -P in a throwaway root", out);
    assert!(said.contains("maintainer scripts: ok"), "{said}");
}

/// Files under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
