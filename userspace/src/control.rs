//! The control socket: `tollgate status` asks the running daemon over a
//! local unix socket (`control-socket` in the config) and gets JSON back.
//! One request per connection: the client sends `status\n`.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// What the daemon reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub started_at_unix: u64,
    /// How the dataplane was found at start: fresh, adopted or upgraded.
    pub dataplane_start: String,
    pub interfaces: Vec<InterfaceStatus>,
    pub policy: PolicyStatus,
    pub last_reload: Option<ReloadStatus>,
    /// The NTP server's state (absent when `ntp.listen` is empty).
    pub ntp: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct InterfaceStatus {
    pub interface: String,
    /// attached | missing (no such interface now) | refused (a link type
    /// Tollgate cannot parse) | failed (attaching failed) | pending (not
    /// looked up yet, only before the first attach).
    pub state: String,
    /// xdp-native | xdp-generic | tc, or null when not attached.
    pub mode: Option<String>,
    /// ethernet | ip: where the attached program parses from.
    pub link: Option<String>,
    /// fresh | kept | replaced: what attaching found.
    pub adoption: Option<String>,
    /// Why it is refused or failed.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PolicyStatus {
    pub dir: PathBuf,
    pub generation: u64,
    pub commit: Option<String>,
    pub groups: usize,
    pub rules: usize,
    pub installed_at_unix: u64,
    /// What the keyword `gateway` stands for in it.
    pub gateway: Vec<std::net::IpAddr>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReloadStatus {
    pub success: bool,
    pub at_unix: u64,
    pub duration_ms: f64,
    /// What triggered it: start, watch, sighup, addresses.
    pub trigger: String,
    /// The errors, in file:line:col form, when it failed.
    pub errors: Vec<String>,
    /// One-line change summary when it succeeded.
    pub summary: String,
}

/// Binds the control socket, replacing one a previous run left behind.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    tokio::net::UnixListener::bind(path)
        .with_context(|| format!("bind control socket {}", path.display()))
}

/// Fills in the parts of the status that change by themselves (NTP's).
pub type Refresh = Arc<dyn Fn(&mut Status) + Send + Sync>;

/// Answers status requests on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::UnixListener,
    status: Arc<RwLock<Status>>,
    refresh: Refresh,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("control socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = status.clone();
        let refresh = refresh.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let request = tokio::time::timeout(
                Duration::from_secs(5),
                BufReader::new(read).read_line(&mut line),
            )
            .await;
            let reply = match (request, line.trim()) {
                (Ok(Ok(_)), "status") => {
                    let mut s = status.read().expect("status lock").clone();
                    refresh(&mut s);
                    serde_json::to_string(&s).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
                }
                _ => "{\"error\":\"unknown request; send `status`\"}".to_string(),
            };
            let _ = write.write_all(reply.as_bytes()).await;
            let _ = write.write_all(b"\n").await;
        });
    }
}

/// Asks the daemon listening on `path` for its status.
pub fn query(path: &Path) -> Result<Status> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!(
            "connect to {} (is `tollgate run` running with this control-socket?)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"status\n")?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    let answer: serde_json::Value = serde_json::from_str(&line).context("parse status")?;
    // A refusal is `{"error": ...}` at the top; fields deeper down may
    // carry that name too.
    if answer.get("error").is_some() {
        bail!("daemon answered: {}", line.trim());
    }
    serde_json::from_value(answer).context("parse status")
}
