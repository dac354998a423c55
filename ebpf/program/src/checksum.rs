//! The Internet checksum (RFC 1071), for the replies the program builds:
//! reject answers and NTP responses.

/// The one's complement sum of `bytes` as big-endian 16-bit words, added to
/// `acc` (an odd last byte is padded with zero).
#[inline(always)]
pub fn sum(bytes: &[u8], mut acc: u32) -> u32 {
    let mut words = bytes.chunks_exact(2);
    for w in &mut words {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// The Internet checksum of what `acc` summed (RFC 1071).
#[inline(always)]
pub fn checksum(acc: u32) -> [u8; 2] {
    let folded = (acc & 0xffff) + (acc >> 16);
    let folded = (folded & 0xffff) + (folded >> 16);
    (!(folded as u16)).to_be_bytes()
}
