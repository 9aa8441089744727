//! The market rules of the state machine: grid fees, commons tax, royalties, escrow with collateral checked against
//! meter readings, anti-hoarding, reputation tiers, price indices and redistribution.

use ledger::reads::*;
use std::sync::Arc;

use ledger::Genesis;
use ledger::state::{BlockContext, COMMONS, EntryError, Event, State};
use protocol::message::{Body, Mechanism, MeterSource, Offer, PoolId, Reading, Resource, Settlement, Side, Transfer};
use protocol::types::{Cell, MeterId, Text, TokenId};
use protocol::{Draft, Envelope, Keypair, NetworkId, PublicKey};

const START_MS: u64 = 1_767_225_600_000;
const FUNDS: u64 = 1_000_000;

struct Market {
    keys: Vec<Keypair>,
    state: State,
    height: u64,
    now_ms: u64,
    nonce: u64,
    events: Vec<Event>,
}

fn credit() -> TokenId {
    TokenId::new("credit").unwrap()
}

fn pool(interval_s: u32, resource: Resource) -> PoolId {
    PoolId { resource, token: credit(), cell: Cell::new("u33db").unwrap(), interval_s }
}

impl Market {
    /// Accounts 0..4 funded with `FUNDS` credits; `extra` is appended to the genesis text.
    fn new(extra: &str) -> Market {
        let keys: Vec<Keypair> = (0..5u8).map(|index| Keypair::from_seed(&[index + 40; 32])).collect();
        let public: Vec<PublicKey> = keys.iter().map(Keypair::public).collect();
        let text = format!("{}{extra}", Genesis::devnet_text("kos-market", START_MS, &public[..1], &public, FUNDS));
        let genesis = Arc::new(Genesis::parse(&text).unwrap());
        Market { keys, state: State::genesis(genesis), height: 0, now_ms: START_MS, nonce: 0, events: Vec::new() }
    }

    fn key(&self, index: usize) -> PublicKey {
        self.keys[index].public()
    }

    fn sign(&mut self, author: usize, body: Body) -> Envelope {
        self.nonce += 1;
        Draft {
            network: NetworkId::new("kos-market").unwrap(),
            nonce: self.nonce,
            created_ms: self.now_ms,
            expires_ms: self.now_ms + 86_400_000,
            body,
        }
        .sign(&self.keys[author])
    }

    fn offer(&mut self, author: usize, pool: &PoolId, side: Side, quantity: u64, price: u64) -> Envelope {
        let delivery_start_s = pool.next_delivery_start_s(self.now_ms / 1000);
        self.sign(
            author,
            Body::Offer(Offer { pool: pool.clone(), side, quantity, unit_price: price, delivery_start_s }),
        )
    }

    /// A settlement of `quantity` at `price` between a fresh bid of `buyer` (limit `bid`) and ask of `seller`.
    #[allow(clippy::too_many_arguments)]
    fn trade(
        &mut self,
        pool: &PoolId,
        buyer: usize,
        seller: usize,
        quantity: u64,
        bid: u64,
        ask: u64,
        price: u64,
    ) -> Vec<u8> {
        let bid = self.offer(buyer, pool, Side::Bid, quantity, bid);
        let ask = self.offer(seller, pool, Side::Ask, quantity, ask);
        let settlement = Settlement {
            bid: Box::new(bid),
            ask: Box::new(ask),
            quantity,
            unit_price: price,
            mechanism: Mechanism::PayAsClear,
        };
        self.sign(seller, Body::Settlement(settlement)).to_bytes()
    }

    /// A reading of `author`'s first interval on its meter (registers from 10,000 Wh).
    fn reading(&mut self, author: usize, interval_start_s: u64, import_wh: u64, export_wh: u64) -> Vec<u8> {
        reading_after(self, &mut std::collections::HashMap::new(), author, interval_start_s, import_wh, export_wh)
    }

    /// Executes a block at `now_ms`; returns the errors of refused candidates.
    fn block(&mut self, candidates: Vec<Vec<u8>>) -> Vec<EntryError> {
        self.height += 1;
        let context = BlockContext { height: self.height, time_ms: self.now_ms, proposer: self.key(0) };
        let built = self.state.build(context, candidates, &|_| false);
        self.events.extend(built.executed.events.iter().cloned());
        self.state.apply(built.executed.writes, built.executed.lattice, built.executed.pairs);
        built.rejected.into_iter().map(|(_, error)| error).collect()
    }

    fn balance(&self, account: &PublicKey) -> u64 {
        self.state.balance(account, &credit())
    }
}

