//! Tracing the validator set from the genesis to a later block without executing the blocks in between
//! (PROTOCOL.md §11, *Tracing the validators*): what a node that syncs the state from a snapshot verifies the
//! snapshot's block with. Sans-IO.
//!
//! A node trusts a set at a height (at first the genesis' set, at height 0). It moves its trust to a later block's
//! header with that block's commit certificate and the set that signed it, when
//! - the set is the one the header names (`validators_hash`) and the certificate is valid against it (§11,
//!   *Certificates*: more than 2/3 of its power), and
//! - the set is the trusted one, or the certificate's signers that are also in the trusted set hold more than
//!   1/3 of the trusted set's power: at least one validator that was honest in the trusted set signed the new
//!   header, and an honest validator signs only a block of the chain, whose header names the set the chain's
//!   state gives it.
//!
//! This is the skipping verification of Tendermint's light client (trust level 1/3), which CometBFT's state sync
//! uses. Its assumption goes one step further than consensus': the validators of a set must never sign a header
//! of another chain, even after they leave the set. A node that will not rely on that replays the blocks.

use malachite_types::{CommitCertificate, ValidatorSet as _};
use protocol::{NetworkId, PublicKey};

#[cfg(test)]
use crate::block::BLOCK_VERSION;
use crate::block::{Header, PROTOCOL_VERSION_MAX};
use crate::consensus::check::{self, CertificateError, Threshold};
use crate::consensus::context::{Kos, ValidatorSet};
use crate::genesis::Genesis;
use crate::state::validators_hash;

/// Why a header cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("block {found} is not after the trusted height {trusted}")]
    NotLater { trusted: u64, found: u64 },
    #[error("the header is of another network")]
    Header(u8),
    /// A version this kos does not run: not the sender's fault (the network upgraded; install a newer kos).
    #[error("block {height} is of ledger protocol version {version}, which this kos does not run")]
    Version { height: u64, version: u8 },
    #[error("block {0} is not the block traced at that height")]
    NotTraced(u64),
    #[error("the certificate is not for block {0}")]
    CertificateFor(u64),
    #[error("the validator set given is not the one block {0} names")]
    Set(u64),
    #[error("certificate of block {height}: {error}")]
    Certificate { height: u64, error: CertificateError },
    #[error(
        "block {height}'s signers hold {signed} of the trusted set's {total} voting power, not more than 1/3: the \
         set changed too much to trace this way"
    )]
    Overlap { height: u64, signed: u64, total: u64 },
}

/// A validator set trusted at a height, with the hash of the block traced there (none for the genesis).
#[derive(Debug, Clone)]
pub struct Trusted {
    height: u64,
    hash: Option<crate::hash::Hash>,
    validators: ValidatorSet,
}

impl Trusted {
    /// The genesis' set: trusted at height 0 (it signs block 1).
    pub fn genesis(genesis: &Genesis) -> Trusted {
        let pairs = genesis.validators.iter().map(|validator| (validator.key, validator.power)).collect();
        Trusted { height: 0, hash: None, validators: ValidatorSet::new(pairs) }
    }

