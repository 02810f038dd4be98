//! metricops: a GitOps-native rollback bot.

pub mod adapters;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod evaluator;
pub mod event;
pub mod forge;
pub mod history;
pub mod journal;
pub mod metrics;
pub mod pipeline;
pub mod revert;
pub mod server;
pub mod simulate;
pub mod wiring;
