//! What makes a block header and a certificate valid, wherever they are checked — `kos ledger verify`, sync and
//! consensus: one rule each (PROTOCOL.md §10, *a block is valid when*, and §11, *Certificates*).
//!
//! A certificate is valid against a validator set when its signatures are in strictly ascending order of validator
//! key (so no validator signs twice, and a set of signers has one byte form), every signer is a validator of the
//! set, every signature is a valid signature of its vote, a precommit round certificate holds only precommits, and
//! the signers hold more than 2/3 of the set's voting power (more than 1/3 for a skip round certificate). One bad
//! signature makes the whole certificate invalid, whatever the others weigh: a certificate cannot be padded with
//! junk, nor with a validator's genuine signature of another vote.

use malachite_types::{
    CommitCertificate, NilOrVal, PolkaCertificate, Round, RoundCertificate, RoundCertificateType, ValidatorSet as _,
    VoteType,
};
use protocol::NetworkId;

use super::context::{Address, Height, Kos, Sig, ValidatorSet, Vote, vote_digest};
use crate::block::Header;
use crate::hash::Hash;
use crate::state::validators_hash;

/// What makes a certificate invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("signatures not in ascending key order, or a validator twice ({0})")]
    Order(Address),
    #[error("signed by {0}, not a validator of the set")]
    UnknownSigner(Address),
    #[error("a bad signature of {0}")]
    BadSignature(Address),
    #[error("a prevote of {0} in a precommit certificate")]
    VoteType(Address),
    #[error("signers hold {signed} of {total} voting power, not more than {share} of it")]
    Power { signed: u64, total: u64, share: &'static str },
}

/// The share of the set's voting power a certificate's signers must hold more than.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threshold {
    /// More than 2/3: commit and polka certificates, precommit round certificates.
    TwoThirds,
    /// More than 1/3: skip round certificates (at least one honest validator is in a later round).
    OneThird,
}

impl Threshold {
    /// Whether `signed` of `total` is more than the share (`3 × signed > 2 × total`, `3 × signed > total`).
    pub fn met(self, signed: u64, total: u64) -> bool {
        let (signed, total) = (u128::from(signed) * 3, u128::from(total));
        match self {
            Threshold::TwoThirds => signed > 2 * total,
            Threshold::OneThird => signed > total,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Threshold::TwoThirds => "2/3",
            Threshold::OneThird => "1/3",
        }
    }
}

/// What a kind of certificate needs besides valid signatures of validators in key order.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    pub threshold: Threshold,
    /// A precommit round certificate holds nothing else.
    pub precommits_only: bool,
}

/// Commit and polka certificates: more than 2/3, of their own vote type (their votes are made from the certificate).
const QUORUM: Needs = Needs { threshold: Threshold::TwoThirds, precommits_only: false };

/// One signature of a certificate: the signer, the vote it signed, its signature.
pub struct Signed<'a> {
    pub signer: &'a Address,
    pub vote: Vote,
    pub signature: &'a Sig,
}

/// Checks signatures against a set by the rule above, in its order (PROTOCOL.md §11: the first failing step names
/// the fault, and a node judging a later height's certificate ignores some faults and rejects others). `verify`
/// checks one signature of a vote digest by a key (the consensus engine passes one that remembers what it
/// verified). Signatures are verified last: a certificate of an outsider or out of order costs no verification.
pub fn check(
    network: &NetworkId,
    validators: &ValidatorSet,
    signed: &[Signed<'_>],
    needs: Needs,
    verify: &mut dyn FnMut(&Hash, &Address, &Sig) -> bool,
) -> Result<(), CertificateError> {
    if let Some(pair) = signed.windows(2).find(|pair| pair[0].signer >= pair[1].signer) {
        return Err(CertificateError::Order(*pair[1].signer));
    }
    let mut power = 0u64;
    for one in signed {
        let validator = validators.get_by_address(one.signer).ok_or(CertificateError::UnknownSigner(*one.signer))?;
        power = power.saturating_add(validator.power);
    }
    if needs.precommits_only
        && let Some(prevote) = signed.iter().find(|one| one.vote.vote_type == VoteType::Prevote)
    {
        return Err(CertificateError::VoteType(*prevote.signer));
    }
    let threshold = needs.threshold;
    let total = validators.total_voting_power();
    if !threshold.met(power, total) {
        return Err(CertificateError::Power { signed: power, total, share: threshold.name() });
    }
    for one in signed {
        if !verify(&vote_digest(network, &one.vote), one.signer, one.signature) {
            return Err(CertificateError::BadSignature(*one.signer));
        }
    }
    Ok(())
}

/// One consensus signature by the rule of every kos signature (PROTOCOL.md §3).
pub fn verify_signature(digest: &Hash, signer: &Address, signature: &Sig) -> bool {
    protocol::keys::verify(&signer.0, digest.as_bytes(), &protocol::Signature(signature.0.to_bytes())).is_ok()
}

fn vote(height: Height, round: Round, vote_type: VoteType, value: NilOrVal<Hash>, signer: &Address) -> Vote {
    Vote { height, round, vote_type, value, validator: *signer }
}

/// The signed votes of a certificate whose signers all voted `vote_type` for one block.
fn votes_for_block<'a>(
    height: Height,
    round: Round,
    vote_type: VoteType,
    block: Hash,
    signatures: impl Iterator<Item = (&'a Address, &'a Sig)>,
) -> Vec<Signed<'a>> {
    signatures
        .map(|(signer, signature)| Signed {
            signer,
            vote: vote(height, round, vote_type, NilOrVal::Val(block), signer),
            signature,
        })
        .collect()
}

