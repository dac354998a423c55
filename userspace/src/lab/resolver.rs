//! An authoritative resolver for made-up names, in a namespace: dnsmasq
//! (`scripts/setup.sh` installs `dnsmasq-base`) answering only the records
//! it is given, never forwarding. The lab's cloud runs one as the gateway
//! forwarder's upstream; the FQDN end-to-end test runs another.

use std::process::{Child, Stdio};

use anyhow::{Context as _, Result};

use crate::netns::Namespace;

/// The running dnsmasq; killed on drop.
pub struct Resolver(Child);

/// What the resolver answers.
pub struct Records<'a> {
    /// (name, address): an A or AAAA record each.
    pub hosts: &'a [(&'a str, &'a str)],
    /// (name, target): a CNAME each.
    pub cnames: &'a [(&'a str, &'a str)],
    /// The TTL of every answer, in seconds.
    pub ttl: u32,
}

impl Resolver {
    /// Starts dnsmasq in `ns` on `listen` (an address there), port 53.
    pub fn start(ns: &Namespace, listen: &str, records: &Records) -> Result<Resolver> {
        let mut args = vec![
            "--keep-in-foreground".to_string(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--no-poll".into(),
            "--conf-file=/dev/null".into(),
            "--bind-interfaces".into(),
            format!("--listen-address={listen}"),
            "--port=53".into(),
            format!("--local-ttl={}", records.ttl),
            "--pid-file=".into(),
            "--user=root".into(),
        ];
        args.extend(
            records
                .hosts
                .iter()
                .map(|(name, addr)| format!("--host-record={name},{addr}")),
        );
        args.extend(
            records
                .cnames
                .iter()
                .map(|(name, target)| format!("--cname={name},{target}")),
        );
        let child = ns
            .command("dnsmasq")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start dnsmasq (scripts/setup.sh installs dnsmasq-base)")?;
        Ok(Resolver(child))
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
