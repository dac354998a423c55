//! Command-line interface.
//!
//! Exit codes of `check` and `explain`: 0 success (a valid policy), 1 the
//! policy is invalid (every error on stderr as file:line:col), 2 the command
//! could not run as asked (bad flags, a missing directory, an unusable
//! `--config`), 3 (`check --strict` only) the policy is valid but has
//! warnings. With `--format json` on the command line, a usage error is the
//! JSON object `{"error": "...", "usage": true}` on stdout (exit 2 still).
//!
//! A closed stdout (`tollgate ... | head`) ends every command but `run` and
//! `lab` quietly, killed by SIGPIPE as other Unix tools are: see
//! [`quiet_broken_pipe`].

mod ci_formats;
mod lists;
mod status_summary;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum, error::ErrorKind};
use serde::Serialize;
use tollgate::{
    addresses,
    config::{Config, DEFAULT_CONFIG_PATH, Limits},
    daemon::{self, Daemon, LogFormat},
    diagnostic::Diagnostic,
    explain::explain,
    policy::{Environment, ParseCache, has_ports, parse_proto},
    reload::{Candidate, prepare},
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
    /// Show how the policy decides one packet, and why.
    ///
    /// Without --policy or --config: the policy of /etc/tollgate/tollgate.yaml.
    Explain {
        #[command(flatten)]
        source: PolicySource,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Source address (a device).
        #[arg(long, value_name = "IP")]
        src: IpAddr,
        /// Destination address.
        #[arg(long, value_name = "IP")]
        dst: IpAddr,
        /// IP protocol: tcp, udp, icmp, icmpv6 or a number 0-255.
        #[arg(long, value_name = "P", default_value = "tcp", value_parser = packet_proto)]
        proto: u8,
        /// Destination port (TCP and UDP). Without it the port is unknown.
        #[arg(long, value_name = "N")]
        dport: Option<u16>,
        /// The packet is a non-first fragment: its port is unknown.
        #[arg(long, conflicts_with = "dport")]
        fragment: bool,
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

/// The exit status of usage errors (clap's own).
const USAGE: u8 = 2;
/// The exit status of `check --strict` on a valid policy with warnings.
const STRICT_WARNINGS: u8 = 3;

/// Makes a write to a closed pipe end the process quietly, by SIGPIPE, as
/// it does for C tools: Rust ignores SIGPIPE, so `println!` would panic on
/// EPIPE instead. Called first thing in `main`; `run` and `lab` restore
/// the ignore ([`ignore_broken_pipe`]), a daemon must survive a peer that
/// goes away.
pub fn quiet_broken_pipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL has no
    // preconditions; no other thread exists yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn ignore_broken_pipe() {
    // SAFETY: as above; called before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// `--format json` (or `--format=json`) is on the command line: usage
/// errors are then JSON too.
fn json_requested() -> bool {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    args.iter().any(|a| a == "--format=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--format" && w[1] == "json")
}

/// Prints a usage error as `{"error": "...", "usage": true}` on stdout.
fn print_usage_json(message: &str) {
    let error = serde_json::json!({ "error": message, "usage": true });
    println!(
        "{}",
        serde_json::to_string_pretty(&error).expect("serialisable")
    );
}

/// Ends the process for a command line clap refused: help and version as
/// clap prints them; a usage error as JSON when `--format json` was asked
/// for, else as clap prints it. Exit status 2 for usage errors either way.
pub fn clap_failure(error: clap::Error) -> ExitCode {
    if !error.use_stderr() || !json_requested() {
        error.exit()
    }
    let rendered = error.render().to_string();
    // The message without clap's `error: ` and its usage paragraphs.
    let message = rendered
        .split("\n\n")
        .next()
        .unwrap_or(&rendered)
        .trim()
        .trim_start_matches("error: ");
    print_usage_json(message);
    ExitCode::from(USAGE)
}

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
                run(&config, check_config, log_format)
            }
            Command::Status {
                config,
                socket,
                format,
            } => match status(config, socket, format) {
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
                Ok(ctx) => check(&ctx, format, strict),
                Err(message) => usage_failure(&message),
            },
            Command::Explain {
                source,
                format,
                src,
                dst,
                proto,
                dport,
                fragment,
            } => {
                if src.is_ipv4() != dst.is_ipv4() {
                    return usage_error("--src and --dst must be of one family (IPv4 or IPv6)");
                }
                if dport.is_some() && !has_ports(proto) {
                    return usage_error(
                        "--dport needs --proto tcp or udp: other protocols carry no port",
                    );
                }
                let ctx = match source.resolve(None, false) {
                    Ok(ctx) => ctx,
                    Err(message) => return usage_failure(&message),
                };
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
                explain_packet(&ctx, format, &packet, notes)
            }
        }
    }
}

