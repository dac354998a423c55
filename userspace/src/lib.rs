//! Tollgate's controller: policy language, compiler, reference model,
//! dataplane management, hot reload, metrics and the private NTP server.
//!
//! The binary in `main.rs` is a thin CLI over this library.

pub mod addresses;
pub mod attachments;
pub mod compile;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod deny_log;
pub mod diagnostic;
pub mod expectations;
pub mod explain;
pub mod frames;
pub mod git;
pub mod lab;
pub mod labels;
#[cfg(test)]
mod layering_tests;
pub mod links;
pub mod lists_import;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod ntp;
pub mod policy;
pub mod preflight;
pub mod reload;
pub mod systemd;
pub mod tables;
