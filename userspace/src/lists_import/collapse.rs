//! The fewest prefixes covering exactly the addresses of the selected ones:
//! nested prefixes fold into the outer one, adjacent siblings into their
//! parent. Providers list a prefix once per service and nest regional
//! ranges in wider ones, so this often halves a list.

use ipnet::IpNet;

/// `prefixes` collapsed, IPv4 before IPv6, each in address order.
pub fn collapse(prefixes: &[IpNet]) -> Vec<IpNet> {
    let mut collapsed = IpNet::aggregate(&prefixes.to_vec());
    collapsed.sort();
    collapsed
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;

    /// The naive union: the address intervals of `prefixes`, merged where
    /// they touch or overlap. Two prefix sets cover the same addresses
    /// exactly when these are equal.
    fn union(prefixes: &[IpNet]) -> Vec<(bool, u128, u128)> {
        let mut intervals: Vec<(bool, u128, u128)> = prefixes
            .iter()
            .map(|n| {
                (
                    n.addr().is_ipv6(),
                    number(n.network()),
                    number(n.broadcast()),
                )
            })
            .collect();
        intervals.sort();
        let mut merged: Vec<(bool, u128, u128)> = Vec::new();
        for (v6, start, end) in intervals {
            match merged.last_mut() {
                Some((last_v6, _, last_end))
                    if *last_v6 == v6 && start <= last_end.saturating_add(1) =>
                {
                    *last_end = (*last_end).max(end);
                }
                _ => merged.push((v6, start, end)),
            }
        }
        merged
    }

    fn number(addr: IpAddr) -> u128 {
        match addr {
            IpAddr::V4(a) => u32::from(a).into(),
            IpAddr::V6(a) => a.into(),
        }
    }

    fn covers(prefixes: &[IpNet], addr: IpAddr) -> bool {
        prefixes.iter().any(|n| n.contains(&addr))
    }

    /// Prefixes crowded into a small space (the first /20 of an IPv4 or
    /// IPv6 range) so that random ones nest, overlap and touch often;
    /// lengths from the whole space down to single addresses.
    fn crowded() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u16>(), 12u8..=32).prop_map(|(offset, len)| {
                let addr = std::net::Ipv4Addr::from(0x0a00_0000 | u32::from(offset >> 4));
                IpNet::from(ipnet::Ipv4Net::new(addr, len).unwrap().trunc())
            }),
            (any::<u16>(), 108u8..=128).prop_map(|(offset, len)| {
                let base: u128 = 0x2001_0db8 << 96;
                let addr = std::net::Ipv6Addr::from(base | u128::from(offset >> 4));
                IpNet::from(ipnet::Ipv6Net::new(addr, len).unwrap().trunc())
            }),
            // The extremes: whole families, first and last addresses.
            Just("0.0.0.0/0".parse().unwrap()),
            Just("255.255.255.255/32".parse().unwrap()),
            Just("::/0".parse().unwrap()),
            Just(
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"
                    .parse()
                    .unwrap()
            ),
        ]
    }

    proptest! {
        #[test]
        fn collapsed_equals_the_naive_union(prefixes in prop::collection::vec(crowded(), 0..40)) {
            let collapsed = collapse(&prefixes);
            prop_assert_eq!(union(&collapsed), union(&prefixes));
        }

        #[test]
        fn membership_agrees_at_every_boundary(
            prefixes in prop::collection::vec(crowded(), 1..40),
            probes in prop::collection::vec(crowded(), 0..20),
        ) {
            let collapsed = collapse(&prefixes);
            // The first and last address of every prefix, either list's,
            // and their neighbours outside.
            let edges = prefixes.iter().chain(&collapsed).chain(&probes).flat_map(|n| {
                let (first, last) = (number(n.network()), number(n.broadcast()));
                let v6 = n.addr().is_ipv6();
                [first.checked_sub(1), Some(first), Some(last), last.checked_add(1)]
                    .into_iter()
                    .flatten()
                    .filter_map(move |x| match v6 {
                        false => u32::try_from(x).ok().map(|x| IpAddr::from(std::net::Ipv4Addr::from(x))),
                        true => Some(IpAddr::from(std::net::Ipv6Addr::from(x))),
                    })
            });
            for addr in edges {
                prop_assert_eq!(covers(&collapsed, addr), covers(&prefixes, addr), "{}", addr);
            }
        }

        #[test]
        fn collapsed_is_sorted_disjoint_and_minimal(prefixes in prop::collection::vec(crowded(), 0..40)) {
            let collapsed = collapse(&prefixes);
            prop_assert!(collapsed.windows(2).all(|w| w[0] < w[1]), "sorted: {:?}", collapsed);
            for (i, a) in collapsed.iter().enumerate() {
                for b in &collapsed[i + 1..] {
                    prop_assert!(!a.contains(b) && !b.contains(a), "{} and {} overlap", a, b);
                    // Siblings would merge into their parent.
                    let siblings = a.prefix_len() == b.prefix_len()
                        && a.prefix_len() > 0
                        && a.supernet() == b.supernet();
                    prop_assert!(!siblings, "{} and {} are siblings", a, b);
                }
            }
        }
    }

    #[test]
    fn nested_duplicate_and_adjacent_prefixes_fold() {
        let nets: Vec<IpNet> = [
            "10.0.1.0/24",
            "10.0.0.0/24",
            "10.0.0.128/25",
            "10.0.0.0/24",
            "2001:db8::/33",
            "192.0.2.7/32",
            "2001:db8:8000::/33",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let collapsed: Vec<String> = collapse(&nets).iter().map(ToString::to_string).collect();
        assert_eq!(collapsed, ["10.0.0.0/23", "192.0.2.7/32", "2001:db8::/32"]);
    }
}
