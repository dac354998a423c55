//! Command-line interface.
//!
//! Exit codes of `check`, `test` and `explain`: 0 success (a valid policy;
//! for `test`, every case passes), 1 the policy is invalid or (`test`) a
//! case fails, every error on stderr as file:line:col, 2 the command could
//! not run as asked (bad flags, a missing directory, an unusable
//! `--config`), 3 (`check --strict` only) the policy is valid but has
//! warnings. With `--format json` on the command line, a usage error is the
//! JSON object `{"error": "...", "usage": true}` on stdout (exit 2 still).
//!
//! A closed stdout (`tollgate ... | head`) ends every command but `run` and
//! `lab` quietly, killed by SIGPIPE as other Unix tools are: see
//! [`quiet_broken_pipe`]; `usage` holds how the CLI fails.

mod check;
mod ci_formats;
mod diff;
mod explain;
mod lists;
mod man;
mod policy_source;
mod revision;
mod run;
mod status;
mod status_summary;
mod test;
mod usage;

pub use self::usage::{clap_failure, quiet_broken_pipe};
use self::usage::{ignore_broken_pipe, usage_error, usage_failure};

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use tollgate::{
    config::DEFAULT_CONFIG_PATH,
    logging::LogFormat,
    policy::{has_ports, parse_proto},
    tables::PacketFacts,
};

