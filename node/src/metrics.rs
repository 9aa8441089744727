//! Prometheus metrics on `/metrics` (OpenMetrics text, prometheus-client): every metric has help text and, where it
//! has one, a unit in its name. Counters that the network, ledger and market already keep are read at scrape time;
//! what only the commits tell (trades, traded quantities, readings, finality latency) is counted by the feed.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use ::ledger::consensus::engine::Commit;
use ::ledger::state::Event;

use crate::network::Stats;

/// Metrics counted as blocks commit; clones share their values.
#[derive(Clone)]
pub struct Metrics {
    blocks: Counter,
    trades: Family<Vec<(String, String)>, Counter>,
    traded_quantity: Family<Vec<(String, String)>, Counter>,
    readings: Counter,
    exported_wh: Counter,
    imported_wh: Counter,
    finality: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            blocks: Counter::default(),
            trades: Family::default(),
            traded_quantity: Family::default(),
            readings: Counter::default(),
            exported_wh: Counter::default(),
            imported_wh: Counter::default(),
            // 25 ms to ~100 s.
            finality: Histogram::new(exponential_buckets(0.025, 2.0, 13)),
        }
    }
}

impl Metrics {
    /// Counts a committed block's events. `live`: the node is not catching up, so the block's age at commit is
    /// its finality latency (from the proposer's timestamp to this node's commit).
    pub fn committed(&self, commit: &Commit, live: bool, now_ms: u64) {
        self.blocks.inc();
        if live {
            let seconds = now_ms.saturating_sub(commit.block.header().time_ms) as f64 / 1000.0;
            self.finality.observe(seconds);
        }
        for event in &commit.events {
            match event {
                Event::TradeSettled { pool, quantity, .. } => {
                    let labels = vec![("resource".to_string(), pool.resource.to_string())];
                    self.trades.get_or_create(&labels).inc();
                    self.traded_quantity.get_or_create(&labels).inc_by(*quantity);
                }
                Event::ReadingAnchored { reading, .. } => {
                    self.readings.inc();
                    self.exported_wh.inc_by(reading.export_wh);
                    self.imported_wh.inc_by(reading.import_wh);
                }
                _ => {}
            }
        }
    }
}

/// What the node's parts report at one scrape.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub peers: u64,
    /// [`churn`].
    pub churn: Vec<(&'static str, u64)>,
    pub gossip: Vec<(&'static str, &'static str, u64)>,
    pub ledger: Option<LedgerSnapshot>,
    pub market: Option<crate::market::Stats>,
    pub meter: Option<MeterSnapshot>,
    /// RocksDB column families: their files, live data, memtables and table readers.
    pub rocksdb: Vec<::ledger::store::FamilySize>,
    /// What RocksDB's block cache holds (`None` without a ledger).
    pub rocksdb_block_cache: Option<u64>,
}

#[derive(Debug, Default, Clone)]
pub struct LedgerSnapshot {
    pub height: u64,
    pub round: i64,
    pub mempool_entries: u64,
    pub validators: u64,
    pub validator: bool,
    pub committed_entries: u64,
    pub syncing: bool,
    /// While a state sync runs: (chunks written, chunks in all).
    pub state_sync: Option<(u32, u32)>,
    pub state_pairs: u64,
}

#[derive(Debug, Default, Clone)]
pub struct MeterSnapshot {
    pub samples: u64,
    pub sample_errors: u64,
    pub readings_published: u64,
    pub readings_refused: u64,
    pub intervals_missed: u64,
}

/// The network's gossip counters, named for the metrics.
pub fn gossip(stats: &Stats) -> Vec<(&'static str, &'static str, u64)> {
    vec![
        ("published", "messages this node published", Stats::get(&stats.published)),
        ("accepted", "messages received, valid and delivered", Stats::get(&stats.accepted)),
        ("rejected", "messages received and rejected as invalid (their sender penalised)", Stats::get(&stats.rejected)),
        ("duplicate", "messages received again and ignored", Stats::get(&stats.ignored_duplicate)),
        ("stale", "messages received expired or too old and ignored", Stats::get(&stats.ignored_stale)),
        ("throttled", "messages over their sender's rate limit, not forwarded", Stats::get(&stats.throttled)),
        ("fuel_throttled", "messages whose author was out of fuel, not forwarded", Stats::get(&stats.fuel_throttled)),
        ("delivery_dropped", "valid messages dropped because the node was behind", Stats::get(&stats.delivery_dropped)),
        ("bundles", "bundles of ledger entries received and accepted", Stats::get(&stats.bundles)),
    ]
}

