//! The node's TOML configuration (`<data-dir>/config.toml`): every field has a default, unknown fields are
//! errors, and [`Config::validate`] turns it into the settings the subsystems take. Command-line flags override
//! the file.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use libp2p::Multiaddr;
use protocol::NetworkId;
use protocol::message::PoolId;
use serde::{Deserialize, Serialize};

use crate::network::{self, budget};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The network to join: `kos-devnet`, `kos-testnet-1`.
    pub network: String,
    /// Log filter (`info`, `kos=debug,libp2p=info`); `RUST_LOG` overrides it.
    pub log: String,
    /// The node's key file; default `<data-dir>/node.key`. `--key-file` overrides it.
    pub key_file: Option<PathBuf>,
    pub p2p: P2p,
    pub limits: Limits,
    pub ledger: Ledger,
    pub api: Api,
    pub meter: Meter,
    pub island: Island,
    pub feeder: Feeder,
    pub storage: Storage,
}

/// What the node keeps of the ledger's history (README, *Pruning*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// `archive`: every block (what `kos ledger export` and peers syncing from the genesis need); `full`: the whole
    /// state and the last `keep_blocks` blocks. Unset: `full` on a node with a meter (a home), `archive` otherwise.
    pub mode: Option<StorageMode>,
    /// Blocks a `full` node keeps (at least 1,024): 100,000 are about a day of a busy network's blocks.
    pub keep_blocks: u64,
    /// The memory the ledger's database may use: `small` (a home: memtables flushed at 4 MiB, a 2 MiB block cache) or
    /// `standard` (16 MiB and 8 MiB). Unset: `small` on a node with a meter, `standard` otherwise.
    pub profile: Option<StorageProfile>,
    /// Write a snapshot of the state every this many blocks (at heights that are multiples of it), keep the last
    /// two in `<ledger>/snapshots` and serve them to peers that sync the state; 0: none.
    pub snapshot_interval: u64,
}

impl Default for Storage {
    fn default() -> Storage {
        Storage { mode: None, keep_blocks: 100_000, profile: None, snapshot_interval: 1_000 }
    }
}

impl Storage {
    /// The ledger database's memory profile on a node with a meter (`home`) or without.
    pub fn store_profile(&self, home: bool) -> ledger::store::Profile {
        match (self.profile, home) {
            (Some(StorageProfile::Small), _) | (None, true) => ledger::store::Profile::Small,
            (Some(StorageProfile::Standard), _) | (None, false) => ledger::store::Profile::Standard,
        }
    }
}

/// The environment variable that makes this kos run ledger protocol versions up to a lower one than it supports, as
/// an older kos would (for tests of upgrades: PROTOCOL.md §10, *Protocol versions*).
pub const LEDGER_VERSION_MAX_VARIABLE: &str = "KOS_LEDGER_VERSION_MAX";

/// The highest ledger protocol version this node runs: [`ledger::block::PROTOCOL_VERSION_MAX`], or lower when
/// [`LEDGER_VERSION_MAX_VARIABLE`] says so.
pub fn ledger_version_max() -> u8 {
    let supported = ledger::block::PROTOCOL_VERSION_MAX;
    std::env::var(LEDGER_VERSION_MAX_VARIABLE)
        .ok()
        .and_then(|text| text.trim().parse::<u8>().ok())
        .map_or(supported, |lower| lower.clamp(1, supported))
}

/// See [`Storage::profile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageProfile {
    Small,
    Standard,
}

/// See [`Storage::mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageMode {
    Archive,
    Full,
}

/// A simulated feeder meter (a devnet's): the cell's members' meters as measured, summed at each interval's end
/// and signed as the feeder's reading (PROTOCOL.md §10, *cells*). A real feeder is a `[meter]` like any other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Feeder {
    /// The APIs of the kos nodes whose meters are the cell's (`http://127.0.0.1:7274`): their `GET /meter`
    /// `measured` registers. Empty: no feeder.
    pub meters: Vec<String>,
    /// The feeder's meter id in its readings (its asset names it).
    pub meter_id: String,
    /// The members' interval, seconds.
    pub interval_s: u32,
    /// How often the members' meters are read, ms.
    pub poll_ms: u64,
}

impl Default for Feeder {
    fn default() -> Feeder {
        Feeder { meters: Vec::new(), meter_id: "feeder".into(), interval_s: 900, poll_ms: 1_000 }
    }
}

/// What the feeder actor takes.
#[derive(Debug, Clone)]
pub struct FeederChecked {
    pub meters: Vec<String>,
    pub meter_id: protocol::types::MeterId,
    pub interval_s: u32,
    pub poll: std::time::Duration,
}

