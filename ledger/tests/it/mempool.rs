//! The mempool on its own: bounds (entries, bytes, per author), deduplication, entries already on the ledger,
//! priority order and eviction, expiry, and the verified-bytes set the proposer relies on.

use std::sync::Arc;

use ledger::Genesis;
use ledger::mempool::{Config, Mempool, Rejected};
use ledger::state::{BlockContext, State};
use protocol::message::{Body, Cancel, MeterSource, Reading, Transfer};
use protocol::types::{MeterId, Text, TokenId};
use protocol::{Draft, Envelope, Id, Keypair, NetworkId};

const START_MS: u64 = 1_767_225_600_000;

struct World {
    state: State,
    network: NetworkId,
    keys: Vec<Keypair>,
    nonce: u64,
}

impl World {
    fn new() -> World {
        let keys: Vec<Keypair> = (1..=4u8).map(|index| Keypair::from_seed(&[index; 32])).collect();
        let funded: Vec<_> = keys.iter().map(Keypair::public).collect();
        let text = Genesis::devnet_text("kos-mempool", START_MS, &funded[..1], &funded, 1_000_000);
        let genesis = Arc::new(Genesis::parse(&text).unwrap());
        World { state: State::genesis(genesis), network: NetworkId::new("kos-mempool").unwrap(), keys, nonce: 0 }
    }

    fn sign(&mut self, author: usize, body: Body, expires_ms: u64) -> Envelope {
        self.nonce += 1;
        Draft { network: self.network.clone(), nonce: self.nonce, created_ms: START_MS, expires_ms, body }
            .sign(&self.keys[author])
    }

    fn transfer(&mut self, author: usize, amount: u64) -> Envelope {
        let to = self.keys[(author + 1) % self.keys.len()].public();
        let body = Body::Transfer(Transfer {
            to,
            token: TokenId::new("credit").unwrap(),
            amount,
            memo: Text::new("").unwrap(),
        });
        self.sign(author, body, START_MS + 60_000)
    }

    fn cancel(&mut self, author: usize) -> Envelope {
        self.sign(author, Body::Cancel(Cancel { offer: Id([self.nonce as u8; 32]) }), START_MS + 60_000)
    }

    fn reading(&mut self, author: usize) -> Envelope {
        let body = Body::Reading(Reading {
            meter: MeterId::new("main").unwrap(),
            source: MeterSource::Simulated,
            device: Default::default(),
            interval_start_s: START_MS / 1000 - 60,
            interval_s: 60,
            import_wh: 10,
            export_wh: 0,
            generation_wh: 0,
            consumption_wh: 10,
            import_counter_wh: 10,
            export_counter_wh: 0,
        });
        self.sign(author, body, START_MS + 60_000)
    }

    /// A new transfer of `amount` from `author`, offered to the mempool.
    fn submit(&mut self, mempool: &mut Mempool, author: usize, amount: u64) -> Result<Id, Rejected> {
        let entry = self.transfer(author, amount);
        self.add(mempool, &entry)
    }

    fn add(&self, mempool: &mut Mempool, envelope: &Envelope) -> Result<Id, Rejected> {
        let bytes = envelope.to_bytes();
        let validated = protocol::validate(&bytes, &self.state.entry_config(), START_MS).unwrap();
        mempool.add_validated(bytes, validated, &self.state)
    }
}

fn ids(candidates: &[Vec<u8>]) -> Vec<Id> {
    candidates.iter().map(|bytes| Envelope::from_bytes(bytes).unwrap().id()).collect()
}

#[test]
fn duplicates_and_entries_already_on_the_ledger_are_refused() {
    let mut world = World::new();
    let mut mempool = Mempool::new(Config::default());
    let entry = world.transfer(1, 5);
    assert_eq!(world.add(&mut mempool, &entry), Ok(entry.id()));
    assert_eq!(world.add(&mut mempool, &entry), Err(Rejected::Duplicate));
    assert_eq!(mempool.len(), 1);
    assert!(mempool.verified(&entry.to_bytes()));

    // Once a block holds it, it leaves the mempool and cannot come back while it has not expired.
    let context = BlockContext { height: 1, time_ms: START_MS + 1, proposer: world.keys[0].public() };
    let bytes = entry.to_bytes();
    let executed = world.state.execute(context, [bytes.as_slice()], &|_| false).unwrap();
    world.state.apply(executed.writes, executed.lattice, executed.pairs);
    mempool.remove_all(&[entry.id()]);
    assert!(mempool.is_empty());
    assert!(!mempool.verified(&bytes), "a removed entry's bytes are no longer vouched for");
    assert_eq!(world.add(&mut mempool, &entry), Err(Rejected::Included));

    // Offers travel by gossip, not on the ledger.
    let offer = world.sign(
        1,
        Body::Offer(protocol::message::Offer {
            pool: "energy/credit/u33db/900".parse::<protocol::message::PoolId>().unwrap(),
            side: protocol::message::Side::Ask,
            quantity: 1_000,
            unit_price: 200,
            delivery_start_s: START_MS / 1000,
        }),
        START_MS + 60_000,
    );
    assert!(matches!(world.add(&mut mempool, &offer), Err(Rejected::NotAnEntry(_))));
}

