//! The few `bpf(2)` commands the floor program and xdp-filter need, on
//! file descriptors Tollgate's loader does not own.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use anyhow::{Context as _, Result};

/// The program types loaded here: XDP, and TC's SCHED_CLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgType {
    Xdp,
    SchedCls,
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `union bpf_attr` is at most this big for the commands used here;
/// the kernel zero-fills what we do not pass.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, offset: usize, v: u32) -> &mut Self {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, offset: usize, v: u64) -> &mut Self {
        self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, offset: usize) -> u32 {
        u32::from_ne_bytes(self.0[offset..offset + 4].try_into().expect("4 bytes"))
    }
}

fn sys_bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid, writable bpf_attr of the size passed;
    // every pointer in it points into memory the caller keeps alive.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us alone.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

pub fn prog_load(kind: ProgType, insns: &[u8], name: &str) -> Result<OwnedFd> {
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    let license = c"GPL";
    let mut attr = Attr::new();
    attr.u32(
        0,
        match kind {
            ProgType::Xdp => BPF_PROG_TYPE_XDP,
            ProgType::SchedCls => BPF_PROG_TYPE_SCHED_CLS,
        },
    )
    .u32(4, (insns.len() / 8) as u32)
    .u64(8, insns.as_ptr() as u64)
    .u64(16, license.as_ptr() as u64);
    let name = name.as_bytes();
    attr.0[48..48 + name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
    Ok(owned(
        sys_bpf(BPF_PROG_LOAD, &mut attr).context("BPF_PROG_LOAD")?,
    ))
}

/// A new `BPF_MAP_TYPE_HASH` map of `max_entries` keys of `key_size`
/// bytes to values of `value_size`, elements preallocated (the kernel's
/// default, as xdp-filter's maps have it).
pub fn hash_create(
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> Result<OwnedFd> {
    const BPF_MAP_TYPE_HASH: u32 = 1;
    map_create(BPF_MAP_TYPE_HASH, key_size, value_size, max_entries, name)
}

/// A new `BPF_MAP_TYPE_ARRAY` of `max_entries` zeroed values of
/// `value_size` bytes.
pub fn array_create(value_size: u32, max_entries: u32, name: &str) -> Result<OwnedFd> {
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    map_create(BPF_MAP_TYPE_ARRAY, 4, value_size, max_entries, name)
}

fn map_create(
    kind: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, kind)
        .u32(4, key_size)
        .u32(8, value_size)
        .u32(12, max_entries);
    // map_name[16] at offset 28.
    let name = name.as_bytes();
    attr.0[28..28 + name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
    Ok(owned(
        sys_bpf(BPF_MAP_CREATE, &mut attr).context("BPF_MAP_CREATE")?,
    ))
}

pub fn prog_fd_by_id(id: u32) -> Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, id);
    Ok(owned(
        sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)
            .with_context(|| format!("BPF_PROG_GET_FD_BY_ID {id}"))?,
    ))
}

/// Any valid descriptor, to hold a place until the real one is known.
pub fn placeholder_fd() -> Result<OwnedFd> {
    Ok(std::fs::File::open("/dev/null")?.into())
}

pub fn obj_get(path: &Path) -> Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut attr = Attr::new();
    attr.u64(0, c.as_ptr() as u64);
    Ok(owned(
        sys_bpf(BPF_OBJ_GET, &mut attr).with_context(|| format!("open {}", path.display()))?,
    ))
}

pub fn map_lookup(map: &OwnedFd, key: &[u8], value_len: usize) -> Result<Vec<u8>> {
    let mut value = vec![0u8; value_len];
    let mut attr = Attr::new();
    attr.u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value.as_mut_ptr() as u64);
    sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).context("BPF_MAP_LOOKUP_ELEM")?;
    Ok(value)
}

pub fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> Result<()> {
    let mut attr = Attr::new();
    attr.u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value.as_ptr() as u64);
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).context("BPF_MAP_UPDATE_ELEM")?;
    Ok(())
}