    /// The height of the last header trusted (0: the genesis).
    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// Checks a later block's header, its commit certificate and the set that signed it by the rule of the module
    /// docs, and returns the trust it gives (its set at its height). The block traced last may be given again: it
    /// is then checked to be that very block, with a valid certificate.
    pub fn step(
        &self,
        network: &NetworkId,
        header: &Header,
        certificate: &CommitCertificate<Kos>,
        validators: Vec<(PublicKey, u64)>,
    ) -> Result<Trusted, TrustError> {
        let height = header.height;
        if height == self.height && self.hash.is_some() {
            if Some(header.hash()) != self.hash {
                return Err(TrustError::NotTraced(height));
            }
        } else if height <= self.height {
            return Err(TrustError::NotLater { trusted: self.height, found: height });
        }
        if &header.network != network {
            return Err(TrustError::Header(header.version));
        }
        if header.version == 0 || header.version > PROTOCOL_VERSION_MAX {
            return Err(TrustError::Version { height, version: header.version });
        }
        if !check::certificate_is_for(certificate, height, header.hash()) {
            return Err(TrustError::CertificateFor(height));
        }
        let set = ValidatorSet::new(validators);
        if validators_hash(&set.pairs()) != header.validators_hash {
            return Err(TrustError::Set(height));
        }
        check::check_commit(network, &set, certificate, &mut check::verify_signature)
            .map_err(|error| TrustError::Certificate { height, error })?;
        if validators_hash(&self.validators.pairs()) != header.validators_hash {
            let signed: u64 = certificate
                .commit_signatures
                .iter()
                .filter_map(|one| self.validators.get_by_address(&one.address))
                .map(|validator| validator.power)
                .fold(0, u64::saturating_add);
            let total = self.validators.total_voting_power();
            if !Threshold::OneThird.met(signed, total) {
                return Err(TrustError::Overlap { height, signed, total });
            }
        }
        Ok(Trusted { height, hash: Some(header.hash()), validators: set })
    }
}

#[cfg(test)]
mod tests {
    use malachite_types::{CommitSignature, NilOrVal, Round, SigningProvider, VoteType};
    use protocol::Keypair;

    use super::*;
    use crate::consensus::Signer;
    use crate::consensus::context::{Address, Height, Vote};
    use crate::hash::Hash;

    fn network() -> NetworkId {
        NetworkId::new("kos-trust").unwrap_or_else(|_| unreachable!())
    }

    fn key(seed: u8) -> PublicKey {
        Keypair::from_seed(&[seed; 32]).public()
    }

    fn header(height: u64, set: &[(u8, u64)]) -> Header {
        let pairs = ValidatorSet::new(set.iter().map(|(seed, power)| (key(*seed), *power)).collect()).pairs();
        Header {
            version: BLOCK_VERSION,
            network: network(),
            height,
            time_ms: height * 1_000,
            parent: Hash([height as u8; 32]),
            proposer: key(set[0].0),
            entries_root: Hash::ZERO,
            entry_count: 0,
            state_root: Hash([9; 32]),
            validators_hash: validators_hash(&pairs),
        }
    }

    /// A commit certificate of `header` signed by the validators of `signers`.
    fn certificate(header: &Header, signers: &[u8]) -> CommitCertificate<Kos> {
        let mut signatures: Vec<CommitSignature<Kos>> = signers
            .iter()
            .map(|seed| {
                let address = Address(key(*seed));
                let vote = Vote {
                    height: Height(header.height),
                    round: Round::new(0),
                    vote_type: VoteType::Precommit,
                    value: NilOrVal::Val(header.hash()),
                    validator: address,
                };
                CommitSignature::new(address, Signer::new(network(), &[*seed; 32]).sign_vote(vote).signature)
            })
            .collect();
        signatures.sort_by_key(|one| one.address);
        CommitCertificate {
            height: Height(header.height),
            round: Round::new(0),
            value_id: header.hash(),
            commit_signatures: signatures,
        }
    }

    fn pairs(set: &[(u8, u64)]) -> Vec<(PublicKey, u64)> {
        set.iter().map(|(seed, power)| (key(*seed), *power)).collect()
    }

    fn trusted(set: &[(u8, u64)]) -> Trusted {
        Trusted { height: 0, hash: None, validators: ValidatorSet::new(pairs(set)) }
    }

