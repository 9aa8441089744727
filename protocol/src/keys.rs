//! ed25519 keys (ed25519-dalek): signing digests, strict verification, and batch verification that agrees with it
//! for every signature an honest signer makes.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::limits::BATCH_SIGNATURES_MAX;
use crate::types::{PublicKey, Signature};

/// Why a signature does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The author's key is not a valid point, or has small order (forgeable).
    #[error("the public key is not a valid ed25519 key")]
    InvalidKey,
    /// The signature does not verify under the key (RFC 8032 with the checks of `verify_strict`).
    #[error("the signature does not verify")]
    Mismatch,
}

/// An ed25519 signing key. Its secret is zeroized on drop.
pub struct Keypair(SigningKey);

impl Keypair {
    /// A new key from the operating system's random source.
    pub fn generate() -> Keypair {
        Keypair(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// The key for a 32-byte secret seed (RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> Keypair {
        Keypair(SigningKey::from_bytes(seed))
    }

    /// The 32-byte secret seed, for writing key files.
    pub fn seed(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs a 32-byte digest (PureEdDSA with the digest as the message).
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Signature {
        Signature(self.0.sign(digest).to_bytes())
    }
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.public())
    }
}

/// Parses a public key, refusing invalid points and keys of small order.
pub fn verifying_key(key: &PublicKey) -> Result<VerifyingKey, SignatureError> {
    let key = VerifyingKey::from_bytes(&key.0).map_err(|_| SignatureError::InvalidKey)?;
    if key.is_weak() {
        return Err(SignatureError::InvalidKey);
    }
    Ok(key)
}

/// The normative check: RFC 8032 verification as `ed25519_dalek::VerifyingKey::verify_strict` does it
/// (cofactorless equation; rejects S ≥ ℓ, small-order keys and small-order R).
pub fn verify(key: &PublicKey, digest: &[u8; 32], signature: &Signature) -> Result<(), SignatureError> {
    let key = verifying_key(key)?;
    let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(digest, &signature).map_err(|_| SignatureError::Mismatch)
}

/// One signature to verify in a batch.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub key: &'a PublicKey,
    pub digest: &'a [u8; 32],
    pub signature: &'a Signature,
}

/// Verifies many signatures, returning one result per item, in order.
///
/// Items are checked in chunks of [`BATCH_SIGNATURES_MAX`] with one multiscalar equation each; a chunk that fails
/// is checked item by item with [`verify`], so each result names exactly the bad signatures. Before the batch
/// equation every key and every R is checked for small order, as [`verify`] does. The batch equation can still
/// accept a signature that [`verify`] rejects if its author deliberately built it with a mixed-order R or key
/// (impossible for a standard signer), so consensus-critical checks (block validity, ledger export) use [`verify`].
pub fn verify_batch(items: &[Item<'_>]) -> Vec<Result<(), SignatureError>> {
    let mut results = Vec::with_capacity(items.len());
    for chunk in items.chunks(BATCH_SIGNATURES_MAX) {
        results.extend(verify_chunk(chunk));
    }
    results
}

fn verify_chunk(chunk: &[Item<'_>]) -> Vec<Result<(), SignatureError>> {
    let one_by_one =
        |chunk: &[Item<'_>]| chunk.iter().map(|item| verify(item.key, item.digest, item.signature)).collect();
    let mut keys = Vec::with_capacity(chunk.len());
    let mut signatures = Vec::with_capacity(chunk.len());
    for item in chunk {
        let (Ok(key), false) = (verifying_key(item.key), small_order_r(item.signature)) else {
            return one_by_one(chunk);
        };
        keys.push(key);
        signatures.push(ed25519_dalek::Signature::from_bytes(&item.signature.0));
    }
    let messages: Vec<&[u8]> = chunk.iter().map(|item| item.digest.as_slice()).collect();
    match ed25519_dalek::verify_batch(&messages, &signatures, &keys) {
        Ok(()) => vec![Ok(()); chunk.len()],
        Err(_) => one_by_one(chunk),
    }
}

/// True when the signature's R does not decode or has small order (what `verify_strict` rejects).
fn small_order_r(signature: &Signature) -> bool {
    let mut r = [0u8; 32];
    r.copy_from_slice(&signature.0[..32]);
    match curve25519_dalek::edwards::CompressedEdwardsY(r).decompress() {
        Some(point) => point.is_small_order(),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let keypair = Keypair::from_seed(&[9; 32]);
        let digest = [1u8; 32];
        let signature = keypair.sign_digest(&digest);
        assert_eq!(verify(&keypair.public(), &digest, &signature), Ok(()));
        assert_eq!(verify(&keypair.public(), &[2u8; 32], &signature), Err(SignatureError::Mismatch));
        // The identity point (small order) is refused as a key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(verify(&PublicKey(identity), &digest, &signature), Err(SignatureError::InvalidKey));
    }

    #[test]
    fn batch_names_exactly_the_bad_signatures() {
        let keypairs: Vec<Keypair> = (0..300u16).map(|i| Keypair::from_seed(&[i as u8; 32])).collect();
        let digests: Vec<[u8; 32]> = (0..300u16).map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes()).collect();
        let mut signatures: Vec<Signature> =
            keypairs.iter().zip(&digests).map(|(keypair, digest)| keypair.sign_digest(digest)).collect();
        signatures[7].0[40] ^= 1;
        signatures[290] = signatures[289];
        let publics: Vec<PublicKey> = keypairs.iter().map(Keypair::public).collect();
        let items: Vec<Item<'_>> =
            (0..300).map(|i| Item { key: &publics[i], digest: &digests[i], signature: &signatures[i] }).collect();
        let results = verify_batch(&items);
        for (i, result) in results.iter().enumerate() {
            let expected = verify(&publics[i], &digests[i], &signatures[i]);
            assert_eq!(*result, expected, "item {i}");
            assert_eq!(result.is_err(), i == 7 || i == 290, "item {i}");
        }
    }
}
