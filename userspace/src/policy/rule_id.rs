//! Stable rule ids: the `rule` label of metrics, logs and `explain`.
//!
//! A rule without an explicit `id:` gets `<action>-<8 hex digits>`, a 32-bit
//! FNV-1a hash of its canonical text: the action, its sorted destinations
//! (CIDRs normalised, list names and keywords as written), its protocol
//! number and its sorted ports. Moving or reformatting a rule keeps its id
//! (and so its counter); changing what it matches gives it a new one. FNV-1a
//! is written out here because std's hasher may change between Rust versions.

use std::fmt;

use super::{Action, PortRange};

/// A rule's id, unique within its group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct RuleId(String);

/// Ids that name non-rule deciders in `explain` and metrics.
pub const RESERVED_IDS: [&str; 2] = ["default", "builtin-ntp"];

impl RuleId {
    /// An id as written in a policy (already validated) or carried by a
    /// counter owner.
    pub fn new(id: &str) -> RuleId {
        RuleId(id.to_string())
    }

    /// The id derived from a rule's meaning. `to` holds the destinations in
    /// any order: CIDRs normalised (a bare address as /32 or /128), list
    /// names and keywords as written.
    pub fn derived(
        action: Action,
        to: &[String],
        proto: Option<u8>,
        ports: Option<&[PortRange]>,
    ) -> RuleId {
        let text = canonical_text(action, to, proto, ports);
        RuleId(format!("{action}-{:08x}", fnv1a32(text.as_bytes())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `allow|to=10.0.0.0/8,aws-tokyo|proto=6|ports=443,10000-10100`; `any` for
/// an absent protocol or port list. Destinations and ports are sorted and
/// deduplicated, so their order in the file does not matter.
fn canonical_text(
    action: Action,
    to: &[String],
    proto: Option<u8>,
    ports: Option<&[PortRange]>,
) -> String {
    let mut to = to.to_vec();
    to.sort();
    to.dedup();
    let proto = proto.map_or("any".to_string(), |p| p.to_string());
    let ports = match ports {
        None => "any".to_string(),
        Some(ports) => {
            let mut ports = ports.to_vec();
            ports.sort();
            ports.dedup();
            ports
                .iter()
                .map(PortRange::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    format!("{action}|to={}|proto={proto}|ports={ports}", to.join(","))
}

/// 32-bit FNV-1a (offset basis 2166136261, prime 16777619).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash: u32, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn ids_ignore_order_and_follow_meaning() {
        let ports = [PortRange::new(8883, 8883), PortRange::new(443, 443)];
        let a = RuleId::derived(
            Action::Allow,
            &["b".into(), "10.0.0.0/8".into()],
            Some(6),
            Some(&ports),
        );
        let b = RuleId::derived(
            Action::Allow,
            &["10.0.0.0/8".into(), "b".into(), "b".into()],
            Some(6),
            Some(&[ports[1], ports[0]]),
        );
        assert_eq!(a, b);
        assert!(a.as_str().starts_with("allow-") && a.as_str().len() == 14);
        let deny = RuleId::derived(Action::Deny, &["b".into()], Some(6), Some(&ports));
        assert!(deny.as_str().starts_with("deny-"));
        assert_ne!(
            RuleId::derived(Action::Allow, &["b".into()], None, None),
            RuleId::derived(Action::Allow, &["b".into()], Some(6), None)
        );
    }

    #[test]
    fn the_canonical_text_is_stable() {
        // Changing this text changes every derived id in the field: don't.
        assert_eq!(
            canonical_text(
                Action::Allow,
                &["aws-tokyo".into(), "10.0.0.0/8".into()],
                Some(6),
                Some(&[PortRange::new(10000, 10100), PortRange::new(443, 443)])
            ),
            "allow|to=10.0.0.0/8,aws-tokyo|proto=6|ports=443,10000-10100"
        );
        assert_eq!(
            RuleId::derived(Action::Deny, &["10.0.0.0/8".into()], None, None).as_str(),
            format!(
                "deny-{:08x}",
                fnv1a32(b"deny|to=10.0.0.0/8|proto=any|ports=any")
            )
        );
    }
}
