//! Barter escrow on the state machine (PROTOCOL.md §10, *barter escrow*): a cycle locks each giver's collateral;
//! an energy leg is released by its giver's anchored readings or pays its shortfall's penalty, and takes no
//! verdict or dispute; a compute, memory or bandwidth leg is released by its receiver's receipt, or disputed and
//! decided by a jury (released, penalised, or returned when it does not decide), or returned when its window ends
//! with neither. Reputation counts a leg only when it is released. Supply stays the sum of balances throughout.

use ledger::reads::*;
use ledger::state::EntryError::Job as Refused;
use ledger::state::{EntryError, Event, JobError, LegStatus, barter_escrow_account};
use protocol::message::{
    BARTER_ENERGY_INTERVAL_S, BarterCycle, BarterLeg, BarterOffer, Body, Dispute, MeterSource, Outcome, Reading,
    Resource, Transfer, Verdict, barter_leg_id,
};
use protocol::types::{BoundedVec, Cell, MeterId, Text, TokenId};
use protocol::{Envelope, Id, PublicKey};

use crate::jobs::{FUNDS, START_MS, World};

/// Energy at 1 credit (1000 milli) a kWh of shortfall; other resources lock 2 credits a unit; receipts within 60 s.
const PARAMS: &str = "penalty_per_kwh = 1000\nbarter_collateral_per_unit = 2000\nbarter_receipt_window_ms = 60000\n\
                      settlement_grace_ms = 30000\njury_period_ms = 20000";

/// The 15-minute interval after the world's start, which energy legs are delivered in.
const DELIVERY_S: u64 = START_MS / 1000 + BARTER_ENERGY_INTERVAL_S;

fn offer(world: &mut World, author: usize, give: (Resource, u64), want: (Resource, u64)) -> Envelope {
    let energy = give.0 == Resource::Energy || want.0 == Resource::Energy;
    let body = Body::BarterOffer(BarterOffer {
        give: give.0,
        give_quantity: give.1,
        want: want.0,
        want_quantity: want.1,
        cell: Cell::new("u33db").unwrap(),
        delivery_start_s: if energy { DELIVERY_S } else { 0 },
    });
    world.sign(author, body)
}

/// A two-party cycle: `a` gives to `b`, `b` gives back; signed by validator 0 (a node that found it).
fn cycle(world: &mut World, a: (usize, Resource, u64), b: (usize, Resource, u64)) -> Envelope {
    let first = offer(world, a.0, (a.1, a.2), (b.1, b.2));
    let second = offer(world, b.0, (b.1, b.2), (a.1, a.2));
    let legs = vec![BarterLeg { offer: first, give_quantity: a.2 }, BarterLeg { offer: second, give_quantity: b.2 }];
    world.sign(0, Body::BarterCycle(BarterCycle { legs: BoundedVec::new(legs).unwrap() }))
}

fn leg(cycle: &Envelope, index: u8) -> Id {
    barter_leg_id(&cycle.id(), index)
}

fn exported(meter: &str, export_wh: u64) -> Body {
    Body::Reading(Reading {
        meter: MeterId::new(meter).unwrap(),
        source: MeterSource::Simulated,
        device: Default::default(),
        interval_start_s: DELIVERY_S,
        interval_s: BARTER_ENERGY_INTERVAL_S as u32,
        import_wh: 0,
        export_wh,
        generation_wh: export_wh,
        consumption_wh: 0,
        import_counter_wh: 0,
        export_counter_wh: export_wh,
    })
}

fn status(world: &World, leg: &Id) -> LegStatus {
    world.state.barter_leg(leg).expect("the leg is on the ledger").status
}

fn closed(events: &[Event], leg: &Id) -> Option<(String, u64)> {
    events.iter().find_map(|event| match event {
        Event::BarterLegClosed { leg: closed, status, penalty, .. } if closed == leg => {
            Some((status.clone(), *penalty))
        }
        _ => None,
    })
}

fn said(world: &mut World, author: usize, leg: &Id, outcome: Outcome) -> Envelope {
    world.sign(author, Body::Verdict(Verdict { job: *leg, outcome }))
}

fn disputed(world: &mut World, author: usize, leg: &Id) -> Envelope {
    world.sign(author, Body::Dispute(Dispute { job: *leg, text: Text::new("Nothing came.").unwrap() }))
}

