//! Thin adapters, each named after the system it talks to.

pub mod alertmanager;
pub mod git;
pub mod git_history;
pub mod git_https;
pub mod github;
pub mod pack;
pub mod prometheus;

/// rustls's process-wide crypto provider (ring), installed once: reqwest is built without one, and
/// mixing providers panics at start-up.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
