//! NTP server load benchmark: Tollgate's server against chronyd, same run,
//! same machine, same load generator.
//!
//! All servers run in a namespace of their own, on its loopback: Tollgate's
//! `NtpService` in this process (`reference: local`, every loopback source
//! allowed, rate limits out of the way), once with one worker and once with
//! two (`ntp.workers: 2`, SO_REUSEPORT), and `chronyd -x` (never touches the
//! clock) with `local stratum 10` and `allow`, everything in a temporary
//! directory. The load generator sends NTPv4 client requests from many
//! source ports at fixed rates, in steps, alternating the servers at
//! each step, and measures for each step:
//!
//! - loss: requests without a reply (a reply arriving up to 300 ms after the
//!   step still counts);
//! - response time p50/p99: from just before the request's `sendmmsg` to the
//!   kernel's receive timestamp of the reply, so the generator's own
//!   scheduling does not count;
//! - server CPU per reply (µs): the server's user+system time over the step
//!   divided by its replies (chronyd's process; Tollgate's runtime threads).
//!
//! Run as root: `cargo bench --bench ntp_load`. `NTP_BENCH_STEP_SECONDS`
//! (default 2) sets how long each step lasts.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    process::{Child, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail, ensure};
use prometheus::Registry;
use tollgate::{
    config::Config,
    netns::Namespace,
    ntp::{NtpService, SourceGroups},
    tables::CompiledPolicy,
};

/// Source ports the generator sends from.
const SOURCE_PORTS: usize = 64;
/// Requests per `sendmmsg` (all on one source port).
const SEND_BATCH: usize = 16;
/// Request rates tried, per second.
const RATES: [u32; 12] = [
    10_000, 20_000, 40_000, 60_000, 80_000, 100_000, 120_000, 150_000, 180_000, 220_000, 260_000,
    300_000,
];
const CHRONY_PORT: u16 = 10123;
/// Tollgate with one worker, and with two (`ntp.workers: 2`, SO_REUSEPORT).
const TOLLGATE_PORT: u16 = 11123;
const TOLLGATE_2W_PORT: u16 = 11124;
/// Tollgate's runtime threads, found by name for CPU accounting.
const RUNTIME_THREAD: &str = "tg-ntp-bench";

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    if std::env::args().skip(1).any(|a| a != "--bench") {
        bail!("usage: cargo bench --bench ntp_load");
    }
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "needs root (network namespace)"
    );
    let step = Duration::from_secs_f64(
        std::env::var("NTP_BENCH_STEP_SECONDS")
            .ok()
            .map(|s| s.parse::<f64>())
            .transpose()
            .context("NTP_BENCH_STEP_SECONDS")?
            .unwrap_or(2.0),
    );
    // Other jobs share this machine: run the servers and the generator at a
    // higher priority (inherited by the runtime threads and chronyd alike).
    // SAFETY: setpriority on this thread, before any other thread exists.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } != 0 {
        eprintln!(
            "warning: cannot raise priority: {}",
            std::io::Error::last_os_error()
        );
    }
    let ns = Namespace::create(&format!("tg-ntpbench-{}", std::process::id()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(RUNTIME_THREAD)
        .enable_all()
        .build()?;
    let tollgate = start_tollgate(&ns, &runtime, TOLLGATE_PORT, 1)?;
    let tollgate_2w = start_tollgate(&ns, &runtime, TOLLGATE_2W_PORT, 2)?;
    let chrony = Chrony::start(&ns)?;
    // Tollgate's two services share the runtime threads; only the one under
    // load uses CPU during a step.
    let mut targets = [
        Target {
            name: "tollgate",
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, TOLLGATE_PORT)),
            cpu: Box::new(|| thread_cpu(RUNTIME_THREAD)),
            results: vec![],
        },
        Target {
            name: "tollgate-2w",
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, TOLLGATE_2W_PORT)),
            cpu: Box::new(|| thread_cpu(RUNTIME_THREAD)),
            results: vec![],
        },
        Target {
            name: "chronyd",
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, CHRONY_PORT)),
            cpu: Box::new({
                let pid = chrony.pid();
                move || process_cpu(pid)
            }),
            results: vec![],
        },
    ];
    let generator = ns.enter(Generator::open)??;
    for target in &targets {
        generator.wait_for_server(target.addr)?;
    }

    println!(
        "{:>11} {:>9} {:>10} {:>8} {:>9} {:>9} {:>10}",
        "server", "rate/s", "sent/s", "loss %", "p50 µs", "p99 µs", "CPU µs/req"
    );
    for rate in RATES {
        for target in &mut targets {
            let r = generator.step(target, rate, step)?;
            println!(
                "{:>11} {:>9} {:>10.0} {:>8.3} {:>9.1} {:>9.1} {:>10.2}",
                target.name,
                rate,
                r.sent as f64 / r.elapsed,
                r.loss_percent(),
                r.p50_us,
                r.p99_us,
                r.cpu_us_per_reply,
            );
            target.results.push(r);
        }
        // Both lost more than 1% at the last two rates: past saturation.
        if targets.iter().all(|t| {
            t.results
                .iter()
                .rev()
                .take(2)
                .all(|r| r.loss_percent() > 1.0)
        }) {
            break;
        }
    }

    println!("\nsummary (highest rate with no loss; response time and CPU at that rate)");
    println!(
        "{:>11} {:>12} {:>9} {:>9} {:>11}",
        "server", "req/s @0%", "p50 µs", "p99 µs", "CPU µs/req"
    );
    for target in &targets {
        match target.results.iter().rfind(|r| r.replies == r.sent) {
            Some(r) => println!(
                "{:>11} {:>12} {:>9.1} {:>9.1} {:>11.2}",
                target.name, r.rate, r.p50_us, r.p99_us, r.cpu_us_per_reply
            ),
            None => println!("{:>11} {:>12}", target.name, "none"),
        }
    }
    drop(chrony);
    runtime.block_on(tollgate.shutdown());
    runtime.block_on(tollgate_2w.shutdown());
    Ok(())
}

