//! Issue 31, item 3: one rule for every certificate, wherever it is checked (PROTOCOL.md §11, *Certificates*). A
//! certificate with a signature that does not verify, a signer outside the set, a signer twice or signatures out of
//! key order is invalid, even when its good signatures already weigh more than 2/3: `kos ledger verify` used to
//! accept an extra all-zero signature (or a validator's genuine signature of another block) and consensus a polka
//! padded the same way, while both refused a valid signature of a non-validator. And one rule for a block's header
//! (§10, *a block is valid when*): verify used to skip the validator set, proposer, version and time checks that
//! validators make.

use std::sync::Arc;

use ledger::consensus::PeerId;
use ledger::consensus::Signer;
use ledger::consensus::context::{Address, Height, Sig, ValidatorSet, Vote};
use ledger::consensus::engine::{Config, Effect, Engine, Verdict};
use ledger::consensus::wire::{Message, certificate_to_bytes};
use ledger::reads::*;
use ledger::state::{BlockContext, validators_hash};
use ledger::store::{MemoryStore, Stored};
use ledger::verify::Verifier;
use ledger::{Block, Genesis, Hash, Header, State};
use malachite_types::{
    CommitCertificate, CommitSignature, NilOrVal, PolkaCertificate, PolkaSignature, Round, SigningProvider, VoteType,
};
use protocol::{Keypair, NetworkId};

const START_MS: u64 = 1_767_225_600_000;
/// Four validators of power 1: any three are more than 2/3.
const SEEDS: [[u8; 32]; 4] = [[1; 32], [2; 32], [3; 32], [4; 32]];
const OUTSIDER: [u8; 32] = [5; 32];

struct Net {
    network: NetworkId,
    genesis: Arc<Genesis>,
    validators: ValidatorSet,
}

fn net() -> Net {
    let keys: Vec<_> = SEEDS.iter().map(|seed| Keypair::from_seed(seed).public()).collect();
    let text = Genesis::devnet_text("kos-certificates", START_MS, &keys, &[], 0);
    let genesis = Arc::new(Genesis::parse(&text).unwrap());
    let validators = ValidatorSet::new(State::genesis(genesis.clone()).validators());
    assert_eq!(validators.validators.len(), 4);
    Net { network: genesis.network.clone(), genesis, validators }
}

/// Block 1, valid after the genesis, with `change` applied to its header (and its state root recomputed).
fn block_1(net: &Net, change: impl FnOnce(&mut Header)) -> Block {
    let proposer = net.validators.validators[0].address.0;
    let mut header = Header {
        version: 1,
        network: net.network.clone(),
        height: 1,
        time_ms: START_MS + 1_000,
        parent: net.genesis.hash,
        proposer,
        entries_root: Hash::ZERO,
        entry_count: 0,
        state_root: Hash::ZERO,
        validators_hash: validators_hash(&net.validators.pairs()),
    };
    change(&mut header);
    let context = BlockContext { height: header.height, time_ms: header.time_ms, proposer: header.proposer };
    let executed = State::genesis(net.genesis.clone()).execute(context, Vec::<&[u8]>::new(), &|_| false).unwrap();
    header.state_root = executed.state_root;
    Block::new(header, Vec::new())
}

/// The key of the validator (or outsider) with `seed`.
fn address(seed: &[u8; 32]) -> Address {
    Address(Keypair::from_seed(seed).public())
}

/// `seed`'s signature of its vote of `vote_type` for `hash` at height 1, round 0.
fn signed(net: &Net, seed: &[u8; 32], vote_type: VoteType, hash: Hash) -> Sig {
    let vote = Vote {
        height: Height(1),
        round: Round::new(0),
        vote_type,
        value: NilOrVal::Val(hash),
        validator: address(seed),
    };
    Signer::new(net.network.clone(), seed).sign_vote(vote).signature
}

/// Signers of a certificate: (key, signature), in the order given.
type Signers = Vec<(Address, Sig)>;

/// The certificate cases, each (what, signers of a vote of `vote_type` for `hash`, good): three of four in key
/// order is the good one; every other case is invalid.
fn cases(net: &Net, vote_type: VoteType, hash: Hash) -> Vec<(&'static str, Signers, bool)> {
    let mut seeds = SEEDS.to_vec();
    seeds.sort_by_key(address);
    let sign = |seed: &[u8; 32]| (address(seed), signed(net, seed, vote_type, hash));
    let three: Signers = seeds[..3].iter().map(sign).collect();
    let fourth = address(&seeds[3]);
    let sorted = |mut signers: Signers| {
        signers.sort_by_key(|(address, _)| *address);
        signers
    };
    let zero = Sig(ed25519_dalek::Signature::from_bytes(&[0; 64]));
    let other_block = signed(net, &seeds[3], vote_type, Hash([9; 32]));
    let mut flipped = three.clone();
    let mut bytes = flipped[1].1.0.to_bytes();
    bytes[7] ^= 0x10;
    flipped[1].1 = Sig(ed25519_dalek::Signature::from_bytes(&bytes));
    let mut twice = three.clone();
    twice.insert(1, twice[0]);
    let mut reversed = three.clone();
    reversed.reverse();
    vec![
        ("three of four, in key order", three.clone(), true),
        ("padded with 64 zero bytes as the fourth's", sorted([three.clone(), vec![(fourth, zero)]].concat()), false),
        (
            "padded with the fourth's signature of another block",
            sorted([three.clone(), vec![(fourth, other_block)]].concat()),
            false,
        ),
        ("a valid signature of a key outside the set", sorted([three.clone(), vec![sign(&OUTSIDER)]].concat()), false),
        ("one of three signatures does not verify", sorted([flipped, vec![sign(&seeds[3])]].concat()), false),
        ("a validator twice", twice, false),
        ("out of key order", reversed, false),
        ("two of four", three[..2].to_vec(), false),
    ]
}

