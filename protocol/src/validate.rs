//! Stateless validation of a message from the network: everything that can be checked from its bytes, the
//! receiver's network id and the receiver's clock. Stateful checks (replayed nonces, balances, fills) belong to the
//! node and the ledger.
//!
//! Order of checks, cheapest first: size, encoding, version, network, times, body, signature. A nested signed
//! message (the offers inside a settlement, the barter offers of a cycle) passes the same checks, with the outer
//! message's `created_ms` as its clock and strict signature verification.

use crate::codec;
use crate::envelope::{Envelope, VERSION, message_id_from_canonical, signing_digest};
use crate::keys::{self, Item, SignatureError};
use crate::limits::{
    COMPUTE_ROUNDS_MAX, COMPUTE_SAMPLES_MAX, COMPUTE_UNITS_MAX, DELIVERY_HORIZON_SECONDS_MAX, ENVELOPE_BYTES_MAX,
    INTERVAL_SECONDS_MAX,
};
use crate::message::{
    BARTER_ENERGY_INTERVAL_S, BarterCycle, BarterOffer, Body, Evidence, Job, JobKind, Kind, Offer, Proof, Proposal,
    Resource, Settlement, Side, value_milli,
};
use crate::types::{Id, NetworkId};

/// The receiver's settings for stateless validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The network this node is on.
    pub network: NetworkId,
    /// How far a message's `created_ms` may be ahead of the receiver's clock.
    pub clock_skew_ms_max: u64,
    /// The longest lifetime (`expires_ms - created_ms`) a message may ask for.
    pub lifetime_ms_max: u64,
    /// The largest envelope accepted; at most [`ENVELOPE_BYTES_MAX`].
    pub envelope_bytes_max: usize,
}

impl Config {
    /// Default skew: 30 s, what NTP-less home devices usually stay within.
    pub const CLOCK_SKEW_MS_MAX_DEFAULT: u64 = 30_000;
    /// Default lifetime: 7 days, enough for day-ahead and week-ahead offers.
    pub const LIFETIME_MS_MAX_DEFAULT: u64 = 7 * 24 * 3600 * 1000;

    /// The defaults for a network.
    pub fn new(network: NetworkId) -> Config {
        Config {
            network,
            clock_skew_ms_max: Self::CLOCK_SKEW_MS_MAX_DEFAULT,
            lifetime_ms_max: Self::LIFETIME_MS_MAX_DEFAULT,
            envelope_bytes_max: ENVELOPE_BYTES_MAX,
        }
    }
}

/// Why a message is invalid. Each variant is one rule of PROTOCOL.md.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("message of {bytes} bytes exceeds the limit of {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(codec::Error),
    #[error("unsupported envelope version {version}; this node speaks version {VERSION}")]
    UnsupportedVersion { version: u8 },
    #[error("message is for network {found}, this node is on {expected}")]
    WrongNetwork { expected: NetworkId, found: NetworkId },
    #[error("message expires ({expires_ms}) before it was created ({created_ms})")]
    ExpiresBeforeCreated { created_ms: u64, expires_ms: u64 },
    #[error("message lifetime of {lifetime_ms} ms exceeds the limit of {max} ms")]
    LifetimeTooLong { lifetime_ms: u64, max: u64 },
    #[error("message created at {created_ms}, more than {skew_ms_max} ms after now ({now_ms}): clock skew")]
    FromFuture { created_ms: u64, now_ms: u64, skew_ms_max: u64 },
    #[error("message expired at {expires_ms}, now is {now_ms}")]
    Expired { expires_ms: u64, now_ms: u64 },
    #[error("invalid {kind} body: {reason}")]
    InvalidBody { kind: Kind, reason: String },
    #[error("invalid {role} inside the {kind}: {source}")]
    InvalidInner { kind: Kind, role: &'static str, source: Box<Error> },
    #[error("bad signature: {0}")]
    BadSignature(SignatureError),
}

impl From<codec::Error> for Error {
    fn from(error: codec::Error) -> Error {
        match error {
            codec::Error::TooLarge { bytes, max } => Error::TooLarge { bytes, max },
            other => Error::Malformed(other),
        }
    }
}

/// A message that passed stateless validation, with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub envelope: Envelope,
    pub id: Id,
}

