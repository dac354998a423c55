//! Azure Service Tags (`ServiceTags_Public_YYYYMMDD.json`, from Microsoft's
//! download center or the Service Tag Discovery API): `values[]`, each a
//! service tag with `name` (`AzureCloud.eastus`, `Storage`, ...) and
//! `properties` (`region`, empty for a global tag; `systemService`;
//! `addressPrefixes`), versioned by `changeNumber` and `cloud`.
//!
//! A prefix's services are its tag's name before the first dot (`Storage`
//! for `Storage.WestUS`: the regional part of a tag is its region) and its
//! `systemService` when set. A global tag's region is `global`.

use serde::Deserialize;

use super::{Entry, Ranges, from_json, parse_prefix};

/// The region of tags whose `region` is empty.
pub const GLOBAL: &str = "global";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    change_number: u64,
    cloud: String,
    values: Vec<Tag>,
}

#[derive(Deserialize)]
struct Tag {
    name: String,
    properties: Properties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Properties {
    region: String,
    #[serde(default)]
    system_service: String,
    address_prefixes: Vec<String>,
}

pub fn parse(bytes: &[u8]) -> Result<Ranges, String> {
    let file: File = from_json(bytes, "an Azure Service Tags file")?;
    let mut entries = Vec::new();
    for (v, tag) in file.values.into_iter().enumerate() {
        let Properties {
            region,
            system_service,
            address_prefixes,
        } = tag.properties;
        let region = if region.is_empty() {
            GLOBAL.to_string()
        } else {
            region
        };
        let base = tag.name.split('.').next().unwrap_or_default().to_string();
        let mut services = vec![base];
        if !system_service.is_empty() && !system_service.eq_ignore_ascii_case(&services[0]) {
            services.push(system_service);
        }
        for (p, text) in address_prefixes.iter().enumerate() {
            let at = || format!("values[{v}].properties.addressPrefixes[{p}]");
            entries.push(Entry {
                prefix: parse_prefix(text, at)?,
                region: Some(region.clone()),
                services: services.clone(),
            });
        }
    }
    Ok(Ranges {
        source: format!(
            "Azure Service Tags, cloud {}, changeNumber {}",
            file.cloud, file.change_number
        ),
        entries,
    })
}