impl Feeder {
    /// `None` without meters.
    fn checked(&self) -> anyhow::Result<Option<FeederChecked>> {
        if self.meters.is_empty() {
            return Ok(None);
        }
        if self.meters.len() > FEEDER_METERS_MAX {
            bail!("feeder.meters: at most {FEEDER_METERS_MAX}");
        }
        for meter in &self.meters {
            if !meter.starts_with("http://") {
                bail!("feeder.meters: {meter:?} is not an http:// URL of a node's API");
            }
        }
        if self.interval_s == 0 || self.interval_s > protocol::limits::INTERVAL_SECONDS_MAX {
            bail!("feeder.interval_s must be between 1 and {}", protocol::limits::INTERVAL_SECONDS_MAX);
        }
        if self.poll_ms < 100 || self.poll_ms > u64::from(self.interval_s) * 1000 {
            bail!("feeder.poll_ms must be at least 100 and at most the interval");
        }
        Ok(Some(FeederChecked {
            meters: self.meters.clone(),
            meter_id: protocol::types::MeterId::new(self.meter_id.clone()).context("feeder.meter_id")?,
            interval_s: self.interval_s,
            poll: std::time::Duration::from_millis(self.poll_ms),
        }))
    }
}

/// Most meters a simulated feeder sums.
pub const FEEDER_METERS_MAX: usize = 256;

/// The microgrid controller (island mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Island {
    /// This node controls a microgrid.
    pub enabled: bool,
    /// The members and what their essential loads need per interval.
    pub members: Vec<IslandMember>,
    /// Force island mode (the grid connection is known to be down).
    pub forced: bool,
    /// Intervals the grid must be back before grid mode returns.
    pub return_intervals: u32,
    /// Allocation interval, seconds (the members' reading interval).
    pub interval_s: u32,
    /// The microgrid's location cell: an `island` override passed for it by governance islands the microgrid
    /// for the override's duration.
    pub cell: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IslandMember {
    /// The member's account (public key, hex).
    pub account: String,
    /// Wh per interval of loads that must run.
    #[serde(default)]
    pub essential_wh: u64,
}

impl Default for Island {
    fn default() -> Island {
        Island { enabled: false, members: Vec::new(), forced: false, return_intervals: 4, interval_s: 900, cell: None }
    }
}

impl Island {
    /// `None` when this node controls no microgrid.
    pub fn validate(&self) -> anyhow::Result<Option<crate::island::Settings>> {
        if !self.enabled {
            return Ok(None);
        }
        if self.members.is_empty() || self.members.len() > 10_000 {
            bail!("island.members: name 1 to 10,000 members");
        }
        if self.interval_s == 0 || self.interval_s > protocol::limits::INTERVAL_SECONDS_MAX {
            bail!("island.interval_s must be between 1 and {}", protocol::limits::INTERVAL_SECONDS_MAX);
        }
        let members = self
            .members
            .iter()
            .map(|member| {
                let account = protocol::PublicKey::from_hex(&member.account)
                    .map_err(|_| anyhow::anyhow!("island.members: {:?} is not a public key", member.account))?;
                Ok(crate::island::Member { account, essential_wh: member.essential_wh })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let cell = match &self.cell {
            Some(cell) => Some(
                protocol::types::Cell::new(cell.clone())
                    .map_err(|error| anyhow::anyhow!("island.cell: {cell:?}: {error}"))?,
            ),
            None => None,
        };
        Ok(Some(crate::island::Settings {
            members,
            interval_s: self.interval_s,
            forced: self.forced,
            return_intervals: self.return_intervals,
            cell,
        }))
    }
}

/// Which meter the node reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MeterKind {
    /// No meter: this node signs no readings.
    None,
    /// A simulated home (`[meter.simulated]`).
    Simulated,
    /// A SunSpec inverter and/or meter over Modbus TCP (`[meter.sunspec]`).
    Sunspec,
    /// A meter that publishes to an MQTT broker (`[meter.mqtt]`).
    Mqtt,
}

/// The home's meter, whose readings this node signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Meter {
    pub kind: MeterKind,
    /// The meter's name in readings: `main`, `modbus:192.168.1.50/1`.
    pub id: String,
    /// Length of a reading's interval, seconds: the energy pools' delivery interval.
    pub interval_s: u32,
    /// How often the meter is read, ms.
    pub poll_ms: u64,
    /// What the site can do, W; readings beyond it are not signed (and refused by peers).
    pub capacity: energy::reading::Capacity,
    pub simulated: energy::home::HomeConfig,
    pub sunspec: SunSpec,
    pub mqtt: Mqtt,
    pub dispatch: Dispatch,
    pub trade: Trade,
    /// Maintenance rules over the meter's intervals, for the asset its meter is bound to on the ledger (an
    /// asset manifest naming the meter): alerts are signed and anchored under the asset.
    pub maintenance: energy::maintenance::Rules,
    /// The meter's own signing key (kos's key-file format; relative paths are in the data directory), for a node
    /// that runs on the meter's hardware or stands in for its signing chip: every reading is then also signed by
    /// this device key (PROTOCOL.md §5, *Device-signed readings*). Created on first start when missing; `GET
    /// /meter` shows its public key, to name in the meter's asset manifest (`device_key`).
    pub device_key_file: Option<std::path::PathBuf>,
    /// For a devnet only: a simulated home that lies, claiming this much more export (and generation) than its
    /// meter measured, ppm — what a cell's feeder meter is there to catch (PROTOCOL.md §10, *cells*).
    pub over_report_ppm: u32,
}

