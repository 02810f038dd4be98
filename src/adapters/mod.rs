//! Thin adapters, each named after the system it talks to.

pub mod git;
pub mod github;
