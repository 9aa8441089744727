//! Integration tests of the protocol crate: golden vectors, properties of the codec and signatures, validation rules.
#![allow(clippy::unwrap_used)]
// Scenario tests read top to bottom, as a story; product functions stay within 100 lines.
#![allow(clippy::too_many_lines)]

mod cbor;
mod device;
mod properties;
mod validation;
mod vectors;
