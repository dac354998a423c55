//! The socket tasks: one per listen address (and per worker), each answering
//! the requests that reach its socket.
//!
//! Every datagram goes through the same steps, each with its own counter:
//! group membership (non-members: `denied`), shape (`malformed`: oversize,
//! truncated, not a v3/v4 client request), rate limits (`rate_limited`), and
//! only then the reply (`served`). Nothing is answered by accident: a
//! datagram that fails a step gets no reply at all, so Tollgate can never be
//! used to amplify traffic.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use tokio::sync::watch;

use super::{
    access::{ALLOW_LIST_LABEL, Membership, SourceGroups},
    adapter::{Malformed, Responder},
    batch_socket::{BatchSocket, RecvBatch, SendBatch},
    health::{ClientHealth, Sample},
    metrics::{NtpMetrics, Refusal, RequestCounters},
    rate_limit::{Admission, RateLimiter},
    reference::Advertised,
};
use crate::config::NtpRateLimit;

/// The largest request answered. A header with a MAC is 68 bytes; NTPv4
/// extension fields (a unique identifier, padding) stay well below this.
pub const MAX_REQUEST: usize = 1024;

/// A policy generation's source classification with its counters.
pub struct Sources {
    groups: SourceGroups,
    /// By group id; index 0 (`_unknown`) counts denied non-members.
    counters: Vec<RequestCounters>,
    allow_list: RequestCounters,
}

impl Sources {
    pub fn new(groups: SourceGroups, metrics: &NtpMetrics) -> Self {
        let counters = groups
            .group_names()
            .iter()
            .map(|name| metrics.group(name))
            .collect();
        Sources {
            groups,
            counters,
            allow_list: metrics.group(ALLOW_LIST_LABEL),
        }
    }

    /// The label `source`'s requests count under; none for a non-member.
    pub fn label_of(&self, source: IpAddr) -> Option<&str> {
        self.groups.label(self.groups.classify(source))
    }

    fn lookup(&self, source: IpAddr) -> (Membership, &RequestCounters) {
        let membership = self.groups.classify(source);
        let counters = match membership {
            Membership::Group(id) => self.counters.get(id as usize),
            Membership::AllowList => Some(&self.allow_list),
            Membership::Denied => None,
        };
        (membership, counters.unwrap_or(&self.counters[0]))
    }
}

/// State every socket task shares.
pub struct Shared {
    pub metrics: Arc<NtpMetrics>,
    pub limiter: Mutex<RateLimiter>,
    pub health: Arc<ClientHealth>,
}

/// Decides and builds the reply to one datagram.
pub struct Handler {
    responder: Responder,
    advertised: watch::Receiver<Advertised>,
    sources: watch::Receiver<Arc<Sources>>,
    current: Arc<Sources>,
    shared: Arc<Shared>,
    orphaned: bool,
}

impl Handler {
    pub fn new(
        mut advertised: watch::Receiver<Advertised>,
        mut sources: watch::Receiver<Arc<Sources>>,
        shared: Arc<Shared>,
        precision_log2: i8,
    ) -> Self {
        let responder = Responder::new(&advertised.borrow_and_update(), precision_log2);
        let current = sources.borrow_and_update().clone();
        Handler {
            responder,
            advertised,
            sources,
            current,
            shared,
            orphaned: false,
        }
    }

    /// The reply to `request` from `from`, received at `received`, built in
    /// `out`; `None` when it gets no reply. `request` may be one byte longer
    /// than [`MAX_REQUEST`]: that is how an oversize datagram shows.
    pub fn handle<'a>(
        &mut self,
        from: IpAddr,
        received: SystemTime,
        request: &[u8],
        out: &'a mut [u8; MAX_REQUEST],
    ) -> Option<&'a [u8]> {
        // Picks up a new policy or advertised state: two atomic loads when
        // nothing changed.
        if self.sources.has_changed().unwrap_or(false) {
            self.current = self.sources.borrow_and_update().clone();
        }
        match self.advertised.has_changed() {
            Ok(false) => {}
            Ok(true) => self
                .responder
                .advertise(&self.advertised.borrow_and_update()),
            // The refresh task is gone (it only ends with the service):
            // nothing vouches for the clock any more, so say so, once.
            Err(_) if !self.orphaned => {
                self.orphaned = true;
                self.responder
                    .advertise(&self.advertised.borrow().orphaned());
            }
            Err(_) => {}
        }
        let metrics = &self.shared.metrics;
        let (membership, counters) = self.current.lookup(from);
        if membership == Membership::Denied {
            counters.denied.inc();
            metrics.refused(Refusal::NotMember).inc();
            return None;
        }
        let shape = if request.len() > MAX_REQUEST {
            Err(Refusal::Oversize)
        } else {
            self.responder.check(request).map_err(refusal)
        };
        if let Err(reason) = shape {
            counters.malformed.inc();
            metrics.refused(reason).inc();
            return None;
        }
        let now = Instant::now();
        // Every well-formed request of a member tells its clock, limited
        // or not (the fast path reports the ones it answers itself).
        if let Some(label) = self.current.groups.label(membership) {
            let sample = Sample {
                source: from.to_canonical(),
                received,
                transmit: Responder::client_transmit(request),
            };
            self.shared.health.observe(label, &sample, now);
        }
        let admission = self
            .shared
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(from, now);
        match admission {
            Admission::Reply => {}
            Admission::SourceLimited | Admission::GlobalLimited => {
                counters.rate_limited.inc();
                metrics
                    .refused(if admission == Admission::SourceLimited {
                        Refusal::SourceRate
                    } else {
                        Refusal::GlobalRate
                    })
                    .inc();
                return None;
            }
        }
        // The reply buffer is as long as the request: never a larger reply.
        match self
            .responder
            .respond(from, received, request, &mut out[..request.len()])
        {
            Ok(reply) => {
                counters.served.inc();
                Some(reply)
            }
            Err(m) => {
                counters.malformed.inc();
                metrics.refused(refusal(m)).inc();
                None
            }
        }
    }
}

