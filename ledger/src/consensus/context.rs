//! kos's types for Malachite's consensus core: heights, validator addresses (ed25519 public keys), blocks as
//! values, votes and proposals, and the ed25519-dalek signing scheme.
//!
//! Sign bytes (PROTOCOL.md §11):
//! ```text
//! vote digest     = blake3("kos/v1/consensus/vote" || 0x00 || network || 0x00 || CBOR([height, round, type, value, validator]))
//! proposal digest = blake3("kos/v1/consensus/proposal" || 0x00 || network || 0x00 || CBOR([height, round, block hash, pol_round + 1 or 0, proposer]))
//! signature       = Ed25519(secret key, digest)
//! ```
//! `type` is 0 for a prevote, 1 for a precommit; `value` is the 32-byte block hash, or the empty byte string for nil.
//! Vote extensions are not used and not signed, so a vote is rebuilt exactly from a certificate's entries.

use std::cmp::Ordering;
use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use malachite_types::{
    Context, NilOrVal, Round, SignedMessage, SigningProvider, SigningScheme, ValidatorSet as _, VoteType,
};
use protocol::{NetworkId, PublicKey, codec};
use serde::Serialize;

use crate::block::Block;
use crate::hash::{self, Hash};

/// A block height (the first block is 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl malachite_types::Height for Height {
    const ZERO: Height = Height(0);
    const INITIAL: Height = Height(1);

    fn increment_by(&self, n: u64) -> Height {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Height> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A validator's address: its ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub PublicKey);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_hex()[..12])
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl malachite_types::Address for Address {}

impl malachite_types::Value for Block {
    type Id = Hash;

    fn id(&self) -> Hash {
        self.hash()
    }
}

/// An ed25519 signature with the total order the consensus core wants (by bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sig(pub ed25519_dalek::Signature);

impl fmt::Debug for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sig({})", &hex::encode(self.0.to_bytes())[..16])
    }
}

impl PartialOrd for Sig {
    fn partial_cmp(&self, other: &Sig) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sig {
    fn cmp(&self, other: &Sig) -> Ordering {
        self.0.to_bytes().cmp(&other.0.to_bytes())
    }
}

/// Ed25519: signing by ed25519-dalek, verification by kos's rule (PROTOCOL.md §3, `protocol::keys::verify`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519;

impl SigningScheme for Ed25519 {
    type DecodingError = ed25519_dalek::SignatureError;
    type Signature = Sig;
    type PublicKey = VerifyingKey;
    type PrivateKey = SigningKey;

    fn decode_signature(bytes: &[u8]) -> Result<Sig, ed25519_dalek::SignatureError> {
        ed25519_dalek::Signature::from_slice(bytes).map(Sig)
    }

    fn encode_signature(signature: &Sig) -> Vec<u8> {
        signature.0.to_bytes().to_vec()
    }
}

/// A prevote or precommit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vote {
    pub height: Height,
    pub round: Round,
    pub vote_type: VoteType,
    pub value: NilOrVal<Hash>,
    pub validator: Address,
}

impl malachite_types::Vote<Kos> for Vote {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &NilOrVal<Hash> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<Hash> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        self.vote_type
    }
    fn validator_address(&self) -> &Address {
        &self.validator
    }
    fn extension(&self) -> Option<&SignedMessage<Kos, ()>> {
        None
    }
    fn take_extension(&mut self) -> Option<SignedMessage<Kos, ()>> {
        None
    }
    fn extend(self, _extension: SignedMessage<Kos, ()>) -> Vote {
        self
    }
}

/// A block proposed for a height and round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    pub block: Block,
    pub pol_round: Round,
    pub proposer: Address,
}

impl malachite_types::Proposal<Kos> for Proposal {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &Block {
        &self.block
    }
    fn take_value(self) -> Block {
        self.block
    }
    fn pol_round(&self) -> Round {
        self.pol_round
    }
    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// kos sends whole blocks in proposals; proposal parts are never used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoParts;

impl malachite_types::ProposalPart<Kos> for NoParts {
    fn is_first(&self) -> bool {
        true
    }
    fn is_last(&self) -> bool {
        true
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    pub address: Address,
    pub public_key: VerifyingKey,
    pub power: u64,
}

impl malachite_types::Validator<Kos> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }
    fn public_key(&self) -> &VerifyingKey {
        &self.public_key
    }
    fn voting_power(&self) -> u64 {
        self.power
    }
}

/// Validators in key order (unique), as the ledger state lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    pub validators: Vec<Validator>,
}

impl ValidatorSet {
    /// The set from (key, power) pairs; keys that are not valid ed25519 points are left out.
    pub fn new(mut pairs: Vec<(PublicKey, u64)>) -> ValidatorSet {
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        let validators = pairs
            .into_iter()
            .filter(|(_, power)| *power > 0)
            .filter_map(|(key, power)| {
                let public_key = VerifyingKey::from_bytes(key.as_bytes()).ok()?;
                Some(Validator { address: Address(key), public_key, power })
            })
            .collect();
        ValidatorSet { validators }
    }

