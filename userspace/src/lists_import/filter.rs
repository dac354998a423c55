//! Which published prefixes go into the list: `--region` and `--service`
//! values are case-insensitive exact matches, ORed within a flag and ANDed
//! across flags (and with `--family`). A value the file does not have is an
//! error naming the values it does have, and so is a combination that
//! selects nothing: a refresh must never write an empty list silently.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::{Entry, Ranges};

/// The address family to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn keyword(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    fn holds(self, net: &IpNet) -> bool {
        match self {
            Family::Ipv4 => matches!(net, IpNet::V4(_)),
            Family::Ipv6 => matches!(net, IpNet::V6(_)),
        }
    }
}

/// The filters of the command line; empty ones keep everything.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub regions: Vec<String>,
    pub services: Vec<String>,
    pub family: Option<Family>,
}

impl Filters {
    /// The filters as the header states them.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.regions.is_empty() {
            parts.push(format!("region {}", self.regions.join(" or ")));
        }
        if !self.services.is_empty() {
            parts.push(format!("service {}", self.services.join(" or ")));
        }
        if let Some(family) = self.family {
            parts.push(format!("family {}", family.keyword()));
        }
        if parts.is_empty() {
            "none (every prefix in the file)".into()
        } else {
            parts.join("; ")
        }
    }
}

/// The prefixes the filters select, in file order (duplicates included).
pub fn select(ranges: &Ranges, filters: &Filters) -> Result<Vec<IpNet>, String> {
    let regions = Field {
        what: "region",
        values: ranges
            .entries
            .iter()
            .filter_map(|e| e.region.as_deref())
            .collect(),
    };
    let services = Field {
        what: "service",
        values: ranges
            .entries
            .iter()
            .flat_map(|e| e.services.iter().map(String::as_str))
            .collect(),
    };
    regions.check(&filters.regions)?;
    services.check(&filters.services)?;
    let selected: Vec<IpNet> = ranges
        .entries
        .iter()
        .filter(|e| in_region(e, &filters.regions) && in_service(e, &filters.services))
        .map(|e| e.prefix)
        .filter(|net| filters.family.is_none_or(|f| f.holds(net)))
        .collect();
    if selected.is_empty() {
        return Err(nothing_selected(ranges, filters));
    }
    Ok(selected)
}

fn in_region(entry: &Entry, wanted: &[String]) -> bool {
    wanted.is_empty()
        || entry
            .region
            .as_deref()
            .is_some_and(|r| wanted.iter().any(|w| w.eq_ignore_ascii_case(r)))
}

fn in_service(entry: &Entry, wanted: &[String]) -> bool {
    wanted.is_empty()
        || entry
            .services
            .iter()
            .any(|s| wanted.iter().any(|w| w.eq_ignore_ascii_case(s)))
}

/// The values one field takes in the file.
struct Field<'a> {
    what: &'static str,
    values: BTreeSet<&'a str>,
}

impl Field<'_> {
    /// Every wanted value must occur in the file: a typo ORed with a good
    /// value would otherwise go unnoticed.
    fn check(&self, wanted: &[String]) -> Result<(), String> {
        for value in wanted {
            if self.values.iter().any(|v| v.eq_ignore_ascii_case(value)) {
                continue;
            }
            let what = self.what;
            let mut message = format!("no {what} {value:?} in the file");
            let close = close_to(value, &self.values);
            if !close.is_empty() {
                message += &format!("; did you mean {}?", close.join(", "));
            }
            message += &format!(
                " (its {} {}: {})",
                self.values.len(),
                plural(what, self.values.len()),
                join(&self.values)
            );
            return Err(message);
        }
        Ok(())
    }
}

/// Every filter value exists, but no prefix has them all: says what the
/// selected regions offer (or where the selected services are).
fn nothing_selected(ranges: &Ranges, filters: &Filters) -> String {
    let mut message = format!("no prefix matches all the filters ({})", filters.describe());
    let in_regions: BTreeSet<&str> = ranges
        .entries
        .iter()
        .filter(|e| !filters.regions.is_empty() && in_region(e, &filters.regions))
        .flat_map(|e| e.services.iter().map(String::as_str))
        .collect();
    let of_services: BTreeSet<&str> = ranges
        .entries
        .iter()
        .filter(|e| !filters.services.is_empty() && in_service(e, &filters.services))
        .filter_map(|e| e.region.as_deref())
        .collect();
    if !filters.services.is_empty() && !in_regions.is_empty() {
        message += &format!("; services in the region: {}", join(&in_regions));
    } else if !filters.regions.is_empty() && !of_services.is_empty() {
        message += &format!("; regions of the service: {}", join(&of_services));
    }
    message
}

