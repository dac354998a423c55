//! `tollgate run`: the daemon an operator runs under systemd.
//!
//! Start-up order is what keeps a gateway safe:
//! 1. open the dataplane, adopting the maps a previous run pinned;
//! 2. load, validate and compile the policy;
//! 3. install it, and only then attach (or re-adopt the pinned links).
//!
//! A fresh start without a valid policy attaches nothing and exits with an
//! error: an empty dataplane would let everything through. A restart whose
//! policy is now invalid keeps filtering with the last good policy the
//! pinned maps still hold, and says so.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    addresses,
    attachments::{Attachments, InterfaceState},
    config::{Config, OnExit},
    control::{self, PolicyStatus, ReloadStatus, Status},
    datapath::{Dataplane, Options, Start},
    deny_log::{self, CounterLabel},
    diagnostic::Diagnostic,
    links::InterfaceChanges,
    metrics::{DataplaneCollector, Metrics, RuleLabels, ScrapeView},
    ntp::{NtpService, SourceGroups},
    policy::{Action, Environment, ParseCache, Policy},
    reload::{Candidate, ChangeSummary, prepare, watch::PolicyWatcher},
    systemd::{self, monotonic_usec, notify},
    tables::{CompiledPolicy, CounterOwner, Decider},
};

/// How the daemon logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The prefix journald field names of events get: `group` becomes
/// `TOLLGATE_GROUP=`. (The library glues it to its own metadata fields
/// without the underscore: `TOLLGATETARGET=`, `TOLLGATECODE_FILE=`.)
pub const JOURNAL_FIELD_PREFIX: &str = "TOLLGATE";

/// Sets up logging, level from `RUST_LOG` (default `info`):
/// - under systemd (`$JOURNAL_STREAM` names our stderr: systemd connected
///   it to the journal) with the text format, natively to journald when
///   its socket answers: priorities from the levels
///   (error 3, warn 4, info 6, debug and trace 7), journald's own
///   timestamps, and every field as `TOLLGATE_<NAME>=`;
/// - else text on stderr, or one JSON object per line with `--log-format
///   json` (wherever it runs).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if format == LogFormat::Text
        && stderr_is_journal_stream()
        && let Ok(journald) = journald_layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .init();
        return;
    }
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Whether `$JOURNAL_STREAM` (`DEVICE:INODE`, set by systemd for a service
/// whose stderr goes to the journal) names our stderr, as systemd.exec(5)
/// recommends checking: a child whose stderr was redirected elsewhere
/// inherits the variable but should log where its stderr goes.
fn stderr_is_journal_stream() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat writes into the stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(libc::STDERR_FILENO, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// The journald layer, or why journald cannot be reached.
pub fn journald_layer() -> std::io::Result<tracing_journald::Layer> {
    use tracing_journald::{Priority, PriorityMappings};
    Ok(tracing_journald::layer()?
        .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.into()))
        .with_syslog_identifier("tollgate".into())
        .with_priority_mappings(PriorityMappings {
            error: Priority::Error,
            warn: Priority::Warning,
            info: Priority::Informational,
            debug: Priority::Debug,
            trace: Priority::Debug,
        }))
}

/// `tollgate run --check-config`: the config and the policy it points to
/// are valid. Touches nothing in the kernel.
pub fn check_config(config: &Config) -> Result<(), Vec<Diagnostic>> {
    let host = crate::preflight::check(config).map_err(|e| {
        vec![Diagnostic::error(
            Path::new("configuration"),
            0,
            0,
            "",
            format!("{e:#}"),
        )]
    })?;
    for w in host {
        eprintln!("warning: {w}");
    }
    let env = environment(config);
    let candidate = prepare(
        &config.policy_dir,
        &env,
        &config.limits,
        &mut ParseCache::default(),
    )?;
    for w in &candidate.warnings {
        eprintln!("{w}");
    }
    Ok(())
}