    #[test]
    fn trust_moves_along_changes_that_keep_a_third_of_the_trusted_power() {
        let first = [(1, 1), (2, 1), (3, 1), (4, 1)];
        let start = trusted(&first);
        // The same set, many blocks later: its own certificate is enough.
        let same = header(500, &first);
        let at_500 = start.step(&network(), &same, &certificate(&same, &[1, 2, 3]), pairs(&first)).unwrap();
        assert_eq!(at_500.height(), 500);
        // One validator added: four of five sign, three of them trusted (3 of 4 > 1/3).
        let second = [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)];
        let added = header(600, &second);
        let at_600 = at_500.step(&network(), &added, &certificate(&added, &[1, 2, 3, 5]), pairs(&second)).unwrap();
        // Two replaced at once: the signers 1 and 6, 7, 8 of the new set hold only 1 of the trusted 5.
        let third = [(1, 1), (6, 1), (7, 1), (8, 1)];
        let replaced = header(700, &third);
        assert_eq!(
            at_600.step(&network(), &replaced, &certificate(&replaced, &[1, 6, 7, 8]), pairs(&third)).unwrap_err(),
            TrustError::Overlap { height: 700, signed: 1, total: 5 }
        );
        // ...but with 2 of them signing as well (2 of 5 > 1/3), it is traced.
        let wider = [(1, 1), (2, 1), (6, 1), (7, 1)];
        let moved = header(700, &wider);
        at_600.step(&network(), &moved, &certificate(&moved, &[1, 2, 6, 7]), pairs(&wider)).unwrap();
    }

    #[test]
    fn a_forged_chain_is_not_trusted() {
        let first = [(1, 1), (2, 1), (3, 1), (4, 1)];
        let start = trusted(&first);
        // Strangers' own set, certifying their own header.
        let forged = [(7, 1), (8, 1), (9, 1)];
        let theirs = header(10, &forged);
        assert!(matches!(
            start.step(&network(), &theirs, &certificate(&theirs, &[7, 8, 9]), pairs(&forged)),
            Err(TrustError::Overlap { signed: 0, .. })
        ));
        // A set that is not the one the header names.
        let good = header(10, &first);
        assert_eq!(
            start.step(&network(), &good, &certificate(&good, &[1, 2, 3]), pairs(&forged)).unwrap_err(),
            TrustError::Set(10)
        );
        // Too few signers, a certificate of another block, an older height, another network.
        assert!(matches!(
            start.step(&network(), &good, &certificate(&good, &[1, 2]), pairs(&first)),
            Err(TrustError::Certificate { height: 10, .. })
        ));
        let other = header(11, &first);
        assert_eq!(
            start.step(&network(), &good, &certificate(&other, &[1, 2, 3]), pairs(&first)).unwrap_err(),
            TrustError::CertificateFor(10)
        );
        let later = start.step(&network(), &good, &certificate(&good, &[1, 2, 3]), pairs(&first)).unwrap();
        let earlier = header(9, &first);
        assert!(matches!(
            later.step(&network(), &earlier, &certificate(&earlier, &[1, 2, 3]), pairs(&first)),
            Err(TrustError::NotLater { .. })
        ));
        let elsewhere = NetworkId::new("kos-other").unwrap();
        assert_eq!(
            start.step(&elsewhere, &good, &certificate(&good, &[1, 2, 3]), pairs(&first)).unwrap_err(),
            TrustError::Header(BLOCK_VERSION)
        );
        // The block traced last, given again: that very block passes, another of its height does not.
        assert_eq!(later.step(&network(), &good, &certificate(&good, &[1, 2, 3]), pairs(&first)).unwrap().height(), 10);
        let mut twin = good.clone();
        twin.time_ms += 1;
        assert_eq!(
            later.step(&network(), &twin, &certificate(&twin, &[1, 2, 3]), pairs(&first)).unwrap_err(),
            TrustError::NotTraced(10)
        );
        // A version this kos does not run is nobody's fault.
        let mut newer = header(11, &first);
        newer.version = crate::block::PROTOCOL_VERSION_MAX + 1;
        assert_eq!(
            later.step(&network(), &newer, &certificate(&newer, &[1, 2, 3]), pairs(&first)).unwrap_err(),
            TrustError::Version { height: 11, version: crate::block::PROTOCOL_VERSION_MAX + 1 }
        );
    }
}
