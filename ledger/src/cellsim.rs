//! A cell's month through the state machine (PROTOCOL.md §10, *cells*): simulated homes on the BDEW H25 profile
//! under one sky (each roof facing a little differently), their meters' error, a feeder that also loses a share of
//! the power the street's cables carry, and optionally one home that lies. Every interval each home signs a reading
//! and the feeder's node signs the feeder's; one block per interval anchors them and closes the interval before.
//! What it counts — intervals balanced and unbalanced, who the cases named, implausible-generation alerts — is the
//! false-positive and detection rate the issue asks for: the ledger's tests run it, and `kos bench cells` reports
//! it (BENCHMARKS.md).
//!
//! Deterministic for its configuration: no clock, no randomness beyond the seeded noise.

use std::sync::Arc;

use energy::home::{Home, HomeConfig};
use energy::profile::LoadProfile;
use energy::solar::uniform;
use protocol::message::{
    Asset, AssetKind, Body, DeviceKey, Guild, Limits, MeterSource, Reading, attest, guild_account,
};
use protocol::types::{BoundedVec, Cell, MeterId, Text};
use protocol::{Draft, Envelope, Keypair, NetworkId, PublicKey};

use crate::Genesis;
use crate::state::{BlockContext, CaseKind, Event, IntervalStatus, State};

/// The cell every simulated home is in.
pub const CELL: &str = "u33db";
const NETWORK: &str = "kos-cellsim";
const INTERVAL_S: u64 = 900;
const GRACE_MS: u64 = 30_000;

/// How a meter errs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Noise {
    /// Uniform within ± this many ppm of the true value: a meter within its accuracy class.
    Bounded(u32),
    /// Normal with this standard deviation, ppm (clipped at 5 σ): a meter whose error has tails.
    Gaussian(u32),
}

impl Noise {
    /// The factor for draw `index` of `stream`.
    fn factor(self, seed: u64, stream: u64, index: i64) -> f64 {
        match self {
            Noise::Bounded(ppm) => 1.0 + (2.0 * uniform(seed, stream, index) - 1.0) * f64::from(ppm) / 1e6,
            Noise::Gaussian(ppm) => {
                // Box–Muller from two uniforms.
                let u1 = uniform(seed, stream, 2 * index).max(1e-12);
                let u2 = uniform(seed, stream, 2 * index + 1);
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                1.0 + z.clamp(-5.0, 5.0) * f64::from(ppm) / 1e6
            }
        }
    }
}

/// A home that lies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Liar {
    /// Which home (index into `pv_kwp`).
    pub home: usize,
    /// It reports its export (and the generation behind it) this much above the truth, ppm.
    pub over_ppm: u32,
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct CellSim {
    /// The homes' PV, kWp (0: none); each also has a household load of 2,500 to 6,000 kWh a year.
    pub pv_kwp: Vec<f64>,
    /// Days from the first of `month`.
    pub days: u32,
    /// 1 to 12, of 2025.
    pub month: u32,
    /// The members' meters' error.
    pub meter_noise: Noise,
    /// The feeder meter's error.
    pub feeder_noise: Noise,
    /// Line losses: a share of the members' gross flows (import + export) the feeder does not see, ppm.
    pub loss_ppm: u32,
    pub liar: Option<Liar>,
    /// The honest homes' meters sign their readings (PROTOCOL.md §5, *Device-signed readings*); the liar's never
    /// does (a calibrated meter would not sign its lie).
    pub attested: bool,
    pub seed: u64,
}

/// What happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellSimReport {
    pub intervals: u64,
    pub balanced: u64,
    pub unbalanced: u64,
    /// Unbalanced intervals whose case named the liar.
    pub liar_named: u64,
    /// Unbalanced intervals whose first suspect was the liar.
    pub liar_first: u64,
    /// Unbalanced intervals whose case named an honest home.
    pub honest_named: u64,
    /// Intervals with the liar's export above the truth by more than 1 Wh (the ones that could be caught).
    pub lied: u64,
    /// Implausible-generation alerts, on the liar and on honest homes.
    pub liar_alerts: u64,
    pub honest_alerts: u64,
    /// The largest |gap| / tolerance of a balanced interval, ppm.
    pub closest_ppm: u64,
    /// Entries the ledger refused (a liar's reading beyond its rated limits).
    pub refused: u64,
}