/// Manual pages: tollgate(1) and tollgate-SUBCOMMAND(1), from the clap
/// definition plus the EXAMPLES and EXIT STATUS written here.
mod man {
    use std::{io::Write, path::Path};

    use anyhow::Context as _;
    use clap::CommandFactory as _;
    use clap_mangen::{
        Man,
        roff::{Roff, bold, roman},
    };

    use super::Cli;

    /// The command as the pages describe it: without clap's `help`
    /// subcommand, which has no page.
    pub fn command() -> clap::Command {
        let mut cmd = Cli::command().disable_help_subcommand(true);
        cmd.build();
        cmd
    }

    /// A term and its explanation: (command line, what it does) or
    /// (exit status, meaning).
    type Entry = (&'static str, &'static str);

    /// Examples (command line, what it does) and exit statuses (status,
    /// meaning) of a page: `None` for tollgate(1) itself.
    fn extras(sub: Option<&str>) -> (&'static [Entry], &'static [Entry]) {
        const USAGE: (&str, &str) = ("2", "Usage error: unknown or conflicting options.");
        match sub {
            None => (
                &[
                    (
                        "tollgate --version",
                        "Print the version, the git commit it was built from and the hash of its BPF program.",
                    ),
                    (
                        "tollgate check /etc/tollgate/policies",
                        "Validate a policy directory before deploying it.",
                    ),
                    (
                        "systemctl enable --now tollgate",
                        "Run the controller under systemd (the package installs the unit, enabled by nobody).",
                    ),
                ],
                &[
                    ("0", "Success."),
                    ("1", "Failure; each subcommand's page says which."),
                    USAGE,
                ],
            ),
            Some("run") => (
                &[
                    (
                        "tollgate run --config /etc/tollgate/tollgate.yaml",
                        "Run the controller as tollgate.service does: attach the dataplane, enforce the policy, reload it on change, serve metrics and NTP.",
                    ),
                    (
                        "tollgate run --check-config --config /etc/tollgate/tollgate.yaml",
                        "Validate the configuration and the policy it names, then exit.",
                    ),
                ],
                &[
                    (
                        "0",
                        "Stopped cleanly (SIGTERM), or --check-config found everything valid.",
                    ),
                    (
                        "1",
                        "Invalid configuration or policy (each error as file:line:col), or the daemon failed.",
                    ),
                    ("2", "Usage error, or --netns names no usable namespace."),
                ],
            ),
            Some("check") => (
                &[
                    (
                        "tollgate check /etc/tollgate/policies",
                        "Validate and compile a policy directory; print a summary.",
                    ),
                    (
                        "tollgate check --config /etc/tollgate/tollgate.yaml --format json",
                        "The same for the configured policy directory, with `gateway` and `ntp` resolved from the configuration, as JSON.",
                    ),
                ],
                &[
                    ("0", "The policy is valid (warnings may be printed)."),
                    (
                        "1",
                        "The policy is invalid: every error on stderr as file:line:col.",
                    ),
                    (
                        "2",
                        "The command could not run as asked: bad flags, a missing directory, an unusable --config.",
                    ),
                ],
            ),
            Some("explain") => (
                &[(
                    "tollgate explain --config /etc/tollgate/tollgate.yaml --src 10.20.0.5 --dst 203.0.113.10 --proto tcp --dport 443",
                    "Show which group the device is in, which rule decides the packet and why.",
                )],
                &[
                    ("0", "The packet was explained."),
                    ("1", "The policy is invalid: nothing to explain."),
                    (
                        "2",
                        "The command could not run as asked: bad flags, mixed address families, a missing directory, an unusable --config.",
                    ),
                ],
            ),
            Some("status") => (
                &[
                    (
                        "sudo tollgate status",
                        "Ask the running daemon (over /run/tollgate/control.sock) for its interfaces, policy and last reload.",
                    ),
                    ("sudo tollgate status --format json", "The same as JSON."),
                ],
                &[
                    ("0", "The daemon answered."),
                    (
                        "1",
                        "No answer: the daemon is not running, or the socket is not accessible.",
                    ),
                    USAGE,
                ],
            ),
            Some("lab") => (
                &[(
                    "sudo tollgate lab --duration 60",
                    "Run the lab in network namespaces with the example policies for a minute, then tear it down.",
                )],
                &[
                    ("0", "The lab ran and was torn down."),
                    ("1", "The lab failed."),
                    USAGE,
                ],
            ),
            Some("completions") => (
                &[(
                    "tollgate completions bash > ~/.local/share/bash-completion/completions/tollgate",
                    "Install bash completion for one user (the package installs bash, zsh and fish completions system-wide).",
                )],
                &[
                    ("0", "The script was printed."),
                    ("2", "Usage error: an unknown shell."),
                ],
            ),
            Some("man") => (
                &[
                    ("tollgate man | man -l -", "Read tollgate(1)."),
                    (
                        "tollgate man --dir /usr/local/share/man/man1",
                        "Write tollgate(1) and every tollgate-SUBCOMMAND(1) page.",
                    ),
                ],
                &[
                    ("0", "The pages were written."),
                    ("1", "A page could not be written."),
                    USAGE,
                ],
            ),
            Some("lists") => (super::lists::MAN_EXAMPLES, super::lists::MAN_EXIT_STATUSES),
            Some(other) => unreachable!("no manual text for `{other}`: add it here"),
        }
    }