/// The home's trader: each interval it offers the next delivery interval's forecast surplus (an ask at the
/// feed-in tariff) or deficit (a bid at the grid tariff) in an energy pool (a real home from its learnt forecast).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trade {
    /// The energy pool, whose delivery interval must be the meter's interval (`energy/credit/u33db/900`); none:
    /// no trading.
    pub pool: Option<String>,
    /// Share of the forecast surplus or deficit offered, parts per million (forecasts err; under-delivery costs
    /// a penalty).
    pub share_ppm: u32,
}

impl Default for Trade {
    fn default() -> Trade {
        Trade { pool: None, share_ppm: 500_000 }
    }
}

/// The home controller: plans the home battery every interval from forecasts and prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dispatch {
    /// Off: the battery follows self-consumption on its own.
    pub enabled: bool,
    /// `cost` (lowest bill) or `self-consumption` (least energy from the grid).
    pub objective: energy::dispatch::Objective,
    /// Grid tariff and feed-in tariff, milli-credits per kWh.
    pub buy_per_kwh: u64,
    pub sell_per_kwh: u64,
    /// The energy pool whose clearing prices move the tariff toward the local market (`energy/credit/u33db/900`).
    pub pool: Option<String>,
    /// A load that must run once a day but may be shifted (a dishwasher, a car's charge, a water heater): the
    /// controller places it where energy is cheapest before its deadline. A simulated home runs it; a real home
    /// switches it through an MQTT relay (`switch_topic`).
    pub flexible: Option<FlexibleLoad>,
    /// Local time minus UTC, seconds, for a real home's flexible-load deadline (a simulated home has its own).
    pub utc_offset_s: i64,
}

/// A daily flexible load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlexibleLoad {
    /// Energy it needs each day, Wh (as the meter counts it: power × wall time).
    pub energy_wh: u64,
    /// Its power while it runs, W.
    pub power_w: u64,
    /// Local hour of the day (1 to 24) by which it must be done.
    pub deadline_hour: u32,
    /// For a real home with an MQTT meter: the relay's command topic, which gets `ON` while the load should run
    /// and `OFF` otherwise (a Tasmota or Shelly plug: `cmnd/wallbox/POWER`).
    #[serde(default)]
    pub switch_topic: Option<String>,
}

impl Default for Dispatch {
    fn default() -> Dispatch {
        Dispatch {
            enabled: true,
            objective: energy::dispatch::Objective::Cost,
            buy_per_kwh: 300,
            sell_per_kwh: 80,
            pool: None,
            flexible: None,
            utc_offset_s: 3600,
        }
    }
}

/// A SunSpec device over Modbus TCP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SunSpec {
    /// `host:port` of the device (or its Modbus TCP gateway).
    pub address: String,
    /// Modbus unit id.
    pub unit: u8,
    pub timeout_ms: u64,
    /// The battery behind the device's storage model (124), for the home controller to drive; the device does
    /// not tell its capacity.
    pub battery: Option<crate::meter::sunspec::Battery>,
}

/// A meter reporting over MQTT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mqtt {
    /// `host:port` of the broker.
    pub broker: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A device preset (`tasmota-plug`, `tasmota-sml`, `shelly-em`, `shelly-pro-em`) and the device's name.
    pub preset: Option<energy::mqtt::Preset>,
    pub device: String,
    /// Topic and field of each register, for devices without a preset (added to the preset's).
    pub mappings: Vec<energy::mqtt::Mapping>,
}

impl Mqtt {
    /// The MQTT source's settings, checked.
    fn settings(&self) -> anyhow::Result<crate::meter::mqtt::Settings> {
        let mqtt = self;
        let (host, port) = mqtt
            .broker
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
            .with_context(|| format!("meter.mqtt.broker: {:?} is not host:port", mqtt.broker))?;
        let mut mappings = match mqtt.preset {
            Some(_) if mqtt.device.is_empty() => bail!("meter.mqtt.device: a preset needs the device name"),
            Some(preset) => preset.mappings(&mqtt.device),
            None => Vec::new(),
        };
        mappings.extend(mqtt.mappings.iter().cloned());
        if mappings.is_empty() {
            bail!("meter.mqtt: set a preset and device, or mappings (register, topic, pointer, scale)");
        }
        if mappings.iter().any(|mapping| mapping.topic.contains(['+', '#']) || mapping.topic.is_empty()) {
            bail!("meter.mqtt.mappings: topics must be exact (no + or # wildcards)");
        }
        let credentials = match (&mqtt.username, &mqtt.password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            (None, None) => None,
            _ => bail!("meter.mqtt: username and password go together"),
        };
        Ok(crate::meter::mqtt::Settings {
            host,
            port,
            client_id: format!("kos-{}", std::process::id()),
            credentials,
            mappings,
        })
    }
}

impl Default for Meter {
    fn default() -> Meter {
        Meter {
            kind: MeterKind::None,
            id: "main".into(),
            interval_s: 900,
            poll_ms: 5_000,
            capacity: energy::reading::Capacity::RESIDENTIAL,
            simulated: energy::home::HomeConfig::default(),
            sunspec: SunSpec::default(),
            mqtt: Mqtt::default(),
            dispatch: Dispatch::default(),
            trade: Trade::default(),
            maintenance: energy::maintenance::Rules::default(),
            device_key_file: None,
            over_report_ppm: 0,
        }
    }
}

