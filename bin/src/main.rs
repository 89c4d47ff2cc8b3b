//! The `sluice` binary: parses the command line and runs a broker with its metadata quorum
//! until SIGTERM or Ctrl-C, then shuts both down cleanly.

mod cli;
mod settings;

use anyhow::Context;
use clap::Parser;
use sluice_broker::Broker;
use sluice_raft::MetadataNode;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::settings::Settings;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
    };
    if let Err(e) = result {
        // The whole chain of causes, without a backtrace: the message says what to do.
        eprintln!("sluice: error: {e:#}");
        std::process::exit(1);
    }
}

fn serve(args: cli::ServeArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        // openraft narrates every election at INFO; its warnings are what an operator needs.
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();

    let settings = Settings::resolve(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(settings))
}

async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let data_dir = settings.broker.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    // Logs and DescribeConfigs (log.dirs) show where the data really is.
    let data_dir = data_dir.canonicalize().unwrap_or(data_dir);
    settings.broker.data_dir = data_dir.clone();
    settings.metadata.data_dir = data_dir.clone();
    tracing::info!(
        node_id = settings.broker.node_id,
        data_dir = %data_dir.display(),
        voters = settings.metadata.voters.len(),
        "starting Sluice {}",
        env!("CARGO_PKG_VERSION")
    );
    let metrics = sluice_broker::metrics::install_recorder();
    let metadata = MetadataNode::start(settings.metadata)
        .await
        .context("the metadata quorum did not start")?;
    let running = Broker::start(settings.broker, metadata.clone(), metrics)
        .await
        .context("the broker did not start")?;

    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    let closed = running.shutdown().await;
    if let Err(e) = metadata.shutdown().await {
        tracing::warn!(error = %e, "metadata quorum did not shut down cleanly");
    }
    closed.context("could not close every log cleanly; the next start will recover")?;
    tracing::info!("Sluice stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
