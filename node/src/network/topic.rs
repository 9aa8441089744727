//! Gossip topics: which messages travel where. Every topic name carries the network id and a version.
//!
//! | topic | messages |
//! |---|---|
//! | `/kos/<network>/pool/<pool-digest-hex>/1` | offers of that pool, and cancels of them |
//! | `/kos/<network>/pool/<barter-pool-digest-hex>/1` | barter offers of that barter pool (its cell), and cancels |
//! | `/kos/<network>/readings/1` | meter readings |
//! | `/kos/<network>/ledger/1` | ledger entries: transfers, settlements, barter cycles, proposals, votes, cancels |
//! | `/kos/<network>/bundles/1` | bundles of ledger-topic entries (PROTOCOL.md §9), not envelopes |
//! | `/kos/<network>/jobs/1` | job postings and bids (ledger entries that job indexes also read) |
//! | `/kos/<network>/consensus/1` | consensus messages (proposals with their blocks, votes, certificates), not envelopes |

use protocol::message::{Body, PoolId};
use protocol::{Envelope, Id, Kind, NetworkId};

/// A kos gossip topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// One pool or barter pool, by its digest.
    Pool(Id),
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
            Body::BarterOffer(offer) => Some(Topic::Pool(offer.pool().digest())),
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
            // A cancel travels on its offer's pool topic (to the books) and, as a ledger entry, on the ledger topic
            // (to the validators, which need not be in the pool).
            (Topic::Pool(_) | Topic::Ledger, Kind::Cancel) => true,
            (_, Kind::Cancel) => false,
            _ => Topic::of(envelope).as_ref() == Some(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barter_offer_travels_in_its_cells_barter_pool_only() {
        use protocol::message::{BarterOffer, BarterPool, Resource};
        let offer = |cell: &str| {
            let body = Body::BarterOffer(BarterOffer {
                give: Resource::Compute,
                give_quantity: 1,
                want: Resource::Memory,
                want_quantity: 1,
                cell: protocol::types::Cell::new(cell).unwrap(),
                delivery_start_s: 0,
            });
            let draft = protocol::Draft {
                network: NetworkId::new("kos-devnet").unwrap(),
                nonce: 1,
                created_ms: 0,
                expires_ms: 1,
                body,
            };
            draft.sign(&protocol::Keypair::from_seed(&[1; 32]))
        };
        let here = Topic::Pool("barter/u33db".parse::<BarterPool>().unwrap().digest());
        assert_eq!(Topic::of(&offer("u33db")), Some(here));
        assert!(here.allows(&offer("u33db")));
        assert!(!here.allows(&offer("u33dc")), "another cell's barter offer does not belong here");
        let pool: PoolId = "compute/credit/u33db/0".parse().unwrap();
        assert!(!Topic::pool(&pool).allows(&offer("u33db")), "nor in a pool of offers");
    }

    #[test]
    fn names_round_trip_and_are_bound_to_the_network() {
        let network = NetworkId::new("kos-devnet").unwrap();
        let pool: PoolId = "energy/credit/u33db/900".parse().unwrap();
        let topics = [
            Topic::pool(&pool),
            Topic::Pool("barter/u33db".parse::<protocol::message::BarterPool>().unwrap().digest()),
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
        assert_eq!(Topic::parse("/kos/kos-devnet/barter/1", &network), None, "no network-wide barter topic");
        assert_eq!(Topic::parse("/kos/kos-devnet/ledger/2", &network), None);
    }
}
