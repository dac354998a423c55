//! Facts about the host the controller runs on: the addresses of its
//! device-facing interfaces, which the policy keyword `gateway` stands for.
//!
//! Asks iproute2 (`ip -j addr show dev NAME`), like `netns`, so what the
//! controller sees is what an operator sees by hand.

use std::{net::IpAddr, process::Command};

use anyhow::{Context as _, Result, bail};

/// The addresses of interface `name`; `None` when no such interface exists.
pub fn interface_addresses(name: &str) -> Result<Option<Vec<IpAddr>>> {
    let output = Command::new("ip")
        .args(["-j", "addr", "show", "dev", name])
        .output()
        .context("run `ip -j addr show`")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("does not exist") {
            return Ok(None);
        }
        bail!("ip -j addr show dev {name}: {}", stderr.trim());
    }
    parse(&output.stdout).map(Some)
}

/// The `local` addresses in `ip -j addr` output.
fn parse(json: &[u8]) -> Result<Vec<IpAddr>> {
    let links: serde_json::Value = serde_json::from_slice(json).context("parse `ip -j addr`")?;
    let mut addresses = Vec::new();
    for link in links.as_array().into_iter().flatten() {
        for info in link["addr_info"].as_array().into_iter().flatten() {
            if let Some(local) = info["local"].as_str() {
                addresses.push(
                    local
                        .parse()
                        .with_context(|| format!("address {local:?} from `ip -j addr`"))?,
                );
            }
        }
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json_output() {
        let json = br#"[{"ifindex":1,"ifname":"lo","addr_info":[
            {"family":"inet","local":"127.0.0.1","prefixlen":8},
            {"family":"inet6","local":"::1","prefixlen":128}]}]"#;
        assert_eq!(
            parse(json).unwrap(),
            [IpAddr::from([127, 0, 0, 1]), "::1".parse().unwrap()]
        );
    }

    #[test]
    fn loopback_exists_and_a_made_up_interface_does_not() {
        assert!(interface_addresses("lo").unwrap().is_some());
        assert_eq!(interface_addresses("tg-no-such0").unwrap(), None);
    }
}
