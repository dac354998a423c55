//! When a file's stat alone says its text is the one read before, so a
//! reload need not read it again. At fleet scale the policy directory is
//! tens of MB that a one-line edit leaves untouched but for one file;
//! reading and comparing all of it was a fifth of a reload.
//!
//! The stamp is what the kernel changes on every write: size, modification
//! and change times, and (device, inode). The change time (ctime) cannot
//! be set from user space, so tools that restore an old mtime (`rsync -t`,
//! `tar`) still change the stamp. What a stamp cannot see is a second write
//! of the same size within the same tick of the file system's clock as the
//! write it was taken after (git's "racy clean" entries). So, like git, a
//! stamp is trusted only when that tick is over: when the file's ctime is
//! [`SETTLED`] older than the moment its text was read. A file written
//! since has a later ctime, so its stamp differs.
//!
//! Left to the operator: a file system whose clock is not this machine's
//! (NFS with a skewed server) can make a fresh write look settled; and a
//! clock stepped back can repeat a ctime.

use std::{
    fs::Metadata,
    os::unix::fs::MetadataExt as _,
    time::{Duration, SystemTime},
};

/// How much older than the read a file's ctime must be for its stamp to be
/// trusted: far above any file system clock's tick (1–10 ms).
pub(super) const SETTLED: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Stamp {
    pub(super) fn of(meta: &Metadata) -> Stamp {
        Stamp {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp of a file read after `read_from`, if it may vouch for the
    /// text read.
    pub(super) fn settled(meta: &Metadata, read_from: SystemTime) -> Option<Stamp> {
        let changed = SystemTime::UNIX_EPOCH.checked_add(Duration::new(
            u64::try_from(meta.ctime()).ok()?,
            u32::try_from(meta.ctime_nsec()).ok()?,
        ))?;
        let settled = changed.checked_add(SETTLED)? <= read_from;
        settled.then(|| Stamp::of(meta))
    }
}
