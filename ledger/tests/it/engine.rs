//! The consensus engine driven by hand: what it does within one call, without waiting for another event.

use std::sync::Arc;

use ledger::consensus::context::Sig;
use ledger::consensus::engine::{Config, Effect, Engine, Timer};
use ledger::consensus::wire::{Message, certificate_from_bytes, certificate_to_bytes};
use ledger::consensus::{PeerId, Signer};
use ledger::store::{MemoryStore, Stored};
use ledger::{Block, Genesis};
use malachite_types::{SignedMessage, SigningProvider};
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

/// A lone validator decides with its own votes, so everything that happens between "this node proposes" and "the
/// block is committed" happens inside the call that made it propose. A block it built used to sit in the engine's
/// queue until the next message or timeout (the 2 s rebroadcast): idle heights took 2 s and a lone entry 2–4 s.
#[test]
fn a_block_this_validator_builds_goes_to_consensus_in_the_same_call() {
    let seed = [7u8; 32];
    let validator = Keypair::from_seed(&seed);
    let client = Keypair::from_seed(&[9u8; 32]);
    let text = Genesis::devnet_text("kos-engine", START_MS, &[validator.public()], &[client.public()], 1_000_000);
    let genesis = Arc::new(Genesis::parse(&text).unwrap());
    let config = Config { empty_block_ms: 1_000, ..Config::default() };
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
    let entry = Draft {
        network: NetworkId::new("kos-engine").unwrap(),
        nonce: 1,
        created_ms: now,
        expires_ms: now + 60_000,
        body: Body::Transfer(Transfer {
            to: validator.public(),
            token: TokenId::new("credit").unwrap(),
            amount: 5,
            memo: Text::new("engine").unwrap(),
        }),
    }
    .sign(&client);
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
    let effects = engines[other].on_message(from, &forged.to_bytes(), now);
    assert_eq!(reports(&effects), vec![(from, "proposal with a bad signature".to_owned())], "{effects:?}");
    assert!(broadcasts(&effects).is_empty(), "{effects:?}");
    // An invalid block under a good signature is reported as an invalid block; under a bad signature, as a bad
    // signature: the signature is checked first, and the block is never executed.
    let mut header = proposal.message.block.header().clone();
    header.height = 7;
    let mut bad_block = proposal.message.clone();
    bad_block.block = Block::new(header, Vec::new());
    let signer = Signer::new(network.clone(), &seeds[proposer]);
    let signed_bad_block = signer.sign_proposal(bad_block.clone());
    let effects = engines[other].on_message(from, &Message::Proposal(signed_bad_block).to_bytes(), now);
    assert_eq!(reports(&effects), vec![(from, "invalid block proposed: height".to_owned())]);
    let unsigned_bad_block = Message::Proposal(SignedMessage::new(bad_block, proposal.signature));
    let effects = engines[other].on_message(from, &unsigned_bad_block.to_bytes(), now);
    assert_eq!(reports(&effects), vec![(from, "proposal with a bad signature".to_owned())]);
    // A well-signed proposal by a key that is not a validator.
    let outsider = Signer::new(network.clone(), &[3u8; 32]);
    let mut stranger = proposal.message.clone();
    stranger.proposer = outsider.address();
    let effects = engines[other].on_message(from, &Message::Proposal(outsider.sign_proposal(stranger)).to_bytes(), now);
    assert_eq!(
        reports(&effects),
        vec![(from, "proposal signed by a key outside this height's validator set".to_owned())]
    );

    // The genuine proposal: accepted, and answered with a prevote for it.
    let effects = engines[other].on_message(from, &Message::Proposal(proposal.clone()).to_bytes(), now);
    assert!(reports(&effects).is_empty(), "{effects:?}");
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
    let effects = engines[proposer].on_message(from_other, &forged.to_bytes(), now);
    assert_eq!(reports(&effects), vec![(from_other, "vote with a bad signature".to_owned())]);
    assert!(broadcasts(&effects).is_empty(), "a forged prevote made no polka: {effects:?}");
    let mut outsider_vote = prevote.message.clone();
    outsider_vote.validator = outsider.address();
    let effects =
        engines[proposer].on_message(from_other, &Message::Vote(outsider.sign_vote(outsider_vote)).to_bytes(), now);
    assert_eq!(
        reports(&effects),
        vec![(from_other, "vote signed by a key outside this height's validator set".to_owned())]
    );

    // The genuine votes decide the height on both validators.
    let mut inbox: Vec<(usize, Vec<u8>)> = vec![(proposer, Message::Vote(prevote).to_bytes())];
    inbox.extend(proposer_votes.into_iter().map(|bytes| (other, bytes)));
    let mut rounds = 0;
    while let Some((to, bytes)) = inbox.pop() {
        rounds += 1;
        assert!(rounds < 50, "the height does not end");
        let effects = engines[to].on_message(peer(1 - to as u8), &bytes, now);
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
