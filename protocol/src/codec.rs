//! The one codec of kos: canonical CBOR (RFC 8949 §4.2.1 "core deterministic encoding") of a closed subset.
//!
//! kos messages use only four CBOR major types: unsigned integers (0), byte strings (2), text strings (3) and
//! arrays (4) — no maps, tags, floats, negative integers or simple values. Every head has its shortest form and
//! every length is definite, so each value has exactly one encoding. Decoding is strict, in three steps:
//! 1. the length is checked against the caller's cap before anything is parsed;
//! 2. [`scan`] walks the item structure: allowed major types, shortest heads, definite lengths, array sizes,
//!    nesting depth, no trailing bytes — a malformed or hostile input stops here without allocation;
//! 3. serde builds the typed value (bounded collections, closed enums, exact array lengths), and the value is
//!    encoded again: the result must equal the input byte for byte.

use serde::{Serialize, de::DeserializeOwned};

use crate::limits::CBOR_DEPTH_MAX;

/// Largest number of items in any CBOR array of the kos format: the longest list is a guild's 32 members, the
/// longest record a job posting's 18 fields.
pub const ARRAY_ITEMS_MAX: u64 = 32;

/// Why bytes are not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input is longer than the caller allows.
    #[error("{bytes} bytes exceed the limit of {max}")]
    TooLarge { bytes: usize, max: usize },
    /// The input ends inside an item.
    #[error("input ends inside an item at byte {offset}")]
    Truncated { offset: usize },
    /// Bytes follow the one top-level item.
    #[error("{count} trailing bytes after the item")]
    TrailingBytes { count: usize },
    /// A CBOR major type or simple value kos does not use (maps, tags, floats, negative integers, ...).
    #[error("CBOR major type {major} (additional info {info}) at byte {offset} is not part of the kos format")]
    UnsupportedItem { major: u8, info: u8, offset: usize },
    /// A head not in its shortest form, an indefinite length, or bytes that do not re-encode identically.
    #[error("non-canonical encoding at byte {offset}")]
    NonCanonical { offset: usize },
    /// An array longer than any kos record.
    #[error("array of {items} items at byte {offset} exceeds {max}")]
    ArrayTooLong { items: u64, offset: usize, max: u64 },
    /// Arrays nested deeper than any kos record.
    #[error("nesting deeper than {max} at byte {offset}")]
    TooDeep { offset: usize, max: usize },
    /// Well-formed CBOR that is not the expected record (wrong field count or type, unknown kind, bad value).
    #[error("invalid record: {0}")]
    Invalid(String),
}

/// Encodes a value in its canonical form.
///
/// Encoding a kos type cannot fail (no maps with non-string keys, no I/O); a failure here is a programming error.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(value, &mut out);
    out
}

/// Appends the canonical encoding of a value to `out`.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    let result = serde_cbor::to_writer(&mut *out, value);
    assert!(result.is_ok(), "encoding a kos value into memory cannot fail: {result:?}");
}

/// Decodes one value, requiring the input to be its canonical encoding and at most `bytes_max` long.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8], bytes_max: usize) -> Result<T, Error> {
    decode_with(bytes, bytes_max, ARRAY_ITEMS_MAX)
}

/// Like [`decode`], for containers (blocks, certificates, exports) whose arrays may hold up to `array_items_max`
/// items; every other rule of the subset is the same.
pub fn decode_with<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    bytes_max: usize,
    array_items_max: u64,
) -> Result<T, Error> {
    if bytes.len() > bytes_max {
        return Err(Error::TooLarge { bytes: bytes.len(), max: bytes_max });
    }
    scan_with(bytes, array_items_max)?;
    let value: T = serde_cbor::from_slice(bytes).map_err(|error| Error::Invalid(error.to_string()))?;
    let again = encode(&value);
    if again != bytes {
        let offset = again.iter().zip(bytes).position(|(a, b)| a != b).unwrap_or(again.len().min(bytes.len()));
        return Err(Error::NonCanonical { offset });
    }
    Ok(value)
}

/// Checks that `bytes` is exactly one well-formed item of the kos CBOR subset, in canonical form.
pub fn scan(bytes: &[u8]) -> Result<(), Error> {
    scan_with(bytes, ARRAY_ITEMS_MAX)
}

/// [`scan`] with another bound on array lengths.
pub fn scan_with(bytes: &[u8], array_items_max: u64) -> Result<(), Error> {
    let end = scan_item(bytes, 0, 0, array_items_max)?;
    match bytes.len().checked_sub(end) {
        Some(0) => Ok(()),
        Some(count) => Err(Error::TrailingBytes { count }),
        None => Err(Error::Truncated { offset: bytes.len() }),
    }
}

