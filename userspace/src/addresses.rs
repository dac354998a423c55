//! The gateway's own addresses on the device-facing interfaces — what the
//! policy keyword `gateway` means — read at start and again whenever the
//! kernel announces an address change (`links::InterfaceChanges`), so
//! nobody has to type them into a file.

use std::{
    collections::BTreeSet,
    ffi::CStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Result, bail};

/// Every address currently on `interfaces` (link-local included: devices can
/// reach the gateway over it), sorted.
pub fn current(interfaces: &[String]) -> Result<Vec<IpAddr>> {
    let mut found = BTreeSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        bail!("getifaddrs: {}", std::io::Error::last_os_error());
    }
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cursor };
        cursor = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: NUL-terminated interface name owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        if !interfaces.iter().any(|i| *i == name) {
            continue;
        }
        // SAFETY: the family tells which sockaddr type it points to.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                }
                _ => None,
            }
        };
        found.extend(addr);
    }
    // SAFETY: `head` came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Ok(found.into_iter().collect())
}

/// The addresses of one interface; `None` when no such interface exists.
pub fn of_interface(name: &str) -> Result<Option<Vec<IpAddr>>> {
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return Ok(None);
    };
    // SAFETY: if_nametoindex reads a NUL-terminated name.
    if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
        return Ok(None);
    }
    current(&[name.to_string()]).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loopback_addresses() {
        let lo = current(&["lo".to_string()]).unwrap();
        assert!(lo.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{lo:?}");
        assert!(
            current(&["no-such-interface".to_string()])
                .unwrap()
                .is_empty()
        );
    }
}
