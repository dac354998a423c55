//! `tollgate lists`: list files made from elsewhere (today, `import` from a
//! cloud provider's published ranges). Exit status: 0 written, 1 the input
//! is unreadable or malformed or a filter matches nothing, 2 usage.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Subcommand};
use tollgate::lists_import::{self, Family, Filters, ImportError, Provider, Request};

use super::usage_failure;

#[derive(Subcommand)]
pub enum ListsCommand {
    /// Write a list file from a cloud provider's published IP ranges.
    ///
    /// The prefixes of the selected regions and services, collapsed into
    /// the fewest covering the same addresses, under a header naming the
    /// source file, its date or version and the filters. Run it in CI to
    /// refresh the policy repository: the gateway needs no internet access
    /// and every change is reviewed in git.
    Import(ImportArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    /// The file's format: aws (ip-ranges.json), gcp (cloud.json), azure
    /// (Service Tags), oracle (public_ip_ranges.json), github (meta).
    #[arg(value_enum, value_name = "FORMAT")]
    format: Provider,
    /// The provider's file, plain or gzip; `-` reads standard input.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Keep this region's prefixes (repeatable; case-insensitive; `global`
    /// for Azure's global tags). Not for github, which has no regions.
    #[arg(long = "region", value_name = "R")]
    regions: Vec<String>,
    /// Keep this service's prefixes (repeatable; case-insensitive): AWS
    /// `service`, GCP `service`, Azure tag name or systemService, Oracle
    /// tag, GitHub key.
    #[arg(long = "service", value_name = "S")]
    services: Vec<String>,
    /// Keep one address family only.
    #[arg(long, value_enum, value_name = "FAMILY")]
    family: Option<Family>,
    /// The list's name (default: the format and the filter values,
    /// e.g. aws-ap-northeast-1-amazon).
    #[arg(long, value_name = "LIST")]
    name: Option<String>,
    /// Write the list file here (replaced atomically) instead of stdout.
    #[arg(long, short, value_name = "PATH")]
    output: Option<PathBuf>,
}

impl ListsCommand {
    pub fn run(self) -> ExitCode {
        match self {
            ListsCommand::Import(args) => import(args),
        }
    }
}

fn import(args: ImportArgs) -> ExitCode {
    let request = Request {
        provider: args.format,
        file: args.file,
        filters: Filters {
            regions: args.regions,
            services: args.services,
            family: args.family,
        },
        name: args.name,
    };
    let imported = match lists_import::import(&request) {
        Ok(imported) => imported,
        Err(ImportError::Usage(message)) => return usage_failure(&message),
        Err(ImportError::Input(message)) => {
            eprintln!("tollgate lists import: {message}");
            return ExitCode::FAILURE;
        }
    };
    let Some(output) = args.output else {
        print!("{}", imported.text);
        return ExitCode::SUCCESS;
    };
    match write_atomically(&output, &imported.text) {
        Ok(()) => {
            eprintln!(
                "{}: list {}, {} prefixes (collapsed from {})",
                output.display(),
                imported.name,
                imported.collapsed,
                imported.selected
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate lists import: {}: {e}", output.display());
            ExitCode::FAILURE
        }
    }
}

/// Writes beside `path` and renames over it, so a policy directory never
/// holds half a list (the daemon may be watching it). The temporary file,
/// `.NAME.tmp-PID`, is hidden from the policy loader (it reads `*.yaml`).
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::other("not a file name"));
    };
    let temp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    };
    let written = write();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// tollgate-lists(1): examples (command line, what it does).
pub const MAN_EXAMPLES: &[(&str, &str)] = &[
    (
        "curl -sSf https://ip-ranges.amazonaws.com/ip-ranges.json | tollgate lists import aws - --region ap-northeast-1 --service AMAZON --name aws-ap-northeast-1 --output policies/lists/aws-ap-northeast-1.yaml",
        "Refresh a policy repository's list of AWS Tokyo ranges (in CI; commit the diff for review).",
    ),
    (
        "tollgate lists import github meta.json --service hooks --service api",
        "Print a list github-hooks-api of GitHub's webhook and API ranges.",
    ),
];

/// tollgate-lists(1): exit statuses (status, meaning).
pub const MAN_EXIT_STATUSES: &[(&str, &str)] = &[
    ("0", "The list file was written."),
    (
        "1",
        "The input is unreadable or malformed, a filter value is not in the file, or the filters select nothing.",
    ),
    (
        "2",
        "Usage error: bad flags, an invalid --name, --region for github.",
    ),
];
