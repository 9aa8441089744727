//! Consensus: Malachite's Tendermint core with kos's types ([`context`]), byte formats ([`wire`]), the rules of a
//! valid header and certificate ([`check`]) and the sans-IO driver that connects it to the ledger state, mempool
//! and store ([`engine`]).

pub mod check;
pub mod context;
pub mod engine;
pub mod wire;

pub use context::{Address, Height, Kos, Signer, ValidatorSet};
pub use engine::{Commit, Config, Effect, Engine, Timeouts, Timer};
/// The peer ids Malachite's core names senders by (the same bytes as libp2p's).
pub use malachite_consensus::PeerId;
