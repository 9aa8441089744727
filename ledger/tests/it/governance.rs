//! Governance on the state machine: proposals decided by the rule genesis sets for their kind (validators by
//! power, members one vote each, or locked stake), with quorum and threshold; effects applied by the state machine
//! at the block where a proposal passes; validator changes scheduled for a later height; overrides (freeze, caps,
//! island) in force for their duration and lifted on time; the stewards' emergency rule.

use ledger::reads::*;
use std::sync::Arc;

use ledger::Genesis;
use ledger::state::{BlockContext, EntryError, Event, GovernanceError, ProposalStatus, State, vote_lock_account};
use protocol::message::{
    Action, AddValidator, Body, Choice, DeviceCap, Empty, Freeze, Measure, Mechanism, Offer, Override, PoolId,
    Proposal, Reading, Resource, SetParameter, Settlement, Side, Transfer, Upgrade, Vote,
};
use protocol::types::{Cell, MeterId, ParameterName, Text, TokenId};
use protocol::{Draft, Envelope, Keypair, NetworkId, PublicKey};

const START_MS: u64 = 1_767_225_600_000;

/// Six keys: 0 is the one validator; 1, 2, 3 are members and stewards; all hold credits.
struct World {
    keys: Vec<Keypair>,
    state: State,
    height: u64,
    nonce: u64,
}

struct Block {
    kept: usize,
    rejected: Vec<EntryError>,
    events: Vec<Event>,
}

impl World {
    fn new(governance: &str) -> World {
        let keys: Vec<Keypair> = (0..6u8).map(|index| Keypair::from_seed(&[index + 40; 32])).collect();
        let public: Vec<PublicKey> = keys.iter().map(Keypair::public).collect();
        let mut text = Genesis::devnet_text("kos-gov", START_MS, &public[..1], &public, 1_000_000);
        let list = |range: std::ops::Range<usize>| {
            public[range].iter().map(|key| format!("\"{}\"", key.to_hex())).collect::<Vec<_>>().join(", ")
        };
        text.push_str(&format!(
            "\n[governance]\nmembers = [{}]\nstewards = [{}]\nemergency_approvals = 2\nemergency_blocks_max = 10\n{governance}",
            list(1..4),
            list(1..4)
        ));
        let genesis = Arc::new(Genesis::parse(&text).unwrap());
        World { keys, state: State::genesis(genesis), height: 0, nonce: 0 }
    }

    fn key(&self, index: usize) -> PublicKey {
        self.keys[index].public()
    }

    fn sign(&mut self, author: usize, body: Body) -> Envelope {
        self.nonce += 1;
        let now = START_MS + self.height * 1_000;
        Draft {
            network: NetworkId::new("kos-gov").unwrap(),
            nonce: self.nonce,
            created_ms: now,
            expires_ms: now + 86_400_000,
            body,
        }
        .sign(&self.keys[author])
    }

    fn block(&mut self, entries: Vec<Envelope>) -> Block {
        self.height += 1;
        let context =
            BlockContext { height: self.height, time_ms: START_MS + self.height * 1_000 + 500, proposer: self.key(0) };
        let built = self.state.build(context, entries.iter().map(Envelope::to_bytes).collect(), &|_| false);
        let block = Block {
            kept: built.entries.len(),
            rejected: built.rejected.into_iter().map(|(_, error)| error).collect(),
            events: built.executed.events.clone(),
        };
        self.state.apply(built.executed.writes, built.executed.lattice, built.executed.pairs);
        block
    }

    fn propose(&mut self, author: usize, action: Action, period: u32) -> Envelope {
        let proposal = Proposal {
            action,
            title: Text::new("a change").unwrap(),
            text: Text::new("").unwrap(),
            voting_period_blocks: period,
        };
        self.sign(author, Body::Proposal(proposal))
    }

    fn vote(&mut self, voter: usize, proposal: &Envelope, choice: Choice) -> Envelope {
        self.sign(voter, Body::Vote(Vote { proposal: proposal.id(), choice, stake: 0 }))
    }

    fn vote_staking(&mut self, voter: usize, proposal: &Envelope, choice: Choice, stake: u64) -> Envelope {
        self.sign(voter, Body::Vote(Vote { proposal: proposal.id(), choice, stake }))
    }

    /// A matched bid of `buyer` and ask of `seller` for 1 kWh in a continuous pool.
    fn trade(&mut self, buyer: usize, seller: usize) -> Envelope {
        self.trade_at(buyer, seller, 150)
    }