#[test]
fn continuous_trades_pay_fee_tax_and_royalty() {
    let market = Market::new("");
    let licence_owner = market.key(4).to_hex();
    let mut market = Market::new(&format!(
        "\n[params]\ncommons_tax_ppm = 10000\n\n[[pools]]\npool = \"memory/credit/*/*\"\ngrid_fee_per_kwh = 2000\nroyalty_ppm = 50000\nroyalty_account = \"{licence_owner}\"\n"
    ));
    let memory = pool(0, Resource::Memory);
    let (buyer, seller, owner) = (market.key(1), market.key(2), market.key(4));
    // 3 blocks (3000 milli-blocks) at 40 credits each, fee 2 credits per block: the bid must cover 42.
    let too_low = market.trade(&memory, 1, 2, 3_000, 41_000, 40_000, 40_000);
    let trade = market.trade(&memory, 1, 2, 3_000, 42_000, 40_000, 40_000);
    let refused = market.block(vec![too_low, trade]);
    assert_eq!(refused, vec![EntryError::Price]);
    let value = 120_000;
    assert_eq!(market.balance(&buyer), FUNDS - value - 6_000);
    assert_eq!(market.balance(&seller), FUNDS + value - 1_200 - 6_000);
    assert_eq!(market.balance(&owner), FUNDS + 6_000);
    assert_eq!(market.balance(&COMMONS), 6_000 + 1_200);
    let hour = START_MS / 1000 / 3600 * 3600;
    let index = market.state.price_index(&memory, hour).unwrap();
    assert_eq!((index.volume, index.value, index.trades, index.vwap()), (3_000, value, 1, Some(40_000)));
}

#[test]
fn energy_trades_are_escrowed_and_checked_against_readings() {
    let mut market = Market::new("\n[params]\npenalty_per_kwh = 100000\nsettlement_grace_ms = 60000\n");
    let energy = pool(900, Resource::Energy);
    let start_s = energy.next_delivery_start_s(market.now_ms / 1000);
    // Two trades for the same interval: 1 kWh from 2 to 1 (1 delivers), 1 kWh from 3 to 4 (3 delivers nothing).
    let good = market.trade(&energy, 1, 2, 1_000, 300_000, 100_000, 200_000);
    let bad = market.trade(&energy, 4, 3, 1_000, 300_000, 100_000, 200_000);
    assert!(market.block(vec![good, bad]).is_empty());
    // Value 200 credits; newcomers lock 10 % collateral.
    assert_eq!(market.balance(&market.key(1)), FUNDS - 200_000 - 20_000);
    assert_eq!(market.balance(&market.key(2)), FUNDS - 20_000);
    assert_eq!(market.state.escrows().count(), 2);

    // During the interval the homes anchor their readings.
    market.now_ms = start_s * 1000 + 900_000;
    let readings = vec![
        market.reading(2, start_s, 0, 1_000), // sold 1 kWh, exported 1 kWh
        market.reading(1, start_s, 1_200, 0), // bought 1 kWh, imported 1.2
        market.reading(4, start_s, 1_000, 0), // bought 1 kWh, imported 1
        market.reading(3, start_s, 0, 250),   // sold 1 kWh, exported 0.25
    ];
    assert!(market.block(readings).is_empty());
    assert_eq!(market.state.escrows().count(), 2, "not released before the grace period");

    market.now_ms += 60_001;
    assert!(market.block(vec![]).is_empty());
    assert_eq!(market.state.escrows().count(), 0);
    // Delivered as traded: payment and collateral back; the reading's eco reward is another token.
    assert_eq!(market.balance(&market.key(1)), FUNDS - 200_000);
    assert_eq!(market.balance(&market.key(2)), FUNDS + 200_000);
    // Under-delivery of 750 Wh at 100 credits/kWh = 75 credits, capped by the seller's 20 credit collateral.
    assert_eq!(market.balance(&market.key(3)), FUNDS + 200_000 - 20_000);
    assert_eq!(market.balance(&market.key(4)), FUNDS - 200_000 + 20_000);
    let penalties: Vec<(PublicKey, u64, u64)> = market
        .events
        .iter()
        .filter_map(|event| match event {
            Event::Penalty { account, shortfall_wh, amount, .. } => Some((*account, *shortfall_wh, *amount)),
            _ => None,
        })
        .collect();
    assert_eq!(penalties, vec![(market.key(3), 750, 20_000)]);
    assert_eq!(market.state.reputation(&market.key(2)).deliveries, 1);
    assert_eq!(market.state.reputation(&market.key(3)).failures, 1);
    assert!(market.state.reputation(&market.key(3)).score_ppm() < market.state.reputation(&market.key(2)).score_ppm());
    let index = market.state.price_index(&energy, start_s).unwrap();
    assert_eq!((index.volume, index.vwap()), (2_000, Some(200_000)));
}

