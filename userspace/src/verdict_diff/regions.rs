//! The address partition: every prefix of either policy cuts the address
//! space at its first address and just past its last one. Between two cuts
//! (an elementary interval) the longest match is the same for every
//! address, on both sides, so one representative address decides for all.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// An address family; addresses are numbers within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The last address of the family, as a number.
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub fn addr(self, value: u128) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }
}

pub fn number(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// A prefix as an inclusive range of addresses, carrying a value (a group
/// id, a rule set index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span<T> {
    pub start: u128,
    pub end: u128,
    pub value: T,
}

impl<T> Span<T> {
    pub fn of(net: &IpNet, value: T) -> (Family, Span<T>) {
        let net = net.trunc();
        (
            Family::of(net.network()),
            Span {
                start: number(net.network()),
                end: number(net.broadcast()),
                value,
            },
        )
    }
}

/// One elementary interval and the value of the longest prefix holding it
/// on each side (`None`: no prefix holds it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece<T> {
    pub start: u128,
    pub end: u128,
    pub old: Option<T>,
    pub new: Option<T>,
}

/// Cuts `[0, max]` at every prefix of `old` and `new` (CIDR prefixes of
/// one family: any two are nested or disjoint) and finds the longest match
/// of each piece on both sides, in one sweep: O(n log n) for n prefixes.
pub fn pieces<T: Copy>(max: u128, mut old: Vec<Span<T>>, mut new: Vec<Span<T>>) -> Vec<Piece<T>> {
    let mut cuts: Vec<u128> = Vec::with_capacity(1 + 2 * (old.len() + new.len()));
    cuts.push(0);
    for span in old.iter().chain(&new) {
        cuts.push(span.start);
        if span.end < max {
            cuts.push(span.end + 1);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    // Outer prefixes first at one start, so each one pushed is nested in
    // the one below it on the stack.
    old.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    new.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    let (mut old, mut new) = (Sweep::new(&old), Sweep::new(&new));
    cuts.iter()
        .enumerate()
        .map(|(i, &start)| Piece {
            start,
            end: cuts.get(i + 1).map_or(max, |next| next - 1),
            old: old.at(start),
            new: new.at(start),
        })
        .collect()
}

/// The prefixes holding the current cut, innermost on top.
struct Sweep<'a, T> {
    spans: &'a [Span<T>],
    next: usize,
    stack: Vec<&'a Span<T>>,
}

impl<'a, T: Copy> Sweep<'a, T> {
    fn new(spans: &'a [Span<T>]) -> Self {
        Sweep {
            spans,
            next: 0,
            stack: Vec::new(),
        }
    }

    /// The innermost prefix holding `cut`; cuts come in increasing order.
    fn at(&mut self, cut: u128) -> Option<T> {
        while self.stack.last().is_some_and(|top| top.end < cut) {
            self.stack.pop();
        }
        while let Some(span) = self.spans.get(self.next).filter(|s| s.start <= cut) {
            self.stack.push(span);
            self.next += 1;
        }
        self.stack.last().map(|s| s.value)
    }
}

/// Appends `[start, end]` to sorted disjoint ranges, joining it to the
/// last one when they touch.
pub fn push_range(ranges: &mut Vec<(u128, u128)>, start: u128, end: u128) {
    match ranges.last_mut() {
        Some(last) if last.1.checked_add(1) == Some(start) => last.1 = end,
        _ => ranges.push((start, end)),
    }
}

/// The fewest CIDR prefixes covering exactly `[start, end]`.
pub fn cidrs(family: Family, start: u128, end: u128) -> Vec<IpNet> {
    let bits = family.bits();
    let mut out = Vec::new();
    let mut at = start;
    loop {
        // The largest aligned block starting at `at` that stays within `end`.
        let mut size_bits = if at == 0 {
            u32::from(bits)
        } else {
            at.trailing_zeros().min(u32::from(bits))
        };
        while size_bits > 0 && block_end(at, size_bits) > end {
            size_bits -= 1;
        }
        let len = bits - size_bits as u8;
        out.push(IpNet::new(family.addr(at), len).expect("length within family"));
        let last = block_end(at, size_bits);
        if last >= end {
            return out;
        }
        at = last + 1;
    }
}

/// The last address of the block of 2^`size_bits` addresses from `at`.
fn block_end(at: u128, size_bits: u32) -> u128 {
    if size_bits >= 128 {
        u128::MAX
    } else {
        at.saturating_add((1u128 << size_bits) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(net: &str, value: u32) -> Span<u32> {
        Span::of(&net.parse::<IpNet>().unwrap(), value).1
    }

    #[test]
    fn pieces_carry_the_longest_match_of_each_side() {
        let old = vec![span("10.0.0.0/8", 1), span("10.1.0.0/16", 2)];
        let new = vec![span("10.1.2.0/24", 3)];
        let found: Vec<(String, Option<u32>, Option<u32>)> = pieces(Family::V4.max(), old, new)
            .iter()
            .map(|p| {
                (
                    format!("{}-{}", Family::V4.addr(p.start), Family::V4.addr(p.end)),
                    p.old,
                    p.new,
                )
            })
            .collect();
        let expected = [
            ("0.0.0.0-9.255.255.255", None, None),
            ("10.0.0.0-10.0.255.255", Some(1), None),
            ("10.1.0.0-10.1.1.255", Some(2), None),
            ("10.1.2.0-10.1.2.255", Some(2), Some(3)),
            ("10.1.3.0-10.1.255.255", Some(2), None),
            ("10.2.0.0-10.255.255.255", Some(1), None),
            ("11.0.0.0-255.255.255.255", None, None),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(r, o, n)| (r.to_string(), *o, *n))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn ranges_split_into_the_fewest_cidrs() {
        let n = |s: &str| number(s.parse().unwrap());
        let text = |v: Vec<IpNet>| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            text(cidrs(Family::V4, n("10.0.0.1"), n("10.0.0.6"))),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(text(cidrs(Family::V4, 0, Family::V4.max())), ["0.0.0.0/0"]);
        assert_eq!(text(cidrs(Family::V6, 0, u128::MAX)), ["::/0"]);
        assert_eq!(
            text(cidrs(Family::V4, n("10.0.0.0"), n("10.1.255.255"))),
            ["10.0.0.0/15"]
        );
    }
}