/// Whether a commit certificate is for the block of `height` with `hash` (PROTOCOL.md §11, *Certificates*: its
/// height is the block's and its value the block's hash; its round is any). Checked before its signatures.
pub fn certificate_is_for(certificate: &CommitCertificate<Kos>, height: u64, hash: Hash) -> bool {
    certificate.height.0 == height && certificate.value_id == hash
}

/// A commit certificate: precommits for its block.
pub fn check_commit(
    network: &NetworkId,
    validators: &ValidatorSet,
    certificate: &CommitCertificate<Kos>,
    verify: &mut dyn FnMut(&Hash, &Address, &Sig) -> bool,
) -> Result<(), CertificateError> {
    let pairs = certificate.commit_signatures.iter().map(|one| (&one.address, &one.signature));
    let signed =
        votes_for_block(certificate.height, certificate.round, VoteType::Precommit, certificate.value_id, pairs);
    check(network, validators, &signed, QUORUM, verify)
}

/// A polka certificate: prevotes for one block.
pub fn check_polka(
    network: &NetworkId,
    validators: &ValidatorSet,
    certificate: &PolkaCertificate<Kos>,
    verify: &mut dyn FnMut(&Hash, &Address, &Sig) -> bool,
) -> Result<(), CertificateError> {
    let pairs = certificate.polka_signatures.iter().map(|one| (&one.address, &one.signature));
    let signed = votes_for_block(certificate.height, certificate.round, VoteType::Prevote, certificate.value_id, pairs);
    check(network, validators, &signed, QUORUM, verify)
}

/// A round certificate: precommits of more than 2/3 (`Precommit`), or votes of any kind and value of more than 1/3
/// (`Skip`), in its round.
pub fn check_round(
    network: &NetworkId,
    validators: &ValidatorSet,
    certificate: &RoundCertificate<Kos>,
    verify: &mut dyn FnMut(&Hash, &Address, &Sig) -> bool,
) -> Result<(), CertificateError> {
    let needs = match certificate.cert_type {
        RoundCertificateType::Precommit => Needs { threshold: Threshold::TwoThirds, precommits_only: true },
        RoundCertificateType::Skip => Needs { threshold: Threshold::OneThird, precommits_only: false },
    };
    let signed: Vec<Signed<'_>> = certificate
        .round_signatures
        .iter()
        .map(|one| Signed {
            signer: &one.address,
            vote: vote(certificate.height, certificate.round, one.vote_type, one.value_id, &one.address),
            signature: &one.signature,
        })
        .collect();
    check(network, validators, &signed, needs, verify)
}

/// What a block must follow: its parent and its height's validator set.
pub struct Parent<'a> {
    pub network: &'a NetworkId,
    /// The parent's height (0 for the genesis), hash (the genesis hash) and time (the genesis time).
    pub height: u64,
    pub hash: Hash,
    pub time_ms: u64,
    /// The validators of the block's height (the state after the parent).
    pub validators: &'a ValidatorSet,
    pub entries_max: u32,
    /// The protocol version in force at the block's height (the state after the parent).
    pub version: u8,
}

/// A block header's checks against its parent (PROTOCOL.md §10, *a block is valid when*, 1 to 5; decoding checked
/// the entries' count and root): the one rule of `kos ledger verify`, sync and consensus. Returns what is wrong.
pub fn check_header(header: &Header, parent: &Parent<'_>) -> Result<(), String> {
    let checks = [
        (header.version == parent.version, "version"),
        (&header.network == parent.network, "network"),
        (Some(header.height) == parent.height.checked_add(1), "height"),
        (header.parent == parent.hash, "parent"),
        (header.time_ms > parent.time_ms, "time not after the parent's"),
        (parent.validators.contains(&Address(header.proposer)), "proposer not a validator"),
        (header.validators_hash == validators_hash(&parent.validators.pairs()), "validator set"),
        (header.entry_count <= parent.entries_max, "too many entries"),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, what)) => Err((*what).to_owned()),
        None => Ok(()),
    }
}

/// A commit certificate with its signatures in key order, as encoders write them (Malachite assembles them in the
/// order the votes came).
pub fn commit_in_key_order(mut certificate: CommitCertificate<Kos>) -> CommitCertificate<Kos> {
    certificate.commit_signatures.sort_by_key(|one| one.address);
    certificate
}

/// A polka certificate with its signatures in key order.
pub fn polka_in_key_order(mut certificate: PolkaCertificate<Kos>) -> PolkaCertificate<Kos> {
    certificate.polka_signatures.sort_by_key(|one| one.address);
    certificate
}

