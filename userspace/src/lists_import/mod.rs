//! `tollgate lists import`: turns a cloud provider's published IP ranges
//! into a list file of the policy language, so a policy repository can be
//! refreshed by CI (the gateway needs no internet access, and every change
//! of the ranges is a reviewed diff).
//!
//! The pipeline: [`input`] reads the file (bounded, gzip or plain), one
//! parser per [`Provider`] maps its fields to [`Entry`]s, [`filter`] keeps
//! the regions and services asked for, [`collapse`] merges them into the
//! fewest prefixes covering the same addresses, and [`render`] writes the
//! YAML with a header naming the source and the filters.

mod aws;
mod azure;
mod collapse;
mod filter;
mod gcp;
mod github;
mod input;
mod name;
mod oracle;
mod render;

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::de::DeserializeOwned;

pub use filter::{Family, Filters};

/// The formats of the providers' published ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    /// AWS `ip-ranges.json`.
    Aws,
    /// Google Cloud `cloud.json`.
    Gcp,
    /// Azure Service Tags (`ServiceTags_Public_*.json`).
    Azure,
    /// Oracle Cloud `public_ip_ranges.json`.
    Oracle,
    /// GitHub's `meta` API (`https://api.github.com/meta`).
    Github,
}

impl Provider {
    /// The name on the command line (and the default list name's start).
    pub fn keyword(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Gcp => "gcp",
            Provider::Azure => "azure",
            Provider::Oracle => "oracle",
            Provider::Github => "github",
        }
    }

    /// Whether the format has regions (`--region` is meaningful).
    pub fn has_regions(self) -> bool {
        self != Provider::Github
    }

    fn parse(self, bytes: &[u8]) -> Result<Ranges, String> {
        match self {
            Provider::Aws => aws::parse(bytes),
            Provider::Gcp => gcp::parse(bytes),
            Provider::Azure => azure::parse(bytes),
            Provider::Oracle => oracle::parse(bytes),
            Provider::Github => github::parse(bytes),
        }
    }
}

/// A provider file, parsed.
#[derive(Debug)]
pub struct Ranges {
    /// What the file says about itself, for the header: the format, its
    /// date and its version (sync token, change number).
    pub source: String,
    pub entries: Vec<Entry>,
}

/// One published prefix.
#[derive(Debug)]
pub struct Entry {
    pub prefix: IpNet,
    /// `None` where the format has no regions (GitHub).
    pub region: Option<String>,
    /// Services (or tags) the prefix belongs to; Oracle and Azure give
    /// several.
    pub services: Vec<String>,
}

/// What to import.
pub struct Request {
    pub provider: Provider,
    /// The file, or `-` for standard input.
    pub file: PathBuf,
    pub filters: Filters,
    /// The list's name; derived from the provider and filters when `None`.
    pub name: Option<String>,
}

/// Why an import failed.
#[derive(Debug, PartialEq, Eq)]
pub enum ImportError {
    /// The command line asks for something impossible (exit status 2).
    Usage(String),
    /// The input is unreadable or malformed, or a filter matches nothing
    /// (exit status 1).
    Input(String),
}

/// A rendered list file.
#[derive(Debug)]
pub struct Imported {
    pub name: String,
    /// The YAML text, header comment included.
    pub text: String,
    /// Prefixes selected, and what they collapsed to.
    pub selected: usize,
    pub collapsed: usize,
}

/// Reads, filters, collapses and renders.
pub fn import(request: &Request) -> Result<Imported, ImportError> {
    let provider = request.provider;
    if !provider.has_regions() && !request.filters.regions.is_empty() {
        return Err(ImportError::Usage(format!(
            "--region: the {} format has no regions (filter with --service)",
            provider.keyword()
        )));
    }
    let name = match &request.name {
        Some(given) => {
            name::check(given).map_err(|e| ImportError::Usage(format!("--name: {e}")))?
        }
        None => name::derive(provider, &request.filters).map_err(ImportError::Usage)?,
    };
    let shown = display_name(&request.file);
    // Errors name the file as given; the header only its name (below).
    let path = match shown.as_str() {
        "stdin" => shown.clone(),
        _ => request.file.display().to_string(),
    };
    let in_file = |message: String| ImportError::Input(format!("{path}: {message}"));
    let bytes = input::read(&request.file).map_err(in_file)?;
    let ranges = provider.parse(&bytes).map_err(in_file)?;
    let selected = filter::select(&ranges, &request.filters).map_err(in_file)?;
    let prefixes = collapse::collapse(&selected);
    let text = render::list_file(
        &render::Header {
            command: command_line(request, &shown),
            source: format!("{shown}, {}", ranges.source),
            filters: &request.filters,
            selected: &selected,
            collapsed: &prefixes,
        },
        &name,
        &prefixes,
    );
    Ok(Imported {
        name,
        text,
        selected: selected.len(),
        collapsed: prefixes.len(),
    })
}

/// The file as the header and messages name it: its base name, so that the
/// output does not depend on where CI downloaded it.
fn display_name(file: &Path) -> String {
    if file == Path::new("-") {
        return "stdin".into();
    }
    file.file_name()
        .unwrap_or(file.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// The command that regenerates the list, for the header.
fn command_line(request: &Request, file: &str) -> String {
    let mut words = vec![
        "tollgate lists import".to_string(),
        request.provider.keyword().to_string(),
        shell_word(if request.file == Path::new("-") {
            "-"
        } else {
            file
        }),
    ];
    for region in &request.filters.regions {
        words.push(format!("--region {}", shell_word(region)));
    }
    for service in &request.filters.services {
        words.push(format!("--service {}", shell_word(service)));
    }
    if let Some(family) = request.filters.family {
        words.push(format!("--family {}", family.keyword()));
    }
    if let Some(name) = &request.name {
        words.push(format!("--name {}", shell_word(name)));
    }
    words.join(" ")
}

/// `word`, single-quoted if a shell would split or expand it.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:,+=@".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Deserialises a provider file: a syntax error says where, a structural
/// one what the file is not (`what`: "an AWS ip-ranges.json").
fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => format!("not {what}: {e}"),
        _ => format!("not valid JSON: {e}"),
    })
}

/// A published prefix, by the policy language's rules (a CIDR with no
/// host bits set, or a bare address; not IPv4-mapped IPv6), so that the
/// list written loads. `at` says where it is, for the error.
fn parse_prefix(text: &str, at: impl Fn() -> String) -> Result<IpNet, String> {
    crate::policy::parse_prefix(text).map_err(|message| format!("{}: {message}", at()))
}

#[cfg(test)]
mod tests;