/// Validates one message from its bytes at the receiver's time `now_ms`.
pub fn validate(bytes: &[u8], config: &Config, now_ms: u64) -> Result<Validated, Error> {
    let (envelope, id) = check_unsigned(bytes, config, now_ms)?;
    verify_signature(&envelope, &id).map_err(Error::BadSignature)?;
    Ok(Validated { envelope, id })
}

/// Every check of [`validate`] but the outer signature, for bytes whose signature this process has already verified
/// (a caller keeps them keyed by a hash of the exact bytes): e.g. a block's entries that came through the mempool,
/// checked again at the block's time.
pub fn revalidate(bytes: &[u8], config: &Config, now_ms: u64) -> Result<Validated, Error> {
    let (envelope, id) = check_unsigned(bytes, config, now_ms)?;
    Ok(Validated { envelope, id })
}

/// Validates many messages, verifying their outer signatures together ([`keys::verify_batch`]).
/// Returns one result per message, in order, each equal to what [`validate`] returns for it (the batch equation and
/// single verification give the same verdicts; PROTOCOL.md §3).
pub fn validate_batch(messages: &[&[u8]], config: &Config, now_ms: u64) -> Vec<Result<Validated, Error>> {
    let checked: Vec<Result<(Envelope, Id), Error>> =
        messages.iter().map(|bytes| check_unsigned(bytes, config, now_ms)).collect();
    let digests: Vec<Option<[u8; 32]>> = checked
        .iter()
        .map(|result| result.as_ref().ok().map(|(envelope, id)| signing_digest(&envelope.network, id)))
        .collect();
    let items: Vec<Item<'_>> = checked
        .iter()
        .zip(&digests)
        .filter_map(|(result, digest)| {
            let (envelope, _) = result.as_ref().ok()?;
            Some(Item { key: &envelope.author, digest: digest.as_ref()?, signature: &envelope.signature })
        })
        .collect();
    let mut verdicts = keys::verify_batch(&items).into_iter();
    checked
        .into_iter()
        .map(|result| {
            let (envelope, id) = result?;
            match verdicts.next() {
                Some(Ok(())) => Ok(Validated { envelope, id }),
                Some(Err(error)) => Err(Error::BadSignature(error)),
                None => Err(Error::BadSignature(SignatureError::Mismatch)),
            }
        })
        .collect()
}

/// Every check but the outer signature: returns the envelope and its id.
fn check_unsigned(bytes: &[u8], config: &Config, now_ms: u64) -> Result<(Envelope, Id), Error> {
    let bytes_max = config.envelope_bytes_max.min(ENVELOPE_BYTES_MAX);
    let envelope: Envelope = codec::decode(bytes, bytes_max)?;
    let id = message_id_from_canonical(envelope.kind(), bytes);
    check_fields(&envelope, config, now_ms, Depth::Outer)?;
    Ok((envelope, id))
}

fn verify_signature(envelope: &Envelope, id: &Id) -> Result<(), SignatureError> {
    keys::verify(&envelope.author, &signing_digest(&envelope.network, id), &envelope.signature)
}

/// Whether a message came on its own or nested in another (the offers of a settlement, the legs of a cycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    Outer,
    Nested,
}

fn check_fields(envelope: &Envelope, config: &Config, now_ms: u64, depth: Depth) -> Result<(), Error> {
    if envelope.version != VERSION {
        return Err(Error::UnsupportedVersion { version: envelope.version });
    }
    if envelope.network != config.network {
        return Err(Error::WrongNetwork { expected: config.network.clone(), found: envelope.network.clone() });
    }
    check_times(envelope, config, now_ms)?;
    check_body(envelope, config, depth)
}

fn check_times(envelope: &Envelope, config: &Config, now_ms: u64) -> Result<(), Error> {
    let (created_ms, expires_ms) = (envelope.created_ms, envelope.expires_ms);
    let lifetime_ms = expires_ms
        .checked_sub(created_ms)
        .filter(|lifetime| *lifetime > 0)
        .ok_or(Error::ExpiresBeforeCreated { created_ms, expires_ms })?;
    if lifetime_ms > config.lifetime_ms_max {
        return Err(Error::LifetimeTooLong { lifetime_ms, max: config.lifetime_ms_max });
    }
    if created_ms > now_ms.saturating_add(config.clock_skew_ms_max) {
        return Err(Error::FromFuture { created_ms, now_ms, skew_ms_max: config.clock_skew_ms_max });
    }
    if now_ms >= expires_ms {
        return Err(Error::Expired { expires_ms, now_ms });
    }
    Ok(())
}

