//! The private NTP endpoint: serves the gateway's clock on the private
//! addresses in `ntp.listen` to the members of policy groups, advertising an
//! honest synchronisation state.
//!
//! | module | job |
//! |---|---|
//! | `adapter` | the only user of `ntp_proto`: answer requests, query upstreams |
//! | `fast_state` | what the XDP fast path answers with, from the advertised state |
//! | `batch_socket` | server sockets: `recvmmsg`/`sendmmsg` with kernel receive timestamps, SO_REUSEPORT |
//! | `poll_socket` | the upstream poller's socket (`timestamped-socket`) |
//! | `server` | one task per socket: membership, shape, rate, reply |
//! | `access` | source address → policy group, `ntp.allow` |
//! | `rate_limit` | per-source limits (chrony semantics) and the global cap |
//! | `reference` | what is advertised: local stratum, or upstream + holdover |
//! | `refresh` | the task that polls the upstreams and republishes the advertised state |
//! | `upstream` | polling the upstream servers |
//! | `kernel_clock` | the kernel's view of the host clock, read-only |
//! | `metrics` | Prometheus metrics and the counts `tollgate status` shows |
//! | `health` | per-group time health: the devices' offsets and polling intervals, from their requests |
//!
//! Tollgate never adjusts the host clock: it serves it as it is and says
//! how good it is.

mod access;
mod adapter;
mod batch_socket;
mod fast_state;
mod health;
mod kernel_clock;
mod metrics;
mod poll_socket;
mod rate_limit;
mod reference;
mod refresh;
mod server;
mod upstream;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use tokio::{sync::watch, task::JoinHandle};

pub use self::{
    access::{ALLOW_LIST_LABEL, SourceGroups},
    adapter::{HEADER_LEN, Responder},
    fast_state::{Clocks, fast_state},
    health::{ClientHealth, ClientOffset, ntp_timestamp},
    kernel_clock::KernelClock,
    metrics::RequestCounts,
    reference::{Advertised, Leap, Reference},
    server::{DetachedHandler, MAX_REQUEST},
};
use self::{
    batch_socket::BatchSocket,
    health::{Sample, ntp_to_system},
    metrics::NtpMetrics,
    rate_limit::RateLimiter,
    reference::Holdover,
    refresh::ReferenceSource,
    server::{Handler, Shared, Sources},
    upstream::Poller,
};
use crate::config::{NtpConfig, NtpRateLimit, NtpReference};

/// The running NTP service. Dropping it stops it too.
pub struct NtpService {
    shared: Arc<Shared>,
    sources: watch::Sender<Arc<Sources>>,
    advertised: watch::Receiver<Advertised>,
    reference: &'static str,
    local_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    /// What the fast path's state needs besides the advertised state.
    precision: i8,
    rate_limit: NtpRateLimit,
    poll_interval: std::time::Duration,
}

/// What `tollgate status` shows about NTP.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NtpStatus {
    /// `upstream` or `local`.
    pub reference: &'static str,
    /// Addresses served.
    pub listen: Vec<SocketAddr>,
    /// Advertised: false when clients are told not to trust us (leap 3).
    pub synchronized: bool,
    pub stratum: u8,
    pub leap_indicator: u8,
    /// The upstream server's address, `LOCAL`, or `none`.
    pub reference_id: String,
    pub root_delay_seconds: f64,
    pub root_dispersion_seconds: f64,
    /// An upstream answered the last poll (always true for `local`).
    pub upstream_reachable: bool,
    /// The kernel's view of the host clock; `None` if it could not be read.
    pub kernel: Option<KernelClock>,
    /// Requests by group label and result.
    pub requests: BTreeMap<String, RequestCounts>,
    /// Requests that got no reply, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// Devices that asked in the last hour, by group label.
    pub clients: BTreeMap<String, u64>,
    /// The devices with the largest last offsets, largest first (at most
    /// [`STATUS_OFFSETS`]).
    pub largest_offsets: Vec<ClientOffset>,
}

/// How many devices `tollgate status` lists by offset.
pub const STATUS_OFFSETS: usize = 10;