#[test]
fn energy_legs_are_released_by_the_givers_readings_or_pay_the_shortfall_and_take_no_verdict() {
    let mut world = World::new(PARAMS);
    // Home 2 gives 2 kWh for 1 compute credit of home 3; home 4 gives 2 kWh for 1 memory block of home 5.
    let delivered = cycle(&mut world, (2, Resource::Energy, 2_000), (3, Resource::Compute, 1_000));
    let short = cycle(&mut world, (4, Resource::Energy, 2_000), (5, Resource::Memory, 1_000));
    let block = world.block(vec![delivered.clone(), short.clone()]);
    assert!(block.rejected.is_empty(), "{:?}", block.rejected);
    let (energy, short_energy) = (leg(&delivered, 0), leg(&short, 0));
    // Each giver locked its collateral: 2 kWh at 1 credit a kWh; a compute credit at 2 credits a unit.
    assert_eq!(world.credit(&barter_escrow_account(&energy)), 2_000);
    assert_eq!(world.credit(&barter_escrow_account(&leg(&delivered, 1))), 2_000);
    assert_eq!(world.credit(&world.key(2)), FUNDS - 2_000);
    let state = world.state.barter_leg(&energy).unwrap();
    assert_eq!((state.giver, state.receiver, state.delivery_start_s), (world.key(2), world.key(3), DELIVERY_S));
    // Readings decide an energy leg: its receiver can neither sign it off nor dispute it.
    let receipt = said(&mut world, 3, &energy, Outcome::Done);
    let dispute = disputed(&mut world, 3, &energy);
    let block = world.block(vec![receipt, dispute]);
    assert_eq!(block.rejected, [Refused(JobError::SettledByReadings), Refused(JobError::SettledByReadings)]);
    assert_eq!(status(&world, &energy), LegStatus::Pending);
    // Home 2 exports its 2 kWh in the interval; home 4 exports 500 Wh of its 2 kWh.
    world.until((DELIVERY_S + BARTER_ENERGY_INTERVAL_S) * 1000);
    let readings = vec![world.sign(2, exported("home-2", 2_000)), world.sign(4, exported("home-4", 500))];
    let block = world.block(readings);
    assert!(block.rejected.is_empty(), "{:?}", block.rejected);
    let events = world.until(world.state.barter_leg(&energy).unwrap().due_ms);
    assert_eq!(closed(&events, &energy), Some(("released".into(), 0)));
    // 1.5 kWh short at 1 credit a kWh: 1,500 of the 2,000 locked go to the receiver.
    assert_eq!(closed(&events, &short_energy), Some(("penalised".into(), 1_500)));
    assert_eq!(world.credit(&world.key(2)), FUNDS);
    assert_eq!(world.credit(&world.key(4)), FUNDS - 1_500);
    // Home 5's memory leg had no receipt within its minute: its collateral came back, and the penalty on top.
    assert_eq!(world.credit(&world.key(5)), FUNDS + 1_500);
    assert_eq!(world.state.barter_leg(&short_energy).unwrap().shortfall, 500 * 3);
    // Reputation: the delivered leg counts, the short one is a failure.
    let (delivered_by, short_by) = (world.state.reputation(&world.key(2)), world.state.reputation(&world.key(4)));
    assert_eq!((delivered_by.barters, delivered_by.deliveries, delivered_by.failures), (1, 1, 0));
    assert_eq!((short_by.barters, short_by.deliveries, short_by.failures), (0, 0, 1));
    world.supply_is_the_sum_of_balances();
}