    /// Renders one page: `sub` is a subcommand of `top`, or `None` for
    /// tollgate(1).
    pub fn render(
        top: &clap::Command,
        sub: Option<&str>,
        out: &mut dyn Write,
    ) -> anyhow::Result<()> {
        let cmd = match sub {
            Some(name) => top
                .find_subcommand(name)
                .with_context(|| format!("no subcommand {name}"))?
                .clone(),
            None => top.clone(),
        };
        let man = Man::new(cmd)
            .source(format!("tollgate {}", env!("CARGO_PKG_VERSION")))
            .manual("Tollgate Manual");
        man.render_title(out)?;
        man.render_name_section(out)?;
        man.render_synopsis_section(out)?;
        man.render_description_section(out)?;
        man.render_options_section(out)?;
        if sub.is_none() {
            man.render_subcommands_section(out)?;
        }
        let (examples, statuses) = extras(sub);
        let mut roff = Roff::new();
        roff.control("SH", ["EXAMPLES"]);
        for (line, what) in examples {
            roff.control("PP", []).text([roman(*what)]);
            roff.control("RS", ["4"]).control("nf", []);
            roff.text([bold(*line)]);
            roff.control("fi", []).control("RE", []);
        }
        roff.control("SH", ["EXIT STATUS"]);
        for (status, what) in statuses {
            roff.control("TP", [])
                .text([bold(*status)])
                .text([roman(*what)]);
        }
        roff.control("SH", ["SEE ALSO"]);
        let see_also: Vec<String> = match sub {
            None => top
                .get_subcommands()
                .map(|s| format!("tollgate-{}(1)", s.get_name()))
                .collect(),
            Some(_) => vec!["tollgate(1)".into()],
        };
        let see_also = see_also.join(", ");
        roff.text([roman(format!(
            "{see_also}. The user's manual and docs/operations.md in Tollgate's sources; \
             /usr/share/doc/tollgate/examples for example policies."
        ))]);
        roff.to_writer(out)?;
        if sub.is_none() {
            man.render_version_section(out)?;
        }
        Ok(())
    }

