//! NTP packets the suites and benchmarks send.

/// A client request: NTP `version`, `mode`, poll 6, transmit timestamp
/// `xmt`, then `extra` bytes (extension fields or a MAC).
pub fn client_request(version: u8, mode: u8, xmt: u64, extra: usize) -> Vec<u8> {
    let mut r = vec![0u8; 48 + extra];
    r[0] = (version << 3) | mode;
    r[2] = 6;
    r[40..48].copy_from_slice(&xmt.to_be_bytes());
    r
}
