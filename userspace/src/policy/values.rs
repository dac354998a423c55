//! The values a policy file writes as text: names, verdicts, prefixes and
//! port ranges, each parsed or refused with a message that says what would
//! be accepted. Pure functions, no positions: [`super::validate`] adds
//! where the value stood.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{Action, PortRange};
use crate::diagnostic::quote;

/// The keywords a `to` item may be besides CIDRs, addresses and list names.
pub(super) const KEYWORDS: [&str; 3] = ["any", "gateway", "ntp"];

/// Whether `name` may name a list (for list files written by tools).
pub fn check_list_name(name: &str) -> Result<(), String> {
    check_name("list", name)
}

/// Group names, list names and rule ids: `[a-z0-9-]{1,48}`.
pub(super) fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = (1..=48).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(format!(
            "{what} {} must be 1-48 characters of a-z, 0-9 and -",
            quote(name)
        ));
    }
    if what == "list" && KEYWORDS.contains(&name) {
        return Err(format!(
            "list \"{name}\" is a keyword (any, gateway, ntp); pick another name"
        ));
    }
    Ok(())
}

/// A group's `default`.
pub(super) fn parse_verdict(text: &str) -> Result<Action, String> {
    match text {
        "allow" => Ok(Action::Allow),
        "deny" => Ok(Action::Deny),
        "reject" => Ok(Action::Reject),
        other => Err(format!(
            "{} is not a verdict (allow | deny | reject)",
            quote(other)
        )),
    }
}

/// `unknown-devices`: never `reject`, since a source in no group is
/// exactly the one that may be spoofed to reflect replies at someone else.
pub(super) fn parse_unknown_devices(text: &str) -> Result<Action, String> {
    match parse_verdict(text) {
        Ok(Action::Reject) => Err(
            "\"reject\" is not a verdict for unknown devices (allow | deny): the gateway \
             never answers a source it does not know"
                .to_string(),
        ),
        Ok(action) => Ok(action),
        Err(_) => Err(format!("{} is not a verdict (allow | deny)", quote(text))),
    }
}

/// Names never contain these; addresses and CIDRs always do.
pub(super) fn looks_like_address(text: &str) -> bool {
    text.contains(['.', ':', '/'])
}

/// A CIDR or a bare address (a /32 or /128). Rejects host bits (suggesting
/// the network) and IPv4-mapped IPv6 prefixes (suggesting the IPv4 prefix).
pub fn parse_prefix(text: &str) -> Result<IpNet, String> {
    // Quoted only for an error: a policy parses a million of these.
    let shown = || quote(text);
    let net = match text.split_once('/') {
        Some((addr, len)) => {
            let addr: IpAddr = addr.parse().map_err(|_| {
                format!(
                    "{} is not a CIDR: {} is not an IP address",
                    shown(),
                    quote(addr)
                )
            })?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let net = len
                .parse::<u8>()
                .ok()
                .and_then(|len| IpNet::new(addr, len).ok())
                .ok_or_else(|| {
                    format!(
                        "{} is not a CIDR: the prefix length must be 0-{max}",
                        shown()
                    )
                })?;
            if net.trunc() != net {
                return Err(format!(
                    "{} has host bits set; did you mean {}?",
                    shown(),
                    net.trunc()
                ));
            }
            net
        }
        None => IpNet::from(
            text.parse::<IpAddr>()
                .map_err(|_| format!("{} is not an IP address or CIDR", shown()))?,
        ),
    };
    if let IpNet::V6(v6) = net
        && let Some(v4) = ipv4_mapped(v6)
    {
        return Err(format!(
            "{} is IPv4-mapped IPv6, which the dataplane never matches (it drops \
             IPv6 packets to ::ffff:0:0/96); write the IPv4 prefix {v4}",
            shown()
        ));
    }
    Ok(net)
}

/// The IPv4 prefix an IPv6 prefix inside ::ffff:0:0/96 stands for.
fn ipv4_mapped(net: Ipv6Net) -> Option<Ipv4Net> {
    let v4 = net.network().to_ipv4_mapped()?;
    let len = net.prefix_len().checked_sub(96)?;
    Ipv4Net::new(v4, len).ok()
}

/// `443` or `"10000-10100"`.
pub(super) fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let shown = || quote(text);
    // Decimal digits only: Rust's parser would take "+22".
    let port = |part: &str| {
        let part = part.trim();
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse::<u16>().ok())
            .flatten()
            .ok_or_else(|| format!("{} is not a port (0-65535)", quote(part)))
    };
    let Some((lo, hi)) = text.split_once('-') else {
        let p = port(text)?;
        return Ok(PortRange::new(p, p));
    };
    if lo.trim().is_empty() || hi.trim().is_empty() {
        return Err(format!(
            "{} is not a port or a range (a port 0-65535, or \"lo-hi\")",
            shown()
        ));
    }
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo > hi {
        return Err(format!(
            "{} is an inverted range: {lo} is above {hi}; write \"{hi}-{lo}\"",
            shown()
        ));
    }
    Ok(PortRange::new(lo, hi))
}

/// Levenshtein distance, for "did you mean" hints.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked_and_normalised() {
        assert_eq!(parse_prefix("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(
            parse_prefix("2001:DB8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(
            parse_prefix("10.64.1.0/16").unwrap_err(),
            "\"10.64.1.0/16\" has host bits set; did you mean 10.64.0.0/16?"
        );
        assert!(
            parse_prefix("::ffff:10.0.0.0/104")
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
        assert!(parse_prefix("::/0").is_ok());
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!(parse_port_range("443"), Ok(PortRange::new(443, 443)));
        assert_eq!(parse_port_range("1-2"), Ok(PortRange::new(1, 2)));
        assert!(parse_port_range("-5").is_err());
        assert_eq!(edit_distance("aws-tokio", "aws-tokyo"), 1);
    }
}