    /// A matched bid (price + 50) and ask (price − 50) for 1 kWh in a continuous pool, settled at `price`.
    fn trade_at(&mut self, buyer: usize, seller: usize, price: u64) -> Envelope {
        let pool = PoolId {
            resource: Resource::Energy,
            token: TokenId::new("credit").unwrap(),
            cell: Cell::new("u33db").unwrap(),
            interval_s: 0,
        };
        let offer = |side, price| {
            Body::Offer(Offer { pool: pool.clone(), side, quantity: 1_000, unit_price: price, delivery_start_s: 0 })
        };
        let bid = self.sign(buyer, offer(Side::Bid, price + 50));
        let ask = self.sign(seller, offer(Side::Ask, price - 50));
        let settlement = Settlement {
            bid: Box::new(bid),
            ask: Box::new(ask),
            quantity: 1_000,
            unit_price: price,
            mechanism: Mechanism::ContinuousDoubleAuction,
        };
        self.sign(buyer, Body::Settlement(settlement))
    }
}

fn grid_fee(value: u64) -> Action {
    Action::SetParameter(SetParameter { name: ParameterName::new("grid_fee_per_kwh").unwrap(), value })
}

/// A `set-parameter` proposal that could never take effect — a parameter governance may not set, or a value out of
/// its range — is refused when it is proposed, with the reason (before, it was voted on and then changed nothing).
#[test]
fn a_parameter_proposal_that_could_never_take_effect_is_refused_when_proposed() {
    let mut world = World::new("");
    let set =
        |name: &str, value: u64| Action::SetParameter(SetParameter { name: ParameterName::new(name).unwrap(), value });
    let proposals = [
        world.propose(1, set("block_entries_max", 5), 5),
        world.propose(1, set("jury_size", 16), 5),
        world.propose(1, set("no_such_parameter", 1), 5),
        world.propose(1, set("jury_size", 15), 5),
    ];
    let block = world.block(proposals.to_vec());
    assert_eq!(block.kept, 1, "only the settable proposal is kept: {:?}", block.rejected);
    let reasons: Vec<String> = block.rejected.iter().map(ToString::to_string).collect();
    assert_eq!(
        reasons,
        [
            "parameter block_entries_max cannot be set to 5: not a parameter governance may set",
            "parameter jury_size cannot be set to 16: out of its range",
            "parameter no_such_parameter cannot be set to 1: not a parameter governance may set",
        ]
    );
    assert!(world.state.proposal(&proposals[3].id()).is_some());

    // A fee per entry in a fee token that is no token would refuse every later entry, the votes to undo it too.
    let mut world = World::new("\n[params]\nfee_token = \"nosuch\"\n");
    let proposals = [world.propose(1, set("fee_per_entry", 5), 5), world.propose(1, set("fee_per_entry", 0), 5)];
    let block = world.block(proposals.to_vec());
    assert_eq!(block.kept, 1, "{:?}", block.rejected);
    assert!(
        matches!(
            &block.rejected[..],
            [EntryError::Governance(GovernanceError::NotSettable {
                value: 5,
                why: "the genesis' fee token is not one of its tokens",
                ..
            })]
        ),
        "{:?}",
        block.rejected
    );
}

/// A balance of 0 is never stored: the state holds `b` only for balances above 0 (PROTOCOL.md §10). A continuous
/// trade without tax or royalty credited the commons 0 and so wrote a 0 balance under its key, and a genesis line of
/// 0 did too: a rule a stranger's re-execution had to guess.
#[test]
fn no_balance_of_zero_is_stored() {
    let zero_balances = |state: &State| -> Vec<Vec<u8>> {
        state
            .pairs()
            .filter(|(key, value)| key.first() == Some(&b'b') && value[..] == [0x00])
            .map(|(key, _)| key.into_owned())
            .collect()
    };
    let mut world = World::new("");
    let trade = world.trade(1, 2);
    assert_eq!(world.block(vec![trade]).kept, 1);
    assert_eq!(zero_balances(&world.state), Vec::<Vec<u8>>::new(), "after a trade without tax or royalty");
    let key = world.key(1).to_hex();
    let text = format!(
        "{}\n[[balances]]\naccount = \"{key}\"\ntoken = \"eco\"\namount = 0\n",
        Genesis::devnet_text("kos-gov", START_MS, &[world.key(0)], &[], 0)
    );
    let genesis = State::genesis(Arc::new(Genesis::parse(&text).unwrap()));
    assert_eq!(zero_balances(&genesis), Vec::<Vec<u8>>::new(), "a genesis line of 0");
}

const MEMBERS_DECIDE_FEES: &str = "\n[[governance.rules]]\nkind = \"set-parameter\"\nweight = \"members\"\nquorum_percent = 50\nthreshold_percent = 60\n";

