//! `tollgate run`: the daemon an operator runs under systemd.
//!
//! Start-up order is what keeps a gateway safe:
//! 1. open the dataplane, adopting the maps a previous run pinned, while
//!    2. the policy is loaded, validated and compiled (`opening.rs`);
//! 3. install it, and only then attach (or re-adopt the pinned links).
//!
//! A fresh start without a valid policy attaches nothing and exits with an
//! error: an empty dataplane would let everything through. A restart whose
//! policy is now invalid keeps filtering with the last good policy the
//! pinned maps still hold, and says so.
//!
//! Then the main loop (`serve.rs`) reloads on policy changes, SIGHUP and
//! address changes ([`crate::reload`]), follows interfaces as they come and
//! go (`interfaces.rs`), and pings systemd's watchdog.

mod interfaces;
mod ntp_fast;
mod opening;
mod serve;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{
    addresses,
    attachments::Attachments,
    config::Config,
    control::{Status, unix_now},
    datapath::{Dataplane, Start},
    diagnostic::Diagnostic,
    dns::DnsService,
    metrics::{DataplaneCollector, Metrics, ScrapeView},
    ntp::{NtpService, SourceGroups},
    policy::Environment,
    reload::{Prepared, Reloader, Targets},
    systemd::{self, Watchdog, monotonic_usec, notify},
    tables::CompiledPolicy,
};

pub struct Daemon {
    config: Config,
    dataplane: Arc<Mutex<Dataplane>>,
    metrics: Arc<Metrics>,
    view: Arc<RwLock<ScrapeView>>,
    status: Arc<RwLock<Status>>,
    /// Prepares, installs and describes each policy.
    reloader: Reloader,
    /// What the keyword `gateway` stands for now.
    gateway: Vec<IpAddr>,
    /// READY=1 was sent: reloads report RELOADING/READY to systemd.
    ready: bool,
    /// The private NTP server, when `ntp.listen` names addresses.
    ntp: Option<Arc<NtpService>>,
    /// The DNS forwarder of FQDN rules, when `dns.listen` names addresses.
    dns: Option<DnsService>,
    /// Becomes true on SIGTERM or SIGINT, also while a reload runs.
    stop: tokio::sync::watch::Receiver<bool>,
    /// SIGHUP, caught from the start (its default action would kill us),
    /// handled by the main loop.
    hangup: Option<Signal>,
    /// The configured interfaces and what is attached to each.
    attachments: Attachments,
    watchdog: Watchdog,
}

impl Daemon {
    /// Runs until SIGTERM/SIGINT.
    pub async fn run(config: Config) -> Result<()> {
        let mut daemon = Daemon::start(config).await?;
        daemon.serve().await
    }

    async fn start(config: Config) -> Result<Daemon> {
        // Before anything is loaded or pinned.
        for w in crate::preflight::check(&config)? {
            tracing::warn!("{w}");
        }
        // Caught from the start: a SIGTERM stops the policy's preparation.
        let mut stop = stop_signals()?;
        let hangup = signal(SignalKind::hangup())?;
        let mut watchdog = Watchdog::from_env();
        let gateway = addresses::current(&config.interfaces)?;
        let env = Environment {
            gateway: gateway.clone(),
            ntp: config.ntp.addresses(),
        };
        let opening::Opened {
            dataplane,
            preparer,
            prepared,
            started,
        } = opening::open_and_prepare(&config, env, &mut stop, &mut watchdog).await?;
        let adopted = *dataplane.start() == Start::Adopted;
        let status = Status {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            started_at_unix: unix_now(),
            dataplane_start: match dataplane.start() {
                Start::Fresh => "fresh",
                Start::Adopted => "adopted",
                Start::Upgraded { .. } => "upgraded",
            }
            .into(),
            ..Status::default()
        };
        let metrics = Arc::new(Metrics::new()?);
        let mut dataplane = dataplane;
        dataplane.set_ntp_fast_virtual(config.ntp.fast_path && config.ntp.fast_path_virtual);
        let mut ntp_fast = dataplane.take_ntp_fast()?;
        let ntp_samples = dataplane.take_ntp_samples()?;
        // Off until the NTP service runs (pinned maps keep a previous
        // run's addresses).
        ntp_fast.set_addresses(&[])?;
        let dataplane = Arc::new(Mutex::new(dataplane));
        let view = Arc::new(RwLock::new(ScrapeView::default()));
        let status = Arc::new(RwLock::new(status));
        metrics
            .registry()
            .register(Box::new(DataplaneCollector::new(
                dataplane.clone(),
                view.clone(),
                config.metrics.rule_series_limit,
            )?))?;
        let mut daemon = Daemon {
            gateway,
            attachments: Attachments::new(&config.interfaces, config.attach),
            reloader: Reloader::new(
                config.policy_dir.clone(),
                config.limits,
                Targets {
                    dataplane: dataplane.clone(),
                    metrics: metrics.clone(),
                    view: view.clone(),
                    status: status.clone(),
                },
                preparer,
            ),
            config,
            dataplane,
            metrics,
            view,
            status,
            ready: false,
            ntp: None,
            dns: None,
            stop,
            hangup: Some(hangup),
            watchdog,
        };

        let installed = daemon.install_first(prepared, started);
        if !installed && !adopted {
            bail!(
                "no valid policy in {} and none in force: refusing to attach an empty dataplane",
                daemon.config.policy_dir.display()
            );
        }
        if !installed {
            tracing::error!(
                "the policy in {} is invalid; the last good policy from the previous run stays in force",
                daemon.config.policy_dir.display()
            );
        }
        daemon.attach_at_start()?;
        if !daemon.config.ntp.listen.is_empty() {
            let sources = daemon.ntp_sources();
            let service = NtpService::start(&daemon.config.ntp, sources, daemon.metrics.registry())
                .context("start the NTP server")?;
            tracing::info!("NTP served on {:?}", service.local_addrs());
            let service = Arc::new(service);
            if daemon.config.ntp.fast_path {
                ntp_fast
                    .set_addresses(service.local_addrs())
                    .context("ntp.fast-path: write the listen addresses")?;
                tokio::spawn(ntp_fast::keep_current(Arc::downgrade(&service), ntp_fast));
                tokio::spawn(ntp_fast::record_samples(
                    Arc::downgrade(&service),
                    ntp_samples,
                ));
                tokio::spawn(ntp_fast::watch_replies(daemon.dataplane.clone()));
            }
            daemon.ntp = Some(service);
        }
        if !daemon.config.dns.listen.is_empty() {
            let service = DnsService::start(
                &daemon.config.dns,
                daemon.dns_policy(),
                daemon.dataplane.clone(),
                daemon.metrics.registry(),
                crate::dns::leases_file::path_of(&daemon.config),
            )
            .context("start the DNS forwarder")?;
            tracing::info!("DNS forwarded on {:?}", service.local_addrs());
            daemon.dns = Some(service);
        }
        Ok(daemon)
    }