struct Member {
    key: Keypair,
    device: Option<Keypair>,
    home: Home,
    registers: (u64, u64, u64, u64),
    counters: (u64, u64),
}

/// The street on its ledger: the homes, the feeder's operator, the state, and what signs and executes.
struct Street<'a> {
    sim: &'a CellSim,
    members: Vec<Member>,
    validator: Keypair,
    operator: Keypair,
    network: NetworkId,
    state: State,
    nonce: u64,
    height: u64,
    feeder_counters: (u64, u64),
    report: CellSimReport,
}

/// An entry of the street's network, with the next nonce.
fn sign(network: &NetworkId, nonce: &mut u64, key: &Keypair, body: Body, now_ms: u64) -> Envelope {
    *nonce += 1;
    Draft { network: network.clone(), nonce: *nonce, created_ms: now_ms, expires_ms: now_ms + 3_600_000, body }
        .sign(key)
}

/// Runs the month.
pub fn run(sim: &CellSim) -> CellSimReport {
    let day = energy::calendar::days(2025, sim.month, 1);
    let start_s = u64::try_from(day).unwrap_or(0) * 86_400;
    let mut street = Street::new(sim, start_s);
    street.register(start_s * 1000 - 30_000);
    let liar = sim.liar.map(|liar| street.members[liar.home].key.public());
    let intervals = u64::from(sim.days) * 86_400 / INTERVAL_S;
    for index in 0..intervals {
        let interval_start = start_s + index * INTERVAL_S;
        let end_ms = (interval_start + INTERVAL_S) * 1000;
        let entries = street.readings(index, interval_start);
        let events = street.block(end_ms + 1_000, entries);
        count(&mut street.report, &events, liar.as_ref());
        // The interval before closed in this block.
        if index > 0 {
            tally(&mut street.report, &street.state, interval_start - INTERVAL_S);
        }
    }
    // The last interval closes after the grace.
    let last = start_s + (intervals - 1) * INTERVAL_S;
    let events = street.block((last + INTERVAL_S) * 1000 + GRACE_MS + 1_000, Vec::new());
    count(&mut street.report, &events, liar.as_ref());
    tally(&mut street.report, &street.state, last);
    street.report
}

