//! UDP sockets with kernel receive timestamps (`timestamped-socket`, as
//! ntpd-rs uses). The only module that uses that crate.
//!
//! A receive timestamp taken by the kernel when the datagram arrived is what
//! the server reports as its receive time (T2), so time spent queued in the
//! socket or waiting for the task does not count as network delay.

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