#[test]
fn members_decide_a_fee_with_quorum_and_threshold_and_it_takes_effect_where_it_passes() {
    let mut world = World::new(MEMBERS_DECIDE_FEES);
    assert_eq!(world.state.param("grid_fee_per_kwh"), 0);
    // Two yes of three members: two thirds of all, past the 60 % threshold, so it passes in the block of the vote.
    let early = world.propose(1, grid_fee(20), 5);
    assert_eq!(world.block(vec![early.clone()]).kept, 1);
    let yes = [world.vote(1, &early, Choice::Yes), world.vote(2, &early, Choice::Yes)];
    let outsider = world.vote(4, &early, Choice::Yes);
    let first = world.block(vec![yes[0].clone(), outsider]);
    assert!(matches!(first.rejected[..], [EntryError::NotAVoter(_)]), "{:?}", first.rejected);
    assert_eq!(world.state.param("grid_fee_per_kwh"), 0, "one of three is not 60 % of all");
    let second = world.block(vec![yes[1].clone()]);
    assert!(second.events.contains(&Event::ProposalPassed(early.id())), "{:?}", second.events);
    assert_eq!(world.state.param("grid_fee_per_kwh"), 20);
    assert_eq!(world.state.proposal(&early.id()).unwrap().status, ProposalStatus::Passed);

    // One yes, one no: at the end of the period the quorum is there but yes is 50 % of yes and no: rejected.
    let split = world.propose(2, grid_fee(99), 3);
    world.block(vec![split.clone()]);
    let votes = vec![world.vote(1, &split, Choice::Yes), world.vote(3, &split, Choice::No)];
    world.block(votes);
    world.block(vec![]);
    let end = world.block(vec![]);
    assert!(end.events.contains(&Event::ProposalRejected(split.id())), "{:?}", end.events);
    assert_eq!(world.state.param("grid_fee_per_kwh"), 20);

    // One yes, two abstain: quorum met, yes is all of yes and no — it passes at the end of its period, and not a
    // block before.
    let quiet = world.propose(3, grid_fee(35), 3);
    world.block(vec![quiet.clone()]);
    let passing_height = world.height + 3;
    let votes = vec![
        world.vote(1, &quiet, Choice::Yes),
        world.vote(2, &quiet, Choice::Abstain),
        world.vote(3, &quiet, Choice::Abstain),
    ];
    world.block(votes);
    world.block(vec![]);
    assert_eq!(world.state.param("grid_fee_per_kwh"), 20);
    let end = world.block(vec![]);
    assert_eq!(world.height, passing_height);
    assert!(end.events.contains(&Event::ProposalPassed(quiet.id())), "{:?}", end.events);
    assert_eq!(world.state.param("grid_fee_per_kwh"), 35);

    // A single yes without quorum (one of three): rejected at the end.
    let lonely = world.propose(1, grid_fee(1), 2);
    world.block(vec![lonely.clone()]);
    let vote = world.vote(1, &lonely, Choice::Yes);
    world.block(vec![vote]);
    let end = world.block(vec![]);
    assert!(end.events.contains(&Event::ProposalRejected(lonely.id())), "{:?}", end.events);
    assert_eq!(world.state.param("grid_fee_per_kwh"), 35);
}

#[test]
fn a_stake_vote_locks_the_tokens_until_the_proposal_closes() {
    let rules = "\n[[governance.rules]]\nkind = \"text\"\nweight = \"stake:credit\"\nquorum_percent = 10\nthreshold_percent = 51\n";
    let mut world = World::new(rules);
    let credit = TokenId::new("credit").unwrap();
    let proposal = world.propose(4, Action::Text(Empty), 4);
    world.block(vec![proposal.clone()]);
    let holder = world.key(4);
    // A stake beyond the balance is refused; a stake of 0 is no vote.
    let too_much = world.vote_staking(4, &proposal, Choice::Yes, 1_000_001);
    let nothing = world.vote_staking(5, &proposal, Choice::Yes, 0);
    let block = world.block(vec![too_much, nothing]);
    assert!(
        matches!(block.rejected[..], [EntryError::InsufficientFunds { .. }, EntryError::NotAVoter(_)]),
        "{:?}",
        block.rejected
    );
    let vote = world.vote_staking(4, &proposal, Choice::Yes, 700_000);
    world.block(vec![vote]);
    // The stake is locked until the vote closes: it cannot be moved to vote again from another account; the
    // rest of the balance stays free.
    assert_eq!(world.state.balance(&holder, &credit), 300_000);
    assert_eq!(world.state.balance(&vote_lock_account(&proposal.id()), &credit), 700_000);
    let dodge = world.sign(
        4,
        Body::Transfer(Transfer {
            to: world.key(5),
            token: credit.clone(),
            amount: 300_001,
            memo: Text::new("").unwrap(),
        }),
    );
    assert_eq!(world.block(vec![dodge]).kept, 0);
    let ballots = world.state.ballots(&proposal.id());
    assert_eq!(ballots, vec![(holder, 1, 700_000)]);
    // 700,000 of the 6,000,000 credits voted: past the 10 % quorum, and all yes: passes at the end; the stake returns.
    let end = world.block(vec![]);
    assert!(end.events.contains(&Event::ProposalPassed(proposal.id())), "{:?}", end.events);
    assert_eq!(world.state.balance(&holder, &credit), 1_000_000);
    assert_eq!(world.state.balance(&vote_lock_account(&proposal.id()), &credit), 0);
}