    /// Writes tollgate.1 and tollgate-SUBCOMMAND.1 for every subcommand.
    pub fn write_all(dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let top = command();
        let pages = std::iter::once(None).chain(top.get_subcommands().map(|s| Some(s.get_name())));
        for sub in pages {
            let name = sub.map_or("tollgate".into(), |s| format!("tollgate-{s}"));
            let path = dir.join(format!("{name}.1"));
            let mut page = Vec::new();
            render(&top, sub, &mut page)?;
            std::fs::write(&path, page).with_context(|| format!("write {}", path.display()))?;
        }
        Ok(())
    }
}

/// Clap's usage error for `explain` (status 2), as [`clap_failure`] prints it.
fn usage_error(message: &str) -> ExitCode {
    let mut cli = Cli::command();
    cli.build();
    let explain = cli
        .find_subcommand_mut("explain")
        .expect("explain is a subcommand");
    clap_failure(explain.error(ErrorKind::ArgumentConflict, message))
}

/// A usage error found after parsing (status 2): on stderr, or as JSON on
/// stdout when `--format json` was asked for.
fn usage_failure(message: &str) -> ExitCode {
    if json_requested() {
        print_usage_json(message);
    } else {
        eprintln!("tollgate: {message}");
    }
    ExitCode::from(USAGE)
}

/// What a command needs besides its own flags.
struct Context {
    dir: PathBuf,
    env: Environment,
    limits: Limits,
    /// Said before the results: what `gateway` and `ntp` resolved from.
    notes: Vec<String>,
}

impl PolicySource {
    /// `ci`: this host is not the gateway; its interfaces say nothing.
    fn resolve(mut self, dir: Option<PathBuf>, ci: bool) -> Result<Context, String> {
        if dir.is_none() && self.policy.is_none() && self.config.is_none() {
            let default = Path::new(DEFAULT_CONFIG_PATH);
            if !default.exists() {
                return Err(format!(
                    "no policy to read: give the policy directory (DIR or --policy DIR) or \
                     the controller config (--config FILE); the default config \
                     {DEFAULT_CONFIG_PATH} does not exist"
                ));
            }
            self.config = Some(default.to_path_buf());
        }
        let config = match &self.config {
            Some(path) => Some(Config::load(path).map_err(|d| format!("--config: {d}"))?),
            None => None,
        };
        let dir = dir
            .or(self.policy)
            .or_else(|| config.as_ref().map(|c| c.policy_dir.clone()))
            .expect("a directory or a config, given or the default");
        if !dir.is_dir() {
            return Err(format!("{}: not a directory", dir.display()));
        }
        let from_config = self.config.as_deref().zip(config.as_ref());
        let mut notes = Vec::new();
        let gateway = match from_config {
            _ if !self.gateway.is_empty() => self.gateway,
            Some(_) if ci => Vec::new(),
            Some((path, config)) => gateway_of(path, config, &mut notes),
            None => {
                notes.push(
                    "`gateway` resolves to nothing: give --gateway ADDR or --config FILE".into(),
                );
                Vec::new()
            }
        };
        let ntp = match from_config {
            _ if !self.ntp.is_empty() => self.ntp,
            Some((path, config)) => {
                let ntp = config.ntp.addresses();
                if ntp.is_empty() {
                    notes.push(format!(
                        "`ntp` resolves to nothing: {} sets no ntp.listen address \
                         (no built-in NTP allow)",
                        path.display()
                    ));
                }
                ntp
            }
            None => {
                notes.push(
                    "`ntp` resolves to nothing (no built-in NTP allow): give --ntp ADDR or \
                     --config FILE"
                        .into(),
                );
                Vec::new()
            }
        };
        Ok(Context {
            dir,
            env: Environment { gateway, ntp },
            limits: config.map_or_else(Limits::default, |c| c.limits),
            notes,
        })
    }
}