fn body_error(kind: Kind, reason: impl Into<String>) -> Error {
    Error::InvalidBody { kind, reason: reason.into() }
}

fn check_body(envelope: &Envelope, config: &Config, depth: Depth) -> Result<(), Error> {
    let kind = envelope.kind();
    let ensure = |condition: bool, reason: &str| if condition { Ok(()) } else { Err(body_error(kind, reason)) };
    match &envelope.body {
        // The delivery rule keeps offers that cannot trade out of pools: it applies to an offer that travels on its
        // own, not to one a settlement or cycle carries (what the ledger settles is bound by the offer's signature).
        Body::Offer(offer) => check_offer(offer)
            .and_then(|()| match depth {
                Depth::Outer => check_delivery(offer, envelope.created_ms, envelope.expires_ms),
                Depth::Nested => Ok(()),
            })
            .map_err(|reason| body_error(kind, reason)),
        Body::Cancel(_) | Body::Vote(_) | Body::GuildApproval(_) => Ok(()),
        Body::Guild(guild) => {
            ensure(!guild.name.as_str().trim().is_empty(), "empty name")?;
            let members = guild.members.as_slice();
            ensure(
                members.windows(2).all(|pair| pair[0].as_bytes() < pair[1].as_bytes()),
                "members not in strictly increasing order",
            )?;
            ensure(
                guild.threshold >= 1 && guild.threshold as usize <= members.len(),
                "threshold not between 1 and the number of members",
            )
        }
        Body::Asset(asset) => {
            ensure(!asset.purpose.as_str().trim().is_empty(), "empty purpose")?;
            let meters = asset.meters.as_slice();
            ensure(meters.iter().enumerate().all(|(i, meter)| !meters[..i].contains(meter)), "a meter is named twice")?;
            if asset.kind == crate::message::AssetKind::Feeder {
                ensure(meters.len() == 1, "a feeder names exactly one meter")?;
                ensure(!asset.cell.as_str().is_empty(), "a feeder names its cell")?;
            }
            Ok(())
        }
        Body::GuildSpend(spend) => {
            ensure(spend.amount > 0, "amount is 0")?;
            ensure(spend.to != spend.guild, "spend to the guild itself")
        }
        Body::Reading(reading) => {
            ensure(reading.interval_s > 0 && reading.interval_s <= INTERVAL_SECONDS_MAX, "interval_s out of range")?;
            ensure(
                reading.interval_start_s.is_multiple_of(u64::from(reading.interval_s)),
                "interval_start_s is not a multiple of interval_s",
            )?;
            crate::message::check_attestation(&envelope.network, &envelope.author, reading)
                .map_err(|error| body_error(kind, format!("device attestation: {error}")))
        }
        Body::Transfer(transfer) => {
            ensure(transfer.amount > 0, "amount is 0")?;
            ensure(transfer.to != envelope.author, "transfer to the author itself")
        }
        Body::Mint(mint) => ensure(mint.amount > 0, "amount is 0"),
        Body::Burn(burn) => ensure(burn.amount > 0, "amount is 0"),
        Body::Settlement(settlement) => check_settlement(envelope, settlement, config),
        Body::BarterOffer(offer) => check_barter_offer(offer)
            .and_then(|()| check_barter_delivery(offer, envelope.created_ms, envelope.expires_ms))
            .map_err(|reason| body_error(kind, reason)),
        Body::BarterCycle(cycle) => check_barter_cycle(envelope, cycle, config),
        Body::Proposal(proposal) => check_proposal(proposal).map_err(|reason| body_error(kind, reason)),
        Body::Alert(alert) => {
            ensure(alert.interval_start_s > 0, "interval_start_s is 0")?;
            ensure(
                alert.rule != crate::message::AlertRule::Implausible,
                "implausible generation is the ledger's to raise",
            )
        }
        Body::Job(job) => check_job(job).map_err(|reason| body_error(kind, reason)),
        Body::Bid(bid) => ensure(bid.collateral.checked_add(bid.price).is_some(), "price + collateral overflows"),
        Body::Award(_) | Body::Verdict(_) => Ok(()),
        Body::Dispute(dispute) => ensure(!dispute.text.as_str().trim().is_empty(), "empty text"),
        Body::Deliver(deliver) => match &deliver.proof {
            Proof::Reading(reading) => {
                check_inner(envelope, reading, "reading", config)?;
                ensure(matches!(reading.body, Body::Reading(_)), "the attached message is not a reading")
            }
            Proof::Openings(openings) => ensure(
                openings.as_slice().iter().all(|opening| opening.index < COMPUTE_UNITS_MAX),
                "an opening's index is out of range",
            ),
            Proof::Claim(_) | Proof::Meter(_) | Proof::Result(_) => Ok(()),
        },
        Body::Report(report) => {
            ensure(!report.text.as_str().trim().is_empty(), "empty text")?;
            if let Some(reading) = report.reading.as_slice().first() {
                check_inner(envelope, reading, "reading", config)?;
                ensure(matches!(reading.body, Body::Reading(_)), "the attached message is not a reading")?;
                ensure(reading.author == envelope.author, "the attached reading is someone else's")?;
            }
            Ok(())
        }
    }
}

