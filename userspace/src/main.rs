use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    cli::quiet_broken_pipe();
    match cli::Cli::try_parse() {
        Ok(cli) => cli.run(),
        Err(e) => cli::clap_failure(e),
    }
}
