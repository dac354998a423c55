//! The open-loop load generator: NTPv4 client requests from one source
//! address and many source ports, paced to a fixed rate and sent in
//! `sendmmsg` batches by one thread; the replies counted by another with
//! `recvmmsg`, with the kernel's receive timestamp of each.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Result, bail, ensure};

/// Source ports the generator sends from.
const SOURCE_PORTS: usize = 64;
/// Requests per `sendmmsg` (all on one source port).
const SEND_BATCH: usize = 32;
/// How long the sender sleeps between batches: the pacing granularity.
const PACING: Duration = Duration::from_micros(100);
/// How long after a step's last request a reply still counts.
pub const GRACE: Duration = Duration::from_millis(300);

/// What one step measured.
pub struct Sent {
    /// Requests the kernel took.
    pub sent: u64,
    /// Response times of the replies (ns), unsorted.
    pub latencies: Vec<u32>,
}

/// The generator's sockets, one per source port, all on one address.
pub struct Generator {
    sockets: Vec<UdpSocket>,
}

impl Generator {
    /// Binds the sockets to `source`; call in the device namespace.
    pub fn open(source: Ipv4Addr) -> Result<Generator> {
        let sockets = (0..SOURCE_PORTS)
            .map(|_| -> Result<UdpSocket> {
                let s = UdpSocket::bind((source, 0))?;
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

    /// Waits until `server` answers (chronyd and the daemon take a moment).
    pub fn wait_for_server(&self, server: SocketAddrV4) -> Result<()> {
        let socket = &self.sockets[0];
        let deadline = Instant::now() + Duration::from_secs(20);
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

    /// Sends to `server` at `rate` for `duration` and collects the replies
    /// until [`GRACE`] after; the sender and the receiver run on `cpu`.
    pub fn step(
        &self,
        server: SocketAddrV4,
        rate: u32,
        duration: Duration,
        cpu: usize,
    ) -> Result<Sent> {
        let done = AtomicBool::new(false);
        let step_start = now_nanos();
        std::thread::scope(|scope| -> Result<Sent> {
            let receiver = scope.spawn(|| {
                pin_to(cpu)?;
                self.receive(step_start, &done)
            });
            let sent = pin_to(cpu).and_then(|()| self.send(server, rate, duration));
            std::thread::sleep(GRACE);
            done.store(true, Ordering::Relaxed);
            let latencies = receiver.join().expect("receiver thread")?;
            Ok(Sent {
                sent: sent?,
                latencies,
            })
        })
    }

    /// Paced sender: batches of up to [`SEND_BATCH`] on one source port at
    /// a time, rotating ports; each request carries its send time (ns since
    /// the Unix epoch) as transmit timestamp, which the server echoes.
    fn send(&self, server: SocketAddrV4, rate: u32, duration: Duration) -> Result<u64> {
        let dest = sockaddr(server);
        let start = Instant::now();
        let mut sent = 0u64;
        let mut offered = 0u64;
        let mut port = 0usize;
        let mut packets = vec![request(0); SEND_BATCH];
        while start.elapsed() < duration {
            let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
            while offered < due {
                let n = (due - offered).min(SEND_BATCH as u64) as usize;
                let stamp = now_nanos().to_be_bytes();
                for p in &mut packets[..n] {
                    p[40..48].copy_from_slice(&stamp);
                }
                let socket = &self.sockets[port % SOURCE_PORTS];
                port += 1;
                offered += n as u64;
                sent += sendmmsg(socket, &dest, &mut packets[..n])? as u64;
            }
            std::thread::sleep(PACING);
        }
        Ok(sent)
    }

    /// Collects replies until `done`; returns their response times (ns):
    /// from just before the request's `sendmmsg` to the kernel's receive
    /// timestamp of the reply, so the generator's own scheduling does not
    /// count.
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
        let mut result = Ok(());
        while !done.load(Ordering::Relaxed) && result.is_ok() {
            // SAFETY: `events` is a valid buffer of SOURCE_PORTS events.
            let n =
                unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), SOURCE_PORTS as i32, 20) };
            for ev in &events[..n.max(0) as usize] {
                let socket = fds[&{ ev.u64 }];
                result = recvmmsg_all(socket, |echoed, received| {
                    if echoed >= step_start && received >= echoed {
                        latencies.push(u32::try_from(received - echoed).unwrap_or(u32::MAX));
                    }
                });
                if result.is_err() {
                    break;
                }
            }
        }
        // SAFETY: closing the epoll fd we created.
        unsafe { libc::close(epoll) };
        result.map(|()| latencies)
    }
}

/// A 48-byte NTPv4 client request whose transmit timestamp is `stamp`
/// (the test kit's request, as an array the batches can copy).
fn request(stamp: u64) -> [u8; 48] {
    testkit::ntp::client_request(4, 3, stamp, 0)
        .try_into()
        .expect("a plain request is 48 bytes")
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it;
    // sched_setaffinity(0) applies to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        ensure!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0,
            "pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
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

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
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
