//! The gateway's DNS forwarder: it resolves names for the devices, and for
//! a name of one of the device's group's FQDN rules it learns the answer's
//! addresses for that group and rule *before* the device gets the answer,
//! so the device's first packet to them already passes (precedence step
//! 12). A group with `dns.filter` gets REFUSED for every other name, so a
//! device cannot tunnel data out through lookups either.
//!
//! - `answer.rs`: the messages (hickory-proto), pure;
//! - `rate_limit.rs`: per-source query limits;
//! - `leases_file.rs`: the learned addresses kept across a restart;
//! - `tcp.rs`: DNS over TCP, for answers too large for UDP;
//! - this file: the sockets, one task per query (bounded), the upstreams,
//!   the learning through [`Dataplane::learn`], the sweeper of expired
//!   addresses and the metrics.
//!
//! Over UDP, an answer too large comes truncated, as the upstream sent it;
//! the device asks again over TCP, and the forwarder asks its upstream over
//! TCP too.

pub mod answer;
pub mod leases_file;
mod rate_limit;
mod tcp;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use hickory_proto::op::{Message, ResponseCode};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio::{net::UdpSocket, sync::Semaphore, task::JoinHandle};

use self::{
    answer::{MAX_MESSAGE, NotAQuery},
    rate_limit::RateLimiter,
};
use crate::{
    config::DnsConfig,
    datapath::{Dataplane, learned::monotonic_ns},
    model,
    tables::{CompiledPolicy, UNKNOWN_GROUP_NAME},
};

/// Queries being answered at once; a datagram beyond that is dropped (the
/// device retries), so a flood cannot grow memory or tasks.
const MAX_IN_FLIGHT: usize = 256;
/// How often expired learned addresses are swept from the map.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The running forwarder. Dropping it stops it.
pub struct DnsService {
    policy: Arc<RwLock<Arc<CompiledPolicy>>>,
    local_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsService {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The forwarder's counters.
struct DnsMetrics {
    queries: IntCounterVec,
    learned: IntGaugeVec,
}

/// What became of one query: the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Matched an FQDN rule: forwarded, its addresses learned.
    Learned,
    /// Matched no rule of a group without `dns.filter`: forwarded only.
    Forwarded,
    /// Matched no rule of a group with `dns.filter`: REFUSED.
    Refused,
    /// From a source in no group: REFUSED.
    UnknownDevice,
    /// Over the source's rate: dropped.
    RateLimited,
    /// Not a standard query: dropped or FORMERR/NOTIMP.
    Malformed,
    /// No upstream answered, or the answer's addresses could not be
    /// learned: SERVFAIL.
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Learned => "learned",
            Outcome::Forwarded => "forwarded",
            Outcome::Refused => "refused",
            Outcome::UnknownDevice => "unknown_device",
            Outcome::RateLimited => "rate_limited",
            Outcome::Malformed => "malformed",
            Outcome::Failed => "servfail",
        }
    }
}

struct Shared {
    config: DnsConfig,
    policy: Arc<RwLock<Arc<CompiledPolicy>>>,
    dataplane: Arc<Mutex<Dataplane>>,
    limiter: Mutex<RateLimiter>,
    metrics: DnsMetrics,
    in_flight: Semaphore,
    /// `dns.leases-file`, resolved.
    leases_file: std::path::PathBuf,
    /// Devices' TCP connections open at once.
    tcp_connections: Arc<Semaphore>,
}

/// How a query came, and so how it is forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

impl DnsService {
    /// Binds every `dns.listen` address (in the calling thread's network
    /// namespace) and starts answering, with `policy` deciding groups and
    /// names until [`DnsService::update_policy`]. First it learns again
    /// what `leases_file` kept from the previous run.
    pub fn start(
        config: &DnsConfig,
        policy: Arc<CompiledPolicy>,
        dataplane: Arc<Mutex<Dataplane>>,
        registry: &prometheus::Registry,
        leases_file: std::path::PathBuf,
    ) -> Result<DnsService> {
        if config.listen.is_empty() {
            bail!("dns.listen is empty: no address to answer on");
        }
        let metrics = DnsMetrics {
            queries: IntCounterVec::new(
                Opts::new(
                    "tollgate_dns_queries_total",
                    "DNS queries from devices to the gateway's forwarder, by group and result \
                     (learned, forwarded, refused, unknown_device, rate_limited, malformed, \
                     servfail).",
                ),
                &["group", "result"],
            )?,
            learned: IntGaugeVec::new(
                Opts::new(
                    "tollgate_fqdn_learned_addresses",
                    "Addresses the DNS forwarder learned for a group's FQDN rules that have not \
                     expired.",
                ),
                &["group"],
            )?,
        };
        registry.register(Box::new(metrics.queries.clone()))?;
        registry.register(Box::new(metrics.learned.clone()))?;
        let policy = Arc::new(RwLock::new(policy));
        let shared = Arc::new(Shared {
            config: config.clone(),
            policy: policy.clone(),
            dataplane,
            limiter: Mutex::new(RateLimiter::new(config.rate_limit)),
            metrics,
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            leases_file,
            tcp_connections: Arc::new(Semaphore::new(tcp::MAX_CONNECTIONS)),
        });
        restore(&shared);
        let mut tasks = Vec::new();
        let mut local_addrs = Vec::new();
        for addr in &config.listen {
            let socket = std::net::UdpSocket::bind(addr)
                .with_context(|| format!("dns.listen: cannot bind {addr}"))?;
            socket.set_nonblocking(true)?;
            let socket = Arc::new(UdpSocket::from_std(socket)?);
            let local = socket.local_addr()?;
            local_addrs.push(local);
            tasks.push(tokio::spawn(serve(socket, shared.clone())));
            let listener = std::net::TcpListener::bind(local)
                .with_context(|| format!("dns.listen: cannot bind {local} (TCP)"))?;
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tasks.push(tokio::spawn(tcp::serve(listener, shared.clone())));
        }
        tasks.push(tokio::spawn(sweep(shared)));
        Ok(DnsService {
            policy,
            local_addrs,
            tasks,
        })
    }