impl Default for SunSpec {
    fn default() -> SunSpec {
        SunSpec { address: String::new(), unit: 1, timeout_ms: 3_000, battery: None }
    }
}

impl Default for Mqtt {
    fn default() -> Mqtt {
        Mqtt {
            broker: "127.0.0.1:1883".into(),
            username: None,
            password: None,
            preset: None,
            device: String::new(),
            mappings: Vec::new(),
        }
    }
}

/// The meter's checked settings.
#[derive(Debug, Clone)]
pub struct MeterChecked {
    pub id: protocol::types::MeterId,
    pub interval_s: u32,
    pub poll: std::time::Duration,
    pub capacity: energy::reading::Capacity,
    pub source: MeterSourceSettings,
    pub dispatch: Option<Dispatch>,
    pub maintenance: energy::maintenance::Rules,
    /// The energy pool the home trades in, and the share of its forecast it offers.
    pub trade: Option<(PoolId, u32)>,
    /// Feed-in and grid tariffs (the trader's ask and bid prices), milli-credits per kWh.
    pub tariffs: (u64, u64),
    /// The meter's own signing key file, as configured.
    pub device_key_file: Option<std::path::PathBuf>,
    /// A devnet's lying home: its over-report, ppm (simulated meters only).
    pub over_report_ppm: u32,
}

/// What to read.
#[derive(Debug, Clone)]
pub enum MeterSourceSettings {
    Simulated(energy::home::HomeConfig),
    SunSpec(crate::meter::sunspec::Settings),
    Mqtt(crate::meter::mqtt::Settings),
}

impl Meter {
    /// A flexible load is run within a day, and switched through an MQTT relay in a real home.
    fn check_flexible(&self) -> anyhow::Result<()> {
        if let Some(load) = &self.dispatch.flexible {
            if load.energy_wh == 0 || load.power_w == 0 || !(1..=24).contains(&load.deadline_hour) {
                bail!("meter.dispatch.flexible: energy_wh and power_w above 0, deadline_hour from 1 to 24");
            }
            match (&load.switch_topic, self.kind) {
                (Some(topic), MeterKind::Mqtt) if topic.is_empty() || topic.contains(['+', '#']) => {
                    bail!("meter.dispatch.flexible.switch_topic: an exact topic (no + or #)")
                }
                (Some(_), MeterKind::Mqtt) | (None, MeterKind::Simulated | MeterKind::None) => {}
                (Some(_), _) => {
                    bail!("meter.dispatch.flexible.switch_topic: relays are switched over MQTT meters only")
                }
                (None, _) => bail!(
                    "meter.dispatch.flexible: a real home's flexible load needs switch_topic (an MQTT relay) to be run"
                ),
            }
        }
        Ok(())
    }

    /// `None` when the node has no meter.
    pub fn validate(&self) -> anyhow::Result<Option<MeterChecked>> {
        self.check_flexible()?;
        if !(-14 * 3600..=14 * 3600).contains(&self.dispatch.utc_offset_s) {
            bail!("meter.dispatch.utc_offset_s: within ±14 hours");
        }
        let source = match self.kind {
            MeterKind::None => return Ok(None),
            MeterKind::Simulated => {
                self.simulated.validate().context("meter.simulated")?;
                MeterSourceSettings::Simulated(self.simulated.clone())
            }
            MeterKind::Sunspec => {
                let address = self.sunspec.address.parse().with_context(|| {
                    format!("meter.sunspec.address: {:?} is not ip:port (e.g. 192.168.1.50:502)", self.sunspec.address)
                })?;
                if let Some(battery) = &self.sunspec.battery
                    && (battery.capacity_wh == 0 || !(1..=1_000_000).contains(&battery.efficiency_ppm))
                {
                    bail!("meter.sunspec.battery: capacity_wh above 0, efficiency_ppm in 1..=1,000,000");
                }
                MeterSourceSettings::SunSpec(crate::meter::sunspec::Settings {
                    address,
                    unit: self.sunspec.unit,
                    timeout: std::time::Duration::from_millis(self.sunspec.timeout_ms.max(100)),
                    battery: self.sunspec.battery,
                })
            }
            MeterKind::Mqtt => MeterSourceSettings::Mqtt(self.mqtt.settings()?),
        };
        if let Some(pool) = &self.dispatch.pool {
            pool.parse::<PoolId>().with_context(|| format!("meter.dispatch.pool: {pool:?}"))?;
        }
        let trade = match &self.trade.pool {
            Some(pool) => {
                let pool: PoolId = pool.parse().with_context(|| format!("meter.trade.pool: {pool:?}"))?;
                if pool.interval_s != self.interval_s {
                    bail!(
                        "meter.trade.pool: its interval ({} s) must be meter.interval_s ({} s)",
                        pool.interval_s,
                        self.interval_s
                    );
                }
                Some((pool, self.trade.share_ppm.min(1_000_000)))
            }
            None => None,
        };
        let rules = &self.maintenance;
        let factor_ok = rules.misuse_factor.is_finite() && rules.misuse_factor > 1.0;
        if rules.window == 0 || rules.window > 10_000 || !factor_ok || rules.silent_intervals == 0 {
            bail!("meter.maintenance: window 1 to 10,000, misuse_factor above 1, silent_intervals above 0");
        }
        if rules.efficiency_min_ppm > 1_000_000 || rules.reserve_ppm > 1_000_000 {
            bail!("meter.maintenance: efficiency_min_ppm and reserve_ppm at most 1,000,000");
        }
        if self.interval_s == 0 || self.interval_s > protocol::limits::INTERVAL_SECONDS_MAX {
            bail!("meter.interval_s must be between 1 and {}", protocol::limits::INTERVAL_SECONDS_MAX);
        }
        if self.over_report_ppm > 0 && self.kind != MeterKind::Simulated {
            bail!("meter.over_report_ppm: only a simulated home over-reports (a devnet's liar)");
        }
        if self.poll_ms < 100 || self.poll_ms > u64::from(self.interval_s) * 1000 {
            bail!("meter.poll_ms must be at least 100 and at most the interval");
        }
        Ok(Some(MeterChecked {
            id: protocol::types::MeterId::new(self.id.clone()).context("meter.id")?,
            interval_s: self.interval_s,
            poll: std::time::Duration::from_millis(self.poll_ms),
            capacity: self.capacity,
            source,
            dispatch: self.dispatch.enabled.then(|| self.dispatch.clone()),
            maintenance: self.maintenance,
            trade,
            tariffs: (self.dispatch.sell_per_kwh, self.dispatch.buy_per_kwh),
            device_key_file: self.device_key_file.clone(),
            over_report_ppm: self.over_report_ppm,
        }))
    }
}