#[test]
fn a_validator_change_takes_effect_at_the_height_announced_in_the_passing_block() {
    let mut world = World::new("validator_change_delay_blocks = 3\n");
    let newcomer = world.key(5);
    let add = world.propose(1, Action::AddValidator(AddValidator { key: newcomer, power: 1 }), 10);
    world.block(vec![add.clone()]);
    // The one validator (key 0) votes yes: all of the power, so it passes now, effective three blocks on.
    let vote = world.vote(0, &add, Choice::Yes);
    let passed = world.block(vec![vote]);
    let at_height = world.height + 3;
    assert!(
        passed.events.contains(&Event::ValidatorsChanging { proposal: add.id(), at_height }),
        "{:?}",
        passed.events
    );
    assert_eq!(world.state.validator_changes(), vec![(at_height, newcomer, 1)]);
    // The set that certifies the next block is the state's after this one: unchanged until block at_height − 1.
    for _ in 0..2 {
        assert_eq!(world.state.validators().len(), 1, "changed early at height {}", world.height);
        world.block(vec![]);
    }
    assert_eq!(world.height, at_height - 1);
    assert_eq!(world.state.validators().len(), 2, "block {at_height} is certified by the new set");
    assert!(world.state.validator_changes().is_empty());
}

#[test]
fn an_override_freezes_an_accounts_trading_until_it_expires() {
    let mut world = World::new("");
    let frozen = world.key(2);
    let freeze = world.propose(
        1,
        Action::Override(Override { measure: Measure::Freeze(Freeze { account: frozen }), duration_blocks: 3 }),
        5,
    );
    world.block(vec![freeze.clone()]);
    let before = world.trade(1, 2);
    assert_eq!(world.block(vec![before]).kept, 1, "not frozen yet");
    let vote = world.vote(0, &freeze, Choice::Yes);
    let passed = world.block(vec![vote]);
    let until_height = world.height + 3;
    assert!(passed.events.contains(&Event::OverrideInForce { proposal: freeze.id(), until_height }));
    assert_eq!(world.state.frozen(&frozen).map(|in_force| in_force.until_height), Some(until_height));
    // Its trades are refused, as seller or buyer; others trade on.
    for _ in 0..3 {
        let sells = world.trade(1, 2);
        let buys = world.trade(2, 3);
        let others = world.trade(3, 1);
        let block = world.block(vec![sells, buys, others]);
        assert_eq!(block.kept, 1, "height {}", world.height);
        assert!(
            block
                .rejected
                .iter()
                .all(|error| matches!(error, EntryError::Frozen { account, .. } if *account == frozen)),
            "{:?}",
            block.rejected
        );
        if world.height == until_height {
            assert!(block.events.contains(&Event::OverrideExpired(freeze.id())), "{:?}", block.events);
        }
    }
    assert_eq!(world.state.frozen(&frozen), None);
    assert_eq!(world.state.overrides().count(), 0);
    let after = world.trade(1, 2);
    assert_eq!(world.block(vec![after]).kept, 1, "the freeze expired");
}

