//! chronyd as an NTP server in a namespace: `-x` (it never touches the
//! clock), `-d` (in the foreground, so the child is chronyd), no sources and
//! `local stratum N`, so it is always synchronised to its own clock, no
//! `ratelimit`, no command port; its files in a temporary directory. Killed
//! on drop.

use std::{
    net::SocketAddr,
    process::{Child, Stdio},
};

use anyhow::{Context as _, Result};
use tollgate::netns::Namespace;

pub struct ChronyServer {
    child: Child,
    _dir: tempfile::TempDir,
}

impl ChronyServer {
    /// Starts chronyd in `ns` serving `bind` at `stratum` to the clients in
    /// `allow` (chrony's `allow` syntax: an address or a prefix).
    pub fn start(ns: &Namespace, bind: SocketAddr, stratum: u8, allow: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "local stratum {stratum}\nallow {allow}\nbindaddress {}\nport {}\ncmdport 0\n\
                 pidfile {}\n",
                bind.ip(),
                bind.port(),
                dir.path().join("chronyd.pid").display()
            ),
        )?;
        let child = ns
            .command("chronyd")
            .args(["-x", "-d", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start chronyd")?;
        Ok(ChronyServer { child, _dir: dir })
    }

    /// chronyd's pid (`ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChronyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
