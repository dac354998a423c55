//! Where `check` and `explain` find the policy, and what `gateway` and
//! `ntp` stand for in it: from the flags, else from the controller's
//! configuration.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use tollgate::{
    addresses,
    config::{Config, DEFAULT_CONFIG_PATH, Limits, default_control_socket},
    diagnostic::Diagnostic,
    policy::Environment,
    reload::{PrepareCache, Prepared, prepare},
};

use super::PolicySource;

/// What a command needs besides its own flags.
pub(super) struct Context {
    pub dir: PathBuf,
    pub env: Environment,
    pub limits: Limits,
    /// Said before the results: what `gateway` and `ntp` resolved from.
    pub notes: Vec<String>,
    /// Where the daemon answers (`explain --live`): the config's
    /// `control-socket`, or the default.
    pub control_socket: PathBuf,
}

impl PolicySource {
    /// `ci`: this host is not the gateway; its interfaces say nothing.
    pub(super) fn resolve(mut self, dir: Option<PathBuf>, ci: bool) -> Result<Context, String> {
        if dir.is_none() && self.policy.is_none() && self.config.is_none() {
            let default = Path::new(DEFAULT_CONFIG_PATH);
            if !default.exists() {
                return Err(format!(
                    "no policy to read: give the policy directory (DIR or --policy DIR) or \
                     the controller config (--config FILE); the default config \
                     {DEFAULT_CONFIG_PATH} does not exist"
                ));
            }
            self.config = Some(default.to_path_buf());
        }
        let config = match &self.config {
            Some(path) => Some(Config::load(path).map_err(|d| format!("--config: {d}"))?),
            None => None,
        };
        let dir = dir
            .or(self.policy)
            .or_else(|| config.as_ref().map(|c| c.policy_dir.clone()))
            .expect("a directory or a config, given or the default");
        if !dir.is_dir() {
            return Err(format!("{}: not a directory", dir.display()));
        }
        let from_config = self.config.as_deref().zip(config.as_ref());
        let mut notes = Vec::new();
        let gateway = match from_config {
            _ if !self.gateway.is_empty() => self.gateway,
            Some(_) if ci => Vec::new(),
            Some((path, config)) => gateway_of(path, config, &mut notes),
            None => {
                notes.push(
                    "`gateway` resolves to nothing: give --gateway ADDR or --config FILE".into(),
                );
                Vec::new()
            }
        };
        let ntp = match from_config {
            _ if !self.ntp.is_empty() => self.ntp,
            Some((path, config)) => {
                let ntp = config.ntp.addresses();
                if ntp.is_empty() {
                    notes.push(format!(
                        "`ntp` resolves to nothing: {} sets no ntp.listen address \
                         (no built-in NTP allow)",
                        path.display()
                    ));
                }
                ntp
            }
            None => {
                notes.push(
                    "`ntp` resolves to nothing (no built-in NTP allow): give --ntp ADDR or \
                     --config FILE"
                        .into(),
                );
                Vec::new()
            }
        };
        let control_socket = config
            .as_ref()
            .map_or_else(default_control_socket, |c| c.control_socket.clone());
        Ok(Context {
            dir,
            env: Environment { gateway, ntp },
            limits: config.map_or_else(Limits::default, |c| c.limits),
            notes,
            control_socket,
        })
    }
}

/// The current addresses of the config's device-facing interfaces, noting
/// those this host does not have. When it has none of them, it is not the
/// gateway (a CI runner, a laptop): nothing is noted.
fn gateway_of(path: &Path, config: &Config, notes: &mut Vec<String>) -> Vec<IpAddr> {
    let found: Vec<_> = config
        .interfaces
        .iter()
        .map(|name| (name, addresses::of_interface(name)))
        .collect();
    if found.iter().all(|(_, f)| matches!(f, Ok(None))) {
        return Vec::new();
    }
    let mut addresses = Vec::new();
    for (name, found) in found {
        match found {
            Ok(Some(found)) => addresses.extend(found),
            Ok(None) => notes.push(format!(
                "interface {name} (from {}) does not exist on this host: `gateway` has no \
                 addresses from it (give --gateway ADDR)",
                path.display()
            )),
            Err(e) => notes.push(format!("interface {name}: {e:#}")),
        }
    }
    addresses
}

/// Loads and compiles; `Err` holds every error and warning.
pub(super) fn build(ctx: &Context) -> Result<Prepared, Vec<Diagnostic>> {
    prepare(
        &ctx.dir,
        &ctx.env,
        &ctx.limits,
        &mut PrepareCache::default(),
    )
}
