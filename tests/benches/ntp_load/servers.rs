//! The servers under load, all in the gateway namespace of a rig
//! (`tollgate::netns::Rig`), and where their CPU time is read.
//!
//! | address (gateway `lo`) | server |
//! |---|---|
//! | 100.127.0.123:123 | the real `tollgate run` (release build), native XDP on `devices0`, restarted with `ntp.fast-path: on` or `off` ([`Gateway::fast_path`]) |
//! | 100.127.0.125:123 | `chronyd -x` (never touches the clock), `local stratum 10`, no sources |
//! | 100.127.0.126:123 | a blackhole route: the sink that measures the generator alone |
//!
//! Receive processing: the gateway's `devices0` runs threaded NAPI pinned
//! to the server CPU, like a NIC's interrupts on a gateway, so the XDP
//! program (the fast path), the stack's delivery to a server socket and the
//! servers themselves share one CPU and their time is measurable per
//! thread. By default ([`Link::NIC_LIKE`]) it has four receive queues and
//! its NAPI threads run at `SCHED_FIFO` 50, preempting the servers as
//! interrupts would. The device side (`eth0`, with an XDP program of its own so that
//! native `XDP_TX` replies reach it) receives in the softirq of whoever
//! sent the reply: the NAPI thread for the fast path, the server's
//! `sendmmsg` for the others; either way on the server CPU and counted in
//! the server's time, as a NIC's transmit would be. (Threaded NAPI on
//! `eth0` too, on either CPU, made every server slower and lossier.) The
//! generator has the other CPU.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
};

use anyhow::{Context as _, Result, bail, ensure};
use testkit::{chrony_server::ChronyServer, daemon_process::Daemon};
use tollgate::netns::{Namespace, RIG_DEVICE_IFACE, Rig};

/// The CPU the gateway's side runs on (NAPI thread, servers).
pub const SERVER_CPU: usize = 0;
/// The CPU the generator runs on.
pub const GENERATOR_CPU: usize = 1;

/// How the gateway's device-facing link receives.
#[derive(Clone, Copy)]
pub struct Link {
    /// Receive queues, each a ring of 256 frames drained by its own NAPI
    /// thread (all on [`SERVER_CPU`]); the generator's 64 source ports
    /// spread over them.
    pub queues: u32,
    /// The NAPI threads at `SCHED_FIFO` 50, as the kernel runs interrupt
    /// threads: receive processing preempts user work, as a NIC's
    /// interrupts do. Otherwise at the bench's nice −10, where a server
    /// busy on the same CPU delays the ring's draining by up to a
    /// scheduler slice.
    pub realtime_napi: bool,
}

impl Link {
    /// Like a NIC on a gateway (the default): 4 queues, 1024 frames
    /// in all (a NIC ring has 1–4k descriptors), and receive processing
    /// that preempts the servers.
    pub const NIC_LIKE: Link = Link {
        queues: 4,
        realtime_napi: true,
    };
    /// A plain veth (`NTP_BENCH_LINK=veth`): one ring of 256 frames whose
    /// NAPI thread competes with the servers for the CPU.
    pub const PLAIN_VETH: Link = Link {
        queues: 1,
        realtime_napi: false,
    };

    pub fn describe(self) -> String {
        format!(
            "{} receive queue(s) of 256 frames, NAPI threads {}",
            self.queues,
            if self.realtime_napi {
                "SCHED_FIFO 50"
            } else {
                "at nice -10"
            }
        )
    }
}

/// The generator's source, a member of the policy's group.
pub const MEMBER: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 10);
pub const TOLLGATE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(100, 127, 0, 123), 123);
pub const CHRONY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(100, 127, 0, 125), 123);
pub const SINK: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(100, 127, 0, 126), 123);
/// The receive buffer chronyd gets, as Tollgate's server sets on its own
/// sockets (`ntp/batch_socket.rs`).
const RECEIVE_BUFFER: libc::c_int = 2 << 20;

/// Group `meters`; chronyd and the sink are allowed destinations.
const POLICY: &str = "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n    \
                      rules:\n      - allow: {to: 100.127.0.124/30, proto: udp, ports: [123]}\n";

/// The rig, the daemon and chronyd; everything goes on drop (chronyd,
/// the daemon, then the namespaces).
pub struct Gateway {
    chrony: ChronyServer,
    pub daemon: Daemon,
    pub rig: Rig,
    /// The gateway's NAPI thread(s) for `devices0`.
    napi: Vec<u32>,
    /// Whether the daemon runs with `ntp.fast-path: on`.
    fast_path: bool,
}

