//! How many frames an interface's driver sent back with `XDP_TX`, and how
//! many it could not, from its ethtool statistics (`SIOCETHTOOL`:
//! `ETHTOOL_GSSET_INFO`, `ETHTOOL_GSTRINGS`, `ETHTOOL_GSTATS`), summed over
//! the statistics whose names end in `xdp_tx` and `xdp_tx_errors` (a veth
//! has them per receive queue, `rx_queue_N_xdp_tx`).
//!
//! Why: a veth's native `XDP_TX` hands the frame to its peer's receive
//! ring, which exists only while the peer runs NAPI; otherwise the kernel
//! drops the frame and counts it here, and nothing else on this side of
//! the pair can tell (the peer usually lives in another namespace).

use std::{
    ffi::c_void,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Result, bail};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;
/// More statistics than any driver reports: a bound on what is read.
const MAX_STATS: usize = 8192;

/// `struct ifreq` with the `ifr_data` member of its union.
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut c_void,
    _rest: [u8; 16],
}

/// `XDP_TX` frames an interface's driver sent and failed to send so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpTx {
    pub sent: u64,
    pub errors: u64,
}

/// The `XDP_TX` counts of `interface` (in this network namespace) so far,
/// or `None` when its driver reports no error count.
pub fn xdp_tx_counts(interface: &str) -> Result<Option<XdpTx>> {
    // SAFETY: socket() has no preconditions; the fd is owned from here on.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        bail!(
            "socket for SIOCETHTOOL: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let ethtool = |buf: &mut [u64]| -> std::io::Result<()> {
        let mut req = IfreqData {
            name: [0; libc::IFNAMSIZ],
            data: buf.as_mut_ptr().cast(),
            _rest: [0; 16],
        };
        let name = interface.as_bytes();
        if name.len() >= libc::IFNAMSIZ {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        req.name[..name.len()].copy_from_slice(name);
        // SAFETY: `req` names the interface and points at `buf`, which is
        // as large as the command in its first word asks the kernel to fill.
        if unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut req) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    let unsupported = |e: &std::io::Error| e.raw_os_error() == Some(libc::EOPNOTSUPP);

    // ethtool_sset_info: cmd, reserved, sset_mask (u64), then one u32 count.
    let mut info = [0u64; 3];
    set_words(&mut info, &[ETHTOOL_GSSET_INFO]);
    info[1] = 1 << ETH_SS_STATS;
    match ethtool(&mut info) {
        Err(e) if unsupported(&e) => return Ok(None),
        Err(e) => bail!("{interface}: ETHTOOL_GSSET_INFO: {e}"),
        Ok(()) => {}
    }
    if info[1] & (1 << ETH_SS_STATS) == 0 {
        return Ok(None);
    }
    let first = info[2].to_ne_bytes();
    let count = u32::from_ne_bytes(first[..4].try_into().expect("4 bytes")) as usize;
    if count == 0 || count > MAX_STATS {
        return Ok(None);
    }

    // ethtool_gstrings: cmd, string_set, len (12 bytes), then the names.
    let mut strings = vec![0u64; (12 + count * ETH_GSTRING_LEN).div_ceil(8)];
    set_words(
        &mut strings,
        &[ETHTOOL_GSTRINGS, ETH_SS_STATS, count as u32],
    );
    ethtool(&mut strings).map_err(|e| anyhow::anyhow!("{interface}: ETHTOOL_GSTRINGS: {e}"))?;
    // ethtool_stats: cmd, n_stats (8 bytes), then the values.
    let mut stats = vec![0u64; 1 + count];
    set_words(&mut stats, &[ETHTOOL_GSTATS, count as u32]);
    ethtool(&mut stats).map_err(|e| anyhow::anyhow!("{interface}: ETHTOOL_GSTATS: {e}"))?;

    let names: Vec<u8> = strings.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut counts = XdpTx::default();
    let mut has_errors = false;
    for (i, value) in stats[1..].iter().enumerate() {
        let name = &names[12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN];
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if name.ends_with(b"xdp_tx_errors") {
            counts.errors += value;
            has_errors = true;
        } else if name.ends_with(b"xdp_tx") {
            counts.sent += value;
        }
    }
    Ok(has_errors.then_some(counts))
}

/// Writes `words` as consecutive native-endian u32s at the start of `buf`.
fn set_words(buf: &mut [u64], words: &[u32]) {
    let mut bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    for (i, w) in words.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    for (word, chunk) in buf.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_interface_is_an_error() {
        assert!(xdp_tx_counts("tg-no-such-if0").is_err());
    }

    #[test]
    fn loopback_reports_no_xdp_tx_statistic() {
        assert_eq!(xdp_tx_counts("lo").unwrap(), None);
    }
}
