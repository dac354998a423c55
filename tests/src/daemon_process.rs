//! Runs the real `tollgate run` binary inside a namespace, the way systemd
//! would: readiness comes through a `NOTIFY_SOCKET` this harness listens on.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use tollgate::{control::Status, netns::Namespace};

use super::PinDir;

pub struct Daemon {
    child: Option<Child>,
    pub root: PathBuf,
    pub config: PathBuf,
    pub policy_dir: PathBuf,
    pub control_socket: PathBuf,
    pub log: PathBuf,
    notify: UnixDatagram,
    pub pins: PinDir,
    namespace: String,
    extra_config: String,
    /// Extra arguments for `tollgate run`.
    pub args: Vec<String>,
    /// The `tollgate` binary to run: the one cargo built, unless changed.
    pub binary: PathBuf,
    /// Extra environment for `tollgate run`.
    pub env: Vec<(String, String)>,
    /// Every notify message received since the last spawn, in order.
    messages: Vec<String>,
}

impl Daemon {
    /// Writes a config (`extra` is appended YAML) and `policy` files into a
    /// fresh directory, and starts the daemon in `ns`.
    pub fn start(
        ns: &Namespace,
        tag: &str,
        interfaces: &[&str],
        extra: &str,
        policy: &[(&str, &str)],
    ) -> Daemon {
        let mut d = Daemon::prepare(ns, tag, interfaces, extra, policy);
        d.spawn();
        d
    }

    /// Like [`Daemon::start`] without starting it (set `args` first).
    pub fn prepare(
        ns: &Namespace,
        tag: &str,
        interfaces: &[&str],
        extra: &str,
        policy: &[(&str, &str)],
    ) -> Daemon {
        let root =
            std::env::temp_dir().join(format!("tollgate-daemon-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let policy_dir = root.join("policies");
        std::fs::create_dir_all(&policy_dir).unwrap();
        for (name, text) in policy {
            std::fs::write(policy_dir.join(name), text).unwrap();
        }
        let notify_path = root.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let d = Daemon {
            child: None,
            config: root.join("tollgate.yaml"),
            policy_dir,
            control_socket: root.join("control.sock"),
            log: root.join("daemon.log"),
            notify,
            pins: PinDir::new(tag),
            namespace: ns.name().to_string(),
            extra_config: extra.to_string(),
            args: Vec::new(),
            binary: crate::tollgate_binary(),
            env: Vec::new(),
            messages: Vec::new(),
            root,
        };
        let config = format!(
            "interfaces: [{}]\npolicy-dir: {}\npin-dir: {}\ncontrol-socket: {}\n{}",
            interfaces.join(", "),
            d.policy_dir.display(),
            d.pins.0.display(),
            d.control_socket.display(),
            d.extra_config
        );
        std::fs::write(&d.config, config).unwrap();
        d
    }

    /// Starts (again) the daemon process and waits for READY=1.
    pub fn spawn(&mut self) {
        self.launch(None);
    }

    /// Like [`Daemon::spawn`], with the binary run by `prefix` (a program
    /// and its arguments, e.g. `nsenter --net=… setpriv …`), which must put
    /// it in the namespace itself: `--netns` is not passed.
    pub fn spawn_under(&mut self, prefix: &[String]) {
        self.launch(Some(prefix));
    }

    fn launch(&mut self, prefix: Option<&[String]>) {
        // Forget what an earlier run said.
        let mut buf = [0u8; 512];
        self.notify.set_nonblocking(true).unwrap();
        while self.notify.recv(&mut buf).is_ok() {}
        self.notify.set_nonblocking(false).unwrap();
        self.messages.clear();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = match prefix {
            None => {
                let mut c = std::process::Command::new(&self.binary);
                c.args(["run", "--netns", &self.namespace]);
                c
            }
            Some(prefix) => {
                let mut c = std::process::Command::new(&prefix[0]);
                c.args(&prefix[1..]).arg(&self.binary).arg("run");
                c
            }
        };
        let child = command
            .arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .env("NOTIFY_SOCKET", self.root.join("notify.sock"))
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Generous: loading the programs runs the verifier, which takes
        // seconds on an idle machine and much longer on a loaded one.
        self.wait_notify("READY=1", Duration::from_secs(90));
    }

    /// Waits for the daemon to send `what` on the notify socket.
    pub fn wait_notify(&mut self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("daemon exited with {status}:\n{}", self.logs());
            }
            if let Ok(n) = self.notify.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = message.lines().any(|l| l == what);
                self.messages.push(message);
                if found {
                    return;
                }
            }
        }
        panic!(
            "no {what} from the daemon within {timeout:?}:\n{}",
            self.logs()
        );
    }

    /// Every notify message since the last spawn, after listening for
    /// `listen` more.
    pub fn notifications(&mut self, listen: Duration) -> Vec<String> {
        let deadline = Instant::now() + listen;
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            if let Ok(n) = self.notify.recv(&mut buf) {
                self.messages
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        self.messages.clone()
    }

    pub fn status(&self) -> Status {
        tollgate::control::query(&self.control_socket).unwrap()
    }

    /// Waits until the status satisfies `pred`.
    pub fn wait_status(&self, timeout: Duration, pred: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("status never matched; last: {s:#?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.logs().contains(needle) {
            if start.elapsed() > timeout {
                panic!("{needle:?} never logged:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our child's pid.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, signal) }, 0);
    }

    /// kill -9, as a crash would.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.child.take().unwrap().wait().unwrap();
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.take().unwrap().wait().unwrap()
    }

    pub fn write_policy(&self, name: &str, text: &str) {
        write_atomically(&self.policy_dir.join(name), text);
    }
}

/// Writes a file the way editors and deploy tools do: a temporary file
/// renamed over the target.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.logs());
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
