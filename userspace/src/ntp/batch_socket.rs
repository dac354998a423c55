//! The server's UDP sockets: batched receive and send (`recvmmsg`,
//! `sendmmsg`) with a kernel receive timestamp per datagram, and
//! `SO_REUSEPORT` so several workers can share one listen address.
//!
//! The kernel's UDP path, not Tollgate's NTP code, is what a request costs
//! (see BENCHMARKS.md); batching pays the system-call overhead once per
//! batch instead of once per datagram. `timestamped-socket` (used by the
//! upstream poller, see `poll_socket`) owns its file descriptor and offers
//! none of this.

use std::{
    io,
    mem::{size_of, zeroed},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::io::unix::AsyncFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Room for one `SCM_TIMESTAMPNS` control message (aligned as `cmsghdr`).
const CONTROL_WORDS: usize = 8;
/// Receive buffer: about 2,700 queued requests, so a burst or a moment
/// without CPU does not drop requests. Queueing does not hurt accuracy:
/// each request's receive time is the kernel's timestamp at arrival.
const RECEIVE_BUFFER: libc::c_int = 2 << 20;

pub struct BatchSocket {
    fd: AsyncFd<OwnedFd>,
    local: SocketAddr,
}

/// Receive buffers for one batch; `SIZE` is the largest datagram kept whole
/// (a longer one is truncated to `SIZE` bytes).
pub struct RecvBatch<const SIZE: usize> {
    data: Box<[[u8; SIZE]; BATCH]>,
    lens: [usize; BATCH],
    from: [libc::sockaddr_storage; BATCH],
    control: [[u64; CONTROL_WORDS]; BATCH],
    received: [SystemTime; BATCH],
    count: usize,
}

/// Replies for one batch, each to the source of a received datagram.
pub struct SendBatch<const SIZE: usize> {
    data: Box<[[u8; SIZE]; BATCH]>,
    lens: [usize; BATCH],
    to: [libc::sockaddr_storage; BATCH],
    count: usize,
}

impl BatchSocket {
    /// Binds a non-blocking UDP socket with kernel receive timestamps, in
    /// the calling thread's network namespace; `reuse_port` lets further
    /// sockets of this process bind the same address (`SO_REUSEPORT`; the
    /// kernel then spreads clients across them). Needs a tokio runtime
    /// context.
    pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<Self> {
        let family = match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                family,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if reuse_port {
            set_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        }
        set_option(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
        // FORCE goes past net.core.rmem_max (needs CAP_NET_ADMIN, which the
        // controller has); without it the kernel caps the size.
        set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RECEIVE_BUFFER)
            .or_else(|_| set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RECEIVE_BUFFER))?;
        if family == libc::AF_INET6 {
            set_option(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
        }
        let (storage, len) = to_sockaddr(addr);
        // SAFETY: `storage` holds a sockaddr of `len` bytes.
        if unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let local = local_addr(&fd)?;
        // SAFETY: an OwnedFd stays open and keeps its fd while it is owned.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(BatchSocket { fd, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for datagrams and receives up to [`BATCH`] of them.
    pub async fn recv<const SIZE: usize>(&self, batch: &mut RecvBatch<SIZE>) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| batch.recvmmsg(fd.as_raw_fd())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends every reply in `batch`; returns how many the kernel refused
    /// (each is skipped, the rest still go out).
    pub async fn send<const SIZE: usize>(&self, batch: &SendBatch<SIZE>) -> io::Result<usize> {
        let mut next = 0;
        let mut refused = 0;
        while next < batch.count {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| batch.sendmmsg(fd.as_raw_fd(), next)) {
                Ok(Ok(sent)) => next += sent,
                Ok(Err(e)) => {
                    tracing::debug!("NTP reply not sent: {e}");
                    refused += 1;
                    next += 1;
                }
                Err(_would_block) => continue,
            }
        }
        Ok(refused)
    }
}

impl<const SIZE: usize> RecvBatch<SIZE> {
    pub fn new() -> Self {
        RecvBatch {
            data: Box::new([[0; SIZE]; BATCH]),
            lens: [0; BATCH],
            // SAFETY: sockaddr_storage is plain data; all-zero is valid.
            from: unsafe { zeroed() },
            control: [[0; CONTROL_WORDS]; BATCH],
            received: [UNIX_EPOCH; BATCH],
            count: 0,
        }
    }

    /// Datagram `i` of the last receive: its bytes, source, and the
    /// kernel's receive time (the host clock at the read if the kernel gave
    /// none, which it always does with `SO_TIMESTAMPNS`).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>, SystemTime) {
        debug_assert!(i < self.count);
        (
            &self.data[i][..self.lens[i]],
            from_sockaddr(&self.from[i]),
            self.received[i],
        )
    }

    fn recvmmsg(&mut self, fd: i32) -> io::Result<usize> {
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.data[i].as_mut_ptr().cast(),
            iov_len: SIZE,
        });
        let mut msgs: [libc::mmsghdr; BATCH] = std::array::from_fn(|i| {
            // SAFETY: msghdr is plain data; all-zero is a valid start.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = (&raw mut self.from[i]).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &raw mut iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.control[i].as_mut_ptr().cast();
            hdr.msg_controllen = size_of::<[u64; CONTROL_WORDS]>();
            libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            }
        });
        // SAFETY: every pointer in `msgs` refers to a live buffer of the
        // stated length for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let fallback = SystemTime::now();
        for (i, msg) in msgs.iter().enumerate().take(n) {
            // MSG_TRUNC is not asked for, so a longer datagram reads as SIZE.
            self.lens[i] = msg.msg_len as usize;
            self.received[i] = receive_timestamp(&msg.msg_hdr).unwrap_or(fallback);
        }
        self.count = n;
        Ok(n)
    }
}