fn commit(block: &Block, signers: &Signers) -> CommitCertificate<ledger::consensus::Kos> {
    CommitCertificate {
        height: Height(1),
        round: Round::new(0),
        value_id: block.hash(),
        commit_signatures: signers.iter().map(|(address, sig)| CommitSignature::new(*address, *sig)).collect(),
    }
}

fn peer() -> PeerId {
    PeerId::from_bytes(&[0x00, 0x02, 0x6b, 0x01]).unwrap()
}

fn reports(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Misbehaved { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn syncing_engine(net: &Net) -> Engine<MemoryStore> {
    let now = START_MS + 2_000;
    let mut engine = Engine::new(net.genesis.clone(), &[8; 32], MemoryStore::new(), Config::default(), now).unwrap();
    engine.start(now);
    engine
}

#[test]
fn every_bad_commit_certificate_is_refused_by_verify_and_by_sync() {
    let net = net();
    let block = block_1(&net, |_| {});
    for (what, signers, good) in cases(&net, VoteType::Precommit, block.hash()) {
        let stored = Stored { block: block.to_bytes(), certificate: certificate_to_bytes(&commit(&block, &signers)) };
        let verified = Verifier::new(net.genesis.clone()).push(&stored);
        assert_eq!(verified.is_ok(), good, "verify, {what}: {verified:?}");
        let mut engine = syncing_engine(&net);
        let effects = engine.on_synced_block(peer(), &stored, START_MS + 2_000);
        let reported = reports(&effects);
        if good {
            assert!(reported.is_empty(), "sync, {what}: {reported:?}");
            assert_eq!(engine.tip(), (1, block.hash()), "sync, {what}");
        } else {
            assert_eq!(reported.len(), 1, "sync, {what}: {effects:?}");
            assert!(reported[0].starts_with("synced block's certificate: "), "sync, {what}: {reported:?}");
            assert_eq!(engine.tip().0, 0, "sync, {what}");
        }
    }
}

#[test]
fn every_bad_polka_certificate_is_rejected_by_consensus() {
    let net = net();
    let block = block_1(&net, |_| {});
    for (what, signers, good) in cases(&net, VoteType::Prevote, block.hash()) {
        let certificate = PolkaCertificate {
            height: Height(1),
            round: Round::new(0),
            value_id: block.hash(),
            polka_signatures: signers.iter().map(|(address, sig)| PolkaSignature::new(*address, *sig)).collect(),
        };
        let mut engine = syncing_engine(&net);
        let (verdict, _) = engine.on_message(peer(), &Message::Polka(certificate).to_bytes(), START_MS + 2_000);
        if good {
            assert_eq!(verdict, Verdict::Accept, "{what}");
        } else {
            assert!(
                matches!(&verdict, Verdict::Reject(reason) if reason.starts_with("bad polka certificate: ")),
                "{what}: {verdict:?}"
            );
        }
    }
}

type HeaderChange = Box<dyn Fn(&mut Header)>;

/// A block every validator signed but whose header breaks a rule: verify refuses it, and a node syncing it stops
/// rather than take it (more than 2/3 signed a block it cannot accept, as for a block that does not execute).
#[test]
fn a_certified_block_with_a_bad_header_is_refused_by_verify_and_stops_sync() {
    let net = net();
    let outsider = address(&OUTSIDER).0;
    let changes: Vec<(&str, HeaderChange)> = vec![
        ("validator set", Box::new(|header| header.validators_hash = Hash([7; 32]))),
        ("proposer not a validator", Box::new(move |header| header.proposer = outsider)),
        ("time not after the parent's", Box::new(|header| header.time_ms = START_MS)),
        ("network", Box::new(|header| header.network = NetworkId::new("kos-elsewhere").unwrap())),
    ];
    for (what, change) in changes {
        let block = block_1(&net, change);
        let mut seeds = SEEDS.to_vec();
        seeds.sort_by_key(address);
        let signers: Signers =
            seeds.iter().map(|seed| (address(seed), signed(&net, seed, VoteType::Precommit, block.hash()))).collect();
        let stored = Stored { block: block.to_bytes(), certificate: certificate_to_bytes(&commit(&block, &signers)) };
        let verified = Verifier::new(net.genesis.clone()).push(&stored);
        assert_eq!(verified, Err(format!("block 1: bad {what}")), "verify");
        let mut engine = syncing_engine(&net);
        let effects = engine.on_synced_block(peer(), &stored, START_MS + 2_000);
        assert_eq!(engine.tip().0, 0, "sync, {what}");
        assert!(engine.failed(), "sync, {what}");
        let fatal: Vec<&String> = effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Fatal(reason) => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(fatal, [&format!("decided block 1 breaks a rule of the chain: {what}")], "sync");
    }
}

/// A certificate holds at most one signature per validator, and a set at most 256 validators: a longer one is
/// refused when it is decoded, before any signature is checked (it used to be 1,024).
#[test]
fn a_certificate_of_more_than_256_signatures_does_not_decode() {
    use ledger::consensus::wire::certificate_from_bytes;
    let net = net();
    let block = block_1(&net, |_| {});
    let zero = Sig(ed25519_dalek::Signature::from_bytes(&[0; 64]));
    let signers = |count: u16| -> Signers {
        (0..count)
            .map(|index| {
                let mut key = [0u8; 32];
                key[..2].copy_from_slice(&index.to_be_bytes());
                (Address(protocol::PublicKey(key)), zero)
            })
            .collect()
    };
    assert!(certificate_from_bytes(&certificate_to_bytes(&commit(&block, &signers(256)))).is_ok());
    assert!(certificate_from_bytes(&certificate_to_bytes(&commit(&block, &signers(257)))).is_err());
}

/// A second valid signature of `digest` by `seed`'s key: Ed25519 with another nonce than RFC 8032's deterministic
/// one (what a Byzantine validator can make at will).
fn signed_again(seed: &[u8; 32], digest: &[u8; 32]) -> Sig {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest, Sha512};
    let wide = |bytes: &[u8]| {
        let mut out = [0u8; 64];
        out.copy_from_slice(bytes);
        Scalar::from_bytes_mod_order_wide(&out)
    };
    let expanded = Sha512::digest(seed);
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&expanded[..32]);
    secret[0] &= 248;
    secret[31] &= 127;
    secret[31] |= 64;
    let a = Scalar::from_bytes_mod_order(secret);
    let public = (ED25519_BASEPOINT_POINT * a).compress();
    let r = wide(&Sha512::digest(b"another nonce"));
    let big_r = (ED25519_BASEPOINT_POINT * r).compress();
    let k = wide(
        &Sha512::new().chain_update(big_r.as_bytes()).chain_update(public.as_bytes()).chain_update(digest).finalize(),
    );
    let s = r + k * a;
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(big_r.as_bytes());
    bytes[32..].copy_from_slice(s.as_bytes());
    Sig(ed25519_dalek::Signature::from_bytes(&bytes))
}