impl Gateway {
    pub fn start(tollgate: PathBuf, link: Link) -> Result<Gateway> {
        let rig =
            Rig::create_with_queues(&format!("tg-ntpload-{}", std::process::id()), link.queues)?;
        rig.add_device(&MEMBER.to_string())?;
        for addr in ["100.127.0.123/32", "100.127.0.125/32"] {
            rig.gateway.ip(&["addr", "add", addr, "dev", "lo"])?;
        }
        rig.gateway
            .ip(&["route", "add", "blackhole", &format!("{}/32", SINK.ip())])?;
        let mut daemon = Daemon::prepare(
            &rig.gateway,
            "ntpload",
            &[RIG_DEVICE_IFACE],
            &format!(
                "attach: xdp-native\nntp:\n  listen: [\"{TOLLGATE}\"]\n  reference: local\n  \
                 stratum: 10\n  fast-path: on\n  fast-path-virtual: on\n  \
                 rate-limit: {{interval: -4, burst: 4000000000}}\n  max-rate: 4000000000\n"
            ),
            &[("meters.yaml", POLICY)],
        );
        daemon.binary = tollgate;
        daemon.spawn();
        // Native XDP_TX replies reach a veth only if it runs XDP itself.
        testkit::xdp_pass_on(&rig.devices, "eth0");
        let before = napi_threads(RIG_DEVICE_IFACE)?;
        threaded_napi(&rig.gateway, RIG_DEVICE_IFACE)?;
        let napi: Vec<u32> = napi_threads(RIG_DEVICE_IFACE)?
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        ensure!(!napi.is_empty(), "no NAPI thread appeared for devices0");
        for &pid in &napi {
            pin(pid, SERVER_CPU)?;
            if link.realtime_napi {
                realtime(pid)?;
            } else {
                same_priority(pid)?;
            }
        }
        // `local stratum 10`, no `ratelimit`: chronyd limits nobody unless
        // told to.
        let chrony = ChronyServer::start(&rig.gateway, CHRONY.into(), 10, "10.0.0.0/8")?;
        pin(chrony.pid(), SERVER_CPU)?;
        pin_process(daemon.pid(), SERVER_CPU)?;
        Ok(Gateway {
            chrony,
            daemon,
            rig,
            napi,
            fast_path: true,
        })
    }

    /// Restarts the daemon with `ntp.fast-path` `on` or `off` unless it
    /// runs so already. The restart adopts the attachment (and the NAPI
    /// thread stays): only the NTP server and its fast path restart.
    pub fn fast_path(&mut self, on: bool) -> Result<()> {
        if self.fast_path == on {
            return Ok(());
        }
        let (from, to) = if on {
            ("fast-path: off", "fast-path: on")
        } else {
            ("fast-path: on", "fast-path: off")
        };
        let config = std::fs::read_to_string(&self.daemon.config)?;
        ensure!(config.contains(from), "the daemon's config has no {from}");
        self.daemon.stop();
        std::fs::write(&self.daemon.config, config.replace(from, to))?;
        self.daemon.spawn();
        pin_process(self.daemon.pid(), SERVER_CPU)?;
        self.fast_path = on;
        Ok(())
    }

    /// Raises chronyd's receive buffer once its socket exists.
    pub fn raise_chrony_buffer(&self) -> Result<()> {
        raise_receive_buffer(self.chrony.pid(), CHRONY.port(), RECEIVE_BUFFER)
    }

    /// CPU seconds so far of the receive processing (the NAPI threads) and
    /// of each server process: (napi, tollgate, chronyd).
    pub fn cpu(&self) -> Result<(f64, f64, f64)> {
        let mut napi = 0.0;
        for &pid in &self.napi {
            napi += stat_cpu(&format!("/proc/{pid}/stat"))?;
        }
        Ok((
            napi,
            process_cpu(self.daemon.pid())?,
            process_cpu(self.chrony.pid())?,
        ))
    }
}