    pub fn pairs(&self) -> Vec<(PublicKey, u64)> {
        self.validators.iter().map(|validator| (validator.address.0, validator.power)).collect()
    }

    pub fn contains(&self, address: &Address) -> bool {
        self.get_by_address(address).is_some()
    }
}

impl malachite_types::ValidatorSet<Kos> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }
    fn total_voting_power(&self) -> u64 {
        self.validators.iter().map(|validator| validator.power).sum()
    }
    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.validators
            .binary_search_by(|validator| validator.address.cmp(address))
            .ok()
            .map(|index| &self.validators[index])
    }
    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// The consensus context of one kos network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kos {
    pub network: NetworkId,
}

impl Context for Kos {
    type Address = Address;
    type Height = Height;
    type ProposalPart = NoParts;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Value = Block;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = Ed25519;

    /// Weighted round robin: position `(height - 1 + round) mod total power` in the validators laid out in key
    /// order, each taking as many positions as its power.
    fn select_proposer<'a>(&self, validator_set: &'a ValidatorSet, height: Height, round: Round) -> &'a Validator {
        proposer(validator_set, height, round)
    }

    fn new_proposal(&self, height: Height, round: Round, block: Block, pol_round: Round, address: Address) -> Proposal {
        Proposal { height, round, block, pol_round, proposer: address }
    }

    fn new_prevote(&self, height: Height, round: Round, value: NilOrVal<Hash>, address: Address) -> Vote {
        Vote { height, round, vote_type: VoteType::Prevote, value, validator: address }
    }

    fn new_precommit(&self, height: Height, round: Round, value: NilOrVal<Hash>, address: Address) -> Vote {
        Vote { height, round, vote_type: VoteType::Precommit, value, validator: address }
    }
}

/// See [`Kos::select_proposer`]. Panics only on an empty set, which the ledger never has (genesis needs one
/// validator and governance never removes the last).
#[allow(clippy::panic)]
pub fn proposer(validator_set: &ValidatorSet, height: Height, round: Round) -> &Validator {
    let total: u64 = validator_set.validators.iter().map(|validator| validator.power).sum();
    let Some(first) = validator_set.validators.first() else { panic!("an empty validator set has no proposer") };
    if total == 0 {
        return first;
    }
    let round = u64::from(round.as_u32().unwrap_or(0));
    let mut position = height.0.saturating_sub(1).wrapping_add(round) % total;
    for validator in &validator_set.validators {
        if position < validator.power {
            return validator;
        }
        position -= validator.power;
    }
    first
}

/// A round on the wire: defined rounds as `round + 1`, nil as 0.
pub fn round_to_wire(round: Round) -> u64 {
    round.as_u32().map_or(0, |round| u64::from(round) + 1)
}

pub fn round_from_wire(value: u64) -> Option<Round> {
    match value {
        0 => Some(Round::Nil),
        value => u32::try_from(value - 1).ok().map(Round::new),
    }
}

pub fn vote_type_to_wire(vote_type: VoteType) -> u8 {
    match vote_type {
        VoteType::Prevote => 0,
        VoteType::Precommit => 1,
    }
}

pub fn vote_type_from_wire(value: u8) -> Option<VoteType> {
    match value {
        0 => Some(VoteType::Prevote),
        1 => Some(VoteType::Precommit),
        _ => None,
    }
}

pub fn value_to_wire(value: &NilOrVal<Hash>) -> Vec<u8> {
    match value {
        NilOrVal::Nil => Vec::new(),
        NilOrVal::Val(hash) => hash.0.to_vec(),
    }
}

pub fn value_from_wire(bytes: &[u8]) -> Option<NilOrVal<Hash>> {
    match bytes.len() {
        0 => Some(NilOrVal::Nil),
        32 => <[u8; 32]>::try_from(bytes).ok().map(|bytes| NilOrVal::Val(Hash(bytes))),
        _ => None,
    }
}

#[derive(Serialize)]
struct VoteSignBytes<'a>(u64, u64, u8, #[serde(with = "serde_bytes")] &'a [u8], &'a PublicKey);

#[derive(Serialize)]
struct ProposalSignBytes<'a>(u64, u64, &'a Hash, u64, &'a PublicKey);

fn digest(domain: &str, network: &NetworkId, fields: &[u8]) -> Hash {
    hash::tagged(domain, &[network.as_str().as_bytes(), &[0], fields])
}

/// The digest a validator signs for a vote.
pub fn vote_digest(network: &NetworkId, vote: &Vote) -> Hash {
    let value = value_to_wire(&vote.value);
    let fields = codec::encode(&VoteSignBytes(
        vote.height.0,
        u64::from(vote.round.as_u32().unwrap_or(u32::MAX)),
        vote_type_to_wire(vote.vote_type),
        &value,
        &vote.validator.0,
    ));
    digest("kos/v1/consensus/vote", network, &fields)
}

/// The digest a proposer signs for a proposal (it covers the block through its hash).
pub fn proposal_digest(network: &NetworkId, proposal: &Proposal) -> Hash {
    let fields = codec::encode(&ProposalSignBytes(
        proposal.height.0,
        u64::from(proposal.round.as_u32().unwrap_or(u32::MAX)),
        &proposal.block.hash(),
        round_to_wire(proposal.pol_round),
        &proposal.proposer.0,
    ));
    digest("kos/v1/consensus/proposal", network, &fields)
}

