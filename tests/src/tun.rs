//! A `tun` device as a raw-IP link: the test holds the device's file
//! descriptor, writes the packets devices would send into it (they arrive
//! on the interface as received packets, where the program sits) and reads
//! what the gateway routes back to the devices. Packets are built and parsed
//! with `etherparse`, checksums and all, since they cross the real stack.

use std::{
    collections::HashSet,
    fs::File,
    io::{Read as _, Write as _},
    net::IpAddr,
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use tollgate::netns::Namespace;

pub use super::fleet::Probe;

const TUNSETIFF: libc::c_ulong = 0x400454ca;
const TUNSETLINK: libc::c_ulong = 0x400454cd;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// An open tun device; it is deleted when this is dropped.
pub struct Tun {
    file: File,
    pub name: String,
    replies: Arc<Mutex<HashSet<(IpAddr, u16)>>>,
    /// TCP resets and ICMP destination unreachables, by the same key.
    refusals: Arc<Mutex<HashSet<(IpAddr, u16)>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Tun {
    /// Creates tun device `name` in `ns` (down), with link type
    /// `link_type` (`ARPHRD_*`; 65534, the tun default, when `None`).
    pub fn create(ns: &Namespace, name: &str, link_type: Option<u16>) -> Tun {
        let name_owned = name.to_string();
        let file = ns
            .enter(move || -> std::io::Result<File> {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/net/tun")?;
                // struct ifreq: the name, then the flags.
                let mut ifreq = [0u8; 40];
                ifreq[..name_owned.len()].copy_from_slice(name_owned.as_bytes());
                ifreq[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
                // SAFETY: TUNSETIFF reads and writes the ifreq we own.
                if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, ifreq.as_mut_ptr()) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(t) = link_type {
                    // SAFETY: TUNSETLINK takes the link type by value.
                    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETLINK, libc::c_ulong::from(t)) }
                        < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(file)
            })
            .unwrap()
            .unwrap_or_else(|e| panic!("create tun {name}: {e}"));
        let replies = Arc::new(Mutex::new(HashSet::new()));
        let refusals = Arc::new(Mutex::new(HashSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let mut file = file.try_clone().unwrap();
            let (replies, refusals, stop) = (replies.clone(), refusals.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd: file.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd we own.
                    if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                        continue;
                    }
                    let Ok(n) = file.read(&mut buf) else { return };
                    if let Some(key) = reply_key(&buf[..n]) {
                        replies.lock().unwrap().insert(key);
                    }
                    if let Some(key) = refusal_key(&buf[..n]) {
                        refusals.lock().unwrap().insert(key);
                    }
                }
            })
        };
        Tun {
            file,
            name: name.to_string(),
            replies,
            refusals,
            stop,
            reader: Some(reader),
        }
    }

    /// Sends `probe` from `src` to `dst` as the device would; `tag` is its
    /// source port (TCP, UDP) or echo id (ping), unique per probe, so that
    /// its reply is recognised.
    pub fn send(&self, src: IpAddr, dst: IpAddr, probe: Probe, tag: u16) {
        let packet = build(src, dst, probe, tag);
        // A tun write is one packet; it fails only if the device is down.
        let _ = (&self.file).write(&packet);
    }

    /// Sends a UDP datagram with `payload` from `src`, port `tag`, to
    /// `dst`:`port`; a reply to it counts as [`Tun::answered`] under `tag`.
    pub fn send_udp(&self, src: IpAddr, dst: IpAddr, port: u16, tag: u16, payload: &[u8]) {
        let mut packet = Vec::new();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
                .udp(tag, port)
                .write(&mut packet, payload),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
                .udp(tag, port)
                .write(&mut packet, payload),
            _ => panic!("families differ"),
        }
        .unwrap();
        let _ = (&self.file).write(&packet);
    }

    /// Whether a reply to the probe tagged `tag` sent to `dst` came back.
    pub fn answered(&self, dst: IpAddr, tag: u16) -> bool {
        self.replies.lock().unwrap().contains(&(dst, tag))
    }

    /// Whether the probe tagged `tag` sent to `dst` was refused: a TCP
    /// reset, or an ICMP destination unreachable quoting it, from `dst`.
    pub fn refused(&self, dst: IpAddr, tag: u16) -> bool {
        self.refusals.lock().unwrap().contains(&(dst, tag))
    }

    pub fn forget_replies(&self) {
        self.replies.lock().unwrap().clear();
    }
}

