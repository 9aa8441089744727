//! blake3 hashes with domain separation, and the binary Merkle tree that commits to a block's entries.
//!
//! ```text
//! leaf(x)     = blake3(0x00 || x)
//! node(l, r)  = blake3(0x01 || l || r)
//! root([])    = blake3("kos/v1/merkle/empty")
//! root([x])   = leaf(x)
//! root(xs)    = node(root(first k), root(rest))  where k is the largest power of two below len(xs)
//! ```
//! This is the tree of RFC 6962 (Certificate Transparency) §2.1 with blake3 in place of SHA-256.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A 32-byte blake3 hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Hash(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl Hash {
    /// All zeros: the parent of nothing.
    pub const ZERO: Hash = Hash([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Hash> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Hash(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// `blake3(domain || 0x00 || parts...)`.
pub fn tagged(domain: &str, parts: &[&[u8]]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain.as_bytes());
    hasher.update(&[0]);
    for part in parts {
        hasher.update(part);
    }
    Hash(*hasher.finalize().as_bytes())
}

fn leaf(item: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[0]);
    hasher.update(item);
    Hash(*hasher.finalize().as_bytes())
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[1]);
    hasher.update(&left.0);
    hasher.update(&right.0);
    Hash(*hasher.finalize().as_bytes())
}

/// The Merkle root of a list of byte strings (see the module docs).
pub fn merkle_root<T: AsRef<[u8]>>(items: &[T]) -> Hash {
    if items.is_empty() {
        return Hash(*blake3::hash(b"kos/v1/merkle/empty").as_bytes());
    }
    let mut level: Vec<Hash> = items.iter().map(|item| leaf(item.as_ref())).collect();
    subtree_root(&mut level)
}

/// Root of already-hashed leaves, splitting at the largest power of two below the length (RFC 6962).
fn subtree_root(hashes: &mut [Hash]) -> Hash {
    match hashes.len() {
        0 => Hash::ZERO,
        1 => hashes[0],
        len => {
            let split = (len - 1).checked_ilog2().map_or(1, |bits| 1usize << bits);
            let (left, right) = hashes.split_at_mut(split);
            let left = subtree_root(left);
            let right = subtree_root(right);
            node(&left, &right)
        }
    }
}

/// The sibling hashes that prove item `index` is in the tree of `items`, leaf to root.
pub fn merkle_proof<T: AsRef<[u8]>>(items: &[T], index: usize) -> Option<Vec<Hash>> {
    if index >= items.len() {
        return None;
    }
    let mut hashes: Vec<Hash> = items.iter().map(|item| leaf(item.as_ref())).collect();
    let mut proof = Vec::new();
    collect_proof(&mut hashes, index, &mut proof);
    Some(proof)
}

fn collect_proof(hashes: &mut [Hash], index: usize, proof: &mut Vec<Hash>) {
    if hashes.len() <= 1 {
        return;
    }
    let split = (hashes.len() - 1).checked_ilog2().map_or(1, |bits| 1usize << bits);
    let (left, right) = hashes.split_at_mut(split);
    if index < split {
        collect_proof(left, index, proof);
        proof.push(subtree_root(right));
    } else {
        collect_proof(right, index - split, proof);
        proof.push(subtree_root(left));
    }
}

/// Checks a proof from [`merkle_proof`] for item `index` of a tree with `count` items.
pub fn merkle_verify(root: &Hash, item: &[u8], index: usize, count: usize, proof: &[Hash]) -> bool {
    fn walk(hash: Hash, index: usize, count: usize, proof: &[Hash]) -> Option<Hash> {
        if count <= 1 {
            return proof.is_empty().then_some(hash);
        }
        let split = (count - 1).checked_ilog2().map_or(1, |bits| 1usize << bits);
        let (sibling, rest) = proof.split_last()?;
        if index < split {
            Some(node(&walk(hash, index, split, rest)?, sibling))
        } else {
            Some(node(sibling, &walk(hash, index - split, count - split, rest)?))
        }
    }
    index < count && walk(leaf(item), index, count, proof).as_ref() == Some(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proof_verifies_and_a_wrong_item_does_not() {
        for count in 1..40usize {
            let items: Vec<Vec<u8>> = (0..count).map(|i| vec![i as u8; i % 5 + 1]).collect();
            let root = merkle_root(&items);
            for index in 0..count {
                let proof = merkle_proof(&items, index).unwrap();
                assert!(merkle_verify(&root, &items[index], index, count, &proof), "count {count} index {index}");
                assert!(!merkle_verify(&root, b"other", index, count, &proof));
                if count > 1 {
                    assert!(!merkle_verify(&root, &items[index], (index + 1) % count, count, &proof));
                }
            }
        }
    }

    #[test]
    fn roots_follow_rfc6962_shape() {
        let items = [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        let expected = node(&node(&leaf(b"a"), &leaf(b"b")), &leaf(b"c"));
        assert_eq!(merkle_root(&items), expected);
        assert_eq!(merkle_root(&items[..1]), leaf(b"a"));
        assert_ne!(merkle_root::<Vec<u8>>(&[]), merkle_root(&[Vec::new()]));
    }
}