/// A validator's precommit signed again with another nonce is one vote. Malachite's vote keeper kept both copies,
/// then built the commit certificate naming the validator twice and stopped on its own assertion that the
/// certificate is valid: one Byzantine validator crashed every honest node of the height (and again after each
/// restart, the copies being in the WAL).
#[test]
fn a_vote_signed_again_is_one_vote_and_the_height_still_decides() {
    use ledger::consensus::context::{Proposal, proposer, vote_digest};
    use malachite_types::SignedMessage;
    let net = net();
    let block = block_1(&net, |_| {});
    let mut engine = syncing_engine(&net);
    let now = START_MS + 2_000;
    let round_proposer = proposer(&net.validators, Height(1), Round::new(0)).address;
    let seed_of = |who: Address| *SEEDS.iter().find(|seed| address(seed) == who).unwrap();
    let proposal = Proposal {
        height: Height(1),
        round: Round::new(0),
        block: block.clone(),
        pol_round: Round::Nil,
        proposer: round_proposer,
    };
    let signed = Signer::new(net.network.clone(), &seed_of(round_proposer)).sign_proposal(proposal);
    let (verdict, _) = engine.on_message(peer(), &Message::Proposal(signed).to_bytes(), now);
    assert_eq!(verdict, Verdict::Accept);
    let mut seeds = SEEDS.to_vec();
    seeds.sort_by_key(address);
    for vote_type in [VoteType::Prevote, VoteType::Precommit] {
        for seed in &seeds[..3] {
            let vote = Vote {
                height: Height(1),
                round: Round::new(0),
                vote_type,
                value: NilOrVal::Val(block.hash()),
                validator: address(seed),
            };
            let first = Signer::new(net.network.clone(), seed).sign_vote(vote.clone());
            let again = SignedMessage::new(vote.clone(), signed_again(seed, &vote_digest(&net.network, &vote).0));
            assert_ne!(again.signature, first.signature);
            let (verdict, _) = engine.on_message(peer(), &Message::Vote(first).to_bytes(), now);
            assert_eq!(verdict, Verdict::Accept, "{vote_type:?}");
            if *seed == seeds[0] {
                let (verdict, _) = engine.on_message(peer(), &Message::Vote(again).to_bytes(), now);
                assert_eq!(verdict, Verdict::Ignore("a vote already taken, signed again"));
            }
        }
    }
    assert_eq!(engine.tip(), (1, block.hash()));
    assert!(!engine.failed());
}
