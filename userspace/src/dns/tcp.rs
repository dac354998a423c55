//! DNS over TCP (RFC 7766), for answers too large for UDP: a device that
//! gets a truncated answer asks again over TCP, and the forwarder asks its
//! upstream over TCP too, so the answer arrives whole and every address in
//! it is learned. On TCP each message is preceded by its length in two
//! bytes; the messages themselves are hickory-proto's, as over UDP.
//!
//! Bounded like the UDP side: at most [`MAX_CONNECTIONS`] devices'
//! connections at once (more are closed at once), [`MAX_QUERIES`] queries
//! per connection, [`IDLE`] to send each, queries of at most
//! [`MAX_MESSAGE`] bytes, and the per-source rate limit on every query.

use std::{net::IpAddr, sync::Arc, time::Duration};

use hickory_proto::op::Message;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::{Shared, Transport, answer, answer::MAX_MESSAGE, handle};
use crate::config::DnsConfig;

/// Devices' connections served at once.
pub(super) const MAX_CONNECTIONS: usize = 64;
/// Queries answered on one connection before it is closed.
const MAX_QUERIES: usize = 32;
/// How long a device may take to send its next query.
const IDLE: Duration = Duration::from_secs(10);
/// The largest answer read from an upstream (TCP's ceiling).
const MAX_ANSWER: usize = u16::MAX as usize;

/// Accepts devices' connections on `listener` until the task is dropped.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("dns: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = shared.tcp_connections.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(stream, from.ip(), &shared).await;
        });
    }
}

/// Answers the queries of one connection in turn; closes it on silence,
/// on a query it does not answer, or after [`MAX_QUERIES`].
async fn connection(mut stream: TcpStream, source: IpAddr, shared: &Shared) {
    for _ in 0..MAX_QUERIES {
        let Ok(Ok(Some(query))) =
            tokio::time::timeout(IDLE, read_message(&mut stream, MAX_MESSAGE)).await
        else {
            return;
        };
        let (group, outcome, reply) = handle(shared, source, &query, Transport::Tcp).await;
        shared
            .metrics
            .queries
            .with_label_values(&[group.as_str(), outcome.label()])
            .inc();
        let Some(reply) = reply else {
            return;
        };
        if write_message(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

/// Sends `query` to each upstream in turn over TCP, with a fresh id, until
/// one answers it within `dns.timeout`.
pub(super) async fn forward(config: &DnsConfig, query: &Message) -> Option<Message> {
    let mut outgoing = query.clone();
    for upstream in &config.upstream {
        let id: u16 = rand::random();
        outgoing.set_id(id);
        let bytes = outgoing.to_vec().ok()?;
        let exchange = async {
            let mut stream = TcpStream::connect(upstream).await.ok()?;
            write_message(&mut stream, &bytes).await.ok()?;
            let reply = read_message(&mut stream, MAX_ANSWER).await.ok()??;
            let answer = Message::from_vec(&reply).ok()?;
            answer::answers(&outgoing, id, &answer).then_some(answer)
        };
        if let Ok(Some(answer)) = tokio::time::timeout(config.timeout, exchange).await {
            return Some(answer);
        }
    }
    None
}

/// One length-prefixed message, of at most `max` bytes; `None` at a clean
/// end of the stream.
async fn read_message(stream: &mut TcpStream, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let len = match stream.read_u16().await {
        Ok(len) => usize::from(len),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a message of {len} bytes; at most {max}"),
        ));
    }
    let mut message = vec![0; len];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}

async fn write_message(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a message over 65535 bytes",
        )
    })?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}