/// The values a mistyped one may have meant: those within a small edit
/// distance, or containing it (`tokyo` for `ap-tokyo-1`).
fn close_to<'a>(value: &str, values: &BTreeSet<&'a str>) -> Vec<&'a str> {
    let value = value.to_ascii_lowercase();
    let budget = (value.len() / 4).max(2);
    values
        .iter()
        .filter(|v| {
            let v = v.to_ascii_lowercase();
            edit_distance(&value, &v) <= budget || (value.len() >= 3 && v.contains(&value))
        })
        .copied()
        .collect()
}

/// Levenshtein distance over bytes (names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

fn join(values: &BTreeSet<&str>) -> String {
    values.iter().copied().collect::<Vec<_>>().join(", ")
}

fn plural(what: &str, n: usize) -> String {
    if n == 1 {
        what.to_string()
    } else {
        format!("{what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(prefix: &str, region: &str, services: &[&str]) -> Entry {
        Entry {
            prefix: prefix.parse().unwrap(),
            region: Some(region.into()),
            services: services.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ranges() -> Ranges {
        Ranges {
            source: "test".into(),
            entries: vec![
                entry("192.0.2.0/24", "eu-west-1", &["AMAZON"]),
                entry("198.51.100.0/24", "eu-west-1", &["EC2"]),
                entry("203.0.113.0/24", "us-east-1", &["AMAZON", "S3"]),
                entry("2001:db8::/32", "us-east-1", &["AMAZON"]),
            ],
        }
    }

    fn filters(regions: &[&str], services: &[&str]) -> Filters {
        Filters {
            regions: regions.iter().map(|s| s.to_string()).collect(),
            services: services.iter().map(|s| s.to_string()).collect(),
            family: None,
        }
    }

    fn selected(f: &Filters) -> Vec<String> {
        select(&ranges(), f)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn no_filter_keeps_everything() {
        assert_eq!(selected(&Filters::default()).len(), 4);
    }

    #[test]
    fn values_match_case_insensitively_and_or_within_a_flag() {
        assert_eq!(
            selected(&filters(&["EU-WEST-1"], &["amazon", "s3"])),
            ["192.0.2.0/24"]
        );
        assert_eq!(
            selected(&filters(&["eu-west-1", "us-east-1"], &["ec2", "s3"])),
            ["198.51.100.0/24", "203.0.113.0/24"]
        );
    }

    #[test]
    fn flags_and_together_with_the_family() {
        let mut f = filters(&["us-east-1"], &["AMAZON"]);
        assert_eq!(selected(&f), ["203.0.113.0/24", "2001:db8::/32"]);
        f.family = Some(Family::Ipv6);
        assert_eq!(selected(&f), ["2001:db8::/32"]);
    }

    #[test]
    fn an_unknown_value_is_an_error_naming_close_ones() {
        let error = select(&ranges(), &filters(&["eu-west-1", "eu-wset-1"], &[])).unwrap_err();
        assert_eq!(
            error,
            "no region \"eu-wset-1\" in the file; did you mean eu-west-1? \
             (its 2 regions: eu-west-1, us-east-1)"
        );
        let error = select(&ranges(), &filters(&[], &["lambda"])).unwrap_err();
        assert_eq!(
            error,
            "no service \"lambda\" in the file (its 3 services: AMAZON, EC2, S3)"
        );
    }

    #[test]
    fn a_combination_selecting_nothing_is_an_error() {
        let error = select(&ranges(), &filters(&["eu-west-1"], &["S3"])).unwrap_err();
        assert_eq!(
            error,
            "no prefix matches all the filters (region eu-west-1; service S3); \
             services in the region: AMAZON, EC2"
        );
        let mut f = filters(&["eu-west-1"], &[]);
        f.family = Some(Family::Ipv6);
        let error = select(&ranges(), &f).unwrap_err();
        assert_eq!(
            error,
            "no prefix matches all the filters (region eu-west-1; family ipv6)"
        );
    }

    #[test]
    fn edit_distance_counts_single_byte_edits() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("eu-west-1", "eu-west-1"), 0);
    }
}