/// The replicated ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ledger {
    /// The network's genesis file (validators, tokens, parameters); default `<data-dir>/genesis.toml`. Without
    /// one the node only gossips and keeps no ledger.
    pub genesis: Option<PathBuf>,
    /// The RocksDB directory; default `<data-dir>/ledger`.
    pub path: Option<PathBuf>,
    /// How long a proposer with nothing to include waits before proposing an empty block.
    pub empty_block_ms: u64,
    /// Pause after each commit so that entries gather into fuller blocks.
    pub commit_wait_ms: u64,
    /// The consensus propose timeout (the others scale with it: prevote and precommit a third of it).
    pub propose_timeout_ms: u64,
    /// Most entries waiting in the mempool, and per author.
    pub mempool_entries_max: usize,
    pub mempool_entries_per_author_max: usize,
    /// A node whose ledger is empty, or a `full` one far behind, takes a recent snapshot of the state from its peers
    /// instead of executing every block since the genesis, or since its tip (PROTOCOL.md §9, *State sync*), when it
    /// has bootnodes to ask; `false` (or `kos run --replay`) syncs the blocks.
    pub state_sync: bool,
    /// The lowest snapshot height worth a state sync for an empty ledger, and how many blocks past its tip one must
    /// be for a `full` ledger whose last block is older than this many empty blocks (`× empty_block_ms`): short of
    /// it, the blocks are synced.
    pub state_sync_min_height: u64,
}

/// The HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Api {
    /// Address to serve on; loopback by default (write endpoints need the token in `<data-dir>/api.token`).
    /// Empty: no API.
    pub listen: String,
}

impl Default for Api {
    fn default() -> Api {
        Api { listen: "127.0.0.1:7080".into() }
    }
}

impl Default for Ledger {
    fn default() -> Ledger {
        let engine = ledger::consensus::Config::default();
        Ledger {
            genesis: None,
            path: None,
            empty_block_ms: engine.empty_block_ms,
            commit_wait_ms: engine.commit_wait_ms,
            propose_timeout_ms: engine.timeouts.propose_ms,
            mempool_entries_max: engine.mempool.entries_max,
            mempool_entries_per_author_max: engine.mempool.per_author_max,
            state_sync: true,
            state_sync_min_height: 1_000,
        }
    }
}

/// Peer-to-peer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2p {
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Peers to dial at start: `/ip4/203.0.113.7/tcp/7070/p2p/12D3KooW...`.
    pub bootnodes: Vec<String>,
    /// Relays to reserve a slot on when this node is behind NAT.
    pub relays: Vec<String>,
    /// Relay for others (for bootnodes with a public address).
    pub relay_server: bool,
    /// Addresses others reach this node at (public IP and port): `/ip4/203.0.113.7/tcp/7070`.
    pub external_addresses: Vec<String>,
    /// Find peers on the local network by mDNS.
    pub mdns: bool,
    /// Run the DHT (pool discovery).
    pub kademlia: bool,
    /// AutoNAT trusts only global addresses (set false on a LAN-only network).
    pub autonat_only_global: bool,
    /// Most established connections.
    pub peers_max: u32,
    /// Pools this node is in for good: subscribed, announced in the DHT, never left (`energy/credit/u33db/900`, or a
    /// barter pool `barter/u33db`).
    pub pools: Vec<String>,
}

