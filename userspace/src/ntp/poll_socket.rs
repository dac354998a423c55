//! The upstream poller's UDP socket, with kernel receive timestamps
//! (`timestamped-socket`, as ntpd-rs uses). The only module that uses that
//! crate.
//!
//! The kernel's timestamp of a reply's arrival is the poll's T4, so time the
//! reply spends queued or waiting for the task does not count as network
//! delay. (The server's sockets need batching, which this crate does not
//! offer: see `batch_socket`.)

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use timestamped_socket::socket::{GeneralTimestampMode, Open, RecvResult, Socket, open_ip};

pub type UdpSocket = Socket<SocketAddr, Open>;
pub type Received = RecvResult<SocketAddr>;

/// Binds a non-blocking UDP socket with software receive timestamps, in the
/// calling thread's network namespace. Needs a tokio runtime context (the
/// socket registers with its reactor).
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    open_ip(addr, GeneralTimestampMode::SoftwareRecv, false)
}

/// When the kernel received the datagram; the host clock now if the kernel
/// gave no timestamp (it always does for software receive timestamps).
pub fn received_at(received: &Received) -> SystemTime {
    received
        .timestamp_data
        .software
        .and_then(|t| {
            let seconds = u64::try_from(t.seconds).ok()?;
            UNIX_EPOCH.checked_add(Duration::new(seconds, t.nanos))
        })
        .unwrap_or_else(SystemTime::now)
}
