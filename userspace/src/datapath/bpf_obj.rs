//! Two `bpf()` commands aya 0.14 does not offer the way the controller
//! needs them: opening a pinned object (`BPF_OBJ_GET`) and reading an
//! object's info through its own fd (`BPF_OBJ_GET_INFO_BY_FD`). aya's
//! `LinkInfo` hides a link's interface index, and its
//! `ProgramInfo::map_ids` reopens programs by id, which needs
//! CAP_SYS_ADMIN; the controller runs without it.

use std::{
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
};

use anyhow::{Result, bail};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// Opens the object (program, map or link) pinned at `path`.
pub fn open_pinned(path: &Path) -> Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags.
    let mut attr = [0u64; 4];
    attr[0] = c_path.as_ptr() as u64;
    // SAFETY: the bpf syscall reads `attr` (and the path it points to),
    // both alive for the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, attr.as_mut_ptr(), 32) };
    if fd < 0 {
        bail!(
            "open pinned {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: a fresh fd returned by the kernel, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Fills `info` (the head of a `struct bpf_*_info`, `repr(C)`) for the
/// object behind `fd`; the kernel writes at most `size_of::<T>()` bytes.
///
/// # Safety
/// `T` must be a `repr(C)` prefix of the info struct of `fd`'s object kind,
/// and any pointer fields in it (e.g. `map_ids`) must point at buffers as
/// large as the counts next to them say.
pub unsafe fn object_info<T>(fd: BorrowedFd<'_>, info: &mut T) -> Result<()> {
    // union bpf_attr for BPF_OBJ_GET_INFO_BY_FD: bpf_fd, info_len, info.
    let mut attr = [0u64; 2];
    attr[0] = u64::from(fd.as_raw_fd() as u32) | ((std::mem::size_of::<T>() as u64) << 32);
    attr[1] = std::ptr::from_mut(info) as u64;
    // SAFETY: the caller guarantees `T` and its pointers; the kernel writes
    // at most info_len bytes into `info`.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, attr.as_mut_ptr(), 16) };
    if rc < 0 {
        bail!("object info: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
