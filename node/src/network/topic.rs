//! Gossip topics: which messages travel where. Every topic name carries the network id and a version.
//!
//! | topic | messages |
//! |---|---|
//! | `/kos/<network>/pool/<pool-digest-hex>/1` | offers of that pool, and cancels of them |
//! | `/kos/<network>/barter/1` | barter offers |
//! | `/kos/<network>/readings/1` | meter readings |
//! | `/kos/<network>/ledger/1` | entries for the ledger: transfers, settlements, barter cycles, proposals, votes |
//! | `/kos/<network>/bundles/1` | bundles of ledger-topic entries (PROTOCOL.md §9), not envelopes |
//! | `/kos/<network>/jobs/1` | job postings and bids (ledger entries that job indexes also read) |
//! | `/kos/<network>/consensus/1` | consensus messages (proposals with their blocks, votes, certificates), not envelopes |

use protocol::message::{Body, PoolId};
use protocol::{Envelope, Id, Kind, NetworkId};

/// A kos gossip topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// One liquidity pool, by its digest.
    Pool(Id),
    Barter,
    Readings,
    Ledger,
    /// Bundles of ledger-topic entries (PROTOCOL.md §9); each entry is delivered as a message of [`Topic::Ledger`].
    Bundles,
    /// Job postings and bids.
    Jobs,
    /// Consensus messages (PROTOCOL.md §11); validated by the ledger, not by envelope rules.
    Consensus,
}

impl Topic {
    /// The pool's topic.
    pub fn pool(pool: &PoolId) -> Topic {
        Topic::Pool(pool.digest())
    }

    /// The topic's name on the wire.
    pub fn name(&self, network: &NetworkId) -> String {
        match self {
            Topic::Pool(digest) => format!("/kos/{network}/pool/{digest}/1"),
            Topic::Barter => format!("/kos/{network}/barter/1"),
            Topic::Readings => format!("/kos/{network}/readings/1"),
            Topic::Ledger => format!("/kos/{network}/ledger/1"),
            Topic::Bundles => format!("/kos/{network}/bundles/1"),
            Topic::Jobs => format!("/kos/{network}/jobs/1"),
            Topic::Consensus => format!("/kos/{network}/consensus/1"),
        }
    }

    /// Parses a topic name of `network`; `None` for anything else.
    pub fn parse(name: &str, network: &NetworkId) -> Option<Topic> {
        let rest = name.strip_prefix("/kos/")?.strip_prefix(network.as_str())?.strip_prefix('/')?;
        let rest = rest.strip_suffix("/1")?;
        match rest {
            "barter" => Some(Topic::Barter),
            "readings" => Some(Topic::Readings),
            "ledger" => Some(Topic::Ledger),
            "bundles" => Some(Topic::Bundles),
            "jobs" => Some(Topic::Jobs),
            "consensus" => Some(Topic::Consensus),
            _ => Id::from_hex(rest.strip_prefix("pool/")?).ok().map(Topic::Pool),
        }
    }

    /// The topic a message is published on. A cancel goes to the topic of the offer it cancels, which only the
    /// author's node knows: `None`.
    pub fn of(envelope: &Envelope) -> Option<Topic> {
        match &envelope.body {
            Body::Offer(offer) => Some(Topic::pool(&offer.pool)),
            Body::Cancel(_) => None,
            Body::BarterOffer(_) => Some(Topic::Barter),
            Body::Reading(_) => Some(Topic::Readings),
            Body::Transfer(_)
            | Body::Settlement(_)
            | Body::BarterCycle(_)
            | Body::Proposal(_)
            | Body::Vote(_)
            | Body::Mint(_)
            | Body::Burn(_)
            | Body::Guild(_)
            | Body::GuildSpend(_)
            | Body::GuildApproval(_)
            | Body::Asset(_)
            | Body::Alert(_)
            | Body::Report(_)
            | Body::Award(_)
            | Body::Deliver(_)
            | Body::Verdict(_)
            | Body::Dispute(_) => Some(Topic::Ledger),
            Body::Job(_) | Body::Bid(_) => Some(Topic::Jobs),
        }
    }

    /// Whether a message may travel on this topic (an offer only on its own pool's topic).
    pub fn allows(&self, envelope: &Envelope) -> bool {
        match (self, envelope.kind()) {
            (Topic::Pool(_), Kind::Cancel) => true,
            (_, Kind::Cancel) => false,
            _ => Topic::of(envelope).as_ref() == Some(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_bound_to_the_network() {
        let network = NetworkId::new("kos-devnet").unwrap();
        let pool: PoolId = "energy/credit/u33db/900".parse().unwrap();
        let topics = [
            Topic::pool(&pool),
            Topic::Barter,
            Topic::Readings,
            Topic::Ledger,
            Topic::Bundles,
            Topic::Jobs,
            Topic::Consensus,
        ];
        for topic in topics {
            let name = topic.name(&network);
            assert_eq!(Topic::parse(&name, &network), Some(topic), "{name}");
            assert_eq!(Topic::parse(&name, &NetworkId::new("kos-other").unwrap()), None);
        }
        assert_eq!(Topic::parse("/kos/kos-devnet/pool/zz/1", &network), None);
        assert_eq!(Topic::parse("/kos/kos-devnet/ledger/2", &network), None);
    }
}
