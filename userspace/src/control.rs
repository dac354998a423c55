//! The control socket: `tollgate status` and `tollgate explain --live` ask
//! the running daemon over a local unix socket (`control-socket` in the
//! config) and get JSON back. One request per connection: the client sends
//! `status\n` (a [`Status`]) or `learned\n` (every live [`Lease`]).

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
    /// Addresses the DNS forwarder learned for each group's FQDN rules that
    /// have not expired (absent when `dns.listen` is empty).
    #[serde(default)]
    pub learned_addresses: Option<std::collections::BTreeMap<String, u64>>,
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

/// One address the DNS forwarder learned for an FQDN rule of a group.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub group: String,
    pub address: std::net::IpAddr,
    pub rule_id: String,
    /// The name whose answer last taught or renewed it.
    pub name: String,
    /// When it expires (TTL, clamped, plus `dns.grace`), in seconds since
    /// the Unix epoch, and how many seconds that is from the answer.
    pub expires_at_unix: u64,
    pub expires_in_s: u64,
}

/// Now, in whole seconds since the Unix epoch: how [`Status`] gives times.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Connections answered at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// A request is one short line.
const MAX_REQUEST: u64 = 64;
/// How long a client may take to send its request and read the answer
/// (`tollgate status` needs a few milliseconds).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds the control socket, replacing a socket a previous run left behind
/// (never any other file). The socket is 0660: the daemon's user and its
/// group (`tollgate`; add operators to it) may ask, nobody else.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("remove the stale socket {}", path.display()))?,
        Ok(_) => bail!(
            "control-socket {} exists and is not a socket; not replacing it",
            path.display()
        ),
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("bind control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", path.display()))?;
    Ok(listener)
}

/// Fills in the parts of the status that change by themselves (NTP's).
pub type Refresh = Arc<dyn Fn(&mut Status) + Send + Sync>;

/// Every live learned address; `None` when the DNS forwarder is off.
pub type Leases = Arc<dyn Fn() -> Option<Vec<Lease>> + Send + Sync>;

/// Answers status requests on `listener` until the task is dropped. Only
/// read requests exist. At most [`MAX_CONNECTIONS`] clients are served at
/// once, each for at most [`CLIENT_TIMEOUT`], with a request of at most
/// [`MAX_REQUEST`] bytes: a slow or flooding client cannot starve the rest.
pub async fn serve(
    listener: tokio::net::UnixListener,
    status: Arc<RwLock<Status>>,
    refresh: Refresh,
    leases: Leases,
) {
    use tokio::io::AsyncReadExt as _;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Wait for a free slot first: excess clients queue in the backlog.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
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
        let leases = leases.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let exchange = async {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let request = BufReader::new(read.take(MAX_REQUEST))
                    .read_line(&mut line)
                    .await;
                let reply = match (request, line.trim()) {
                    (Ok(_), "status") => {
                        let mut s = status.read().expect("status lock").clone();
                        refresh(&mut s);
                        serde_json::to_string(&s)
                            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
                    }
                    (Ok(_), "learned") => match leases() {
                        Some(list) => serde_json::to_string(&list)
                            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
                        None => "{\"error\":\"the DNS forwarder is off (dns.listen is empty): \
                                 nothing is learned\"}"
                            .to_string(),
                    },
                    _ => "{\"error\":\"unknown request; send `status` or `learned`\"}".to_string(),
                };
                let _ = write.write_all(reply.as_bytes()).await;
                let _ = write.write_all(b"\n").await;
            };
            let _ = tokio::time::timeout(CLIENT_TIMEOUT, exchange).await;
        });
    }
}

/// Asks the daemon listening on `path` for its status.
pub fn query(path: &Path) -> Result<Status> {
    serde_json::from_value(ask(path, "status")?).context("parse status")
}

/// Asks the daemon listening on `path` for every live learned address.
pub fn query_leases(path: &Path) -> Result<Vec<Lease>> {
    serde_json::from_value(ask(path, "learned")?).context("parse learned addresses")
}

/// Sends `request` to the daemon on `path`; its JSON answer.
fn ask(path: &Path, request: &str) -> Result<serde_json::Value> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!(
            "connect to {} (is `tollgate run` running with this control-socket?)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    let answer: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("parse the answer to {request}"))?;
    // A refusal is `{"error": ...}` at the top; fields deeper down may
    // carry that name too.
    if let Some(error) = answer.get("error") {
        bail!("daemon answered: {}", error.as_str().unwrap_or(line.trim()));
    }
    Ok(answer)
}
