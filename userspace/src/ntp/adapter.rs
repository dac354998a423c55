//! The only module that uses `ntp_proto`.
//!
//! ntp-proto's API is internal to ntpd-rs (`__internal-api`) and changes
//! between releases, so everything Tollgate needs from it goes through the
//! small, Tollgate-typed surface here: answer a client request, build an
//! upstream query and read its reply. An upgrade of the crate touches this
//! file only.

use std::{
    fmt,
    io::Cursor,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ntp_proto::{
    FilterAction, FilterList, IpSubnet, KeySet, KeySetProvider, NoCipher, NtpAssociationMode,
    NtpClock, NtpDuration, NtpLeapIndicator, NtpPacket, NtpTimestamp, NtpVersion, PollInterval,
    ReferenceId, Server, ServerAction, ServerConfig, ServerReason, ServerResponse,
    ServerStatHandler, SystemSnapshot, TimeSnapshot,
};

use super::reference::{Advertised, Leap, Reference, UpstreamReply};

/// Length of an NTPv3/v4 header, the smallest valid request.
pub const HEADER_LEN: usize = 48;

/// Why a datagram is not a request Tollgate answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than an NTP header.
    Truncated,
    /// Mode other than client (3): control (6), private (7), symmetric,
    /// broadcast, or a server reply. Never answered (no amplification).
    NotClientMode,
    /// NTP version other than 3 or 4.
    UnsupportedVersion,
    /// A header followed by bytes that are neither valid extension fields nor
    /// a MAC, or an NTS request (Tollgate does not serve NTS).
    Unparsable,
    /// The reply would have been larger than the request; it is not sent.
    ReplyTooLarge,
}

/// Answers client requests from the host clock, advertising the state the
/// reference produced.
pub struct Responder {
    server: Server<ReadOnlyClock>,
    keyset: Arc<KeySet>,
    precision: NtpDuration,
}

impl Responder {
    /// `precision_log2`: the host clock's read precision as log2 seconds.
    pub fn new(advertised: &Advertised, precision_log2: i8) -> Self {
        // Access control and rate limiting happen before a request reaches
        // the server (they need policy groups), so its own filters are open
        // and its rate-limit cache is disabled (size 0).
        let everyone = FilterList {
            filter: vec![
                IpSubnet {
                    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    mask: 0,
                },
                IpSubnet {
                    addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    mask: 0,
                },
            ],
            action: FilterAction::Ignore,
        };
        let config = ServerConfig {
            denylist: FilterList {
                filter: vec![],
                action: FilterAction::Ignore,
            },
            allowlist: everyone,
            rate_limiting_cache_size: 0,
            rate_limiting_cutoff: Duration::ZERO,
            require_nts: None,
            accepted_versions: vec![NtpVersion::V3, NtpVersion::V4],
        };
        // No NTS: the key set only satisfies the constructor and the parser.
        let keyset = KeySetProvider::new(0).get();
        let precision = NtpDuration::from_exponent(precision_log2);
        let system = system_snapshot(advertised, precision);
        Responder {
            server: Server::new(config, ReadOnlyClock, system, keyset.clone()),
            keyset,
            precision,
        }
    }

    /// Replaces the advertised state (stratum, leap, root delay/dispersion).
    pub fn advertise(&mut self, advertised: &Advertised) {
        self.server
            .update_system(system_snapshot(advertised, self.precision));
    }

    /// Checks that `request` is a client request this server answers.
    pub fn check(&self, request: &[u8]) -> Result<(), Malformed> {
        if request.len() < HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        // The version sits in the same bits in every NTP version; checking it
        // first keeps NTPv5 drafts out of ntp-proto's v5 parser.
        if !matches!((request[0] >> 3) & 0b111, 3 | 4) {
            return Err(Malformed::UnsupportedVersion);
        }
        match NtpPacket::deserialize(request, self.keyset.as_ref()) {
            Ok((packet, None)) if packet.mode() == NtpAssociationMode::Client => Ok(()),
            Ok((_, None)) => Err(Malformed::NotClientMode),
            Ok((_, Some(_))) | Err(_) => Err(Malformed::Unparsable),
        }
    }

