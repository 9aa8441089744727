//! The consensus engine driven by hand: what it does within one call, without waiting for another event.

use std::sync::Arc;

use ledger::consensus::context::Sig;
use ledger::consensus::engine::{Config, Effect, Engine, Timer, Verdict};
use ledger::consensus::wire::{Message, certificate_from_bytes, certificate_to_bytes};
use ledger::consensus::{PeerId, Signer};
use ledger::store::{MemoryStore, Stored};
use ledger::{Block, Genesis};
use malachite_types::{Round, SignedMessage, SigningProvider};
use protocol::message::{Body, Transfer};
use protocol::types::{Text, TokenId};
use protocol::{Draft, Keypair, NetworkId};

const START_MS: u64 = 1_767_225_600_000;

fn committed(effects: &[Effect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Committed(commit) => Some(commit.height),
            _ => None,
        })
        .collect()
}

fn build_timer(effects: &[Effect]) -> Option<u64> {
    effects.iter().find_map(|effect| match effect {
        Effect::StartTimer(Timer::Build, ms) => Some(*ms),
        _ => None,
    })
}

/// `from` sends `to` 5 credits, signed at `now_ms`.
fn transfer(from: &Keypair, to: &Keypair, now_ms: u64) -> protocol::Envelope {
    Draft {
        network: NetworkId::new("kos-engine").unwrap(),
        nonce: 1,
        created_ms: now_ms,
        expires_ms: now_ms + 60_000,
        body: Body::Transfer(Transfer {
            to: to.public(),
            token: TokenId::new("credit").unwrap(),
            amount: 5,
            memo: Text::new("engine").unwrap(),
        }),
    }
    .sign(from)
}

/// A network of one validator (seed 7) and a funded client (seed 9), whose empty blocks wait 1 s.
fn lone_validator() -> ([u8; 32], Keypair, Keypair, Arc<Genesis>, Config) {
    let seed = [7u8; 32];
    let validator = Keypair::from_seed(&seed);
    let client = Keypair::from_seed(&[9u8; 32]);
    let text = Genesis::devnet_text("kos-engine", START_MS, &[validator.public()], &[client.public()], 1_000_000);
    let genesis = Arc::new(Genesis::parse(&text).unwrap());
    (seed, validator, client, genesis, Config { empty_block_ms: 1_000, ..Config::default() })
}

/// A lone validator decides with its own votes, so everything that happens between "this node proposes" and "the
/// block is committed" happens inside the call that made it propose. A block it built used to sit in the engine's
/// queue until the next message or timeout (the 2 s rebroadcast): idle heights took 2 s and a lone entry 2–4 s.
#[test]
fn a_block_this_validator_builds_goes_to_consensus_in_the_same_call() {
    let (seed, validator, client, genesis, config) = lone_validator();
    let mut now = START_MS + 1_000;
    let mut engine = Engine::new(genesis, &seed, MemoryStore::new(), config, now).unwrap();

    // An empty mempool: the proposer waits for entries, then proposes an empty block when its timer fires.
    let effects = engine.start(now);
    assert_eq!(build_timer(&effects), Some(1_000), "{effects:?}");
    assert!(committed(&effects).is_empty());
    now += 1_000;
    let effects = engine.on_timer(Timer::Build, now);
    assert_eq!(committed(&effects), vec![1], "the empty block is decided in the timer's call: {effects:?}");
    assert_eq!(engine.tip().0, 1);
    // Height 2 starts at once and waits for entries again.
    assert_eq!(build_timer(&effects), Some(1_000));

    // An entry reaching the waiting proposer is proposed and committed in the call that delivered it.
    now += 10;
    let entry = transfer(&client, &validator, now);
    let (result, effects) = engine.on_entry(entry.to_bytes(), now);
    assert_eq!(result.unwrap(), entry.id());
    assert_eq!(committed(&effects), vec![2], "{effects:?}");
    let commit = effects
        .iter()
        .find_map(|effect| match effect {
            Effect::Committed(commit) => Some(commit.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(commit.entry_ids, vec![entry.id()]);
    assert!(effects.iter().any(|effect| matches!(effect, Effect::CancelTimer(Timer::Build))));
    assert!(engine.mempool().is_empty());
}

/// The messages an engine broadcast, decoded.
fn broadcasts(effects: &[Effect]) -> Vec<Message> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Broadcast(bytes) => Some(Message::from_bytes(bytes).unwrap()),
            _ => None,
        })
        .collect()
}

fn reports(effects: &[Effect]) -> Vec<(PeerId, String)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Misbehaved { peer, reason } => Some((*peer, reason.clone())),
            _ => None,
        })
        .collect()
}

