//! The meter actor: polls the home's meter (simulated, SunSpec over Modbus TCP, or MQTT), turns its registers
//! into one reading per delivery interval, checks the reading is physically possible, signs it with the node's
//! key, gossips it on the readings topic and submits it to the ledger, where it is anchored and energy trades are
//! checked against it.

pub mod mqtt;
pub mod sunspec;

use ::ledger::reads::*;
use std::sync::Arc;
use std::time::Duration;

use energy::meter::{Intervals, Meter, Push, Sample};
use energy::reading::{Capacity, Previous};
use protocol::NetworkId;
use protocol::message::{Body, Reading};
use protocol::types::MeterId;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::clock::now_ms;
use crate::network::{self, Topic};

/// How long a signed reading may wait to be anchored.
const READING_LIFETIME_MS: u64 = 10 * 60 * 1000;

/// Where the readings come from.
pub enum Source {
    Simulated(Box<energy::home::Home>),
    SunSpec(Box<sunspec::Device>),
    Mqtt(mqtt::Meter),
}

impl Source {
    fn kind(&self) -> &'static str {
        match self {
            Source::Simulated(_) => "simulated",
            Source::SunSpec(_) => "sunspec",
            Source::Mqtt(_) => "mqtt",
        }
    }
}

impl Meter for Source {
    fn source(&self) -> protocol::message::MeterSource {
        match self {
            Source::Simulated(home) => home.as_ref().source(),
            Source::SunSpec(device) => device.as_ref().source(),
            Source::Mqtt(meter) => meter.source(),
        }
    }

    async fn sample(&mut self, now_ms: u64) -> Result<Sample, energy::meter::Error> {
        match self {
            Source::Simulated(home) => Meter::sample(home.as_mut(), now_ms).await,
            Source::SunSpec(device) => device.as_mut().sample(now_ms).await,
            Source::Mqtt(meter) => meter.sample(now_ms).await,
        }
    }
}

/// Opens the configured meter: a simulated home starts now (at its own speed), a SunSpec device connects on its
/// first sample, an MQTT meter connects in the background.
pub fn open(settings: &crate::config::MeterChecked) -> anyhow::Result<Source> {
    use anyhow::Context as _;
    Ok(match &settings.source {
        crate::config::MeterSourceSettings::Simulated(config) => {
            let mut config = config.clone();
            let now = now_ms();
            if config.simulated_origin_s == 0 && config.wall_origin_s == 0 {
                // Accelerated time starts from the present.
                let now_s = i64::try_from(now / 1000).unwrap_or(0);
                (config.simulated_origin_s, config.wall_origin_s) = (now_s, now_s);
            }
            let profile = Arc::new(energy::profile::LoadProfile::h25().context("the load profile")?);
            Source::Simulated(Box::new(energy::home::Home::new(config, profile, now).context("meter.simulated")?))
        }
        crate::config::MeterSourceSettings::SunSpec(device) => {
            Source::SunSpec(Box::new(sunspec::Device::new(device.clone())))
        }
        crate::config::MeterSourceSettings::Mqtt(broker) => Source::Mqtt(mqtt::Meter::spawn(broker.clone())),
    })
}

/// The actor's settings.
pub struct Settings {
    pub id: MeterId,
    pub interval_s: u32,
    pub poll: Duration,
    pub capacity: Capacity,
    pub network: NetworkId,
    /// Plan the home battery every interval (simulated homes with a battery).
    pub dispatch: Option<crate::config::Dispatch>,
    /// Offer the forecast surplus or deficit in this pool, this share of it (ppm).
    pub trade: Option<(protocol::message::PoolId, u32)>,
    /// Ask (feed-in) and bid (grid) prices, milli-credits per kWh.
    pub tariffs: (u64, u64),
    /// Maintenance rules for the asset the meter is bound to.
    pub maintenance: energy::maintenance::Rules,
    /// The meter's own signing key: every reading carries its signature too.
    pub device: Option<Arc<protocol::Keypair>>,
    /// A devnet's lying home (simulated meters only): its readings claim this much more export (and the
    /// generation behind it) than the meter measured, ppm.
    pub over_report_ppm: u32,
}

/// Slots the home controller looks ahead.
const DISPATCH_SLOTS: usize = 96;
/// Days of measured history a real home's forecast learns from.
const FORECAST_DAYS: u32 = 7;
/// A driven battery goes back to its own control after this many intervals without a new command.
const BATTERY_REVERT_INTERVALS: u32 = 3;

