//! Primitive wire types: fixed-size byte strings, validated text identifiers and bounded collections.
//!
//! Each type checks its own limits when it is built *and* when it is decoded, so a value of the type is always
//! within them.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::{
    CELL_CHARS_MAX, METER_ID_BYTES_MAX, NETWORK_ID_BYTES_MAX, PARAMETER_NAME_BYTES_MAX, SKILL_BYTES_MAX,
    TOKEN_ID_BYTES_MAX,
};

/// A value outside its type's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct Invalid {
    pub what: &'static str,
    pub reason: String,
}

fn invalid(what: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid { what, reason: reason.into() }
}

macro_rules! fixed_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// Lowercase hex of the bytes.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses exactly `2 * LEN` hex digits.
            pub fn from_hex(text: &str) -> Result<Self, Invalid> {
                let mut bytes = [0u8; $len];
                hex::decode_to_slice(text.trim(), &mut bytes)
                    .map_err(|error| invalid(stringify!($name), format!("{error} (want {} hex digits)", 2 * $len)))?;
                Ok(Self(bytes))
            }

            /// The bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct FixedVisitor;
                impl<'de> Visitor<'de> for FixedVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a byte string of exactly {} bytes", $len)
                    }
                    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<$name, E> {
                        <[u8; $len]>::try_from(bytes)
                            .map($name)
                            .map_err(|_| E::invalid_length(bytes.len(), &self))
                    }
                }
                deserializer.deserialize_bytes(FixedVisitor)
            }
        }
    };
}

fixed_bytes!(
    /// A 32-byte blake3 digest: message ids, pool digests, proposal ids.
    Id,
    32
);
fixed_bytes!(
    /// An ed25519 public key (RFC 8032 encoding): the author of a message and the address of an account.
    PublicKey,
    32
);
fixed_bytes!(
    /// An ed25519 signature (RFC 8032: R || S).
    Signature,
    64
);
fixed_bytes!(
    /// A P-256 (secp256r1) public key as an uncompressed SEC1 point: `0x04 || X || Y` (a device's key, OCMF).
    P256Key,
    65
);

/// The fixed head of a P-256 key's DER SubjectPublicKeyInfo (RFC 5480), the form OCMF keys are published in:
/// the key's 65 SEC1 bytes follow it.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl P256Key {
    /// Reads a key as hex in any of the forms devices publish: the 65 SEC1 bytes, the 64 bytes `X || Y`, or the
    /// 91-byte DER SubjectPublicKeyInfo (spaces ignored). Whether it is a point on the curve is checked where it is
    /// used.
    pub fn from_text(text: &str) -> Result<Self, Invalid> {
        let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = hex::decode(&digits).map_err(|error| invalid("P256Key", format!("{error}")))?;
        let sec1 = match bytes.len() {
            65 if bytes[0] == 4 => bytes,
            64 => [&[4u8][..], &bytes].concat(),
            91 if bytes[..26] == P256_SPKI_PREFIX => bytes[26..].to_vec(),
            len => {
                return Err(invalid(
                    "P256Key",
                    format!("{len} bytes: want 65 (04 || X || Y), 64 (X || Y) or a 91-byte DER SubjectPublicKeyInfo"),
                ));
            }
        };
        <[u8; 65]>::try_from(sec1.as_slice()).map(P256Key).map_err(|_| invalid("P256Key", "not 65 bytes"))
    }
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, min = $min:expr, max = $max:expr, allowed = $allowed:expr, describe = $describe:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks the limits of this identifier and builds it.
            pub fn new(text: impl Into<String>) -> Result<Self, Invalid> {
                let text = text.into();
                let allowed: fn(u8) -> bool = $allowed;
                if !($min..=$max).contains(&text.len()) {
                    return Err(invalid(
                        stringify!($name),
                        format!("{:?} has {} bytes, want {} to {}", text, text.len(), $min, $max),
                    ));
                }
                if let Some(bad) = text.bytes().find(|byte| !allowed(*byte)) {
                    return Err(invalid(
                        stringify!($name),
                        format!("{:?} contains {:?}; allowed: {}", text, char::from(bad), $describe),
                    ));
                }
                Ok(Self(text))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Invalid;
            fn from_str(text: &str) -> Result<Self, Invalid> {
                Self::new(text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::new(text).map_err(de::Error::custom)
            }
        }
    };
}

fn is_lower_alnum_dash(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-'
}

/// The 32 characters of the geohash alphabet (digits and lowercase letters without a, i, l, o).
pub const GEOHASH_ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