impl Street<'_> {
    fn new(sim: &CellSim, start_s: u64) -> Street<'_> {
        let profile = Arc::new(LoadProfile::h25().expect("the shipped H25 profile parses"));
        let members: Vec<Member> = sim
            .pv_kwp
            .iter()
            .enumerate()
            .map(|(index, kwp)| {
                // Roofs face differently: 85 % to 105 % of the nominal yield.
                let facing = 0.85 + 0.2 * uniform(sim.seed, 10, index as i64);
                let annual = 2_500.0 + 3_500.0 * uniform(sim.seed, 11, index as i64);
                let config = HomeConfig {
                    pv_kwp: kwp * facing,
                    annual_kwh: annual,
                    seed: sim.seed,
                    load_seed: sim.seed.wrapping_add(100 + index as u64),
                    ..HomeConfig::default()
                };
                let home = Home::new(config, profile.clone(), start_s * 1000).expect("a valid home");
                let honest = sim.liar.is_none_or(|liar| liar.home != index);
                let device = (sim.attested && honest).then(|| Keypair::from_seed(&[index as u8 + 101; 32]));
                let key = Keypair::from_seed(&[index as u8 + 1; 32]);
                Member { key, device, home, registers: (0, 0, 0, 0), counters: (0, 0) }
            })
            .collect();
        let validator = Keypair::from_seed(&[201; 32]);
        let operator = Keypair::from_seed(&[202; 32]);
        let mut public: Vec<PublicKey> = members.iter().map(|member| member.key.public()).collect();
        public.push(operator.public());
        let text = Genesis::devnet_text(NETWORK, start_s * 1000 - 60_000, &[validator.public()], &public, 1_000_000);
        let params = format!("\n[params]\nsettlement_grace_ms = {GRACE_MS}\n\n[[validators]]");
        let text = text.replacen("\n[[validators]]", &params, 1);
        let genesis = Arc::new(Genesis::parse(&text).expect("the simulation's genesis"));
        Street {
            sim,
            members,
            validator,
            operator,
            network: NetworkId::new(NETWORK).expect("a valid network id"),
            state: State::genesis(genesis),
            nonce: 0,
            height: 0,
            feeder_counters: (0, 0),
            report: CellSimReport::default(),
        }
    }

    fn block(&mut self, at_ms: u64, entries: Vec<Envelope>) -> Vec<Event> {
        self.height += 1;
        let context = BlockContext { height: self.height, time_ms: at_ms, proposer: self.validator.public() };
        let built = self.state.build(context, entries.iter().map(Envelope::to_bytes).collect(), &|_| false);
        // Only a liar's reading is refused: one beyond its asset's rated limits.
        self.report.refused += built.rejected.len() as u64;
        let events = built.executed.events.clone();
        self.state.apply(built.executed.writes, built.executed.lattice, built.executed.pairs);
        events
    }

    /// The feeder's guild and asset, the homes' assets (rated at their nominal PV, naming their devices).
    fn register(&mut self, at_ms: u64) {
        let (network, nonce, operator) = (&self.network, &mut self.nonce, &self.operator);
        let name = Text::new("feeder").expect("a short name");
        let members = BoundedVec::new(vec![operator.public()]).expect("one member");
        let guild = sign(network, nonce, operator, Body::Guild(Guild { name, members, threshold: 1 }), at_ms);
        let feeder = manifest(AssetKind::Feeder, guild_account(&guild.id()), "feeder", 1_000_000);
        let feeder = sign(network, nonce, operator, Body::Asset(feeder), at_ms);
        let mut entries = vec![guild, feeder];
        for (member, kwp) in self.members.iter().zip(&self.sim.pv_kwp) {
            let rated = (kwp * 1000.0).round() as u64;
            let mut asset = manifest(AssetKind::Meter, member.key.public(), "main", rated);
            if let Some(device) = &member.device {
                asset.device = BoundedVec::new(vec![DeviceKey::Ed25519(device.public())]).expect("one key");
            }
            entries.push(sign(network, nonce, &member.key, Body::Asset(asset), at_ms));
        }
        self.block(at_ms, entries);
    }

    /// Every home's reading of the interval, with its meter's error (and the liar's lie), and the feeder's.
    fn readings(&mut self, index: u64, interval_start: u64) -> Vec<Envelope> {
        let sim = self.sim;
        let end_ms = (interval_start + INTERVAL_S) * 1000;
        let mut entries = Vec::with_capacity(self.members.len() + 1);
        let (mut true_import, mut true_export) = (0.0f64, 0.0f64);
        for home in 0..self.members.len() {
            let member = &mut self.members[home];
            member.home.advance(end_ms);
            let sample = member.home.sample();
            let now = (sample.import_wh, sample.export_wh, sample.generation_wh, sample.consumption_wh);
            let flows = (now.0 - member.registers.0, now.1 - member.registers.1, now.2 - member.registers.2);
            member.registers = now;
            true_import += flows.0 as f64;
            true_export += flows.1 as f64;
            let draw = |stream: u64| sim.meter_noise.factor(sim.seed, stream * 64 + home as u64, index as i64);
            let import_wh = (flows.0 as f64 * draw(20)).round() as u64;
            let mut export_wh = (flows.1 as f64 * draw(21)).round() as u64;
            let mut generation_wh = (flows.2 as f64 * draw(22)).round() as u64;
            if let Some(liar) = sim.liar.filter(|liar| liar.home == home) {
                let extra = (export_wh as f64 * f64::from(liar.over_ppm) / 1e6).round() as u64;
                self.report.lied += u64::from(extra > 1);
                export_wh += extra;
                generation_wh += extra;
            }
            // What the meter shows balances: what it exported was generated, and consumption is what generation
            // and import left after export.
            let generation_wh = generation_wh.max(export_wh.saturating_sub(import_wh));
            let consumption_wh = (generation_wh + import_wh).saturating_sub(export_wh);
            member.counters.0 += import_wh;
            member.counters.1 += export_wh;
            let flows = (import_wh, export_wh, generation_wh, consumption_wh);
            let mut reading = reading("main", interval_start, flows, member.counters);
            if let Some(device) = &member.device {
                reading = attest(&self.network, &member.key.public(), reading, device);
            }
            entries.push(sign(&self.network, &mut self.nonce, &member.key, Body::Reading(reading), end_ms + 500));
        }
        // The feeder sees the members' net flow less the cables' losses, through its own meter's error.
        let losses = (true_import + true_export) * f64::from(sim.loss_ppm) / 1e6;
        let net_export = true_export - true_import - losses;
        let draw = |stream: u64| sim.feeder_noise.factor(sim.seed, stream, index as i64);
        let (feeder_import, feeder_export) = if net_export >= 0.0 {
            (0, (net_export * draw(30)).round() as u64)
        } else {
            ((-net_export * draw(31)).round() as u64, 0)
        };
        self.feeder_counters.0 += feeder_import;
        self.feeder_counters.1 += feeder_export;
        let flows = (feeder_import, feeder_export, feeder_export, feeder_import);
        let feeder = reading("feeder", interval_start, flows, self.feeder_counters);
        entries.push(sign(&self.network, &mut self.nonce, &self.operator, Body::Reading(feeder), end_ms + 500));
        entries
    }
}