fn check_offer(offer: &Offer) -> Result<(), &'static str> {
    let interval_s = offer.pool.interval_s;
    if offer.quantity == 0 {
        return Err("quantity is 0");
    }
    if value_milli(offer.quantity, offer.unit_price).is_none() {
        return Err("quantity * unit_price overflows 64 bits");
    }
    if interval_s > INTERVAL_SECONDS_MAX {
        return Err("pool interval_s out of range");
    }
    match interval_s {
        0 if offer.delivery_start_s != 0 => Err("continuous pool with a delivery_start_s"),
        0 => Ok(()),
        _ if !offer.delivery_start_s.is_multiple_of(u64::from(interval_s)) => {
            Err("delivery_start_s is not a multiple of the pool's interval_s")
        }
        _ => Ok(()),
    }
}

/// The delivery rule of an offer in an interval pool (PROTOCOL.md §5, Offer): its delivery starts no later than the
/// offer expires (an offer that expires before its interval can never be delivered, yet would hold a place in the
/// pool until the interval's auction) and at most [`DELIVERY_HORIZON_SECONDS_MAX`] after the offer was created.
/// Checked at the gossip door (stateless validation) and by the market before an offer takes a place in a pool.
pub fn check_delivery(offer: &Offer, created_ms: u64, expires_ms: u64) -> Result<(), &'static str> {
    if offer.pool.interval_s == 0 {
        return Ok(());
    }
    if offer.delivery_start_s > (created_ms / 1000).saturating_add(DELIVERY_HORIZON_SECONDS_MAX) {
        return Err("delivery starts beyond the horizon of 7 days after the offer's creation");
    }
    if offer.delivery_start_s.saturating_mul(1000) > expires_ms {
        return Err("delivery starts after the offer expires");
    }
    Ok(())
}

/// The lifetime a client gives an offer when its user names none: 15 minutes, or until its delivery starts when that
/// is later (so that it obeys [`check_delivery`]), and at most the default longest lifetime receivers accept.
pub fn default_offer_lifetime_ms(delivery_start_s: u64, created_ms: u64) -> u64 {
    let until_delivery_ms = delivery_start_s.saturating_mul(1000).saturating_sub(created_ms);
    until_delivery_ms.clamp(15 * 60 * 1000, Config::LIFETIME_MS_MAX_DEFAULT)
}

fn check_barter_offer(offer: &BarterOffer) -> Result<(), &'static str> {
    if offer.give_quantity == 0 || offer.want_quantity == 0 {
        return Err("a quantity is 0");
    }
    if offer.give == offer.want {
        return Err("gives and wants the same resource");
    }
    if offer.give == Resource::Energy || offer.want == Resource::Energy {
        if offer.delivery_start_s == 0 || !offer.delivery_start_s.is_multiple_of(BARTER_ENERGY_INTERVAL_S) {
            return Err("energy's delivery_start_s is not a multiple of 900 above 0");
        }
    } else if offer.delivery_start_s != 0 {
        return Err("delivery_start_s is not 0 in an offer without energy");
    }
    Ok(())
}