#[test]
fn hoarding_late_trades_and_low_tiers_are_refused() {
    let mut market = Market::new(
        "\n[params]\nbought_per_interval_max_wh = 1500\n\n[[pools]]\npool = \"energy/credit/u3/*\"\ntier_min = 1\n\n[[pools]]\npool = \"energy/*/*/*\"\n\n[[tiers]]\nname = \"new\"\n\n[[tiers]]\nname = \"known\"\nscore_min_ppm = 0\ndeliveries_min = 1\n",
    );
    let gated = pool(900, Resource::Energy);
    let refused = market.trade(&gated, 1, 2, 1_000, 300_000, 100_000, 200_000);
    assert!(matches!(market.block(vec![refused])[..], [EntryError::Tier { needed: 1, tier: 0, .. }]));

    let open = PoolId { cell: Cell::new("sp3e").unwrap(), ..pool(900, Resource::Energy) };
    let first = market.trade(&open, 1, 2, 1_000, 300_000, 100_000, 200_000);
    let second = market.trade(&open, 1, 3, 1_000, 300_000, 100_000, 200_000);
    let errors = market.block(vec![first, second]);
    assert!(matches!(errors[..], [EntryError::HoardingLimit { wanted: 2_000, limit: 1_500, .. }]), "{errors:?}");

    market.now_ms = open.next_delivery_start_s(market.now_ms / 1000) * 1000 + 900_000;
    let late = market.trade(&open, 4, 3, 100, 300_000, 100_000, 200_000);
    // Offers made now are for the next interval; a settlement for an interval already over is refused.
    let Body::Settlement(mut settlement) = Envelope::from_bytes(&late).unwrap().body else { unreachable!() };
    let past = pool(900, Resource::Energy).next_delivery_start_s(START_MS / 1000);
    for offer in [&mut settlement.bid, &mut settlement.ask] {
        let Body::Offer(mut terms) = offer.body.clone() else { unreachable!() };
        terms.delivery_start_s = past;
        terms.pool = open.clone();
        **offer = market.sign(if terms.side == Side::Bid { 4 } else { 3 }, Body::Offer(terms));
    }
    let late = market.sign(3, Body::Settlement(settlement)).to_bytes();
    assert_eq!(market.block(vec![late]), vec![EntryError::DeliveryOver]);
}

#[test]
fn the_commons_is_shared_among_the_poorest_members() {
    let mut market = Market::new("\n[params]\nredistribution_epoch_blocks = 2\nredistribution_balance_max = 1000000\n");
    // Accounts 1 and 2 get a track record; account 1 gives 10 credits to the commons, 2 moves its funds away.
    let gift = market.sign(
        1,
        Body::Transfer(Transfer { to: COMMONS, token: credit(), amount: 10_001, memo: Text::new("").unwrap() }),
    );
    let away = market.sign(
        2,
        Body::Transfer(Transfer { to: market.key(3), token: credit(), amount: 500_000, memo: Text::new("").unwrap() }),
    );
    let reading_1 = market.reading(1, 1_767_224_700, 1, 0);
    let reading_2 = market.reading(2, 1_767_224_700, 1, 0);
    let reading_3 = market.reading(3, 1_767_224_700, 1, 0);
    assert!(market.block(vec![gift.to_bytes(), away.to_bytes(), reading_1, reading_2, reading_3]).is_empty());
    assert_eq!(market.balance(&COMMONS), 10_001);
    market.now_ms += 1_000;
    assert!(market.block(vec![]).is_empty());
    // Members below 1000 credits: 1 (989.999) and 2 (500); 3 holds 1500. Each gets 5.0005 → 5000 milli, 1 stays.
    assert_eq!(market.balance(&COMMONS), 1);
    assert_eq!(market.balance(&market.key(1)), FUNDS - 10_001 + 5_000);
    assert_eq!(market.balance(&market.key(2)), FUNDS - 500_000 + 5_000);
    assert_eq!(market.balance(&market.key(3)), FUNDS + 500_000);
    assert!(market.events.contains(&Event::Redistributed { token: credit(), accounts: 2, share: 5_000 }));
    // Its record stays on the state for the commons to see (the API's /governance, the dashboard).
    let history = market.state.redistributions();
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].1.as_str(), history[0].2, history[0].3), ("credit", 2, 5_000));
}