    /// Switches to a new policy's groups and FQDN rules (every reload).
    pub fn update_policy(&self, policy: Arc<CompiledPolicy>) {
        *self.policy.write().expect("dns policy lock") = policy;
    }

    /// The addresses actually bound (a listen port 0 is resolved here).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }
}

async fn serve(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::warn!("dns: receive: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = shared.in_flight.try_acquire() else {
            continue;
        };
        permit.forget();
        let datagram = buf[..len].to_vec();
        let (socket, shared) = (socket.clone(), shared.clone());
        tokio::spawn(async move {
            let (group, outcome, reply) =
                handle(&shared, from.ip(), &datagram, Transport::Udp).await;
            shared
                .metrics
                .queries
                .with_label_values(&[group.as_str(), outcome.label()])
                .inc();
            if let Some(reply) = reply
                && let Err(e) = socket.send_to(&reply, from).await
            {
                tracing::debug!("dns: reply to {from}: {e}");
            }
            shared.in_flight.add_permits(1);
        });
    }
}

/// Answers one query from `source` that came over `transport`: the group
/// label, what became of it and the reply, if any.
async fn handle(
    shared: &Shared,
    source: IpAddr,
    datagram: &[u8],
    transport: Transport,
) -> (String, Outcome, Option<Vec<u8>>) {
    let policy = shared.policy.read().expect("dns policy lock").clone();
    let group = model::group_of(&policy, source);
    let group_name = policy
        .groups
        .get(group as usize)
        .map_or(UNKNOWN_GROUP_NAME, |g| g.name.as_str())
        .to_string();
    let admitted = shared
        .limiter
        .lock()
        .expect("dns limiter lock")
        .admit(source, Instant::now());
    if !admitted {
        return (group_name, Outcome::RateLimited, None);
    }
    let query = match answer::parse_query(datagram) {
        Ok(query) => query,
        Err(NotAQuery::Malformed) => return (group_name, Outcome::Malformed, None),
        Err(NotAQuery::Unsupported(id, code)) => {
            return (
                group_name,
                Outcome::Malformed,
                Some(answer::bare_error(id, code)),
            );
        }
    };
    if group == tollgate_common::UNKNOWN_GROUP {
        let reply = answer::refusal(&query.message, ResponseCode::Refused);
        return (group_name, Outcome::UnknownDevice, Some(reply));
    }
    let rules: Vec<String> = match &query.name {
        Some(name) => policy
            .fqdn_rules_for(group, name)
            .map(|r| r.rule.clone())
            .collect(),
        None => Vec::new(),
    };
    if rules.is_empty() && shared.config.filter.filters(&group_name) {
        let reply = answer::refusal(&query.message, ResponseCode::Refused);
        return (group_name, Outcome::Refused, Some(reply));
    }
    let forwarded = match transport {
        Transport::Udp => forward(&shared.config, &query.message).await,
        Transport::Tcp => tcp::forward(&shared.config, &query.message).await,
    };
    let Some(mut response) = forwarded else {
        let reply = answer::refusal(&query.message, ResponseCode::ServFail);
        return (group_name, Outcome::Failed, Some(reply));
    };
    let outcome = if rules.is_empty() {
        Outcome::Forwarded
    } else if learn(
        shared,
        &group_name,
        &rules,
        query.name.as_deref().unwrap_or_default(),
        &response,
    ) {
        Outcome::Learned
    } else {
        // The device could not reach what it would be told: say so now
        // rather than let it time out connecting.
        let reply = answer::refusal(&query.message, ResponseCode::ServFail);
        return (group_name, Outcome::Failed, Some(reply));
    };
    response.set_id(query.message.id());
    (group_name, outcome, response.to_vec().ok())
}