#[test]
fn stewards_pass_a_short_emergency_cap_on_a_device() {
    let mut world = World::new("");
    let meter = MeterId::new("main").unwrap();
    let cap = |duration_blocks| Override {
        measure: Measure::DeviceCap(DeviceCap {
            account: world_key(4),
            meter: meter.clone(),
            import_w_max: 1_000,
            export_w_max: 500,
        }),
        duration_blocks,
    };
    // Longer than the emergency rule allows: refused.
    let long = world.propose(1, Action::Emergency(cap(11)), 5);
    assert!(matches!(
        world.block(vec![long]).rejected[..],
        [EntryError::Governance(ledger::state::GovernanceError::EmergencyTooLong)]
    ));
    let emergency = world.propose(1, Action::Emergency(cap(10)), 5);
    world.block(vec![emergency.clone()]);
    // A validator is not a steward; one steward is not two.
    let votes = vec![world.vote(0, &emergency, Choice::Yes), world.vote(1, &emergency, Choice::Yes)];
    let block = world.block(votes);
    assert!(matches!(block.rejected[..], [EntryError::NotAVoter(_)]), "{:?}", block.rejected);
    assert_eq!(world.state.overrides().count(), 0);
    let second = world.vote(3, &emergency, Choice::Yes);
    let block = world.block(vec![second]);
    assert!(block.events.iter().any(|event| matches!(event, Event::OverrideInForce { .. })), "{:?}", block.events);
    let (_, record) = world.state.overrides().next().unwrap();
    assert_eq!(record.emergency, 1);
    // The capped meter's reading of 2 kW export over 15 minutes (500 Wh) is beyond its 500 W cap.
    // The quarter hour that ended before the network started.
    let interval_start_s = (START_MS / 1000) / 900 * 900 - 900;
    let reading = |export_wh| Reading {
        meter: meter.clone(),
        interval_start_s,
        interval_s: 900,
        import_wh: 0,
        export_wh,
        generation_wh: export_wh,
        consumption_wh: 0,
        import_counter_wh: 0,
        export_counter_wh: export_wh,
        source: protocol::message::MeterSource::Simulated,
        device: Default::default(),
    };
    let over = world.sign(4, Body::Reading(reading(500)));
    let block = world.block(vec![over]);
    assert!(
        matches!(&block.rejected[..], [EntryError::ReadingImplausible { reason, .. }] if reason.contains("export")),
        "{:?}",
        block.rejected
    );
    let within = world.sign(4, Body::Reading(reading(100)));
    assert_eq!(world.block(vec![within]).kept, 1);
}

fn world_key(index: u8) -> PublicKey {
    Keypair::from_seed(&[index + 40; 32]).public()
}

#[test]
fn a_dynamic_pool_price_follows_usage_within_its_bounds_and_is_the_floor() {
    // Continuous energy pools: base 100 per kWh, between 50 and 400, 2 kWh an hour of capacity, a target of half
    // of it, at most 10 % a period.
    let pools = "\n[[pools]]\npool = \"energy/credit/*/0\"\ndynamic = { base = 100, min = 50, max = 400, \
                 capacity = 2000, target_ppm = 500000, step_ppm = 100000 }\n";
    let mut world = World::new(pools);
    let pool: PoolId = "energy/credit/u33db/0".parse().unwrap();
    let hour_s = |world: &World| (START_MS + world.height * 1_000 + 500) / 1000 / 3600 * 3600;
    assert_eq!(world.state.base_price(&pool, hour_s(&world), hour_s(&world)), Some(100));
    // A busy hour: two trades, 2 kWh, all the capacity (twice the target): the next hour's base is 10 % higher.
    let trades = vec![world.trade_at(1, 2, 150), world.trade_at(3, 4, 120)];
    let first_hour = hour_s(&world);
    assert_eq!(world.block(trades).kept, 2);
    world.height += 3_600;
    let second_hour = hour_s(&world);
    assert_eq!(world.state.base_price(&pool, second_hour, second_hour), Some(110));
    // The floor: below the base price a settlement is refused; at it, it settles.
    let low = world.trade_at(1, 2, 105);
    let block = world.block(vec![low]);
    assert!(
        matches!(block.rejected[..], [EntryError::BelowBasePrice { price: 105, base: 110 }]),
        "{:?}",
        block.rejected
    );
    let at = world.trade_at(1, 2, 110);
    assert_eq!(world.block(vec![at]).kept, 1);
    // Quiet hours after it (1 kWh at the target, then nothing): down 10 % an hour, to the minimum and no lower.
    world.height += 3_600;
    assert_eq!(world.state.base_price(&pool, hour_s(&world), hour_s(&world)), Some(110));
    world.height += 3_600;
    assert_eq!(world.state.base_price(&pool, hour_s(&world), hour_s(&world)), Some(99));
    world.height += 100 * 3_600;
    assert_eq!(world.state.base_price(&pool, hour_s(&world), hour_s(&world)), Some(50));
    let cheap = world.trade_at(1, 2, 60);
    assert_eq!(world.block(vec![cheap]).kept, 1);
    // The history of base prices the pool's trades met, as the API and dashboard show it.
    let history = world.state.base_prices(&pool, 0, u64::MAX);
    assert_eq!(history.iter().map(|(_, price)| *price).collect::<Vec<_>>(), vec![100, 110, 50]);
    assert_eq!((history[0].0, history[1].0), (first_hour, second_hour));
    // The market gets the base price as its floor for the period's offers; a pool without a policy has none.
    assert_eq!(world.state.pool_rules_for(&pool, hour_s(&world), hour_s(&world)).floor, 50);
    let plain: PoolId = "energy/credit/u33db/900".parse().unwrap();
    assert_eq!(world.state.pool_rules_for(&plain, hour_s(&world), hour_s(&world)).floor, 0);
}