/// A round certificate with its signatures in key order.
pub fn round_in_key_order(mut certificate: RoundCertificate<Kos>) -> RoundCertificate<Kos> {
    certificate.round_signatures.sort_by_key(|one| one.address);
    certificate
}

/// A consensus message with its certificate's signatures (if any) in key order.
pub fn message_in_key_order(message: super::wire::Message) -> super::wire::Message {
    use super::wire::Message;
    match message {
        Message::Polka(certificate) => Message::Polka(polka_in_key_order(certificate)),
        Message::Round(certificate) => Message::Round(round_in_key_order(certificate)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use malachite_types::{RoundSignature, SigningProvider};
    use protocol::{Keypair, PublicKey};

    use super::*;
    use crate::consensus::Signer;

    fn network() -> NetworkId {
        NetworkId::new("kos-check").unwrap_or_else(|_| unreachable!())
    }

    fn seeds() -> Vec<[u8; 32]> {
        let mut seeds: Vec<[u8; 32]> = (1..=4u8).map(|n| [n; 32]).collect();
        seeds.sort_by_key(|seed| Keypair::from_seed(seed).public());
        seeds
    }

    fn set() -> ValidatorSet {
        ValidatorSet::new(seeds().iter().map(|seed| (Keypair::from_seed(seed).public(), 1)).collect())
    }

    fn round_signature(seed: &[u8; 32], vote_type: VoteType) -> RoundSignature<Kos> {
        let address = Address(Keypair::from_seed(seed).public());
        let vote =
            Vote { height: Height(1), round: Round::new(0), vote_type, value: NilOrVal::Nil, validator: address };
        let signed = Signer::new(network(), seed).sign_vote(vote);
        RoundSignature::new(vote_type, NilOrVal::Nil, address, signed.signature)
    }

    fn round(cert_type: RoundCertificateType, signatures: Vec<RoundSignature<Kos>>) -> RoundCertificate<Kos> {
        RoundCertificate { height: Height(1), round: Round::new(0), cert_type, round_signatures: signatures }
    }

    /// The core counts votes with Malachite's default thresholds (engine.rs): they must be the rule's.
    #[test]
    fn the_cores_thresholds_are_the_rules() {
        let core = malachite_types::ThresholdParams::default();
        for total in 1..60 {
            for signed in 0..=total {
                assert_eq!(core.quorum.is_met(signed, total), Threshold::TwoThirds.met(signed, total));
                assert_eq!(core.honest.is_met(signed, total), Threshold::OneThird.met(signed, total));
            }
        }
    }

    #[test]
    fn more_than_two_thirds_and_more_than_one_third_are_strict() {
        assert!(!Threshold::TwoThirds.met(2, 3));
        assert!(Threshold::TwoThirds.met(3, 4));
        assert!(!Threshold::TwoThirds.met(6, 9));
        assert!(Threshold::TwoThirds.met(7, 9));
        assert!(!Threshold::OneThird.met(1, 3));
        assert!(Threshold::OneThird.met(2, 4));
        assert!(Threshold::TwoThirds.met(u64::MAX, u64::MAX));
    }

    /// A skip round certificate needs more than a third of the power, of votes of any type; a precommit one more
    /// than two thirds, of precommits only.
    #[test]
    fn round_certificates_by_type() {
        let seeds = seeds();
        let set = set();
        let check =
            |certificate: &RoundCertificate<Kos>| check_round(&network(), &set, certificate, &mut verify_signature);
        let mixed =
            vec![round_signature(&seeds[0], VoteType::Prevote), round_signature(&seeds[1], VoteType::Precommit)];
        assert_eq!(check(&round(RoundCertificateType::Skip, mixed.clone())), Ok(()));
        assert!(matches!(
            check(&round(RoundCertificateType::Skip, mixed[..1].to_vec())),
            Err(CertificateError::Power { signed: 1, total: 4, .. })
        ));
        let precommits: Vec<_> = seeds[..3].iter().map(|seed| round_signature(seed, VoteType::Precommit)).collect();
        assert_eq!(check(&round(RoundCertificateType::Precommit, precommits.clone())), Ok(()));
        let mut with_prevote = precommits;
        with_prevote[1] = round_signature(&seeds[1], VoteType::Prevote);
        assert_eq!(
            check(&round(RoundCertificateType::Precommit, with_prevote)),
            Err(CertificateError::VoteType(Address(Keypair::from_seed(&seeds[1]).public())))
        );
    }

    /// Signing, ordering: the helpers put a certificate's signatures in key order.
    #[test]
    fn certificates_are_put_in_key_order() {
        let seeds = seeds();
        let mut reversed: Vec<_> = seeds.iter().map(|seed| round_signature(seed, VoteType::Precommit)).collect();
        reversed.reverse();
        let sorted = round_in_key_order(round(RoundCertificateType::Precommit, reversed));
        let keys: Vec<PublicKey> = sorted.round_signatures.iter().map(|one| one.address.0).collect();
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(keys, expected);
        assert_eq!(check_round(&network(), &set(), &sorted, &mut verify_signature), Ok(()));
    }
}