/// Limits on what peers may make this node do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub peer_messages_per_s: u64,
    pub peer_messages_burst: u64,
    pub peer_bytes_per_s: u64,
    pub peer_bytes_burst: u64,
    /// How far ahead of this node's clock a message may be dated.
    pub clock_skew_ms_max: u64,
    /// The longest lifetime a message may ask for.
    pub message_lifetime_ms_max: u64,
    /// Validated messages waiting for the node before new ones are dropped.
    pub delivery_queue_len_max: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            network: "kos-devnet".into(),
            log: "info".into(),
            key_file: None,
            p2p: P2p::default(),
            limits: Limits::default(),
            ledger: Ledger::default(),
            api: Api::default(),
            meter: Meter::default(),
            island: Island::default(),
            feeder: Feeder::default(),
            storage: Storage::default(),
        }
    }
}

impl Default for P2p {
    fn default() -> P2p {
        P2p {
            listen: vec!["/ip4/0.0.0.0/tcp/7070".into(), "/ip4/0.0.0.0/udp/7070/quic-v1".into()],
            bootnodes: Vec::new(),
            relays: Vec::new(),
            relay_server: false,
            external_addresses: Vec::new(),
            mdns: true,
            kademlia: true,
            autonat_only_global: true,
            peers_max: 64,
            pools: Vec::new(),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        let peer = budget::Limits::default();
        Limits {
            peer_messages_per_s: peer.messages.per_s,
            peer_messages_burst: peer.messages.burst,
            peer_bytes_per_s: peer.bytes.per_s,
            peer_bytes_burst: peer.bytes.burst,
            clock_skew_ms_max: protocol::Config::CLOCK_SKEW_MS_MAX_DEFAULT,
            message_lifetime_ms_max: protocol::Config::LIFETIME_MS_MAX_DEFAULT,
            delivery_queue_len_max: 4096,
        }
    }
}

/// The settings a node runs with, checked.
#[derive(Debug, Clone)]
pub struct Checked {
    pub network: network::Config,
    pub pools: Vec<protocol::message::PoolKey>,
    pub log: String,
    /// `None`: no genesis file, no ledger.
    pub ledger: Option<crate::ledger::Settings>,
    /// `None`: no API.
    pub api: Option<std::net::SocketAddr>,
    /// `None`: no meter.
    pub meter: Option<MeterChecked>,
    /// `None`: not a microgrid controller.
    pub island: Option<crate::island::Settings>,
    /// `None`: no simulated feeder.
    pub feeder: Option<FeederChecked>,
    pub data_dir: PathBuf,
}

fn addresses(what: &str, texts: &[String]) -> anyhow::Result<Vec<Multiaddr>> {
    texts.iter().map(|text| text.parse().with_context(|| format!("{what}: {text:?} is not a multiaddr"))).collect()
}

impl Config {
    /// Reads a config file; a missing file at the default path is the default config.
    pub fn load(path: &Path, required: bool) -> anyhow::Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("config file {}", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !required => Ok(Config::default()),
            Err(error) => Err(error).with_context(|| format!("reading config file {}", path.display())),
        }
    }

    /// The ledger's settings: `None` when there is no genesis file (none configured and none in the data
    /// directory).
    pub fn ledger_settings(&self, data_dir: &Path) -> anyhow::Result<Option<crate::ledger::Settings>> {
        let default_genesis = data_dir.join("genesis.toml");
        let genesis_path = match &self.ledger.genesis {
            Some(path) => path.clone(),
            None if default_genesis.exists() => default_genesis,
            None => return Ok(None),
        };
        let genesis = ledger::Genesis::load(&genesis_path)
            .with_context(|| format!("ledger.genesis: reading {}", genesis_path.display()))?;
        if genesis.network.as_str() != self.network {
            bail!(
                "the genesis file {} is for network {:?}, the config joins {:?}: use the genesis of the network \
                 you join",
                genesis_path.display(),
                genesis.network.as_str(),
                self.network
            );
        }
        let ledger = &self.ledger;
        if ledger.propose_timeout_ms < 100
            || ledger.mempool_entries_max == 0
            || ledger.mempool_entries_per_author_max == 0
        {
            bail!("ledger: propose_timeout_ms must be at least 100 and the mempool limits more than 0");
        }
        let mut engine = ledger::consensus::Config {
            empty_block_ms: ledger.empty_block_ms,
            commit_wait_ms: ledger.commit_wait_ms,
            ..Default::default()
        };
        let third = (ledger.propose_timeout_ms / 3).max(50);
        engine.timeouts = ledger::consensus::Timeouts {
            propose_ms: ledger.propose_timeout_ms,
            prevote_ms: third,
            precommit_ms: third,
            rebroadcast_ms: ledger.propose_timeout_ms * 2 / 3,
            step_ms: (third / 2).max(25),
        };
        engine.mempool.entries_max = ledger.mempool_entries_max;
        engine.version_max = ledger_version_max();
        engine.mempool.per_author_max = ledger.mempool_entries_per_author_max;
        let mode = self.storage.mode.unwrap_or(if self.meter.kind == MeterKind::None {
            StorageMode::Archive
        } else {
            StorageMode::Full
        });
        let profile = self.storage.store_profile(self.meter.kind != MeterKind::None);
        if self.storage.keep_blocks < ledger::store::KEEP_BLOCKS_MIN {
            bail!("storage.keep_blocks must be at least {}", ledger::store::KEEP_BLOCKS_MIN);
        }
        Ok(Some(crate::ledger::Settings {
            genesis: std::sync::Arc::new(genesis),
            path: ledger.path.clone().unwrap_or_else(|| data_dir.join("ledger")),
            engine,
            keep_blocks: (mode == StorageMode::Full).then_some(self.storage.keep_blocks),
            profile,
            snapshot_interval: self.storage.snapshot_interval,
            // A node with no bootnode (the first of a network, or one on mDNS alone) has no one to ask at start.
            // An archive by choice keeps every block from the genesis: it replays them.
            state_sync: (ledger.state_sync
                && !self.p2p.bootnodes.is_empty()
                && self.storage.mode != Some(StorageMode::Archive))
            .then_some(ledger.state_sync_min_height),
        }))
    }

