//! The policy language as written: the spec of one file, its serde model.
//!
//! Structure is strict (kebab-case keys, unknown keys are errors), leaves are
//! lenient: CIDRs, ports, protocols and verdicts are kept as the text the
//! operator wrote ([`Scalar`]), so `validate` can report every bad value in
//! one run with its position instead of serde stopping at the first.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Deserializer, de};

/// One policy file. Every field is optional: a file may hold only lists,
/// only groups, or only the top-level settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyFile {
    #[serde(default)]
    pub lists: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub groups: BTreeMap<String, GroupSpec>,
    pub unknown_devices: Option<Scalar>,
    /// Test cases of the policy: packets and the verdict they must get.
    #[serde(default)]
    pub expect: Vec<ExpectSpec>,
}

/// One `expect:` case, e.g. `- {from: 10.64.0.10, to: 13.112.10.10, proto:
/// tcp, port: 8883, verdict: allow, rule: aws-iot}`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "an expectation: a mapping with from, to, proto, port, verdict, rule"
)]
pub struct ExpectSpec {
    pub from: Option<Scalar>,
    pub to: Option<Scalar>,
    pub proto: Option<Scalar>,
    pub port: Option<Scalar>,
    pub verdict: Option<Scalar>,
    pub rule: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a group: a mapping with devices, default and rules"
)]
pub struct GroupSpec {
    pub description: Option<String>,
    pub devices: Option<OneOrMany>,
    /// Required; optional here so that its absence is reported with the
    /// group's other errors.
    pub default: Option<Scalar>,
    pub mode: Option<Scalar>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// `- allow: {...}`, `- deny: {...}` or `- reject: {...}`: a mapping with
/// exactly one of the three keys (yaml_serde reads enums only from YAML
/// tags, so this is a struct and `validate` checks that exactly one is
/// present).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a rule: `allow:`, `deny:` or `reject:` and what it matches"
)]
pub struct RuleSpec {
    pub allow: Option<MatchSpec>,
    pub deny: Option<MatchSpec>,
    pub reject: Option<MatchSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a rule body: a mapping with to, proto, ports"
)]
pub struct MatchSpec {
    pub to: Option<ToSpec>,
    pub proto: Option<Scalar>,
    pub ports: Option<OneOrMany>,
    pub comment: Option<String>,
    /// Stable rule id; derived from the rule's meaning when absent.
    pub id: Option<Scalar>,
}

/// Any YAML scalar, kept as text (`443`, `"10000-10100"`, `10.0.0.0/8`).
/// A null is the empty string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a single value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                // `{:?}` keeps the point: 443.0 must never read as 443.
                Ok(Scalar(format!("{v:?}")))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A single value or a sequence of them (`to: aws-tokyo`, `to: [a, b]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OneOrMany {
    One(Scalar),
    Many(Vec<Scalar>),
}

impl OneOrMany {
    /// The items with their field-path suffix: `""` for a single value,
    /// `"[i]"` for sequence items.
    pub fn items(&self) -> Vec<(String, &Scalar)> {
        self.values()
            .iter()
            .enumerate()
            .map(|(i, s)| (self.suffix(i), s))
            .collect()
    }

    /// The items without their field paths: lists are long, and the path
    /// of an item is only needed when something is wrong with it.
    pub fn values(&self) -> &[Scalar] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }

    /// The field-path suffix of item `index`.
    pub fn suffix(&self, index: usize) -> String {
        match self {
            OneOrMany::One(_) => String::new(),
            OneOrMany::Many(_) => format!("[{index}]"),
        }
    }

    /// True for an empty sequence or a null.
    pub fn is_empty(&self) -> bool {
        match self {
            OneOrMany::One(s) => s.0.is_empty(),
            OneOrMany::Many(v) => v.is_empty(),
        }
    }
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or a sequence of values")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(Scalar(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(Scalar(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(Scalar(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(Scalar(format!("{v:?}"))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(Scalar(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<OneOrMany, E> {
                Ok(OneOrMany::Many(Vec::new()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A rule's `to`: addresses and names of lists and keywords, or
/// `{fqdn: [...]}`, domain names the gateway's DNS forwarder resolves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToSpec {
    Items(OneOrMany),
    Fqdn(OneOrMany),
}

/// The mapping form of `to`: exactly one key, `fqdn`.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with the key fqdn: a domain name or a list of them"
)]
struct FqdnSpec {
    fqdn: OneOrMany,
}

impl<'de> Deserialize<'de> for ToSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = ToSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value, a sequence of values or {fqdn: [names]}")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ToSpec, A::Error> {
                let spec = FqdnSpec::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ToSpec::Fqdn(spec.fqdn))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<ToSpec, A::Error> {
                OneOrMany::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(ToSpec::Items)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ToSpec, E> {
                Ok(ToSpec::Items(OneOrMany::One(Scalar(v.to_string()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ToSpec, E> {
                Ok(ToSpec::Items(OneOrMany::One(Scalar(v.to_string()))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ToSpec, E> {
                Ok(ToSpec::Items(OneOrMany::One(Scalar(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ToSpec, E> {
                Ok(ToSpec::Items(OneOrMany::One(Scalar(format!("{v:?}")))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ToSpec, E> {
                Ok(ToSpec::Items(OneOrMany::One(Scalar(v.to_string()))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ToSpec, E> {
                Ok(ToSpec::Items(OneOrMany::Many(Vec::new())))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_keep_the_text_as_written() {
        let f: PolicyFile = yaml_serde::from_str(
            "groups:\n  g:\n    default: deny\n    rules:\n      - allow:\n          to: x\n          ports: [443, \"1-2\"]\n",
        )
        .unwrap();
        let m = f.groups["g"].rules[0].allow.as_ref().unwrap();
        assert_eq!(
            m.to,
            Some(ToSpec::Items(OneOrMany::One(Scalar("x".into()))))
        );
        let ports: Vec<_> = m.ports.as_ref().unwrap().items();
        assert_eq!(ports[0], ("[0]".into(), &Scalar("443".into())));
        assert_eq!(ports[1].1.0, "1-2");
    }

    #[test]
    fn structure_is_strict() {
        let e = yaml_serde::from_str::<PolicyFile>("groups:\n  g:\n    defualt: deny\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("groups.g: unknown field `defualt`"), "{e}");
        let e = yaml_serde::from_str::<PolicyFile>(
            "groups:\n  g:\n    rules:\n      - permit: {to: any}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("groups.g.rules[0]: unknown field `permit`, expected one of `allow`, `deny`, `reject`"),
            "{e}"
        );
    }
}
