//! Entry bundles (PROTOCOL.md §9): many signed ledger entries carried as one gossip message, so that a node passing
//! on what its clients submitted pays the network's per-message costs once per bundle, not once per entry. A bundle
//! is transport only: it is not signed, and each entry in it is validated as if it had come alone.

use serde_bytes::ByteBuf;

use crate::codec::{self, Error};
use crate::limits::{BUNDLE_BYTES_MAX, BUNDLE_ENTRIES_MAX};

/// Encodes entries (each a signed envelope's bytes) as one bundle: a canonical CBOR array of byte strings.
pub fn encode(entries: &[&[u8]]) -> Vec<u8> {
    let items: Vec<&serde_bytes::Bytes> = entries.iter().map(|entry| serde_bytes::Bytes::new(entry)).collect();
    codec::encode(&items)
}

/// Decodes a bundle: canonical, at most [`BUNDLE_BYTES_MAX`] bytes, 1 to [`BUNDLE_ENTRIES_MAX`] entries.
pub fn decode(bytes: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let items: Vec<ByteBuf> = codec::decode_with(bytes, BUNDLE_BYTES_MAX, BUNDLE_ENTRIES_MAX as u64)?;
    if items.is_empty() {
        return Err(Error::Invalid("an empty bundle".into()));
    }
    Ok(items.into_iter().map(ByteBuf::into_vec).collect())
}

/// Packs entries, in order, into as few bundles as the limits allow. An entry too large to share a bundle still
/// gets one of its own (it is at most an envelope's size, far below the bundle limit).
pub fn pack<'e>(entries: impl IntoIterator<Item = &'e [u8]>) -> Vec<Vec<u8>> {
    let mut bundles = Vec::new();
    let mut current: Vec<&[u8]> = Vec::new();
    // The array head (up to 3 bytes for 256 items) and each byte string's head (up to 5 bytes).
    let mut bytes = 3;
    for entry in entries {
        let size = entry.len() + 5;
        if !current.is_empty() && (current.len() == BUNDLE_ENTRIES_MAX || bytes + size > BUNDLE_BYTES_MAX) {
            bundles.push(encode(&current));
            current.clear();
            bytes = 3;
        }
        current.push(entry);
        bytes += size;
    }
    if !current.is_empty() {
        bundles.push(encode(&current));
    }
    bundles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_round_trip_within_their_limits() {
        let entries: Vec<Vec<u8>> = (0..600u32).map(|i| vec![(i % 251) as u8; 100 + (i as usize % 300)]).collect();
        let bundles = pack(entries.iter().map(Vec::as_slice));
        assert_eq!(bundles.len(), 3, "600 entries: 256 + 256 + 88");
        let mut unpacked = Vec::new();
        for bundle in &bundles {
            assert!(bundle.len() <= BUNDLE_BYTES_MAX);
            unpacked.extend(decode(bundle).unwrap());
        }
        assert_eq!(unpacked, entries);
        // Large entries: the byte limit splits first.
        let large: Vec<Vec<u8>> = (0..100).map(|_| vec![7u8; 16 * 1024]).collect();
        let bundles = pack(large.iter().map(Vec::as_slice));
        assert!(bundles.len() > 1);
        assert!(bundles.iter().all(|bundle| bundle.len() <= BUNDLE_BYTES_MAX && !decode(bundle).unwrap().is_empty()));
        assert!(pack(std::iter::empty()).is_empty());
    }

    #[test]
    fn malformed_bundles_are_errors() {
        assert!(decode(&encode(&[])).is_err(), "empty");
        let too_many: Vec<&[u8]> = vec![b"x"; BUNDLE_ENTRIES_MAX + 1];
        assert!(decode(&encode(&too_many)).is_err(), "too many entries");
        let mut trailing = encode(&[b"x"]);
        trailing.push(0);
        assert!(decode(&trailing).is_err(), "trailing bytes");
        assert!(decode(&[0x81, 0x01]).is_err(), "an integer, not a byte string");
        assert!(decode(&[0x82, 0x41]).is_err(), "truncated");
    }
}