    /// Gossipsub's queue to one peer: small on a node with the small storage profile (a home), gossipsub's default
    /// elsewhere (validators relay blocks and votes in bursts).
    fn gossip_peer_queue(&self) -> usize {
        match self.storage.store_profile(self.meter.kind != MeterKind::None) {
            ledger::store::Profile::Small => network::GOSSIP_PEER_QUEUE_SMALL,
            ledger::store::Profile::Standard => network::GOSSIP_PEER_QUEUE,
        }
    }

    /// Checks every field and builds the subsystems' settings; the ledger's come from
    /// [`Config::ledger_settings`].
    pub fn validate(&self) -> anyhow::Result<Checked> {
        let network_id = NetworkId::new(self.network.clone()).context("network")?;
        let listen = addresses("p2p.listen", &self.p2p.listen)?;
        if listen.is_empty() {
            bail!("p2p.listen is empty: the node needs at least one address to listen on");
        }
        let limits = &self.limits;
        let positive = [
            ("limits.peer_messages_per_s", limits.peer_messages_per_s),
            ("limits.peer_messages_burst", limits.peer_messages_burst),
            ("limits.peer_bytes_per_s", limits.peer_bytes_per_s),
            ("limits.peer_bytes_burst", limits.peer_bytes_burst),
            ("limits.message_lifetime_ms_max", limits.message_lifetime_ms_max),
            ("p2p.peers_max", u64::from(self.p2p.peers_max)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            bail!("{name} must be more than 0");
        }
        let envelope_bytes = u64::try_from(protocol::limits::ENVELOPE_BYTES_MAX).unwrap_or(u64::MAX);
        if limits.peer_bytes_burst < envelope_bytes {
            bail!(
                "limits.peer_bytes_burst ({}) must hold at least one message ({envelope_bytes} bytes)",
                limits.peer_bytes_burst
            );
        }
        let pools = self
            .p2p
            .pools
            .iter()
            .map(|text| text.parse::<protocol::message::PoolKey>().with_context(|| format!("p2p.pools: {text:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut network = network::Config::new(network_id.clone(), listen);
        network.bootnodes = addresses("p2p.bootnodes", &self.p2p.bootnodes)?;
        network.relays = addresses("p2p.relays", &self.p2p.relays)?;
        network.relay_server = self.p2p.relay_server;
        network.external_addresses = addresses("p2p.external_addresses", &self.p2p.external_addresses)?;
        network.mdns = self.p2p.mdns;
        network.ledger_version_max = ledger_version_max();
        network.kademlia = self.p2p.kademlia;
        network.autonat_only_global = self.p2p.autonat_only_global;
        network.peers_max = self.p2p.peers_max;
        network.peer_limits = budget::Limits {
            messages: budget::Rate { per_s: limits.peer_messages_per_s, burst: limits.peer_messages_burst },
            bytes: budget::Rate { per_s: limits.peer_bytes_per_s, burst: limits.peer_bytes_burst },
        };
        network.delivery_queue_len_max = limits.delivery_queue_len_max.max(1);
        network.gossip_peer_queue = self.gossip_peer_queue();
        network.validation = protocol::Config {
            network: network_id,
            clock_skew_ms_max: limits.clock_skew_ms_max,
            lifetime_ms_max: limits.message_lifetime_ms_max,
            envelope_bytes_max: protocol::limits::ENVELOPE_BYTES_MAX,
        };
        let api = if self.api.listen.is_empty() {
            None
        } else {
            Some(self.api.listen.parse().with_context(|| format!("api.listen: {:?} is not ip:port", self.api.listen))?)
        };
        let meter = self.meter.validate()?;
        let island = self.island.validate()?;
        Ok(Checked {
            network,
            pools,
            log: self.log.clone(),
            ledger: None,
            api,
            meter,
            island,
            feeder: self.feeder.checked()?,
            data_dir: PathBuf::new(),
        })
    }
}

/// The default config file of a data directory.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join("config.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid_and_round_trips() {
        let config = Config::default();
        let checked = config.validate().unwrap();
        assert_eq!(checked.network.listen.len(), 2);
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), config);
    }

