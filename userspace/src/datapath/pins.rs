//! The pin directory on bpffs: making sure bpffs is there, and removing
//! everything a run pinned.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// The log target of the dataplane, whichever file logs.
const LOG_TARGET: &str = "tollgate::datapath";

/// Removes everything a run pinned in `dir`: links (which detaches them),
/// programs and maps.
pub fn remove_pins(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        std::fs::remove_file(&path).with_context(|| format!("unpin {}", path.display()))?;
    }
    match std::fs::remove_dir(dir) {
        // A directory the system provides stays, empty: under the systemd
        // unit the controller runs as an unprivileged user that may not
        // write bpffs's root (tmpfiles.d creates the directory for it), and
        // ReadWritePaths= makes it a mount point (EBUSY). With every pin
        // gone, filtering has stopped either way.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EBUSY | libc::EROFS)
            ) =>
        {
            Ok(())
        }
        r => r.with_context(|| format!("remove {}", dir.display())),
    }
}

/// bpffs must be mounted where we pin. When it is not, mount it the way
/// systemd would — but only in the host's mount namespace: a bpffs mounted
/// in a private one (as under `ip netns exec`, which remounts /sys) dies
/// with this process, and pinned links with it.
pub(super) fn ensure_bpffs(dir: &Path) -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(root) {
        bail!("pin-dir {} is not under /sys/fs/bpf (bpffs)", dir.display());
    }
    let is_bpffs = || -> bool {
        let Ok(path) = std::ffi::CString::new("/sys/fs/bpf") else {
            return false;
        };
        // SAFETY: statfs writes into the zeroed struct we own.
        unsafe {
            let mut s: libc::statfs = std::mem::zeroed();
            libc::statfs(path.as_ptr(), &mut s) == 0 && s.f_type as i64 == BPF_FS_MAGIC
        }
    };
    if is_bpffs() {
        return Ok(());
    }
    let own = std::fs::read_link("/proc/self/ns/mnt").ok();
    let host = std::fs::read_link("/proc/1/ns/mnt").ok();
    if own.is_none() || own != host {
        bail!(
            "/sys/fs/bpf is not bpffs in this mount namespace, and a bpffs mounted here would \
             vanish with this process (taking the pinned links, i.e. filtering, with it). \
             Under `ip netns exec` (which remounts /sys), use `tollgate run --netns NAME` instead."
        );
    }
    tracing::info!(target: LOG_TARGET, "mounting bpffs at /sys/fs/bpf");
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .context("run mount")?;
    if !status.success() || !is_bpffs() {
        bail!("bpffs is not mounted at /sys/fs/bpf and mounting it failed");
    }
    Ok(())
}
