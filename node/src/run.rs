//! `kos run`: the node's main loop. Starts the network, joins the topics of the node's pools, and runs until
//! SIGINT or SIGTERM, then shuts down cleanly.

use std::time::Duration;

use anyhow::Context as _;
use protocol::Keypair;
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::Checked;
use crate::network::{self, Stats, Topic};

/// How often the node logs a status line.
const STATUS_INTERVAL: Duration = Duration::from_secs(30);
/// How often the node announces its pools in the DHT again (records of peers that joined later, churn).
const PROVIDE_INTERVAL: Duration = Duration::from_secs(600);

/// Installs the log subscriber: `RUST_LOG` if set, else the config's filter; logs go to stderr.
pub fn init_logging(filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

/// Runs a node until a shutdown signal.
pub fn run(checked: Checked, keypair: Keypair) -> anyhow::Result<()> {
    init_logging(&checked.log);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(run_node(checked, keypair))
}

async fn run_node(checked: Checked, keypair: Keypair) -> anyhow::Result<()> {
    let (handle, mut deliveries, task) = network::spawn(checked.network.clone(), &keypair).await?;
    info!(peer_id = %handle.peer_id(), network = %handle.network(), author = %keypair.public(), "kos node started");
    for topic in [Topic::Ledger, Topic::Readings, Topic::Barter] {
        handle.subscribe(topic).await?;
    }
    for pool in &checked.pools {
        handle.subscribe(Topic::pool(pool)).await?;
        info!(%pool, digest = %pool.digest(), "serving pool");
    }
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let mut status = tokio::time::interval(STATUS_INTERVAL);
    let mut provide = tokio::time::interval(PROVIDE_INTERVAL);
    loop {
        tokio::select! {
            signal = &mut shutdown => {
                info!(signal = signal?, "shutting down");
                break;
            }
            Some(delivery) = deliveries.recv() => {
                debug!(id = %delivery.id, kind = %delivery.envelope.kind(), author = %delivery.envelope.author, "message");
            }
            _ = provide.tick(), if checked.network.kademlia => {
                for pool in &checked.pools {
                    let (handle, pool) = (handle.clone(), pool.clone());
                    tokio::spawn(async move {
                        if let Err(error) = handle.provide(pool.digest()).await {
                            warn!(%pool, %error, "announcing the pool in the DHT failed; retrying later");
                        }
                    });
                }
            }
            _ = status.tick() => {
                let stats = handle.stats();
                let peers = handle.info().await.map(|info| info.peers.len()).unwrap_or(0);
                info!(
                    peers,
                    accepted = Stats::get(&stats.accepted),
                    rejected = Stats::get(&stats.rejected),
                    throttled = Stats::get(&stats.throttled),
                    "status"
                );
            }
        }
    }
    handle.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    info!("kos node stopped");
    Ok(())
}

/// Resolves with the signal's name on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.map(|()| "SIGINT").context("waiting for Ctrl-C"),
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}