#[test]
fn an_essential_pool_caps_each_account_and_governance_sets_the_share() {
    let pools = "\n[[pools]]\npool = \"energy/credit/*/900\"\nessential = { essential_per_account = 500, per_account_max = 1500 }\n";
    let mut world = World::new(pools);
    let pool: PoolId = "energy/credit/u33db/900".parse().unwrap();
    let rules = world.state.pool_rules(&pool).essential.unwrap();
    assert_eq!((rules.essential_per_account, rules.per_account_max, rules.share_max_ppm), (500, 1_500, 0));
    // One account buys 1 kWh of the interval, then another 1 kWh: beyond its 1.5 kWh, refused as hoarding.
    let now_s = (START_MS + 1_000) / 1000;
    let delivery_start_s = pool.next_delivery_start_s(now_s);
    let trade = |world: &mut World, buyer: usize, seller: usize| {
        let offer = |side, price| {
            Body::Offer(Offer { pool: pool.clone(), side, quantity: 1_000, unit_price: price, delivery_start_s })
        };
        let bid = world.sign(buyer, offer(Side::Bid, 200));
        let ask = world.sign(seller, offer(Side::Ask, 100));
        let settlement = Settlement {
            bid: Box::new(bid),
            ask: Box::new(ask),
            quantity: 1_000,
            unit_price: 150,
            mechanism: Mechanism::PayAsClear,
        };
        world.sign(buyer, Body::Settlement(settlement))
    };
    let first = trade(&mut world, 1, 2);
    assert_eq!(world.block(vec![first]).kept, 1);
    let second = trade(&mut world, 1, 3);
    let other = trade(&mut world, 4, 3);
    let block = world.block(vec![second, other]);
    assert_eq!(block.kept, 1, "another account still buys");
    assert!(
        matches!(block.rejected[..], [EntryError::HoardingLimit { wanted: 2_000, limit: 1_500, .. }]),
        "{:?}",
        block.rejected
    );
    // The share of an interval's supply one account may get is governed: the validator sets it to 25 %.
    let share = Action::SetParameter(SetParameter {
        name: ParameterName::new("essential_share_max_ppm").unwrap(),
        value: 250_000,
    });
    let proposal = world.propose(1, share, 5);
    world.block(vec![proposal.clone()]);
    let vote = world.vote(0, &proposal, Choice::Yes);
    world.block(vec![vote]);
    assert_eq!(world.state.pool_rules(&pool).essential.unwrap().share_max_ppm, 250_000);
}

#[test]
fn an_issuance_rule_passed_by_governance_changes_who_mints_and_the_export_reward() {
    let mut world = World::new("");
    let credit = TokenId::new("credit").unwrap();
    let eco = TokenId::new("eco").unwrap();
    let mint = |world: &mut World, by: usize, amount: u64| {
        let to = world.key(by);
        world.sign(
            by,
            Body::Mint(protocol::message::Mint {
                to,
                token: TokenId::new("credit").unwrap(),
                amount,
                memo: Text::new("").unwrap(),
            }),
        )
    };
    // Genesis: only validator 0 mints credits; eco is rewarded at 1,000 per kWh exported.
    let refused = mint(&mut world, 2, 5_000);
    assert!(matches!(world.block(vec![refused]).rejected[..], [EntryError::NotIssuer(_)]));
    // Governance names account 2 the issuer, with a cap, and halves the eco reward.
    let mut issuers = vec![world.key(2)];
    issuers.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let credit_rule = Action::IssuanceRule(protocol::message::IssuanceRule {
        token: credit.clone(),
        issuers: protocol::types::BoundedVec::new(issuers).unwrap(),
        supply_max: world.state.supply(&credit) + 10_000,
        export_reward_per_kwh: 0,
    });
    let eco_rule = Action::IssuanceRule(protocol::message::IssuanceRule {
        token: eco.clone(),
        issuers: protocol::types::BoundedVec::new(vec![]).unwrap(),
        supply_max: 0,
        export_reward_per_kwh: 500,
    });
    for action in [credit_rule, eco_rule] {
        let proposal = world.propose(1, action, 5);
        world.block(vec![proposal.clone()]);
        let vote = world.vote(0, &proposal, Choice::Yes);
        world.block(vec![vote]);
        assert_eq!(world.state.proposal(&proposal.id()).unwrap().status, ProposalStatus::Passed);
    }
    assert_eq!(world.state.issuance(&credit).unwrap().supply_max, world.state.supply(&credit) + 10_000);
    let old_issuer = mint(&mut world, 0, 1);
    let new_issuer = mint(&mut world, 2, 5_000);
    let over_cap = mint(&mut world, 2, 5_001);
    let block = world.block(vec![old_issuer, new_issuer, over_cap]);
    assert_eq!(block.kept, 1, "{:?}", block.rejected);
    assert!(
        matches!(block.rejected[..], [EntryError::NotIssuer(_), EntryError::SupplyCap { .. }]),
        "{:?}",
        block.rejected
    );
    // An exported kWh now earns 500 eco.
    let interval_start_s = (START_MS / 1000) / 900 * 900 - 900;
    let reading = Reading {
        meter: MeterId::new("main").unwrap(),
        interval_start_s,
        interval_s: 900,
        import_wh: 0,
        export_wh: 1_000,
        generation_wh: 1_000,
        consumption_wh: 0,
        import_counter_wh: 0,
        export_counter_wh: 1_000,
        source: protocol::message::MeterSource::Simulated,
        device: Default::default(),
    };
    let reading = world.sign(3, Body::Reading(reading));
    assert_eq!(world.block(vec![reading]).kept, 1);
    assert_eq!(world.state.balance(&world.key(3), &eco), 500);
}

