//! The one integration-test binary: real git repositories, the real `metricops` binary.

mod support;

mod admission;
mod architecture;
mod bench_admission;
mod bench_pr;
mod chatops;
mod cluster;
mod crash;
mod demo;
mod deploy;
mod e2e;
mod git_https;
mod github;
mod history;
mod hostile;
mod journal;
mod kube_fixtures;
mod kube_standin;
mod policy;
mod replicas;
mod revert;
mod secrets;
mod serve;
mod standin;
mod trace;