    /// Who may ask for the time: the devices of the installed policy's
    /// groups, and `ntp.allow`.
    fn ntp_sources(&self) -> SourceGroups {
        let empty = CompiledPolicy::default();
        let tables = self.reloader.tables().unwrap_or(&empty);
        SourceGroups::from_policy(tables, &self.config.ntp.allow)
    }

    /// The installed policy's groups and FQDN rules, for the DNS forwarder
    /// (none before one is installed: every source is then unknown).
    fn dns_policy(&self) -> Arc<CompiledPolicy> {
        Arc::new(
            self.reloader
                .tables()
                .map(CompiledPolicy::learning_view)
                .unwrap_or_default(),
        )
    }

    /// Reloads the policy, telling systemd, and points the NTP server at
    /// the new policy's devices. Returns whether a policy this process
    /// installed is in force.
    async fn reload(&mut self, trigger: &str) -> bool {
        if self.ready {
            notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        }
        let env = Environment {
            gateway: self.gateway.clone(),
            ntp: self.config.ntp.addresses(),
        };
        let generation = self.reloader.generation();
        let mut stop = self.stop.clone();
        let in_force = self
            .reloader
            .reload(trigger, env, &mut stop, &mut self.watchdog)
            .await;
        if self.reloader.generation() != generation
            && let Some(ntp) = &self.ntp
        {
            ntp.update_sources(self.ntp_sources());
        }
        if self.reloader.generation() != generation
            && let Some(dns) = &self.dns
        {
            dns.update_policy(self.dns_policy());
        }
        if self.ready {
            notify("READY=1");
            self.publish_systemd_status();
        }
        crate::heap::release_free_memory();
        in_force
    }

    /// Installs the policy the start prepared, as [`Daemon::reload`] would
    /// (before READY=1 and the NTP and DNS services there is no one else
    /// to tell). Returns whether a policy this process installed is in
    /// force.
    fn install_first(
        &mut self,
        prepared: Result<Prepared, Vec<Diagnostic>>,
        started: Instant,
    ) -> bool {
        let in_force = self.reloader.install_prepared("start", prepared, started);
        crate::heap::release_free_memory();
        in_force
    }

    /// `STATUS=` for `systemctl status`: the generation in force, its
    /// commit and what is attached where.
    fn publish_systemd_status(&self) {
        let attached: Vec<(String, String)> = self
            .attachments
            .gauge_view()
            .into_iter()
            .filter_map(|(name, a)| a.map(|(mode, _)| (name, mode.as_str().to_string())))
            .collect();
        notify(&format!(
            "STATUS={}",
            systemd::status_line(
                self.reloader.generation(),
                self.reloader.commit(),
                &attached
            )
        ));
    }
}

/// A flag that turns true on SIGTERM or SIGINT, watched by the main loop
/// and by a reload in progress alike.
fn stop_signals() -> Result<tokio::sync::watch::Receiver<bool>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}
