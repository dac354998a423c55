//! The policy language: loading a directory of YAML files, validating it and
//! the validated policy that `compile` and the reference model read.

pub mod positions;