#[test]
fn a_receipt_releases_a_leg_a_jury_decides_a_disputed_one_and_silence_returns_the_collateral() {
    let mut world = World::new(PARAMS);
    let receipted = cycle(&mut world, (2, Resource::Compute, 1_000), (3, Resource::Memory, 1_000));
    let judged = cycle(&mut world, (4, Resource::Bandwidth, 1_000), (5, Resource::Compute, 1_000));
    let block = world.block(vec![receipted.clone(), judged.clone()]);
    assert!(block.rejected.is_empty(), "{:?}", block.rejected);
    // Leg 0 of the first cycle: home 2's compute to home 3. Only the receiver signs it off, and only as done.
    let compute = leg(&receipted, 0);
    let by_giver = said(&mut world, 2, &compute, Outcome::Done);
    let rejected = said(&mut world, 3, &compute, Outcome::Failed);
    let receipt = said(&mut world, 3, &compute, Outcome::Done);
    let block = world.block(vec![by_giver, rejected, receipt]);
    assert_eq!(block.rejected, [Refused(JobError::NotYourVerdict), Refused(JobError::RejectByDispute)]);
    assert_eq!(closed(&block.events, &compute), Some(("released".into(), 0)));
    assert_eq!(world.credit(&world.key(2)), FUNDS, "the collateral went back");
    assert_eq!(world.state.reputation(&world.key(2)).barters, 1);
    // A released leg takes no second word.
    let again = disputed(&mut world, 3, &compute);
    assert_eq!(world.block(vec![again]).rejected, [Refused(JobError::NotPending)]);

    // The second cycle: home 5 says home 4's bandwidth never came; home 4 says its compute never came.
    let (bandwidth, compute_back) = (leg(&judged, 0), leg(&judged, 1));
    let outsider = disputed(&mut world, 6, &bandwidth);
    let disputes = vec![outsider, disputed(&mut world, 5, &bandwidth), disputed(&mut world, 4, &compute_back)];
    let block = world.block(disputes);
    assert_eq!(block.rejected, [Refused(JobError::NotAParty)]);
    let jurors = world.state.barter_leg(&bandwidth).unwrap().jurors;
    assert_eq!(jurors.len(), 3);
    assert!(!jurors.contains(&world.key(4)) && !jurors.contains(&world.key(5)), "no party sits on its jury");
    let index_of = |world: &World, juror: &PublicKey| (0..8).find(|index| world.key(*index) == *juror).unwrap();
    let jurors: Vec<usize> = jurors.iter().map(|juror| index_of(&world, juror)).collect();
    // The jury finds the bandwidth not given (penalised: its collateral to home 5) and the compute given.
    let mut votes = Vec::new();
    for juror in &jurors[..2] {
        votes.push(said(&mut world, *juror, &bandwidth, Outcome::Failed));
    }
    let compute_jurors: Vec<usize> =
        world.state.barter_leg(&compute_back).unwrap().jurors.iter().map(|juror| index_of(&world, juror)).collect();
    for juror in &compute_jurors[..2] {
        votes.push(said(&mut world, *juror, &compute_back, Outcome::Done));
    }
    let block = world.block(votes);
    assert!(block.rejected.is_empty(), "{:?}", block.rejected);
    assert_eq!(closed(&block.events, &bandwidth), Some(("penalised".into(), 2_000)));
    assert_eq!(closed(&block.events, &compute_back), Some(("released".into(), 0)));
    assert_eq!(world.credit(&world.key(4)), FUNDS - 2_000);
    assert_eq!(world.credit(&world.key(5)), FUNDS + 2_000);
    assert_eq!(world.state.reputation(&world.key(4)).failures, 1);
    assert_eq!(world.state.reputation(&world.key(5)).barters, 1);
    assert_eq!(world.state.jury_votes(&bandwidth), vec![], "votes are forgotten once decided");

    // Home 3's memory to home 2: no receipt, no dispute. At the window's end the collateral goes back, and it
    // counts nothing.
    let memory = leg(&receipted, 1);
    assert_eq!(status(&world, &memory), LegStatus::Pending);
    let events = world.until(world.state.barter_leg(&memory).unwrap().due_ms);
    assert_eq!(closed(&events, &memory), Some(("returned".into(), 0)));
    assert_eq!(world.credit(&world.key(3)), FUNDS);
    assert_eq!(world.state.reputation(&world.key(3)).barters, 0);
    world.supply_is_the_sum_of_balances();
}

#[test]
fn a_jury_that_does_not_decide_returns_the_collateral() {
    let mut world = World::new(PARAMS);
    let judged = cycle(&mut world, (2, Resource::Memory, 1_000), (3, Resource::Compute, 500));
    world.block(vec![judged.clone()]);
    let memory = leg(&judged, 0);
    let dispute = disputed(&mut world, 3, &memory);
    world.block(vec![dispute]);
    let state = world.state.barter_leg(&memory).unwrap();
    assert_eq!(state.status, LegStatus::Disputed);
    let juror = (0..8).find(|index| state.jurors.contains(&world.key(*index))).unwrap();
    let vote = said(&mut world, juror, &memory, Outcome::Failed);
    let twice = said(&mut world, juror, &memory, Outcome::Done);
    assert_eq!(world.block(vec![vote, twice]).rejected, [Refused(JobError::JurorVoted)]);
    // One vote of three when the period ends: the majority of votes cast decides.
    let events = world.until(state.due_ms);
    assert_eq!(closed(&events, &memory), Some(("penalised".into(), 2_000)));

    let undecided = cycle(&mut world, (4, Resource::Memory, 1_000), (5, Resource::Compute, 500));
    world.block(vec![undecided.clone()]);
    let memory = leg(&undecided, 0);
    let dispute = disputed(&mut world, 5, &memory);
    world.block(vec![dispute]);
    let events = world.until(world.state.barter_leg(&memory).unwrap().due_ms);
    assert_eq!(closed(&events, &memory), Some(("returned".into(), 0)));
    assert_eq!(world.credit(&world.key(4)), FUNDS);
    world.supply_is_the_sum_of_balances();
}