    /// The client's transmit timestamp (NTP format; 0 when it sent none) of
    /// a request that passed [`Responder::check`]: a fixed field of the
    /// header ntp-proto parsed, read where it lies.
    pub fn client_transmit(request: &[u8]) -> u64 {
        request
            .get(40..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes)
    }

    /// Builds the reply to a request that passed [`Responder::check`] into
    /// `out`, which must be no longer than the request: a reply is never
    /// larger than its request.
    pub fn respond<'a>(
        &mut self,
        client: IpAddr,
        received: SystemTime,
        request: &[u8],
        out: &'a mut [u8],
    ) -> Result<&'a [u8], Malformed> {
        debug_assert!(out.len() <= request.len());
        match self.server.handle(
            client,
            ntp_timestamp(received),
            request,
            out,
            &mut IgnoreStats,
        ) {
            ServerAction::Respond { message } => Ok(message),
            // Only a reply that does not fit `out` gets here after `check`.
            ServerAction::Ignore => Err(Malformed::ReplyTooLarge),
        }
    }
}

/// The header fields of every reply to a plain client request in the
/// state `advertised`, as ntp-proto writes them: the NTP fast path copies
/// them into its replies (`ntp/fast_state.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyHeader {
    pub leap: u8,
    pub stratum: u8,
    pub precision: i8,
    /// NTP short format, as on the wire.
    pub root_delay: [u8; 4],
    /// NTP short format at the time asked for.
    pub root_dispersion: u32,
    pub reference_id: [u8; 4],
}

impl ReplyHeader {
    /// Answers a template request received `at` and reads the fields back:
    /// ntp-proto stays the one that encodes them.
    pub fn of(advertised: &Advertised, precision_log2: i8, at: SystemTime) -> Self {
        let mut responder = Responder::new(advertised, precision_log2);
        let mut request = [0u8; HEADER_LEN];
        request[0] = (4 << 3) | 3;
        let mut out = [0u8; HEADER_LEN];
        let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let reply = responder
            .respond(client, at, &request, &mut out)
            .expect("a 48-byte client request always has a 48-byte reply");
        let word = |at: usize| [reply[at], reply[at + 1], reply[at + 2], reply[at + 3]];
        ReplyHeader {
            leap: reply[0] >> 6,
            stratum: reply[1],
            precision: reply[3] as i8,
            root_delay: word(4),
            root_dispersion: u32::from_be_bytes(word(8)),
            reference_id: word(12),
        }
    }
}

/// Tollgate counts requests itself, with policy groups as labels.
struct IgnoreStats;

impl ServerStatHandler for IgnoreStats {
    fn register(&mut self, _: u8, _: bool, _: ServerReason, _: ServerResponse) {}
}

/// The host clock, read-only. `now` cannot fail (reading CLOCK_REALTIME
/// cannot), which matters: `Server::handle` panics on a failing clock. Every
/// method that would steer the clock refuses: Tollgate never steps or slews
/// the host clock, and the server never asks it to.
#[derive(Clone, Copy)]
struct ReadOnlyClock;

#[derive(Debug)]
struct ReadOnly;

impl fmt::Display for ReadOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tollgate never adjusts the host clock")
    }
}

impl std::error::Error for ReadOnly {}

impl NtpClock for ReadOnlyClock {
    type Error = ReadOnly;

    fn now(&self) -> Result<NtpTimestamp, ReadOnly> {
        Ok(ntp_timestamp(SystemTime::now()))
    }
    fn set_frequency(&self, _: f64) -> Result<NtpTimestamp, ReadOnly> {
        Err(ReadOnly)
    }
    fn get_frequency(&self) -> Result<f64, ReadOnly> {
        Err(ReadOnly)
    }
    fn step_clock(&self, _: NtpDuration) -> Result<NtpTimestamp, ReadOnly> {
        Err(ReadOnly)
    }
    fn disable_ntp_algorithm(&self) -> Result<(), ReadOnly> {
        Err(ReadOnly)
    }
    fn error_estimate_update(&self, _: NtpDuration, _: NtpDuration) -> Result<(), ReadOnly> {
        Err(ReadOnly)
    }
    fn status_update(&self, _: NtpLeapIndicator) -> Result<(), ReadOnly> {
        Err(ReadOnly)
    }
}

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

