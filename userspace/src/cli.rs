//! Command-line interface.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use tollgate::{
    config::{Config, DEFAULT_CONFIG_PATH},
    daemon::{self, Daemon, LogFormat},
};

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
    /// Run the daemon: attach the dataplane, keep the policy in force and
    /// reload it on change, serve metrics and NTP.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Validate the configuration and the policy it names, then exit.
        #[arg(long)]
        check_config: bool,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Run in this network namespace (`ip netns` name). Use this rather
        /// than `ip netns exec`, which remounts /sys and so hides the
        /// host's bpffs where pins must live.
        #[arg(long)]
        netns: Option<String>,
    },
    /// Ask the running daemon for its state.
    Status {
        /// The daemon's configuration (to find its control socket).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The control socket, overriding the configuration.
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Build a lab of network namespaces, attach the dataplane and show it counting.
    Lab,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

impl Cli {
    pub fn run(self) -> Result<ExitCode> {
        match self.command {
            Command::Run {
                config,
                check_config,
                log_format,
                netns,
            } => {
                if let Some(name) = &netns {
                    // Before any thread exists, so all of them inherit it.
                    tollgate::netns::enter_for_good(name)?;
                }
                run(&config, check_config, log_format)
            }
            Command::Status {
                config,
                socket,
                format,
            } => status(config, socket, format),
            Command::Lab => tollgate::lab::run().map(|()| ExitCode::SUCCESS),
        }
    }
}

fn run(path: &PathBuf, check: bool, log_format: LogFormat) -> Result<ExitCode> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if check {
        return Ok(match daemon::check_config(&config) {
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
        });
    }
    daemon::init_logging(log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    match runtime.block_on(Daemon::run(config)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!("{e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn status(config: Option<PathBuf>, socket: Option<PathBuf>, format: Format) -> Result<ExitCode> {
    let socket = match socket {
        Some(s) => s,
        None => daemon::control_socket_of(config.as_deref())?,
    };
    let s = tollgate::control::query(&socket)?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "tollgate {} (pid {}), dataplane {}",
        s.version, s.pid, s.dataplane_start
    );
    for i in &s.interfaces {
        println!(
            "  {}: {}",
            i.interface,
            i.mode.as_deref().unwrap_or("not attached")
        );
    }
    println!(
        "policy: generation {}, commit {}, {} groups, {} rules ({})",
        s.policy.generation,
        s.policy.commit.as_deref().unwrap_or("none"),
        s.policy.groups,
        s.policy.rules,
        s.policy.dir.display()
    );
    if let Some(r) = &s.last_reload {
        println!(
            "last reload: {} ({}), {:.1} ms, {}",
            if r.success { "ok" } else { "FAILED" },
            r.trigger,
            r.duration_ms,
            if r.success {
                r.summary.clone()
            } else {
                r.errors.join("; ")
            }
        );
    }
    if let Some(ntp) = &s.ntp {
        println!("ntp: {ntp}");
    }
    Ok(ExitCode::SUCCESS)
}
