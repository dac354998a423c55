//! GitHub's `meta` API (<https://api.github.com/meta>): an object whose
//! keys with an array of CIDRs as value are services (`hooks`, `web`,
//! `api`, `git`, `actions`, ...); the others (`ssh_keys`, `domains`, ...)
//! are not ranges. It has no regions, and no date or version.

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::{Entry, Ranges, from_json, parse_prefix};

pub fn parse(bytes: &[u8]) -> Result<Ranges, String> {
    let file: Map<String, Value> = from_json(bytes, "GitHub's meta (a JSON object)")?;
    let mut entries = Vec::new();
    let mut services = 0;
    for (key, value) in &file {
        let Some(items) = value.as_array() else {
            continue;
        };
        let prefixes: Vec<Option<IpNet>> = items
            .iter()
            .map(|v| v.as_str().and_then(|t| parse_prefix(t, String::new).ok()))
            .collect();
        // An array of other things (`ssh_keys`) is not a service; one that
        // mixes CIDRs with them is a file we do not understand.
        if prefixes.iter().all(Option::is_none) {
            continue;
        }
        if let Some(i) = prefixes.iter().position(Option::is_none) {
            let at = || format!("{key}[{i}]");
            return Err(match items[i].as_str() {
                Some(text) => parse_prefix(text, at).expect_err("not a prefix"),
                None => format!("{}: {} is not a CIDR", at(), items[i]),
            });
        }
        services += 1;
        entries.extend(prefixes.into_iter().flatten().map(|prefix| Entry {
            prefix,
            region: None,
            services: vec![key.clone()],
        }));
    }
    if services == 0 {
        return Err("not GitHub's meta: no key holds a list of CIDRs".into());
    }
    Ok(Ranges {
        source: "GitHub meta API; the file carries no date or version".into(),
        entries,
    })
}