/// Turns on threaded NAPI for `interface` in `ns` (it has NAPI because an
/// XDP program is attached).
fn threaded_napi(ns: &Namespace, interface: &str) -> Result<()> {
    let out = ns.exec(
        "sh",
        &[
            "-c",
            &format!("echo 1 > /sys/class/net/{interface}/threaded"),
        ],
    )?;
    ensure!(
        out.status.success(),
        "threaded NAPI on {interface}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Kernel threads `napi/<interface>-<id>` (of every namespace: compare
/// before and after).
fn napi_threads(interface: &str) -> Result<Vec<u32>> {
    let prefix = format!("napi/{interface}-");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(&prefix) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Pins thread `pid` to `cpu`.
fn pin(pid: u32, cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        ensure!(
            libc::sched_setaffinity(pid as libc::pid_t, size_of::<libc::cpu_set_t>(), &set) == 0,
            "pin {pid} to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Gives kernel thread `pid` the bench's priority (nice −10), which the
/// servers and the generator inherit: the kernel's share of the work
/// competes with other jobs on the machine as they do.
fn same_priority(pid: u32) -> Result<()> {
    // SAFETY: getpriority/setpriority have no memory preconditions.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        ensure!(
            libc::setpriority(libc::PRIO_PROCESS, pid, nice) == 0,
            "setpriority {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Runs kernel thread `pid` at `SCHED_FIFO` 50, the priority of the
/// kernel's interrupt threads.
fn realtime(pid: u32) -> Result<()> {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: sched_setscheduler reads `param`, which lives across the call.
    let set = unsafe { libc::sched_setscheduler(pid as libc::pid_t, libc::SCHED_FIFO, &param) };
    ensure!(
        set == 0,
        "SCHED_FIFO for {pid}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Pins every thread of process `pid` to `cpu`.
fn pin_process(pid: u32, cpu: usize) -> Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = task?.file_name().to_str().and_then(|n| n.parse().ok()) {
            pin(tid, cpu)?;
        }
    }
    Ok(())
}

/// Sets `SO_RCVBUFFORCE` on the UDP socket of process `pid` bound to
/// `port`, through a duplicate of its descriptor (`pidfd_getfd`): chronyd
/// has no option for it.
fn raise_receive_buffer(pid: u32, port: u16, bytes: libc::c_int) -> Result<()> {
    // SAFETY: pidfd_open on a pid we started; the fd is closed below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
    ensure!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    let mut raised = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: duplicates the target's fd into ours; closed below.
        let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) } as libc::c_int;
        if dup < 0 {
            continue;
        }
        // SAFETY: getsockname/setsockopt on our duplicate, with buffers of
        // the sizes passed.
        unsafe {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let named =
                libc::getsockname(dup, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len);
            if named == 0
                && i32::from(addr.sin_family) == libc::AF_INET
                && u16::from_be(addr.sin_port) == port
                && libc::setsockopt(
                    dup,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&bytes as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                ) == 0
            {
                raised += 1;
            }
            libc::close(dup);
        }
    }
    // SAFETY: closing the pidfd opened above.
    unsafe { libc::close(pidfd) };
    if raised == 0 {
        bail!("no socket of process {pid} on port {port}");
    }
    Ok(())
}

/// User + system CPU seconds of process `pid`, all its threads.
fn process_cpu(pid: u32) -> Result<f64> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// User + system CPU seconds from a `stat` file.
fn stat_cpu(path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| path.to_string())?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, in clock ticks.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// The kernel's counters at each place on the path where a request or its
/// reply can be dropped, so that a step's loss is located, not guessed.
#[derive(Clone, Copy, Default)]
pub struct Drops {
    /// Requests the device's `eth0` could not hand to the gateway's veth:
    /// its receive ring (256 frames, drained by the NAPI thread) was full.
    pub gateway_ring: u64,
    /// Replies the gateway's `XDP_TX` could not hand back to `eth0`: the
    /// device side's ring was full.
    pub xdp_tx: u64,
    /// Datagrams dropped at a full socket: the servers' in the gateway, the
    /// generator's in the device namespace.
    pub gateway_socket: u64,
    pub generator_socket: u64,
}

impl std::ops::Sub for Drops {
    type Output = Drops;
    fn sub(self, before: Drops) -> Drops {
        Drops {
            gateway_ring: self.gateway_ring - before.gateway_ring,
            xdp_tx: self.xdp_tx - before.xdp_tx,
            gateway_socket: self.gateway_socket - before.gateway_socket,
            generator_socket: self.generator_socket - before.generator_socket,
        }
    }
}

impl Gateway {
    /// The drop counters now.
    pub fn drops(&self) -> Result<Drops> {
        let eth0: serde_json::Value =
            serde_json::from_str(&self.rig.devices.ip(&["-s", "-j", "link", "show", "eth0"])?)?;
        let gateway_ring = eth0[0]["stats64"]["tx"]["dropped"]
            .as_u64()
            .context("eth0 tx dropped")?;
        let ethtool = self
            .rig
            .gateway
            .exec("ethtool", &["-S", RIG_DEVICE_IFACE])?;
        ensure!(ethtool.status.success(), "ethtool -S {RIG_DEVICE_IFACE}");
        let xdp_tx = String::from_utf8_lossy(&ethtool.stdout)
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .filter(|(name, _)| name.ends_with("xdp_tx_errors"))
            .map(|(_, v)| v.trim().parse::<u64>().unwrap_or(0))
            .sum();
        Ok(Drops {
            gateway_ring,
            xdp_tx,
            gateway_socket: udp_receive_drops(&self.rig.gateway)?,
            generator_socket: udp_receive_drops(&self.rig.devices)?,
        })
    }
}

/// `Udp: RcvbufErrors` of namespace `ns` (`/proc/net/snmp`).
fn udp_receive_drops(ns: &Namespace) -> Result<u64> {
    let out = ns.exec("cat", &["/proc/net/snmp"])?;
    let snmp = String::from_utf8_lossy(&out.stdout);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next(), udp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Udp lines in /proc/net/snmp of {}", ns.name());
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .context("Udp RcvbufErrors")
}