#[test]
fn a_pool_fee_passed_by_governance_applies_to_that_pool_from_its_block() {
    let mut world = World::new("");
    let pool: PoolId = "energy/credit/u33db/0".parse().unwrap();
    let elsewhere: PoolId = "energy/credit/u33dc/0".parse().unwrap();
    assert_eq!(world.state.pool_fee(&pool), market::Fee::None);
    let fee = Action::PoolFee(protocol::message::PoolFee { pool: pool.clone(), fee_per_kwh: 60, fee_ppm: 0 });
    let proposal = world.propose(1, fee, 5);
    world.block(vec![proposal.clone()]);
    let before = world.trade_at(1, 2, 150);
    assert_eq!(world.block(vec![before]).kept, 1, "no fee yet");
    let vote = world.vote(0, &proposal, Choice::Yes);
    world.block(vec![vote]);
    assert_eq!(world.state.pool_fee(&pool), market::Fee::Constant(60));
    assert_eq!(world.state.pool_fee(&elsewhere), market::Fee::None);
    // A bid of 200 cannot pay 150 plus a fee of 60.
    let after = world.trade_at(1, 2, 150);
    assert!(matches!(world.block(vec![after]).rejected[..], [EntryError::Price]));
    // Governance lowers it to 40: the same trade goes through, and the fee goes to the commons.
    let lower = Action::PoolFee(protocol::message::PoolFee { pool: pool.clone(), fee_per_kwh: 40, fee_ppm: 0 });
    let proposal = world.propose(1, lower, 5);
    world.block(vec![proposal.clone()]);
    let vote = world.vote(0, &proposal, Choice::Yes);
    world.block(vec![vote]);
    let commons = ledger::state::COMMONS;
    let credit = TokenId::new("credit").unwrap();
    let pot = world.state.balance(&commons, &credit);
    let again = world.trade_at(1, 2, 150);
    assert_eq!(world.block(vec![again]).kept, 1);
    assert_eq!(world.state.balance(&commons, &credit), pot + 40);
}

#[test]
fn a_short_emergency_freeze_does_not_lift_a_longer_community_freeze() {
    let mut world = World::new("");
    let frozen = world.key(4);
    let freeze = |duration_blocks| Override { measure: Measure::Freeze(Freeze { account: frozen }), duration_blocks };
    let community = world.propose(1, Action::Override(freeze(20)), 5);
    world.block(vec![community.clone()]);
    let vote = world.vote(0, &community, Choice::Yes);
    world.block(vec![vote]);
    let long_until = world.state.frozen(&frozen).unwrap().until_height;
    // Two stewards pass a 2-block emergency freeze of the same account: it takes the lookup, then expires.
    let emergency = world.propose(1, Action::Emergency(freeze(2)), 5);
    world.block(vec![emergency.clone()]);
    let votes = vec![world.vote(1, &emergency, Choice::Yes), world.vote(2, &emergency, Choice::Yes)];
    world.block(votes);
    assert_eq!(world.state.frozen(&frozen).unwrap().by, emergency.id());
    world.block(vec![]);
    let expired = world.block(vec![]);
    assert!(expired.events.contains(&Event::OverrideExpired(emergency.id())), "{:?}", expired.events);
    // The community's freeze is enforced again, to its own end.
    let in_force = world.state.frozen(&frozen).expect("still frozen");
    assert_eq!((in_force.by, in_force.until_height), (community.id(), long_until));
    let trade = world.trade(1, 4);
    assert!(matches!(world.block(vec![trade]).rejected[..], [EntryError::Frozen { .. }]));
}