fn start_tollgate(
    ns: &Namespace,
    runtime: &tokio::runtime::Runtime,
    port: u16,
    workers: u8,
) -> Result<NtpService> {
    let text = format!(
        "interfaces: [lo]\npolicy-dir: /nonexistent\nntp:\n  \
         listen: [\"127.0.0.1:{port}\"]\n  reference: local\n  stratum: 10\n  \
         allow: [127.0.0.0/8]\n  rate-limit: {{interval: -4, burst: 4000000000}}\n  \
         max-rate: 4000000000\n  workers: {workers}\n"
    );
    let config =
        Config::parse(Path::new("bench.yaml"), &text).map_err(|d| anyhow::anyhow!("{d}"))?;
    let sources = SourceGroups::from_policy(&CompiledPolicy::default(), &config.ntp.allow);
    let registry = Registry::new();
    ns.enter(|| {
        let _runtime = runtime.enter();
        NtpService::start(&config.ntp, sources, &registry)
    })?
}

/// chronyd as a server on the namespace's loopback; killed on drop.
struct Chrony {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Chrony {
    fn start(ns: &Namespace) -> Result<Chrony> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "local stratum 10\nallow 127.0.0.0/8\nbindaddress 127.0.0.1\nport {CHRONY_PORT}\n\
                 cmdport 0\npidfile {}\n",
                dir.path().join("chronyd.pid").display()
            ),
        )?;
        // -x: never adjust the clock. -d: foreground, so the child is chronyd.
        let child = ns
            .command("chronyd")
            .args(["-x", "-d", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start chronyd")?;
        Ok(Chrony { child, _dir: dir })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Chrony {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Target {
    name: &'static str,
    addr: SocketAddr,
    /// The server's CPU time so far, seconds.
    cpu: Box<dyn Fn() -> Result<f64>>,
    results: Vec<StepResult>,
}

struct StepResult {
    rate: u32,
    sent: u64,
    replies: u64,
    elapsed: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_reply: f64,
}

impl StepResult {
    fn loss_percent(&self) -> f64 {
        100.0 * (1.0 - self.replies as f64 / self.sent.max(1) as f64)
    }
}

/// The load generator's sockets, one per source port.
struct Generator {
    sockets: Vec<UdpSocket>,
}

impl Generator {
    fn open() -> Result<Generator> {
        let sockets = (0..SOURCE_PORTS)
            .map(|_| -> Result<UdpSocket> {
                let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
                s.set_nonblocking(true)?;
                setsockopt(&s, libc::SO_TIMESTAMPNS, 1)?;
                // Room for replies queued while the receiver waits for a CPU:
                // a reply the generator drops would count as the server's loss.
                setsockopt(&s, libc::SO_RCVBUFFORCE, 8 << 20)?;
                Ok(s)
            })
            .collect::<Result<_>>()?;
        Ok(Generator { sockets })
    }

    /// Waits until `server` answers (chronyd takes a moment to start).
    fn wait_for_server(&self, server: SocketAddr) -> Result<()> {
        let socket = &self.sockets[0];
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 128];
        while Instant::now() < deadline {
            socket.send_to(&request(now_nanos()), server)?;
            std::thread::sleep(Duration::from_millis(100));
            if socket.recv_from(&mut buf).is_ok() {
                while socket.recv_from(&mut buf).is_ok() {}
                return Ok(());
            }
        }
        bail!("{server} does not answer")
    }

    /// Sends at `rate` for `duration` and measures.
    fn step(&self, target: &Target, rate: u32, duration: Duration) -> Result<StepResult> {
        let done = AtomicBool::new(false);
        let step_start = now_nanos();
        let cpu_before = (target.cpu)()?;
        let (sent, elapsed, mut latencies) = std::thread::scope(|scope| -> Result<_> {
            let receiver = scope.spawn(|| self.receive(step_start, &done));
            let sent = self.send(target.addr, rate, duration);
            let elapsed = duration.as_secs_f64();
            std::thread::sleep(Duration::from_millis(300));
            let cpu_after = (target.cpu)();
            done.store(true, Ordering::Relaxed);
            let latencies = receiver.join().expect("receiver thread")?;
            Ok((sent?, elapsed, (latencies, cpu_after?)))
        })?;
        let (lat, cpu_after) = (&mut latencies.0, latencies.1);
        lat.sort_unstable();
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return f64::NAN;
            }
            lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1e3
        };
        let replies = lat.len() as u64;
        Ok(StepResult {
            rate,
            sent,
            replies,
            elapsed,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            cpu_us_per_reply: (cpu_after - cpu_before) * 1e6 / replies.max(1) as f64,
        })
    }

    /// Paced sender: batches of [`SEND_BATCH`] on one source port at a time,
    /// rotating ports; each request carries its send time (ns since the Unix
    /// epoch) as transmit timestamp, which the server echoes.
    fn send(&self, server: SocketAddr, rate: u32, duration: Duration) -> Result<u64> {
        let dest = sockaddr(server);
        let start = Instant::now();
        let mut sent = 0u64;
        let mut port = 0usize;
        let mut packets = [[0u8; 48]; SEND_BATCH];
        while start.elapsed() < duration {
            let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
            while sent < due {
                let n = (due - sent).min(SEND_BATCH as u64) as usize;
                let stamp = now_nanos();
                for p in &mut packets[..n] {
                    *p = request(stamp);
                }
                let socket = &self.sockets[port % SOURCE_PORTS];
                port += 1;
                sent += sendmmsg(socket, &dest, &mut packets[..n])? as u64;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(sent)
    }

    /// Collects replies until `done`; returns their response times (ns).
    fn receive(&self, step_start: u64, done: &AtomicBool) -> Result<Vec<u32>> {
        // SAFETY: plain epoll calls on fds we own for the whole function.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        ensure!(
            epoll >= 0,
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        let fds: HashMap<u64, &UdpSocket> = self
            .sockets
            .iter()
            .map(|s| (s.as_raw_fd() as u64, s))
            .collect();
        for &fd in fds.keys() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd,
            };
            // SAFETY: valid epoll fd, socket fd and event.
            let rc = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd as i32, &mut ev) };
            ensure!(rc == 0, "epoll_ctl: {}", std::io::Error::last_os_error());
        }
        let mut latencies = Vec::new();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; SOURCE_PORTS];
        while !done.load(Ordering::Relaxed) {
            // SAFETY: `events` is a valid buffer of SOURCE_PORTS events.
            let n =
                unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), SOURCE_PORTS as i32, 20) };
            for ev in &events[..n.max(0) as usize] {
                let socket = fds[&{ ev.u64 }];
                recvmmsg_all(socket, |echoed, received| {
                    if echoed >= step_start && received >= echoed {
                        latencies.push(u32::try_from(received - echoed).unwrap_or(u32::MAX));
                    }
                })?;
            }
        }
        // SAFETY: closing the epoll fd we created.
        unsafe { libc::close(epoll) };
        Ok(latencies)
    }
}

