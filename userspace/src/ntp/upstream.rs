//! Polls the upstream servers of `reference: upstream`, one client request
//! each per round (as rsntp does), and measures each reply against the host
//! clock.
//!
//! One dual-stack socket, opened at start in the caller's network namespace,
//! serves every server (IPv4 ones through mapped addresses). Names are
//! resolved at every round, so a server whose name does not resolve yet (no
//! DNS at boot) is only unreachable, not a start failure.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, SystemTime},
};

use tokio::time::{Instant, timeout_at};

use super::{
    adapter::{self, Query},
    poll_socket::{self, UdpSocket},
    reference::UpstreamReply,
};

/// How long a round waits for replies.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
const NTP_PORT: u16 = 123;

pub struct Poller {
    servers: Vec<String>,
    socket: UdpSocket,
    poll: Duration,
}

/// The result of polling one server.
pub struct Outcome {
    /// As configured.
    pub server: String,
    /// The address that answered, and its reply.
    pub result: Result<(IpAddr, UpstreamReply), PollError>,
}

#[derive(Debug)]
pub enum PollError {
    Resolve(std::io::Error),
    Send(std::io::Error),
    /// No valid reply within the timeout.
    NoReply,
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollError::Resolve(e) => write!(f, "cannot resolve: {e}"),
            PollError::Send(e) => write!(f, "cannot send: {e}"),
            PollError::NoReply => write!(f, "no valid reply within {REPLY_TIMEOUT:?}"),
        }
    }
}

struct Pending {
    index: usize,
    to: SocketAddr,
    query: Query,
    sent: SystemTime,
}

impl Poller {
    /// Opens the polling socket in the calling thread's namespace.
    pub fn open(servers: &[String], poll: Duration) -> std::io::Result<Self> {
        // Dual-stack where the kernel has IPv6, IPv4 only where it has not.
        let socket = poll_socket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
            .or_else(|_| poll_socket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))))?;
        Ok(Poller {
            servers: servers.to_vec(),
            socket,
            poll,
        })
    }

    /// Queries every server once and waits (at most [`REPLY_TIMEOUT`]) for
    /// their replies. Replies that are not the answer to a query in flight
    /// (late, duplicated or spoofed) are ignored.
    pub async fn poll(&mut self) -> Vec<Outcome> {
        let mut results: Vec<Option<Result<(IpAddr, UpstreamReply), PollError>>> =
            self.servers.iter().map(|_| None).collect();
        let mut pending = Vec::new();
        for (index, server) in self.servers.iter().enumerate() {
            let to = match resolve(server).await {
                Ok(to) => to,
                Err(e) => {
                    results[index] = Some(Err(PollError::Resolve(e)));
                    continue;
                }
            };
            let query = Query::new(self.poll);
            let sent = SystemTime::now();
            match self.socket.send_to(&query.bytes, self.on_wire(to)).await {
                Ok(_) => pending.push(Pending {
                    index,
                    to,
                    query,
                    sent,
                }),
                Err(e) => results[index] = Some(Err(PollError::Send(e))),
            }
        }

        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut buf = [0u8; 1024];
        while !pending.is_empty() {
            let Ok(received) = timeout_at(deadline, self.socket.recv(&mut buf)).await else {
                break;
            };
            let received = match received {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("upstream socket: {e}");
                    continue;
                }
            };
            let from = canonical(received.remote_addr);
            let at = poll_socket::received_at(&received);
            let Some(i) = pending.iter().position(|p| p.to == from) else {
                continue;
            };
            let p = &pending[i];
            match adapter::read_reply(&p.query, &buf[..received.bytes_read], p.sent, at) {
                Ok(reply) => {
                    results[p.index] = Some(Ok((from.ip(), reply)));
                    pending.swap_remove(i);
                }
                Err(e) => tracing::debug!(%from, "upstream reply ignored: {e}"),
            }
        }

        self.servers
            .iter()
            .zip(results)
            .map(|(server, result)| Outcome {
                server: server.clone(),
                result: result.unwrap_or(Err(PollError::NoReply)),
            })
            .collect()
    }

    /// The destination as the socket needs it: IPv4-mapped on a dual-stack
    /// socket.
    fn on_wire(&self, to: SocketAddr) -> SocketAddr {
        match (self.socket.local_addr(), to) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port()))
            }
            _ => to,
        }
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `ip:port`, `[ipv6]:port`, a bare address (port 123), `host:port` or a
/// bare host name.
async fn resolve(server: &str) -> std::io::Result<SocketAddr> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = server.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, NTP_PORT));
    }
    let target = if server.contains(':') {
        server.to_string()
    } else {
        format!("{server}:{NTP_PORT}")
    };
    tokio::net::lookup_host(target)
        .await?
        .next()
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address for this name")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_literals_and_bare_addresses() {
        assert_eq!(
            resolve("127.0.0.1:11123").await.unwrap(),
            "127.0.0.1:11123".parse().unwrap()
        );
        assert_eq!(
            resolve("192.0.2.1").await.unwrap(),
            "192.0.2.1:123".parse().unwrap()
        );
        assert_eq!(resolve("::1").await.unwrap(), "[::1]:123".parse().unwrap());
        assert_eq!(
            resolve("localhost:9").await.unwrap().port(),
            9,
            "names resolve through the system resolver"
        );
    }
}
