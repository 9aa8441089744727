//! The node's application core: what the node decides, apart from how it talks.
//!
//! - [`trader`]: the market's decisions as pure code (the books, the barter board, who settles, the period rule),
//!   driven by the market actor (the node's `market` module), its thin IO shell.
//! - [`place`]: the one way an offer of this node is placed (signed, checked, taken into the node's market, its
//!   pool joined and announced, gossiped), used by the API (and through it the CLI) and by the home's trader.
//! - The node's one clock is [`crate::clock`] and its one signer per key (one strictly increasing nonce sequence)
//!   is [`crate::signer`].

pub mod place;
pub mod trader;