fn peer(index: u8) -> PeerId {
    PeerId::from_bytes(&[0x00, 0x02, 0x6b, index]).unwrap()
}

fn flipped(signature: &Sig) -> Sig {
    let mut bytes = signature.0.to_bytes();
    bytes[7] ^= 0x10;
    Sig(ed25519_dalek::Signature::from_bytes(&bytes))
}

/// A forged vote, proposal or certificate is reported as the sending peer's misbehaviour (gossip scores it down and
/// does not relay it) and changes nothing. A proposal's signature is checked before its block is executed, so a
/// forgery cannot make validators do that work. The genuine messages still decide the height afterwards, and a
/// node syncing the block refuses forged and short certificates before the genuine one.
#[test]
fn forged_consensus_messages_are_reported_and_change_nothing() {
    let network = NetworkId::new("kos-engine").unwrap();
    let seeds = [[1u8; 32], [2u8; 32]];
    let keys: Vec<_> = seeds.iter().map(|seed| Keypair::from_seed(seed).public()).collect();
    let text = Genesis::devnet_text("kos-engine", START_MS, &keys, &[], 0);
    let genesis = Arc::new(Genesis::parse(&text).unwrap());
    let config = Config { empty_block_ms: 1_000, ..Config::default() };
    let mut now = START_MS + 1_000;
    let mut engines: Vec<Engine<MemoryStore>> = seeds
        .iter()
        .map(|seed| Engine::new(genesis.clone(), seed, MemoryStore::new(), config.clone(), now).unwrap())
        .collect();
    for engine in &mut engines {
        engine.start(now);
    }
    // Both validators are needed for a quorum; one of them proposes height 1 when its build timer fires.
    now += 1_000;
    let mut proposal = None;
    let mut proposer_votes = Vec::new();
    for (index, engine) in engines.iter_mut().enumerate() {
        for message in broadcasts(&engine.on_timer(Timer::Build, now)) {
            match message {
                Message::Proposal(signed) => proposal = Some((index, signed)),
                other => proposer_votes.push(other.to_bytes()),
            }
        }
    }
    let (proposer, proposal) = proposal.expect("a proposal at height 1");
    let other = 1 - proposer;
    let from = peer(proposer as u8);

    // A proposal with a bad signature: reported, and nothing is broadcast in answer.
    let forged = Message::Proposal(SignedMessage::new(proposal.message.clone(), flipped(&proposal.signature)));
    let (verdict, effects) = engines[other].on_message(from, &forged.to_bytes(), now);
    assert_eq!(verdict, Verdict::Reject("proposal with a bad signature".to_owned()), "{effects:?}");
    assert!(broadcasts(&effects).is_empty(), "{effects:?}");
    // An invalid block under a good signature is reported as an invalid block; under a bad signature, as a bad
    // signature: the signature is checked first, and the block is never executed. (Round 2 has the same proposer
    // as round 0 with two validators of equal power.)
    let mut header = proposal.message.block.header().clone();
    header.height = 7;
    let mut bad_block = proposal.message.clone();
    bad_block.block = Block::new(header, Vec::new());
    let signer = Signer::new(network.clone(), &seeds[proposer]);
    let unsigned_bad_block = Message::Proposal(SignedMessage::new(bad_block.clone(), proposal.signature));
    let (verdict, _) = engines[other].on_message(from, &unsigned_bad_block.to_bytes(), now);
    assert_eq!(verdict, Verdict::Reject("proposal with a bad signature".to_owned()));
    bad_block.round = Round::new(2);
    let signed_bad_block = signer.sign_proposal(bad_block);
    let (verdict, _) = engines[other].on_message(from, &Message::Proposal(signed_bad_block).to_bytes(), now);
    assert_eq!(verdict, Verdict::Reject("invalid block proposed: height".to_owned()));
    // A well-signed proposal by a key that is not a validator.
    let outsider = Signer::new(network.clone(), &[3u8; 32]);
    let mut stranger = proposal.message.clone();
    stranger.proposer = outsider.address();
    let (verdict, _) =
        engines[other].on_message(from, &Message::Proposal(outsider.sign_proposal(stranger)).to_bytes(), now);
    assert_eq!(verdict, Verdict::Reject("proposal signed by a key outside this height's validator set".to_owned()));
    // Issue 25, defect 3: a well-signed proposal by a validator that is not the round's proposer was executed.
    let not_proposer = Signer::new(network.clone(), &seeds[other]);
    let mut usurped = proposal.message.clone();
    usurped.proposer = not_proposer.address();
    let (verdict, _) =
        engines[other].on_message(from, &Message::Proposal(not_proposer.sign_proposal(usurped)).to_bytes(), now);
    assert!(
        matches!(&verdict, Verdict::Reject(reason) if reason.starts_with("proposal for round 0 from a validator that is not its proposer")),
        "{verdict:?}"
    );
    // A round too far ahead is dropped without blame (and not executed).
    let mut far = proposal.message.clone();
    far.round = Round::new(10);
    let (verdict, _) = engines[other].on_message(from, &Message::Proposal(signer.sign_proposal(far)).to_bytes(), now);
    assert_eq!(verdict, Verdict::Ignore("a proposal for a round too far ahead"));

    // The genuine proposal: accepted, and answered with a prevote for it.
    let (verdict, effects) = engines[other].on_message(from, &Message::Proposal(proposal.clone()).to_bytes(), now);
    assert_eq!(verdict, Verdict::Accept, "{effects:?}");
    // The same proposal again is dropped; another block signed by the proposer for the same round is equivocation:
    // reported, dropped, never executed.
    let (verdict, _) = engines[other].on_message(from, &Message::Proposal(proposal.clone()).to_bytes(), now);
    assert_eq!(verdict, Verdict::Ignore("a proposal already seen"));
    let mut second = proposal.message.clone();
    let mut later = second.block.header().clone();
    later.time_ms += 1;
    second.block = Block::new(later, Vec::new());
    let (verdict, second_effects) =
        engines[other].on_message(from, &Message::Proposal(signer.sign_proposal(second)).to_bytes(), now);
    assert_eq!(verdict, Verdict::Ignore("a proposer's second block for a round"));
    assert!(
        second_effects.iter().any(|effect| matches!(effect, Effect::Equivocated { height: 1, round: 0, .. })),
        "{second_effects:?}"
    );
    assert!(broadcasts(&second_effects).is_empty());
    let votes: Vec<_> = broadcasts(&effects)
        .into_iter()
        .filter_map(|message| match message {
            Message::Vote(vote) => Some(vote),
            _ => None,
        })
        .collect();
    assert_eq!(votes.len(), 1, "{effects:?}");
    let prevote = votes[0].clone();

    // The prevote with a bad signature, and the same vote signed by an outsider.
    let from_other = peer(other as u8);
    let forged = Message::Vote(SignedMessage::new(prevote.message.clone(), flipped(&prevote.signature)));
    let (verdict, effects) = engines[proposer].on_message(from_other, &forged.to_bytes(), now);
    assert_eq!(verdict, Verdict::Reject("vote with a bad signature".to_owned()));
    assert!(broadcasts(&effects).is_empty(), "a forged prevote made no polka: {effects:?}");
    let mut outsider_vote = prevote.message.clone();
    outsider_vote.validator = outsider.address();
    let (verdict, _) =
        engines[proposer].on_message(from_other, &Message::Vote(outsider.sign_vote(outsider_vote)).to_bytes(), now);
    assert_eq!(verdict, Verdict::Reject("vote signed by a key outside this height's validator set".to_owned()));

    // The genuine votes decide the height on both validators.
    let mut inbox: Vec<(usize, Vec<u8>)> = vec![(proposer, Message::Vote(prevote).to_bytes())];
    inbox.extend(proposer_votes.into_iter().map(|bytes| (other, bytes)));
    let mut rounds = 0;
    while let Some((to, bytes)) = inbox.pop() {
        rounds += 1;
        assert!(rounds < 50, "the height does not end");
        let (verdict, effects) = engines[to].on_message(peer(1 - to as u8), &bytes, now);
        assert!(matches!(verdict, Verdict::Accept | Verdict::Ignore(_)), "{verdict:?}");
        assert!(reports(&effects).is_empty(), "{effects:?}");
        for effect in effects {
            if let Effect::Broadcast(bytes) = effect {
                inbox.push((1 - to, bytes));
            }
        }
    }
    assert_eq!(engines[0].tip(), engines[1].tip());
    assert_eq!(engines[0].tip().0, 1);

    // A node syncing block 1: a forged certificate and one short of the quorum are reported; the genuine one syncs.
    let mut syncing = Engine::new(genesis.clone(), &[4u8; 32], MemoryStore::new(), config, now).unwrap();
    syncing.start(now);
    let stored = engines[0].blocks_from(1, 1, usize::MAX).pop().unwrap();
    let certificate = certificate_from_bytes(&stored.certificate).unwrap();
    let mut forged = certificate.clone();
    forged.commit_signatures[0].signature = flipped(&forged.commit_signatures[0].signature);
    let mut short = certificate.clone();
    short.commit_signatures.truncate(1);
    for bad in [forged, short] {
        let bad = Stored { block: stored.block.clone(), certificate: certificate_to_bytes(&bad) };
        let effects = syncing.on_synced_block(from, &bad, now);
        let reported = reports(&effects);
        assert_eq!(reported.len(), 1, "{effects:?}");
        assert!(reported[0].1.starts_with("synced block's certificate: "), "{reported:?}");
        assert_eq!(syncing.tip().0, 0);
    }
    let effects = syncing.on_synced_block(from, &stored, now);
    assert!(reports(&effects).is_empty(), "{effects:?}");
    assert_eq!(syncing.tip(), engines[0].tip());
}

