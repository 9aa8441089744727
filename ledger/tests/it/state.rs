//! Property tests of the state machine's invariants over random sequences of blocks.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledger::Genesis;
use ledger::reads::*;
use ledger::state::{BlockContext, Event, Lattice, SpendStatus, State};
use proptest::prelude::*;
use protocol::message::{Body, Burn, Mechanism, Mint, Offer, PoolId, Settlement, Side, Transfer};
use protocol::types::{Text, TokenId};
use protocol::{Draft, Envelope, Keypair, NetworkId, PublicKey};

const START_MS: u64 = 1_767_225_600_000;

#[derive(Debug, Clone)]
enum Op {
    Transfer { from: usize, to: usize, amount: u64 },
    Mint { by: usize, to: usize, amount: u64 },
    Burn { by: usize, amount: u64 },
    Trade { buyer: usize, seller: usize, quantity: u64, price: u64, interval: bool },
    Replay,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, 0..4usize, 1..400_000u64).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        (0..4usize, 0..4usize, 1..100_000u64).prop_map(|(by, to, amount)| Op::Mint { by, to, amount }),
        (0..4usize, 1..200_000u64).prop_map(|(by, amount)| Op::Burn { by, amount }),
        (0..4usize, 0..4usize, 1..5_000u64, 0..200_000u64, any::<bool>()).prop_map(
            |(buyer, seller, quantity, price, interval)| Op::Trade { buyer, seller, quantity, price, interval }
        ),
        Just(Op::Replay),
    ]
}

struct World {
    keys: Vec<Keypair>,
    genesis: Arc<Genesis>,
    network: NetworkId,
    nonce: u64,
}

impl World {
    fn new() -> World {
        let keys: Vec<Keypair> = (0..4u8).map(|index| Keypair::from_seed(&[index + 1; 32])).collect();
        let public: Vec<PublicKey> = keys.iter().map(|key| key.public()).collect();
        // Validator 0 (= account 0) may mint credits.
        let text = Genesis::devnet_text("kos-prop", START_MS, &public[..1], &public, 500_000);
        World {
            keys,
            genesis: Arc::new(Genesis::parse(&text).unwrap()),
            network: NetworkId::new("kos-prop").unwrap(),
            nonce: 0,
        }
    }

    fn sign(&mut self, author: usize, body: Body, now_ms: u64) -> Envelope {
        self.nonce += 1;
        Draft {
            network: self.network.clone(),
            nonce: self.nonce,
            created_ms: now_ms,
            expires_ms: now_ms + 86_400_000,
            body,
        }
        .sign(&self.keys[author])
    }

    fn entry(&mut self, op: &Op, now_ms: u64, last: &Option<Vec<u8>>) -> Option<Vec<u8>> {
        let credit = TokenId::new("credit").unwrap();
        let memo = Text::new("p").unwrap();
        let body = match op.clone() {
            Op::Transfer { from, to, amount } => {
                if from == to {
                    return None;
                }
                return Some(
                    self.sign(
                        from,
                        Body::Transfer(Transfer { to: self.keys[to].public(), token: credit, amount, memo }),
                        now_ms,
                    )
                    .to_bytes(),
                );
            }
            Op::Mint { by, to, amount } => {
                (by, Body::Mint(Mint { to: self.keys[to].public(), token: credit, amount, memo }))
            }
            Op::Burn { by, amount } => (by, Body::Burn(Burn { token: credit, amount, memo })),
            Op::Trade { buyer, seller, quantity, price, interval } => {
                if buyer == seller {
                    return None;
                }
                let pool = PoolId {
                    resource: protocol::message::Resource::Energy,
                    token: credit,
                    cell: protocol::types::Cell::new("u33db").unwrap(),
                    interval_s: if interval { 900 } else { 0 },
                };
                let delivery_start_s = pool.next_delivery_start_s(now_ms / 1000);
                let offer = |side, limit| {
                    Body::Offer(Offer { pool: pool.clone(), side, quantity, unit_price: limit, delivery_start_s })
                };
                let bid = self.sign(buyer, offer(Side::Bid, price), now_ms);
                let ask = self.sign(seller, offer(Side::Ask, price / 2), now_ms);
                let settlement = Settlement {
                    bid: Box::new(bid),
                    ask: Box::new(ask),
                    quantity,
                    unit_price: price,
                    mechanism: Mechanism::ContinuousDoubleAuction,
                };
                (buyer, Body::Settlement(settlement))
            }
            Op::Replay => return last.clone(),
        };
        Some(self.sign(body.0, body.1, now_ms).to_bytes())
    }
}

