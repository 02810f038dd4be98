//! Demo (filled in next).
pub fn run() -> anyhow::Result<()> { anyhow::bail!("not yet") }
