//! Batched map updates: `BPF_MAP_UPDATE_BATCH` (Linux 5.6) writes many
//! entries of a hash or array map in one bpf(2) call, where aya's
//! `insert`/`set` make one call per entry — at a cold start with 10⁶
//! devices, 1.2·10⁶ calls. aya 0.14 has no batch API: this is the call,
//! with the kernel's `bpf_attr` from aya-obj's bindings.
//!
//! The kernel writes the entries in order and stops at the first that
//! fails, reporting how many it wrote, so the caller's record of what the
//! map holds stays exact. A kernel or map type without the command
//! (`EINVAL`, `ENOTSUPP`) gets one update per entry instead.

use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use anyhow::Result;
use aya::{Pod, maps::IterableMap};
use aya_obj::generated::{bpf_attr, bpf_attr__bindgen_ty_3, bpf_cmd};

/// Entries per call: bounds the contiguous key and value copies the call
/// reads (at 20-byte keys, 1.3 MB).
const CHUNK: usize = 1 << 16;

/// The kernel's `ENOTSUPP` (internal to the kernel, yet bpf(2) returns it
/// for a map type without the command).
const ENOTSUPP: i32 = 524;

/// How one batch call ended.
enum Batch {
    Written,
    /// No batch update here; nothing was written.
    Unsupported,
    /// The first `applied` entries were written, the others not.
    Stopped(usize, std::io::Error),
}

/// Writes `entries` into the map `fd` in order (`BPF_ANY`), in batches,
/// or one by one with `single` where the kernel has no batch update. On
/// failure, the entries before the index returned are in the map and the
/// others are not.
pub fn write_all<K: Pod, V: Pod>(
    fd: RawFd,
    entries: &[(K, V)],
    mut single: impl FnMut(&K, V) -> Result<()>,
) -> Result<(), (usize, anyhow::Error)> {
    let mut done = 0;
    while done < entries.len() {
        let chunk = &entries[done..entries.len().min(done + CHUNK)];
        match update_batch(fd, chunk) {
            Batch::Written => done += chunk.len(),
            Batch::Unsupported => break,
            Batch::Stopped(applied, e) => {
                return Err((
                    done + applied,
                    anyhow::Error::new(e).context("BPF_MAP_UPDATE_BATCH"),
                ));
            }
        }
    }
    for (i, (key, value)) in entries.iter().enumerate().skip(done) {
        single(key, *value).map_err(|e| (i, e))?;
    }
    Ok(())
}

/// Every entry of the map `fd` (at most `capacity`), read in batches
/// (`BPF_MAP_LOOKUP_BATCH`), in the map's order; `None` where the kernel
/// has no batch lookup for the map (the caller iterates instead). A hash
/// map read while it changes may miss or repeat entries: only maps no one
/// else writes are read (a slot, by its only writer).
pub fn read_all<K: Pod, V: Pod>(fd: RawFd, capacity: usize) -> Result<Option<Vec<(K, V)>>> {
    // A hash map's batch holds whole buckets (ENOSPC when one does not
    // fit): never fewer entries than a bucket could ever have.
    let chunk = capacity.clamp(1024, CHUNK);
    let mut keys: Vec<K> = Vec::with_capacity(chunk);
    let mut values: Vec<V> = Vec::with_capacity(chunk);
    // The position tokens: a key for most maps, a bucket number (`u32`)
    // for hash maps; `K` is at least 4 bytes for every map read here.
    let mut position: [K; 2] = [zeroed_pod(), zeroed_pod()];
    let mut entries = Vec::new();
    let mut first = true;
    loop {
        let (previous, next) = position.split_at_mut(1);
        // SAFETY: all-zero is a valid `bpf_attr`.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.batch = bpf_attr__bindgen_ty_3 {
            in_batch: if first { 0 } else { previous.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `keys` and `values` have room for `chunk` entries of the
        // map's key and value size (checked against these types when the
        // map is opened), the tokens for a key; the kernel writes at most
        // that much, and the count of entries it wrote.
        let rc = unsafe { bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let error = (rc != 0).then(std::io::Error::last_os_error);
        // SAFETY: written above, and by the kernel.
        let got = (unsafe { attr.batch.count } as usize).min(chunk);
        let end = match error.as_ref().and_then(std::io::Error::raw_os_error) {
            None => false,
            // The last batch: `got` entries, maybe none.
            Some(libc::ENOENT) => true,
            Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) if first => return Ok(None),
            Some(_) => {
                return Err(
                    anyhow::Error::new(error.expect("an error")).context("BPF_MAP_LOOKUP_BATCH")
                );
            }
        };
        // SAFETY: the kernel wrote `got` keys and values.
        unsafe {
            keys.set_len(got);
            values.set_len(got);
        }
        entries.extend(keys.drain(..).zip(values.drain(..)));
        if entries.len() > capacity {
            anyhow::bail!("BPF_MAP_LOOKUP_BATCH: more entries than the map holds");
        }
        if end {
            return Ok(Some(entries));
        }
        position.swap(0, 1);
        first = false;
    }
}

/// Every entry of `map`: in batches where the kernel can (a slot of 10^6
/// devices is read in tens of calls, not two million), else with
/// `iterate`, one entry at a time.
pub fn entries_of<K: aya::Pod, V: aya::Pod, M: IterableMap<K, V>>(
    map: &M,
    iterate: impl FnOnce(&M) -> Result<Vec<(K, V)>, aya::maps::MapError>,
) -> Result<Vec<(K, V)>> {
    let data = map.map();
    let capacity = data.info()?.max_entries() as usize;
    match read_all(data.fd().as_fd().as_raw_fd(), capacity)? {
        Some(entries) => Ok(entries),
        None => Ok(iterate(map)?),
    }
}

/// A zeroed `K`, which every `Pod` key may be.
fn zeroed_pod<K: Pod>() -> K {
    // SAFETY: `Pod` types are plain data, valid when all-zero.
    unsafe { std::mem::zeroed() }
}

/// bpf(2) with `cmd` and `attr`.
///
/// # Safety
/// The memory `attr` points to must be valid for `cmd`: readable, and
/// writable where the kernel writes back.
unsafe fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> libc::c_long {
    // SAFETY: the caller's.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>() as libc::c_uint,
        )
    }
}

