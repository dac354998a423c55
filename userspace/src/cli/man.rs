//! Manual pages: tollgate(1), tollgate-SUBCOMMAND(1) and, for commands
//! with commands of their own, tollgate-SUBCOMMAND-NESTED(1), from the clap
//! definition plus the EXAMPLES and EXIT STATUS written here.

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
/// meaning) of a page, named by its command path without `tollgate`:
/// `None` for tollgate(1) itself.
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
        Some("test") => (
            &[
                (
                    "tollgate test /etc/tollgate/policies",
                    "Run the policy's expect: cases on the model; print how many passed.",
                ),
                (
                    "tollgate test --config /etc/tollgate/tollgate.yaml --format json",
                    "The same for the configured policy directory, with `gateway` and `ntp` resolved from the configuration, as JSON.",
                ),
            ],
            &[
                ("0", "The policy is valid and every case passed."),
                (
                    "1",
                    "A case failed, or the policy is invalid: each on stderr as file:line:col.",
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
        Some("lists" | "lists import") => {
            (super::lists::MAN_EXAMPLES, super::lists::MAN_EXIT_STATUSES)
        }
        Some("diff") => (super::diff::MAN_EXAMPLES, super::diff::MAN_EXIT_STATUSES),
        Some(other) => unreachable!("no manual text for `{other}`: add it here"),
    }
}

/// Renders one page: `sub` is a command path below `top` ("diff",
/// "lists import"), or `None` for tollgate(1).
pub fn render(top: &clap::Command, sub: Option<&str>, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut cmd = top.clone();
    for name in sub.into_iter().flat_map(str::split_whitespace) {
        cmd = cmd
            .find_subcommand(name)
            .with_context(|| format!("no subcommand {name}"))?
            .clone();
    }
    let nested: Vec<String> = cmd
        .get_subcommands()
        .map(|s| {
            page_name(Some(&format!(
                "{} {}",
                sub.unwrap_or_default(),
                s.get_name()
            )))
        })
        .collect();
    let man = Man::new(cmd)
        .source(format!("tollgate {}", env!("CARGO_PKG_VERSION")))
        .manual("Tollgate Manual");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    if !nested.is_empty() {
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
    let parent = match sub.and_then(|s| s.rsplit_once(' ')) {
        Some((parent, _)) => page_name(Some(parent)),
        None if sub.is_some() => page_name(None),
        None => String::new(),
    };
    let see_also: Vec<String> = std::iter::once(parent)
        .chain(nested)
        .filter(|page| !page.is_empty())
        .map(|page| format!("{page}(1)"))
        .collect();
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

/// The page of a command path: `tollgate`, `tollgate-diff`,
/// `tollgate-lists-import`.
fn page_name(sub: Option<&str>) -> String {
    std::iter::once("tollgate")
        .chain(sub.into_iter().flat_map(str::split_whitespace))
        .collect::<Vec<_>>()
        .join("-")
}

/// Writes tollgate.1, tollgate-SUBCOMMAND.1 for every subcommand and
/// tollgate-SUBCOMMAND-NESTED.1 for every command below one.
pub fn write_all(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let top = command();
    let mut paths = vec![None];
    for sub in top.get_subcommands() {
        paths.push(Some(sub.get_name().to_string()));
        paths.extend(
            sub.get_subcommands()
                .map(|nested| Some(format!("{} {}", sub.get_name(), nested.get_name()))),
        );
    }
    for sub in paths {
        let path = dir.join(format!("{}.1", page_name(sub.as_deref())));
        let mut page = Vec::new();
        render(&top, sub.as_deref(), &mut page)?;
        std::fs::write(&path, page).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