#[test]
fn only_an_offers_author_can_cancel_it_on_the_ledger() {
    let mut market = Market::new("");
    let compute = pool(0, Resource::Compute);
    let settle = |market: &mut Market, bid: &Envelope, ask: &Envelope| {
        let settlement = Settlement {
            bid: Box::new(bid.clone()),
            ask: Box::new(ask.clone()),
            quantity: 100,
            unit_price: 1_000,
            mechanism: Mechanism::ContinuousDoubleAuction,
        };
        market.sign(2, Body::Settlement(settlement)).to_bytes()
    };
    let bid = market.offer(1, &compute, Side::Bid, 200, 1_000);
    let ask = market.offer(2, &compute, Side::Ask, 200, 1_000);
    let cancel = |market: &mut Market, by: usize, offer: &Envelope| {
        market.sign(by, Body::Cancel(protocol::message::Cancel { offer: offer.id() })).to_bytes()
    };
    // A stranger's cancel of the ask changes nothing: the first half settles.
    let stranger = cancel(&mut market, 3, &ask);
    let first = settle(&mut market, &bid, &ask);
    assert!(market.block(vec![stranger, first]).is_empty());
    // The seller's own cancel stops the second half.
    let own = cancel(&mut market, 2, &ask);
    let second = settle(&mut market, &bid, &ask);
    let errors = market.block(vec![own, second]);
    assert_eq!(errors, vec![EntryError::OfferCancelled(ask.id())]);
    assert_eq!(market.balance(&market.key(2)), FUNDS + 100);
}

#[test]
fn impossible_readings_are_refused_and_counters_must_account_for_energy() {
    let mut market = Market::new("");
    let start_s = START_MS / 1000;
    market.now_ms = START_MS + 1_800_000;
    let first = market.reading(1, start_s, 500, 0);
    assert!(market.block(vec![first]).is_empty());
    // The next interval: 100 Wh imported, but the register claims 300 more.
    let draft = |market: &mut Market, edit: &dyn Fn(&mut Reading)| {
        let mut reading = Reading {
            meter: MeterId::new("home-1").unwrap(),
            interval_start_s: start_s + 900,
            interval_s: 900,
            import_wh: 100,
            export_wh: 0,
            generation_wh: 0,
            consumption_wh: 100,
            import_counter_wh: 10_600,
            export_counter_wh: 10_000,
            source: MeterSource::Simulated,
            device: Default::default(),
        };
        edit(&mut reading);
        market.sign(1, Body::Reading(reading)).to_bytes()
    };
    let inflated = draft(&mut market, &|reading| reading.import_counter_wh = 10_900);
    let huge = draft(&mut market, &|reading| {
        reading.import_wh = 50_000;
        reading.consumption_wh = 50_000;
        reading.import_counter_wh = 60_500;
    });
    let unbalanced = draft(&mut market, &|reading| reading.generation_wh = 7_000);
    let early = draft(&mut market, &|reading| reading.interval_start_s = start_s + 2_700);
    let refused = market.block(vec![inflated, huge, unbalanced, early]);
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(matches!(refused[0], EntryError::ReadingOutOfOrder { .. }));
    for error in &refused[1..] {
        assert!(matches!(error, EntryError::ReadingImplausible { .. }), "{error}");
    }
    assert!(refused[1].to_string().contains("import"), "{}", refused[1]);
    assert!(refused[3].to_string().contains("not ended"), "{}", refused[3]);
    // The right reading is anchored.
    let right = draft(&mut market, &|_| {});
    assert!(market.block(vec![right]).is_empty());
}