fn update_batch<K: Pod, V: Pod>(fd: RawFd, entries: &[(K, V)]) -> Batch {
    let keys: Vec<K> = entries.iter().map(|(k, _)| *k).collect();
    let values: Vec<V> = entries.iter().map(|(_, v)| *v).collect();
    let count = entries.len() as u32;
    // SAFETY: all-zero is a valid `bpf_attr` (a union of integer structs),
    // and the kernel expects unused fields zeroed.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.batch = bpf_attr__bindgen_ty_3 {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: fd as u32,
        // BPF_ANY.
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: `attr` describes `count` keys and values in memory that
    // outlives the call, each of the map's key and value size (the map's
    // layout is checked against these types when it is opened); the
    // kernel writes back only `attr.batch.count`.
    let rc = unsafe { bpf(bpf_cmd::BPF_MAP_UPDATE_BATCH, &mut attr) };
    if rc == 0 {
        return Batch::Written;
    }
    let error = std::io::Error::last_os_error();
    // SAFETY: the field written above; the kernel writes it back as the
    // number of entries it wrote once it has started on them.
    let reported = unsafe { attr.batch.count };
    if reported < count {
        return Batch::Stopped(reported as usize, error);
    }
    // Refused before the first entry: the count is the one we wrote.
    match error.raw_os_error() {
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) => Batch::Unsupported,
        _ => Batch::Stopped(0, error),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd as _, AsRawFd as _};

    use aya::maps::{HashMap, IterableMap as _, LpmTrie, Map, MapData, Queue, lpm_trie::Key};

    use super::*;

    fn entries(n: u32) -> Vec<(u32, u64)> {
        (0..n).map(|i| (i, u64::from(i) * 10)).collect()
    }

    /// Needs CAP_BPF.
    #[test]
    fn batches_write_in_order_and_report_where_they_stopped() {
        crate::require_root();
        let never = |_: &u32, _: u64| -> Result<()> { panic!("a single update") };
        // More than one chunk.
        let n = CHUNK as u32 + 10;
        let map = HashMap::<MapData, u32, u64>::create(n, 0).unwrap();
        let fd = map.map().fd().as_fd().as_raw_fd();
        write_all(fd, &entries(n), never).unwrap();
        assert_eq!(map.iter().count(), n as usize);
        assert_eq!(map.get(&7, 0).unwrap(), 70);
        // Read back in batches: every entry once.
        let mut read: Vec<(u32, u64)> = read_all(fd, n as usize).unwrap().unwrap();
        read.sort_unstable();
        assert_eq!(read, entries(n));
        let empty = HashMap::<MapData, u32, u64>::create(8, 0).unwrap();
        let fd = empty.map().fd().as_fd().as_raw_fd();
        assert_eq!(read_all::<u32, u64>(fd, 8).unwrap(), Some(Vec::new()));

        // A full hash map refuses the entry past its size (E2BIG): the
        // entries before it are written, the rest not.
        let small = HashMap::<MapData, u32, u64>::create(4, 0).unwrap();
        let fd = small.map().fd().as_fd().as_raw_fd();
        let (applied, _) = write_all(fd, &entries(6), never).unwrap_err();
        assert_eq!(applied, 4);
        let mut keys: Vec<u32> = small.keys().map(Result::unwrap).collect();
        keys.sort_unstable();
        assert_eq!(keys, [0, 1, 2, 3]);

        // LPM tries take batches too (kernel 6.x).
        let trie = LpmTrie::<MapData, u32, u64>::create(16, 1).unwrap();
        let fd = trie.map().fd().as_fd().as_raw_fd();
        let prefixes: Vec<(Key<u32>, u64)> = (0..3).map(|i| (Key::new(32, i), 1)).collect();
        write_all(fd, &prefixes, |_: &Key<u32>, _| panic!("a single update")).unwrap();
        assert_eq!(trie.iter().count(), 3);
        if let Some(read) = read_all::<Key<u32>, u64>(fd, 16).unwrap() {
            let mut read: Vec<(u32, u32)> = read
                .iter()
                .map(|(k, _)| (k.prefix_len(), k.data()))
                .collect();
            read.sort_unstable();
            assert_eq!(read, [(32, 0), (32, 1), (32, 2)]);
        }

        // A queue has no batch update: one update per entry instead.
        let obj = aya_obj::Map::new_from_params(
            aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_QUEUE as u32,
            0,
            8,
            16,
            0,
        );
        let data = MapData::create(obj, "batch_test", None).unwrap();
        // The descriptor stays open inside `queue`.
        let fd = data.fd().as_fd().as_raw_fd();
        let mut queue = Queue::<MapData, u64>::try_from(Map::Queue(data)).unwrap();
        let mut singles = 0;
        write_all(fd, &entries(3), |_, value| {
            singles += 1;
            Ok(queue.push(value, 0)?)
        })
        .unwrap();
        assert_eq!(singles, 3);
        assert_eq!(queue.pop(0).unwrap(), 0);
    }
}
