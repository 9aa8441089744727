//! The one way an offer of this node is placed, whoever makes it: the API's `POST /offers` (and `kos offer place`,
//! which calls it) and the home's trader (`meter.trade`) alike. In order:
//!
//! 1. signed with the node's one signer (the next nonce of the node's one sequence);
//! 2. checked as every receiver checks it (`protocol::validate`): nothing invalid leaves the node;
//! 3. taken into the node's market (the pool's token and rules, the account not frozen, the pool's bounds): an
//!    offer the node's own market refuses is neither announced nor gossiped;
//! 4. the pool joined (or, if the node is in it, used): its topic subscribed, the pool announced in the DHT so that
//!    strangers trading in it find this node, its providers looked up and its book fetched (`network::discovery`);
//! 5. gossiped on the pool's topic (`published` is false when no peer is in the topic yet: the offer stands in this
//!    node's book either way).
//!
//! Barter offers follow the same steps in the barter pool of their cell (the board takes them).

use std::sync::Arc;

use protocol::message::{BarterOffer, Body, Offer};
use protocol::{Envelope, Id};
use tracing::{debug, warn};

use crate::network::{self, Topic};

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

/// What placing an offer needs: the node's signer, network and market.
#[derive(Clone)]
pub struct Placer {
    pub signer: Arc<crate::signer::Signer>,
    pub network: network::Handle,
    pub market: crate::market::Handle,
}

impl Placer {
    /// Places an offer of this node, created at `created_ms`, expiring at `expires_ms` (the steps above).
    pub async fn offer(&self, offer: Offer, created_ms: u64, expires_ms: u64) -> Result<Placed, PlaceError> {
        let pool = offer.pool.clone();
        let envelope = self.signed(Body::Offer(offer), "offer", created_ms, expires_ms)?;
        self.market.place(envelope.clone()).await?;
        let topic = Topic::pool(&pool);
        let joined = match self.network.join_pool(&pool.clone().into(), false).await {
            Ok(()) => true,
            Err(problem) => {
                warn!(%pool, %problem, "not joining the pool");
                false
            }
        };
        let published = joined && self.gossip(&envelope, topic, "offer").await?;
        Ok(Placed { id: envelope.id(), envelope, published })
    }

    /// Places a barter offer of this node on its board, joins (or uses) its cell's barter pool and gossips it there.
    pub async fn barter(&self, offer: BarterOffer, created_ms: u64, expires_ms: u64) -> Result<Placed, PlaceError> {
        let pool = offer.pool();
        let envelope = self.signed(Body::BarterOffer(offer), "barter offer", created_ms, expires_ms)?;
        self.market.place_barter(envelope.clone()).await?;
        let joined = match self.network.join_pool(&pool.clone().into(), false).await {
            Ok(()) => true,
            Err(problem) => {
                warn!(%pool, %problem, "not joining the barter pool");
                false
            }
        };
        let topic = Topic::Pool(pool.digest());
        let published = joined && self.gossip(&envelope, topic, "barter offer").await?;
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
