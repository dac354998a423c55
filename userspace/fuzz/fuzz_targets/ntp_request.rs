//! The NTP server on hostile datagrams: arbitrary bytes as one request,
//! through the path every received datagram takes (membership, shape, rate
//! limit, ntp-proto's parser and reply), with a fixed advertised state.
//!
//! The same bytes arrive from a member over IPv4, a member over IPv6 and a
//! stranger. It must never panic; a stranger never gets a reply; anything
//! that is not a v3/v4 client request of 48 bytes or more never gets one;
//! a plain 48-byte client request always does; and a reply is a server-mode
//! NTP packet of the request's version, 48 bytes or more and never longer
//! than the request, that echoes the request's transmit timestamp.

#![no_main]

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use libfuzzer_sys::fuzz_target;
use tollgate::{
    compile::compile,
    config::Limits,
    ntp::{DetachedHandler, HEADER_LEN, MAX_REQUEST, SourceGroups},
    policy::{Environment, Source, from_sources},
};

const STRATUM: u8 = 3;

/// The devices of the one group; everyone else is a stranger.
const POLICY: &str = "\
groups:
  meters:
    devices: [10.64.0.0/16, \"fd00:64::/48\"]
    default: deny
";

const MEMBERS: [&str; 2] = ["10.64.0.5", "fd00:64::5"];
const STRANGER: &str = "198.51.100.1";

static HANDLER: Mutex<Option<DetachedHandler>> = Mutex::new(None);

fn handler() -> DetachedHandler {
    let source = Source {
        path: PathBuf::from("ntp.yaml"),
        text: POLICY.into(),
    };
    let policy = from_sources(&[source], &Environment::default())
        .expect("the fixed policy is valid")
        .policy;
    let tables = compile(&policy, &Limits::default()).expect("the fixed policy compiles");
    let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    DetachedHandler::new(SourceGroups::from_policy(&tables, &[]), STRATUM, since)
}

fuzz_target!(|data: &[u8]| {
    let mut guard = HANDLER.lock().unwrap_or_else(|e| e.into_inner());
    let handler = guard.get_or_insert_with(handler);
    let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut out = [0u8; MAX_REQUEST];

    let stranger: IpAddr = STRANGER.parse().unwrap();
    assert!(
        handler.handle(stranger, received, data, &mut out).is_none(),
        "a stranger got a reply"
    );

    let version = data.first().map(|b| (b >> 3) & 0b111);
    let mode = data.first().map(|b| b & 0b111);
    let answerable = (HEADER_LEN..=MAX_REQUEST).contains(&data.len())
        && matches!(version, Some(3 | 4))
        && mode == Some(3);
    for member in MEMBERS {
        let from: IpAddr = member.parse().unwrap();
        let reply = handler.handle(from, received, data, &mut out);
        let Some(reply) = reply else {
            assert!(
                !(answerable && data.len() == HEADER_LEN),
                "no reply to a plain client request from {from}"
            );
            continue;
        };
        assert!(answerable, "a reply to what is not a client request");
        assert!(
            (HEADER_LEN..=data.len()).contains(&reply.len()),
            "a reply of {} bytes to a request of {}",
            reply.len(),
            data.len()
        );
        assert_eq!(reply[0] & 0b111, 4, "the reply is not in server mode");
        assert_eq!(Some((reply[0] >> 3) & 0b111), version, "version changed");
        assert_eq!(reply[1], STRATUM, "the advertised stratum");
        assert_eq!(
            reply[24..32],
            data[40..48],
            "the origin timestamp is not the request's transmit timestamp"
        );
    }
});
