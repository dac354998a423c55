//! How the command line fails: usage errors (status 2) as clap prints them
//! or, with `--format json`, as JSON on stdout; and what a closed stdout
//! does to a command.

use std::process::ExitCode;

use clap::{CommandFactory, error::ErrorKind};

use super::Cli;

/// The exit status of usage errors (clap's own).
pub(super) const USAGE: u8 = 2;

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

pub(super) fn ignore_broken_pipe() {
    // SAFETY: as above; called before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// `--format json` (or `--format=json`) is on the command line: usage
/// errors are then JSON too.
pub(super) fn json_requested() -> bool {
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

/// Clap's usage error for `explain` (status 2), as [`clap_failure`] prints it.
pub(super) fn usage_error(message: &str) -> ExitCode {
    let mut cli = Cli::command();
    cli.build();
    let explain = cli
        .find_subcommand_mut("explain")
        .expect("explain is a subcommand");
    clap_failure(explain.error(ErrorKind::ArgumentConflict, message))
}

/// A usage error found after parsing (status 2): on stderr, or as JSON on
/// stdout when `--format json` was asked for.
pub(super) fn usage_failure(message: &str) -> ExitCode {
    if json_requested() {
        print_usage_json(message);
    } else {
        eprintln!("tollgate: {message}");
    }
    ExitCode::from(USAGE)
}
