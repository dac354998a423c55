//! The socket tasks: one per listen address, each answering the requests
//! that reach it.
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
    metrics::{NtpMetrics, Refusal, RequestCounters},
    rate_limit::{Admission, RateLimiter},
    reference::Advertised,
};

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
}

/// Decides and builds the reply to one datagram.
pub struct Handler {
    responder: Responder,
    advertised: watch::Receiver<Advertised>,
    sources: watch::Receiver<Arc<Sources>>,
    current: Arc<Sources>,
    shared: Arc<Shared>,
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
        if self.advertised.has_changed().unwrap_or(false) {
            self.responder
                .advertise(&self.advertised.borrow_and_update());
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
        let admission = self
            .shared
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(from, Instant::now());
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
