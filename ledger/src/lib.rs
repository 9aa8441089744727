//! The replicated, append-only ledger: blocks of signed entries, the deterministic state machine that applies
//! them, BFT consensus (the core of Malachite, driven here without IO), the mempool and storage.
//!
//! Everything in this crate is sans-IO except [`store::RocksStore`]: the consensus [`engine`] takes inputs
//! (messages, timeouts, the time) and returns effects (messages to send, timers to set), so that seeded
//! simulations can run it under virtual time and faults.

pub mod block;
pub mod cellsim;
pub mod consensus;
pub mod genesis;
pub mod hash;
pub mod mempool;
#[cfg(feature = "sim")]
pub mod sim;
pub mod snapshot;
pub mod snapshots;
pub mod state;
pub mod store;
pub mod trust;
pub mod verify;

pub use block::{Block, Header};
pub use genesis::Genesis;
pub use hash::Hash;
pub use state::State;

/// The named reads of the state, for any [`state::Kv`] (the ledger thread's [`State`], a
/// [`store::StateSnapshot`]): `use ledger::reads::*`.
pub mod reads {
    pub use crate::state::{
        BarterReads, CellReads, CommonsReads, GovernanceReads, JobReads, Kv, TokenReads, TradeReads,
    };
}
