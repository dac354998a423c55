//! The NTP fast path's ABI: what the controller tells the program so that
//! it can answer client requests itself (`ebpf/program/src/ntp.rs`).
//!
//! The controller writes [`NtpFastState`] from its advertised reference
//! state at every poll and the listen addresses into `TG_NTP_ADDRS` when
//! it starts; the program answers only while the state is fresh and
//! leaves everything else to the userspace server.

use crate::pod;

/// `Array<NtpFastState>` with one entry: the advertised state.
pub const MAP_NTP_STATE: &str = "TG_NTP_STATE";
/// `HashMap<NtpAddrKey, u8>`: the `ntp.listen` addresses and ports the
/// fast path answers for. Empty when `ntp.fast-path` is off.
pub const MAP_NTP_ADDRS: &str = "TG_NTP_ADDRS";
/// `Array<u64>` of [`NTP_PORT_WORDS`]: a bit per UDP port (bit `p % 64`
/// of word `p / 64`), set for the ports of the `TG_NTP_ADDRS` entries.
/// Every allowed UDP datagram is checked against it before the hash
/// lookup, so that only the ones to a listen port pay that lookup (about
/// 11 ns on every allowed UDP datagram, BENCHMARKS.md).
pub const MAP_NTP_PORTS: &str = "TG_NTP_PORTS";
/// Words of `TG_NTP_PORTS`: 65 536 ports, 64 a word.
pub const NTP_PORT_WORDS: u32 = 1024;
/// `HashMap<u32, u8>`: the interfaces (by index) where a reply sent back
/// with `XDP_TX` reaches the device; elsewhere requests go to the server.
pub const MAP_NTP_IFACES: &str = "TG_NTP_IFACES";
/// `LruHashMap<SourceKey, u64>`: each source's rate-limit state, the
/// theoretical arrival time of its next request (GCRA, nanoseconds of
/// `CLOCK_MONOTONIC`).
pub const MAP_NTP_RATE: &str = "TG_NTP_RATE";

/// `PerCpuArray<NtpScratch>` with one entry: scratch space of one program
/// run (the hook's stack has no room to spare).
pub const MAP_NTP_SCRATCH: &str = "TG_NTP_SCRATCH";
/// `ProgramArray` with one entry, [`PROG_NTP`]: the hook tail-calls the
/// responder, which gets a stack of its own that way.
pub const MAP_NTP_PROG: &str = "TG_NTP_PROG";
/// The responder (an XDP program), never attached: only tail-called.
pub const PROG_NTP: &str = "tollgate_ntp";
/// `ProgramArray` with one entry, [`PROG_NTP_TC`]: the TC hooks' responder.
pub const MAP_NTP_TC: &str = "TG_NTP_TC";
/// The responder's TC twin, tail-called by the TC hooks: it answers by
/// redirecting the reply to the egress of the interface the request came
/// in on, TC's `XDP_TX`.
pub const PROG_NTP_TC: &str = "tollgate_ntp_tc";
/// `RingBuf<NtpSample>`: one record per request the responder answered,
/// for the controller's per-group time health (`ntp/health.rs`). Full:
/// the sample is dropped and counted (`Stat::NtpSamplesLost`); the reply
/// is sent all the same.
pub const MAP_NTP_SAMPLES: &str = "TG_NTP_SAMPLES";
/// Size of `TG_NTP_SAMPLES`: about 21 800 records (40 bytes and the
/// ring's 8-byte header each): 87 ms of answers at 250 000 requests/s,
/// far more than arrive between two drains by the controller.
pub const NTP_SAMPLE_RING_BYTES: u32 = 1 << 20;

/// Entries of `TG_NTP_ADDRS`.
pub const MAX_NTP_ADDRESSES: u32 = 16;
/// Entries of `TG_NTP_IFACES`.
pub const MAX_NTP_INTERFACES: u32 = 256;
/// Sources whose rate-limit state is kept at once (least recently used go,
/// which only ever gives a source a full burst again, as the userspace
/// server's fixed table does on a collision).
pub const NTP_RATE_SOURCES: u32 = 1 << 16;