/// The network's peer churn counters, named for the metrics: peers connected, disconnected, and trimmed.
pub fn churn(stats: &Stats) -> Vec<(&'static str, u64)> {
    vec![
        ("connected", Stats::get(&stats.peers_connected)),
        ("disconnected", Stats::get(&stats.peers_disconnected)),
        ("trimmed", Stats::get(&stats.peers_trimmed)),
    ]
}

#[derive(Debug)]
struct Scrape(Snapshot);

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn encode_ledger(encoder: &mut DescriptorEncoder<'_>, ledger: &LedgerSnapshot) -> std::fmt::Result {
    gauge(encoder, "ledger_height", "Height of the last committed block.", None, signed(ledger.height))?;
    gauge(encoder, "consensus_round", "Consensus round of the height being decided.", None, ledger.round)?;
    gauge(
        encoder,
        "mempool_entries",
        "Entries waiting in the mempool for a block.",
        None,
        signed(ledger.mempool_entries),
    )?;
    gauge(encoder, "validators", "Validators in the current set.", None, signed(ledger.validators))?;
    gauge(encoder, "validator", "1 if this node is a validator.", None, i64::from(ledger.validator))?;
    gauge(encoder, "syncing", "1 while the node catches up with its peers.", None, i64::from(ledger.syncing))?;
    let (done, chunks) = ledger.state_sync.unwrap_or((0, 0));
    gauge(
        encoder,
        "state_sync",
        "1 while the node takes a snapshot of the state from its peers (state sync).",
        None,
        i64::from(ledger.state_sync.is_some()),
    )?;
    gauge(encoder, "state_sync_chunks_done", "Snapshot chunks written by the state sync.", None, i64::from(done))?;
    gauge(encoder, "state_sync_chunks", "Chunks of the snapshot the state sync takes.", None, i64::from(chunks))?;
    gauge(
        encoder,
        "ledger_state_pairs",
        "Key-value pairs in the ledger's state.",
        None,
        i64::try_from(ledger.state_pairs).unwrap_or(i64::MAX),
    )?;
    counter(
        encoder,
        "ledger_committed_entries",
        "Entries committed since this node started.",
        None,
        ledger.committed_entries,
    )?;
    Ok(())
}

fn encode_market(encoder: &mut DescriptorEncoder<'_>, market: &crate::market::Stats) -> std::fmt::Result {
    for (name, help, value) in [
        ("market_offers", "Offers this node's market took into its books.", market.offers),
        ("market_offers_refused", "Offers this node's market refused.", market.refused),
        ("market_matches", "Matches this node's market made.", market.matches),
        (
            "market_matched_quantity",
            "Quantity this node's market matched, in the resources' units (Wh for energy).",
            market.matched_quantity,
        ),
        (
            "market_settlements_submitted",
            "Settlements this node submitted to the ledger.",
            market.settlements_submitted,
        ),
        ("market_settlements_refused", "Settlements the ledger refused.", market.settlements_refused),
        ("market_barter_offers", "Barter offers on this node's board.", market.barter_offers),
        ("market_frozen", "Offers refused because an override froze their author.", market.frozen),
        ("market_barter_cycles", "Barter cycles this node submitted.", market.barter_cycles_submitted),
    ] {
        counter(encoder, name, help, None, value)?;
    }
    Ok(())
}

