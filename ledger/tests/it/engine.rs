//! The consensus engine driven directly, one validator: what it does the moment its own block is built.

use std::sync::Arc;

use ledger::Genesis;
use ledger::consensus::engine::{Config, Effect, Engine, Timer};
use ledger::store::MemoryStore;
use protocol::message::{Body, Transfer};
use protocol::types::{Text, TokenId};
use protocol::{Draft, Keypair, NetworkId};

const GENESIS_MS: u64 = 1_767_225_600_000;

fn committed(effects: &[Effect]) -> Vec<(u64, usize)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Committed(commit) => Some((commit.height, commit.entry_ids.len())),
            _ => None,
        })
        .collect()
}

/// A proposer with an empty mempool waits `empty_block_ms` for entries. When the wait ends, or an entry arrives,
/// its block goes to the core in that same call: a lone validator decides it there and then. (The block used to
/// sit queued until the next consensus message or timeout — the 2-second rebroadcast — so an idle network took
/// 2 s a block and a lone entry 2–4 s to commit.)
#[test]
fn a_proposer_proposes_the_moment_its_wait_ends_or_an_entry_arrives() {
    let validator = Keypair::from_seed(&[7; 32]);
    let client = Keypair::from_seed(&[8; 32]);
    let text = Genesis::devnet_text("kos-engine", GENESIS_MS, &[validator.public()], &[client.public()], 1_000);
    let genesis = Arc::new(Genesis::parse(&text).unwrap());
    let config = Config { empty_block_ms: 100, ..Config::default() };
    let mut engine = Engine::new(genesis, validator.seed(), MemoryStore::new(), config, GENESIS_MS + 1).unwrap();

    // Height 1: nothing to propose yet, so the engine asks for the build timer.
    let effects = engine.start(GENESIS_MS + 1);
    assert!(effects.iter().any(|effect| matches!(effect, Effect::StartTimer(Timer::Build, 100))), "{effects:?}");
    assert!(committed(&effects).is_empty());
    // The timer fires: the empty block is proposed, voted and decided within this call.
    let effects = engine.on_timer(Timer::Build, GENESIS_MS + 101);
    assert_eq!(committed(&effects), vec![(1, 0)], "{effects:?}");
    assert_eq!(engine.height(), 2);

    // Height 2 waits for entries; one arrives and is committed at once, long before the timer.
    let entry = Draft {
        network: NetworkId::new("kos-engine").unwrap(),
        nonce: 1,
        created_ms: GENESIS_MS + 150,
        expires_ms: GENESIS_MS + 600_000,
        body: Body::Transfer(Transfer {
            to: validator.public(),
            token: TokenId::new("credit").unwrap(),
            amount: 5,
            memo: Text::new("now").unwrap(),
        }),
    }
    .sign(&client);
    let (admitted, effects) = engine.on_entry(entry.to_bytes(), GENESIS_MS + 160);
    assert_eq!(admitted.unwrap(), entry.id());
    assert_eq!(committed(&effects), vec![(2, 1)], "{effects:?}");
    assert_eq!(engine.height(), 3);
    assert!(engine.mempool().is_empty());
}
