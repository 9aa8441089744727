//! The one way an offer of this node is placed, whoever makes it: the API's `POST /offers` (and `kos offer place`,
//! which calls it) and the home's trader (`meter.trade`) alike. In order:
//!
//! 1. signed with the node's one signer (the next nonce of the node's one sequence);
//! 2. checked as every receiver checks it (`protocol::validate`): nothing invalid leaves the node;
//! 3. taken into the node's market (the pool's token and rules, the account not frozen, the pool's bounds): an
//!    offer the node's own market refuses is neither announced nor gossiped;
//! 4. the pool's topic joined and, the first time the node trades in a pool, the pool announced in the DHT (so that
//!    strangers trading in it find this node);
//! 5. gossiped on the pool's topic (`published` is false when no peer is in the topic yet: the offer stands in this
//!    node's book either way).
//!
//! Barter offers follow the same steps on the barter topic (the board takes them; no pool is announced).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use protocol::message::{BarterOffer, Body, Offer, PoolId};
use protocol::{Envelope, Id};
use tracing::{debug, info, warn};

use crate::network::{self, Topic};

/// Most pools a node serves (announces in the DHT).
pub const SERVED_POOLS_MAX: usize = 256;

/// The pools a node serves, shared by the placing of offers and the node's announce loop.
pub type ServedPools = Arc<Mutex<BTreeSet<PoolId>>>;

/// Adds a pool to the served set; `true` when it is new there (and fits).
pub fn serve_pool(pools: &ServedPools, pool: &PoolId) -> bool {
    let Ok(mut pools) = pools.lock() else { return false };
    if pools.contains(pool) || pools.len() >= SERVED_POOLS_MAX {
        return false;
    }
    pools.insert(pool.clone())
}

/// Why an offer of this node was not placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The node's signer could not hand out a nonce (its reservation on disk could not be written).
    #[error("signing with the node's key: {0}")]
    Sign(String),
    /// The signed offer is not one every receiver would accept.
    #[error("invalid {what}: {problem}")]
    Invalid { what: &'static str, problem: protocol::validate::Error },
    /// The node's market did not take it.
    #[error(transparent)]
    Refused(#[from] crate::market::Refused),
}

/// An offer that stands in this node's market.
#[derive(Debug, Clone)]
pub struct Placed {
    pub id: Id,
    pub envelope: Arc<Envelope>,
    /// Whether it was gossiped (false: nobody in the pool's topic yet).
    pub published: bool,
}

/// What placing an offer needs: the node's signer, network and market, and the pools it serves.
#[derive(Clone)]
pub struct Placer {
    pub signer: Arc<crate::signer::Signer>,
    pub network: network::Handle,
    pub market: crate::market::Handle,
    pub served_pools: ServedPools,
}

impl Placer {
    /// Places an offer of this node, created at `created_ms`, expiring at `expires_ms` (the steps above).
    pub async fn offer(&self, offer: Offer, created_ms: u64, expires_ms: u64) -> Result<Placed, PlaceError> {
        let pool = offer.pool.clone();
        let envelope = self.signed(Body::Offer(offer), "offer", created_ms, expires_ms)?;
        self.market.place(envelope.clone()).await?;
        let topic = Topic::pool(&pool);
        let joined = match self.network.subscribe(topic).await {
            Ok(()) => true,
            Err(problem) => {
                warn!(%pool, %problem, "not joining the pool's topic");
                false
            }
        };
        // A pool the node trades in for the first time is announced in the DHT, so that its peers find this node.
        if joined && serve_pool(&self.served_pools, &pool) {
            let (network, digest) = (self.network.clone(), pool.digest());
            tokio::spawn(async move {
                match network.provide(digest).await {
                    Ok(()) => info!(%pool, "serving pool (announced in the DHT)"),
                    Err(problem) => debug!(%pool, %problem, "announcing the pool in the DHT"),
                }
            });
        }
        let published = joined && self.gossip(&envelope, topic, "offer").await?;
        Ok(Placed { id: envelope.id(), envelope, published })
    }

    /// Places a barter offer of this node on its board and gossips it.
    pub async fn barter(&self, offer: BarterOffer, created_ms: u64, expires_ms: u64) -> Result<Placed, PlaceError> {
        let envelope = self.signed(Body::BarterOffer(offer), "barter offer", created_ms, expires_ms)?;
        self.market.place_barter(envelope.clone()).await?;
        let published = self.gossip(&envelope, Topic::Barter, "barter offer").await?;
        Ok(Placed { id: envelope.id(), envelope, published })
    }

    /// Signs a body and checks it as every receiver will.
    fn signed(
        &self,
        body: Body,
        what: &'static str,
        created_ms: u64,
        expires_ms: u64,
    ) -> Result<Arc<Envelope>, PlaceError> {
        let envelope = self
            .signer
            .sign(body, created_ms, expires_ms)
            .map_err(|problem| PlaceError::Sign(format!("{problem:#}")))?;
        self.network.validate(&envelope, created_ms).map_err(|problem| PlaceError::Invalid { what, problem })?;
        Ok(Arc::new(envelope))
    }

    /// Gossips a checked message: `Ok(false)` when it could not be gossiped (no peers in the topic yet).
    async fn gossip(&self, envelope: &Envelope, topic: Topic, what: &'static str) -> Result<bool, PlaceError> {
        match self.network.publish(envelope, Some(topic), envelope.created_ms).await {
            Ok(_) => Ok(true),
            Err(network::Error::Invalid(problem)) => Err(PlaceError::Invalid { what, problem }),
            Err(problem) => {
                debug!(%problem, "the {what} was not gossiped");
                Ok(false)
            }
        }
    }
}
