//! The lab's `tollgate run`: the real daemon, started from this binary in
//! the gateway namespace, its JSON log turned into the lab's live view.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

/// What the live view cares about in the daemon's log.
pub enum Notice {
    Ready,
    Installed,
    Rejected(String),
}

pub struct GatewayProcess {
    child: Child,
    pub notices: mpsc::Receiver<Notice>,
}

impl GatewayProcess {
    pub fn start(namespace: &str, config: &Path) -> Result<GatewayProcess> {
        let exe = std::env::current_exe().context("find the tollgate binary")?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "run",
            "--netns",
            namespace,
            "--log-format",
            "json",
            "--config",
        ])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // SAFETY: async-signal-safe calls only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // The daemon goes when the lab goes, even on kill -9.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut all);
                libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("start tollgate run")?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, notices) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(notice) = show(&line) {
                    let _ = tx.send(notice);
                }
            }
        });
        let daemon = GatewayProcess { child, notices };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match daemon.notices.recv_timeout(left) {
                Ok(Notice::Ready) => return Ok(daemon),
                Ok(Notice::Rejected(_)) | Err(_) => {
                    bail!("the daemon did not become ready (see its log above)")
                }
                Ok(Notice::Installed) => continue,
            }
        }
    }

    /// Waits for the next reload to finish.
    pub fn next_reload(&self, timeout: Duration) -> Result<()> {
        loop {
            match self.notices.recv_timeout(timeout) {
                Ok(Notice::Installed) => return Ok(()),
                Ok(Notice::Rejected(s)) => bail!("the reload failed: {s}"),
                Ok(Notice::Ready) => continue,
                Err(_) => bail!("no reload within {timeout:?}"),
            }
        }
    }

    /// Waits for the next reload to be refused, which it must be.
    pub fn next_refusal(&self, timeout: Duration) -> Result<()> {
        loop {
            match self.notices.recv_timeout(timeout) {
                Ok(Notice::Rejected(_)) => return Ok(()),
                Ok(Notice::Installed) => bail!("the reload installed what it had to refuse"),
                Ok(Notice::Ready) => continue,
                Err(_) => bail!("no reload within {timeout:?}"),
            }
        }
    }

    /// SIGTERM, and wait: with `on-exit: detach` the daemon removes its pins.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Prints the log lines worth seeing, compactly; returns what the lab
/// waits on.
fn show(line: &str) -> Option<Notice> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        println!("  daemon: {line}");
        return None;
    };
    let message = v["message"].as_str().unwrap_or_default();
    let field = |k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    if v["target"] == "tollgate::deny" {
        let proto = match field("proto").as_str() {
            "6" => "tcp".to_string(),
            "17" => "udp".to_string(),
            "1" => "icmp".to_string(),
            "58" => "icmpv6".to_string(),
            p => p.to_string(),
        };
        println!(
            "      event: {message:<10} {} {} -> {} {proto}/{} by {}/{} {}",
            field("group"),
            field("src"),
            field("dst"),
            field("port"),
            field("group"),
            field("rule"),
            field("at"),
        );
        return None;
    }
    let level = v["level"].as_str().unwrap_or_default();
    if message == "ready" {
        return Some(Notice::Ready);
    }
    if message.starts_with("policy generation") {
        println!("  daemon: {message}");
        return Some(Notice::Installed);
    }
    if message.starts_with("policy reload") && level == "ERROR" {
        println!("  daemon: {message}");
        return Some(Notice::Rejected(message.to_string()));
    }
    if level == "ERROR"
        || level == "WARN"
        || message.starts_with("attached")
        || message.starts_with("NTP")
    {
        println!("  daemon: {message}");
    }
    None
}
