//! kos market: liquidity pools, order books and matching mechanisms. Not built yet: see issue 6.
