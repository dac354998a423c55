//! `tollgate lab`: a throw-away topology in network namespaces that shows the
//! dataplane attached and counting real packets.

use std::net::UdpSocket;

use anyhow::{Context as _, Result};
use tollgate_common::Stat;

use crate::{
    config::AttachPolicy,
    datapath::{Dataplane, Options},
    netns::{Namespace, veth},
};

pub fn run() -> Result<()> {
    let device = Namespace::create("tollgate-lab-device")?;
    let gateway = Namespace::create("tollgate-lab-gateway")?;
    veth((&device, "eth0"), (&gateway, "devices0"))?;
    device.ip(&["addr", "add", "10.64.0.10/24", "dev", "eth0"])?;
    gateway.ip(&["addr", "add", "10.64.0.1/24", "dev", "devices0"])?;

    let mut dataplane = Dataplane::open(&Options::default())?;
    let attachment = gateway.enter(|| dataplane.attach("devices0", AttachPolicy::Auto))??;
    println!(
        "attached to {}/devices0 in {} mode",
        gateway.name(),
        attachment.mode
    );

    let sent = 10;
    device.enter(|| -> Result<()> {
        let socket = UdpSocket::bind("10.64.0.10:0").context("bind in device namespace")?;
        for i in 0..sent {
            socket.send_to(format!("hello {i}").as_bytes(), "10.64.0.1:9999")?;
        }
        Ok(())
    })??;
    std::thread::sleep(std::time::Duration::from_millis(100));
    let seen = dataplane.stat(Stat::Seen)?;
    println!(
        "sent {sent} UDP datagrams from {}; dataplane saw {} packets, {} bytes",
        device.name(),
        seen.packets,
        seen.bytes
    );
    Ok(())
}