#[test]
fn a_bounded_number_of_proposals_end_at_one_height() {
    let mut world = World::new("");
    // All proposed in one block with the same period: they would all close at one height.
    let proposals: Vec<Envelope> =
        (0..ledger::state::PROPOSALS_ENDING_MAX + 1).map(|_| world.propose(1, Action::Text(Empty), 10)).collect();
    let block = world.block(proposals);
    assert_eq!(block.kept, ledger::state::PROPOSALS_ENDING_MAX);
    assert!(
        matches!(block.rejected[..], [EntryError::Governance(ledger::state::GovernanceError::TooManyEnding)]),
        "{:?}",
        block.rejected
    );
    // Another period is fine.
    let other = world.propose(1, Action::Text(Empty), 11);
    assert_eq!(world.block(vec![other]).kept, 1);
}

/// `proposals_ending_last` (what `GET /governance` lists) holds only the proposals it keeps while it looks at every
/// one, and gives what sorting every proposal by end (newest first, ties in id order) and keeping the first would.
#[test]
fn the_proposals_that_end_last_are_those_a_full_sort_puts_first() {
    let mut world = World::new("");
    let periods = [5, 9, 5, 30, 12, 9, 9, 60, 5, 12, 30, 7];
    let proposals: Vec<Envelope> = periods
        .iter()
        .enumerate()
        .map(|(index, period)| world.propose(1 + index % 5, grid_fee(u64::try_from(index).unwrap()), *period))
        .collect();
    assert_eq!(world.block(proposals).kept, periods.len());
    let mut sorted: Vec<_> = world.state.proposals().collect();
    sorted.sort_by_key(|(_, proposal)| std::cmp::Reverse(proposal.end_height));
    for count in 0..=periods.len() + 1 {
        let expected: Vec<_> = sorted.iter().take(count).map(|(id, _)| *id).collect();
        let kept: Vec<_> = world.state.proposals_ending_last(count).into_iter().map(|(id, _)| id).collect();
        assert_eq!(kept, expected, "the {count} that end last");
    }
}

/// Issue 28, item 5: an upgrade proposal schedules a protocol version at a height after its vote; it is refused
/// for a version not above the one in force or a height before the vote ends; when it passes, the version in force
/// is still 1 for every block before its height and becomes its version for exactly that block on; a later upgrade
/// replaces a scheduled one.
#[test]
fn an_upgrade_switches_the_protocol_version_at_exactly_its_height() {
    let mut world = World::new("");
    let upgrade =
        |version: u8, height: u64| Action::Upgrade(Upgrade { version, height, info: Text::new("kos 0.2").unwrap() });
    assert_eq!(world.state.protocol_version(), 1);
    // Too soon: the vote of 10 blocks ends at block 11.
    let early = world.propose(1, upgrade(2, 11), 10);
    let refused = world.block(vec![early]);
    assert_eq!(refused.kept, 0);
    assert!(matches!(refused.rejected[..], [EntryError::Governance(GovernanceError::UpgradeTooSoon { .. })]));
    let same = world.propose(1, upgrade(1, 50), 10);
    assert_eq!(world.block(vec![same]).kept, 0, "version 1 is in force (and below 2)");
    // To version 3 at block 40, then replaced by version 2 at block 30.
    let first = world.propose(1, upgrade(3, 40), 5);
    world.block(vec![first.clone()]);
    let yes = world.vote(0, &first, Choice::Yes);
    let passed = world.block(vec![yes]);
    assert!(
        passed.events.iter().any(|event| matches!(event, Event::UpgradeScheduled { version: 3, at_height: 40, .. }))
    );
    let second = world.propose(1, upgrade(2, 30), 5);
    world.block(vec![second.clone()]);
    let yes = world.vote(0, &second, Choice::Yes);
    world.block(vec![yes]);
    assert_eq!(world.state.scheduled_upgrade().map(|upgrade| (upgrade.version, upgrade.height)), Some((2, 30)));
    // Blocks up to 29 are of version 1; the state after block 29 says block 30 is of version 2.
    while world.height < 28 {
        world.block(vec![]);
        assert_eq!(world.state.protocol_version(), 1, "switched early, after block {}", world.height);
    }
    let last_of_1 = world.block(vec![]);
    assert_eq!(world.height, 29);
    assert!(last_of_1.events.contains(&Event::Upgraded { version: 2, at_height: 30 }), "{:?}", last_of_1.events);
    assert_eq!(world.state.protocol_version(), 2);
    assert_eq!(world.state.scheduled_upgrade(), None);
    assert_eq!(world.state.upgrade_in_force().map(|upgrade| upgrade.info), Some("kos 0.2".to_owned()));
    // Version 2 in force: an upgrade to 2 again is refused, one to 3 later is taken.
    let again = world.propose(1, upgrade(2, 100), 5);
    assert_eq!(world.block(vec![again]).kept, 0);
    let next = world.propose(1, upgrade(3, 100), 5);
    assert_eq!(world.block(vec![next]).kept, 1);
}
