//! The signed envelope every kos message travels in, its content id and the digest its author signs.
//!
//! ```text
//! envelope = [version, network, author, nonce, created_ms, expires_ms, body, signature]   (CBOR array of 8)
//! unsigned = [version, network, author, nonce, created_ms, expires_ms, body]              (CBOR array of 7)
//! id       = blake3("kos/v1/id/" || kind-name || 0x00 || unsigned)
//! digest   = blake3("kos/v1/sig" || 0x00 || network || 0x00 || id)
//! signature = Ed25519-Sign(secret key, digest)        (RFC 8032 PureEdDSA over the 32 digest bytes)
//! ```
//! Because the encoding is canonical, `unsigned` is the envelope's bytes with the first byte `0x88` replaced by
//! `0x87` and the last 66 bytes (the signature's head `0x58 0x40` and its 64 bytes) removed.

use serde::ser::SerializeTuple;
use serde::{Serialize, Serializer};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

use crate::codec;
use crate::keys::Keypair;
use crate::limits::ENVELOPE_BYTES_MAX;
use crate::message::{Body, Kind};
use crate::types::{Id, NetworkId, PublicKey, Signature};

/// The envelope version this code writes and accepts.
pub const VERSION: u8 = 1;
/// Prefix of every message id, followed by the kind's name and `0x00`.
pub const ID_DOMAIN: &[u8] = b"kos/v1/id/";
/// Prefix of every signing digest, followed by `0x00`, the network id and `0x00`.
pub const SIGNATURE_DOMAIN: &[u8] = b"kos/v1/sig";
/// Prefix of a pool's digest, `0x00` included.
pub const POOL_DOMAIN: &[u8] = b"kos/v1/pool\0";
/// Prefix of a barter pool's digest, `0x00` included.
pub const BARTER_POOL_DOMAIN: &[u8] = b"kos/v1/barter-pool\0";
/// Bytes the signature item takes at the end of an envelope: the head `0x58 0x40` and 64 bytes.
const SIGNATURE_ITEM_BYTES: usize = 66;

/// A signed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Envelope {
    /// Format version; [`VERSION`].
    pub version: u8,
    /// The network this message is for; bound into the signature.
    pub network: NetworkId,
    /// The author's ed25519 public key.
    pub author: PublicKey,
    /// Chosen by the author, never reused with the same key: makes equal bodies distinct messages and lets
    /// receivers drop replays.
    pub nonce: u64,
    /// When the author made the message, Unix milliseconds.
    pub created_ms: u64,
    /// When the message stops being valid, Unix milliseconds; after `created_ms`.
    pub expires_ms: u64,
    pub body: Body,
    pub signature: Signature,
}

/// The fields an author signs, borrowed from an envelope or its parts.
struct Unsigned<'a> {
    version: u8,
    network: &'a NetworkId,
    author: &'a PublicKey,
    nonce: u64,
    created_ms: u64,
    expires_ms: u64,
    body: &'a Body,
}

impl Serialize for Unsigned<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(7)?;
        tuple.serialize_element(&self.version)?;
        tuple.serialize_element(self.network)?;
        tuple.serialize_element(self.author)?;
        tuple.serialize_element(&self.nonce)?;
        tuple.serialize_element(&self.created_ms)?;
        tuple.serialize_element(&self.expires_ms)?;
        tuple.serialize_element(self.body)?;
        tuple.end()
    }
}

/// The fields of a message before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub network: NetworkId,
    pub nonce: u64,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub body: Body,
}

impl Draft {
    /// Signs the draft with `keypair`: the author is the keypair's public key.
    pub fn sign(self, keypair: &Keypair) -> Envelope {
        let author = keypair.public();
        let unsigned = Unsigned {
            version: VERSION,
            network: &self.network,
            author: &author,
            nonce: self.nonce,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            body: &self.body,
        };
        let id = message_id(self.body.kind(), &codec::encode(&unsigned));
        let signature = keypair.sign_digest(&signing_digest(&self.network, &id));
        Envelope {
            version: VERSION,
            network: self.network,
            author,
            nonce: self.nonce,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            body: self.body,
            signature,
        }
    }
}

impl Envelope {
    /// The kind of the body.
    pub fn kind(&self) -> Kind {
        self.body.kind()
    }

    /// The canonical encoding of the signed fields (everything but the signature).
    pub fn unsigned_bytes(&self) -> Vec<u8> {
        codec::encode(&Unsigned {
            version: self.version,
            network: &self.network,
            author: &self.author,
            nonce: self.nonce,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            body: &self.body,
        })
    }

    /// The message's content id.
    pub fn id(&self) -> Id {
        message_id(self.kind(), &self.unsigned_bytes())
    }

    /// The digest the author signs.
    pub fn signing_digest(&self) -> [u8; 32] {
        signing_digest(&self.network, &self.id())
    }

    /// The canonical encoding of the whole envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes an envelope (canonical, at most [`ENVELOPE_BYTES_MAX`] bytes) without checking anything else.
    /// Use [`crate::validate`] for messages from the network.
    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope, codec::Error> {
        codec::decode(bytes, ENVELOPE_BYTES_MAX)
    }
}

/// `blake3("kos/v1/id/" || kind-name || 0x00 || unsigned)`.
pub fn message_id(kind: Kind, unsigned: &[u8]) -> Id {
    let mut hasher = blake3::Hasher::new();
    hasher.update(ID_DOMAIN);
    hasher.update(kind.name().as_bytes());
    hasher.update(&[0]);
    hasher.update(unsigned);
    Id(*hasher.finalize().as_bytes())
}

/// The id of a message from its canonical envelope bytes, without encoding anything again.
///
/// `bytes` must be a canonical envelope of kind `kind` (as [`Envelope::from_bytes`] accepted it).
pub(crate) fn message_id_from_canonical(kind: Kind, bytes: &[u8]) -> Id {
    let end = bytes.len().saturating_sub(SIGNATURE_ITEM_BYTES);
    debug_assert_eq!(bytes.first(), Some(&0x88));
    let mut hasher = blake3::Hasher::new();
    hasher.update(ID_DOMAIN);
    hasher.update(kind.name().as_bytes());
    hasher.update(&[0, 0x87]);
    hasher.update(bytes.get(1..end).unwrap_or_default());
    Id(*hasher.finalize().as_bytes())
}

/// `blake3("kos/v1/sig" || 0x00 || network || 0x00 || id)`.
pub fn signing_digest(network: &NetworkId, id: &Id) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(SIGNATURE_DOMAIN);
    hasher.update(&[0]);
    hasher.update(network.as_str().as_bytes());
    hasher.update(&[0]);
    hasher.update(&id.0);
    *hasher.finalize().as_bytes()
}