fn behind(effects: &[Effect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Behind { height } => Some(*height),
            _ => None,
        })
        .collect()
}

/// Issue 25, defect 2: the engine reported "behind" for a message of a later height before checking who signed it,
/// and the node forwarded it: one forged vote of height 2^64 − 1 sent every node syncing towards a height that never
/// comes, for good. Only a later height's message signed by a validator of the current set, with a good signature,
/// now says the node is behind; a forgery is rejected, a signer it cannot judge is dropped without blame, and
/// messages of decided heights are not forwarded.
#[test]
fn only_a_checked_message_of_a_later_height_says_the_node_is_behind() {
    use ledger::consensus::context::{Address, Height, Vote};
    use malachite_types::{NilOrVal, VoteType};
    let network = NetworkId::new("kos-engine").unwrap();
    let seed = [1u8; 32];
    let key = Keypair::from_seed(&seed).public();
    let text = Genesis::devnet_text("kos-engine", START_MS, &[key, Keypair::from_seed(&[2; 32]).public()], &[], 0);
    let genesis = Arc::new(Genesis::parse(&text).unwrap());
    let now = START_MS + 1_000;
    let mut engine = Engine::new(genesis, &[5u8; 32], MemoryStore::new(), Config::default(), now).unwrap();
    let _ = engine.start(now);
    let validator = Signer::new(network.clone(), &seed);
    let vote = |height: u64| Vote {
        height: Height(height),
        round: Round::new(0),
        vote_type: VoteType::Precommit,
        value: NilOrVal::Nil,
        validator: Address(key),
    };
    let from = peer(1);

    // A forged vote at the end of time: rejected, and no sync.
    let genuine = validator.sign_vote(vote(u64::MAX));
    let forged = Message::Vote(SignedMessage::new(genuine.message.clone(), flipped(&genuine.signature)));
    let (verdict, effects) = engine.on_message(from, &forged.to_bytes(), now);
    assert!(matches!(verdict, Verdict::Reject(_)), "{verdict:?}");
    assert!(behind(&effects).is_empty(), "a forged vote moved the sync target: {effects:?}");
    // The same height signed by a key outside the set: dropped without blame, no sync.
    let outsider = Signer::new(network.clone(), &[3u8; 32]);
    let mut stranger = vote(u64::MAX);
    stranger.validator = outsider.address();
    let (verdict, effects) = engine.on_message(from, &Message::Vote(outsider.sign_vote(stranger)).to_bytes(), now);
    assert!(matches!(verdict, Verdict::Ignore(_)), "{verdict:?}");
    assert!(behind(&effects).is_empty());
    assert_eq!(engine.future_messages(), 0);

    // A validator's genuine vote of height 3: the node is behind, and the vote waits for its height.
    let (verdict, effects) = engine.on_message(from, &Message::Vote(validator.sign_vote(vote(3))).to_bytes(), now);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(behind(&effects), vec![3]);
    assert_eq!(engine.future_messages(), 1);
    // A genuine vote far ahead says so too, but is not held.
    let (verdict, effects) = engine.on_message(from, &Message::Vote(validator.sign_vote(vote(1_000))).to_bytes(), now);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(behind(&effects), vec![1_000]);
    assert_eq!(engine.future_messages(), 1);

    // A vote of a decided height (0 here): not forwarded, no blame.
    let (verdict, _) = engine.on_message(from, &Message::Vote(validator.sign_vote(vote(0))).to_bytes(), now);
    assert!(matches!(verdict, Verdict::Ignore(_)), "{verdict:?}");
}

