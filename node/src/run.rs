//! `kos run`: the node's main loop. Starts the network, joins the topics of the node's pools, and runs until
//! SIGINT or SIGTERM, then shuts down cleanly.

use ::ledger::reads::*;
use std::time::Duration;

use anyhow::Context as _;
use protocol::Keypair;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::Checked;
use crate::network::{self, Stats, Topic};

/// How often the node logs a status line.
const STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// Installs the log subscriber: `RUST_LOG` if set, else the config's filter; logs go to stderr.
pub fn init_logging(filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

/// Recharges authors' fuel from what the ledger commits: a released escrow is a completed delivery (a quest), an
/// anchored reading's export is energy contributed to the grid. Follows every commit (none is missed, so no credit
/// is lost when the node is busy).
async fn credit_fuel(mut commits: crate::ledger::Follower, network: network::Handle) {
    while let Some(commit) = commits.next().await {
        for credit in fuel_credits(&commit.events) {
            network.credit(credit.0, credit.1);
        }
    }
}

/// The fuel credits a block's events earn.
fn fuel_credits(events: &[::ledger::state::Event]) -> Vec<(protocol::PublicKey, network::Credit)> {
    let mut credits = Vec::new();
    for event in events {
        match event {
            ::ledger::state::Event::EscrowReleased { to, .. } => credits.push((*to, network::Credit::Quest)),
            // A job done recharges its worker like a delivery; a quest of the commons twice over.
            ::ledger::state::Event::JobDone { worker, quest, .. } => {
                for _ in 0..=*quest {
                    credits.push((*worker, network::Credit::Quest));
                }
            }
            ::ledger::state::Event::ReadingAnchored { author, reading, .. } if reading.export_wh > 0 => {
                credits.push((*author, network::Credit::Energy(reading.export_wh)));
            }
            _ => {}
        }
    }
    credits
}

/// Enforces the overrides in force on the ledger at the node's edges: fuel caps in the network's fuel model, an
/// island order for the microgrid this node controls. Read at start (a restarted node keeps enforcing), again at
/// every commit that puts an override in force or lifts one, and after a state sync. (Freezes and device caps are enforced where
/// offers and readings are checked: the market actor and the ledger's state machine.)
async fn enforce_overrides(
    mut commits: crate::ledger::Follower,
    ledger: crate::ledger::Handle,
    network: network::Handle,
    island: Option<(crate::island::Handle, protocol::types::Cell)>,
) {
    let mut changed = true;
    // Read during a state sync, the overrides are the old state's (kept enforced meanwhile): read again once the
    // snapshot is taken.
    let mut read_while_syncing = false;
    loop {
        if changed {
            read_while_syncing = ledger.status().state_sync.is_some();
            let cell = island.as_ref().map(|(_, cell)| cell.as_str().to_owned());
            let read = ledger
                .query_until_read(move |state| {
                    let caps: Vec<(protocol::PublicKey, u64)> = state
                        .overrides()
                        .filter_map(|(_, record)| match record.measure {
                            protocol::message::Measure::FuelCap(cap) => {
                                state.fuel_cap(&cap.account).map(|in_force| (cap.account, in_force.first))
                            }
                            _ => None,
                        })
                        .collect();
                    (caps, cell.as_deref().is_some_and(|cell| state.island_ordered(cell).is_some()))
                })
                .await;
            let Some((caps, ordered)) = read else { return };
            if network.set_fuel_caps(caps).await.is_err() {
                return;
            }
            if let Some((island, _)) = &island {
                island.ordered(ordered).await;
            }
        }
        let Some(commit) = commits.next().await else { return };
        changed = commit.events.iter().any(|event| {
            matches!(event, ::ledger::state::Event::OverrideInForce { .. } | ::ledger::state::Event::OverrideExpired(_))
        }) || (read_while_syncing && ledger.status().state_sync.is_none());
    }
}

/// Tells the network whether the ledger is current, whenever that changes (a new block, sync, or time passing
/// without blocks): discovery fetches no pool's book before it is (offers fetched are checked against the last
/// commit).
fn tell_ledger_current(ledger: &crate::ledger::Handle, network: &network::Handle) {
    let (mut status, network) = (ledger.watch(), network.clone());
    tokio::spawn(async move {
        let mut told = false;
        loop {
            let current = status.borrow_and_update().current(crate::clock::now_ms());
            if current != told {
                network.ledger_current(current).await;
                told = current;
            }
            tokio::select! {
                changed = status.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    });
}

/// Keeps the network's pools and the market's books in step: the pools the node trades in are used now (the
/// network leaves a pool unused for a while, unless configured), and the books of pools it left are dropped.
async fn tend_pools(market: &crate::market::Handle, network: &network::Handle) {
    let own = market.own_pools().await;
    network.use_pools(own.iter().map(protocol::message::PoolKey::digest).collect()).await;
    if let Ok(joined) = network.pools().await {
        market.keep_pools(joined.into_iter().map(|view| view.pool).collect()).await;
    }
}

/// Runs a node until a shutdown signal.
pub fn run(checked: Checked, keypair: Keypair) -> anyhow::Result<()> {
    init_logging(&checked.log);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let shutdown = {
        let _entered = runtime.enter();
        Shutdown::install()?
    };
    runtime.block_on(run_node(checked, keypair, shutdown))
}

/// The network's configuration for this node: the genesis validators trusted, the ledger's consensus messages
/// and blocks wired in (when it keeps a ledger).
fn network_config(
    checked: &Checked,
    opened: Option<&crate::ledger::Opened>,
    consensus: mpsc::Sender<network::ConsensusDelivery>,
) -> network::Config {
    let mut config = checked.network.clone();
    if let Some(settings) = &checked.ledger {
        // The genesis validators get more room: four times a newcomer's per-peer limits and fuel.
        for validator in &settings.genesis.validators {
            config.trusted_authors.push(validator.key);
            if let Ok(key) = libp2p_identity::ed25519::PublicKey::try_from_bytes(validator.key.as_bytes()) {
                config.trusted_peers.push(libp2p_identity::PublicKey::from(key).to_peer_id());
            }
        }
    }
    if let Some(opened) = opened {
        config.consensus = Some(consensus);
        config.blocks = Some(network::BlockSource::rocks(opened.reader()));
        config.snapshots = Some(network::SnapshotSource::new(opened.snapshots(), opened.reader()));
        config.archive = opened.archive();
    } else {
        warn!("no genesis file (ledger.genesis, or genesis.toml in the data directory): this node keeps no ledger");
    }
    config
}

async fn run_node(checked: Checked, keypair: Keypair, mut shutdown: Shutdown) -> anyhow::Result<()> {
    // Peers, RocksDB and the API all hold descriptors: take what the system allows, and size the API from it.
    let file_limit = crate::api::server::raise_file_limit();
    let opened = checked.ledger.as_ref().map(|settings| crate::ledger::open(settings, &keypair)).transpose()?;
    let (consensus_sender, consensus) = mpsc::channel(crate::ledger::CONSENSUS_QUEUE_LEN_MAX);
    let config = network_config(&checked, opened.as_ref(), consensus_sender);
    let (handle, mut deliveries, task) = start_network(config, &keypair, &checked.pools, opened.is_some()).await?;
    let (ledger, mut ledger_done) = match opened {
        Some(opened) => {
            let started = crate::ledger::start(opened, handle.clone(), consensus)?;
            (Some(started.handle), Some(started.done))
        }
        None => (None, None),
    };
    let keypair = std::sync::Arc::new(keypair);
    // One signer for every message the node signs with its key (API, meter, market): one sequence of nonces.
    let signer = std::sync::Arc::new(crate::signer::Signer::open(
        &checked.data_dir,
        keypair.clone(),
        handle.network().clone(),
        crate::clock::now_ms(),
    )?);
    let jobs = crate::jobs::Index::new();
    let island = checked.island.clone().map(crate::island::spawn);
    if let Some(ledger) = &ledger {
        let ordered = match (&island, checked.island.as_ref().and_then(|settings| settings.cell.clone())) {
            (Some((island, _)), Some(cell)) => Some((island.clone(), cell)),
            _ => None,
        };
        follow_ledger(ledger, &handle, &jobs, ordered);
        tell_ledger_current(ledger, &handle);
    }
    // Matching needs the ledger: pool rules come from its genesis and state, matches become its entries.
    let market = ledger.as_ref().map(|ledger| {
        crate::market::spawn(signer.clone(), ledger.clone(), handle.clone(), market::pools::Limits::default())
    });
    // The one way the node's own offers are placed, for the API and the home's trader alike.
    let placer = market.as_ref().map(|(market, _)| crate::app::place::Placer {
        signer: signer.clone(),
        network: handle.clone(),
        market: market.clone(),
    });
    let meter = match &checked.meter {
        Some(settings) => {
            let island = island.as_ref().map(|(island, _)| island.clone());
            Some(start_meter(settings, &checked.data_dir, &signer, &handle, ledger.clone(), placer.clone(), island)?)
        }
        None => None,
    };
    // A devnet's simulated feeder meter signs the cell's summed measurements.
    let _feeder = match (&checked.feeder, &ledger) {
        (Some(settings), Some(ledger)) => Some(crate::feeder::spawn(settings.clone(), signer.clone(), ledger.clone())),
        (Some(_), None) => anyhow::bail!("[feeder] needs a ledger (a genesis file): its readings are ledger entries"),
        _ => None,
    };
    let metrics = crate::metrics::Metrics::default();
    let feed = match &ledger {
        Some(ledger) => crate::feed::Feed::spawn(ledger, metrics.clone()),
        None => crate::feed::Feed::empty(),
    };
    let api = match checked.api {
        Some(address) => {
            let context = crate::api::Context {
                network: handle.clone(),
                ledger: ledger.clone(),
                market: market.as_ref().map(|(market, _)| market.clone()),
                meter: meter.as_ref().map(|(meter, _)| meter.clone()),
                island: island.as_ref().map(|(island, _)| island.clone()),
                signer: signer.clone(),
                token: crate::api::token(&checked.data_dir)?.into(),
                feed,
                metrics,
                event_streams: Default::default(),
                placer,
                jobs: jobs.clone(),
            };
            Some(crate::api::serve(address, context, crate::api::server::connections_max(file_limit)).await?)
        }
        None => None,
    };
    let mut router = Router {
        market: market.as_ref().map(|(market, _)| market.clone()),
        island: island.as_ref().map(|(island, _)| island.clone()),
        jobs: jobs.clone(),
        ledger: ledger.clone(),
        market_dropped: 0,
        entries_dropped: 0,
    };
    let (outcome, ledger_ended) = serve(&mut router, &mut deliveries, &mut ledger_done, &handle, &mut shutdown).await;
    if let Some(ledger) = &ledger {
        ledger.shutdown().await;
        if !ledger_ended && let Some(done) = ledger_done {
            let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
        }
    }
    stop_tasks(api, market.map(|(_, task)| task), &handle, task).await;
    match &outcome {
        Ok(()) => info!("kos node stopped"),
        Err(error) => error!(error = %format!("{error:#}"), "kos node stopped on an error"),
    }
    outcome
}

/// Starts the network and joins the node's topics: the ledger's (and consensus, with a ledger), readings, barter,
/// jobs and the configured pools.
async fn start_network(
    config: network::Config,
    keypair: &Keypair,
    pools: &[protocol::message::PoolKey],
    ledger: bool,
) -> anyhow::Result<(network::Handle, mpsc::Receiver<network::Delivery>, tokio::task::JoinHandle<()>)> {
    let (handle, deliveries, task) = network::spawn(config, keypair).await?;
    info!(peer_id = %handle.peer_id(), network = %handle.network(), author = %keypair.public(), "kos node started");
    for topic in [Topic::Ledger, Topic::Readings, Topic::Jobs] {
        handle.subscribe(topic).await?;
    }
    if ledger {
        handle.subscribe(Topic::Consensus).await?;
    }
    for pool in pools {
        handle.join_pool(pool, true).await.with_context(|| format!("joining the configured pool {pool}"))?;
    }
    Ok((handle, deliveries, task))
}

/// Starts the node's followers of the ledger: fuel credits, the jobs index, the overrides enforced at the edges.
fn follow_ledger(
    ledger: &crate::ledger::Handle,
    network: &network::Handle,
    jobs: &crate::jobs::Index,
    island: Option<(crate::island::Handle, protocol::types::Cell)>,
) {
    tokio::spawn(credit_fuel(ledger.follow(), network.clone()));
    tokio::spawn(crate::jobs::follow(jobs.clone(), ledger.clone(), ledger.follow()));
    tokio::spawn(enforce_overrides(ledger.follow(), ledger.clone(), network.clone(), island));
}

/// The meter's own signing key, created (mode 0600) when the file is missing.
fn device_key(
    file: Option<&std::path::Path>,
    data_dir: &std::path::Path,
) -> anyhow::Result<Option<std::sync::Arc<protocol::Keypair>>> {
    let Some(file) = file else { return Ok(None) };
    let path = data_dir.join(file);
    let keypair = match crate::keyfile::read(&path) {
        Ok(keypair) => keypair,
        Err(crate::keyfile::Error::Missing { .. }) => {
            let keypair = protocol::Keypair::generate();
            crate::keyfile::write(&path, &keypair, false)
                .with_context(|| format!("creating the meter's device key {}", path.display()))?;
            info!(path = %path.display(), key = %keypair.public(), "created the meter's device key: name it in the meter's asset manifest");
            keypair
        }
        Err(error) => return Err(error).with_context(|| format!("meter.device_key_file {}", path.display())),
    };
    Ok(Some(std::sync::Arc::new(keypair)))
}

/// What a home should know when its meter trades in a pool whose rule asks its readings a trust level (PROTOCOL.md
/// §10, *trust levels*) they may not reach: its trades would count as undelivered.
fn trust_warning(asked: protocol::message::Trust, device: bool) -> Option<String> {
    use protocol::message::Trust;
    let short = "its trades there count as undelivered (the penalty is paid) whenever its readings fall short";
    match asked {
        Trust::Node => None,
        Trust::Device if device => None,
        Trust::Device => Some(format!(
            "the pool asks readings signed by the meter's device or confirmed by the cell's feeder, and this meter \
             has no device key (meter.device_key_file): {short}"
        )),
        Trust::Balanced => Some(format!(
            "the pool asks readings the cell's feeder confirmed (the meter's asset must name the cell, whose feeder \
             must read every interval): {short}"
        )),
        Trust::DeviceBalanced => Some(format!(
            "the pool asks readings signed by the meter's device{} and confirmed by the cell's feeder: {short}",
            if device { "" } else { " (this meter has no device key: meter.device_key_file)" }
        )),
    }
}

/// Opens the configured meter and starts its actor.
fn start_meter(
    settings: &crate::config::MeterChecked,
    data_dir: &std::path::Path,
    signer: &std::sync::Arc<crate::signer::Signer>,
    network: &network::Handle,
    ledger: Option<crate::ledger::Handle>,
    placer: Option<crate::app::place::Placer>,
    island: Option<crate::island::Handle>,
) -> anyhow::Result<(crate::meter::Handle, tokio::task::JoinHandle<()>)> {
    let source = crate::meter::open(settings)?;
    let actor = crate::meter::Settings {
        id: settings.id.clone(),
        interval_s: settings.interval_s,
        poll: settings.poll,
        capacity: settings.capacity,
        network: network.network().clone(),
        dispatch: settings.dispatch.clone(),
        maintenance: settings.maintenance,
        trade: settings.trade.clone(),
        tariffs: settings.tariffs,
        device: device_key(settings.device_key_file.as_deref(), data_dir)?,
        over_report_ppm: settings.over_report_ppm,
    };
    if let (Some((pool, _)), Some(ledger)) = (&actor.trade, &ledger) {
        let asked = ledger.genesis().pool_rule(pool).map_or(protocol::message::Trust::Node, |rule| rule.trust);
        if let Some(warning) = trust_warning(asked, actor.device.is_some()) {
            tracing::warn!(%pool, "{warning}");
        }
    }
    Ok(crate::meter::spawn(source, actor, signer.clone(), network.clone(), ledger, placer, island))
}

/// Where the node's gossiped messages go: pool offers and cancels and barter offers to the market, readings to the
/// island, job postings to the jobs index, entries to the ledger. A part that is behind drops what it cannot take
/// (counted, warned at powers of two).
struct Router {
    market: Option<crate::market::Handle>,
    island: Option<crate::island::Handle>,
    jobs: crate::jobs::Index,
    ledger: Option<crate::ledger::Handle>,
    market_dropped: u64,
    entries_dropped: u64,
}

impl Router {
    fn deliver(&mut self, delivery: network::Delivery) {
        debug!(id = %delivery.id, kind = %delivery.envelope.kind(), author = %delivery.envelope.author, "message");
        if let (Topic::Pool(_), Some(market)) = (delivery.topic, &self.market) {
            let taken = match &delivery.envelope.body {
                protocol::Body::Offer(_) => market.offer(delivery.envelope.clone()),
                protocol::Body::BarterOffer(_) => market.barter(delivery.envelope.clone()),
                protocol::Body::Cancel(cancel) => market.cancel(cancel.offer, delivery.envelope.author),
                _ => true,
            };
            if !taken {
                self.market_dropped += 1;
                if self.market_dropped.is_power_of_two() {
                    warn!(
                        market_dropped = self.market_dropped,
                        "the market is behind; gossiped offers are being dropped"
                    );
                }
            }
        }
        if delivery.topic == Topic::Readings
            && let (Some(island), protocol::Body::Reading(reading)) = (&self.island, &delivery.envelope.body)
        {
            island.reading(delivery.envelope.author, reading.clone());
        }
        if delivery.topic == Topic::Jobs
            && let protocol::Body::Job(job) = &delivery.envelope.body
        {
            self.jobs.insert(delivery.envelope.id(), delivery.envelope.author, job.clone(), crate::clock::now_ms());
        }
        if matches!(delivery.topic, Topic::Ledger | Topic::Readings | Topic::Jobs)
            && let Some(ledger) = &self.ledger
            && !ledger.entries(vec![delivery])
        {
            self.entries_dropped += 1;
            if self.entries_dropped.is_power_of_two() {
                warn!(
                    entries_dropped = self.entries_dropped,
                    "the ledger is behind; gossiped entries are being dropped"
                );
            }
        }
    }
}

/// The node's periodic status line.
async fn log_status(network: &network::Handle, ledger: Option<&crate::ledger::Handle>) {
    let stats = network.stats();
    let peers = network.info().await.map(|info| info.peers.len()).unwrap_or(0);
    let ledger = ledger.map(crate::ledger::Handle::status);
    info!(
        peers,
        accepted = Stats::get(&stats.accepted),
        rejected = Stats::get(&stats.rejected),
        throttled = Stats::get(&stats.throttled),
        height = ledger.as_ref().map(|status| status.height),
        mempool = ledger.as_ref().map(|status| status.mempool_entries),
        "status"
    );
}

/// The node's main loop: routes gossip, tends its pools, logs its status, until a shutdown signal (`Ok`) or the end
/// of the ledger thread (its result; the second value is then true).
async fn serve(
    router: &mut Router,
    deliveries: &mut mpsc::Receiver<network::Delivery>,
    ledger_done: &mut Option<oneshot::Receiver<anyhow::Result<()>>>,
    network: &network::Handle,
    shutdown: &mut Shutdown,
) -> (anyhow::Result<()>, bool) {
    let mut status = tokio::time::interval(STATUS_INTERVAL);
    loop {
        tokio::select! {
            signal = shutdown.wait() => {
                info!(signal, "shutting down");
                return (Ok(()), false);
            }
            result = wait_done(ledger_done) => {
                let outcome = result.unwrap_or_else(|| Err(anyhow::anyhow!("the ledger thread ended unexpectedly")));
                return (outcome, true);
            }
            Some(delivery) = deliveries.recv() => router.deliver(delivery),
            _ = status.tick() => {
                if let Some(market) = &router.market {
                    tend_pools(market, network).await;
                }
                log_status(network, router.ledger.as_ref()).await;
            }
        }
    }
}

/// Stops the API and the market and then the network (waiting a while for it).
async fn stop_tasks(
    api: Option<tokio::task::JoinHandle<()>>,
    market: Option<tokio::task::JoinHandle<()>>,
    network: &network::Handle,
    task: tokio::task::JoinHandle<()>,
) {
    for task in api.into_iter().chain(market) {
        task.abort();
    }
    network.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

/// Resolves when the ledger thread ends (`None` if it ended without a word); never without a ledger.
async fn wait_done(done: &mut Option<oneshot::Receiver<anyhow::Result<()>>>) -> Option<anyhow::Result<()>> {
    match done {
        Some(receiver) => receiver.await.ok(),
        None => std::future::pending().await,
    }
}

/// The node's listeners for SIGINT (Ctrl-C) and SIGTERM. Installed before the node starts anything, so a signal
/// that arrives while it is still starting (opening the ledger, binding the API) stops it cleanly once it is up,
/// instead of killing the process with the default action.
pub(crate) struct Shutdown {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs both listeners; needs a tokio runtime (its context entered).
    pub(crate) fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// Resolves with the signal's name on the first SIGINT or SIGTERM (including one received before this call).
    pub(crate) async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

#[cfg(test)]
mod tests {
    use ::ledger::state::Event;
    use protocol::message::{MeterSource, Reading};
    use protocol::types::MeterId;
    use protocol::{Id, Keypair};

    use super::*;

    /// A home trading in a pool whose readings' trust level its meter may not reach is told why its trades could
    /// count as undelivered; a pool it reaches says nothing.
    #[test]
    fn a_meter_trading_in_a_pool_asking_more_trust_than_it_signs_is_warned() {
        use protocol::message::Trust;
        assert_eq!(trust_warning(Trust::Node, false), None);
        assert_eq!(trust_warning(Trust::Device, true), None);
        assert!(trust_warning(Trust::Device, false).is_some_and(|warning| warning.contains("device_key_file")));
        assert!(trust_warning(Trust::Balanced, true).is_some_and(|warning| warning.contains("feeder")));
        for device in [false, true] {
            let warning = trust_warning(Trust::DeviceBalanced, device).unwrap();
            assert_eq!(warning.contains("device_key_file"), !device, "{warning}");
        }
    }

    /// A meter's device key is created once, private, and read back the same on the next start; a key file that
    /// others can read is refused with the path in the error.
    #[test]
    fn the_meter_device_key_is_created_once_and_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        assert!(device_key(None, dir.path()).unwrap().is_none());
        let first = device_key(Some(std::path::Path::new("meter/device.key")), dir.path()).unwrap().unwrap();
        let path = dir.path().join("meter/device.key");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = device_key(Some(&path), dir.path()).unwrap().unwrap();
        assert_eq!(first.public(), again.public());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = format!("{:#}", device_key(Some(&path), dir.path()).unwrap_err());
        assert!(error.contains("device.key"), "{error}");
    }

    #[test]
    fn deliveries_done_jobs_and_exported_energy_earn_fuel() {
        let (seller, worker, home) = (
            Keypair::from_seed(&[1; 32]).public(),
            Keypair::from_seed(&[2; 32]).public(),
            Keypair::from_seed(&[3; 32]).public(),
        );
        let reading = |export_wh| Reading {
            meter: MeterId::new("home-1").unwrap(),
            interval_start_s: 0,
            interval_s: 900,
            import_wh: 0,
            export_wh,
            generation_wh: export_wh,
            consumption_wh: 0,
            import_counter_wh: 0,
            export_counter_wh: export_wh,
            source: MeterSource::Simulated,
            device: Default::default(),
        };
        let events = vec![
            Event::EscrowReleased { settlement: Id([1; 32]), to: seller, amount: 5 },
            Event::JobDone { job: Id([2; 32]), worker, quest: 1 },
            Event::ReadingAnchored { id: Id([3; 32]), author: home, reading: reading(420) },
            Event::ReadingAnchored { id: Id([4; 32]), author: home, reading: reading(0) },
        ];
        let credits: Vec<String> =
            fuel_credits(&events).into_iter().map(|(account, credit)| format!("{account} {credit:?}")).collect();
        assert_eq!(
            credits,
            vec![
                format!("{seller} Quest"),
                format!("{worker} Quest"),
                format!("{worker} Quest"),
                format!("{home} Energy(420)"),
            ]
        );
    }
}
