//! The device-facing interfaces as the kernel reports them over rtnetlink:
//! name, index, link type and up/down, read with an `RTM_GETLINK` dump and
//! watched through the link and address multicast groups. Messages are
//! encoded and decoded with `netlink-packet-route`; only the socket is ours.
//!
//! The link type decides which program variant parses the interface's
//! packets. Tollgate never guesses it: a type not listed in [`LinkKind::of`]
//! is refused by name.

use std::{
    fmt,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result, bail};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage},
};
use tokio::io::unix::AsyncFd;

mod xdp_tx_errors;
pub use xdp_tx_errors::{XdpTx, xdp_tx_counts};

/// Where a link's packets start, hence which program variant parses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// An Ethernet header (with up to two VLAN tags) comes first.
    Ethernet,
    /// The IP header comes first: tun, WireGuard, PPP, raw-IP modems, IPIP,
    /// SIT, IP6TNL, GRE and IP6GRE.
    Ip,
}

impl LinkKind {
    /// The kind of a link type (`ARPHRD_*`), or `None` when Tollgate does
    /// not support it.
    pub fn of(link_type: u16) -> Option<LinkKind> {
        match LinkLayerType::from(link_type) {
            LinkLayerType::Ether => Some(LinkKind::Ethernet),
            LinkLayerType::None // tun, WireGuard
            | LinkLayerType::Ppp
            | LinkLayerType::Rawip // cellular modems (wwan)
            | LinkLayerType::Tunnel // ipip
            | LinkLayerType::Tunnel6 // ip6tnl
            | LinkLayerType::Sit
            | LinkLayerType::Ipgre
            | LinkLayerType::Ip6gre => Some(LinkKind::Ip),
            _ => None,
        }
    }

    /// The `link` label of `tollgate_dataplane_attached`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Ethernet => "ethernet",
            LinkKind::Ip => "ip",
        }
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A link type as people read it: `none (65534)`, `loopback (772)`.
pub fn type_name(link_type: u16) -> String {
    let name = format!("{:?}", LinkLayerType::from(link_type)).to_lowercase();
    format!("{name} ({link_type})")
}

/// The supported link types, for error messages.
pub const SUPPORTED: &str = "ethernet (1), none/tun/wireguard (65534), ppp (512), rawip (519), \
                             ipip (768), ip6tnl (769), sit (776), gre (778), ip6gre (823)";

/// One interface as rtnetlink reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    /// `ARPHRD_*`.
    pub link_type: u16,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}

impl Link {
    /// The kind of this link, or why it is refused.
    pub fn kind(&self) -> Result<LinkKind> {
        LinkKind::of(self.link_type).ok_or_else(|| {
            anyhow::anyhow!(
                "interface {} has link type {}, which Tollgate cannot filter (supported: {SUPPORTED})",
                self.name,
                type_name(self.link_type)
            )
        })
    }

    fn from_message(m: &LinkMessage) -> Option<Link> {
        let name = m.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })?;
        Some(Link {
            name,
            index: m.header.index,
            link_type: u16::from(m.header.link_layer_type),
            up: m.header.flags.contains(LinkFlags::Up),
        })
    }
}

fn netlink_socket(groups: u32) -> Result<OwnedFd> {
    // SAFETY: plain socket creation; the fd is owned right after.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        bail!("netlink socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_nl is valid; fields set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = groups;
    // SAFETY: bind with a properly sized sockaddr_nl.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc != 0 {
        bail!("bind netlink socket: {}", std::io::Error::last_os_error());
    }
    Ok(socket)
}

/// Every interface of the calling thread's network namespace.
pub fn snapshot() -> Result<Vec<Link>> {
    let socket = netlink_socket(0)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut request = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    request.finalize();
    let mut buf = vec![0u8; request.buffer_len()];
    request.serialize(&mut buf);
    // SAFETY: sending a buffer we own on a valid socket.
    let sent = unsafe { libc::send(socket.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
    if sent < 0 {
        bail!("RTM_GETLINK: {}", std::io::Error::last_os_error());
    }
    let mut links = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            bail!("RTM_GETLINK reply: {}", std::io::Error::last_os_error());
        }
        let mut at = 0usize;
        let n = n as usize;
        while at < n {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..n])
                .context("decode RTM_GETLINK reply")?;
            let len = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(links),
                NetlinkPayload::Error(e) => bail!("RTM_GETLINK: {e:?}"),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    links.extend(Link::from_message(&m));
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += (len + 3) & !3;
        }
    }
}

/// The interface called `name`, if it exists.
pub fn find(name: &str) -> Result<Option<Link>> {
    Ok(snapshot()?.into_iter().find(|l| l.name == name))
}

/// Notifies of link changes (added, removed, up, down, renamed) and address
/// changes in this network namespace. Callers re-read [`snapshot`] (and the
/// addresses) and compare, so a lost notification costs nothing.
pub struct InterfaceChanges {
    socket: AsyncFd<OwnedFd>,
}

impl InterfaceChanges {
    pub fn subscribe() -> Result<InterfaceChanges> {
        let socket = netlink_socket(
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32,
        )?;
        // SAFETY: fcntl on a valid fd we own.
        unsafe {
            let flags = libc::fcntl(socket.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(socket.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open
        // and unchanged for its whole life.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
        Ok(InterfaceChanges { socket })
    }

    /// Waits until at least one link or address changed.
    pub async fn next(&mut self) -> Result<()> {
        loop {
            let mut guard = self.socket.readable().await?;
            let mut buf = [0u8; 8192];
            let mut got = false;
            loop {
                // SAFETY: reading into a buffer we own.
                let n = unsafe {
                    libc::recv(
                        self.socket.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                    )
                };
                if n > 0 {
                    got = true;
                    continue;
                }
                let err = std::io::Error::last_os_error();
                // ENOBUFS: notifications were dropped; treat as a change.
                if n < 0 && err.raw_os_error() == Some(libc::ENOBUFS) {
                    got = true;
                    continue;
                }
                break;
            }
            guard.clear_ready();
            if got {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_link_type_has_its_kind_and_others_are_refused() {
        assert_eq!(LinkKind::of(1), Some(LinkKind::Ethernet));
        for ip in [65534, 512, 519, 768, 769, 776, 778, 823] {
            assert_eq!(LinkKind::of(ip), Some(LinkKind::Ip), "{ip}");
        }
        // loopback, IEEE 802.11, InfiniBand, CAN, unknown
        for refused in [772, 801, 32, 280, 4242] {
            assert_eq!(LinkKind::of(refused), None, "{refused}");
        }
        assert_eq!(type_name(772), "loopback (772)");
        assert_eq!(type_name(65534), "none (65534)");
    }

    #[test]
    fn the_dump_finds_loopback_as_a_refused_type() {
        let lo = find("lo").unwrap().expect("lo exists in every namespace");
        assert_eq!(lo.index, 1);
        assert_eq!(lo.link_type, 772);
        let e = lo.kind().unwrap_err().to_string();
        assert!(
            e.contains("interface lo has link type loopback (772)"),
            "{e}"
        );
        assert!(find("no-such-interface").unwrap().is_none());
    }
}