/// The delivery rule of a barter offer with energy (PROTOCOL.md §5, BarterOffer): as [`check_delivery`]'s for an
/// offer, its interval starts no later than the offer expires and at most 7 days after its creation.
fn check_barter_delivery(offer: &BarterOffer, created_ms: u64, expires_ms: u64) -> Result<(), &'static str> {
    if offer.delivery_start_s == 0 {
        return Ok(());
    }
    if offer.delivery_start_s > (created_ms / 1000).saturating_add(DELIVERY_HORIZON_SECONDS_MAX) {
        return Err("delivery starts beyond the horizon of 7 days after the offer's creation");
    }
    if offer.delivery_start_s.saturating_mul(1000) > expires_ms {
        return Err("delivery starts after the offer expires");
    }
    Ok(())
}

/// The form of a job posting (what the ledger checks against its state is in `ledger::state`).
pub fn check_job(job: &Job) -> Result<(), &'static str> {
    if job.title.as_str().trim().is_empty() {
        return Err("empty title");
    }
    if job.reward == 0 {
        return Err("reward is 0");
    }
    if job.reward.checked_add(job.collateral).is_none() {
        return Err("reward + collateral overflows");
    }
    if job.slash_ppm > 1_000_000 {
        return Err("slash_ppm above 1000000");
    }
    if job.bids_until_ms >= job.deadline_ms {
        return Err("bids_until_ms is not before deadline_ms");
    }
    if job.needs.as_slice().iter().any(|need| need.quantity == 0 || need.hours == 0) {
        return Err("a need has no quantity or no hours");
    }
    let skills = job.skills.as_slice();
    if skills.iter().enumerate().any(|(i, skill)| skills[..i].contains(skill)) {
        return Err("a skill is named twice");
    }
    match &job.evidence {
        Evidence::Compute(task) => {
            if job.kind != JobKind::Compute {
                return Err("compute evidence on a job that is not a compute job");
            }
            if task.units == 0 || task.units > COMPUTE_UNITS_MAX {
                return Err("compute units out of range");
            }
            if task.rounds == 0 || task.rounds > COMPUTE_ROUNDS_MAX {
                return Err("compute rounds out of range");
            }
            if task.samples == 0 || task.samples as usize > COMPUTE_SAMPLES_MAX {
                return Err("compute samples out of range");
            }
        }
        Evidence::Energy(0) => return Err("energy evidence of 0 Wh"),
        _ => {}
    }
    Ok(())
}

fn check_proposal(proposal: &Proposal) -> Result<(), &'static str> {
    if proposal.title.as_str().trim().is_empty() {
        return Err("empty title");
    }
    if proposal.voting_period_blocks == 0 {
        return Err("voting_period_blocks is 0");
    }
    use crate::message::Action;
    match &proposal.action {
        Action::AddValidator(add) if add.power == 0 => return Err("validator power is 0"),
        Action::Upgrade(upgrade) if upgrade.version < 2 => return Err("an upgrade's version is below 2"),
        Action::Upgrade(upgrade) if upgrade.height == 0 => return Err("an upgrade's height is 0"),
        Action::Override(measure) | Action::Emergency(measure) if measure.duration_blocks == 0 => {
            return Err("override duration_blocks is 0");
        }
        Action::PoolFee(fee) if fee.fee_per_kwh > 0 && fee.fee_ppm > 0 => {
            return Err("a pool fee is a constant or a share, not both");
        }
        Action::PoolFee(fee) if fee.fee_ppm > 10_000_000 => return Err("fee_ppm above 10000000"),
        Action::Quest(job) => check_job(job)?,
        Action::IssuanceRule(rule)
            if !rule.issuers.as_slice().windows(2).all(|pair| pair[0].as_bytes() < pair[1].as_bytes()) =>
        {
            return Err("issuers not in strictly increasing order");
        }
        _ => {}
    }
    Ok(())
}

