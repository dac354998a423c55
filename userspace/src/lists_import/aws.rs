//! AWS `ip-ranges.json` (<https://ip-ranges.amazonaws.com/ip-ranges.json>):
//! `prefixes[]` (`ip_prefix`, `region`, `service`) and `ipv6_prefixes[]`
//! (`ipv6_prefix`, ...), versioned by `syncToken` and `createDate`. A
//! prefix is listed once per service, so `AMAZON` (every AWS address)
//! repeats those of `EC2`, `S3`, ...

use serde::Deserialize;

use super::{Entry, Ranges, from_json, parse_prefix};

#[derive(Deserialize)]
struct File {
    #[serde(rename = "syncToken")]
    sync_token: String,
    #[serde(rename = "createDate")]
    create_date: String,
    prefixes: Vec<V4>,
    ipv6_prefixes: Vec<V6>,
}

#[derive(Deserialize)]
struct V4 {
    ip_prefix: String,
    region: String,
    service: String,
}

#[derive(Deserialize)]
struct V6 {
    ipv6_prefix: String,
    region: String,
    service: String,
}

pub fn parse(bytes: &[u8]) -> Result<Ranges, String> {
    let file: File = from_json(bytes, "an AWS ip-ranges.json")?;
    let mut entries = Vec::with_capacity(file.prefixes.len() + file.ipv6_prefixes.len());
    for (i, p) in file.prefixes.into_iter().enumerate() {
        let prefix = parse_prefix(&p.ip_prefix, || format!("prefixes[{i}].ip_prefix"))?;
        entries.push(Entry {
            prefix,
            region: Some(p.region),
            services: vec![p.service],
        });
    }
    for (i, p) in file.ipv6_prefixes.into_iter().enumerate() {
        let prefix = parse_prefix(&p.ipv6_prefix, || format!("ipv6_prefixes[{i}].ipv6_prefix"))?;
        entries.push(Entry {
            prefix,
            region: Some(p.region),
            services: vec![p.service],
        });
    }
    Ok(Ranges {
        source: format!(
            "AWS ip-ranges.json, syncToken {}, createDate {}",
            file.sync_token, file.create_date
        ),
        entries,
    })
}
