//! `tollgate run`: the daemon, or with `--check-config` a check of its
//! configuration and policy that touches nothing in the kernel.

use std::{path::Path, process::ExitCode};

use tollgate::{
    addresses,
    config::Config,
    daemon::Daemon,
    diagnostic::Diagnostic,
    logging::{LogFormat, init_logging},
    policy::Environment,
    reload::{PrepareCache, prepare},
};

/// The log target of the daemon's last word (why it could not start or
/// run on): operators filter on targets, and this one is `tollgate::cli`.
const LOG_TARGET: &str = "tollgate::cli";

/// `tollgate run`: exit 1 on a bad configuration or a daemon failure.
pub(super) fn run(path: &Path, check: bool, log_format: LogFormat) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    if check {
        return match check_config(&config) {
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
    init_logging(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(target: LOG_TARGET, "start the async runtime: {e}");
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
            tracing::error!(target: LOG_TARGET, "{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `tollgate run --check-config`: the config and the policy it points to
/// are valid. Touches nothing in the kernel.
fn check_config(config: &Config) -> Result<(), Vec<Diagnostic>> {
    let host = tollgate::preflight::check(config).map_err(|e| {
        vec![Diagnostic::error(
            Path::new("configuration"),
            0,
            0,
            "",
            format!("{e:#}"),
        )]
    })?;
    for w in host {
        eprintln!("warning: {w}");
    }
    let env = Environment {
        gateway: addresses::current(&config.interfaces).unwrap_or_default(),
        ntp: config.ntp.addresses(),
    };
    let prepared = prepare(
        &config.policy_dir,
        &env,
        &config.limits,
        &mut PrepareCache::default(),
    )?;
    for w in &prepared.warnings {
        eprintln!("{w}");
    }
    Ok(())
}