/// A meter bound to a registered asset is held to the asset's rated limits, not a household's: a 2 kW heat pump
/// meter may not report 1 kWh in a quarter hour, nor generation; its readings count in the asset's history.
#[test]
fn readings_of_a_registered_asset_are_held_to_its_rated_limits() {
    use protocol::message::{Asset, AssetKind, Limits};
    let mut market = Market::new("");
    let start_s = START_MS / 1000;
    market.now_ms = START_MS + 3_600_000;
    let manifest = market.sign(
        1,
        Body::Asset(Asset {
            kind: AssetKind::Meter,
            purpose: protocol::types::Text::new("heat pump sub-meter").unwrap(),
            owner: market.key(1),
            meters: protocol::types::BoundedVec::new(vec![MeterId::new("home-1").unwrap()]).unwrap(),
            limits: Limits {
                generation_w_max: 0,
                import_w_max: 2_000,
                export_w_max: 0,
                consumption_w_max: 2_000,
                storage_w_max: 0,
                storage_wh: 0,
            },
            cell: Cell::new("u33db").unwrap(),
            commissioned_s: start_s - 86_400,
            maintenance_interval_s: 365 * 86_400,
            device: Default::default(),
        }),
    );
    let asset = manifest.id();
    assert!(market.block(vec![manifest.to_bytes()]).is_empty());
    assert_eq!(market.state.asset_of_meter(&market.key(1), "home-1"), Some(asset));
    // 2 kW for 15 minutes is at most 500 Wh (+1 for rounding): 400 Wh passes, 1,000 Wh does not; nor any export.
    let too_much = market.reading(1, start_s, 1_000, 0);
    let exports = market.reading(1, start_s, 0, 10);
    let refused = market.block(vec![too_much, exports]);
    assert_eq!(refused.len(), 2, "{refused:?}");
    for error in &refused {
        assert!(matches!(error, EntryError::ReadingImplausible { .. }), "{error}");
    }
    let fine = market.reading(1, start_s, 400, 0);
    assert!(market.block(vec![fine]).is_empty());
    let recorded = market.state.asset(&asset).unwrap();
    assert_eq!((recorded.readings, recorded.last_interval_start_s), (1, start_s));
    assert_eq!(recorded.manifest.limits.import_w_max, 2_000);
    // Another account's meter of the same name is not bound: a household's limits apply to it.
    let other = market.reading(2, start_s, 1_000, 0);
    assert!(market.block(vec![other]).is_empty());
    assert_eq!(market.state.asset(&asset).unwrap().readings, 1);
}

