//! Command-line interface.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Egress policy and private NTP for IoT gateways"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a lab of network namespaces, attach the dataplane and show it counting.
    Lab,
}

impl Cli {
    pub fn run(self) -> Result<()> {
        match self.command {
            Command::Lab => tollgate::lab::run(),
        }
    }
}
