use std::process::ExitCode;

use clap::Parser;
use metricops::cli::{Cli, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, metricops::cli::Command::Serve { .. }) {
        // Output piped into `head` ends the command quietly, as it does for git; `serve` keeps
        // ignoring SIGPIPE so a closed connection is an error on that write, not an exit.
        // SAFETY: called once, first thing, before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // `serve` says by default what it accepted, decided and did; the one-shot commands only warn
    // (`history` says a forge failure in one line of its own, without octocrab's).
    let default = match cli.command {
        metricops::cli::Command::Serve { .. } => "warn,metricops=info",
        metricops::cli::Command::History(_) => "warn,octocrab=off",
        _ => "warn",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("METRICOPS_LOG").unwrap_or_else(|_| default.into());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Json => log.json().with_current_span(true).with_span_list(false).init(),
        LogFormat::Text => log.init(),
    }
    metricops::cli::run(cli)
}