/// A 48-byte NTPv4 client request whose transmit timestamp is `stamp`.
fn request(stamp: u64) -> [u8; 48] {
    let mut r = [0u8; 48];
    r[0] = (4 << 3) | 3;
    r[40..48].copy_from_slice(&stamp.to_be_bytes());
    r
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

fn setsockopt(socket: &UdpSocket, option: libc::c_int, value: libc::c_int) -> Result<()> {
    // SAFETY: an int option on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    ensure!(
        rc == 0,
        "setsockopt {option}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn sockaddr(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        unreachable!("the bench runs on IPv4 loopback")
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Sends every packet to `dest` in one `sendmmsg`; returns how many the
/// kernel took (a full socket buffer drops the rest: counted as loss).
fn sendmmsg(
    socket: &UdpSocket,
    dest: &libc::sockaddr_in,
    packets: &mut [[u8; 48]],
) -> Result<usize> {
    let mut iovs: Vec<libc::iovec> = packets
        .iter_mut()
        .map(|p| libc::iovec {
            iov_base: p.as_mut_ptr().cast(),
            iov_len: p.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: msghdr is plain data; zero is a valid start.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_name = (dest as *const libc::sockaddr_in).cast_mut().cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = iov;
            hdr.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            }
        })
        .collect();
    // SAFETY: `msgs` points at live iovecs, buffers and the address.
    let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(0);
        }
        bail!("sendmmsg: {e}");
    }
    Ok(n as usize)
}