/// A [`Handler`] on its own, without a socket, a refresh task or a
/// policy reload: the per-datagram path (membership, shape, rate, reply)
/// driven with raw bytes. It exists for the `ntp_request` fuzz target
/// (`userspace/fuzz`), which needs that path reachable from outside the
/// crate with a fixed state: it advertises `reference: local` at `stratum`
/// (synchronised since `since`, precision 2^-20 s, not measured), classifies
/// sources with `groups`, and its rate limits never refuse, so every
/// datagram gets as far as its shape allows.
pub struct DetachedHandler {
    handler: Handler,
    // The senders stay alive: a dropped reference raises the alarm.
    _advertised: watch::Sender<Advertised>,
    _sources: watch::Sender<Arc<Sources>>,
}

impl DetachedHandler {
    pub fn new(groups: SourceGroups, stratum: u8, since: SystemTime) -> Self {
        let metrics = Arc::new(
            NtpMetrics::register(&prometheus::Registry::new())
                .expect("a fresh registry has none of the metrics"),
        );
        // Tokens refill faster than anything can ask, and the global cap is
        // 2^32 replies a second.
        let unlimited = NtpRateLimit {
            interval: i8::MIN,
            burst: u32::MAX,
            leak: 0,
        };
        let registry = prometheus::Registry::new();
        let shared = Arc::new(Shared {
            limiter: Mutex::new(RateLimiter::new(unlimited, u32::MAX)),
            metrics: metrics.clone(),
            health: ClientHealth::register(&registry)
                .expect("a fresh registry has none of the metrics"),
        });
        let (sources_tx, sources_rx) = watch::channel(Arc::new(Sources::new(groups, &metrics)));
        let (advertised_tx, advertised_rx) = watch::channel(Advertised::local(stratum, since));
        DetachedHandler {
            handler: Handler::new(advertised_rx, sources_rx, shared, -20),
            _advertised: advertised_tx,
            _sources: sources_tx,
        }
    }
}

/// Its [`Handler::handle`] answers as the server would.
impl std::ops::Deref for DetachedHandler {
    type Target = Handler;

    fn deref(&self) -> &Handler {
        &self.handler
    }
}

impl std::ops::DerefMut for DetachedHandler {
    fn deref_mut(&mut self) -> &mut Handler {
        &mut self.handler
    }
}

fn refusal(m: Malformed) -> Refusal {
    match m {
        Malformed::Truncated => Refusal::Truncated,
        Malformed::NotClientMode => Refusal::NotClientMode,
        Malformed::UnsupportedVersion => Refusal::UnsupportedVersion,
        Malformed::Unparsable => Refusal::Unparsable,
        Malformed::ReplyTooLarge => Refusal::ReplyTooLarge,
    }
}