text_id!(
    /// The id of a kos network (`kos-devnet`, `kos-testnet-1`): bound into every signature.
    NetworkId, min = 1, max = NETWORK_ID_BYTES_MAX, allowed = is_lower_alnum_dash, describe = "a-z 0-9 -"
);
text_id!(
    /// The id of a ledger token (`credit` for the stable credit, mission tokens by name).
    TokenId, min = 1, max = TOKEN_ID_BYTES_MAX, allowed = is_lower_alnum_dash, describe = "a-z 0-9 -"
);
text_id!(
    /// A location cell: a geohash prefix; longer is smaller (5 chars ≈ 4.9 km, 6 ≈ 1.2 km); empty is the world.
    Cell, min = 0, max = CELL_CHARS_MAX, allowed = |byte| GEOHASH_ALPHABET.contains(&byte), describe = "geohash characters 0-9 b-z without a i l o"
);
text_id!(
    /// A meter's id, unique for its owner (a serial number, a Modbus host/unit, an MQTT topic).
    MeterId, min = 1, max = METER_ID_BYTES_MAX,
    allowed = |byte| byte.is_ascii_alphanumeric() || b"._:/-".contains(&byte), describe = "A-Z a-z 0-9 . _ : / -"
);
text_id!(
    /// The name of a governance parameter (`market.fee-ppm`).
    ParameterName, min = 1, max = PARAMETER_NAME_BYTES_MAX,
    allowed = |byte| is_lower_alnum_dash(byte) || byte == b'.' || byte == b'_', describe = "a-z 0-9 . _ -"
);

text_id!(
    /// A skill or device class a job asks for (`electrician`, `3d-printer`, `battery`).
    Skill, min = 1, max = SKILL_BYTES_MAX, allowed = is_lower_alnum_dash, describe = "a-z 0-9 -"
);

/// UTF-8 text of at most `MAX` bytes (memos, titles).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    /// Checks the length and builds the text.
    pub fn new(text: impl Into<String>) -> Result<Self, Invalid> {
        let text = text.into();
        if text.len() > MAX {
            return Err(invalid("text", format!("{} bytes exceed {MAX}", text.len())));
        }
        Ok(Self(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> fmt::Debug for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<const MAX: usize> Serialize for Text<MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(text).map_err(de::Error::custom)
    }
}

/// A vector of `MIN` to `MAX` items; decoding stops at the first item over `MAX`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BoundedVec<T, const MIN: usize, const MAX: usize>(Vec<T>);

impl<T, const MIN: usize, const MAX: usize> BoundedVec<T, MIN, MAX> {
    /// Checks the number of items and builds the vector.
    pub fn new(items: Vec<T>) -> Result<Self, Invalid> {
        if items.len() < MIN || items.len() > MAX {
            return Err(invalid("list", format!("{} items, want {MIN} to {MAX}", items.len())));
        }
        Ok(Self(items))
    }

    /// The items.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true when `MIN > 0`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The empty list, where a list may be empty.
impl<T, const MAX: usize> Default for BoundedVec<T, 0, MAX> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: fmt::Debug, const MIN: usize, const MAX: usize> fmt::Debug for BoundedVec<T, MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<T: Serialize, const MIN: usize, const MAX: usize> Serialize for BoundedVec<T, MIN, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>, const MIN: usize, const MAX: usize> Deserialize<'de> for BoundedVec<T, MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoundedVisitor<T, const MIN: usize, const MAX: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const MIN: usize, const MAX: usize> Visitor<'de> for BoundedVisitor<T, MIN, MAX> {
            type Value = BoundedVec<T, MIN, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of {MIN} to {MAX} items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                if let Some(hint) = seq.size_hint()
                    && (hint < MIN || hint > MAX)
                {
                    return Err(de::Error::invalid_length(hint, &self));
                }
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX));
                while let Some(item) = seq.next_element()? {
                    if items.len() == MAX {
                        return Err(de::Error::invalid_length(MAX.saturating_add(1), &self));
                    }
                    items.push(item);
                }
                if items.len() < MIN {
                    return Err(de::Error::invalid_length(items.len(), &self));
                }
                Ok(BoundedVec(items))
            }
        }
        deserializer.deserialize_seq(BoundedVisitor::<T, MIN, MAX>(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_check_their_alphabet_and_length() {
        assert!(NetworkId::new("kos-devnet").is_ok());
        assert!(NetworkId::new("").is_err());
        assert!(NetworkId::new("Kos").is_err());
        assert!(NetworkId::new("a".repeat(33)).is_err());
        assert!(Cell::new("").is_ok());
        assert!(Cell::new("u33db").is_ok());
        assert!(Cell::new("u33da").is_err(), "a is not a geohash character");
        assert!(TokenId::new("credit").is_ok());
        assert!(MeterId::new("modbus:192.0.2.1/1").is_ok());
        assert!(MeterId::new("space here").is_err());
    }

    #[test]
    fn hex_round_trip() {
        let id = Id([7; 32]);
        assert_eq!(Id::from_hex(&id.to_hex()), Ok(id));
        assert!(Id::from_hex("07").is_err());
    }
}
