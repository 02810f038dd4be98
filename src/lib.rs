//! metricops: a GitOps-native rollback bot.

pub mod domain;
pub mod adapters;