/// Reads the head at `offset`: (major type, argument, offset after the head).
fn read_head(bytes: &[u8], offset: usize) -> Result<(u8, u64, usize), Error> {
    let truncated = Error::Truncated { offset };
    let initial = *bytes.get(offset).ok_or(truncated.clone())?;
    let major = initial >> 5;
    let info = initial & 0x1f;
    let start = offset.checked_add(1).ok_or(truncated.clone())?;
    let width = match info {
        0..=23 => return Ok((major, u64::from(info), start)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        31 => return Err(Error::NonCanonical { offset }),
        _ => return Err(Error::UnsupportedItem { major, info, offset }),
    };
    let end = start.checked_add(width).ok_or(truncated.clone())?;
    let argument_bytes = bytes.get(start..end).ok_or(truncated)?;
    let argument = argument_bytes.iter().fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
    let shortest = match width {
        1 => argument >= 24,
        2 => argument > 0xff,
        4 => argument > 0xffff,
        _ => argument > 0xffff_ffff,
    };
    if !shortest {
        return Err(Error::NonCanonical { offset });
    }
    Ok((major, argument, end))
}

fn scan_item(bytes: &[u8], offset: usize, depth: usize, array_items_max: u64) -> Result<usize, Error> {
    if depth > CBOR_DEPTH_MAX {
        return Err(Error::TooDeep { offset, max: CBOR_DEPTH_MAX });
    }
    let (major, argument, after_head) = read_head(bytes, offset)?;
    match major {
        0 => Ok(after_head),
        2 | 3 => {
            let length = usize::try_from(argument).map_err(|_| Error::Truncated { offset })?;
            let end = after_head.checked_add(length).ok_or(Error::Truncated { offset })?;
            if end > bytes.len() {
                return Err(Error::Truncated { offset });
            }
            Ok(end)
        }
        4 => {
            if argument > array_items_max {
                return Err(Error::ArrayTooLong { items: argument, offset, max: array_items_max });
            }
            let mut cursor = after_head;
            for _ in 0..argument {
                cursor = scan_item(bytes, cursor, depth.saturating_add(1), array_items_max)?;
            }
            Ok(cursor)
        }
        _ => Err(Error::UnsupportedItem { major, info: bytes.get(offset).map_or(0, |b| b & 0x1f), offset }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_heads_are_required() {
        assert_eq!(scan(&[0x17]), Ok(()));
        assert_eq!(scan(&[0x18, 0x18]), Ok(()));
        assert_eq!(scan(&[0x18, 0x17]), Err(Error::NonCanonical { offset: 0 }));
        assert_eq!(scan(&[0x19, 0x00, 0xff]), Err(Error::NonCanonical { offset: 0 }));
        assert_eq!(scan(&[0x1a, 0x00, 0x00, 0xff, 0xff]), Err(Error::NonCanonical { offset: 0 }));
        assert_eq!(scan(&[0x1b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]), Err(Error::NonCanonical { offset: 0 }));
        assert_eq!(scan(&[0x1b, 0, 0, 0, 1, 0, 0, 0, 0]), Ok(()));
    }

    #[test]
    fn unsupported_items_and_indefinite_lengths_are_rejected() {
        assert!(matches!(scan(&[0x20]), Err(Error::UnsupportedItem { major: 1, .. })));
        assert!(matches!(scan(&[0xa0]), Err(Error::UnsupportedItem { major: 5, .. })));
        assert!(matches!(scan(&[0xc0, 0x00]), Err(Error::UnsupportedItem { major: 6, .. })));
        assert!(matches!(scan(&[0xf9, 0x3c, 0x00]), Err(Error::UnsupportedItem { major: 7, .. })));
        assert!(matches!(scan(&[0xf5]), Err(Error::UnsupportedItem { major: 7, .. })));
        assert_eq!(scan(&[0x9f, 0x01, 0xff]), Err(Error::NonCanonical { offset: 0 }));
        assert_eq!(scan(&[0x5f, 0x41, 0x00, 0xff]), Err(Error::NonCanonical { offset: 0 }));
        assert!(matches!(scan(&[0x1c]), Err(Error::UnsupportedItem { .. })));
    }

    #[test]
    fn truncation_trailing_bytes_and_depth() {
        assert_eq!(scan(&[]), Err(Error::Truncated { offset: 0 }));
        assert_eq!(scan(&[0x82, 0x01]), Err(Error::Truncated { offset: 2 }));
        assert_eq!(scan(&[0x43, 0x01]), Err(Error::Truncated { offset: 0 }));
        assert_eq!(scan(&[0x01, 0x02]), Err(Error::TrailingBytes { count: 1 }));
        assert_eq!(scan(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Err(Error::Truncated { offset: 0 }));
        let deep: Vec<u8> = std::iter::repeat_n(0x81, CBOR_DEPTH_MAX + 2).chain([0x00]).collect();
        assert!(matches!(scan(&deep), Err(Error::TooDeep { .. })));
        assert!(matches!(scan(&[0x98, 0x21]), Err(Error::ArrayTooLong { items: 33, .. })));
    }

    #[test]
    fn decode_caps_length_before_parsing() {
        let bytes = encode(&vec![1u64, 2, 3]);
        assert_eq!(decode::<Vec<u64>>(&bytes, 64), Ok(vec![1, 2, 3]));
        assert_eq!(decode::<Vec<u64>>(&bytes, 3), Err(Error::TooLarge { bytes: 4, max: 3 }));
    }
}
