//! Blocks: a header and the ordered entries (signed envelopes, kept as their exact bytes).
//!
//! ```text
//! header = [version, network, height, time_ms, parent, proposer, entries_root, entry_count, state_root, validators_hash]
//! block  = [header, [entry bytes (bstr), ...]]
//! hash   = blake3("kos/v1/block" || 0x00 || header bytes)
//! entries_root = Merkle root (crate::hash) of the entries' bytes
//! ```

use std::sync::Arc;

use protocol::codec;
use protocol::{NetworkId, PublicKey};
use serde::{Deserialize, Serialize};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

use crate::hash::{self, Hash};

/// The first protocol version: the version of every block until an upgrade (PROTOCOL.md §10, *Protocol versions*).
pub const BLOCK_VERSION: u8 = 1;
/// The highest protocol version this kos supports. Version 2 has the rules of version 1: it exists so that an
/// upgrade is exercised end to end.
pub const PROTOCOL_VERSION_MAX: u8 = 2;
/// Decoding bound on the number of entries of a block, whatever the genesis says.
pub const BLOCK_ENTRIES_LIMIT: u64 = 100_000;
/// Decoding bound on a block's bytes, whatever the genesis says.
pub const BLOCK_BYTES_LIMIT: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Header {
    pub version: u8,
    pub network: NetworkId,
    pub height: u64,
    /// Unix milliseconds, chosen by the proposer: later than the parent's, not ahead of the validators' clocks.
    pub time_ms: u64,
    /// The hash of block `height - 1`; the genesis hash for block 1.
    pub parent: Hash,
    pub proposer: PublicKey,
    pub entries_root: Hash,
    pub entry_count: u32,
    /// The state root after applying this block's entries.
    pub state_root: Hash,
    /// The hash of the validator set that certifies this block (see [`crate::state::validators_hash`]).
    pub validators_hash: Hash,
}

impl Header {
    pub fn hash(&self) -> Hash {
        hash::tagged("kos/v1/block", &[&codec::encode(self)])
    }
}

/// The encoded form of a block.
#[derive(Serialize, Deserialize)]
struct BlockWire(Header, Vec<serde_bytes::ByteBuf>);

#[derive(Serialize)]
struct BlockRef<'a>(&'a Header, &'a [serde_bytes::ByteBuf]);

/// A block and its hash, shared cheaply (the consensus engine clones values often).
#[derive(Debug, Clone)]
pub struct Block(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    header: Header,
    entries: Vec<serde_bytes::ByteBuf>,
    hash: Hash,
}

impl PartialEq for Block {
    fn eq(&self, other: &Block) -> bool {
        self.0.hash == other.0.hash
    }
}
impl Eq for Block {}
impl PartialOrd for Block {
    fn partial_cmp(&self, other: &Block) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Block {
    fn cmp(&self, other: &Block) -> std::cmp::Ordering {
        self.0.hash.cmp(&other.0.hash)
    }
}

/// Why bytes are not a block.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("block encoding: {0}")]
    Codec(#[from] codec::Error),
    #[error("block version {0} is not supported")]
    Version(u8),
    #[error("header says {header} entries, the block has {found}")]
    Count { header: u32, found: usize },
    #[error("entries root does not match the entries")]
    EntriesRoot,
}

impl Block {
    /// Builds a block: computes the entries root and count into the header.
    pub fn new(mut header: Header, entries: Vec<Vec<u8>>) -> Block {
        header.entries_root = hash::merkle_root(&entries);
        header.entry_count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let hash = header.hash();
        Block(Arc::new(Inner { header, entries: entries.into_iter().map(serde_bytes::ByteBuf::from).collect(), hash }))
    }

    pub fn header(&self) -> &Header {
        &self.0.header
    }

    pub fn hash(&self) -> Hash {
        self.0.hash
    }

    pub fn height(&self) -> u64 {
        self.0.header.height
    }

    pub fn entries(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.0.entries.iter().map(|entry| entry.as_slice())
    }

    pub fn entry_count(&self) -> usize {
        self.0.entries.len()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(&BlockRef(&self.0.header, &self.0.entries))
    }

    /// Decodes a block and checks that the header commits to its entries.
    pub fn from_bytes(bytes: &[u8]) -> Result<Block, DecodeError> {
        let BlockWire(header, entries) = codec::decode_with(bytes, BLOCK_BYTES_LIMIT, BLOCK_ENTRIES_LIMIT)?;
        if header.version == 0 || header.version > PROTOCOL_VERSION_MAX {
            return Err(DecodeError::Version(header.version));
        }
        if usize::try_from(header.entry_count).ok() != Some(entries.len()) {
            return Err(DecodeError::Count { header: header.entry_count, found: entries.len() });
        }
        if hash::merkle_root(&entries) != header.entries_root {
            return Err(DecodeError::EntriesRoot);
        }
        let hash = header.hash();
        Ok(Block(Arc::new(Inner { header, entries, hash })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: BLOCK_VERSION,
            network: NetworkId::new("kos-test").unwrap(),
            height: 7,
            time_ms: 1_000,
            parent: Hash([1; 32]),
            proposer: PublicKey([2; 32]),
            entries_root: Hash::ZERO,
            entry_count: 0,
            state_root: Hash([3; 32]),
            validators_hash: Hash([4; 32]),
        }
    }

    #[test]
    fn blocks_round_trip_and_commit_to_entries() {
        let block = Block::new(header(), vec![vec![1, 2, 3], vec![4]]);
        let bytes = block.to_bytes();
        let again = Block::from_bytes(&bytes).unwrap();
        assert_eq!(again, block);
        assert_eq!(again.entries().collect::<Vec<_>>(), vec![&[1u8, 2, 3][..], &[4][..]]);
        // Swap the entries' order without fixing the root.
        let tampered = Block(Arc::new(Inner {
            header: block.header().clone(),
            entries: vec![serde_bytes::ByteBuf::from(vec![4]), serde_bytes::ByteBuf::from(vec![1, 2, 3])],
            hash: block.hash(),
        }));
        assert!(matches!(Block::from_bytes(&tampered.to_bytes()), Err(DecodeError::EntriesRoot)));
        let mut other = header();
        other.height = 8;
        assert_ne!(Block::new(other, vec![]).hash(), Block::new(header(), vec![]).hash());
    }
}