fn ntp_timestamp(t: SystemTime) -> NtpTimestamp {
    let since_unix = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    // Truncation to 32 bits is the NTP era wrap (2036), as on the wire.
    let seconds = (since_unix.as_secs() + NTP_UNIX_OFFSET) as u32;
    NtpTimestamp::from_seconds_nanos_since_ntp_era(seconds, since_unix.subsec_nanos())
}

/// What the server advertises, in ntp-proto's terms. Root dispersion grows
/// linearly from `since` at `dispersion_rate`; ntp-proto models it as the
/// square root of a polynomial variance, so the polynomial is that line
/// squared.
fn system_snapshot(a: &Advertised, precision: NtpDuration) -> SystemSnapshot {
    let (base, rate) = (a.root_dispersion, a.dispersion_rate);
    SystemSnapshot {
        stratum: a.stratum,
        reference_id: reference_id(a.reference),
        time_snapshot: TimeSnapshot {
            precision,
            root_delay: NtpDuration::from_seconds(a.root_delay),
            root_variance_base_time: ntp_timestamp(a.since),
            root_variance_base: base * base,
            root_variance_linear: 2.0 * base * rate,
            root_variance_quadratic: rate * rate,
            root_variance_cubic: 0.0,
            leap_indicator: match a.leap {
                Leap::NoWarning => NtpLeapIndicator::NoWarning,
                Leap::InsertSecond => NtpLeapIndicator::Leap61,
                Leap::DeleteSecond => NtpLeapIndicator::Leap59,
                Leap::Alarm => NtpLeapIndicator::Unsynchronized,
            },
            accumulated_steps: NtpDuration::ZERO,
        },
        ..SystemSnapshot::default()
    }
}

fn reference_id(reference: Reference) -> ReferenceId {
    match reference {
        // RFC 5905: above stratum 1 the reference id identifies the server
        // we synchronise to (its IPv4 address, or a hash of its IPv6 one),
        // which is what lets clients detect timing loops.
        Reference::Upstream(ip) => ReferenceId::from_ip(ip),
        // chrony's `local` reference id, 127.127.1.1.
        Reference::Local => ReferenceId::from_ip(IpAddr::V4(Ipv4Addr::new(127, 127, 1, 1))),
        Reference::None => ReferenceId::NONE,
    }
}

/// A client request to an upstream server. Its reply is identified by the
/// origin timestamp, which must echo the request's transmit timestamp.
pub struct Query {
    pub bytes: [u8; HEADER_LEN],
}

impl Query {
    /// An NTPv4 client request with a random transmit timestamp (the reply
    /// must echo it, which defeats off-path spoofing), as rsntp sends.
    pub fn new(poll: Duration) -> Self {
        let log2 = poll.as_secs().max(1).ilog2() as u8;
        let (packet, _) = NtpPacket::poll_message(PollInterval::from_byte(log2));
        let mut bytes = [0; HEADER_LEN];
        packet
            .serialize(&mut Cursor::new(&mut bytes[..]), &NoCipher, None)
            .expect("an NTPv4 header fits 48 bytes");
        Query { bytes }
    }
}

/// Why an upstream reply was discarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadReply {
    Unparsable,
    /// Not the reply to our query (origin timestamp or mode differ).
    NotOurs,
    /// A kiss-o'-death (stratum 0), e.g. RATE or DENY.
    Kiss,
}

impl fmt::Display for BadReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadReply::Unparsable => "unparsable reply",
            BadReply::NotOurs => "reply does not match the query",
            BadReply::Kiss => "kiss-o'-death reply",
        })
    }
}

impl std::error::Error for BadReply {}