impl Drop for Tun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn build(src: IpAddr, dst: IpAddr, probe: Probe, tag: u16) -> Vec<u8> {
    let payload = format!("{src}>{dst}:{probe:?}#{tag}").into_bytes();
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let b = PacketBuilder::ipv4(s.octets(), d.octets(), 64);
            match probe {
                Probe::Tcp(port) => b.tcp(tag, port, 1, 64240).syn().write(&mut out, &[]),
                Probe::Udp(port) => b.udp(tag, port).write(&mut out, &payload),
                Probe::Ping => b.icmpv4_echo_request(tag, 1).write(&mut out, &payload),
            }
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let b = PacketBuilder::ipv6(s.octets(), d.octets(), 64);
            match probe {
                Probe::Tcp(port) => b.tcp(tag, port, 1, 64240).syn().write(&mut out, &[]),
                Probe::Udp(port) => b.udp(tag, port).write(&mut out, &payload),
                Probe::Ping => b.icmpv6_echo_request(tag, 1).write(&mut out, &payload),
            }
        }
        _ => panic!("families differ"),
    }
    .unwrap();
    out
}

/// (the replying address, the probe's tag) of a packet routed back to the
/// devices: a TCP SYN-ACK or RST, a UDP echo, an echo reply.
fn reply_key(packet: &[u8]) -> Option<(IpAddr, u16)> {
    let p = SlicedPacket::from_ip(packet).ok()?;
    let from = match p.net? {
        NetSlice::Ipv4(h) => IpAddr::V4(h.header().source_addr()),
        NetSlice::Ipv6(h) => IpAddr::V6(h.header().source_addr()),
        NetSlice::Arp(_) => return None,
    };
    let tag = match p.transport? {
        TransportSlice::Tcp(t) => t.destination_port(),
        TransportSlice::Udp(u) => u.destination_port(),
        TransportSlice::Icmpv4(i) => match i.icmp_type() {
            Icmpv4Type::EchoReply(e) => e.id,
            _ => return None,
        },
        TransportSlice::Icmpv6(i) => match i.icmp_type() {
            Icmpv6Type::EchoReply(e) => e.id,
            _ => return None,
        },
        _ => return None,
    };
    Some((from, tag))
}

/// (the refusing address, the probe's tag) of a TCP reset, or of an ICMP
/// destination unreachable whose quoted packet has the tag as its source
/// port.
fn refusal_key(packet: &[u8]) -> Option<(IpAddr, u16)> {
    let p = SlicedPacket::from_ip(packet).ok()?;
    let from = match p.net? {
        NetSlice::Ipv4(h) => IpAddr::V4(h.header().source_addr()),
        NetSlice::Ipv6(h) => IpAddr::V6(h.header().source_addr()),
        NetSlice::Arp(_) => return None,
    };
    // The quoted packet's transport header: after its IP header.
    let quoted_source_port = |quote: &[u8], ip_header: usize| {
        Some(u16::from_be_bytes([
            *quote.get(ip_header)?,
            *quote.get(ip_header + 1)?,
        ]))
    };
    let tag = match p.transport? {
        TransportSlice::Tcp(t) if t.rst() => t.destination_port(),
        TransportSlice::Icmpv4(i) => match i.icmp_type() {
            Icmpv4Type::DestinationUnreachable(_) => {
                let quote = i.payload();
                quoted_source_port(quote, usize::from(quote.first()? & 0x0f) * 4)?
            }
            _ => return None,
        },
        TransportSlice::Icmpv6(i) => match i.icmp_type() {
            Icmpv6Type::DestinationUnreachable(_) => quoted_source_port(i.payload(), 40)?,
            _ => return None,
        },
        _ => return None,
    };
    Some((from, tag))
}

/// UDP echo servers on `addr:port` in `ns`: whatever arrives goes back.
pub fn udp_echo(ns: &Namespace, addr: IpAddr, port: u16) {
    let socket = ns
        .enter(|| std::net::UdpSocket::bind((addr, port)).unwrap())
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
}

/// How long replies get to come back through the gateway.
pub const REPLY_WAIT: Duration = Duration::from_millis(400);