/// A meter whose asset names a device key takes only readings that device signed for this account: an unsigned
/// reading, one signed by another device and one whose device signature fails are refused; another account may not
/// register the same device, while the owner may register it again.
#[test]
fn a_device_bound_meter_takes_only_readings_its_device_signed() {
    use protocol::message::{Asset, AssetKind, Attestation, DeviceKey, DeviceSignature, Limits, device_reading_digest};
    let mut market = Market::new("");
    let start_s = START_MS / 1000;
    market.now_ms = START_MS + 3_600_000;
    let (device, stranger) = (Keypair::from_seed(&[99; 32]), Keypair::from_seed(&[98; 32]));
    let manifest = |market: &mut Market, author: usize, meter: &str| {
        let body = Body::Asset(Asset {
            kind: AssetKind::Meter,
            purpose: protocol::types::Text::new("smart meter with a signing chip").unwrap(),
            owner: market.key(author),
            meters: protocol::types::BoundedVec::new(vec![MeterId::new(meter).unwrap()]).unwrap(),
            limits: Limits {
                generation_w_max: 10_000,
                import_w_max: 10_000,
                export_w_max: 10_000,
                consumption_w_max: 10_000,
                storage_w_max: 0,
                storage_wh: 0,
            },
            cell: Cell::new("u33db").unwrap(),
            commissioned_s: start_s - 86_400,
            maintenance_interval_s: 0,
            device: protocol::types::BoundedVec::new(vec![DeviceKey::Ed25519(device.public())]).unwrap(),
        });
        market.sign(author, body).to_bytes()
    };
    let first = manifest(&mut market, 1, "home-1");
    assert!(market.block(vec![first]).is_empty());
    let reading =
        |market: &mut Market, author: usize, interval_start_s: u64, signer: Option<&Keypair>, tamper: bool| {
            let mut reading = Reading {
                meter: MeterId::new("home-1").unwrap(),
                interval_start_s,
                interval_s: 900,
                import_wh: 100,
                export_wh: 0,
                generation_wh: 0,
                consumption_wh: 100,
                import_counter_wh: 10_000 + 100 * (interval_start_s - start_s) / 900 + 100,
                export_counter_wh: 0,
                source: MeterSource::SunSpecModbus,
                device: Default::default(),
            };
            if let Some(signer) = signer {
                let digest =
                    device_reading_digest(&NetworkId::new("kos-market").unwrap(), &market.key(author), &reading);
                let signature = signer.sign_digest(&digest);
                reading.device = protocol::types::BoundedVec::new(vec![Attestation::Ed25519(DeviceSignature {
                    key: signer.public(),
                    signature,
                })])
                .unwrap();
                if tamper {
                    reading.import_wh += 1;
                    reading.import_counter_wh += 1;
                }
            }
            market.sign(author, Body::Reading(reading)).to_bytes()
        };
    let unsigned = reading(&mut market, 1, start_s, None, false);
    let other_device = reading(&mut market, 1, start_s, Some(&stranger), false);
    let tampered = reading(&mut market, 1, start_s, Some(&device), true);
    let refused = market.block(vec![unsigned, other_device, tampered]);
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(
        matches!(&refused[0], EntryError::ReadingDevice { reason, .. } if reason.contains("must carry")),
        "{}",
        refused[0]
    );
    assert!(
        matches!(&refused[1], EntryError::ReadingDevice { reason, .. } if reason.contains("names ed25519:")),
        "{}",
        refused[1]
    );
    assert!(
        matches!(&refused[2], EntryError::Invalid(reason) if reason.contains("device signature")),
        "{}",
        refused[2]
    );
    let signed = reading(&mut market, 1, start_s, Some(&device), false);
    assert_eq!(market.block(vec![signed]), vec![]);
    // Another account's meter has no device: a reading its own chip signs is refused, an unsigned one anchored.
    let unbound = reading(&mut market, 2, start_s, Some(&stranger), false);
    let plain = reading(&mut market, 2, start_s, None, false);
    let refused = market.block(vec![unbound, plain]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(matches!(&refused[0], EntryError::ReadingDevice { reason, .. } if reason.contains("names no device key")));
    // The device belongs to account 1: account 2 may not claim it; account 1 may register it again.
    let squat = manifest(&mut market, 2, "home-1");
    let refused = market.block(vec![squat]);
    assert!(matches!(refused.as_slice(), [EntryError::DeviceKeyTaken { .. }]), "{refused:?}");
    // Account 1 moves the device to another meter's manifest: the first meter no longer counts its readings (one
    // record may not count twice).
    let moved = manifest(&mut market, 1, "home-2");
    assert_eq!(market.block(vec![moved]), vec![]);
    let stale = reading(&mut market, 1, start_s + 900, Some(&device), false);
    let refused = market.block(vec![stale]);
    assert!(
        matches!(&refused[..], [EntryError::ReadingDevice { reason, .. }] if reason.contains("another asset")),
        "{refused:?}"
    );
}

/// A block's events say what its entries did, for the node's followers: each settled trade with its parties, pool
/// and price, each anchored reading whole; a refused entry says nothing.
#[test]
fn a_block_says_which_trades_settled_and_which_readings_were_anchored() {
    let mut market = Market::new("");
    let memory = pool(0, Resource::Memory);
    let too_low = market.trade(&memory, 1, 2, 3_000, 39_000, 40_000, 40_000);
    let trade = market.trade(&memory, 1, 2, 3_000, 42_000, 40_000, 40_000);
    let hour = START_MS / 1000 / 3600 * 3600;
    let reading = market.reading(3, hour - 900, 100, 250);
    let refused = market.block(vec![too_low, trade.clone(), reading.clone()]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    let settlement = Envelope::from_bytes(&trade).unwrap();
    let Body::Settlement(settled) = &settlement.body else { unreachable!() };
    let anchored = Envelope::from_bytes(&reading).unwrap();
    let Body::Reading(anchored_reading) = &anchored.body else { unreachable!() };
    let trades: Vec<&Event> =
        market.events.iter().filter(|event| matches!(event, Event::TradeSettled { .. })).collect();
    assert_eq!(
        trades,
        vec![&Event::TradeSettled {
            settlement: settlement.id(),
            pool: memory.clone(),
            bid: settled.bid.id(),
            ask: settled.ask.id(),
            buyer: market.key(1),
            seller: market.key(2),
            quantity: 3_000,
            unit_price: 40_000,
            mechanism: Mechanism::PayAsClear,
            delivery_start_s: memory.next_delivery_start_s(START_MS / 1000),
        }],
        "only the settled trade, not the refused one"
    );
    let readings: Vec<&Event> =
        market.events.iter().filter(|event| matches!(event, Event::ReadingAnchored { .. })).collect();
    assert_eq!(
        readings,
        vec![&Event::ReadingAnchored { id: anchored.id(), author: market.key(3), reading: anchored_reading.clone() }]
    );
}

/// A reading of `author`'s meter for `interval_start_s` whose registers follow its previous ones (`counters`).
fn reading_after(
    market: &mut Market,
    counters: &mut std::collections::HashMap<usize, (u64, u64)>,
    author: usize,
    interval_start_s: u64,
    import_wh: u64,
    export_wh: u64,
) -> Vec<u8> {
    let (import_counter_wh, export_counter_wh) = counters.entry(author).or_insert((10_000, 10_000));
    *import_counter_wh += import_wh;
    *export_counter_wh += export_wh;
    let reading = Reading {
        meter: MeterId::new("home-1").unwrap(),
        interval_start_s,
        interval_s: 900,
        import_wh,
        export_wh,
        generation_wh: export_wh,
        consumption_wh: import_wh,
        import_counter_wh: *import_counter_wh,
        export_counter_wh: *export_counter_wh,
        source: MeterSource::Simulated,
        device: Default::default(),
    };
    market.sign(author, Body::Reading(reading)).to_bytes()
}

/// Tiers under which three checked deliveries from three distinct counterparties make an account "known".
const KNOWN_TIER: &str =
    "\n[[tiers]]\nname = \"new\"\n\n[[tiers]]\nname = \"known\"\ndeliveries_min = 3\ncounterparties_min = 3\n";

/// The wash-trading drill: two accounts of one owner trade energy with each other a thousand times, every trade
/// delivered as sold and read by both meters, over ten days; neither rises a tier (a delivery between the two counts
/// once a day, and they are one counterparty to each other). A thousand trades of compute between them, released by
/// time alone, count nothing at all.
#[test]
fn two_accounts_trading_each_other_a_thousand_times_do_not_rise_a_tier() {
    let mut market = Market::new(&format!("\n[params]\nsettlement_grace_ms = 0\n{KNOWN_TIER}"));
    let energy = pool(900, Resource::Energy);
    let mut counters = std::collections::HashMap::new();
    for _ in 0..1_000 {
        let start_s = energy.next_delivery_start_s(market.now_ms / 1000);
        let trade = market.trade(&energy, 1, 2, 1_000, 300, 100, 200);
        assert_eq!(market.block(vec![trade]), vec![]);
        market.now_ms = (start_s + 900) * 1000;
        let readings = vec![
            reading_after(&mut market, &mut counters, 1, start_s, 1_000, 0),
            reading_after(&mut market, &mut counters, 2, start_s, 0, 1_000),
        ];
        assert_eq!(market.block(readings), vec![]);
        market.now_ms += 1;
        assert_eq!(market.block(vec![]), vec![]);
    }
    assert_eq!(market.state.escrows().count(), 0, "every trade released");
    let days = (market.now_ms - START_MS).div_ceil(86_400_000);
    for account in [1, 2] {
        let reputation = market.state.reputation(&market.key(account));
        assert_eq!(reputation.trades, 1_000);
        assert_eq!(reputation.failures, 0);
        assert!(reputation.deliveries <= days + 1, "{} deliveries in {days} days", reputation.deliveries);
        assert_eq!(reputation.counterparties, 1);
        assert_eq!(market.state.tier(&market.key(account)), 0, "account {account} rose a tier by wash trading");
    }

    let compute = pool(900, Resource::Compute);
    let start_s = compute.next_delivery_start_s(market.now_ms / 1000);
    let trades: Vec<Vec<u8>> = (0..1_000).map(|_| market.trade(&compute, 3, 4, 1_000, 300, 100, 200)).collect();
    assert_eq!(market.block(trades), vec![]);
    market.now_ms = (start_s + 900) * 1000 + 1;
    assert_eq!(market.block(vec![]), vec![]);
    assert_eq!(market.state.escrows().count(), 0);
    for account in [3, 4] {
        let reputation = market.state.reputation(&market.key(account));
        assert_eq!((reputation.trades, reputation.deliveries, reputation.counterparties), (1_000, 0, 0));
        assert_eq!(market.state.tier(&market.key(account)), 0);
    }
}

/// The rule does not stop honest trade: a home that delivers to three neighbours in one interval counts three
/// deliveries and three counterparties, and is known.
#[test]
fn deliveries_to_distinct_neighbours_count_and_raise_a_tier() {
    let mut market = Market::new(&format!("\n[params]\nsettlement_grace_ms = 0\n{KNOWN_TIER}"));
    let energy = pool(900, Resource::Energy);
    let start_s = energy.next_delivery_start_s(market.now_ms / 1000);
    let trades = [0, 3, 4].map(|buyer| market.trade(&energy, buyer, 1, 1_000, 300, 100, 200)).to_vec();
    assert_eq!(market.block(trades), vec![]);
    market.now_ms = (start_s + 900) * 1000;
    let mut counters = std::collections::HashMap::new();
    let mut readings = vec![reading_after(&mut market, &mut counters, 1, start_s, 0, 3_000)];
    for buyer in [0, 3, 4] {
        readings.push(reading_after(&mut market, &mut counters, buyer, start_s, 1_000, 0));
    }
    assert_eq!(market.block(readings), vec![]);
    market.now_ms += 1;
    assert_eq!(market.block(vec![]), vec![]);
    let reputation = market.state.reputation(&market.key(1));
    assert_eq!((reputation.deliveries, reputation.counterparties), (3, 3));
    assert_eq!(market.state.tier(&market.key(1)), 1);
    assert_eq!(market.state.reputation(&market.key(3)).counterparties, 1);
}

/// A settlement between two offers of one account is refused, in every kind of pool (it would count trades, and
/// deliveries, with itself).
#[test]
fn a_self_trade_is_refused() {
    let mut market = Market::new("");
    for pool in [pool(0, Resource::Memory), pool(900, Resource::Compute), pool(900, Resource::Energy)] {
        let trade = market.trade(&pool, 1, 1, 1_000, 300, 100, 200);
        let refused = market.block(vec![trade]);
        assert!(matches!(&refused[..], [EntryError::Invalid(why)] if why.contains("itself")), "{refused:?}");
    }
    assert_eq!(market.state.reputation(&market.key(1)).trades, 0);
}

/// The check a node makes before its market takes an offer is the settlement's own: a bidder that cannot pay (with
/// its other open offers), one below the pool's tier, one frozen or over the anti-hoarding limit is refused; an ask
/// needs only the collateral of energy interval pools.
#[test]
fn an_offer_is_checked_as_its_settlement_will_be() {
    let market = Market::new(
        "\n[params]\nbought_per_interval_max_wh = 1500\n\n[[pools]]\npool = \"energy/credit/u3/*\"\ntier_min = 1\n\n[[pools]]\npool = \"*/*/*/*\"\n\n[[tiers]]\nname = \"new\"\ncollateral_ppm = 100000\n\n[[tiers]]\nname = \"known\"\ndeliveries_min = 1\n",
    );
    let now_s = market.now_ms / 1000;
    let memory = pool(0, Resource::Memory);
    let offer = |pool: &PoolId, side: Side, quantity: u64, unit_price: u64| Offer {
        pool: pool.clone(),
        side,
        quantity,
        unit_price,
        delivery_start_s: pool.next_delivery_start_s(now_s),
    };
    let rich = market.key(1);
    // FUNDS is 1,000 credits: a bid of 1,000 units at 1,000 credits a unit (1,000,000 milli) takes all of it.
    let all_of_it = offer(&memory, Side::Bid, 1_000, 1_000_000);
    assert_eq!(market.state.check_offer(&rich, &all_of_it, &[], now_s), Ok(()));
    let one_more = offer(&memory, Side::Bid, 1, 1_000_000);
    assert!(matches!(
        market.state.check_offer(&rich, &one_more, std::slice::from_ref(&all_of_it), now_s),
        Err(EntryError::InsufficientFunds { needed: 1_001_000, balance: FUNDS, .. })
    ));
    let poor = Keypair::from_seed(&[99; 32]).public();
    assert!(matches!(
        market.state.check_offer(&poor, &one_more, &[], now_s),
        Err(EntryError::InsufficientFunds { balance: 0, .. })
    ));
    // An ask takes nothing outside energy interval pools; in one it needs its collateral (10 % of its value).
    assert_eq!(market.state.check_offer(&poor, &offer(&memory, Side::Ask, 1_000, 1_000), &[], now_s), Ok(()));
    let energy = PoolId { cell: Cell::new("sp3e").unwrap(), ..pool(900, Resource::Energy) };
    assert!(matches!(
        market.state.check_offer(&poor, &offer(&energy, Side::Ask, 1_000, 1_000), &[], now_s),
        Err(EntryError::InsufficientFunds { needed: 100, .. })
    ));
    // Anti-hoarding: 1,500 Wh an interval, with the bidder's other bids of the interval.
    let kwh = offer(&energy, Side::Bid, 1_000, 1_000);
    assert_eq!(market.state.check_offer(&rich, &kwh, &[], now_s), Ok(()));
    assert!(matches!(
        market.state.check_offer(&rich, &kwh, std::slice::from_ref(&kwh), now_s),
        Err(EntryError::HoardingLimit { wanted: 2_000, limit: 1_500, .. })
    ));
    // A pool for tier 1 and up.
    let gated = pool(900, Resource::Energy);
    assert!(matches!(
        market.state.check_offer(&rich, &offer(&gated, Side::Ask, 1_000, 1_000), &[], now_s),
        Err(EntryError::Tier { tier: 0, needed: 1, .. })
    ));
}
