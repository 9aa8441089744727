//! PROTOCOL.md's test vectors are the golden tests of the format: the code must produce them byte for byte, and
//! they must verify with nothing but blake3 and ed25519 applied as PROTOCOL.md describes.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use protocol::{Config, Envelope, NetworkId, validate, vectors};

/// The text blocks of PROTOCOL.md §12 that start with `first_key: name`, as key → value maps.
fn blocks(first_key: &str) -> Vec<BTreeMap<String, String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md");
    let text = std::fs::read_to_string(path).expect("PROTOCOL.md at the repository root");
    let prefix = format!("{first_key}: ");
    let mut blocks = Vec::new();
    let mut current: Option<BTreeMap<String, String>> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix(&prefix) {
            current = Some(BTreeMap::from([(first_key.to_owned(), name.to_owned())]));
        } else if line.starts_with("```") {
            blocks.extend(current.take());
        } else if let (Some(block), Some((key, value))) = (current.as_mut(), line.split_once(": ")) {
            block.insert(key.to_owned(), value.to_owned());
        }
    }
    blocks
}

/// A generated block as the key → value map [`blocks`] reads.
fn as_map(block: &str) -> BTreeMap<String, String> {
    block.lines().map(|line| line.split_once(": ").map(|(k, v)| (k.to_owned(), v.to_owned())).unwrap()).collect()
}

fn documented() -> Vec<BTreeMap<String, String>> {
    blocks("vector")
}

#[test]
fn protocol_md_lists_exactly_the_vectors_the_code_produces() {
    let documented = documented();
    let generated = vectors::all();
    assert_eq!(
        documented.len(),
        generated.len(),
        "PROTOCOL.md has {} vectors, the code {}",
        documented.len(),
        generated.len()
    );
    for (block, vector) in documented.iter().zip(&generated) {
        let expected = as_map(&vector.to_block());
        assert_eq!(
            block, &expected,
            "vector {} differs from PROTOCOL.md (regenerate with `kos protocol vectors`)",
            vector.name
        );
    }
}

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap()
}

#[test]
fn vectors_verify_from_the_spec_alone() {
    for block in documented() {
        let name = &block["vector"];
        let unsigned = unhex(&block["unsigned"]);
        let envelope = unhex(&block["envelope"]);
        // unsigned = envelope with 0x88 -> 0x87 and the 66 signature bytes removed.
        assert_eq!(envelope[0], 0x88, "{name}");
        assert_eq!(unsigned[0], 0x87, "{name}");
        assert_eq!(&envelope[1..envelope.len() - 66], &unsigned[1..], "{name}");
        assert_eq!(&envelope[envelope.len() - 66..envelope.len() - 64], &[0x58, 0x40], "{name}");
        // id = blake3("kos/v1/id/" || kind || 0x00 || unsigned); the kind is the name up to a '-side',
        // '-override' or '-proof' suffix.
        let kind = ["-bid", "-ask", "-override", "-upgrade", "-result", "-openings", "-device", "-ocmf"]
            .iter()
            .fold(name.as_str(), |name, suffix| name.strip_suffix(suffix).unwrap_or(name));
        let mut preimage = format!("kos/v1/id/{kind}\0").into_bytes();
        preimage.extend_from_slice(&unsigned);
        assert_eq!(blake3::hash(&preimage).to_hex().as_str(), block["id"], "{name}");
        // digest = blake3("kos/v1/sig" || 0x00 || network || 0x00 || id).
        let mut preimage = format!("kos/v1/sig\0{}\0", vectors::NETWORK).into_bytes();
        preimage.extend_from_slice(&unhex(&block["id"]));
        assert_eq!(blake3::hash(&preimage).to_hex().as_str(), block["signing-digest"], "{name}");
        // The secret seed gives the public key; the signature verifies over the digest.
        let seed: [u8; 32] = unhex(&block["secret-seed"]).try_into().unwrap();
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        assert_eq!(hex::encode(signing.verifying_key().as_bytes()), block["public-key"], "{name}");
        let key = VerifyingKey::from_bytes(&unhex(&block["public-key"]).try_into().unwrap()).unwrap();
        let signature = Signature::from_bytes(&unhex(&block["signature"]).try_into().unwrap());
        key.verify(&unhex(&block["signing-digest"]), &signature).unwrap();
        assert_eq!(&envelope[envelope.len() - 64..], signature.to_bytes(), "{name}");
        // And the validator accepts it on the vectors' network, at its creation time.
        let config = Config::new(NetworkId::new(vectors::NETWORK).unwrap());
        let validated = validate(&envelope, &config, vectors::CREATED_MS).unwrap();
        assert_eq!(validated.id.to_hex(), block["id"]);
        assert_eq!(Envelope::from_bytes(&envelope).unwrap().to_bytes(), envelope);
    }
}

