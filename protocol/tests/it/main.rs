//! Integration tests of the protocol crate: golden vectors, properties of the codec and signatures, validation rules.
#![allow(clippy::unwrap_used)]

mod cbor;
mod properties;
mod validation;
mod vectors;