impl<const SIZE: usize> SendBatch<SIZE> {
    pub fn new() -> Self {
        SendBatch {
            data: Box::new([[0; SIZE]; BATCH]),
            lens: [0; BATCH],
            // SAFETY: sockaddr_storage is plain data; all-zero is valid.
            to: unsafe { zeroed() },
            count: 0,
        }
    }

    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// The buffer for the next reply, to be committed with [`Self::push`].
    pub fn next_buffer(&mut self) -> &mut [u8; SIZE] {
        &mut self.data[self.count]
    }

    /// Queues the `len` bytes written to [`Self::next_buffer`] as a reply
    /// to the source of datagram `i` of `received`.
    pub fn push<const R: usize>(&mut self, len: usize, received: &RecvBatch<R>, i: usize) {
        self.lens[self.count] = len;
        self.to[self.count] = received.from[i];
        self.count += 1;
    }

    fn sendmmsg(&self, fd: i32, from: usize) -> io::Result<usize> {
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.data[i].as_ptr().cast_mut().cast(),
            iov_len: self.lens[i],
        });
        let mut msgs: [libc::mmsghdr; BATCH] = std::array::from_fn(|i| {
            // SAFETY: msghdr is plain data; all-zero is a valid start.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = (&raw const self.to[i]).cast_mut().cast();
            hdr.msg_namelen = sockaddr_len(&self.to[i]);
            hdr.msg_iov = &raw mut iovs[i];
            hdr.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            }
        });
        let pending = &mut msgs[from..self.count];
        // SAFETY: the pending entries point at live buffers and addresses;
        // sendmmsg only reads them.
        let n = unsafe { libc::sendmmsg(fd, pending.as_mut_ptr(), pending.len() as u32, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

fn set_option(fd: &OwnedFd, level: i32, option: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: an int-valued option on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; getsockname fills it.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` has room for any socket address.
    if unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut storage).cast(), &mut len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    from_sockaddr(&storage).ok_or_else(|| io::Error::other("unexpected address family"))
}

fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn sockaddr_len(storage: &libc::sockaddr_storage) -> libc::socklen_t {
    let len = match i32::from(storage.ss_family) {
        libc::AF_INET6 => size_of::<libc::sockaddr_in6>(),
        _ => size_of::<libc::sockaddr_in>(),
    };
    len as libc::socklen_t
}

/// The `SCM_TIMESTAMPNS` receive timestamp of a received message.
fn receive_timestamp(hdr: &libc::msghdr) -> Option<SystemTime> {
    // SAFETY: the CMSG macros walk the control buffer the kernel filled in,
    // bounded by the msg_controllen it set.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let seconds = u64::try_from(ts.tv_sec).ok()?;
                return UNIX_EPOCH.checked_add(Duration::new(seconds, ts.tv_nsec as u32));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}