/// The ledger database's sizes by column family (none without a ledger).
fn encode_rocksdb(encoder: &mut DescriptorEncoder<'_>, sizes: &[::ledger::store::FamilySize]) -> std::fmt::Result {
    if sizes.is_empty() {
        return Ok(());
    }
    let bytes = Unit::Bytes;
    for (name, help, pick) in [
        (
            "rocksdb_sst_files",
            "Size of the ledger database's SST files by column family.",
            (|size: &::ledger::store::FamilySize| size.sst_bytes) as fn(&::ledger::store::FamilySize) -> u64,
        ),
        ("rocksdb_live_data", "Estimated live data of the ledger database by column family.", |size| size.live_bytes),
        ("rocksdb_memtables", "Memtables of the ledger database by column family.", |size| size.memtable_bytes),
        (
            "rocksdb_table_readers",
            "Memory of the ledger database's SST readers (indexes, filters) outside the block cache, by column family.",
            |size| size.table_readers_bytes,
        ),
    ] {
        let metric = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(name, help, Some(&bytes), metric.metric_type())?;
        for size in sizes {
            let labels = [("family", size.name)];
            ConstGauge::new(signed(pick(size))).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let snapshot = &self.0;
        gauge(&mut encoder, "peers", "Peers connected now.", None, signed(snapshot.peers))?;
        {
            let metric = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "peer_events",
                "Peers connected (first connection), disconnected (last one closed), and trimmed (closed by this node \
                 for being kept for nothing near peers_max) since start.",
                None,
                metric.metric_type(),
            )?;
            for (event, value) in &snapshot.churn {
                let labels = [("event", *event)];
                ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let metric = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "gossip_messages",
                "Gossip messages by outcome: published, accepted, rejected, duplicate, stale, throttled, \
                 fuel_throttled (author out of fuel), delivery_dropped.",
                None,
                metric.metric_type(),
            )?;
            for (outcome, _, value) in &snapshot.gossip {
                let labels = [("outcome", *outcome)];
                ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some((_, _, value)) = snapshot.gossip.iter().find(|(name, _, _)| *name == "fuel_throttled") {
            counter(
                &mut encoder,
                "fuel_throttled_messages",
                "Gossip messages not forwarded because their author had spent its bandwidth fuel.",
                None,
                *value,
            )?;
        }
        if let Some(ledger) = &snapshot.ledger {
            encode_ledger(&mut encoder, ledger)?;
        }
        if let Some(market) = &snapshot.market {
            encode_market(&mut encoder, market)?;
        }
        if let Some(meter) = &snapshot.meter {
            for (name, help, value) in [
                ("meter_samples", "Samples read from the meter.", meter.samples),
                ("meter_sample_errors", "Failed reads of the meter.", meter.sample_errors),
                ("meter_readings_published", "Signed readings this node published.", meter.readings_published),
                ("meter_readings_refused", "Readings not signed or refused by the ledger.", meter.readings_refused),
                ("meter_intervals_missed", "Intervals without a reading (meter silent).", meter.intervals_missed),
            ] {
                counter(&mut encoder, name, help, None, value)?;
            }
        }
        encode_rocksdb(&mut encoder, &snapshot.rocksdb)?;
        if let Some(bytes) = snapshot.rocksdb_block_cache {
            let help = "What the ledger database's block cache holds (shared by its column families).";
            gauge(&mut encoder, "rocksdb_block_cache", help, Some(&Unit::Bytes), signed(bytes))?;
        }
        Ok(())
    }
}

/// The metrics page: the counted metrics and the snapshot, in OpenMetrics text.
pub fn render(metrics: &Metrics, snapshot: Snapshot) -> Result<String, std::fmt::Error> {
    // The registry ends each help text with a period; the collector's texts carry their own.
    let mut registry = Registry::with_prefix("kos");
    registry.register("blocks_committed", "Blocks this node committed since it started", metrics.blocks.clone());
    registry.register("trades", "Trades settled on the ledger, by resource", metrics.trades.clone());
    registry.register(
        "traded_quantity",
        "Quantity traded on the ledger, by resource, in the resource's unit (Wh for energy, milli-units otherwise)",
        metrics.traded_quantity.clone(),
    );
    registry.register("readings_anchored", "Meter readings anchored on the ledger", metrics.readings.clone());
    registry.register_with_unit(
        "readings_exported",
        "Energy exported to the grid by the anchored readings",
        Unit::Other("watt_hours".into()),
        metrics.exported_wh.clone(),
    );
    registry.register_with_unit(
        "readings_imported",
        "Energy imported from the grid by the anchored readings",
        Unit::Other("watt_hours".into()),
        metrics.imported_wh.clone(),
    );
    registry.register_with_unit(
        "finality_latency",
        "Time from a block's proposal (its timestamp) to its commit on this node",
        Unit::Seconds,
        metrics.finality.clone(),
    );
    registry.register_collector(Box::new(Scrape(snapshot)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ::ledger::state::Event;
    use protocol::Id;
    use protocol::message::{Mechanism, PoolId};

    use super::*;
    use crate::ledger::empty_commit;

    #[test]
    fn the_page_has_help_units_and_the_counted_values() {
        let metrics = Metrics::default();
        let pool: PoolId = "energy/credit/u33db/900".parse().unwrap();
        let trade = Event::TradeSettled {
            settlement: Id([1; 32]),
            pool,
            bid: Id([2; 32]),
            ask: Id([3; 32]),
            buyer: protocol::Keypair::from_seed(&[2; 32]).public(),
            seller: protocol::Keypair::from_seed(&[3; 32]).public(),
            quantity: 1500,
            unit_price: 250,
            mechanism: Mechanism::PayAsClear,
            delivery_start_s: 0,
        };
        metrics.committed(&empty_commit(7, 10_000, vec![trade]), true, 10_400);
        let snapshot = Snapshot {
            peers: 3,
            churn: vec![("connected", 5), ("trimmed", 1)],
            gossip: vec![("accepted", "", 42), ("fuel_throttled", "", 2)],
            ledger: Some(LedgerSnapshot {
                height: 7,
                mempool_entries: 5,
                validators: 4,
                state_pairs: 717,
                ..Default::default()
            }),
            market: None,
            meter: None,
            rocksdb: vec![::ledger::store::FamilySize {
                name: "blocks",
                sst_bytes: 123,
                live_bytes: 100,
                memtable_bytes: 4096,
                table_readers_bytes: 512,
            }],
            rocksdb_block_cache: Some(2048),
        };
        let text = render(&metrics, snapshot).unwrap();
        for line in [
            "kos_trades_total{resource=\"energy\"} 1",
            "kos_traded_quantity_total{resource=\"energy\"} 1500",
            "kos_blocks_committed_total 1",
            "kos_peers 3",
            "kos_ledger_height 7",
            "kos_ledger_state_pairs 717",
            "kos_mempool_entries 5",
            "kos_validators 4",
            "kos_gossip_messages_total{outcome=\"accepted\"} 42",
            "kos_fuel_throttled_messages_total 2",
            "kos_peer_events_total{event=\"trimmed\"} 1",
            "kos_rocksdb_sst_files_bytes{family=\"blocks\"} 123",
            "kos_rocksdb_memtables_bytes{family=\"blocks\"} 4096",
            "kos_rocksdb_table_readers_bytes{family=\"blocks\"} 512",
            "kos_rocksdb_block_cache_bytes 2048",
            "# UNIT kos_finality_latency_seconds seconds",
            "# HELP kos_finality_latency_seconds Time from a block's proposal (its timestamp) to its commit on this node.",
            "kos_finality_latency_seconds_count 1",
            "kos_finality_latency_seconds_sum 0.4",
            "kos_finality_latency_seconds_bucket{le=\"0.4\"} 1",
            "kos_finality_latency_seconds_bucket{le=\"0.2\"} 0",
        ] {
            assert!(text.lines().any(|got| got == line), "{line:?} missing:\n{text}");
        }
        // Every metric has help text.
        let types = text.lines().filter(|line| line.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|line| line.starts_with("# HELP ")).count();
        assert_eq!(types, helps, "{text}");
        assert!(text.ends_with("# EOF\n"));
        // A catching-up node does not count old blocks as latency.
        let before =
            text.lines().find(|line| line.starts_with("kos_finality_latency_seconds_count")).map(str::to_owned);
        metrics.committed(&empty_commit(8, 0, Vec::new()), false, 10_000_000);
        let again = render(&metrics, Snapshot::default()).unwrap();
        assert_eq!(
            again.lines().find(|line| line.starts_with("kos_finality_latency_seconds_count")).map(str::to_owned),
            before
        );
        assert!(again.lines().any(|line| line == "kos_blocks_committed_total 2"));
    }
}