/// Validates a signed message nested in `outer`, at the outer message's creation time, with strict signatures.
fn check_inner(outer: &Envelope, inner: &Envelope, role: &'static str, config: &Config) -> Result<Id, Error> {
    let wrap = |source: Error| Error::InvalidInner { kind: outer.kind(), role, source: Box::new(source) };
    if matches!(inner.body, Body::Settlement(_) | Body::BarterCycle(_)) {
        return Err(wrap(body_error(inner.kind(), "a nested message may not nest messages")));
    }
    check_fields(inner, config, outer.created_ms, Depth::Nested).map_err(wrap)?;
    let id = inner.id();
    verify_signature(inner, &id).map_err(|error| wrap(Error::BadSignature(error)))?;
    Ok(id)
}

fn check_settlement(envelope: &Envelope, settlement: &Settlement, config: &Config) -> Result<(), Error> {
    let kind = Kind::Settlement;
    check_inner(envelope, &settlement.bid, "bid", config)?;
    check_inner(envelope, &settlement.ask, "ask", config)?;
    let (Body::Offer(bid), Body::Offer(ask)) = (&settlement.bid.body, &settlement.ask.body) else {
        return Err(body_error(kind, "bid and ask must both be offers"));
    };
    let ensure = |condition: bool, reason: &str| if condition { Ok(()) } else { Err(body_error(kind, reason)) };
    ensure(bid.side == Side::Bid && ask.side == Side::Ask, "bid must be a bid and ask an ask")?;
    ensure(settlement.bid.author != settlement.ask.author, "an author cannot trade with itself")?;
    ensure(bid.pool == ask.pool, "the offers are in different pools")?;
    ensure(bid.delivery_start_s == ask.delivery_start_s, "the offers are for different delivery intervals")?;
    ensure(settlement.quantity > 0, "quantity is 0")?;
    ensure(settlement.quantity <= bid.quantity.min(ask.quantity), "quantity exceeds an offer's quantity")?;
    ensure(
        ask.unit_price <= settlement.unit_price && settlement.unit_price <= bid.unit_price,
        "price outside the offers' limits",
    )
}

fn check_barter_cycle(envelope: &Envelope, cycle: &BarterCycle, config: &Config) -> Result<(), Error> {
    let kind = Kind::BarterCycle;
    let legs = cycle.legs.as_slice();
    let mut offers = Vec::with_capacity(legs.len());
    for leg in legs {
        check_inner(envelope, &leg.offer, "barter offer", config)?;
        let Body::BarterOffer(offer) = &leg.offer.body else {
            return Err(body_error(kind, "every leg must be a barter offer"));
        };
        if leg.give_quantity == 0 || leg.give_quantity > offer.give_quantity {
            return Err(body_error(kind, "a leg gives 0 or more than its offer"));
        }
        offers.push(offer);
    }
    // A cycle is found in one barter pool (PROTOCOL.md §5): every leg's offer is of the same cell.
    if offers.iter().any(|offer| offer.cell != offers[0].cell) {
        return Err(body_error(kind, "the legs' offers are of different cells (barter pools)"));
    }
    let mut authors: Vec<_> = legs.iter().map(|leg| leg.offer.author).collect();
    authors.sort_unstable();
    authors.dedup();
    if authors.len() != legs.len() {
        return Err(body_error(kind, "an author appears in two legs"));
    }
    for (index, (leg, offer)) in legs.iter().zip(&offers).enumerate() {
        let (previous_leg, previous_offer) = match index.checked_sub(1) {
            Some(previous) => (&legs[previous], offers[previous]),
            None => (&legs[legs.len() - 1], offers[offers.len() - 1]),
        };
        if previous_offer.give != offer.want {
            return Err(body_error(kind, "a leg does not receive the resource it wants"));
        }
        if offer.want == Resource::Energy && previous_offer.delivery_start_s != offer.delivery_start_s {
            return Err(body_error(kind, "a leg's energy is given in another interval than it is wanted"));
        }
        // received / given >= want_quantity / give_quantity, in integers.
        let received = u128::from(previous_leg.give_quantity) * u128::from(offer.give_quantity);
        let asked = u128::from(offer.want_quantity) * u128::from(leg.give_quantity);
        if received < asked {
            return Err(body_error(kind, "a leg receives less than its offer's ratio"));
        }
    }
    Ok(())
}
