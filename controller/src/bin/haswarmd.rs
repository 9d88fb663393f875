//! `haswarmd`: haswarm's daemon.

use clap::Parser;
use haswarm_controller::config::{env, DaemonConfig, LogFormat};
use haswarm_controller::server;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env(env::LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Completes on the first SIGTERM or Ctrl-C; a second Ctrl-C exits at once.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("Ctrl-C received; press it again to stop at once");
            tokio::spawn(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("haswarmd: forced stop");
                    std::process::exit(130);
                }
            });
        }
    }
}

fn main() {
    // Everything haswarmd writes (the store holds generated passwords) is
    // its own: files 0600, folders 0700.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let settings = match DaemonConfig::parse().validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("haswarmd: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    init_logging(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("haswarmd: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(server::serve(settings, shutdown_signal(), |started| {
        // A line on stdout that scripts and tests can wait for.
        println!("haswarmd ready on unix://{}", started.socket.display());
        if let Some(a) = started.tcp {
            println!("haswarmd ready on http://{a}");
        }
    }));
    if let Err(e) = result {
        eprintln!("haswarmd: {e}");
        std::process::exit(1);
    }
}
