//! Where the daemon's log goes: natively to journald under systemd, else
//! text or JSON lines on stderr.

/// How the daemon logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The log target of what `tollgate run` says about itself, wherever in
/// the code it is said: operators filter on it (`RUST_LOG`, the JSON
/// `target` field, journald's `TOLLGATETARGET=`), so it stays one name.
pub const DAEMON_TARGET: &str = "tollgate::daemon";

/// The prefix journald field names of events get: `group` becomes
/// `TOLLGATE_GROUP=`. (The library glues it to its own metadata fields
/// without the underscore: `TOLLGATETARGET=`, `TOLLGATECODE_FILE=`.)
pub const JOURNAL_FIELD_PREFIX: &str = "TOLLGATE";

/// Sets up logging, level from `RUST_LOG` (default `info`):
/// - under systemd (`$JOURNAL_STREAM` names our stderr: systemd connected
///   it to the journal) with the text format, natively to journald when
///   its socket answers: priorities from the levels
///   (error 3, warn 4, info 6, debug and trace 7), journald's own
///   timestamps, and every field as `TOLLGATE_<NAME>=`;
/// - else text on stderr, or one JSON object per line with `--log-format
///   json` (wherever it runs).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if format == LogFormat::Text
        && stderr_is_journal_stream()
        && let Ok(journald) = journald_layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .init();
        return;
    }
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Whether `$JOURNAL_STREAM` (`DEVICE:INODE`, set by systemd for a service
/// whose stderr goes to the journal) names our stderr, as systemd.exec(5)
/// recommends checking: a child whose stderr was redirected elsewhere
/// inherits the variable but should log where its stderr goes.
fn stderr_is_journal_stream() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat writes into the stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(libc::STDERR_FILENO, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// The journald layer, or why journald cannot be reached.
pub fn journald_layer() -> std::io::Result<tracing_journald::Layer> {
    use tracing_journald::{Priority, PriorityMappings};
    Ok(tracing_journald::layer()?
        .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.into()))
        .with_syslog_identifier("tollgate".into())
        .with_priority_mappings(PriorityMappings {
            error: Priority::Error,
            warn: Priority::Warning,
            info: Priority::Informational,
            debug: Priority::Debug,
            trace: Priority::Debug,
        }))
}
