//! Any bytes through decode and validation, as an envelope and as a bundle: never a panic; whatever validates or
//! decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Config, Envelope, NetworkId, validate, validate_batch, vectors};

fuzz_target!(|data: &[u8]| {
    let Ok(network) = NetworkId::new(vectors::NETWORK) else { return };
    let config = Config::new(network);
    if let Ok(envelope) = Envelope::from_bytes(data) {
        assert_eq!(envelope.to_bytes(), data, "a decoded envelope re-encodes to its input");
    }
    let single = validate(data, &config, vectors::CREATED_MS);
    if let Ok(validated) = &single {
        assert_eq!(validated.envelope.to_bytes(), data);
    }
    let batch = validate_batch(&[data], &config, vectors::CREATED_MS);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].is_ok(), single.is_ok());
    let _ = protocol::codec::decode::<protocol::Body>(data, protocol::limits::ENVELOPE_BYTES_MAX);
    // The same bytes as a bundle: whatever decodes re-encodes to its input, and its entries validate alone as they
    // do together.
    if let Ok(entries) = protocol::bundle::decode(data) {
        let slices: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        assert_eq!(protocol::bundle::encode(&slices), data, "a decoded bundle re-encodes to its input");
        let together = validate_batch(&slices, &config, vectors::CREATED_MS);
        for (entry, result) in slices.iter().zip(&together) {
            assert_eq!(result.is_ok(), validate(entry, &config, vectors::CREATED_MS).is_ok());
        }
    }
});