impl NtpService {
    /// Binds every `ntp.listen` address and starts serving.
    ///
    /// Sockets are created on the calling thread, so they live in its
    /// network namespace; the tasks are spawned on the current tokio runtime,
    /// which must exist. Metrics are registered into `registry` (once per
    /// registry). An empty `ntp.listen` means no NTP server: callers skip
    /// `start` then, and it refuses.
    pub fn start(
        config: &NtpConfig,
        sources: SourceGroups,
        registry: &prometheus::Registry,
    ) -> Result<Self> {
        tokio::runtime::Handle::try_current()
            .context("the NTP service needs a tokio runtime to run on")?;
        if config.listen.is_empty() {
            bail!("ntp.listen is empty: no address to serve NTP on");
        }
        let reuse_port = config.workers > 1;
        let mut sockets = Vec::new();
        let mut local_addrs = Vec::new();
        for addr in &config.listen {
            let first = BatchSocket::bind(*addr, reuse_port)
                .with_context(|| format!("ntp.listen: cannot bind {addr}"))?;
            // The other workers' sockets share the bound address (a port 0
            // resolved by the first bind).
            let bound = first.local_addr();
            local_addrs.push(bound);
            sockets.push(first);
            for _ in 1..config.workers {
                sockets.push(
                    BatchSocket::bind(bound, reuse_port)
                        .with_context(|| format!("ntp.listen: cannot bind {bound} again"))?,
                );
            }
        }
        let (source, initial, reference) = match &config.reference {
            NtpReference::Local { stratum } => (
                ReferenceSource::Local { stratum: *stratum },
                Advertised::local(*stratum, SystemTime::now()),
                "local",
            ),
            NtpReference::Upstream { servers } => {
                let poller = Poller::open(servers, config.poll_interval)
                    .context("open the socket that polls the NTP upstream servers")?;
                let holdover = Holdover::new(config.holdover);
                // Unsynchronised until the first good sample.
                let initial = holdover.advertised(Instant::now(), SystemTime::now());
                (
                    ReferenceSource::Upstream { poller, holdover },
                    initial,
                    "upstream",
                )
            }
        };
        let metrics = Arc::new(NtpMetrics::register(registry).context("register the NTP metrics")?);
        let health =
            ClientHealth::register(registry).context("register the NTP time-health metrics")?;
        health.set_groups(sources.labels());
        metrics.publish_reference(&initial, false);
        let precision = kernel_clock::precision_log2();
        let (advertised_tx, advertised) = watch::channel(initial);
        let (sources_tx, sources_rx) = watch::channel(Arc::new(Sources::new(sources, &metrics)));
        let shared = Arc::new(Shared {
            metrics: metrics.clone(),
            limiter: Mutex::new(RateLimiter::new(config.rate_limit, config.max_rate)),
            health,
        });
        let mut tasks = vec![tokio::spawn(refresh::run(
            source,
            config.poll_interval,
            2f64.powi(precision.into()),
            advertised_tx,
            metrics,
        ))];
        for socket in sockets {
            let handler = Handler::new(
                advertised.clone(),
                sources_rx.clone(),
                shared.clone(),
                precision,
            );
            tasks.push(tokio::spawn(server::serve(socket, handler)));
        }
        Ok(NtpService {
            shared,
            sources: sources_tx,
            advertised,
            reference,
            local_addrs,
            tasks,
            precision,
            rate_limit: config.rate_limit,
            poll_interval: config.poll_interval,
        })
    }

    /// Notified at every refresh of the advertised state (every poll).
    pub fn refreshes(&self) -> watch::Receiver<Advertised> {
        self.advertised.clone()
    }

    /// What the XDP fast path answers with now, or `None` once nothing
    /// refreshes the advertised state: then the fast path must go stale
    /// and leave the answering (an alarm) to the server.
    pub fn fast_state(&self) -> Option<tollgate_common::NtpFastState> {
        if self.advertised.has_changed().is_err() {
            return None;
        }
        let advertised = *self.advertised.borrow();
        Some(fast_state(
            &advertised,
            self.precision,
            self.rate_limit,
            self.poll_interval,
            Clocks::now(),
        ))
    }

    /// Switches to a new policy's groups (on every policy reload).
    pub fn update_sources(&self, sources: SourceGroups) {
        self.shared.health.set_groups(sources.labels());
        self.sources
            .send_replace(Arc::new(Sources::new(sources, &self.shared.metrics)));
    }

    /// Records a request the XDP fast path answered: from `source`, with
    /// its receive and transmit timestamps (NTP format). A source that is
    /// no member of the policy now in force is not recorded.
    pub fn record_fast_path(&self, source: IpAddr, received: u64, transmit: u64) {
        let source = source.to_canonical();
        let sources = self.sources.borrow();
        let Some(label) = sources.label_of(source) else {
            return;
        };
        let sample = Sample {
            source,
            received: ntp_to_system(received, SystemTime::now()),
            transmit,
        };
        self.shared.health.observe(label, &sample, Instant::now());
    }

    /// The devices' clocks as their requests told them: the deny log asks
    /// it for clock-skew hints.
    pub fn health(&self) -> Arc<ClientHealth> {
        self.shared.health.clone()
    }

    /// The addresses actually bound (a listen port 0 is resolved here).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    pub fn status(&self) -> NtpStatus {
        let mut advertised = *self.advertised.borrow();
        if self.advertised.has_changed().is_err() {
            // As the server tasks do: without a reference, no claim.
            advertised = advertised.orphaned();
        }
        let metrics = &self.shared.metrics;
        NtpStatus {
            reference: self.reference,
            listen: self.local_addrs.clone(),
            synchronized: advertised.leap != Leap::Alarm,
            stratum: advertised.stratum,
            leap_indicator: advertised.leap.code(),
            reference_id: advertised.reference.to_string(),
            root_delay_seconds: advertised.root_delay,
            root_dispersion_seconds: advertised.root_dispersion_at(SystemTime::now()),
            upstream_reachable: metrics.upstream_reachable(),
            kernel: kernel_clock::read().ok(),
            requests: metrics.request_counts(),
            refused: metrics.refusal_counts(),
            clients: self.shared.health.clients(Instant::now()),
            largest_offsets: self
                .shared
                .health
                .largest_offsets(STATUS_OFFSETS, Instant::now()),
        }
    }

    /// Stops every task and closes the sockets before returning.
    pub async fn shutdown(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            // A cancelled task's error is the expected outcome.
            let _ = task.await;
        }
    }
}

impl Drop for NtpService {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