/// Supply of each token = balances + escrows holding it.
fn check_conservation(state: &State) -> Result<(), TestCaseError> {
    let mut held: BTreeMap<TokenId, u128> = BTreeMap::new();
    for (_, token, amount) in state.balances() {
        *held.entry(token).or_default() += u128::from(amount);
    }
    for (_, escrow) in state.escrows() {
        *held.entry(escrow.token.clone()).or_default() += u128::from(escrow.held());
    }
    for token in ["credit", "eco"] {
        let token = TokenId::new(token).unwrap();
        prop_assert_eq!(u128::from(state.supply(&token)), held.get(&token).copied().unwrap_or(0), "token {}", token);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Over random blocks of transfers, mints, burns, trades (some escrowed) and replays: supply equals what
    /// balances and escrows hold after every block; only the issuer's mints change supply upwards; an escrow
    /// is released once; a replayed entry is refused; building never keeps an entry that would not execute.
    #[test]
    fn state_invariants_hold(blocks in proptest::collection::vec((proptest::collection::vec(op(), 1..12), 0..1_500_000u64), 1..12)) {
        let mut world = World::new();
        let mut state = State::genesis(world.genesis.clone());
        check_conservation(&state)?;
        let mut now_ms = START_MS;
        let mut last: Option<Vec<u8>> = None;
        let mut released = std::collections::BTreeSet::new();
        let credit = TokenId::new("credit").unwrap();
        for (height, (ops, step_ms)) in blocks.into_iter().enumerate() {
            now_ms += 1 + step_ms;
            let candidates: Vec<Vec<u8>> = ops.iter().filter_map(|op| world.entry(op, now_ms, &last)).collect();
            if let Some(first) = candidates.first() {
                last = Some(first.clone());
            }
            let context = BlockContext { height: height as u64 + 1, time_ms: now_ms, proposer: world.keys[0].public() };
            let supply_before = state.supply(&credit);
            let built = state.build(context, candidates, &|_| false);
            // What the builder kept executes on its own to the same root.
            let again = state.execute(context, built.entries.iter().map(|entry| entry.as_slice()), &|_| false);
            prop_assert!(again.is_ok(), "a built block does not execute: {:?}", again.err());
            prop_assert_eq!(again.unwrap().state_root, built.executed.state_root);
            let minted: u64 = built
                .entries
                .iter()
                .filter_map(|bytes| Envelope::from_bytes(bytes).ok())
                .filter_map(|envelope| match envelope.body { Body::Mint(mint) => Some(mint.amount), _ => None })
                .sum();
            let burned: u64 = built
                .entries
                .iter()
                .filter_map(|bytes| Envelope::from_bytes(bytes).ok())
                .filter_map(|envelope| match envelope.body { Body::Burn(burn) => Some(burn.amount), _ => None })
                .sum();
            for event in &built.executed.events {
                if let Event::EscrowReleased { settlement, .. } = event {
                    prop_assert!(released.insert(*settlement), "escrow {} released twice", settlement);
                }
            }
            for (bytes, error) in &built.rejected {
                if let Ok(envelope) = Envelope::from_bytes(bytes)
                    && !matches!(error, ledger::state::EntryError::Duplicate(_))
                    && let Body::Mint(mint) = &envelope.body
                    && envelope.author == world.keys[0].public()
                {
                    // Apart from replays, the issuer's mints are refused only for a cap the devnet credit does not have.
                    prop_assert!(false, "issuer mint of {} refused: {}", mint.amount, error);
                }
            }
            state.apply(built.executed.writes, built.executed.lattice, built.executed.pairs);
            prop_assert_eq!(state.supply(&credit), supply_before + minted - burned);
            check_conservation(&state)?;
            for entry in &built.entries {
                let id = Envelope::from_bytes(entry).unwrap().id();
                prop_assert!(state.includes(&id));
            }
        }
    }
}

#[test]
fn a_replayed_or_unfunded_entry_is_refused_and_mints_need_an_issuer() {
    let mut world = World::new();
    let state = State::genesis(world.genesis.clone());
    let context = BlockContext { height: 1, time_ms: START_MS + 10, proposer: world.keys[0].public() };
    let transfer = world.entry(&Op::Transfer { from: 1, to: 2, amount: 1_000 }, START_MS, &None).unwrap();
    let too_much = world.entry(&Op::Transfer { from: 1, to: 2, amount: 10_000_000 }, START_MS, &None).unwrap();
    let foreign_mint = world.entry(&Op::Mint { by: 2, to: 2, amount: 5 }, START_MS, &None).unwrap();
    let built = state.build(context, vec![transfer.clone(), transfer.clone(), too_much, foreign_mint], &|_| false);
    assert_eq!(built.entries, vec![transfer.clone()]);
    let reasons: Vec<String> = built.rejected.iter().map(|(_, error)| error.to_string()).collect();
    assert!(reasons[0].contains("already on the ledger"), "{reasons:?}");
    assert!(reasons[1].contains("needs 10000000"), "{reasons:?}");
    assert!(reasons[2].contains("may not mint"), "{reasons:?}");
    // A block carrying an invalid entry is invalid as a whole.
    assert!(state.execute(context, [transfer.as_slice(), transfer.as_slice()], &|_| false).is_err());
}

/// The replay guard of an entry lasts until the entry expires, and holds the same after the state is rebuilt from
/// its pairs (a restart): a replay is refused while it lasts, and the guard's keys are gone from the state after.
#[test]
fn a_replay_guard_lasts_until_the_entry_expires_and_survives_a_rebuild() {
    let mut world = World::new();
    let mut state = State::genesis(world.genesis.clone());
    let transfer = world.entry(&Op::Transfer { from: 1, to: 2, amount: 1_000 }, START_MS, &None).unwrap();
    let envelope = Envelope::from_bytes(&transfer).unwrap();
    let id = envelope.id();
    let context = |height: u64, time_ms: u64| BlockContext { height, time_ms, proposer: world.keys[0].public() };
    let guards = |state: &State| state.pairs().filter(|(key, _)| key.ends_with(id.as_bytes())).count();

    let built = state.build(context(1, START_MS + 10), vec![transfer.clone()], &|_| false);
    assert_eq!(built.entries.len(), 1);
    state.apply(built.executed.writes, built.executed.lattice, built.executed.pairs);
    assert!(state.includes(&id));
    assert_eq!(guards(&state), 2, "the guard and its expiry index");

    let replay = state.build(context(2, START_MS + 20), vec![transfer.clone()], &|_| false);
    assert!(replay.entries.is_empty());
    assert!(matches!(replay.rejected[0].1, ledger::state::EntryError::Duplicate(_)));

    // A restart rebuilds the state from its pairs: same root, same guard.
    let rebuilt =
        State::from_pairs(world.genesis.clone(), state.pairs().map(|(k, v)| (k.into_owned(), v.into_owned())));
    assert_eq!(rebuilt.root(), state.root());
    assert!(rebuilt.includes(&id));
    let replay = rebuilt.build(context(2, START_MS + 20), vec![transfer.clone()], &|_| false);
    assert!(replay.entries.is_empty(), "a rebuilt state lets a replay through");

    // The first block at or after the entry's expiry forgets the guard.
    let empty = state.build(context(2, envelope.expires_ms), Vec::new(), &|_| false);
    state.apply(empty.executed.writes, empty.executed.lattice, empty.executed.pairs);
    assert!(!state.includes(&id));
    assert_eq!(guards(&state), 0);
    let rebuilt =
        State::from_pairs(world.genesis.clone(), state.pairs().map(|(k, v)| (k.into_owned(), v.into_owned())));
    assert!(!rebuilt.includes(&id));
    assert_eq!(rebuilt.root(), state.root());
}

/// A guild of three in which any two may spend: funded by a transfer, a spend moves tokens only once a second member
/// approves, never for an outsider, never twice, and not beyond the guild's balance (the spend then stays pending).
#[test]
fn a_guild_spends_only_with_enough_of_its_members_approvals() {
    use protocol::message::{Guild, GuildApproval, GuildSpend, guild_account};
    use protocol::types::BoundedVec;

    let mut world = World::new();
    let mut state = State::genesis(world.genesis.clone());
    let credit = TokenId::new("credit").unwrap();
    let mut height = 0;
    let mut block = |world: &mut World, state: &mut State, entries: Vec<Vec<u8>>| {
        height += 1;
        let context = BlockContext { height, time_ms: START_MS + height * 1_000, proposer: world.keys[0].public() };
        let built = state.build(context, entries, &|_| false);
        let rejected: Vec<String> = built.rejected.iter().map(|(_, error)| error.to_string()).collect();
        let events = built.executed.events.clone();
        state.apply(built.executed.writes, built.executed.lattice, built.executed.pairs);
        check_conservation(state).unwrap();
        (built.entries.len(), rejected, events)
    };
    let mut members: Vec<PublicKey> = (1..4).map(|i| world.keys[i].public()).collect();
    members.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let guild = world.sign(
        1,
        Body::Guild(Guild {
            name: Text::new("roof co-op").unwrap(),
            members: BoundedVec::new(members).unwrap(),
            threshold: 2,
        }),
        START_MS,
    );
    let account = guild_account(&guild.id());
    let fund = world.sign(
        0,
        Body::Transfer(Transfer { to: account, token: credit.clone(), amount: 300_000, memo: Text::new("").unwrap() }),
        START_MS,
    );
    let (kept, rejected, _) = block(&mut world, &mut state, vec![guild.to_bytes(), fund.to_bytes()]);
    assert_eq!((kept, rejected.len()), (2, 0), "{rejected:?}");
    let recorded = state.guild(&account).unwrap();
    assert_eq!((recorded.threshold, recorded.members.len(), recorded.created_by), (2, 3, guild.id()));
    assert_eq!(state.balance(&account, &credit), 300_000);

    let spend_to = |world: &mut World, by: usize, to: usize, amount: u64| {
        world.sign(
            by,
            Body::GuildSpend(GuildSpend {
                guild: account,
                to: world.keys[to].public(),
                token: TokenId::new("credit").unwrap(),
                amount,
                memo: Text::new("mission").unwrap(),
            }),
            START_MS,
        )
    };
    let approve = |world: &mut World, by: usize, spend: &Envelope| {
        world.sign(by, Body::GuildApproval(GuildApproval { spend: spend.id() }), START_MS).to_bytes()
    };
    // Member 1 asks for 100 credits to account 0: one approval of two, nothing moves; an outsider cannot spend.
    let spend = spend_to(&mut world, 1, 0, 100_000);
    let outsider = spend_to(&mut world, 0, 0, 100_000);
    let (kept, rejected, _) = block(&mut world, &mut state, vec![spend.to_bytes(), outsider.to_bytes()]);
    assert_eq!(kept, 1);
    assert!(rejected[0].contains("not a member"), "{rejected:?}");
    assert_eq!(state.guild_spend(&spend.id()).unwrap().approvals, 1);
    assert_eq!(state.balance(&account, &credit), 300_000);
    let before = state.balance(&world.keys[0].public(), &credit);
    // The requester cannot approve twice, an outsider not at all; a second member's approval moves the tokens.
    let twice = approve(&mut world, 1, &spend);
    let stranger = approve(&mut world, 0, &spend);
    let second = approve(&mut world, 2, &spend);
    let (kept, rejected, events) = block(&mut world, &mut state, vec![twice, stranger, second]);
    assert_eq!(kept, 1, "{rejected:?}");
    assert!(rejected[0].contains("already approved") && rejected[1].contains("not a member"), "{rejected:?}");
    assert!(events.iter().any(|event| matches!(event, Event::GuildSpent { amount: 100_000, .. })), "{events:?}");
    assert_eq!(state.balance(&account, &credit), 200_000);
    assert_eq!(state.balance(&world.keys[0].public(), &credit), before + 100_000);
    assert_eq!(state.guild_spend(&spend.id()).unwrap().status, SpendStatus::Done);
    // Done is done.
    let late = approve(&mut world, 3, &spend);
    let (_, rejected, _) = block(&mut world, &mut state, vec![late]);
    assert!(rejected[0].contains("already done"), "{rejected:?}");
    // A spend beyond the balance stays pending: the approval that would move it fails.
    let big = spend_to(&mut world, 3, 2, 250_000);
    let (kept, _, _) = block(&mut world, &mut state, vec![big.to_bytes()]);
    assert_eq!(kept, 1);
    let over = approve(&mut world, 1, &big);
    let (kept, rejected, _) = block(&mut world, &mut state, vec![over]);
    assert_eq!(kept, 0);
    assert!(rejected[0].contains("needs 250000"), "{rejected:?}");
    assert_eq!(state.guild_spend(&big.id()).unwrap().approvals, 1);
    assert_eq!(state.balance(&account, &credit), 200_000);
}

/// Entries this process has not verified are verified together in batches when a block executes: a block of good
/// entries executes, and one whose entry carries a broken signature is refused at that entry, with the signature
/// as the reason.
#[test]
fn a_block_s_unverified_entries_are_verified_together_and_a_bad_signature_is_named() {
    let mut world = World::new();
    let state = State::genesis(world.genesis.clone());
    let context = BlockContext { height: 1, time_ms: START_MS + 10, proposer: world.keys[0].public() };
    let mut entries: Vec<Vec<u8>> = (0..40)
        .map(|index| world.entry(&Op::Transfer { from: index % 4, to: (index + 1) % 4, amount: 10 }, START_MS, &None))
        .map(Option::unwrap)
        .collect();
    let executed = state.execute(context, entries.iter().map(Vec::as_slice), &|_| false).unwrap();
    assert_eq!(executed.ids.len(), 40);
    // Flip one bit of the S half of entry 23's signature (the envelope's last 32 bytes).
    let last = entries[23].len() - 1;
    entries[23][last - 5] ^= 0x01;
    let (index, error) = state.execute(context, entries.iter().map(Vec::as_slice), &|_| false).unwrap_err();
    assert_eq!(index, 23);
    assert!(error.to_string().contains("signature"), "{error}");
}

/// Every named read answers the same from a RocksDB snapshot of a commit as from the state that made it: at height
/// 0 (the genesis state, before the store holds any), after each block, and after later commits for a snapshot
/// taken before them.
#[test]
fn a_snapshot_of_the_store_reads_as_the_state_it_committed() {
    use ledger::store::{Outcome, RocksStore, Store, Stored};

    let dir = tempfile::tempdir().unwrap();
    let mut store = RocksStore::open(dir.path()).unwrap();
    let reader = store.reader();
    let mut world = World::new();
    let genesis = world.genesis.clone();
    let mut state = State::genesis(genesis.clone());
    let accounts: Vec<PublicKey> = world.keys.iter().map(Keypair::public).collect();
    let credit = TokenId::new("credit").unwrap();
    let same = |state: &State, snapshot: ledger::store::StateSnapshot<'_>| {
        let all = |kv: &dyn Kv| kv.range(&[0], &[0xff]).map(|(k, v)| (k.to_vec(), v.to_vec())).collect::<Vec<_>>();
        assert_eq!(all(&snapshot), all(state));
        assert_eq!(snapshot.balances().collect::<Vec<_>>(), state.balances().collect::<Vec<_>>());
        assert_eq!(snapshot.escrows().collect::<Vec<_>>(), state.escrows().collect::<Vec<_>>());
        assert_eq!(snapshot.validators(), state.validators());
        assert_eq!(snapshot.supply(&credit), state.supply(&credit));
        assert_eq!(snapshot.param("fee_per_entry"), state.param("fee_per_entry"));
        for account in &accounts {
            assert_eq!(snapshot.account_balances(account), state.account_balances(account));
            assert_eq!(snapshot.reputation(account), state.reputation(account));
            assert_eq!(snapshot.balances_after(Some(account)).count(), state.balances_after(Some(account)).count());
        }
        snapshot.check().unwrap();
    };
    assert_eq!(reader.snapshot(&genesis).unwrap().height(), 0);
    same(&state, reader.snapshot(&genesis).unwrap());

    let ops = [
        Op::Transfer { from: 0, to: 1, amount: 70_000 },
        Op::Trade { buyer: 1, seller: 2, quantity: 500, price: 40_000, interval: true },
        Op::Trade { buyer: 0, seller: 3, quantity: 200, price: 30_000, interval: false },
        Op::Mint { by: 0, to: 3, amount: 9_000 },
    ];
    let mut now_ms = START_MS;
    let mut first = None;
    for (index, op) in ops.iter().enumerate() {
        let height = index as u64 + 1;
        now_ms += 60_000;
        let entry = world.entry(op, now_ms, &None).unwrap();
        let context = BlockContext { height, time_ms: now_ms, proposer: accounts[0] };
        let built = state.build(context, vec![entry], &|_| false);
        assert_eq!(built.entries.len(), 1, "{:?}", built.rejected);
        let outcome = Outcome {
            entry_ids: built.executed.ids.clone(),
            events: built.executed.events.clone(),
            validators: None,
            summary: None,
        };
        let mut writes = built.executed.writes.clone();
        state.apply(built.executed.writes, built.executed.lattice, built.executed.pairs);
        if height == 1 {
            // The engine's first commit writes the genesis pairs too.
            writes = state.pairs().map(|(key, value)| (key.into_owned(), Some(value.into_owned()))).collect();
        }
        store.commit(height, &Stored { block: vec![], certificate: vec![] }, &writes, &outcome).unwrap();
        let snapshot = reader.snapshot(&genesis).unwrap();
        assert_eq!(snapshot.height(), height);
        same(&state, reader.snapshot(&genesis).unwrap());
        if height == 1 {
            first = Some((snapshot, state.clone()));
        }
    }
    // A snapshot is one commit's state: one taken after block 1 and read after block 4 still reads block 1's.
    let (snapshot_at_1, state_at_1) = first.unwrap();
    assert_ne!(state_at_1.balances().collect::<Vec<_>>(), state.balances().collect::<Vec<_>>());
    assert_eq!(snapshot_at_1.height(), 1);
    assert_eq!(snapshot_at_1.balances().collect::<Vec<_>>(), state_at_1.balances().collect::<Vec<_>>());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// A home's state on disk (issue 28, item 7: read through RocksDB, never held in memory) executes every block
    /// as one in memory does: the same writes, root and count of pairs, the same replay guards (which a state on
    /// disk reads from the store), and the same state again after the store is reopened (a restart).
    #[test]
    fn a_state_on_disk_executes_as_one_in_memory(
        blocks in proptest::collection::vec((proptest::collection::vec(op(), 1..10), 0..1_500_000u64), 1..10)
    ) {
        use ledger::store::{Outcome, Profile, RocksStore, Store, Stored};

        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open_with(dir.path(), Profile::Small).unwrap();
        let mut world = World::new();
        let mut memory = State::genesis(world.genesis.clone());
        let mut disk = State::genesis(world.genesis.clone());
        let mut now_ms = START_MS;
        let mut last: Option<Vec<u8>> = None;
        for (index, (ops, step_ms)) in blocks.into_iter().enumerate() {
            let height = index as u64 + 1;
            now_ms += 1 + step_ms;
            let candidates: Vec<Vec<u8>> = ops.iter().filter_map(|op| world.entry(op, now_ms, &last)).collect();
            if let Some(first) = candidates.first() {
                last = Some(first.clone());
            }
            let context = BlockContext { height, time_ms: now_ms, proposer: world.keys[0].public() };
            let built = memory.build(context, candidates.clone(), &|_| false);
            let executed = disk.execute(context, built.entries.iter().map(Vec::as_slice), &|_| false).unwrap();
            prop_assert_eq!(&executed.writes, &built.executed.writes);
            prop_assert_eq!(executed.state_root, built.executed.state_root);
            prop_assert_eq!(executed.pairs, built.executed.pairs);
            // A state on disk refuses what one in memory refuses, replays among them.
            let rebuilt = disk.build(context, candidates, &|_| false);
            prop_assert_eq!(&rebuilt.entries, &built.entries);
            let outcome = Outcome {
                entry_ids: executed.ids.clone(),
                events: executed.events.clone(),
                validators: None,
                summary: None,
            };
            let mut writes = executed.writes.clone();
            if height == 1 {
                // The engine's first commit writes the genesis pairs too.
                writes.extend(disk.pairs().map(|(key, value)| (key.into_owned(), Some(value.into_owned()))));
                writes.extend(executed.writes.clone());
            }
            store.commit(height, &Stored { block: vec![], certificate: vec![] }, &writes, &outcome).unwrap();
            memory.apply(built.executed.writes, built.executed.lattice, built.executed.pairs);
            disk.apply(executed.writes, executed.lattice, executed.pairs);
            if height == 1 {
                disk.spill(store.backing().unwrap());
            }
            prop_assert!(disk.is_on_disk());
            prop_assert_eq!(disk.root(), memory.root());
            prop_assert_eq!(disk.len(), memory.len());
            let all = |state: &State| state.pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect::<Vec<_>>();
            prop_assert_eq!(all(&disk), all(&memory));
            for entry in &built.entries {
                let id = Envelope::from_bytes(entry).unwrap().id();
                prop_assert!(disk.includes(&id));
            }
            prop_assert_eq!(disk.failure(), None);
        }
        drop(disk);
        drop(store);
        let store = RocksStore::open_with(dir.path(), Profile::Small).unwrap();
        let reopened = State::on_disk(world.genesis.clone(), store.backing().unwrap()).unwrap();
        prop_assert_eq!(reopened.root(), memory.root());
        prop_assert_eq!(reopened.len(), memory.len());
    }
}

/// A whole state's lattice hashed on several threads (as a restart sums it) is the one its pairs add up to one by
/// one, however many there are.
#[test]
fn a_lattice_hashed_on_several_threads_is_the_sum_of_its_pairs() {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..5_001u32)
        .map(|index| (index.to_be_bytes().to_vec(), vec![u8::try_from(index % 251).unwrap(); (index % 50) as usize]))
        .collect();
    for count in [0, 1, 1_023, 1_024, 1_025, 5_001] {
        let mut serial = Lattice::default();
        for (key, value) in &pairs[..count] {
            serial.add(key, value);
        }
        assert_eq!(Lattice::of(&pairs[..count]), serial, "{count} pairs");
    }
}