/// The current addresses of the config's device-facing interfaces, noting
/// those this host does not have. When it has none of them, it is not the
/// gateway (a CI runner, a laptop): nothing is noted.
fn gateway_of(path: &Path, config: &Config, notes: &mut Vec<String>) -> Vec<IpAddr> {
    let found: Vec<_> = config
        .interfaces
        .iter()
        .map(|name| (name, addresses::of_interface(name)))
        .collect();
    if found.iter().all(|(_, f)| matches!(f, Ok(None))) {
        return Vec::new();
    }
    let mut addresses = Vec::new();
    for (name, found) in found {
        match found {
            Ok(Some(found)) => addresses.extend(found),
            Ok(None) => notes.push(format!(
                "interface {name} (from {}) does not exist on this host: `gateway` has no \
                 addresses from it (give --gateway ADDR)",
                path.display()
            )),
            Err(e) => notes.push(format!("interface {name}: {e:#}")),
        }
    }
    addresses
}

/// Loads and compiles; `Err` holds every error and warning.
fn build(ctx: &Context) -> Result<Candidate, Vec<Diagnostic>> {
    prepare(&ctx.dir, &ctx.env, &ctx.limits, &mut ParseCache::default())
}

/// `check --format json`.
#[derive(Serialize)]
struct CheckReport<'a> {
    valid: bool,
    errors: Vec<&'a Diagnostic>,
    warnings: Vec<&'a Diagnostic>,
    notes: &'a [String],
    summary: Option<Summary>,
}

#[derive(Serialize)]
struct Summary {
    groups: usize,
    device_prefixes: usize,
    rules: usize,
    /// Rule entries over all (group, destination prefix) pairs, inherited
    /// ones included: the policy as the kernel matches it.
    compiled_entries: usize,
    /// (group, destination prefix) entries.
    destinations: usize,
    /// Distinct rule sets, and the entries they hold (what kernel memory
    /// holds, identical rule sets being shared).
    rulesets: usize,
    ruleset_entries: usize,
    counters: usize,
    warnings: usize,
}

fn check(ctx: &Context, format: CheckFormat, strict: bool) -> ExitCode {
    let outcome = build(ctx);
    let (diagnostics, summary) = match &outcome {
        Ok(Candidate {
            policy,
            tables,
            warnings,
            ..
        }) => (
            warnings,
            Some(Summary {
                groups: policy.groups.len(),
                device_prefixes: policy.device_count(),
                rules: policy.rule_count(),
                compiled_entries: tables
                    .destinations
                    .iter()
                    .map(|d| tables.rulesets[d.ruleset as usize].len())
                    .sum(),
                destinations: tables.destinations.len(),
                rulesets: tables.rulesets.len(),
                ruleset_entries: tables.rulesets.iter().map(Vec::len).sum(),
                counters: tables.counters.len(),
                warnings: warnings.len(),
            }),
        ),
        Err(diagnostics) => (diagnostics, None),
    };
    let (errors, warnings): (Vec<&Diagnostic>, Vec<&Diagnostic>) =
        diagnostics.iter().partition(|d| d.is_error());
    let dir = ctx.dir.display();
    let valid = summary.is_some();
    let warning_count = warnings.len();
    match format {
        CheckFormat::Json => {
            let report = CheckReport {
                valid,
                errors,
                warnings,
                notes: &ctx.notes,
                summary,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serialisable")
            );
        }
        CheckFormat::Github => {
            print!("{}", ci_formats::github(diagnostics, &ctx.notes));
            print_summary(ctx, summary.as_ref(), errors.len(), warnings.len());
        }
        CheckFormat::Sarif => {
            let sarif = ci_formats::Sarif::new(diagnostics);
            println!(
                "{}",
                serde_json::to_string_pretty(&sarif).expect("serialisable")
            );
        }
        CheckFormat::Text => {
            print_notes(&ctx.notes);
            for d in diagnostics {
                eprintln!("{d}");
            }
            print_summary(ctx, summary.as_ref(), errors.len(), warnings.len());
        }
    }
    if !valid {
        ExitCode::FAILURE
    } else if strict && warning_count > 0 {
        if matches!(format, CheckFormat::Text | CheckFormat::Github) {
            eprintln!(
                "{dir}: failed under --strict: {}",
                plural(warning_count, "warning")
            );
        }
        ExitCode::from(STRICT_WARNINGS)
    } else {
        ExitCode::SUCCESS
    }
}

