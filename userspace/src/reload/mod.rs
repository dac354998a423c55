//! Hot reload: notice policy changes, then load, validate, compile and swap
//! them in, keeping the last good policy when a new one is bad.

pub mod watch;
