//! Byte formats of consensus messages, commit certificates and write-ahead-log entries (PROTOCOL.md §11).
//!
//! ```text
//! message     = [0, [height, round, pol_round, proposer, signature, block]]          proposal (pol_round: +1, 0 nil)
//!             | [1, [height, round, type, value, validator, signature]]               vote (value: hash or empty)
//!             | [2, [height, round, value, [[validator, signature], ...]]]            polka certificate
//!             | [3, [height, round, cert_type, [[type, value, validator, signature], ...]]]  round certificate
//! certificate = [height, round, block hash, [[validator, signature], ...]]            commit certificate
//! wal entry   = [0, message] | [1, [timeout kind, round]] | [2, [height, round, valid_round, proposer, valid, block]]
//! ```
//! `round` fields of votes, proposals and certificates are plain round numbers; `pol_round` and `valid_round` are
//! `round + 1`, with 0 for none.

use malachite_consensus::{LivenessMsg, ProposedValue, SignedConsensusMsg, WalEntry};
use malachite_types::{
    CommitCertificate, CommitSignature, PolkaCertificate, PolkaSignature, Round, RoundCertificate,
    RoundCertificateType, RoundSignature, SignedMessage, Timeout, TimeoutKind, Validity,
};
use protocol::{PublicKey, codec};
use serde::{Deserialize, Serialize};

use super::context::{
    Address, Height, Kos, Proposal, Sig, Vote, round_from_wire, round_to_wire, value_from_wire, value_to_wire,
    vote_type_from_wire, vote_type_to_wire,
};
use crate::block::{BLOCK_BYTES_LIMIT, BLOCK_ENTRIES_LIMIT, Block};
use crate::hash::Hash;

/// Most signatures in one certificate: one per validator, and a set has at most
/// [`VALIDATORS_MAX`](crate::genesis::VALIDATORS_MAX) (PROTOCOL.md §11).
pub const CERTIFICATE_SIGNATURES_MAX: u64 = crate::genesis::VALIDATORS_MAX as u64;

type Bstr = serde_bytes::ByteBuf;