#[test]
fn vector_ids_are_pinned() {
    // The offer-bid vector's id, pinned here as well: changing it is a format change and must be deliberate.
    assert_eq!(
        vectors::id("offer-bid").unwrap().to_hex(),
        "555bc65f4374ed0b92fc453add25e891a737ddeb0ff346d205f1f2f5251ce821"
    );
}

#[test]
fn protocol_md_lists_the_signature_cases_and_each_gets_its_verdict() {
    use protocol::keys::{Item, verify, verify_batch};
    use protocol::types::{PublicKey, Signature};

    let documented = blocks("signature-case");
    let generated = vectors::signature_cases();
    assert_eq!(documented.len(), generated.len());
    let mut parsed = Vec::new();
    for (block, case) in documented.iter().zip(&generated) {
        let expected = as_map(&case.to_block());
        assert_eq!(block, &expected, "signature case {} differs from PROTOCOL.md", case.name);
        let key = PublicKey(unhex(&block["public-key"]).try_into().unwrap());
        let digest: [u8; 32] = unhex(&block["digest"]).try_into().unwrap();
        let signature = Signature(unhex(&block["signature"]).try_into().unwrap());
        let valid = match block["verdict"].as_str() {
            "valid" => true,
            "invalid" => false,
            other => panic!("verdict {other}"),
        };
        assert_eq!(verify(&key, &digest, &signature).is_ok(), valid, "{}", case.name);
        parsed.push((key, digest, signature, valid));
    }
    // Both verdicts occur, and a batch of all the cases gives each its own.
    assert!(parsed.iter().any(|case| case.3) && parsed.iter().any(|case| !case.3));
    let items: Vec<Item<'_>> =
        parsed.iter().map(|(key, digest, signature, _)| Item { key, digest, signature }).collect();
    for (result, case) in verify_batch(&items).iter().zip(&parsed) {
        assert_eq!(result.is_ok(), case.3);
    }
}

#[test]
fn protocol_md_lists_the_device_cases_and_their_verdicts() {
    let documented = blocks("device-case");
    let generated = vectors::device_cases();
    assert_eq!(documented.len(), generated.len(), "regenerate with `kos protocol vectors`");
    for (block, case) in documented.iter().zip(&generated) {
        let expected = as_map(&case.to_block());
        assert_eq!(block, &expected, "device case {} differs from PROTOCOL.md", case.name);
    }
    // The ed25519 digest is what §5 says: the domain, the network, the author and the unattested reading.
    let case = &generated[0];
    let reading: protocol::message::Reading =
        protocol::codec::decode(&unhex(&documented[0]["reading"]), 16_384).unwrap();
    let mut unattested = protocol::codec::encode(&reading);
    // The reading's last item is its one-attestation array; the device signs it as the empty array.
    let attestation_start = unattested.len() - protocol::codec::encode(&reading.device).len();
    unattested.truncate(attestation_start);
    unattested.push(0x80);
    let mut preimage = format!("kos/v1/device-reading\0{}\0", vectors::NETWORK).into_bytes();
    preimage.extend_from_slice(case.author.as_bytes());
    preimage.extend_from_slice(&unattested);
    assert_eq!(hex::encode(blake3::hash(&preimage).as_bytes()), documented[0]["device-digest"]);
    let key = VerifyingKey::from_bytes(&unhex(&documented[0]["device-key"]).try_into().unwrap()).unwrap();
    let signature = Signature::from_bytes(&unhex(&documented[0]["device-signature"]).try_into().unwrap());
    key.verify(blake3::hash(&preimage).as_bytes(), &signature).unwrap();
}