/// `BPF_PROG_TEST_RUN` of `frame`, `repeat` times: the return code and
/// the kernel's mean duration of one run in ns.
pub fn test_run(prog: &OwnedFd, frame: &[u8], repeat: u32) -> Result<(u32, u64)> {
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd() as u32)
        .u32(8, frame.len() as u32)
        .u64(16, frame.as_ptr() as u64)
        .u32(32, repeat);
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
    Ok((attr.get_u32(4), u64::from(attr.get_u32(36))))
}

/// `BPF_OBJ_GET_INFO_BY_FD`: the kernel fills `info` (a `bpf_map_info` or
/// `bpf_prog_info`, as long as the caller reads) and follows its pointers.
fn obj_info(fd: i32, info: &mut [u8]) -> std::io::Result<i64> {
    let mut attr = Attr::new();
    attr.u32(0, fd as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64);
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)
}

/// The name and the number of entries of the BPF map `fd`.
pub fn map_info(fd: i32) -> Option<(String, u32)> {
    // struct bpf_map_info: type, id, key_size, value_size, max_entries,
    // map_flags, then name[16] at offset 24.
    let mut info = [0u8; 40];
    obj_info(fd, &mut info).ok()?;
    let max_entries = u32::from_ne_bytes(info[16..20].try_into().expect("4 bytes"));
    let name = &info[24..40];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some((
        String::from_utf8_lossy(&name[..end]).into_owned(),
        max_entries,
    ))
}

/// This process's file descriptors of one kind of BPF object: those whose
/// link in `/proc/self/fd` reads `kind` (`anon_inode:bpf-map`,
/// `anon_inode:bpf-prog`).
pub fn own_fds(kind: &str) -> Result<Vec<i32>> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(entry.path()).is_ok_and(|target| target.as_os_str() == kind) {
            fds.push(fd);
        }
    }
    Ok(fds)
}

/// The number of possible CPUs: the length of a per-CPU map value.
pub fn possible_cpus() -> Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for range in text.trim().split(',') {
        n += match range.split_once('-') {
            Some((a, b)) => b.parse::<usize>()? - a.parse::<usize>()? + 1,
            None => 1,
        };
    }
    Ok(n)
}

/// What the JIT made of program `fd`: its machine code (every function's,
/// one after the other), each function's kernel address and its length in
/// bytes. The image `bpftool prog dump jited` disassembles, read the same
/// way (`BPF_OBJ_GET_INFO_BY_FD`, twice: the sizes, then the contents).
pub fn prog_jited(fd: i32) -> Result<(Vec<u8>, Vec<u64>, Vec<u32>)> {
    // struct bpf_prog_info up to jited_func_lens: jited_prog_len at 16,
    // jited_prog_insns at 24, nr_jited_ksyms at 104, nr_jited_func_lens at
    // 108, jited_ksyms at 112, jited_func_lens at 120.
    let mut info = Attr::new();
    obj_info(fd, &mut info.0).context("BPF_OBJ_GET_INFO_BY_FD")?;
    let (len, ksyms, funcs) = (info.get_u32(16), info.get_u32(104), info.get_u32(108));
    let mut image = vec![0u8; len as usize];
    let mut addresses = vec![0u64; ksyms as usize];
    let mut lens = vec![0u32; funcs as usize];
    let mut info = Attr::new();
    info.u32(16, len)
        .u64(24, image.as_mut_ptr() as u64)
        .u32(104, ksyms)
        .u32(108, funcs)
        .u64(112, addresses.as_mut_ptr() as u64)
        .u64(120, lens.as_mut_ptr() as u64);
    obj_info(fd, &mut info.0).context("BPF_OBJ_GET_INFO_BY_FD")?;
    anyhow::ensure!(
        info.get_u32(16) == len && lens.iter().map(|&l| l as usize).sum::<usize>() == image.len(),
        "the JITed image changed size between two reads"
    );
    Ok((image, addresses, lens))
}

/// The name (at most 15 bytes, as the kernel keeps it) of the BPF
/// program `fd`.
pub fn prog_name(fd: i32) -> Option<String> {
    // struct bpf_prog_info: name[16] at offset 64.
    let mut info = [0u8; 80];
    obj_info(fd, &mut info).ok()?;
    let name = &info[64..80];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}
