//! Network namespaces and veth pairs for the lab and the tests.
//!
//! Everything shells out to iproute2 (`ip`), the tool operators use, so a
//! failure message is one they can reproduce by hand. Code that must run
//! *inside* a namespace (creating a socket, attaching a program) runs on a
//! short-lived thread that `setns`es itself; the calling thread never moves,
//! and a socket keeps the namespace it was created in.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail};

/// A named network namespace, deleted (with every interface in it) on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates `name`, first deleting a leftover of the same name (from a run
    /// that was killed before it could clean up).
    pub fn create(name: &str) -> Result<Self> {
        if Self::exists(name) {
            ip(&["netns", "del", name])?;
        }
        ip(&["netns", "add", name])?;
        let ns = Namespace {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn exists(name: &str) -> bool {
        std::path::Path::new("/run/netns").join(name).exists()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>`, failing with its stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs a command inside the namespace (`ip netns exec`), returning its
    /// output whatever its exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .with_context(|| format!("ip netns exec {} {program}", self.name))
    }

    /// Builds a [`Command`] that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("open namespace {}", self.name))?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on the current thread with a valid fd; the
                    // thread ends right after `f`, so nothing else observes it.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        bail!(
                            "setns into {}: {}",
                            self.name,
                            std::io::Error::last_os_error()
                        );
                    }
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("thread in namespace {} panicked", self.name))?
        })
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete namespace {}: {e:#}", self.name);
        }
    }
}

/// Creates a veth pair with one end in each namespace and brings both up.
pub fn veth(a: (&Namespace, &str), b: (&Namespace, &str)) -> Result<()> {
    ip(&[
        "link", "add", a.1, "netns", &a.0.name, "type", "veth", "peer", "name", b.1, "netns",
        &b.0.name,
    ])?;
    a.0.ip(&["link", "set", a.1, "up"])?;
    b.0.ip(&["link", "set", b.1, "up"])?;
    Ok(())
}

/// Runs `ip <args>`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
