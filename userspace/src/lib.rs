//! Tollgate's controller: policy language, compiler, reference model,
//! dataplane management, hot reload, metrics and the private NTP server.
//!
//! The binary in `main.rs` is a thin CLI over this library.

pub mod config;
pub mod datapath;
pub mod diagnostic;
pub mod lab;
pub mod netns;
pub mod ntp;
pub mod tables;
