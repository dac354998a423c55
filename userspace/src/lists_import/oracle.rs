//! Oracle Cloud `public_ip_ranges.json`
//! (<https://docs.oracle.com/iaas/tools/public_ip_ranges.json>): `regions[]`,
//! each with `region` and `cidrs[]` carrying `cidr` and `tags` (the
//! services: `OCI`, `OSN`, `OBJECT_STORAGE`), dated by
//! `last_updated_timestamp`.

use serde::Deserialize;

use super::{Entry, Ranges, from_json, parse_prefix};

#[derive(Deserialize)]
struct File {
    last_updated_timestamp: String,
    regions: Vec<Region>,
}

#[derive(Deserialize)]
struct Region {
    region: String,
    cidrs: Vec<Cidr>,
}

#[derive(Deserialize)]
struct Cidr {
    cidr: String,
    tags: Vec<String>,
}

pub fn parse(bytes: &[u8]) -> Result<Ranges, String> {
    let file: File = from_json(bytes, "an Oracle Cloud public_ip_ranges.json")?;
    let mut entries = Vec::new();
    for (r, region) in file.regions.into_iter().enumerate() {
        for (c, cidr) in region.cidrs.into_iter().enumerate() {
            let prefix = parse_prefix(&cidr.cidr, || format!("regions[{r}].cidrs[{c}].cidr"))?;
            entries.push(Entry {
                prefix,
                region: Some(region.region.clone()),
                services: cidr.tags,
            });
        }
    }
    Ok(Ranges {
        source: format!(
            "Oracle Cloud public_ip_ranges.json, last_updated_timestamp {}",
            file.last_updated_timestamp
        ),
        entries,
    })
}