/// Signs consensus messages with the node's key, and verifies them by the rule of every kos signature (PROTOCOL.md
/// §3). Certificates are checked by [`super::check`], never by Malachite's `SigningProviderExt` (which skips bad
/// signatures): clippy.toml disallows those methods.
pub struct Signer {
    network: NetworkId,
    key: SigningKey,
}

impl Signer {
    pub fn new(network: NetworkId, seed: &[u8; 32]) -> Signer {
        Signer { network, key: SigningKey::from_bytes(seed) }
    }

    pub fn address(&self) -> Address {
        Address(PublicKey(self.key.verifying_key().to_bytes()))
    }

    fn sign(&self, digest: &Hash) -> Sig {
        Sig(self.key.sign(digest.as_bytes()))
    }
}

/// Votes and proposals are verified by the rule of every kos signature (PROTOCOL.md §3).
fn verify(digest: &Hash, signature: &Sig, key: &VerifyingKey) -> bool {
    super::check::verify_signature(digest, &Address(PublicKey(key.to_bytes())), signature)
}

impl SigningProvider<Kos> for Signer {
    fn sign_vote(&self, vote: Vote) -> SignedMessage<Kos, Vote> {
        let signature = self.sign(&vote_digest(&self.network, &vote));
        SignedMessage::new(vote, signature)
    }

    fn verify_signed_vote(&self, vote: &Vote, signature: &Sig, public_key: &VerifyingKey) -> bool {
        verify(&vote_digest(&self.network, vote), signature, public_key)
    }

    fn sign_proposal(&self, proposal: Proposal) -> SignedMessage<Kos, Proposal> {
        let signature = self.sign(&proposal_digest(&self.network, &proposal));
        SignedMessage::new(proposal, signature)
    }

    fn verify_signed_proposal(&self, proposal: &Proposal, signature: &Sig, public_key: &VerifyingKey) -> bool {
        verify(&proposal_digest(&self.network, proposal), signature, public_key)
    }

    fn sign_proposal_part(&self, part: NoParts) -> SignedMessage<Kos, NoParts> {
        SignedMessage::new(part, self.sign(&hash::tagged("kos/v1/consensus/unused-part", &[])))
    }

    fn verify_signed_proposal_part(&self, _part: &NoParts, _signature: &Sig, _public_key: &VerifyingKey) -> bool {
        false
    }

    fn sign_vote_extension(&self, extension: ()) -> SignedMessage<Kos, ()> {
        SignedMessage::new(extension, self.sign(&hash::tagged("kos/v1/consensus/unused-extension", &[])))
    }

    fn verify_signed_vote_extension(&self, _extension: &(), _signature: &Sig, _public_key: &VerifyingKey) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(powers: &[u64]) -> ValidatorSet {
        ValidatorSet::new(
            powers
                .iter()
                .enumerate()
                .map(|(index, power)| (protocol::Keypair::from_seed(&[index as u8 + 1; 32]).public(), *power))
                .collect(),
        )
    }

    #[test]
    fn proposers_rotate_in_proportion_to_power() {
        let validators = set(&[1, 2, 1]);
        let mut counts = std::collections::BTreeMap::new();
        for height in 1..=400 {
            *counts.entry(proposer(&validators, Height(height), Round::new(0)).address).or_insert(0) += 1;
        }
        let mut counts: Vec<u32> = counts.into_values().collect();
        counts.sort();
        assert_eq!(counts, vec![100, 100, 200]);
        // Later rounds of one height move on to the other validators.
        let in_rounds: std::collections::BTreeSet<Address> =
            (0..4).map(|round| proposer(&validators, Height(5), Round::new(round)).address).collect();
        assert_eq!(in_rounds.len(), 3);
    }

    #[test]
    fn signatures_bind_every_field_and_the_network() {
        let network = NetworkId::new("kos-test").unwrap();
        let signer = Signer::new(network.clone(), &[7; 32]);
        let key = VerifyingKey::from_bytes(signer.address().0.as_bytes()).unwrap();
        let vote = Vote {
            height: Height(3),
            round: Round::new(1),
            vote_type: VoteType::Prevote,
            value: NilOrVal::Val(Hash([9; 32])),
            validator: signer.address(),
        };
        let signed = signer.sign_vote(vote.clone());
        assert!(signer.verify_signed_vote(&vote, &signed.signature, &key));
        let mut other = vote.clone();
        other.vote_type = VoteType::Precommit;
        assert!(!signer.verify_signed_vote(&other, &signed.signature, &key));
        other = vote.clone();
        other.value = NilOrVal::Nil;
        assert!(!signer.verify_signed_vote(&other, &signed.signature, &key));
        let elsewhere = Signer::new(NetworkId::new("kos-other").unwrap(), &[7; 32]);
        assert!(!elsewhere.verify_signed_vote(&vote, &signed.signature, &key));
    }
}