/// What the meter did, for the API and the logs.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
#[schemars(rename = "MeterStatus")]
pub struct Status {
    pub meter: String,
    pub source: String,
    pub interval_s: u32,
    /// The latest registers, Wh.
    pub sample: Option<SampleView>,
    /// The latest reading this node signed.
    pub last_reading: Option<ReadingView>,
    pub samples: u64,
    pub sample_errors: u64,
    pub last_error: Option<String>,
    pub readings_published: u64,
    /// Readings this node would not sign (physically impossible) or the ledger refused.
    pub readings_refused: u64,
    /// Offers the home's trader placed (asks for surplus, bids for deficit).
    pub asks: u64,
    pub bids: u64,
    /// Intervals without a reading because the meter was silent through them.
    pub intervals_missed: u64,
    /// The home battery, when this node controls one.
    pub battery: Option<BatteryView>,
    /// The home's flexible load, when it has one.
    pub flexible: Option<FlexibleView>,
    /// A real home's forecast, learnt from its own history.
    pub forecast: Option<ForecastView>,
    /// The asset the meter is bound to on the ledger, whose maintenance rules this node runs.
    pub asset: Option<String>,
    /// Maintenance alerts this node signed for it, and the latest.
    pub alerts: u64,
    pub last_alert: Option<String>,
    /// The device key that signs this meter's readings besides the node (`ed25519:<hex>`), to name in its asset
    /// manifest; none: the node's signature only.
    pub device_key: Option<String>,
    /// The device key is not (yet) named by the meter's asset on the ledger: readings go without its signature.
    pub device_unregistered: bool,
    /// The meter's registers at the end of the last interval, as it measured them (what a feeder that sums the
    /// cell's meters reads; the signed reading's, unless a devnet home is told to over-report).
    pub measured: Option<MeasuredView>,
}

/// A meter's registers at the end of an interval, Wh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct MeasuredView {
    pub interval_start_s: u64,
    pub interval_s: u32,
    pub import_counter_wh: u64,
    pub export_counter_wh: u64,
}

/// What a real home's forecaster knows and expects.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ForecastView {
    /// Intervals of history it learns from (up to a week).
    pub history_intervals: usize,
    /// Expected PV and load in the current interval, Wh.
    pub pv_wh: u64,
    pub load_wh: u64,
}

/// Today's run of the flexible load.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct FlexibleView {
    pub energy_wh: u64,
    /// Energy it has had today, Wh.
    pub done_wh: u64,
    /// Power it runs at in the current interval, W (0: waiting for a cheaper one, or done).
    pub running_w: u64,
    pub deadline_hour: u32,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BatteryView {
    pub stored_wh: u64,
    /// What the controller told it for the current interval: `self-consumption`, `charge 2000 W`, `idle`...
    pub command: String,
    /// Prices the plan used, milli-credits per kWh.
    pub buy_per_kwh: u64,
    pub sell_per_kwh: u64,
    /// The local market's latest price, when the pool has traded.
    pub local_price_per_kwh: Option<u64>,
    /// An override's cap on the home's import and export, W, which the plan keeps within.
    pub grid_cap_w: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SampleView {
    pub at_ms: u64,
    pub import_wh: u64,
    pub export_wh: u64,
    pub generation_wh: u64,
    pub consumption_wh: u64,
    /// Whether the meter sees the grid (a voltage at the connection point), when it tells.
    pub grid_present: Option<bool>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(rename = "SignedReading")]
pub struct ReadingView {
    pub id: String,
    pub interval_start_s: u64,
    pub interval_s: u32,
    pub import_wh: u64,
    pub export_wh: u64,
    pub generation_wh: u64,
    pub consumption_wh: u64,
    /// `node`, or `device` when the meter's device signed it too.
    pub trust: &'static str,
}

/// Reads the actor's status.
#[derive(Clone)]
pub struct Handle {
    status: watch::Receiver<Status>,
}

impl Handle {
    #[must_use]
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }
}

/// Starts the actor on the current runtime.
pub fn spawn(
    source: Source,
    settings: Settings,
    signer: Arc<crate::signer::Signer>,
    network: network::Handle,
    ledger: Option<crate::ledger::Handle>,
    placer: Option<crate::app::place::Placer>,
    island: Option<crate::island::Handle>,
) -> (Handle, tokio::task::JoinHandle<()>) {
    let status = Status {
        meter: settings.id.as_str().to_owned(),
        source: source.kind().to_owned(),
        interval_s: settings.interval_s,
        device_key: settings
            .device
            .as_ref()
            .map(|device| protocol::message::DeviceKey::Ed25519(device.public()).to_string()),
        ..Status::default()
    };
    let (sender, receiver) = watch::channel(status.clone());
    let interval_s = settings.interval_s;
    let actor = Actor {
        intervals: Intervals::new(settings.interval_s),
        settings,
        source,
        signer,
        network,
        ledger,
        placer,
        island,
        over_reported_wh: 0,
        grid_present: None,
        flexible_day: i64::MIN,
        flexible_done_wh: 0.0,
        forecaster: energy::forecast::Forecaster::new(interval_s, FORECAST_DAYS),
        stored_wh: None,
        watch: None,
        previous: None,
        status,
    };
    (Handle { status: receiver }, tokio::spawn(actor.run(sender)))
}