#[derive(Parser)]
#[command(
    name = "tollgate",
    // `0.1.0 (commit 1a2b3c4, bpf 0123456789abcdef)`: the git commit
    // (`-dirty` with uncommitted changes, `unknown` outside git) and the
    // hash of the embedded BPF object (userspace/build.rs).
    version = env!("TOLLGATE_VERSION"),
    about = "Egress policy and private NTP for IoT gateways"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: attach the dataplane, keep the policy in force and
    /// reload it on change, serve metrics and NTP.
    Run {
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Validate the configuration and the policy it names, then exit.
        #[arg(long)]
        check_config: bool,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Run in this network namespace (`ip netns` name). Use this rather
        /// than `ip netns exec`, which remounts /sys and so hides the
        /// host's bpffs where pins must live.
        #[arg(long, value_name = "NAME")]
        netns: Option<String>,
    },
    /// Validate and compile a policy directory (a pre-merge CI step).
    ///
    /// Without DIR, --policy or --config: the policy of
    /// /etc/tollgate/tollgate.yaml. Exit status: 0 valid, 1 invalid, 2 usage
    /// error, 3 warnings with --strict.
    Check {
        /// The policy directory (same as --policy).
        #[arg(value_name = "DIR", conflicts_with = "policy")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        source: PolicySource,
        /// Output format: text, json, github (workflow annotations) or sarif
        /// (SARIF 2.1.0).
        #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
        format: CheckFormat,
        /// Warnings fail the check too (exit 3).
        #[arg(long)]
        strict: bool,
        /// This host is not the gateway (a CI runner): do not read the
        /// --config interfaces' addresses here, nor note that they are
        /// missing.
        #[arg(long)]
        ci: bool,
    },
    /// Run the policy's `expect:` cases on the model: each packet must get
    /// the verdict (and rule) its case names.
    ///
    /// Without DIR, --policy or --config: the policy of
    /// /etc/tollgate/tollgate.yaml. Exit status: 0 every case passes, 1 a
    /// case fails or the policy is invalid, 2 usage error.
    Test {
        /// The policy directory (same as --policy).
        #[arg(value_name = "DIR", conflicts_with = "policy")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        source: PolicySource,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show how the policy decides one packet, and why.
    ///
    /// Without --policy or --config: the policy of /etc/tollgate/tollgate.yaml.
    Explain {
        #[command(flatten)]
        source: PolicySource,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Source address (a device). With --fqdn: only its group.
        #[arg(long, value_name = "IP", required_unless_present = "fqdn")]
        src: Option<IpAddr>,
        /// Destination address.
        #[arg(long, value_name = "IP", required_unless_present = "fqdn")]
        dst: Option<IpAddr>,
        /// What the policy says for a domain name instead of a packet: the
        /// FQDN rules of each group (or of --src's) that name it, whose
        /// answers the gateway's DNS forwarder learns.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["dst", "dport", "fragment"])]
        fqdn: Option<String>,
        /// IP protocol: tcp, udp, icmp, icmpv6 or a number 0-255.
        #[arg(long, value_name = "P", default_value = "tcp", value_parser = packet_proto)]
        proto: u8,
        /// Destination port (TCP and UDP). Without it the port is unknown.
        #[arg(long, value_name = "N")]
        dport: Option<u16>,
        /// The packet is a non-first fragment: its port is unknown.
        #[arg(long, conflicts_with = "dport")]
        fragment: bool,
        /// Also what the running gateway learned: ask its control socket
        /// (--socket, --config's control-socket, or the default) for the
        /// addresses its DNS forwarder learned, and show their expiries.
        #[arg(long)]
        live: bool,
        /// The control socket for --live (implies --live).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// What a policy change does to verdicts: per group, the destinations ×
    /// protocols × ports whose verdict changes, and the rules responsible.
    ///
    /// OLD and NEW are each a policy directory (an existing directory) or a
    /// git revision: `REV:DIR` (DIR from the repository's root, as git reads
    /// it) or `REV`, the --policy DIR (default `policies`) of the current
    /// directory at that revision. Exit status: 0 the diff was computed, 1 a
    /// side is invalid, 2 usage error, 3 verdicts change (--exit-code only).
    Diff {
        /// The policy before the change: a directory or a git revision.
        #[arg(value_name = "OLD")]
        old: String,
        /// The policy after the change: a directory or a git revision.
        #[arg(value_name = "NEW")]
        new: String,
        #[command(flatten)]
        source: PolicySource,
        /// Output format: text, json or github (workflow annotations).
        #[arg(long, value_enum, default_value_t = diff::DiffFormat::Text)]
        format: diff::DiffFormat,
        /// Show at most this many lines (changes in JSON); a count of the
        /// rest follows.
        #[arg(long, value_name = "N", default_value_t = 200)]
        max_lines: usize,
        /// Exit with status 3 when the change alters a verdict.
        #[arg(long)]
        exit_code: bool,
        /// This host is not the gateway (a CI runner): do not read the
        /// --config interfaces' addresses here.
        #[arg(long)]
        ci: bool,
    },
    /// Ask the running daemon for its state.
    Status {
        /// The daemon's configuration (to find its control socket).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The control socket, overriding the configuration.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run the whole appliance in network namespaces with the example
    /// policies: live traffic, deny events, NTP, a live policy edit.
    Lab {
        /// Tear down after this many seconds (default: wait for Ctrl-C).
        #[arg(long, value_name = "SECONDS")]
        duration: Option<u64>,
        /// The policy directory to run the lab with.
        #[arg(long, value_name = "DIR", default_value = "policies")]
        policy: PathBuf,
    },
    /// Make list files: `lists import` writes one from a cloud provider's
    /// published IP ranges (aws, gcp, azure, oracle, github).
    Lists {
        #[command(subcommand)]
        command: lists::ListsCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page tollgate(1) (roff) on stdout, or write all of
    /// them, tollgate(1) and one per subcommand, into a directory.
    Man {
        /// Write tollgate.1 and tollgate-SUBCOMMAND.1 for every subcommand
        /// into this directory (created if missing) instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Where the policy is and what `gateway` and `ntp` stand for.
#[derive(Args)]
struct PolicySource {
    /// The policy directory (default: `policy-dir` of --config).
    #[arg(long, value_name = "DIR")]
    policy: Option<PathBuf>,
    /// Controller config: its interfaces' addresses are `gateway`, its NTP
    /// listen addresses are `ntp`, and its limits apply. Default, when no
    /// policy directory is given either: /etc/tollgate/tollgate.yaml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// An address `gateway` stands for (repeatable; replaces --config's).
    #[arg(long = "gateway", value_name = "ADDR")]
    gateway: Vec<IpAddr>,
    /// An address `ntp` stands for (repeatable; replaces --config's).
    #[arg(long = "ntp", value_name = "ADDR")]
    ntp: Vec<IpAddr>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// `check`'s formats: `explain`'s and `status`'s, and two for CI systems.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CheckFormat {
    Text,
    Json,
    /// GitHub Actions workflow commands (`::error file=...::message`).
    Github,
    /// SARIF 2.1.0, for code scanning.
    Sarif,
}

/// The exit status of `check --strict` on a valid policy with warnings.
const STRICT_WARNINGS: u8 = 3;

fn packet_proto(text: &str) -> Result<u8, String> {
    parse_proto(text)?.ok_or_else(|| "a packet has one protocol, not `any`".to_string())
}

impl Cli {
    pub fn run(self) -> ExitCode {
        if matches!(self.command, Command::Run { .. } | Command::Lab { .. }) {
            ignore_broken_pipe();
        }
        match self.command {
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "tollgate",
                    &mut std::io::stdout(),
                );
                ExitCode::SUCCESS
            }
            Command::Man { dir } => {
                let written = match &dir {
                    Some(dir) => man::write_all(dir),
                    None => man::render(&man::command(), None, &mut std::io::stdout()),
                };
                match written {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("tollgate man: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Run {
                config,
                check_config,
                log_format,
                netns,
            } => {
                if let Some(name) = &netns
                    // Before any thread exists, so all of them inherit it.
                    && let Err(e) = tollgate::netns::enter_for_good(name)
                {
                    return usage_failure(&format!("--netns: {e:#}"));
                }
                run::run(&config, check_config, log_format)
            }
            Command::Status {
                config,
                socket,
                format,
            } => match status::status(config, socket, format) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tollgate status: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Command::Lists { command } => command.run(),
            Command::Lab { duration, policy } => {
                match tollgate::lab::run(&tollgate::lab::LabOptions {
                    policies: policy,
                    duration: duration.map(std::time::Duration::from_secs),
                }) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("tollgate lab: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Check {
                dir,
                source,
                format,
                strict,
                ci,
            } => match source.resolve(dir, ci) {
                Ok(ctx) => check::check(&ctx, format, strict),
                Err(message) => usage_failure(&message),
            },
            Command::Test {
                dir,
                source,
                format,
            } => match source.resolve(dir, false) {
                Ok(ctx) => test::test(&ctx, format),
                Err(message) => usage_failure(&message),
            },
            Command::Diff {
                old,
                new,
                source,
                format,
                max_lines,
                exit_code,
                ci,
            } => {
                let policy_dir = source
                    .policy
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("policies"));
                // The directories come from OLD and NEW; the source gives
                // `gateway`, `ntp` and the limits.
                match source.resolve(Some(PathBuf::from(".")), ci) {
                    Ok(ctx) => diff::diff(
                        &ctx,
                        &diff::DiffRequest {
                            old,
                            new,
                            policy_dir,
                            format,
                            max_lines,
                            exit_code,
                        },
                    ),
                    Err(message) => usage_failure(&message),
                }
            }
            Command::Explain {
                source,
                format,
                src,
                dst,
                proto,
                dport,
                fragment,
                fqdn,
                live,
                socket,
            } => {
                let ctx = match source.resolve(None, false) {
                    Ok(ctx) => ctx,
                    Err(message) => return usage_failure(&message),
                };
                let live = (live || socket.is_some())
                    .then(|| socket.unwrap_or_else(|| ctx.control_socket.clone()));
                if let Some(name) = fqdn {
                    return explain::explain_name(&ctx, format, &name, src, live.as_deref());
                }
                let (Some(src), Some(dst)) = (src, dst) else {
                    return usage_error("--src and --dst name the packet (or give --fqdn NAME)");
                };
                if src.is_ipv4() != dst.is_ipv4() {
                    return usage_error("--src and --dst must be of one family (IPv4 or IPv6)");
                }
                if dport.is_some() && !has_ports(proto) {
                    return usage_error(
                        "--dport needs --proto tcp or udp: other protocols carry no port",
                    );
                }
                let mut notes = Vec::new();
                if has_ports(proto) && dport.is_none() && !fragment {
                    notes.push(
                        "no --dport: the port is unknown, as for a non-first fragment".into(),
                    );
                }
                if fragment {
                    notes.push(
                        "a non-first fragment on its own, with no port; the dataplane passes \
                         the rest of a datagram whose first fragment it allowed"
                            .into(),
                    );
                }
                let packet = PacketFacts {
                    src,
                    dst,
                    proto,
                    dport: if fragment { None } else { dport },
                };
                explain::explain_packet(&ctx, format, &packet, notes, live.as_deref())
            }
        }
    }
}

fn print_notes(notes: &[String]) {
    for note in notes {
        eprintln!("note: {note}");
    }
}

fn plural(n: usize, word: &str) -> String {
    match (n, word) {
        (1, _) => format!("1 {word}"),
        (_, "device prefix") => format!("{n} device prefixes"),
        (_, "compiled entry") => format!("{n} compiled entries"),
        _ => format!("{n} {word}s"),
    }
}