#[derive(Serialize, Deserialize)]
struct SigWire(#[serde(with = "serde_bytes")] [u8; 64]);

impl From<&Sig> for SigWire {
    fn from(sig: &Sig) -> SigWire {
        SigWire(sig.0.to_bytes())
    }
}

impl SigWire {
    fn sig(&self) -> Sig {
        Sig(ed25519_dalek::Signature::from_bytes(&self.0))
    }
}

#[derive(Serialize, Deserialize)]
struct ProposalWire(u64, u64, u64, PublicKey, SigWire, Bstr);

#[derive(Serialize, Deserialize)]
struct VoteWire(u64, u64, u8, Bstr, PublicKey, SigWire);

#[derive(Serialize, Deserialize)]
struct CommitWire(u64, u64, Hash, Vec<(PublicKey, SigWire)>);

#[derive(Serialize, Deserialize)]
struct RoundWire(u64, u64, u8, Vec<(u8, Bstr, PublicKey, SigWire)>);

/// Why bytes are not a consensus message, certificate or WAL entry.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("encoding: {0}")]
    Codec(#[from] codec::Error),
    #[error("block: {0}")]
    Block(#[from] crate::block::DecodeError),
    #[error("bad field: {0}")]
    Field(&'static str),
    #[error("unknown message kind {0}")]
    Kind(u64),
}

/// A message of the consensus gossip topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Proposal(SignedMessage<Kos, Proposal>),
    Vote(SignedMessage<Kos, Vote>),
    Polka(PolkaCertificate<Kos>),
    Round(RoundCertificate<Kos>),
}

impl Message {
    pub fn from_consensus(message: SignedConsensusMsg<Kos>) -> Message {
        match message {
            SignedConsensusMsg::Vote(vote) => Message::Vote(vote),
            SignedConsensusMsg::Proposal(proposal) => Message::Proposal(proposal),
        }
    }

    pub fn from_liveness(message: LivenessMsg<Kos>) -> Message {
        match message {
            LivenessMsg::Vote(vote) => Message::Vote(vote),
            LivenessMsg::PolkaCertificate(certificate) => Message::Polka(certificate),
            LivenessMsg::SkipRoundCertificate(certificate) => Message::Round(certificate),
        }
    }

    pub fn height(&self) -> Height {
        match self {
            Message::Proposal(proposal) => proposal.message.height,
            Message::Vote(vote) => vote.message.height,
            Message::Polka(certificate) => certificate.height,
            Message::Round(certificate) => certificate.height,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Proposal(signed) => {
                let proposal = &signed.message;
                codec::encode(&(
                    0u8,
                    ProposalWire(
                        proposal.height.0,
                        u64::from(proposal.round.as_u32().unwrap_or(0)),
                        round_to_wire(proposal.pol_round),
                        proposal.proposer.0,
                        SigWire::from(&signed.signature),
                        Bstr::from(proposal.block.to_bytes()),
                    ),
                ))
            }
            Message::Vote(signed) => codec::encode(&(1u8, vote_wire(signed))),
            Message::Polka(certificate) => codec::encode(&(
                2u8,
                CommitWire(
                    certificate.height.0,
                    u64::from(certificate.round.as_u32().unwrap_or(0)),
                    certificate.value_id,
                    certificate
                        .polka_signatures
                        .iter()
                        .map(|signature| (signature.address.0, SigWire::from(&signature.signature)))
                        .collect(),
                ),
            )),
            Message::Round(certificate) => codec::encode(&(
                3u8,
                RoundWire(
                    certificate.height.0,
                    u64::from(certificate.round.as_u32().unwrap_or(0)),
                    match certificate.cert_type {
                        RoundCertificateType::Skip => 0,
                        RoundCertificateType::Precommit => 1,
                    },
                    certificate
                        .round_signatures
                        .iter()
                        .map(|signature| {
                            (
                                vote_type_to_wire(signature.vote_type),
                                Bstr::from(value_to_wire(&signature.value_id)),
                                signature.address.0,
                                SigWire::from(&signature.signature),
                            )
                        })
                        .collect(),
                ),
            )),
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Message, WireError> {
        let limit = BLOCK_BYTES_LIMIT + 4096;
        let items = BLOCK_ENTRIES_LIMIT.max(CERTIFICATE_SIGNATURES_MAX);
        let (kind, _): (u64, serde::de::IgnoredAny) = serde_cbor::from_slice(bytes)
            .map_err(|error| WireError::Codec(codec::Error::Invalid(error.to_string())))?;
        match kind {
            0 => {
                let (_, ProposalWire(height, round, pol_round, proposer, signature, block)): (u8, ProposalWire) =
                    codec::decode_with(bytes, limit, items)?;
                let block = Block::from_bytes(&block)?;
                let proposal = Proposal {
                    height: Height(height),
                    round: round_from_u64(round)?,
                    block,
                    pol_round: round_from_wire(pol_round).ok_or(WireError::Field("pol_round"))?,
                    proposer: Address(proposer),
                };
                Ok(Message::Proposal(SignedMessage::new(proposal, signature.sig())))
            }
            1 => {
                let (_, wire): (u8, VoteWire) = codec::decode_with(bytes, 1024, 16)?;
                Ok(Message::Vote(vote_from_wire(wire)?))
            }
            2 => {
                let (_, CommitWire(height, round, value_id, signatures)): (u8, CommitWire) =
                    codec::decode_with(bytes, limit, CERTIFICATE_SIGNATURES_MAX)?;
                Ok(Message::Polka(PolkaCertificate {
                    height: Height(height),
                    round: round_from_u64(round)?,
                    value_id,
                    polka_signatures: signatures
                        .into_iter()
                        .map(|(address, signature)| PolkaSignature::new(Address(address), signature.sig()))
                        .collect(),
                }))
            }
            3 => {
                let (_, RoundWire(height, round, cert_type, signatures)): (u8, RoundWire) =
                    codec::decode_with(bytes, limit, CERTIFICATE_SIGNATURES_MAX)?;
                let cert_type = match cert_type {
                    0 => RoundCertificateType::Skip,
                    1 => RoundCertificateType::Precommit,
                    _ => return Err(WireError::Field("cert_type")),
                };
                let round_signatures = signatures
                    .into_iter()
                    .map(|(vote_type, value, address, signature)| {
                        Ok(RoundSignature::new(
                            vote_type_from_wire(vote_type).ok_or(WireError::Field("vote type"))?,
                            value_from_wire(&value).ok_or(WireError::Field("value"))?,
                            Address(address),
                            signature.sig(),
                        ))
                    })
                    .collect::<Result<Vec<_>, WireError>>()?;
                Ok(Message::Round(RoundCertificate {
                    height: Height(height),
                    round: round_from_u64(round)?,
                    cert_type,
                    round_signatures,
                }))
            }
            other => Err(WireError::Kind(other)),
        }
    }
}

fn round_from_u64(round: u64) -> Result<Round, WireError> {
    u32::try_from(round).map(Round::new).map_err(|_| WireError::Field("round"))
}

fn vote_wire(signed: &SignedMessage<Kos, Vote>) -> VoteWire {
    let vote = &signed.message;
    VoteWire(
        vote.height.0,
        u64::from(vote.round.as_u32().unwrap_or(0)),
        vote_type_to_wire(vote.vote_type),
        Bstr::from(value_to_wire(&vote.value)),
        vote.validator.0,
        SigWire::from(&signed.signature),
    )
}

fn vote_from_wire(
    VoteWire(height, round, vote_type, value, validator, signature): VoteWire,
) -> Result<SignedMessage<Kos, Vote>, WireError> {
    let vote = Vote {
        height: Height(height),
        round: round_from_u64(round)?,
        vote_type: vote_type_from_wire(vote_type).ok_or(WireError::Field("vote type"))?,
        value: value_from_wire(&value).ok_or(WireError::Field("value"))?,
        validator: Address(validator),
    };
    Ok(SignedMessage::new(vote, signature.sig()))
}

/// Encodes a commit certificate.
pub fn certificate_to_bytes(certificate: &CommitCertificate<Kos>) -> Vec<u8> {
    codec::encode(&CommitWire(
        certificate.height.0,
        u64::from(certificate.round.as_u32().unwrap_or(0)),
        certificate.value_id,
        certificate
            .commit_signatures
            .iter()
            .map(|signature| (signature.address.0, SigWire::from(&signature.signature)))
            .collect(),
    ))
}

/// Decodes a commit certificate (its signatures are checked by the caller against a validator set).
pub fn certificate_from_bytes(bytes: &[u8]) -> Result<CommitCertificate<Kos>, WireError> {
    let CommitWire(height, round, value_id, signatures) =
        codec::decode_with(bytes, 128 * 1024, CERTIFICATE_SIGNATURES_MAX)?;
    Ok(CommitCertificate {
        height: Height(height),
        round: round_from_u64(round)?,
        value_id,
        commit_signatures: signatures
            .into_iter()
            .map(|(address, signature)| CommitSignature::new(Address(address), signature.sig()))
            .collect(),
    })
}

#[derive(Serialize, Deserialize)]
struct ProposedWire(u64, u64, u64, PublicKey, bool, Bstr);

/// Encodes a WAL entry.
pub fn wal_to_bytes(entry: &WalEntry<Kos>) -> Vec<u8> {
    match entry {
        WalEntry::ConsensusMsg(message) => {
            codec::encode(&(0u8, Bstr::from(Message::from_consensus(message.clone()).to_bytes())))
        }
        WalEntry::Timeout(timeout) => {
            let kind: u8 = match timeout.kind {
                TimeoutKind::Propose => 0,
                TimeoutKind::Prevote => 1,
                TimeoutKind::Precommit => 2,
                TimeoutKind::Rebroadcast => 3,
            };
            codec::encode(&(1u8, (kind, round_to_wire(timeout.round))))
        }
        WalEntry::ProposedValue(value) => codec::encode(&(
            2u8,
            ProposedWire(
                value.height.0,
                u64::from(value.round.as_u32().unwrap_or(0)),
                round_to_wire(value.valid_round),
                value.proposer.0,
                value.validity.is_valid(),
                Bstr::from(value.value.to_bytes()),
            ),
        )),
    }
}

/// Decodes a WAL entry.
pub fn wal_from_bytes(bytes: &[u8]) -> Result<WalEntry<Kos>, WireError> {
    let limit = BLOCK_BYTES_LIMIT + 8192;
    let (kind, _): (u64, serde::de::IgnoredAny) =
        serde_cbor::from_slice(bytes).map_err(|error| WireError::Codec(codec::Error::Invalid(error.to_string())))?;
    match kind {
        0 => {
            let (_, message): (u8, Bstr) = codec::decode_with(bytes, limit, 16)?;
            match Message::from_bytes(&message)? {
                Message::Proposal(proposal) => Ok(WalEntry::ConsensusMsg(SignedConsensusMsg::Proposal(proposal))),
                Message::Vote(vote) => Ok(WalEntry::ConsensusMsg(SignedConsensusMsg::Vote(vote))),
                _ => Err(WireError::Field("wal message")),
            }
        }
        1 => {
            let (_, (kind, round)): (u8, (u8, u64)) = codec::decode_with(bytes, 64, 16)?;
            let kind = match kind {
                0 => TimeoutKind::Propose,
                1 => TimeoutKind::Prevote,
                2 => TimeoutKind::Precommit,
                3 => TimeoutKind::Rebroadcast,
                _ => return Err(WireError::Field("timeout kind")),
            };
            Ok(WalEntry::Timeout(Timeout::new(round_from_wire(round).ok_or(WireError::Field("round"))?, kind)))
        }
        2 => {
            let (_, ProposedWire(height, round, valid_round, proposer, valid, block)): (u8, ProposedWire) =
                codec::decode_with(bytes, limit, BLOCK_ENTRIES_LIMIT)?;
            Ok(WalEntry::ProposedValue(ProposedValue {
                height: Height(height),
                round: round_from_u64(round)?,
                valid_round: round_from_wire(valid_round).ok_or(WireError::Field("valid_round"))?,
                proposer: Address(proposer),
                value: Block::from_bytes(&block)?,
                validity: Validity::from_bool(valid),
            }))
        }
        other => Err(WireError::Kind(other)),
    }
}
