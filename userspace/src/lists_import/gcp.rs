//! Google Cloud `cloud.json` (<https://www.gstatic.com/ipranges/cloud.json>):
//! `prefixes[]`, each with `ipv4Prefix` or `ipv6Prefix`, `service` and
//! `scope` (the region), versioned by `syncToken` and `creationTime`.

use serde::Deserialize;

use super::{Entry, Ranges, from_json, parse_prefix};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    sync_token: String,
    creation_time: String,
    prefixes: Vec<Prefix>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Prefix {
    ipv4_prefix: Option<String>,
    ipv6_prefix: Option<String>,
    service: String,
    scope: String,
}

pub fn parse(bytes: &[u8]) -> Result<Ranges, String> {
    let file: File = from_json(bytes, "a Google Cloud cloud.json")?;
    let mut entries = Vec::with_capacity(file.prefixes.len());
    for (i, p) in file.prefixes.into_iter().enumerate() {
        let at = || format!("prefixes[{i}]");
        let text = match (&p.ipv4_prefix, &p.ipv6_prefix) {
            (Some(text), None) | (None, Some(text)) => text,
            _ => return Err(format!("{}: needs one of ipv4Prefix and ipv6Prefix", at())),
        };
        entries.push(Entry {
            prefix: parse_prefix(text, at)?,
            region: Some(p.scope),
            services: vec![p.service],
        });
    }
    Ok(Ranges {
        source: format!(
            "Google Cloud cloud.json, syncToken {}, creationTime {}",
            file.sync_token, file.creation_time
        ),
        entries,
    })
}