/// Reads the reply to `query`, sent at `sent` and received at `received`
/// (host clock).
pub fn read_reply(
    query: &Query,
    reply: &[u8],
    sent: SystemTime,
    received: SystemTime,
) -> Result<UpstreamReply, BadReply> {
    let (packet, _) = NtpPacket::deserialize(reply, &NoCipher).map_err(|_| BadReply::Unparsable)?;
    // Origin timestamp (bytes 24..32) = our transmit timestamp (40..48).
    if packet.mode() != NtpAssociationMode::Server || reply[24..32] != query.bytes[40..48] {
        return Err(BadReply::NotOurs);
    }
    if packet.is_kiss() {
        return Err(BadReply::Kiss);
    }
    let (t1, t4) = (ntp_timestamp(sent), ntp_timestamp(received));
    let (t2, t3) = (packet.receive_timestamp(), packet.transmit_timestamp());
    let offset = ((t2 - t1).to_seconds() + (t3 - t4).to_seconds()) / 2.0;
    let delay = ((t4 - t1) - (t3 - t2)).to_seconds().max(0.0);
    Ok(UpstreamReply {
        stratum: packet.stratum(),
        leap: match packet.leap() {
            NtpLeapIndicator::NoWarning => Leap::NoWarning,
            NtpLeapIndicator::Leap61 => Leap::InsertSecond,
            NtpLeapIndicator::Leap59 => Leap::DeleteSecond,
            NtpLeapIndicator::Unknown | NtpLeapIndicator::Unsynchronized => Leap::Alarm,
        },
        root_delay: packet.root_delay().to_seconds(),
        root_dispersion: packet.root_dispersion().to_seconds(),
        precision: 2f64.powi(packet.precision().into()),
        offset,
        delay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advertised(leap: Leap, stratum: u8) -> Advertised {
        Advertised {
            leap,
            stratum,
            reference: Reference::Local,
            root_delay: 0.25,
            root_dispersion: 0.5,
            since: SystemTime::now(),
            dispersion_rate: 15e-6,
        }
    }

    /// A client request of `version`, 48 bytes, transmit timestamp `xmt`.
    fn request(version: u8, mode: u8, xmt: u64) -> Vec<u8> {
        let mut r = vec![0u8; HEADER_LEN];
        r[0] = (version << 3) | mode;
        r[40..48].copy_from_slice(&xmt.to_be_bytes());
        r
    }

    fn answer(responder: &mut Responder, request: &[u8]) -> Result<Vec<u8>, Malformed> {
        responder.check(request)?;
        let mut out = vec![0u8; request.len()];
        let client = IpAddr::from([192, 0, 2, 10]);
        responder
            .respond(client, SystemTime::now(), request, &mut out)
            .map(<[u8]>::to_vec)
    }

    #[test]
    fn answers_v3_and_v4_with_the_advertised_state() {
        let mut responder = Responder::new(&advertised(Leap::NoWarning, 4), -20);
        for version in [3u8, 4] {
            let req = request(version, 3, 0x0123_4567_89ab_cdef);
            let reply = answer(&mut responder, &req).unwrap();
            assert_eq!(reply.len(), HEADER_LEN);
            assert_eq!(
                reply[0],
                (version << 3) | 4,
                "leap 0, same version, mode server"
            );
            assert_eq!(reply[1], 4, "stratum");
            assert_eq!(reply[3] as i8, -20, "precision");
            let root_delay = f64::from(u32::from_be_bytes(reply[4..8].try_into().unwrap()));
            assert!(
                (root_delay / 65536.0 - 0.25).abs() < 1e-4,
                "root delay 0.25 s"
            );
            assert_eq!(&reply[12..16], &[127, 127, 1, 1], "reference id");
            assert_eq!(&reply[24..32], &req[40..48], "origin = client transmit");
        }
        // IPv6 clients pass the server's own (open) filter too.
        let req = request(4, 3, 1);
        let mut out = [0u8; HEADER_LEN];
        let v6 = IpAddr::from(Ipv6Addr::LOCALHOST);
        assert!(
            responder
                .respond(v6, SystemTime::now(), &req, &mut out)
                .is_ok()
        );
    }

    #[test]
    fn alarm_is_leap_indicator_3() {
        let mut responder = Responder::new(&advertised(Leap::NoWarning, 2), -20);
        responder.advertise(&advertised(Leap::Alarm, 2));
        let reply = answer(&mut responder, &request(4, 3, 7)).unwrap();
        assert_eq!(reply[0] >> 6, 3);
    }

    #[test]
    fn root_dispersion_grows_from_the_base_time() {
        let mut a = advertised(Leap::NoWarning, 2);
        a.since = SystemTime::now() - Duration::from_secs(10_000);
        a.dispersion_rate = 1e-4;
        let mut responder = Responder::new(&a, -20);
        let reply = answer(&mut responder, &request(4, 3, 7)).unwrap();
        let short = u32::from_be_bytes(reply[8..12].try_into().unwrap());
        let seconds = f64::from(short) / 65536.0;
        assert!(
            (seconds - 1.5).abs() < 0.01,
            "0.5 s + 1e-4 * 10^4 s, got {seconds}"
        );
    }

    #[test]
    fn refuses_what_it_must_not_answer() {
        let responder = Responder::new(&advertised(Leap::NoWarning, 2), -20);
        assert_eq!(
            responder.check(&request(4, 3, 1)[..47]),
            Err(Malformed::Truncated)
        );
        // A mode 6 (control) query as ntpq sends it: 12 bytes.
        assert_eq!(
            responder.check(&[0x16, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Malformed::Truncated)
        );
        for mode in [0, 1, 2, 4, 5, 6, 7] {
            assert_eq!(
                responder.check(&request(4, mode, 1)),
                Err(Malformed::NotClientMode),
                "mode {mode}"
            );
        }
        for version in [0, 1, 2, 5, 6, 7] {
            assert_eq!(
                responder.check(&request(version, 3, 1)),
                Err(Malformed::UnsupportedVersion),
                "version {version}"
            );
        }
        let mut junk = request(4, 3, 1);
        // Too short for a MAC (key id + digest), not an extension field.
        junk.extend_from_slice(&[0xff; 3]);
        assert_eq!(responder.check(&junk), Err(Malformed::Unparsable));
    }

    #[test]
    fn replies_are_never_larger_than_requests() {
        let mut responder = Responder::new(&advertised(Leap::NoWarning, 2), -20);
        // NTPv3 with a 20-byte MAC (key id + MD5): the reply has no MAC.
        let mut req = request(3, 3, 9);
        req.extend_from_slice(&[0x11; 20]);
        let reply = answer(&mut responder, &req).unwrap();
        assert_eq!(reply.len(), HEADER_LEN);
        // A buffer shorter than the reply: nothing is sent.
        let req = request(4, 3, 9);
        let mut out = [0u8; HEADER_LEN - 1];
        let client = IpAddr::from([192, 0, 2, 10]);
        assert_eq!(
            responder
                .respond(client, SystemTime::now(), &req, &mut out)
                .map(<[u8]>::len),
            Err(Malformed::ReplyTooLarge)
        );
    }

    #[test]
    fn reads_an_upstream_reply_through_our_own_server() {
        let mut upstream = Responder::new(&advertised(Leap::InsertSecond, 3), -20);
        let query = Query::new(Duration::from_secs(16));
        assert_eq!(query.bytes[0] & 0x3f, (4 << 3) | 3, "NTPv4 client");
        let sent = SystemTime::now();
        let reply = answer(&mut upstream, &query.bytes).unwrap();
        let received = SystemTime::now();
        let r = read_reply(&query, &reply, sent, received).unwrap();
        assert_eq!(r.stratum, 3);
        assert_eq!(r.leap, Leap::InsertSecond);
        assert!((r.root_delay - 0.25).abs() < 1e-4);
        assert!(r.root_dispersion >= 0.5);
        assert!(r.offset.abs() < 0.01 && r.delay < 0.01, "{r:?}");
        // A reply to another query is not ours.
        let other = Query::new(Duration::from_secs(16));
        assert_eq!(
            read_reply(&other, &reply, sent, received),
            Err(BadReply::NotOurs)
        );
        assert_eq!(
            read_reply(&query, &reply[..20], sent, received),
            Err(BadReply::Unparsable)
        );
    }
}