/// Serves one socket until the task is aborted: a batch of requests in, a
/// batch of replies out.
pub async fn serve(socket: BatchSocket, mut handler: Handler) {
    let mut requests = RecvBatch::<{ MAX_REQUEST + 1 }>::new();
    let mut replies = SendBatch::<MAX_REQUEST>::new();
    loop {
        let count = match socket.recv(&mut requests).await {
            Ok(count) => count,
            Err(e) => {
                tracing::warn!(addr = %socket.local_addr(), "NTP receive failed: {e}");
                continue;
            }
        };
        replies.clear();
        for i in 0..count {
            let (request, from, received) = requests.get(i);
            let Some(from) = from else { continue };
            if let Some(len) = handler
                .handle(from.ip(), received, request, replies.next_buffer())
                .map(<[u8]>::len)
            {
                replies.push(len, &requests, i);
            }
        }
        match socket.send(&replies).await {
            Ok(refused) => handler.shared.metrics.send_errors.inc_by(refused as u64),
            Err(e) => tracing::warn!(addr = %socket.local_addr(), "NTP send failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, time::Duration};

    use prometheus::Registry;

    use super::*;
    use crate::{config::NtpRateLimit, tables::CompiledPolicy};

    const MEMBER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));

    struct Fixture {
        handler: Handler,
        metrics: Arc<NtpMetrics>,
        advertised: Option<watch::Sender<Advertised>>,
        _sources: watch::Sender<Arc<Sources>>,
    }

    fn fixture() -> Fixture {
        let metrics = Arc::new(NtpMetrics::register(&Registry::new()).unwrap());
        let groups = SourceGroups::from_policy(
            &CompiledPolicy::default(),
            &["192.0.2.0/24".parse().unwrap()],
        );
        let (sources_tx, sources_rx) = watch::channel(Arc::new(Sources::new(groups, &metrics)));
        let (advertised_tx, advertised_rx) =
            watch::channel(Advertised::local(2, SystemTime::now()));
        let shared = Arc::new(Shared {
            metrics: metrics.clone(),
            limiter: Mutex::new(RateLimiter::new(NtpRateLimit::default(), 1000)),
            health: ClientHealth::register(&Registry::new()).unwrap(),
        });
        Fixture {
            handler: Handler::new(advertised_rx, sources_rx, shared, -20),
            metrics,
            advertised: Some(advertised_tx),
            _sources: sources_tx,
        }
    }

    fn request() -> [u8; 48] {
        let mut r = [0u8; 48];
        r[0] = (4 << 3) | 3;
        r
    }

    fn leap_of(f: &mut Fixture) -> u8 {
        let mut out = [0u8; MAX_REQUEST];
        let reply = f
            .handler
            .handle(MEMBER, SystemTime::now(), &request(), &mut out)
            .expect("a reply");
        reply[0] >> 6
    }

    #[test]
    fn non_members_are_denied_before_anything_is_parsed() {
        let mut f = fixture();
        let mut out = [0u8; MAX_REQUEST];
        let now = SystemTime::now();
        assert!(f.handler.handle(STRANGER, now, &[0; 3], &mut out).is_none());
        let counts = f.metrics.request_counts();
        assert_eq!(counts["_unknown"].denied, 1);
        assert_eq!(counts["_unknown"].malformed, 0);
        // An oversize request from a member is malformed.
        let oversize = [0u8; MAX_REQUEST + 1];
        assert!(f.handler.handle(MEMBER, now, &oversize, &mut out).is_none());
        assert_eq!(f.metrics.request_counts()["allow-list"].malformed, 1);
        assert_eq!(f.metrics.refusal_counts()["oversize"], 1);
    }

    #[test]
    fn requests_of_sources_answered_tell_their_clocks_and_strangers_do_not() {
        let mut f = fixture();
        let mut out = [0u8; MAX_REQUEST];
        let now = SystemTime::now();
        let mut r = request();
        let an_hour_ago = super::super::health::ntp_timestamp(now - Duration::from_secs(3600));
        r[40..48].copy_from_slice(&an_hour_ago.to_be_bytes());
        // Twice: the second request confirms the first's offset.
        assert!(f.handler.handle(MEMBER, now, &r, &mut out).is_some());
        f.handler.handle(MEMBER, now, &r, &mut out);
        assert!(f.handler.handle(STRANGER, now, &r, &mut out).is_none());
        let health = &f.handler.shared.health;
        let skew = health.clock_skew(MEMBER, Instant::now()).expect("a skew");
        assert!((skew - 3600.0).abs() < 1e-3, "{skew}");
        assert_eq!(health.clock_skew(STRANGER, Instant::now()), None);
        assert_eq!(health.clients(Instant::now())["allow-list"], 1);
        assert_eq!(health.clients(Instant::now()).len(), 1, "no _unknown");
    }

    #[test]
    fn a_dead_reference_raises_the_alarm() {
        let mut f = fixture();
        assert_eq!(leap_of(&mut f), 0);
        f.advertised = None;
        assert_eq!(leap_of(&mut f), 3, "nothing vouches for the clock");
        assert_eq!(f.metrics.request_counts()["allow-list"].served, 2);
    }

    #[test]
    fn a_detached_handler_never_rate_limits() {
        let groups = SourceGroups::from_policy(
            &CompiledPolicy::default(),
            &["192.0.2.0/24".parse().unwrap()],
        );
        let mut handler = DetachedHandler::new(groups, 3, SystemTime::now());
        let mut out = [0u8; MAX_REQUEST];
        let now = SystemTime::now();
        for _ in 0..1000 {
            let reply = handler.handle(MEMBER, now, &request(), &mut out);
            assert_eq!(reply.map(|r| (r.len(), r[1])), Some((48, 3)));
        }
        assert!(
            handler
                .handle(STRANGER, now, &request(), &mut out)
                .is_none()
        );
    }
}
