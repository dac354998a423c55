//! `tollgate status`: ask the running daemon over its control socket.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use tollgate::config::Config;

use super::{Format, status_summary};

/// `tollgate status`.
pub(super) fn status(
    config: Option<PathBuf>,
    socket: Option<PathBuf>,
    format: Format,
) -> anyhow::Result<()> {
    let socket = match socket {
        Some(s) => s,
        None => control_socket_of(config.as_deref())?,
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

/// Where `tollgate status` finds the daemon: the configuration's control
/// socket, or the default one.
fn control_socket_of(config_path: Option<&Path>) -> anyhow::Result<PathBuf> {
    match config_path {
        Some(p) => Ok(Config::load(p).map_err(|d| anyhow!("{d}"))?.control_socket),
        None => Ok(tollgate::config::default_control_socket()),
    }
}
