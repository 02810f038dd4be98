//! metricops: a GitOps-native rollback bot.

pub mod domain;
pub mod adapters;
pub mod revert;
pub mod cli;
pub mod config;
pub mod demo;
pub mod pipeline;
pub mod server;
pub mod metrics;
pub mod evaluator;
pub mod simulate;
