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
        // Duplicate address detection would hold IPv6 back for a second on
        // every new link; on links private to the namespaces nothing collides.
        ns.sysctl("net.ipv6.conf.default.accept_dad=0")?;
        ns.sysctl("net.ipv6.conf.all.accept_dad=0")?;
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

    /// Sets a sysctl (`name=value`) inside the namespace.
    pub fn sysctl(&self, setting: &str) -> Result<()> {
        let out = self.exec("sysctl", &["-qw", setting])?;
        if !out.status.success() {
            bail!(
                "sysctl {setting} in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `GET path` over HTTP/1.1 from inside the namespace (the metrics
    /// endpoint of a daemon that runs in it); returns status and body.
    pub fn http_get(&self, addr: &str, path: &str) -> Result<(u16, String)> {
        use std::io::{Read as _, Write as _};
        self.enter(|| -> Result<(u16, String)> {
            let mut s =
                std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )?;
            let mut response = String::new();
            s.read_to_string(&mut response)?;
            let (head, body) = response
                .split_once("\r\n\r\n")
                .context("not an HTTP response")?;
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .context("no HTTP status")?;
            Ok((status, body.to_string()))
        })?
    }

    /// Adds `addr` (with its prefix length) to `dev`. An IPv6 address gets
    /// `nodad`: without it the address is tentative until the kernel's DAD
    /// work runs (even with DAD off, or on `lo`), and a socket bound to it
    /// before that fails with EADDRNOTAVAIL (a test's echo server did so
    /// once, under load).
    pub fn add_address(&self, addr: &str, dev: &str) -> Result<()> {
        let mut args = vec!["addr", "add", addr, "dev", dev];
        if addr.contains(':') {
            args.push("nodad");
        }
        self.ip(&args).map(drop)
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

/// Moves the calling thread into the named network namespace, for good.
/// Threads it creates afterwards inherit it. Unlike `ip netns exec`, the
/// mount namespace (and so the host's bpffs at /sys/fs/bpf) stays.
pub fn enter_for_good(name: &str) -> Result<()> {
    let file = File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("network namespace {name} (ip netns list)"))?;
    // SAFETY: setns on the current thread with a valid fd.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns into {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Creates a veth pair with one end in each namespace and brings both up.
pub fn veth(a: (&Namespace, &str), b: (&Namespace, &str)) -> Result<()> {
    veth_with_queues(a, b, 1)
}

/// [`veth`] with `queues` transmit and receive queues at each end. With an
/// XDP program attached, each receive queue is a ring of 256 frames with
/// its own NAPI context, as a NIC's queues are.
pub fn veth_with_queues(a: (&Namespace, &str), b: (&Namespace, &str), queues: u32) -> Result<()> {
    let queues = queues.to_string();
    ip(&[
        "link",
        "add",
        a.1,
        "netns",
        &a.0.name,
        "numtxqueues",
        &queues,
        "numrxqueues",
        &queues,
        "type",
        "veth",
        "peer",
        "name",
        b.1,
        "netns",
        &b.0.name,
        "numtxqueues",
        &queues,
        "numrxqueues",
        &queues,
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

/// Three namespaces wired like a gateway site: devices → gateway → upstream.
///
/// | namespace | interface | addresses |
/// |---|---|---|
/// | devices | `eth0` | any in 10.0.0.0/8 and fd00::/16 (add with [`Rig::add_device`]); routes via the gateway |
/// | gateway | `devices0` (device-facing: the dataplane attaches here) | 10.0.0.1/8, fd00::1/16 |
/// | gateway | `uplink0` | 198.18.0.1/30, 2001:db8:ffff::1/64; forwards both families |
/// | upstream | `eth0` | 198.18.0.2/30, 2001:db8:ffff::2/64; services on `lo` ([`Rig::add_service`]) |
pub struct Rig {
    pub devices: Namespace,
    pub gateway: Namespace,
    pub upstream: Namespace,
}

pub const RIG_DEVICE_IFACE: &str = "devices0";

impl Rig {
    /// Creates the namespaces `<prefix>-dev`, `<prefix>-gw`, `<prefix>-up`.
    pub fn create(prefix: &str) -> Result<Rig> {
        Rig::create_with_queues(prefix, 1)
    }

    /// [`Rig::create`] with `queues` queues on the device-facing link
    /// ([`veth_with_queues`]).
    pub fn create_with_queues(prefix: &str, queues: u32) -> Result<Rig> {
        let rig = Rig {
            devices: Namespace::create(&format!("{prefix}-dev"))?,
            gateway: Namespace::create(&format!("{prefix}-gw"))?,
            upstream: Namespace::create(&format!("{prefix}-up"))?,
        };
        veth_with_queues(
            (&rig.devices, "eth0"),
            (&rig.gateway, RIG_DEVICE_IFACE),
            queues,
        )?;
        veth((&rig.gateway, "uplink0"), (&rig.upstream, "eth0"))?;
        for (ns, iface, addrs) in [
            (&rig.gateway, RIG_DEVICE_IFACE, ["10.0.0.1/8", "fd00::1/16"]),
            (
                &rig.gateway,
                "uplink0",
                ["198.18.0.1/30", "2001:db8:ffff::1/64"],
            ),
            (
                &rig.upstream,
                "eth0",
                ["198.18.0.2/30", "2001:db8:ffff::2/64"],
            ),
        ] {
            for addr in addrs {
                ns.add_address(addr, iface)?;
            }
        }
        rig.gateway.sysctl("net.ipv4.ip_forward=1")?;
        rig.gateway.sysctl("net.ipv6.conf.all.forwarding=1")?;
        // `onlink`: the device side has no address until `add_device`.
        rig.devices.ip(&[
            "route", "add", "default", "via", "10.0.0.1", "dev", "eth0", "onlink",
        ])?;
        rig.devices.ip(&[
            "-6", "route", "add", "default", "via", "fd00::1", "dev", "eth0", "onlink",
        ])?;
        rig.upstream
            .ip(&["route", "add", "10.0.0.0/8", "via", "198.18.0.1"])?;
        rig.upstream
            .ip(&["-6", "route", "add", "fd00::/16", "via", "2001:db8:ffff::1"])?;
        Ok(rig)
    }

    /// Gives the device namespace another source address (10/8 or fd00::/16).
    pub fn add_device(&self, addr: &str) -> Result<()> {
        let prefixed = if addr.contains(':') {
            format!("{addr}/16")
        } else {
            format!("{addr}/8")
        };
        self.devices.add_address(&prefixed, "eth0")?;
        Ok(())
    }

    /// Gives the upstream namespace a service address (on `lo`), reachable
    /// from the devices through the gateway.
    pub fn add_service(&self, addr: &str) -> Result<()> {
        let host = if addr.contains(':') {
            format!("{addr}/128")
        } else {
            format!("{addr}/32")
        };
        self.upstream.add_address(&host, "lo")?;
        self.gateway.ip(&[
            "route",
            "add",
            &host,
            "via",
            if addr.contains(':') {
                "2001:db8:ffff::2"
            } else {
                "198.18.0.2"
            },
        ])?;
        Ok(())
    }
}
