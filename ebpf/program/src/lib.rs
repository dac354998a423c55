//! Empty library target: it lets `userspace` name this crate as a build
//! dependency, so cargo rebuilds the embedded BPF object when it changes.
#![no_std]
