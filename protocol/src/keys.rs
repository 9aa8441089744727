//! ed25519 keys: signing with ed25519-dalek; verification by the cofactored rule of PROTOCOL.md §3 on
//! curve25519-dalek's points, one signature at a time or many in one equation, with the same verdicts.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::RngCore;
use sha2::{Digest, Sha512};

use crate::limits::BATCH_SIGNATURES_MAX;
use crate::types::{PublicKey, Signature};

/// Why a signature does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The author's key is not a valid point, or has small order (forgeable).
    #[error("the public key is not a valid ed25519 key")]
    InvalidKey,
    /// The signature does not verify under the key (PROTOCOL.md §3).
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

/// Parses a public key, refusing encodings that are not canonical, points that do not decode and keys of small
/// order (PROTOCOL.md §3).
pub fn verifying_key(key: &PublicKey) -> Result<VerifyingKey, SignatureError> {
    key_point(key)?;
    VerifyingKey::from_bytes(&key.0).map_err(|_| SignatureError::InvalidKey)
}

/// The normative check (PROTOCOL.md §3): `A` and `R` canonical encodings of points not of small order, `S < ℓ`, and
/// the cofactored equation `[8]([S]B − R − [k]A) = 0` with `k = SHA-512(R ‖ A ‖ digest) mod ℓ` — the equation of
/// ZIP 215, under which one signature and a batch of signatures always get the same verdict.
pub fn verify(key: &PublicKey, digest: &[u8; 32], signature: &Signature) -> Result<(), SignatureError> {
    let a = key_point(key)?;
    let (r, s) = signature_parts(signature)?;
    let k = challenge(signature, key, digest);
    let check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-a, &s) - r;
    if check.mul_by_cofactor().is_identity() { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// One signature to verify in a batch.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub key: &'a PublicKey,
    pub digest: &'a [u8; 32],
    pub signature: &'a Signature,
}

/// Verifies many signatures, returning one result per item, in order, each the verdict of [`verify`].
///
/// Items are checked in chunks of [`BATCH_SIGNATURES_MAX`] with one multiscalar equation each,
/// `[8](Σ zᵢRᵢ + Σ (zᵢkᵢ)Aᵢ − (Σ zᵢSᵢ)B) = 0`, with 128-bit coefficients `zᵢ` drawn from the operating system's
/// random source for every chunk. A chunk whose signatures all pass [`verify`] always passes; a chunk holding one
/// that fails passes with probability below 2⁻¹²⁵, so the verdicts are [`verify`]'s. A chunk that fails is
/// checked item by item, so each result names exactly the bad signatures.
pub fn verify_batch(items: &[Item<'_>]) -> Vec<Result<(), SignatureError>> {
    let mut results = Vec::with_capacity(items.len());
    for chunk in items.chunks(BATCH_SIGNATURES_MAX) {
        results.extend(verify_chunk(chunk));
    }
    results
}

fn verify_chunk(chunk: &[Item<'_>]) -> Vec<Result<(), SignatureError>> {
    // Encodings, small order and S < ℓ first: an item that fails them gets its error and stays out of the equation.
    let mut results: Vec<Result<(), SignatureError>> = Vec::with_capacity(chunk.len());
    let mut parsed = Vec::with_capacity(chunk.len());
    for item in chunk {
        match key_point(item.key).and_then(|a| Ok((a, signature_parts(item.signature)?))) {
            Ok((a, (r, s))) => {
                parsed.push((item, a, r, s));
                results.push(Ok(()));
            }
            Err(error) => results.push(Err(error)),
        }
    }
    if parsed.is_empty() {
        return results;
    }
    let mut seed = [0u8; 32];
    if rand_core::OsRng.try_fill_bytes(&mut seed).is_err() {
        // No randomness: the coefficients would be predictable, so verify one by one.
        return chunk.iter().map(|item| verify(item.key, item.digest, item.signature)).collect();
    }
    let mut coefficients = blake3::Hasher::new_keyed(&seed);
    for (item, ..) in &parsed {
        coefficients.update(&item.key.0).update(item.digest).update(&item.signature.0);
    }
    let mut coefficients = coefficients.finalize_xof();
    let mut scalars = Vec::with_capacity(2 * parsed.len() + 1);
    let mut points = Vec::with_capacity(2 * parsed.len() + 1);
    let mut s_sum = Scalar::ZERO;
    for (item, a, r, s) in &parsed {
        let mut z = [0u8; 32];
        coefficients.fill(&mut z[..16]);
        let z = Scalar::from_bytes_mod_order(z);
        let k = challenge(item.signature, item.key, item.digest);
        s_sum += z * s;
        scalars.push(z);
        points.push(*r);
        scalars.push(z * k);
        points.push(*a);
    }
    scalars.push(-s_sum);
    points.push(ED25519_BASEPOINT_POINT);
    let sum = EdwardsPoint::vartime_multiscalar_mul(&scalars, &points);
    if sum.mul_by_cofactor().is_identity() {
        return results;
    }
    chunk.iter().map(|item| verify(item.key, item.digest, item.signature)).collect()
}

/// `k = SHA-512(R ‖ A ‖ digest) mod ℓ` (RFC 8032 §5.1.7, the digest as the message).
fn challenge(signature: &Signature, key: &PublicKey, digest: &[u8; 32]) -> Scalar {
    let hash = Sha512::new().chain_update(&signature.0[..32]).chain_update(key.0).chain_update(digest).finalize();
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&hash);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// R (canonical, decodes, not of small order) and S (< ℓ).
fn signature_parts(signature: &Signature) -> Result<(EdwardsPoint, Scalar), SignatureError> {
    let mut r = [0u8; 32];
    r.copy_from_slice(&signature.0[..32]);
    let r = point(&r).ok_or(SignatureError::Mismatch)?;
    let mut s = [0u8; 32];
    s.copy_from_slice(&signature.0[32..]);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)).ok_or(SignatureError::Mismatch)?;
    Ok((r, s))
}

