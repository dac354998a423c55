//! Tollgate's controller: policy language, compiler, reference model,
//! dataplane management, hot reload, metrics and the private NTP server.
//!
//! The binary in `main.rs` is a thin CLI over this library.

pub mod compile;
pub mod config;
pub mod datapath;
pub mod diagnostic;
pub mod explain;
pub mod host;
pub mod lab;
pub mod model;
pub mod netns;
pub mod policy;
pub mod tables;