fn count(report: &mut CellSimReport, events: &[Event], liar: Option<&PublicKey>) {
    for event in events {
        match event {
            Event::CellUnbalanced { named, .. } => {
                report.liar_named += u64::from(liar.is_some_and(|liar| named.contains(liar)));
                report.liar_first += u64::from(liar.is_some_and(|liar| named.first() == Some(liar)));
                report.honest_named += u64::from(named.iter().any(|account| Some(account) != liar));
            }
            Event::CellCaseOpened { kind, named, .. } if *kind == CaseKind::Implausible as u8 => {
                report.liar_alerts += u64::from(liar.is_some_and(|liar| named.contains(liar)));
                report.honest_alerts += u64::from(named.iter().any(|account| Some(account) != liar));
            }
            _ => {}
        }
    }
}

fn tally(report: &mut CellSimReport, state: &State, start_s: u64) {
    use crate::reads::*;
    let Some(record) = state.cell_interval(CELL, start_s, INTERVAL_S as u32) else { return };
    report.intervals += 1;
    match record.status {
        IntervalStatus::Balanced => {
            report.balanced += 1;
            let members = state.cell_members(CELL, start_s, INTERVAL_S as u32);
            let (import, export) =
                members.iter().fold((0u64, 0u64), |(i, e), (_, m)| (i + m.import_wh, e + m.export_wh));
            let gap = (i128::from(export) - i128::from(import))
                - (i128::from(record.feeder_export_wh) - i128::from(record.feeder_import_wh));
            let tolerance = 50 + u128::from(import + export) * 20_000 / 1_000_000;
            let ppm = u64::try_from(gap.unsigned_abs() * 1_000_000 / tolerance.max(1)).unwrap_or(u64::MAX);
            report.closest_ppm = report.closest_ppm.max(ppm);
        }
        IntervalStatus::Unbalanced => report.unbalanced += 1,
        _ => {}
    }
}

fn manifest(kind: AssetKind, owner: PublicKey, meter: &str, generation_w_max: u64) -> Asset {
    Asset {
        kind,
        purpose: Text::new(if kind == AssetKind::Feeder { "the street's feeder" } else { "a home" })
            .expect("a short purpose"),
        owner,
        meters: BoundedVec::new(vec![MeterId::new(meter).expect("a meter id")]).expect("one meter"),
        limits: Limits {
            generation_w_max,
            import_w_max: 1_000_000,
            export_w_max: 1_000_000,
            consumption_w_max: 1_000_000,
            storage_w_max: 0,
            storage_wh: 0,
        },
        cell: Cell::new(CELL).expect("a geohash"),
        commissioned_s: 0,
        maintenance_interval_s: 0,
        device: BoundedVec::default(),
    }
}

fn reading(meter: &str, start_s: u64, flows: (u64, u64, u64, u64), counters: (u64, u64)) -> Reading {
    let (import, export, generation, consumption) = flows;
    Reading {
        meter: MeterId::new(meter).expect("a meter id"),
        interval_start_s: start_s,
        interval_s: INTERVAL_S as u32,
        import_wh: import,
        export_wh: export,
        generation_wh: generation,
        consumption_wh: consumption,
        import_counter_wh: counters.0,
        export_counter_wh: counters.1,
        source: MeterSource::Simulated,
        device: BoundedVec::default(),
    }
}