/// A point from its encoding when the encoding is canonical (`y < p`; with the small-order check this also rules
/// out the only points of `x = 0`) and the point is not of small order.
fn point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    // y ≥ p = 2²⁵⁵ − 19 exactly when the low 255 bits are 0x7fff…ffed or more.
    let high = bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|byte| *byte == 0xff);
    if high && bytes[0] >= 0xed {
        return None;
    }
    CompressedEdwardsY(*bytes).decompress().filter(|point| !point.is_small_order())
}

/// Decoded keys, so that an author who signs often costs one point decompression, not one per message. Bounded:
/// emptied when full.
const KEY_CACHE_MAX: usize = 16_384;

fn key_point(key: &PublicKey) -> Result<EdwardsPoint, SignatureError> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], EdwardsPoint>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Ok(cache) = cache.lock()
        && let Some(point) = cache.get(&key.0)
    {
        return Ok(*point);
    }
    let point = point(&key.0).ok_or(SignatureError::InvalidKey)?;
    if let Ok(mut cache) = cache.lock() {
        if cache.len() >= KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key.0, point);
    }
    Ok(point)
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

    #[test]
    fn signature_cases_get_their_verdicts_alone_and_in_batches() {
        let cases = crate::vectors::signature_cases();
        for case in &cases {
            assert_eq!(verify(&case.key, &case.digest, &case.signature).is_ok(), case.valid, "{}", case.name);
        }
        // In batches among honest signatures, many times over (fresh coefficients each time): the same verdicts.
        let keypairs: Vec<Keypair> = (0..20u8).map(|i| Keypair::from_seed(&[i; 32])).collect();
        let honest: Vec<(PublicKey, [u8; 32], Signature)> = keypairs
            .iter()
            .map(|keypair| {
                let digest = *blake3::hash(keypair.public().as_bytes()).as_bytes();
                (keypair.public(), digest, keypair.sign_digest(&digest))
            })
            .collect();
        for round in 0..64 {
            let mut items: Vec<Item<'_>> =
                honest.iter().map(|(key, digest, signature)| Item { key, digest, signature }).collect();
            let at = round % items.len();
            for case in &cases {
                items.insert(at, Item { key: &case.key, digest: &case.digest, signature: &case.signature });
            }
            let results = verify_batch(&items);
            for (item, result) in items.iter().zip(&results) {
                assert_eq!(*result, verify(item.key, item.digest, item.signature), "round {round}");
            }
            assert_eq!(results.iter().filter(|result| result.is_err()).count(), 4, "round {round}");
        }
    }

    #[test]
    fn the_rule_differs_from_verify_strict_only_on_mixed_order_points() {
        let cases = crate::vectors::signature_cases();
        for case in &cases {
            let strict = VerifyingKey::from_bytes(&case.key.0).ok().is_some_and(|key| {
                key.verify_strict(&case.digest, &ed25519_dalek::Signature::from_bytes(&case.signature.0)).is_ok()
            });
            let mixed = case.name.starts_with("mixed-order");
            assert_eq!(strict, case.valid && !mixed, "{}", case.name);
        }
        // Honest and tampered signatures: the same verdicts as `verify_strict`.
        for i in 0..200u32 {
            let keypair = Keypair::from_seed(blake3::hash(&i.to_le_bytes()).as_bytes());
            let digest = *blake3::hash(&(i + 1000).to_le_bytes()).as_bytes();
            let mut signature = keypair.sign_digest(&digest);
            if i % 2 == 1 {
                signature.0[(i as usize * 7) % 64] ^= 1 << (i % 8);
            }
            let strict = VerifyingKey::from_bytes(&keypair.public().0)
                .unwrap()
                .verify_strict(&digest, &ed25519_dalek::Signature::from_bytes(&signature.0))
                .is_ok();
            assert_eq!(verify(&keypair.public(), &digest, &signature).is_ok(), strict, "signature {i}");
            assert_eq!(strict, i % 2 == 0, "signature {i}");
        }
    }

    #[test]
    fn encodings_must_be_canonical() {
        // y = 3 is on the curve and not of small order; y + p encodes the same point, and curve25519-dalek decodes
        // it, but the rule refuses it as a key and as R.
        let mut canonical = [0u8; 32];
        canonical[0] = 3;
        let mut high = [0xffu8; 32];
        high[0] = 0xf0; // 3 + 2^255 - 19 = 2^255 - 16
        high[31] = 0x7f;
        let decoded = CompressedEdwardsY(high).decompress().unwrap();
        assert_eq!(decoded, CompressedEdwardsY(canonical).decompress().unwrap());
        assert!(point(&canonical).is_some());
        assert!(point(&high).is_none());
        assert_eq!(key_point(&PublicKey(high)), Err(SignatureError::InvalidKey));
        let mut signature = Signature([0; 64]);
        signature.0[..32].copy_from_slice(&high);
        assert_eq!(signature_parts(&signature).err(), Some(SignatureError::Mismatch));
    }

    proptest::proptest! {
        /// Signatures with any small-order component mixed into R and the key: valid exactly when nothing was
        /// changed after signing, alone and in a batch among honest signatures.
        #[test]
        fn mixed_order_signatures_get_one_verdict_alone_and_in_batches(
            a in proptest::array::uniform32(proptest::num::u8::ANY),
            r in proptest::array::uniform32(proptest::num::u8::ANY),
            digest in proptest::array::uniform32(proptest::num::u8::ANY),
            torsion_r in 0..8usize,
            torsion_a in 0..8usize,
            change in 0..4u8,
            bit in 0..256usize,
        ) {
            use curve25519_dalek::constants::EIGHT_TORSION;
            let (a, r) = (Scalar::from_bytes_mod_order(a), Scalar::from_bytes_mod_order(r));
            let r_point = EdwardsPoint::mul_base(&r) + EIGHT_TORSION[torsion_r];
            let key = PublicKey((EdwardsPoint::mul_base(&a) + EIGHT_TORSION[torsion_a]).compress().to_bytes());
            let mut signature = Signature([0; 64]);
            signature.0[..32].copy_from_slice(&r_point.compress().to_bytes());
            let s = r + challenge(&signature, &key, &digest) * a;
            signature.0[32..].copy_from_slice(s.as_bytes());
            let mut digest = digest;
            // 0: unchanged; 1: a bit of S; 2: a bit of the digest; 3: a bit of R.
            match change {
                1 => signature.0[32 + bit / 8] ^= 1 << (bit % 8),
                2 => digest[bit / 8] ^= 1 << (bit % 8),
                3 => signature.0[bit / 8] ^= 1 << (bit % 8),
                _ => {}
            }
            let alone = verify(&key, &digest, &signature);
            proptest::prop_assert_eq!(alone.is_ok(), change == 0);
            let honest = Keypair::from_seed(&[7; 32]);
            let honest_digest = [9u8; 32];
            let honest_signature = honest.sign_digest(&honest_digest);
            let public = honest.public();
            let items = [
                Item { key: &public, digest: &honest_digest, signature: &honest_signature },
                Item { key: &key, digest: &digest, signature: &signature },
                Item { key: &public, digest: &honest_digest, signature: &honest_signature },
            ];
            proptest::prop_assert_eq!(verify_batch(&items), vec![Ok(()), alone, Ok(())]);
        }
    }
}