#[test]
fn bounds_hold_and_a_higher_priority_entry_evicts_the_lowest() {
    let mut world = World::new();
    // Per author.
    let mut mempool = Mempool::new(Config { entries_max: 100, bytes_max: 1 << 20, per_author_max: 2 });
    world.submit(&mut mempool, 1, 1).unwrap();
    world.submit(&mut mempool, 1, 2).unwrap();
    let third = world.transfer(1, 3);
    assert_eq!(world.add(&mut mempool, &third), Err(Rejected::AuthorFull(2)));
    assert!(world.submit(&mut mempool, 2, 1).is_ok(), "another author is not held back");

    // Entries: a full mempool refuses an entry that ranks no higher than what it holds, and makes room for one
    // that ranks higher by evicting its lowest-ranked (latest) entry.
    let mut mempool = Mempool::new(Config { entries_max: 3, bytes_max: 1 << 20, per_author_max: 10 });
    let cancel_1 = world.cancel(1);
    let cancel_2 = world.cancel(2);
    let transfer = world.transfer(3, 1);
    for entry in [&cancel_1, &cancel_2, &transfer] {
        world.add(&mut mempool, entry).unwrap();
    }
    let late_cancel = world.cancel(3);
    assert_eq!(world.add(&mut mempool, &late_cancel), Err(Rejected::Full));
    let reading = world.reading(2);
    assert_eq!(world.add(&mut mempool, &reading), Ok(reading.id()));
    assert_eq!(mempool.len(), 3);
    assert!(!mempool.contains(&cancel_2.id()), "the lowest-ranked, latest entry made room");
    assert!(mempool.contains(&cancel_1.id()));
    assert!(!mempool.verified(&cancel_2.to_bytes()));

    // Bytes.
    let one = world.transfer(1, 1);
    let size = one.to_bytes().len();
    let mut mempool = Mempool::new(Config { entries_max: 100, bytes_max: 2 * size + size / 2, per_author_max: 10 });
    world.add(&mut mempool, &one).unwrap();
    world.submit(&mut mempool, 2, 1).unwrap();
    assert_eq!(world.submit(&mut mempool, 3, 1), Err(Rejected::Full));
    assert_eq!(mempool.bytes(), 2 * size);
}

#[test]
fn the_proposer_gets_readings_first_then_transfers_then_the_rest_each_in_arrival_order() {
    let mut world = World::new();
    let mut mempool = Mempool::new(Config::default());
    let cancel = world.cancel(1);
    let transfer_a = world.transfer(1, 1);
    let reading = world.reading(2);
    let transfer_b = world.transfer(2, 1);
    for entry in [&cancel, &transfer_a, &reading, &transfer_b] {
        world.add(&mut mempool, entry).unwrap();
    }
    assert_eq!(ids(&mempool.candidates(10)), vec![reading.id(), transfer_a.id(), transfer_b.id(), cancel.id()]);
    assert_eq!(ids(&mempool.candidates(2)), vec![reading.id(), transfer_a.id()]);
    // Candidates stay until a block takes them.
    assert_eq!(mempool.len(), 4);
}

#[test]
fn expired_entries_are_pruned_and_release_their_author_s_share() {
    let mut world = World::new();
    let mut mempool = Mempool::new(Config { entries_max: 100, bytes_max: 1 << 20, per_author_max: 1 });
    let short = world.sign(
        1,
        Body::Transfer(Transfer {
            to: world.keys[2].public(),
            token: TokenId::new("credit").unwrap(),
            amount: 1,
            memo: Text::new("").unwrap(),
        }),
        START_MS + 1_000,
    );
    world.add(&mut mempool, &short).unwrap();
    let long = world.transfer(1, 2);
    assert_eq!(world.add(&mut mempool, &long), Err(Rejected::AuthorFull(1)));
    assert_eq!(mempool.prune_expired(START_MS + 999), 0);
    assert_eq!(mempool.prune_expired(START_MS + 1_000), 1);
    assert!(mempool.is_empty());
    assert_eq!(mempool.bytes(), 0);
    assert_eq!(world.add(&mut mempool, &long), Ok(long.id()));
}

/// Issue 25, defect 9: the mempool admitted entries whose author could not pay the entry fee; they took places (and
/// every validator's work) only to fail in a block. An author's committed balance of the fee token must now cover
/// the fees of its waiting entries and the new one.
#[test]
fn an_author_who_cannot_pay_the_fee_is_refused() {
    let keys: Vec<Keypair> = (1..=3u8).map(|index| Keypair::from_seed(&[index; 32])).collect();
    let publics: Vec<_> = keys.iter().map(Keypair::public).collect();
    // Key 2 holds 2,500 milli-credits, key 3 nothing; each entry costs 1,000.
    let mut text = Genesis::devnet_text("kos-mempool", START_MS, &publics[..1], &publics[1..2], 2_500);
    text.push_str("\n[params]\nfee_per_entry = 1000\n");
    let genesis = Arc::new(Genesis::parse(&text).unwrap());
    let mut world =
        World { state: State::genesis(genesis), network: NetworkId::new("kos-mempool").unwrap(), keys, nonce: 0 };
    let mut mempool = Mempool::new(Config::default());
    let credit = TokenId::new("credit").unwrap();
    let broke = world.cancel(2);
    assert_eq!(
        world.add(&mut mempool, &broke),
        Err(Rejected::CannotPay { token: credit.clone(), owed: 1_000, balance: 0 })
    );
    let first = world.cancel(1);
    world.add(&mut mempool, &first).unwrap();
    let second = world.cancel(1);
    world.add(&mut mempool, &second).unwrap();
    let third = world.cancel(1);
    assert_eq!(
        world.add(&mut mempool, &third),
        Err(Rejected::CannotPay { token: credit, owed: 3_000, balance: 2_500 })
    );
    assert_eq!(mempool.len(), 2);
    // Once a waiting entry leaves (committed or pruned), the next one fits again.
    mempool.remove_all(&[second.id()]);
    assert!(world.add(&mut mempool, &third).is_ok());
}
