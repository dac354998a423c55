use anyhow::Result;
use clap::Parser;

mod cli;

fn main() -> Result<()> {
    cli::Cli::parse().run()
}
