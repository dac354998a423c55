//! The list's name: given with `--name`, or derived from the provider and
//! the filters (`aws-ap-northeast-1-amazon`). Either way it must be a list
//! name of the policy language.

use super::{Filters, Provider};
use crate::policy::check_list_name;

/// `name` if the policy language accepts it as a list name.
pub fn check(name: &str) -> Result<String, String> {
    check_list_name(name)?;
    Ok(name.to_string())
}

/// The provider's keyword and every filter value, lowercased, with runs of
/// other characters as one `-`: `gcp --service "Google Cloud"` gives
/// `gcp-google-cloud`.
pub fn derive(provider: Provider, filters: &Filters) -> Result<String, String> {
    let words = std::iter::once(provider.keyword())
        .chain(filters.regions.iter().map(String::as_str))
        .chain(filters.services.iter().map(String::as_str))
        .chain(filters.family.map(|f| f.keyword()));
    let mut name = String::new();
    for word in words {
        for c in word.chars().map(|c| c.to_ascii_lowercase()) {
            let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            };
            if c != '-' || !name.is_empty() && !name.ends_with('-') {
                name.push(c);
            }
        }
        if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_end_matches('-');
    check_list_name(name)
        .map_err(|e| format!("the list name derived from the filters: {e}; give --name"))?;
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derived(provider: Provider, regions: &[&str], services: &[&str]) -> Result<String, String> {
        let filters = Filters {
            regions: regions.iter().map(|s| s.to_string()).collect(),
            services: services.iter().map(|s| s.to_string()).collect(),
            family: None,
        };
        derive(provider, &filters)
    }

    #[test]
    fn derived_names_are_list_names() {
        assert_eq!(
            derived(Provider::Aws, &["ap-northeast-1"], &["AMAZON"]).unwrap(),
            "aws-ap-northeast-1-amazon"
        );
        assert_eq!(
            derived(Provider::Gcp, &[], &["Google Cloud"]).unwrap(),
            "gcp-google-cloud"
        );
        assert_eq!(
            derived(Provider::Github, &[], &["hooks", "api"]).unwrap(),
            "github-hooks-api"
        );
        assert_eq!(derived(Provider::Oracle, &[], &[]).unwrap(), "oracle");
        assert_eq!(
            derived(Provider::Azure, &["--x--"], &["Az.Cloud_"]).unwrap(),
            "azure-x-az-cloud"
        );
    }

    #[test]
    fn a_derived_name_too_long_asks_for_name() {
        let error = derived(
            Provider::Aws,
            &[
                "ap-northeast-1",
                "ap-northeast-2",
                "ap-northeast-3",
                "eu-west-1",
            ],
            &[],
        )
        .unwrap_err();
        assert!(error.ends_with("; give --name"), "{error}");
    }

    #[test]
    fn given_names_follow_the_policy_language() {
        assert_eq!(check("aws-tokyo").unwrap(), "aws-tokyo");
        assert!(check("AWS").is_err());
        assert!(check("any").is_err());
        assert!(check("").is_err());
    }
}