/// Issue 28, item 7: a home's engine (the small storage profile) keeps the ledger's state in RocksDB and reads it
/// through. The genesis state is in memory until block 1 writes it to the store; from then on the state is on
/// disk, a block's entries execute against it, the mempool's replay check reads it, and a restart opens it again
/// (summing its lattice from the store) at the same root.
#[test]
fn a_home_s_engine_keeps_its_state_in_rocksdb() {
    use ledger::reads::*;
    use ledger::store::{Profile, RocksStore, Store};

    let dir = tempfile::tempdir().unwrap();
    let (seed, validator, client, genesis, config) = lone_validator();
    let credit = TokenId::new("credit").unwrap();
    let mut now = START_MS + 1_000;
    let store = RocksStore::open_with(dir.path(), Profile::Small).unwrap();
    let mut engine = Engine::new(genesis.clone(), &seed, store, config.clone(), now).unwrap();
    assert!(!engine.state().is_on_disk(), "the genesis state is in memory until block 1 writes it");
    engine.start(now);
    now += 1_000;
    assert_eq!(committed(&engine.on_timer(Timer::Build, now)), vec![1]);
    assert!(engine.state().is_on_disk());

    now += 10;
    let entry = transfer(&client, &validator, now);
    let (result, effects) = engine.on_entry(entry.to_bytes(), now);
    assert_eq!(result.unwrap(), entry.id());
    assert_eq!(committed(&effects), vec![2]);
    let state = engine.state();
    assert_eq!(state.balance(&validator.public(), &credit), 5);
    assert!(state.includes(&entry.id()));
    assert_eq!(state.failure(), None);
    assert_eq!(state.len(), engine.store().state().unwrap().len());
    // The replay check reads the guard from the store.
    let (replayed, _) = engine.on_entry(entry.to_bytes(), now + 10);
    assert!(replayed.is_err(), "a replay was taken");
    let root = engine.state().root();
    drop(engine);

    let store = RocksStore::open_with(dir.path(), Profile::Small).unwrap();
    let engine = Engine::new(genesis, &seed, store, config, now + 100).unwrap();
    assert!(engine.state().is_on_disk());
    assert_eq!(engine.tip().0, 2);
    assert_eq!(engine.state().root(), root);
    assert_eq!(engine.state().balance(&validator.public(), &credit), 5);
}

