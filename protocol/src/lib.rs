//! kos wire protocol: message types, canonical CBOR codec, ed25519 signatures over blake3 digests, and stateless
//! validation. No I/O, no clock: callers pass the time.
//!
//! PROTOCOL.md at the repository root specifies every byte; `vectors` (feature `vectors`) produces its test vectors.

pub mod amount;
pub mod bundle;
pub mod codec;
pub mod envelope;
pub mod fairness;
pub mod keys;
pub mod limits;
pub mod message;
pub mod ocmf;
pub mod types;
pub mod validate;
#[cfg(feature = "vectors")]
pub mod vectors;

pub use envelope::{Draft, Envelope};
pub use keys::Keypair;
pub use message::{Body, Kind};
pub use types::{Id, NetworkId, PublicKey, Signature};
pub use validate::{Config, Validated, validate, validate_batch};