    #[test]
    fn partial_files_take_defaults_and_bad_fields_are_errors() {
        let config: Config = toml::from_str("network = \"kos-testnet-1\"\n[p2p]\nmdns = false\n").unwrap();
        assert_eq!(config.network, "kos-testnet-1");
        assert!(!config.p2p.mdns);
        assert_eq!(config.p2p.peers_max, 64);
        assert!(toml::from_str::<Config>("[p2p]\nmdsn = false\n").unwrap_err().to_string().contains("mdsn"));
        let bad = |edit: fn(&mut Config)| {
            let mut config = Config::default();
            edit(&mut config);
            config.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.network = "Bad Net".into()).contains("network"));
        assert!(bad(|c| c.p2p.listen = vec!["tcp:7070".into()]).contains("p2p.listen"));
        assert!(bad(|c| c.p2p.listen.clear()).contains("empty"));
        assert!(bad(|c| c.p2p.pools = vec!["energy/credit".into()]).contains("p2p.pools"));
        assert!(bad(|c| c.limits.peer_messages_per_s = 0).contains("peer_messages_per_s"));
        assert!(bad(|c| c.limits.peer_bytes_burst = 100).contains("at least one message"));
    }

    #[test]
    fn a_home_gets_the_small_storage_profile_unless_configured() {
        let storage = |text: &str| toml::from_str::<Config>(text).unwrap().storage;
        let unset = storage("");
        assert_eq!(unset.store_profile(true), ledger::store::Profile::Small);
        assert_eq!(unset.store_profile(false), ledger::store::Profile::Standard);
        let standard = storage("[storage]\nprofile = \"standard\"\n");
        assert_eq!(standard.store_profile(true), ledger::store::Profile::Standard);
        let small = storage("[storage]\nprofile = \"small\"\n");
        assert_eq!(small.store_profile(false), ledger::store::Profile::Small);
        assert!(toml::from_str::<Config>("[storage]\nprofile = \"tiny\"\n").is_err());
    }

    /// Issue 28, item 7: gossipsub's default queue to a peer (5,000 RPCs, half of them allocated when the peer
    /// connects) took 580 KB a peer, 5.2 MB of a devnet home's heap; a home's is 1,024, a validator's the default.
    #[test]
    fn a_home_keeps_small_gossip_queues() {
        let queue = |text: &str| toml::from_str::<Config>(text).unwrap().gossip_peer_queue();
        assert_eq!(queue(""), network::GOSSIP_PEER_QUEUE);
        assert_eq!(queue("[meter]\nkind = \"simulated\"\n"), network::GOSSIP_PEER_QUEUE_SMALL);
        assert_eq!(queue("[storage]\nprofile = \"small\"\n"), network::GOSSIP_PEER_QUEUE_SMALL);
        let config: Config = toml::from_str("[storage]\nprofile = \"small\"\n").unwrap();
        assert_eq!(config.validate().unwrap().network.gossip_peer_queue, network::GOSSIP_PEER_QUEUE_SMALL);
    }

    #[test]
    fn a_real_homes_dispatch_settings_are_checked() {
        let home = |text: &str| -> anyhow::Result<Option<MeterChecked>> {
            let config: Config = toml::from_str(text)?;
            config.meter.validate()
        };
        let mqtt = "[meter]\nkind = \"mqtt\"\n[meter.mqtt]\npreset = \"shelly-em\"\ndevice = \"em\"\n";
        let flexible = "[meter.dispatch.flexible]\nenergy_wh = 5000\npower_w = 3700\ndeadline_hour = 7\n";
        let error = |text: &str| home(text).map(|_| ()).unwrap_err().to_string();
        // A real home's flexible load needs its relay; the relay is switched over the MQTT meter's broker.
        assert!(error(&format!("{mqtt}{flexible}")).contains("switch_topic"));
        assert!(home(&format!("{mqtt}{flexible}switch_topic = \"cmnd/car/POWER\"\n")).unwrap().is_some());
        assert!(error(&format!("{mqtt}{flexible}switch_topic = \"cmnd/+/POWER\"\n")).contains("exact topic"));
        let sunspec = "[meter]\nkind = \"sunspec\"\n[meter.sunspec]\naddress = \"127.0.0.1:502\"\n";
        assert!(error(&format!("{sunspec}{flexible}switch_topic = \"a\"\n")).contains("MQTT meters only"));
        // A SunSpec battery needs its capacity (the device does not tell it); efficiency defaults to 90 %.
        let battery = home(&format!("{sunspec}battery = {{ capacity_wh = 10000 }}\n")).unwrap().unwrap();
        let MeterSourceSettings::SunSpec(settings) = battery.source else { panic!("not SunSpec") };
        assert_eq!(settings.battery.map(|b| (b.capacity_wh, b.efficiency_ppm)), Some((10_000, 900_000)));
        assert!(error(&format!("{sunspec}battery = {{ capacity_wh = 0 }}\n")).contains("capacity_wh"));
    }
}