/// `NtpFastState::flags`: the state is set (the controller has written it).
pub const NTP_STATE_SET: u32 = 1;

/// Value of `TG_NTP_STATE`: the reply's header fields, the clock
/// conversion and the rate limit. Times are `CLOCK_MONOTONIC` nanoseconds
/// (`bpf_ktime_get_ns`) unless said otherwise.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NtpFastState {
    /// After this the state is stale and requests go to userspace: the
    /// controller died or stopped refreshing, so the program must not keep
    /// claiming a quality nobody vouches for.
    pub valid_until_ns: u64,
    /// When `root_dispersion` held; it grows by `dispersion_rate` after.
    pub since_ns: u64,
    /// CLOCK_TAI minus CLOCK_REALTIME (the kernel's TAI offset), ns.
    pub tai_offset_ns: u64,
    /// Root dispersion growth in NTP short-format units (2^-16 s) per
    /// nanosecond, scaled by 2^48 (PHI, 15 µs/s, is about 276 700).
    pub dispersion_rate: u64,
    /// GCRA per source: nanoseconds per reply (2^interval s) and how far
    /// ahead of schedule a source may run ((burst - 1) intervals).
    pub rate_interval_ns: u64,
    pub rate_tolerance_ns: u64,
    /// NTP short format (16.16 seconds), network order ready to copy.
    pub root_delay: [u8; 4],
    /// NTP short format at `since_ns` (when the controller wrote the
    /// state), host order (it is added to).
    pub root_dispersion: u32,
    pub reference_id: [u8; 4],
    pub flags: u32,
    /// Leap indicator (0-3), stratum, precision (log2 s).
    pub leap: u8,
    pub stratum: u8,
    pub precision: i8,
    /// A rate-limited request is still answered with probability
    /// 2^-`rate_leak` (0: never), chrony's leak.
    pub rate_leak: u8,
    pub _pad: u32,
}

/// Key of `TG_NTP_ADDRS`: an address and UDP port the server listens on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NtpAddrKey {
    pub family: u8,
    pub _pad: u8,
    /// Network order.
    pub port: [u8; 2],
    pub addr: [u8; 16],
}

/// Value of `TG_NTP_SCRATCH`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NtpScratch {
    /// The `TG_NTP_ADDRS` lookup key, built here rather than on the stack.
    pub key: NtpAddrKey,
    /// The request the responder answers, packed by the hook.
    pub request: u32,
    /// The TC responder's copy of the datagram it answers (TC reads and
    /// writes the skb through helpers, not in place): the longest plain
    /// request, IPv6, UDP and 48 bytes of NTP.
    pub datagram: [u8; NTP_DATAGRAM_MAX],
}

/// Bytes of the longest datagram the fast path answers (IPv6 header, UDP
/// header, NTP header).
pub const NTP_DATAGRAM_MAX: usize = 40 + 8 + 48;

/// Record of `TG_NTP_SAMPLES`: who asked, when the request arrived and
/// what the client's clock said when it sent it. The controller derives
/// the device's offset and polling interval; the program only copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NtpSample {
    /// The source, as in `SourceKey`: IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 7],
    /// The reply's receive timestamp (T2): NTP format, host order.
    pub received: u64,
    /// The request's transmit timestamp (the client's T1 by its own
    /// clock, or whatever it put there): NTP format, host order.
    pub transmit: u64,
}

pod!(NtpFastState, NtpAddrKey, NtpScratch, NtpSample);

const _: () = assert!(core::mem::size_of::<NtpFastState>() == 72);
const _: () = assert!(core::mem::size_of::<NtpAddrKey>() == 20);
const _: () = assert!(core::mem::size_of::<NtpScratch>() == 120);
const _: () = assert!(core::mem::size_of::<NtpSample>() == 40);
