//! The lab's network: three device namespaces, the gateway, and the cloud.
//!
//! ```text
//!  tollgate-lab-meters  ──meters0──┐
//!  tollgate-lab-cameras ──cameras0─┤ tollgate-lab-gw ──uplink0── tollgate-lab-cloud
//!  tollgate-lab-others  ──others0──┘   (tollgate run,      (listeners on AWS Tokyo,
//!                                        XDP on the          video ingest, update
//!                                        three device        server, a public
//!                                        links; NTP on       resolver and "internet"
//!                                        100.127.0.123;      addresses, v4 and v6;
//!                                        DNS forwarder on    dnsmasq answering the
//!                                        10.64.0.1)          AWS IoT endpoint)
//! ```
//! Routing is NAT-free: the cloud routes the device prefixes back through
//! the gateway, as a private APN or VPN concentrator would.

use anyhow::Result;

use crate::netns::{Namespace, veth};

pub const GATEWAY: &str = "tollgate-lab-gw";
pub const NTP_ADDR: &str = "100.127.0.123";
pub const DEVICE_LINKS: [&str; 3] = ["meters0", "cameras0", "others0"];

/// Devices (namespace, address) by role.
pub const METER: &str = "10.64.0.10";
pub const METER_2: &str = "10.64.0.11";
pub const METER_V6: &str = "fd00:64::10";
pub const CAMERA: &str = "10.65.0.20";
pub const QUARANTINED: &str = "10.66.0.5";
pub const STRANGER: &str = "10.99.0.99";

/// Cloud services (on the cloud's loopback). `AWS_TOKYO` and
/// `AWS_TOKYO_V6` are what the resolver answers for `AWS_IOT_ENDPOINT`;
/// `AWS_UNASKED` is another AWS address, which no answer gives.
pub const AWS_TOKYO: &str = "13.112.10.10";
pub const AWS_TOKYO_V6: &str = "2406:da14::10";
pub const AWS_UNASKED: &str = "13.112.10.11";
pub const INTERNET: &str = "198.51.100.80";
pub const UPDATE_SERVER: &str = "198.51.100.20";
pub const VIDEO_INGEST: &str = "203.0.113.10";
/// A public DNS-over-HTTPS resolver's address (stands in the cloud here).
pub const PUBLIC_RESOLVER: &str = "1.1.1.1";
pub const SERVICES: [&str; 7] = [
    AWS_TOKYO,
    AWS_TOKYO_V6,
    AWS_UNASKED,
    INTERNET,
    UPDATE_SERVER,
    VIDEO_INGEST,
    PUBLIC_RESOLVER,
];

/// The meters' AWS IoT data endpoint (matches their FQDN rule).
pub const AWS_IOT_ENDPOINT: &str = "a1b2c3d4e5f6g7-ats.iot.ap-northeast-1.amazonaws.com";
/// The cloud's resolver, the gateway's DNS forwarder's upstream (on the
/// cloud's end of the uplink).
pub const UPSTREAM_RESOLVER: &str = "198.18.0.2";
/// Where the meters ask: the gateway's forwarder on their link.
pub const GATEWAY_DNS: &str = "10.64.0.1";

pub struct Topology {
    pub meters: Namespace,
    pub cameras: Namespace,
    pub others: Namespace,
    pub gateway: Namespace,
    pub cloud: Namespace,
}

impl Topology {
    /// Builds everything, replacing what a crashed earlier lab left behind.
    pub fn create() -> Result<Topology> {
        let ns = |role: &str| Namespace::create(&format!("tollgate-lab-{role}"));
        let t = Topology {
            meters: ns("meters")?,
            cameras: ns("cameras")?,
            others: ns("others")?,
            gateway: ns("gw")?,
            cloud: ns("cloud")?,
        };
        t.gateway.sysctl("net.ipv4.ip_forward=1")?;
        t.gateway.sysctl("net.ipv6.conf.all.forwarding=1")?;

        let links: [(&Namespace, &str, &[&str], &[&str]); 3] = [
            (
                &t.meters,
                "meters0",
                &["10.64.0.1/16", "fd00:64::1/48"],
                &[METER, METER_2, METER_V6],
            ),
            (&t.cameras, "cameras0", &["10.65.0.1/16"], &[CAMERA]),
            (
                &t.others,
                "others0",
                &["10.66.0.1/16", "10.99.0.1/16"],
                &[QUARANTINED, STRANGER],
            ),
        ];
        for (device_ns, link, gateway_addrs, devices) in links {
            veth((device_ns, "eth0"), (&t.gateway, link))?;
            for a in gateway_addrs {
                t.gateway.add_address(a, link)?;
            }
            for d in devices {
                let len = if d.contains(':') { "48" } else { "16" };
                device_ns.add_address(&format!("{d}/{len}"), "eth0")?;
            }
            let gw4 = gateway_addrs[0].split('/').next().expect("address");
            device_ns.ip(&["route", "add", "default", "via", gw4])?;
            if let Some(gw6) = gateway_addrs.iter().find(|a| a.contains(':')) {
                let gw6 = gw6.split('/').next().expect("address");
                device_ns.ip(&["-6", "route", "add", "default", "via", gw6])?;
            }
        }
        veth((&t.gateway, "uplink0"), (&t.cloud, "eth0"))?;
        for (ns, dev, addrs) in [
            (
                &t.gateway,
                "uplink0",
                ["198.18.0.1/30", "2001:db8:ffff::1/64"],
            ),
            (&t.cloud, "eth0", ["198.18.0.2/30", "2001:db8:ffff::2/64"]),
        ] {
            for a in addrs {
                ns.add_address(a, dev)?;
            }
        }
        t.gateway
            .ip(&["route", "add", "default", "via", "198.18.0.2"])?;
        t.gateway
            .ip(&["-6", "route", "add", "default", "via", "2001:db8:ffff::2"])?;
        t.cloud
            .ip(&["route", "add", "10.0.0.0/8", "via", "198.18.0.1"])?;
        t.cloud
            .ip(&["-6", "route", "add", "fd00::/8", "via", "2001:db8:ffff::1"])?;
        for s in SERVICES {
            let host = if s.contains(':') { "128" } else { "32" };
            t.cloud.add_address(&format!("{s}/{host}"), "lo")?;
        }
        t.gateway
            .ip(&["addr", "add", &format!("{NTP_ADDR}/32"), "dev", "lo"])?;
        Ok(t)
    }

    /// The device namespace an address lives in.
    pub fn device_ns(&self, addr: &str) -> &Namespace {
        match addr {
            METER | METER_2 | METER_V6 => &self.meters,
            CAMERA => &self.cameras,
            _ => &self.others,
        }
    }
}