/// Drains `socket` with `recvmmsg`, calling `f(echoed send time, kernel
/// receive time)` (ns since the Unix epoch) for each reply.
fn recvmmsg_all(socket: &UdpSocket, mut f: impl FnMut(u64, u64)) -> Result<()> {
    const N: usize = 32;
    const CMSG_SPACE: usize = 64;
    let mut bufs = [[0u8; 128]; N];
    let mut controls = [[0u64; CMSG_SPACE / 8]; N];
    loop {
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(controls.iter_mut())
            .map(|(iov, control)| {
                // SAFETY: msghdr is plain data; zero is a valid start.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_iov = iov;
                hdr.msg_iovlen = 1;
                hdr.msg_control = control.as_mut_ptr().cast();
                hdr.msg_controllen = CMSG_SPACE;
                libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                }
            })
            .collect();
        // SAFETY: `msgs` points at live buffers and control buffers.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                N as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(());
            }
            bail!("recvmmsg: {e}");
        }
        for (msg, buf) in msgs.iter().zip(&bufs).take(n as usize) {
            if msg.msg_len < 48 {
                continue;
            }
            let echoed = u64::from_be_bytes(buf[24..32].try_into().expect("8 bytes"));
            if let Some(received) = receive_timestamp(&msg.msg_hdr) {
                f(echoed, received);
            }
        }
        if (n as usize) < N {
            return Ok(());
        }
    }
}

/// The `SCM_TIMESTAMPNS` kernel receive timestamp of a received message.
fn receive_timestamp(hdr: &libc::msghdr) -> Option<u64> {
    // SAFETY: the CMSG macros walk the control buffer the kernel filled in.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

/// User + system CPU seconds of process `pid` (`/proc/PID/stat`).
fn process_cpu(pid: u32) -> Result<f64> {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// User + system CPU seconds of this process's threads named `name`.
fn thread_cpu(name: &str) -> Result<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(name) {
            total += stat_cpu(&std::fs::read_to_string(path.join("stat"))?)?;
        }
    }
    Ok(total)
}

fn stat_cpu(stat: &str) -> Result<f64> {
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, in clock ticks.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}