/// The last line of `check`'s text output: on stdout when valid.
fn print_summary(ctx: &Context, summary: Option<&Summary>, errors: usize, warnings: usize) {
    let dir = ctx.dir.display();
    match summary {
        Some(s) => println!(
            "{dir}: ok: {}, {}, {}, {}, {}",
            plural(s.groups, "group"),
            plural(s.device_prefixes, "device prefix"),
            plural(s.rules, "rule"),
            plural(s.compiled_entries, "compiled entry"),
            plural(s.warnings, "warning"),
        ),
        None => eprintln!(
            "{dir}: invalid: {}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        ),
    }
}

fn explain_packet(
    ctx: &Context,
    format: Format,
    packet: &PacketFacts,
    mut notes: Vec<String>,
) -> ExitCode {
    let Candidate {
        policy,
        tables,
        warnings,
        ..
    } = match build(ctx) {
        Ok(built) => built,
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            eprintln!("{}: invalid policy, nothing to explain", ctx.dir.display());
            return ExitCode::FAILURE;
        }
    };
    notes.splice(0..0, ctx.notes.iter().cloned());
    let explanation = explain(&policy, &tables, packet);
    match format {
        Format::Json => {
            #[derive(Serialize)]
            struct Report<'a> {
                #[serde(flatten)]
                explanation: &'a tollgate::explain::Explanation,
                notes: &'a [String],
                warnings: &'a [Diagnostic],
            }
            let report = Report {
                explanation: &explanation,
                notes: &notes,
                warnings: &warnings,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serialisable")
            );
        }
        Format::Text => {
            if !warnings.is_empty() {
                notes.push(format!(
                    "the policy has {}; `tollgate check` lists them",
                    plural(warnings.len(), "warning")
                ));
            }
            print_notes(&notes);
            print!("{}", explanation.render());
        }
    }
    ExitCode::SUCCESS
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

/// `tollgate run`: exit 1 on a bad configuration or a daemon failure.
fn run(path: &Path, check: bool, log_format: LogFormat) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    if check {
        return match daemon::check_config(&config) {
            Ok(()) => {
                println!(
                    "{}: ok (policy {} valid)",
                    path.display(),
                    config.policy_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(diags) => {
                for d in diags {
                    eprintln!("{d}");
                }
                ExitCode::FAILURE
            }
        };
    }
    daemon::init_logging(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(Daemon::run(config));
    // A policy preparation abandoned past its budget may still be running
    // on a blocking thread: do not wait for it to exit.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `tollgate status`.
fn status(config: Option<PathBuf>, socket: Option<PathBuf>, format: Format) -> anyhow::Result<()> {
    let socket = match socket {
        Some(s) => s,
        None => daemon::control_socket_of(config.as_deref())?,
    };
    let s = tollgate::control::query(&socket)?;
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).context("encode status")?
        );
        return Ok(());
    }
    print!(
        "{}",
        status_summary::render(&s, std::time::SystemTime::now())
    );
    Ok(())
}
