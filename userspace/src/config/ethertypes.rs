//! `pass-ethertypes:`: the non-IP EtherTypes passed on purpose, read as
//! numbers or hexadecimal strings and checked entry by entry.

use serde::Deserialize;

/// One `pass-ethertypes` entry: a number (`0x88cc` or `35020`) or a string
/// holding a hexadecimal one (`"0x88cc"`). Checked as it is read, so an
/// error carries the entry's own position.
struct EtherType(u16);

impl<'de> Deserialize<'de> for EtherType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = EtherType;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an EtherType (0x0600-0xffff, e.g. 0x88cc)")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<EtherType, E> {
                let t = u16::try_from(v).map_err(|_| {
                    E::custom(format!(
                        "pass-ethertypes: {v:#x} is not an EtherType (0x0600-0xffff)"
                    ))
                })?;
                check_ethertype(t).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<EtherType, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "pass-ethertypes: {v} is not an EtherType (0x0600-0xffff)"
                    ))),
                }
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EtherType, E> {
                v.strip_prefix("0x")
                    .or_else(|| v.strip_prefix("0X"))
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        E::custom(format!(
                            "pass-ethertypes: {v:?} is not an EtherType (0x0600-0xffff, e.g. 0x88cc)"
                        ))
                    })
                    .and_then(|n| self.visit_u64(n))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Refuses values that are not EtherTypes (below 0x0600 they are 802.3
/// lengths) and those Tollgate handles itself (IP, IPv6, ARP, VLAN tags).
fn check_ethertype(t: u16) -> Result<EtherType, String> {
    let reason = match t {
        ..0x0600 => "is an 802.3 length, not an EtherType (0x0600-0xffff)",
        0x0800 | 0x86dd => "is IP: it is always filtered by the policy",
        0x0806 => "is ARP: it always passes",
        0x8100 | 0x88a8 | 0x9100 => "is a VLAN tag: the frame inside it is judged",
        _ => return Ok(EtherType(t)),
    };
    Err(format!("pass-ethertypes: {t:#06x} {reason}"))
}

/// Reads `pass-ethertypes`: at most [`tollgate_common::MAX_PASS_ETHERTYPES`]
/// entries, none twice.
pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<u16>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of EtherTypes")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u16>, A::Error> {
            use serde::de::Error as _;
            let max = tollgate_common::MAX_PASS_ETHERTYPES as usize;
            let mut out: Vec<u16> = Vec::new();
            while let Some(EtherType(t)) = seq.next_element()? {
                if out.contains(&t) {
                    return Err(A::Error::custom(format!(
                        "pass-ethertypes: {t:#06x} is listed twice"
                    )));
                }
                if out.len() == max {
                    return Err(A::Error::custom(format!(
                        "pass-ethertypes: more than {max} entries"
                    )));
                }
                out.push(t);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Visitor)
}