#[test]
fn a_cycle_whose_giver_cannot_lock_its_collateral_is_refused_whole() {
    let mut world = World::new(PARAMS);
    // Home 6 gives all its credits away, then offers a compute credit that locks 2 credits.
    let away = world.sign(
        6,
        Body::Transfer(Transfer {
            to: world.key(7),
            token: TokenId::new("credit").unwrap(),
            amount: FUNDS - 1_000,
            memo: Text::new("").unwrap(),
        }),
    );
    world.block(vec![away]);
    let unfunded = cycle(&mut world, (2, Resource::Memory, 1_000), (6, Resource::Compute, 1_000));
    let block = world.block(vec![unfunded.clone()]);
    assert!(
        matches!(&block.rejected[..], [EntryError::InsufficientFunds { needed: 2_000, .. }]),
        "{:?}",
        block.rejected
    );
    assert!(world.state.barter_leg(&leg(&unfunded, 0)).is_none(), "nothing of a refused cycle stays");
    assert_eq!(world.credit(&world.key(2)), FUNDS);
    // Energy for an interval that is over can no longer be given.
    world.until((DELIVERY_S + BARTER_ENERGY_INTERVAL_S) * 1000);
    let late = cycle(&mut world, (2, Resource::Energy, 1_000), (3, Resource::Compute, 1_000));
    let block = world.block(vec![late]);
    assert!(matches!(&block.rejected[..], [EntryError::DeliveryOver]), "{:?}", block.rejected);
}

#[test]
fn a_receiver_counts_the_energy_it_asked_for_and_is_held_to_the_hoarding_limit() {
    let mut world = World::new(&format!("{PARAMS}\nbought_per_interval_max_wh = 1000"));
    // Home 3 asks 500 Wh for its compute credit; home 2 gives it all of its offer, 2 kWh. What home 3 bought for
    // the interval is what it asked, within its limit: the cycle is taken.
    let generous = offer(&mut world, 2, (Resource::Energy, 2_000), (Resource::Compute, 1_000));
    let modest = offer(&mut world, 3, (Resource::Compute, 1_000), (Resource::Energy, 500));
    let legs =
        vec![BarterLeg { offer: generous, give_quantity: 2_000 }, BarterLeg { offer: modest, give_quantity: 1_000 }];
    let taken = world.sign(0, Body::BarterCycle(BarterCycle { legs: BoundedVec::new(legs).unwrap() }));
    let block = world.block(vec![taken]);
    assert!(block.rejected.is_empty(), "{:?}", block.rejected);
    // Home 5 asks 1,500 Wh: above the limit of 1 kWh an interval.
    let greedy = cycle(&mut world, (4, Resource::Energy, 1_500), (5, Resource::Memory, 1_000));
    let block = world.block(vec![greedy]);
    assert!(
        matches!(&block.rejected[..], [EntryError::HoardingLimit { wanted: 1_500, limit: 1_000, .. }]),
        "{:?}",
        block.rejected
    );
}

#[test]
fn no_word_on_a_leg_is_taken_once_its_window_is_over_and_nobody_of_the_cycle_judges_it() {
    // Juries as large as can be: every eligible account sits.
    let mut world = World::new(&format!("{PARAMS}\njury_size = 15"));
    // Three members in one cycle: 2 gives compute to 3, 3 memory to 4, 4 bandwidth to 2.
    let offers = [
        offer(&mut world, 2, (Resource::Compute, 1_000), (Resource::Bandwidth, 1_000)),
        offer(&mut world, 3, (Resource::Memory, 1_000), (Resource::Compute, 1_000)),
        offer(&mut world, 4, (Resource::Bandwidth, 1_000), (Resource::Memory, 1_000)),
    ];
    let legs = offers.into_iter().map(|offer| BarterLeg { offer, give_quantity: 1_000 }).collect();
    let three = world.sign(0, Body::BarterCycle(BarterCycle { legs: BoundedVec::new(legs).unwrap() }));
    world.block(vec![three.clone()]);
    let (compute, memory) = (leg(&three, 0), leg(&three, 1));
    let dispute = disputed(&mut world, 3, &compute);
    let block = world.block(vec![dispute]);
    assert!(block.rejected.is_empty(), "{:?}", block.rejected);
    let jurors = world.state.barter_leg(&compute).unwrap().jurors;
    for author in [2, 3, 4] {
        assert!(!jurors.contains(&world.key(author)), "home {author} of the cycle sits on the jury");
    }
    assert_eq!(jurors.len(), 3, "validators 0 and 1 and member 5");
    // Memory to home 4: the first block at or after the end of its window refuses a receipt, and returns it.
    let due = world.state.barter_leg(&memory).unwrap().due_ms;
    while START_MS + (world.height + 1) * 1_000 + 500 < due {
        world.block(vec![]);
    }
    let late = said(&mut world, 4, &memory, Outcome::Done);
    let block = world.block(vec![late]);
    assert_eq!(block.rejected, [Refused(JobError::LegDue)]);
    assert_eq!(closed(&block.events, &memory), Some(("returned".into(), 0)));
}
