//! Where block sync is heading (sans-IO): the height peers have committed, raised only by evidence, and lowered
//! when no peer serves what was claimed.
//!
//! - A consensus message of a later height, signed by a validator of this node's set (the engine checks it before
//!   it reports [`ledger::consensus::engine::Effect::Behind`]), proves that peers decided the heights below it.
//! - A peer answering a request for blocks from `from` with at least one block (each verified by its certificate)
//!   may say how far its ledger goes; the claim keeps the node asking until it is met or nobody serves more.
//! - A peer that claims a tip at or past `from` yet sends no block lies: an honest server sends at least one block
//!   whenever its tip reaches the height asked for. It is reported, and its claim counts for nothing.
//! - When a round of requests gets no block from any peer, nothing past this node's tip is served now: the target
//!   falls back to the tip (or to checked evidence that came while the round ran), so a claim nobody backs cannot
//!   keep the node "syncing" for ever.

/// Peers asked in one round of sync requests, at most (one after the other, until one serves blocks).
pub const PEERS_PER_ROUND_MAX: usize = 16;

/// The sync target; see the module docs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Target {
    height: u64,
    /// The height checked evidence named since the current round of requests started.
    fresh: u64,
}

impl Target {
    /// The height peers are known to have committed.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// A checked consensus message of `height`: every height below it was decided.
    pub fn behind(&mut self, height: u64) {
        let decided = height.saturating_sub(1);
        self.height = self.height.max(decided);
        self.fresh = self.fresh.max(decided);
    }

    /// A round of requests starts.
    pub fn round_started(&mut self) {
        self.fresh = 0;
    }

    /// A peer answered a request for blocks from `from`, claiming `tip` and sending `served` blocks. Returns why the
    /// peer must be penalised when its answer is a provable lie.
    pub fn answered(&mut self, from: u64, tip: u64, served: usize) -> Option<String> {
        if served == 0 {
            return (tip >= from).then(|| format!("claimed blocks up to {tip} but sent none from {from}"));
        }
        self.height = self.height.max(tip);
        None
    }

    /// A round of requests from the node at `tip` got no block from any peer: the target falls back to the tip, or
    /// to what checked evidence named while the round ran.
    pub fn nothing_served(&mut self, tip: u64) {
        self.height = tip.max(self.fresh);
    }

    /// The target while the node at `tip` is behind it.
    pub fn syncing(&self, tip: u64) -> Option<u64> {
        (self.height > tip).then_some(self.height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 25, defect 2: a sync reply's claimed tip was trusted and the target only ever rose, so one lying peer
    /// (or one forged message of height 2^64 − 1) left a node "syncing" for ever.
    #[test]
    fn a_claim_nobody_serves_does_not_keep_the_node_syncing() {
        let mut target = Target::default();
        // A checked vote of height 11: heights up to 10 were decided.
        target.behind(11);
        assert_eq!(target.syncing(3), Some(10));
        // A liar claims the end of time and sends nothing: reported, and its claim ignored.
        assert!(target.answered(4, u64::MAX, 0).is_some());
        assert_eq!(target.syncing(3), Some(10));
        // An honest peer behind this node sends nothing and claims less: no blame.
        assert_eq!(target.answered(4, 3, 0), None);
        // A peer serving blocks may raise the target with its claim...
        assert_eq!(target.answered(4, u64::MAX, 2), None);
        assert_eq!(target.syncing(5), Some(u64::MAX));
        // ...but when a round finds no peer serving anything past the tip, the target falls back to it.
        target.round_started();
        target.nothing_served(5);
        assert_eq!(target.syncing(5), None);
        // Evidence that comes while a round runs is kept for the next round.
        target.round_started();
        target.behind(12);
        target.nothing_served(5);
        assert_eq!(target.syncing(5), Some(11));
        target.round_started();
        target.nothing_served(5);
        assert_eq!(target.syncing(5), None);
        // Checked evidence of a later height starts a sync again.
        target.behind(9);
        assert_eq!(target.syncing(5), Some(8));
    }
}