/// Issue 28, restart after `kill -9`: a restart does not sum the whole state. Each commit keeps the state's lattice
/// and number of pairs with its block; the engine opens from them when they match the tip's state root, and the
/// pairs are checked against them after the start (`RocksReader::verify_state`). Here a pair changed behind the
/// store's back (a damaged database): the engine still opens at the tip's root — before, it summed the pairs at the
/// open and refused — and the check after the start finds the damage; for both storage profiles.
#[test]
fn a_restart_takes_the_state_s_summary_and_checks_the_pairs_after() {
    use ledger::store::{Profile, RocksStore, Store};

    for profile in [Profile::Standard, Profile::Small] {
        let dir = tempfile::tempdir().unwrap();
        let (seed, validator, client, genesis, config) = lone_validator();
        let mut now = START_MS + 1_000;
        let store = RocksStore::open_with(dir.path(), profile).unwrap();
        let mut engine = Engine::new(genesis.clone(), &seed, store, config.clone(), now).unwrap();
        engine.start(now);
        now += 1_000;
        assert_eq!(committed(&engine.on_timer(Timer::Build, now)), vec![1]);
        now += 10;
        let (result, effects) = engine.on_entry(transfer(&client, &validator, now).to_bytes(), now);
        result.unwrap();
        assert_eq!(committed(&effects), vec![2]);
        let (root, pairs) = (engine.state().root(), engine.state().len() as u64);
        drop(engine);

        let store = RocksStore::open_with(dir.path(), profile).unwrap();
        let summary = store.summary().unwrap().map(|(height, lattice, count)| (height, lattice.root(), count));
        assert_eq!(summary, Some((2, root, pairs)), "{profile:?}");
        assert_eq!(
            store.reader().verify_state(&std::sync::atomic::AtomicBool::new(false)).unwrap(),
            Some(2),
            "{profile:?}"
        );
        drop(store);

        // The validator's balance changed behind the store's back.
        let path = dir.path();
        {
            let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), path).unwrap();
            let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), path, &families).unwrap();
            let key = [&b"b"[..], validator.public().as_bytes(), b"credit"].concat();
            let state = db.cf_handle("state").unwrap();
            assert!(db.get_cf(state, &key).unwrap().is_some(), "the balance's key");
            db.put_cf(state, &key, protocol::codec::encode(&999u64)).unwrap();
        }
        let store = RocksStore::open_with(path, profile).unwrap();
        let reader = store.reader();
        let engine = Engine::new(genesis, &seed, store, config, now + 100).unwrap();
        assert_eq!(engine.state().root(), root, "{profile:?}: opened from the summary");
        let error = reader.verify_state(&std::sync::atomic::AtomicBool::new(false)).unwrap_err().to_string();
        assert!(error.contains("damaged"), "{profile:?}: {error}");
    }
}
