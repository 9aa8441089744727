//! The consensus engine driven by hand: what it does within one call, without waiting for another event.

use std::sync::Arc;

use ledger::Genesis;
use ledger::consensus::engine::{Config, Effect, Engine, Timer};
use ledger::store::MemoryStore;
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