/// Installs the answer's addresses for `rules` of `group`, before the
/// answer to `name` goes out. False when a map write failed (the dataplane
/// is full or broken); an address the group may not learn (step 12) is only
/// logged.
fn learn(shared: &Shared, group: &str, rules: &[String], name: &str, response: &Message) -> bool {
    let now = monotonic_ns();
    let mut dataplane = shared.dataplane.lock().expect("dataplane lock");
    let mut ok = true;
    for (addr, ttl) in answer::addresses(response) {
        let expires = now + shared.config.lifetime(ttl).as_nanos() as u64;
        for rule in rules {
            match dataplane.learn((group, rule), addr, name, expires) {
                Ok(Ok(())) => {}
                Ok(Err(refused)) => {
                    tracing::warn!(
                        "dns: {addr} not learned for group {group}, rule {rule}: {refused:?}"
                    );
                    ok &= !matches!(refused, crate::datapath::learned::Refused::Full);
                }
                Err(e) => {
                    tracing::error!("dns: learning {addr} for group {group}: {e:#}");
                    ok = false;
                }
            }
        }
    }
    publish_learned(shared, &dataplane);
    ok
}

/// Sends `query` to each upstream in turn, with a fresh id, from a socket
/// connected to it (so only it can answer), until one answers.
async fn forward(config: &DnsConfig, query: &Message) -> Option<Message> {
    let mut outgoing = query.clone();
    for upstream in &config.upstream {
        let id: u16 = rand::random();
        outgoing.set_id(id);
        let Ok(bytes) = outgoing.to_vec() else {
            return None;
        };
        let local: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let Ok(socket) = UdpSocket::bind(local).await else {
            continue;
        };
        if socket.connect(upstream).await.is_err() || socket.send(&bytes).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        let wait = async {
            loop {
                let len = socket.recv(&mut buf).await.ok()?;
                if let Ok(answer) = Message::from_vec(&buf[..len])
                    && answer::answers(&outgoing, id, &answer)
                {
                    return Some(answer);
                }
            }
        };
        if let Ok(Some(answer)) = tokio::time::timeout(config.timeout, wait).await {
            return Some(answer);
        }
    }
    None
}

/// Forgets expired learned addresses, once a second, and keeps the leases
/// file current.
async fn sweep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    let mut saved = None;
    loop {
        tick.tick().await;
        let (changes, leases) = {
            let mut dataplane = shared.dataplane.lock().expect("dataplane lock");
            if let Err(e) = dataplane.sweep_learned() {
                tracing::warn!("dns: sweeping expired learned addresses: {e:#}");
            }
            publish_learned(&shared, &dataplane);
            let changes = dataplane.learned_changes();
            if saved == Some(changes) {
                continue;
            }
            (changes, leases_file::leases(dataplane.learned()))
        };
        let path = shared.leases_file.clone();
        match tokio::task::spawn_blocking(move || leases_file::save(&path, &leases)).await {
            Ok(Ok(())) => saved = Some(changes),
            Ok(Err(e)) => tracing::warn!("dns: keeping the learned addresses: {e:#}"),
            Err(e) => tracing::warn!("dns: keeping the learned addresses: {e}"),
        }
    }
}

/// Learns again what the leases file kept, each against the policy in
/// force (a rule or a group that is gone, a deny that now covers the
/// address: not learned).
fn restore(shared: &Shared) {
    let longest = shared.config.max_ttl + shared.config.grace;
    let restored = match leases_file::load(&shared.leases_file, longest) {
        Ok(restored) => restored,
        Err(e) => {
            tracing::warn!("dns: the kept learned addresses are ignored: {e:#}");
            return;
        }
    };
    if restored.is_empty() {
        return;
    }
    let mut dataplane = shared.dataplane.lock().expect("dataplane lock");
    let mut learned = 0;
    for r in &restored {
        match dataplane.learn((&r.group, &r.rule), r.addr, &r.name, r.expires_ns) {
            Ok(Ok(())) => learned += 1,
            Ok(Err(refused)) => tracing::info!(
                "dns: kept address {} of group {}, rule {} not learned again: {refused:?}",
                r.addr,
                r.group,
                r.rule
            ),
            Err(e) => tracing::warn!("dns: learning kept address {}: {e:#}", r.addr),
        }
    }
    tracing::info!(
        "dns: learned {learned} of {} kept addresses again from {}",
        restored.len(),
        shared.leases_file.display()
    );
    publish_learned(shared, &dataplane);
}

/// Sets `tollgate_fqdn_learned_addresses`: every group with an FQDN rule
/// (0 included) and every group with a learned address.
fn publish_learned(shared: &Shared, dataplane: &Dataplane) {
    let metrics = &shared.metrics;
    metrics.learned.reset();
    let policy = shared.policy.read().expect("dns policy lock").clone();
    for rule in &policy.fqdn_rules {
        if let Some(group) = policy.groups.get(rule.group as usize) {
            metrics
                .learned
                .with_label_values(&[group.name.as_str()])
                .set(0);
        }
    }
    for (group, count) in dataplane.learned_counts() {
        metrics
            .learned
            .with_label_values(&[group.as_str()])
            .set(count as i64);
    }
}