fn environment(config: &Config) -> Environment {
    Environment {
        gateway: addresses::current(&config.interfaces).unwrap_or_default(),
        ntp: config.ntp.addresses(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a reload's blocking task hands back: the outcome and the cache.
type Prepared = (Result<Candidate, Vec<Diagnostic>>, ParseCache);

/// The policy in force, as this process installed it.
struct Installed {
    policy: Policy,
    tables: CompiledPolicy,
    commit: Option<String>,
}

pub struct Daemon {
    config: Config,
    dataplane: Arc<Mutex<Dataplane>>,
    metrics: Arc<Metrics>,
    view: Arc<RwLock<ScrapeView>>,
    status: Arc<RwLock<Status>>,
    /// Kernel counter → labels, for the current and the previous policy
    /// (an event read just after a swap may name the previous one).
    event_labels: deny_log::Labels,
    installed: Option<Installed>,
    generation: u64,
    gateway: Vec<IpAddr>,
    /// READY=1 was sent: reloads report RELOADING/READY to systemd.
    ready: bool,
    /// The private NTP server, when `ntp.listen` names addresses.
    ntp: Option<Arc<NtpService>>,
    /// The policy files as last parsed. Moved into each reload's blocking
    /// task and back; a reload abandoned past its time budget takes it
    /// along, and the next one starts afresh.
    parse_cache: Option<ParseCache>,
    /// Becomes true on SIGTERM or SIGINT, also while a reload runs.
    stop: tokio::sync::watch::Receiver<bool>,
    /// A preparation abandoned past its time budget, still running.
    abandoned: Option<tokio::task::JoinHandle<Prepared>>,
    /// SIGHUP, caught from the start (its default action would kill us),
    /// handled by the main loop.
    hangup: Option<tokio::signal::unix::Signal>,
    /// The configured interfaces and what is attached to each.
    attachments: Attachments,
    /// `WATCHDOG=1` pings for systemd (`WatchdogSec=`), from the main
    /// loop's task: a stuck loop stops pinging.
    watchdog: Option<tokio::time::Interval>,
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
        let options = Options {
            pin_dir: Some(config.pin_dir.clone()),
            limits: config.limits,
            deny_events: config.deny_events,
            pass_ethertypes: config.pass_ethertypes.clone(),
        };
        let dataplane = Dataplane::open(&options)?;
        match dataplane.start() {
            Start::Fresh => tracing::info!("dataplane loaded (fresh start)"),
            Start::Adopted => tracing::info!(
                "dataplane adopted from {} (the last policy stayed in force meanwhile)",
                config.pin_dir.display()
            ),
            Start::Upgraded { reason } => tracing::warn!(
                "dataplane layout changed ({reason}): new maps, counters restart from zero; \
                 the previous program keeps filtering until it is replaced"
            ),
        }
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
        let dataplane = Arc::new(Mutex::new(dataplane));
        let view = Arc::new(RwLock::new(ScrapeView::default()));
        metrics
            .registry()
            .register(Box::new(DataplaneCollector::new(
                dataplane.clone(),
                view.clone(),
                config.metrics.rule_series_limit,
            )?))?;
        let mut daemon = Daemon {
            gateway: addresses::current(&config.interfaces)?,
            attachments: Attachments::new(&config.interfaces, config.attach),
            config,
            dataplane,
            metrics,
            view,
            status: Arc::new(RwLock::new(status)),
            event_labels: Arc::new(RwLock::new(HashMap::new())),
            installed: None,
            generation: 0,
            ready: false,
            ntp: None,
            parse_cache: Some(ParseCache::default()),
            stop: stop_signals()?,
            abandoned: None,
            hangup: Some(signal(SignalKind::hangup())?),
            watchdog: systemd::watchdog_interval().map(|every| {
                let mut i = tokio::time::interval(every);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            }),
        };

        let installed = daemon.reload("start").await;
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
            daemon.ntp = Some(Arc::new(service));
        }
        Ok(daemon)
    }

    /// Who may ask for the time: the devices of the installed policy's
    /// groups, and `ntp.allow`.
    fn ntp_sources(&self) -> SourceGroups {
        let empty = CompiledPolicy::default();
        let tables = self.installed.as_ref().map_or(&empty, |i| &i.tables);
        SourceGroups::from_policy(tables, &self.config.ntp.allow)
    }

    /// Attaches to every configured interface present now. An interface of
    /// a link type Tollgate cannot parse, or one it cannot attach to, stops
    /// the start with that error; a missing one is attached when it appears.
    fn attach_at_start(&mut self) -> Result<()> {
        self.reconcile_interfaces()?;
        for (name, state) in self.attachments.states() {
            match state {
                InterfaceState::Refused(e) => bail!("{e}"),
                InterfaceState::Failed(e) => bail!("attach to {name}: {e}"),
                _ => {}
            }
        }
        Ok(())
    }

    /// Attaches to configured interfaces that appeared or were recreated,
    /// forgets those that went, and publishes the result.
    fn reconcile_interfaces(&mut self) -> Result<()> {
        let changes = {
            let mut dp = self.dataplane.lock().expect("dataplane lock");
            self.attachments.reconcile(&mut dp)?
        };
        for c in &changes {
            match c.now {
                InterfaceState::Attached(_) => tracing::info!("{c}"),
                InterfaceState::Missing | InterfaceState::Pending => tracing::warn!("{c}"),
                InterfaceState::Refused(_) | InterfaceState::Failed(_) => tracing::error!("{c}"),
            }
        }
        self.view.write().expect("view lock").interfaces = self.attachments.gauge_view();
        self.status.write().expect("status lock").interfaces = self.attachments.statuses();
        if !changes.is_empty() && self.ready {
            self.publish_systemd_status();
        }
        Ok(())
    }

    async fn serve(&mut self) -> Result<()> {
        let listener = crate::metrics::bind(self.config.metrics.listen).await?;
        tracing::info!("metrics on http://{}/metrics", self.config.metrics.listen);
        let metrics_task = tokio::spawn(crate::metrics::serve(listener, self.metrics.clone()));
        let control = control::bind(&self.config.control_socket)?;
        let ntp = self.ntp.clone();
        let refresh: control::Refresh = Arc::new(move |s: &mut Status| {
            s.ntp = ntp
                .as_ref()
                .and_then(|n| serde_json::to_value(n.status()).ok());
        });
        let control_task = tokio::spawn(control::serve(control, self.status.clone(), refresh));
        let events_task = deny_log::spawn(self.dataplane.clone(), self.event_labels.clone())?;

        let mut watcher = PolicyWatcher::new(&self.config.policy_dir)?;
        let mut interface_changes = InterfaceChanges::subscribe()?;
        // A link may have come or gone between the start and the
        // subscription.
        self.reconcile_interfaces()?;
        let mut hangup = self
            .hangup
            .take()
            .ok_or_else(|| anyhow!("the main loop runs once"))?;
        let mut stop = self.stop.clone();
        notify("READY=1");
        self.ready = true;
        self.publish_systemd_status();
        if let Some(every) = self.watchdog.as_ref().map(|w| w.period()) {
            tracing::info!("systemd watchdog: pinging every {every:?}");
        }
        tracing::info!("ready");

        loop {
            tokio::select! {
                changed = watcher.changed() => {
                    changed.ok_or_else(|| anyhow!("policy watcher stopped"))?;
                    self.reload("watch").await;
                }
                _ = hangup.recv() => {
                    self.reload("sighup").await;
                }
                changed = interface_changes.next() => {
                    changed?;
                    self.reconcile_interfaces()?;
                    let now = addresses::current(&self.config.interfaces)?;
                    if now != self.gateway {
                        tracing::info!("gateway addresses now {now:?}");
                        self.gateway = now;
                        self.reload("addresses").await;
                    }
                }
                _ = watchdog_tick(&mut self.watchdog) => notify("WATCHDOG=1"),
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        notify("STOPPING=1");
        metrics_task.abort();
        control_task.abort();
        events_task.abort();
        let _ = std::fs::remove_file(&self.config.control_socket);
        // The status hook may still hold a reference; dropping the last one
        // stops the server too.
        if let Some(ntp) = self.ntp.take()
            && let Ok(ntp) = Arc::try_unwrap(ntp)
        {
            ntp.shutdown().await;
        }
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        match self.config.on_exit {
            OnExit::Keep => {
                tracing::info!(
                    "exiting; filtering continues with generation {} (on-exit: keep)",
                    self.generation
                );
                Ok(())
            }
            OnExit::Detach => {
                tracing::info!("exiting; detaching (on-exit: detach)");
                self.dataplane.lock().expect("dataplane lock").detach_all()
            }
        }
    }

    /// Loads, validates, compiles and installs the policy. Returns whether a
    /// policy is now installed by this process. On any error the running
    /// policy stays untouched.
    async fn reload(&mut self, trigger: &str) -> bool {
        if self.ready {
            notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        }
        let started = Instant::now();
        let env = Environment {
            gateway: self.gateway.clone(),
            ntp: self.config.ntp.addresses(),
        };
        let dir = self.config.policy_dir.clone();
        let limits = self.config.limits;
        let budget = limits.reload_timeout;
        let mut stop = self.stop.clone();
        // One preparation at a time: one abandoned past its budget (its
        // thread cannot be killed) is waited for first, within this budget.
        if let Some(mut previous) = self.abandoned.take() {
            let finished = {
                let wait = tokio::time::timeout(budget, &mut previous);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        done = &mut wait => break done.is_ok(),
                        _ = stop.wait_for(|s| *s) => break false,
                        _ = watchdog_tick(&mut self.watchdog) => notify("WATCHDOG=1"),
                    }
                }
            };
            if !finished {
                self.abandoned = Some(previous);
            }
        }
        let prepared = if self.abandoned.is_some() {
            Err(vec![self.reload_error(format!(
                "an earlier reload abandoned past limits.reload-timeout ({}) is still running; \
                 this one is retried on the next change or SIGHUP",
                humantime_serde::re::humantime::format_duration(budget)
            ))])
        } else {
            let mut cache = self.parse_cache.take().unwrap_or_default();
            // Off the main loop and within the time budget: signals, status,
            // metrics and NTP keep answering whatever the directory holds.
            let mut task = tokio::task::spawn_blocking(move || {
                let prepared = prepare(&dir, &env, &limits, &mut cache);
                (prepared, cache)
            });
            // The reload waits within its budget in the main loop's task,
            // which keeps pinging the watchdog meanwhile.
            let joined = {
                let wait = tokio::time::timeout(budget, &mut task);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        joined = &mut wait => break Some(joined),
                        _ = stop.wait_for(|s| *s) => break None,
                        _ = watchdog_tick(&mut self.watchdog) => notify("WATCHDOG=1"),
                    }
                }
            };
            match joined {
                Some(joined) => match joined {
                    Ok(Ok((prepared, cache))) => {
                        self.parse_cache = Some(cache);
                        prepared
                    }
                    Ok(Err(e)) => Err(vec![panic_diagnostic(&e)]),
                    Err(_) => {
                        self.abandoned = Some(task);
                        Err(vec![self.reload_error(format!(
                            "preparing the policy took longer than limits.reload-timeout ({}); \
                             abandoned",
                            humantime_serde::re::humantime::format_duration(budget)
                        ))])
                    }
                },
                None => {
                    self.abandoned = Some(task);
                    Err(vec![self.reload_error(
                        "reload abandoned: the controller is stopping".into(),
                    )])
                }
            }
        };
        let outcome = match prepared {
            Err(errors) => Err(errors),
            Ok(candidate) => self.install(candidate, started).map_err(|e| {
                vec![Diagnostic::error(
                    &self.config.policy_dir,
                    0,
                    0,
                    "",
                    format!("install failed: {e:#}"),
                )]
            }),
        };
        let elapsed = started.elapsed();
        self.metrics.last_reload_timestamp.set(unix_now() as f64);
        self.metrics.last_reload_duration.set(elapsed.as_secs_f64());
        let record = match &outcome {
            Ok(summary) => {
                self.metrics.reloads.with_label_values(&["success"]).inc();
                self.metrics.last_reload_success.set(1);
                ReloadStatus {
                    success: true,
                    at_unix: unix_now(),
                    duration_ms: elapsed.as_secs_f64() * 1e3,
                    trigger: trigger.into(),
                    errors: Vec::new(),
                    summary: summary.clone(),
                }
            }
            Err(errors) => {
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                self.metrics.last_reload_success.set(0);
                let in_force = if self.installed.is_some() {
                    format!("generation {} stays in force", self.generation)
                } else {
                    "the policy already in the dataplane stays in force".into()
                };
                tracing::error!(
                    "policy reload ({trigger}) failed with {} error(s); {in_force}",
                    errors.iter().filter(|d| d.is_error()).count()
                );
                for d in errors {
                    if d.is_error() {
                        tracing::error!("{d}");
                    } else {
                        tracing::warn!("{d}");
                    }
                }
                ReloadStatus {
                    success: false,
                    at_unix: unix_now(),
                    duration_ms: elapsed.as_secs_f64() * 1e3,
                    trigger: trigger.into(),
                    errors: errors
                        .iter()
                        .filter(|d| d.is_error())
                        .map(ToString::to_string)
                        .collect(),
                    summary: String::new(),
                }
            }
        };
        self.status.write().expect("status lock").last_reload = Some(record);
        if self.ready {
            notify("READY=1");
            self.publish_systemd_status();
        }
        outcome.is_ok() || self.installed.is_some()
    }

    /// `STATUS=` for `systemctl status`: the generation in force, its
    /// commit and what is attached where.
    fn publish_systemd_status(&self) {
        let commit = self.installed.as_ref().and_then(|i| i.commit.as_deref());
        let attached: Vec<(String, String)> = self
            .attachments
            .gauge_view()
            .into_iter()
            .filter_map(|(name, a)| a.map(|(mode, _)| (name, mode.as_str().to_string())))
            .collect();
        notify(&format!(
            "STATUS={}",
            systemd::status_line(self.generation, commit, &attached)
        ));
    }

    fn reload_error(&self, message: String) -> Diagnostic {
        Diagnostic::error(&self.config.policy_dir, 0, 0, "", message)
    }

    /// Swaps `candidate` in (when it differs from what runs) and updates
    /// everything that describes the policy. Returns the change summary.
    fn install(&mut self, candidate: Candidate, started: Instant) -> Result<String> {
        for w in &candidate.warnings {
            tracing::warn!("{w}");
        }
        let summary = ChangeSummary::between(
            self.installed.as_ref().map(|i| &i.policy),
            &candidate.policy,
        );
        let commit = candidate.commit.clone().unwrap_or_default();
        if let Some(current) = &mut self.installed
            && current.tables == candidate.tables
            && current.policy == candidate.policy
        {
            tracing::info!(
                "policy unchanged (generation {}, commit {})",
                self.generation,
                if commit.is_empty() { "none" } else { &commit }
            );
            if current.commit != candidate.commit {
                current.commit = candidate.commit.clone();
                self.metrics.policy_info.reset();
                self.metrics
                    .policy_info
                    .with_label_values(&[&commit])
                    .set(1);
                self.status.write().expect("status lock").policy.commit = candidate.commit;
            }
            return Ok("unchanged".into());
        }
        let report = self
            .dataplane
            .lock()
            .expect("dataplane lock")
            .install(&candidate.tables)?;
        self.generation += 1;
        tracing::info!(
            "policy generation {} in force (commit {}): {summary}; {} entries, {} map writes, swap {:.1} ms, reload {:.1} ms",
            self.generation,
            if commit.is_empty() { "none" } else { &commit },
            candidate.tables.destinations.len()
                + candidate.tables.device_exact.len()
                + candidate.tables.device_prefixes.len(),
            report.writes.inserted + report.writes.removed,
            report.total.as_secs_f64() * 1e3,
            started.elapsed().as_secs_f64() * 1e3,
        );
        self.describe(&candidate)?;
        self.installed = Some(Installed {
            policy: candidate.policy,
            tables: candidate.tables,
            commit: candidate.commit,
        });
        if let Some(ntp) = &self.ntp {
            ntp.update_sources(self.ntp_sources());
        }
        Ok(summary.to_string())
    }

    /// Refreshes metrics labels, status and event labels for a new policy.
    fn describe(&self, c: &Candidate) -> Result<()> {
        let dp = self.dataplane.lock().expect("dataplane lock");
        let mut rules = Vec::new();
        let mut labels = HashMap::new();
        for (logical, owner) in c.tables.counters.iter().enumerate() {
            let CounterOwner::Decision { group, decider } = owner else {
                continue;
            };
            let (action, file, line) = match decider {
                Decider::Rule(id) => {
                    let rule = c
                        .policy
                        .rule(group, id)
                        .ok_or_else(|| anyhow!("rule {group}/{id} missing from the policy"))?;
                    (rule.action, rule.origin.file.clone(), rule.origin.line)
                }
                Decider::GroupDefault => {
                    let (default, file, line) =
                        match c.policy.group(c.policy.group_id(group).unwrap_or(0)) {
                            Some(g) => (
                                g.default,
                                g.default_origin.file.clone(),
                                g.default_origin.line,
                            ),
                            None => (
                                c.policy.unknown_devices,
                                c.policy
                                    .unknown_devices_origin
                                    .as_ref()
                                    .map(|o| o.file.clone())
                                    .unwrap_or_default(),
                                c.policy
                                    .unknown_devices_origin
                                    .as_ref()
                                    .map_or(0, |o| o.line),
                            ),
                        };
                    (default, file, line)
                }
                Decider::BuiltinNtp => (Action::Allow, String::new(), 0),
            };
            let rule = decider.rule_id().to_string();
            if let Some(index) = dp.counter_index(logical as u32) {
                labels.insert(
                    index,
                    CounterLabel {
                        group: group.clone(),
                        rule: rule.clone(),
                        file: file.clone(),
                        line,
                    },
                );
            }
            rules.push(RuleLabels {
                group: group.clone(),
                rule,
                owner: owner.clone(),
                action: action.label(),
                file,
                line,
            });
        }
        drop(dp);
        {
            let mut view = self.view.write().expect("view lock");
            view.groups = c.tables.groups.iter().map(|g| g.name.clone()).collect();
            view.rules = rules;
        }
        {
            let mut l = self.event_labels.write().expect("labels lock");
            // Keep the previous policy's labels: events may still name them.
            l.extend(labels);
        }
        self.metrics.generation.set(self.generation as i64);
        self.metrics.policy_info.reset();
        self.metrics
            .policy_info
            .with_label_values(&[c.commit.as_deref().unwrap_or("")])
            .set(1);
        self.metrics.policy_rules.reset();
        for g in &c.policy.groups {
            self.metrics
                .policy_rules
                .with_label_values(&[&g.name])
                .set(g.rules.len() as i64);
        }
        let mut status = self.status.write().expect("status lock");
        status.policy = PolicyStatus {
            dir: self.config.policy_dir.clone(),
            generation: self.generation,
            commit: c.commit.clone(),
            groups: c.policy.groups.len(),
            rules: c.policy.rule_count(),
            installed_at_unix: unix_now(),
            gateway: c.policy.gateway.clone(),
        };
        Ok(())
    }
}

/// The next watchdog tick; never, without a watchdog.
async fn watchdog_tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
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

fn panic_diagnostic(e: &tokio::task::JoinError) -> Diagnostic {
    Diagnostic::error(
        Path::new(""),
        0,
        0,
        "",
        format!("policy loader crashed: {e}"),
    )
}

/// Where `tollgate status` finds the daemon.
pub fn control_socket_of(config_path: Option<&Path>) -> Result<PathBuf> {
    match config_path {
        Some(p) => Ok(Config::load(p).map_err(|d| anyhow!("{d}"))?.control_socket),
        None => Ok(crate::config::default_control_socket()),
    }
}