struct Actor {
    settings: Settings,
    source: Source,
    intervals: Intervals,
    signer: Arc<crate::signer::Signer>,
    network: network::Handle,
    ledger: Option<crate::ledger::Handle>,
    /// Places the home trader's offers (the node's one way of placing offers), when the node runs a market.
    placer: Option<crate::app::place::Placer>,
    /// The microgrid controller on this node, told when the meter sees the grid go or come back.
    island: Option<crate::island::Handle>,
    grid_present: Option<bool>,
    /// The simulated day of the flexible load's run and the energy it has had that day, Wh.
    flexible_day: i64,
    flexible_done_wh: f64,
    /// A real home's forecast from its measured intervals.
    forecaster: energy::forecast::Forecaster,
    /// A real home battery's stored energy at the last interval's close, Wh.
    stored_wh: Option<f64>,
    /// The maintenance watch over the meter's asset, once the ledger binds the meter to one.
    watch: Option<(protocol::Id, energy::maintenance::Watch)>,
    previous: Option<Previous>,
    /// What a devnet's lying home has claimed beyond its meter so far, Wh.
    over_reported_wh: u64,
    status: Status,
}

impl Actor {
    async fn run(mut self, status: watch::Sender<Status>) {
        let mut poll = tokio::time::interval(self.settings.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(meter = %self.settings.id, source = self.source.kind(), interval_s = self.settings.interval_s, "meter started");
        loop {
            poll.tick().await;
            self.poll().await;
            status.send_replace(self.status.clone());
        }
    }

    async fn poll(&mut self) {
        let now = now_ms();
        let sample = match self.source.sample(now).await {
            Ok(sample) => sample,
            Err(error) => {
                // A silent meter is itself a maintenance matter.
                let alerts = self.watch.as_mut().map(|(_, watch)| watch.tick(now / 1000)).unwrap_or_default();
                self.alert(alerts, now).await;
                self.status.sample_errors += 1;
                if self.status.last_error.as_deref() != Some(&error.to_string()) {
                    warn!(%error, meter = %self.settings.id, "meter");
                }
                self.status.last_error = Some(error.to_string());
                return;
            }
        };
        self.status.samples += 1;
        self.status.last_error = None;
        self.status.sample = Some(SampleView {
            at_ms: sample.at_ms,
            import_wh: sample.import_wh,
            export_wh: sample.export_wh,
            generation_wh: sample.generation_wh,
            consumption_wh: sample.consumption_wh,
            grid_present: sample.grid_present,
        });
        if let Some(present) = sample.grid_present
            && self.grid_present != Some(present)
        {
            self.grid_present = Some(present);
            info!(meter = %self.settings.id, present, "the meter sees the grid {}", if present { "present" } else { "lost" });
            if let Some(island) = &self.island {
                island.grid(present).await;
            }
        }
        match self.intervals.push(sample) {
            Push::Inside | Push::Stale => {}
            Push::Closed(interval) => {
                let reading = interval.reading(self.settings.id.clone(), self.source.source());
                self.status.measured = Some(MeasuredView {
                    interval_start_s: reading.interval_start_s,
                    interval_s: reading.interval_s,
                    import_counter_wh: reading.import_counter_wh,
                    export_counter_wh: reading.export_counter_wh,
                });
                let reading = self.over_report(reading);
                self.publish(reading, now).await;
                let storage = self.storage().await;
                self.learn(&interval, storage.map(|(_, stored)| stored), now);
                self.maintain(&interval, storage.map(|(_, stored)| stored), now).await;
                self.dispatch(now, storage).await;
                self.trade(now).await;
            }
            Push::Gap { missed } => {
                self.status.intervals_missed += missed;
                warn!(missed, meter = %self.settings.id, "the meter was silent for whole intervals; no readings for them");
            }
            Push::Reset => {
                warn!(meter = %self.settings.id, "a meter register went back (reset or replaced); counting restarts");
                self.previous = None;
            }
        }
    }

    /// A real home's battery, when the controller drives one: what the device's storage model says, and the
    /// stored energy that makes with the configured capacity, Wh.
    async fn storage(&mut self) -> Option<(energy::sunspec::Storage, f64)> {
        self.settings.dispatch.as_ref()?;
        let Source::SunSpec(device) = &mut self.source else { return None };
        let battery = device.settings().battery?;
        match device.storage().await {
            Ok(Some(storage)) => Some((storage, battery.capacity_wh as f64 * f64::from(storage.charge_ppm) / 1e6)),
            Ok(None) => {
                if self.status.battery.is_none() {
                    warn!(meter = %self.settings.id, "meter.sunspec.battery is set but the device has no storage model (124)");
                }
                None
            }
            Err(error) => {
                warn!(%error, meter = %self.settings.id, "reading the battery's storage model");
                self.status.last_error = Some(format!("battery: {error}"));
                None
            }
        }
    }

    /// Signs a message of this node's with the node's one signer (a nonce above every earlier one of the key).
    fn sign(&self, body: Body, now: u64, expires_ms: u64) -> Option<protocol::Envelope> {
        match self.signer.sign(body, now, expires_ms) {
            Ok(envelope) => Some(envelope),
            Err(error) => {
                warn!(error = %format!("{error:#}"), meter = %self.settings.id, "could not sign");
                None
            }
        }
    }

    /// Runs the maintenance rules of the meter's asset over the interval just closed, and signs their alerts.
    async fn maintain(&mut self, interval: &energy::meter::Interval, stored_wh: Option<f64>, now: u64) {
        let Some(ledger) = &self.ledger else { return };
        if self.watch.is_none() {
            // The asset the ledger binds this node's meter to, and its battery's capacity.
            let (author, meter) = (self.signer.public(), self.settings.id.as_str().to_owned());
            let found = ledger
                .query(move |state| {
                    let id = state.asset_of_meter(&author, &meter)?;
                    Some((id, state.asset(&id)?.manifest.limits.storage_wh))
                })
                .await
                .ok()
                .flatten();
            let Some((asset, storage_wh)) = found else { return };
            let capacity_wh = match (&self.source, storage_wh) {
                (_, declared) if declared > 0 => declared,
                (Source::Simulated(home), _) => home.config().battery.map_or(0, |battery| battery.capacity_wh),
                (Source::SunSpec(device), _) => device.settings().battery.map_or(0, |battery| battery.capacity_wh),
                _ => 0,
            };
            info!(asset = %asset, capacity_wh, "maintenance rules watch the meter's asset");
            self.status.asset = Some(asset.to_hex());
            let watch = energy::maintenance::Watch::new(self.settings.maintenance, interval.interval_s, capacity_wh);
            self.watch = Some((asset, watch));
        }
        let stored_wh = match &self.source {
            Source::Simulated(home) => Some(home.soc_wh() as f64),
            _ => stored_wh,
        };
        let Some((_, watch)) = self.watch.as_mut() else { return };
        let alerts = watch.observe(energy::maintenance::Observation {
            interval_start_s: interval.start_s,
            generation_wh: interval.generation_wh,
            import_wh: interval.import_wh,
            export_wh: interval.export_wh,
            consumption_wh: interval.consumption_wh,
            stored_wh,
        });
        self.alert(alerts, now).await;
    }

    /// Signs the alerts about the meter's asset and puts them on the ledger.
    async fn alert(&mut self, alerts: Vec<energy::maintenance::Alert>, now: u64) {
        let (Some(ledger), Some((asset, _))) = (self.ledger.clone(), self.watch.as_ref()) else { return };
        let asset = *asset;
        for alert in alerts {
            use energy::maintenance::Rule;
            let rule = match alert.rule {
                Rule::Wear => protocol::message::AlertRule::Wear,
                Rule::Depletion => protocol::message::AlertRule::Depletion,
                Rule::Misuse => protocol::message::AlertRule::Misuse,
                Rule::Silent => protocol::message::AlertRule::Silent,
            };
            let body = Body::Alert(protocol::message::Alert {
                asset,
                rule,
                measured: alert.measured,
                threshold: alert.threshold,
                interval_start_s: alert.interval_start_s,
            });
            let Some(envelope) = self.sign(body, now, now.saturating_add(READING_LIFETIME_MS)) else { continue };
            let text = format!("{rule:?}: measured {} against {}", alert.measured, alert.threshold).to_lowercase();
            warn!(meter = %self.settings.id, asset = %asset, alert = %text, "maintenance alert");
            match ledger.submit(envelope.to_bytes()).await {
                Ok(_) => {
                    self.status.alerts += 1;
                    self.status.last_alert = Some(text);
                }
                Err(error) => warn!(%error, "the ledger refused a maintenance alert"),
            }
        }
    }

    /// Teaches a real home's forecaster the interval just closed: PV is what was generated; the household's
    /// load is what was consumed less what went into the battery (a meter behind the battery counts its charge
    /// as consumption and its discharge as less of it). An interval counted from partway through (the first after
    /// a start, a gap or a reset) is not learnt: it would teach a fraction of the interval's flows as the whole.
    fn learn(&mut self, interval: &energy::meter::Interval, stored_wh: Option<f64>, now: u64) {
        if matches!(self.source, Source::Simulated(_)) {
            return;
        }
        let into_battery = match (self.stored_wh, stored_wh) {
            (Some(before), Some(after)) => after - before,
            _ => 0.0,
        };
        self.stored_wh = stored_wh;
        if !interval.whole {
            return;
        }
        let flows = energy::forecast::Flows {
            pv_wh: interval.generation_wh as f64,
            load_wh: interval.consumption_wh as f64 - into_battery,
        };
        self.forecaster.observe(interval.start_s, flows);
        let interval_s = u64::from(self.settings.interval_s);
        let current = self.forecaster.forecast(now / 1000 / interval_s * interval_s, 1);
        self.status.forecast = current.first().map(|flows| ForecastView {
            history_intervals: self.forecaster.len(),
            pv_wh: flows.pv_wh.round() as u64,
            load_wh: flows.load_wh.round() as u64,
        });
    }

    /// The home controller: plans the battery and the flexible load over the coming intervals from the forecast
    /// (the simulator's, or a real home's learnt from its history) and the prices (the tariff, moved toward the
    /// local market's latest price), and applies the first step of each — to the simulated home, to a SunSpec
    /// battery through its storage model, to a flexible load's MQTT relay.
    async fn dispatch(&mut self, now: u64, storage: Option<(energy::sunspec::Storage, f64)>) {
        let Some(dispatch) = self.settings.dispatch.clone() else { return };
        let (battery, stored_wh) = match (&self.source, storage) {
            (Source::Simulated(home), _) => (home.config().battery, home.soc_wh() as f64),
            (Source::SunSpec(device), Some((storage, stored))) => (
                device.settings().battery.map(|battery| energy::home::BatteryConfig {
                    capacity_wh: battery.capacity_wh,
                    power_w: storage.max_charge_w,
                    efficiency_ppm: battery.efficiency_ppm,
                }),
                stored,
            ),
            _ => (None, 0.0),
        };
        let flexible_runs = match (&self.source, &dispatch.flexible) {
            (Source::Simulated(_), Some(_)) => true,
            (Source::Mqtt(_), Some(load)) => load.switch_topic.is_some(),
            _ => false,
        };
        if battery.is_none() && !flexible_runs {
            return;
        }
        let (account, meter) = (self.signer.public(), self.settings.id.as_str().to_owned());
        let (cap, local_price) = from_the_ledger(self.ledger.clone(), account, meter, &dispatch, now).await;
        // Energy bought from neighbours costs the local price instead of the grid's; energy sold earns it
        // instead of the feed-in tariff.
        let buy = local_price.map_or(dispatch.buy_per_kwh, |price| price.min(dispatch.buy_per_kwh));
        let sell = local_price.map_or(dispatch.sell_per_kwh, |price| price.max(dispatch.sell_per_kwh));
        let slots = self.slots(now, buy, sell);
        let state = battery.map(|config| energy::dispatch::Battery { config, stored_wh });
        // The flexible load: what is left of today's run, and the slots until its deadline (in the home's time:
        // simulated, or the wall clock's).
        let (local_s, slot_home_s) = match &self.source {
            Source::Simulated(home) => (
                home.simulated_s(now) + home.config().utc_offset_s as f64,
                f64::from(self.settings.interval_s) * f64::from(home.config().speed.max(1)),
            ),
            _ => (now as f64 / 1000.0 + dispatch.utc_offset_s as f64, f64::from(self.settings.interval_s)),
        };
        let flexible = dispatch.flexible.clone().filter(|_| flexible_runs).map(|load| {
            let day = (local_s / 86_400.0).floor() as i64;
            if day != self.flexible_day {
                self.flexible_day = day;
                self.flexible_done_wh = 0.0;
            }
            let deadline_local_s = day as f64 * 86_400.0 + f64::from(load.deadline_hour.clamp(1, 24)) * 3600.0;
            let slots_left = ((deadline_local_s - local_s) / slot_home_s).floor().max(1.0) as usize;
            let flexible = energy::dispatch::Flexible {
                energy_wh: (load.energy_wh as f64 - self.flexible_done_wh).max(0.0),
                power_w: load.power_w as f64,
                deadline: slots_left.min(DISPATCH_SLOTS),
            };
            (load, flexible)
        });
        let plan = energy::dispatch::plan_within(
            &slots,
            self.settings.interval_s,
            state,
            flexible.as_ref().map(|(_, flexible)| *flexible).filter(|flexible| flexible.energy_wh >= 0.5),
            dispatch.objective,
            51,
            cap,
        );
        if let Some((load, _)) = flexible {
            self.run_flexible(&load, &plan);
        }
        if battery.is_none() {
            return;
        }
        let Some(first) = slots.first() else { return };
        let command = plan.first_command_for(first, self.settings.interval_s);
        let Some(stored_wh) = self.command_battery(command, storage).await else { return };
        self.status.battery = Some(BatteryView {
            stored_wh,
            command: match command {
                energy::home::BatteryCommand::SelfConsumption => "self-consumption".into(),
                energy::home::BatteryCommand::Charge(w) => format!("charge {w} W"),
                energy::home::BatteryCommand::Discharge(w) => format!("discharge {w} W"),
                energy::home::BatteryCommand::Idle => "idle".into(),
            },
            buy_per_kwh: buy,
            sell_per_kwh: sell,
            local_price_per_kwh: local_price,
            grid_cap_w: cap.map(|cap| (cap.import_w_max, cap.export_w_max)),
        });
    }

    /// The coming intervals' forecast (the simulator's, or learnt from a real home's history) at these prices.
    fn slots(&self, now: u64, buy: u64, sell: u64) -> Vec<energy::dispatch::Slot> {
        let interval_ms = u64::from(self.settings.interval_s) * 1000;
        let start_ms = now / interval_ms * interval_ms;
        match &self.source {
            Source::Simulated(home) => (0..DISPATCH_SLOTS as u64)
                .map(|slot| {
                    let (from, to) = (start_ms + slot * interval_ms, start_ms + (slot + 1) * interval_ms);
                    let hours = interval_ms as f64 / 3_600_000.0;
                    let middle = home.simulated_s((from + to) / 2);
                    energy::dispatch::Slot {
                        pv_wh: home.pv_power_w(middle) * hours,
                        load_wh: home.load_power_w(middle) * hours,
                        buy_per_kwh: buy as f64,
                        sell_per_kwh: sell as f64,
                    }
                })
                .collect(),
            _ => self
                .forecaster
                .forecast(start_ms / 1000, DISPATCH_SLOTS)
                .into_iter()
                .map(|flows| energy::dispatch::Slot {
                    pv_wh: flows.pv_wh,
                    load_wh: flows.load_wh,
                    buy_per_kwh: buy as f64,
                    sell_per_kwh: sell as f64,
                })
                .collect(),
        }
    }

    /// Runs the flexible load as the plan's first step says: the simulated home's load, or its MQTT relay.
    fn run_flexible(&mut self, load: &crate::config::FlexibleLoad, plan: &energy::dispatch::Plan) {
        let planned_w = plan.first_flexible_w(self.settings.interval_s);
        let running_w = match &mut self.source {
            Source::Simulated(home) => {
                home.set_flexible_load(planned_w);
                planned_w
            }
            Source::Mqtt(meter) => {
                // A relay is on or off: on when the plan gives the load at least half the interval.
                let on = planned_w * 2 >= load.power_w;
                let topic = load.switch_topic.as_deref().unwrap_or_default();
                match meter.switch(topic, on) {
                    Ok(()) => {
                        if on {
                            load.power_w
                        } else {
                            0
                        }
                    }
                    Err(error) => {
                        warn!(%error, topic, "switching the flexible load");
                        0
                    }
                }
            }
            Source::SunSpec(_) => 0,
        };
        // It runs at that power through the next interval.
        self.flexible_done_wh += running_w as f64 * f64::from(self.settings.interval_s) / 3600.0;
        self.status.flexible = Some(FlexibleView {
            energy_wh: load.energy_wh,
            done_wh: self.flexible_done_wh.round() as u64,
            running_w,
            deadline_hour: load.deadline_hour,
        });
    }

    /// Applies the plan's battery command: to the simulated home, or to a SunSpec battery through its storage
    /// model (which reverts on its own if the node stops commanding it). The charge stored after it, or `None`
    /// when there is no battery to command or the command failed (recorded in the status).
    async fn command_battery(
        &mut self,
        command: energy::home::BatteryCommand,
        storage: Option<(energy::sunspec::Storage, f64)>,
    ) -> Option<u64> {
        let applied = match (&mut self.source, storage) {
            (Source::Simulated(home), _) => {
                home.set_battery(command);
                Ok(home.soc_wh())
            }
            (Source::SunSpec(device), Some((storage, stored))) => {
                let revert_s = (self.settings.interval_s * BATTERY_REVERT_INTERVALS).min(u32::from(u16::MAX)) as u16;
                device.command(command, &storage, revert_s).await.map(|()| stored.round() as u64)
            }
            _ => return None,
        };
        match applied {
            Ok(stored_wh) => Some(stored_wh),
            Err(error) => {
                warn!(%error, meter = %self.settings.id, "commanding the battery");
                self.status.last_error = Some(format!("battery: {error}"));
                None
            }
        }
    }

    /// The home's trader: offers the next delivery interval's forecast (the simulator's, or learnt from a real
    /// home's history) surplus (ask at the feed-in tariff) or
    /// deficit (bid at the grid tariff), a share of it, in the configured energy pool.
    async fn trade(&mut self, now: u64) {
        let (Some((pool, share_ppm)), Some(placer)) = (self.settings.trade.clone(), self.placer.clone()) else {
            return;
        };
        // The next interval whose auction is still open (in short pools, a few intervals ahead).
        let start_s = placer.market.first_open_delivery_s(&pool, now);
        let interval_ms = u64::from(pool.interval_s) * 1000;
        let hours = interval_ms as f64 / 3_600_000.0;
        let (mut pv_wh, mut load_wh) = (0.0, 0.0);
        match &self.source {
            Source::Simulated(home) => {
                // The mean of four instants across the interval, in simulated time.
                for quarter in 0..4u64 {
                    let at = home.simulated_s(start_s * 1000 + interval_ms * (2 * quarter + 1) / 8);
                    pv_wh += home.pv_power_w(at) * hours / 4.0;
                    load_wh += home.load_power_w(at) * hours / 4.0;
                }
            }
            // A real home offers what its history forecasts; nothing before it has measured an interval.
            _ if self.forecaster.is_empty() => return,
            _ => {
                // Forecast from the next interval on, up to the one offered (the forecast leans on the latest
                // measured interval, so it starts from the next).
                let next_s = pool.next_delivery_start_s(now / 1000);
                let ahead = start_s.saturating_sub(next_s) / u64::from(pool.interval_s.max(1)) + 1;
                let flows = self.forecaster.forecast(next_s, usize::try_from(ahead).unwrap_or(1));
                let flows = flows.last().copied().unwrap_or_default();
                (pv_wh, load_wh) = (flows.pv_wh, flows.load_wh);
            }
        }
        let net_wh = pv_wh - load_wh;
        let quantity = (net_wh.abs() * f64::from(share_ppm) / 1e6).floor() as u64;
        if quantity == 0 {
            return;
        }
        let (side, unit_price) = if net_wh > 0.0 {
            (protocol::message::Side::Ask, self.settings.tariffs.0)
        } else {
            (protocol::message::Side::Bid, self.settings.tariffs.1)
        };
        let offer =
            protocol::message::Offer { pool: pool.clone(), side, quantity, unit_price, delivery_start_s: start_s };
        // Until its delivery interval ends (the ledger refuses settlements after that anyway).
        let expires_ms = start_s.saturating_add(u64::from(pool.interval_s)).saturating_mul(1000);
        // Placed as every offer of the node is: checked, into this node's market first (an offer it refuses is not
        // gossiped either), the pool joined and announced, gossiped.
        match placer.offer(offer, now, expires_ms).await {
            Ok(placed) => {
                match side {
                    protocol::message::Side::Ask => self.status.asks += 1,
                    protocol::message::Side::Bid => self.status.bids += 1,
                }
                let published = placed.published;
                debug!(?side, quantity, unit_price, start_s, published, "offered the next interval's forecast");
            }
            // The node's signer failing is the operator's problem; the market declining an offer is routine.
            Err(problem @ crate::app::place::PlaceError::Sign(_)) => {
                warn!(%problem, meter = %self.settings.id, "the forecast offer could not be signed");
            }
            // The ledger would not settle it (the account cannot pay, is below the pool's tier, frozen): the
            // operator's business, said once an interval.
            Err(
                problem @ crate::app::place::PlaceError::Refused(crate::market::Refused::Trader(
                    crate::market::Refusal::Unsettleable(_) | crate::market::Refusal::Frozen { .. },
                )),
            ) => {
                warn!(%problem, ?side, quantity, start_s, "the forecast offer was refused: the ledger would not settle it")
            }
            Err(problem) => debug!(%problem, ?side, quantity, start_s, "the forecast offer was not placed"),
        }
    }

    /// A devnet's lying home: more export than measured (and as much more generation, so that the reading still
    /// balances), its export register keeping the lie's running total.
    fn over_report(&mut self, reading: Reading) -> Reading {
        if self.settings.over_report_ppm == 0 {
            return reading;
        }
        let extra =
            u64::try_from(u128::from(reading.export_wh) * u128::from(self.settings.over_report_ppm) / 1_000_000)
                .unwrap_or(0);
        self.over_reported_wh = self.over_reported_wh.saturating_add(extra);
        Reading {
            export_wh: reading.export_wh.saturating_add(extra),
            generation_wh: reading.generation_wh.saturating_add(extra),
            export_counter_wh: reading.export_counter_wh.saturating_add(self.over_reported_wh),
            ..reading
        }
    }

    /// Whether the ledger binds this meter to an asset naming the device's key (a node without a ledger assumes
    /// so). A read that fails is taken as yes: the reading then says what its meter is.
    async fn device_registered(&mut self, device: &protocol::Keypair) -> bool {
        let Some(ledger) = &self.ledger else { return true };
        let (author, meter) = (self.signer.public(), self.settings.id.as_str().to_owned());
        let named = protocol::message::DeviceKey::Ed25519(device.public());
        let registered = ledger
            .query(move |state| {
                use ::ledger::reads::CommonsReads as _;
                let asset = state.asset_of_meter(&author, &meter).and_then(|id| state.asset(&id));
                asset.is_some_and(|asset| asset.manifest.device.as_slice().first() == Some(&named))
            })
            .await
            .unwrap_or(true);
        if !registered && !self.status.device_unregistered {
            warn!(meter = %self.settings.id, "the meter's asset does not name its device key yet: its readings go \
                without the device's signature until it does (kos asset register --device-key ...)");
        }
        self.status.device_unregistered = !registered;
        registered
    }

    async fn publish(&mut self, reading: Reading, now: u64) {
        if let Err(invalid) =
            energy::reading::check(&reading, self.previous.as_ref(), &self.settings.capacity, now / 1000)
        {
            self.status.readings_refused += 1;
            warn!(%invalid, meter = %self.settings.id, start = reading.interval_start_s, "not signing an impossible reading");
            return;
        }
        // The meter's own chip signs it first (for this node: no other account can relay it as its own) — once the
        // meter's asset on the ledger names the chip's key: before, the ledger takes only unattested readings.
        let device = self.settings.device.clone();
        let reading = match device {
            Some(device) if self.device_registered(&device).await => {
                protocol::message::attest(&self.settings.network, &self.signer.public(), reading, &device)
            }
            _ => reading,
        };
        let Some(envelope) = self.sign(Body::Reading(reading.clone()), now, now.saturating_add(READING_LIFETIME_MS))
        else {
            self.status.readings_refused += 1;
            return;
        };
        let id = envelope.id();
        // The ledger takes it and, once it did, gossips it on the readings topic, where neighbours and validators see
        // it (published here too, the second copy would be a duplicate to gossipsub); a node without a ledger
        // publishes it itself.
        match &self.ledger {
            Some(ledger) => {
                if let Err(error) = ledger.submit(envelope.to_bytes()).await {
                    self.status.readings_refused += 1;
                    warn!(%error, meter = %self.settings.id, "the ledger refused a reading");
                    return;
                }
            }
            None => {
                if let Err(error) = self.network.publish(&envelope, Some(Topic::Readings), now).await {
                    debug!(%error, "publishing a reading (no peers yet?)");
                }
            }
        }
        self.previous = Some(Previous::from(&reading));
        self.status.readings_published += 1;
        debug!(reading = %id, start = reading.interval_start_s, import_wh = reading.import_wh, export_wh = reading.export_wh, "reading signed");
        self.status.last_reading = Some(ReadingView {
            id: id.to_hex(),
            interval_start_s: reading.interval_start_s,
            interval_s: reading.interval_s,
            import_wh: reading.import_wh,
            export_wh: reading.export_wh,
            generation_wh: reading.generation_wh,
            consumption_wh: reading.consumption_wh,
            trust: protocol::message::Trust::of(&reading).name(),
        });
    }
}

/// What the home controller reads from the ledger: a device cap an override put on this meter (the plan keeps
/// the home within it), and the local market's latest price in the dispatch's pool (its VWAP of the last six
/// hours). A read that fails is taken as neither: the plan follows the tariffs.
async fn from_the_ledger(
    ledger: Option<crate::ledger::Handle>,
    account: protocol::PublicKey,
    meter: String,
    dispatch: &crate::config::Dispatch,
    now: u64,
) -> (Option<energy::dispatch::GridCap>, Option<u64>) {
    let Some(ledger) = ledger else { return (None, None) };
    let pool = dispatch.pool.as_deref().and_then(|pool| pool.parse::<protocol::message::PoolId>().ok());
    let to_s = now / 1000 + 1;
    let from_s = to_s.saturating_sub(6 * 3600);
    // Two reads: a price that cannot be read must not take the cap with it.
    let cap = ledger.query(move |state| state.device_cap(&account, &meter)).await.unwrap_or_else(|error| {
        warn!(%error, "the home controller could not read its device cap; planning without one");
        None
    });
    let cap =
        cap.map(|in_force| energy::dispatch::GridCap { import_w_max: in_force.first, export_w_max: in_force.second });
    let Some(pool) = pool else { return (cap, None) };
    let price = ledger
        .query(move |state| state.price_indices(&pool, from_s, to_s).last().and_then(|(_, index)| index.vwap()))
        .await
        .unwrap_or_else(|error| {
            warn!(%error, "the home controller could not read the local price; planning on the tariffs");
            None
        });
    (cap, price)
}
