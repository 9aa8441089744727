//! Readings a device signs (PROTOCOL.md §5, *Device-signed readings*): the key an asset manifest names for its
//! meters, the signature a reading then carries, and the checks of both. The node relays the device's signature
//! inside its own envelope: the envelope says who claims the reading, the device's signature that the meter measured
//! it.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

use super::Reading;
use crate::limits::{OCMF_LATE_SECONDS_MAX, OCMF_RECORD_BYTES_MAX};
use crate::ocmf::{self, OcmfError};
use crate::types::{BoundedVec, NetworkId, P256Key, PublicKey, Signature, Text};

/// The key a device signs its readings with, as an asset manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceKey {
    /// A kos-native device (a meter or gateway running kos firmware, or a node's secure element).
    Ed25519(PublicKey),
    /// A calibration-law meter or charger that signs OCMF records.
    P256(P256Key),
}

tagged_union!(DeviceKey, "device key", DeviceKeyKind {
    0 => Ed25519(PublicKey), "ed25519";
    1 => P256(P256Key), "p256";
});

impl DeviceKey {
    /// The key's bytes, as the ledger indexes device keys (PROTOCOL.md §10: `kind code || key`).
    pub fn index_bytes(&self) -> Vec<u8> {
        match self {
            DeviceKey::Ed25519(key) => [&[0u8][..], key.as_bytes()].concat(),
            DeviceKey::P256(key) => [&[1u8][..], key.as_bytes()].concat(),
        }
    }
}

impl DeviceKey {
    /// Reads `ed25519:<64 hex digits>` or `p256:<hex>` (the P-256 key in any form [`P256Key::from_text`] reads),
    /// as [`fmt::Display`] writes them.
    pub fn from_text(text: &str) -> Result<DeviceKey, String> {
        match text.trim().split_once(':') {
            Some(("ed25519", key)) => {
                PublicKey::from_hex(key).map(DeviceKey::Ed25519).map_err(|error| error.to_string())
            }
            Some(("p256", key)) => P256Key::from_text(key).map(DeviceKey::P256).map_err(|error| error.to_string()),
            _ => Err(format!("{text:?}: want ed25519:<64 hex digits> or p256:<hex of the key>")),
        }
    }
}

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceKey::Ed25519(key) => write!(f, "ed25519:{key}"),
            DeviceKey::P256(key) => write!(f, "p256:{key}"),
        }
    }
}

/// A kos-native device's signature over a reading: ed25519 over [`device_reading_digest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct DeviceSignature {
    pub key: PublicKey,
    pub signature: Signature,
}

/// A meter's OCMF record, relayed as the device sent it: its signed registers are the reading's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct OcmfRecord {
    pub key: P256Key,
    /// `OCMF|<payload>|<signature>`, byte for byte as the device sent it.
    pub record: Text<OCMF_RECORD_BYTES_MAX>,
}

/// How a device attests a reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attestation {
    Ed25519(DeviceSignature),
    Ocmf(OcmfRecord),
}

tagged_union!(Attestation, "device attestation", AttestationKind {
    0 => Ed25519(DeviceSignature), "ed25519";
    1 => Ocmf(OcmfRecord), "ocmf";
});

impl Attestation {
    /// The device key the attestation is made with.
    pub fn key(&self) -> DeviceKey {
        match self {
            Attestation::Ed25519(signature) => DeviceKey::Ed25519(signature.key),
            Attestation::Ocmf(record) => DeviceKey::P256(record.key),
        }
    }
}

/// What a kos-native device signs for a reading:
/// `blake3("kos/v1/device-reading" || 0x00 || network || 0x00 || author || reading')`, where `author` is the key of
/// the node that relays it (so no other account can claim the device's readings) and `reading'` is the reading's
/// canonical CBOR with `device` empty (its last item `0x80`).
pub fn device_reading_digest(network: &NetworkId, author: &PublicKey, reading: &Reading) -> [u8; 32] {
    let unattested = Reading { device: BoundedVec::default(), ..reading.clone() };
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"kos/v1/device-reading");
    hasher.update(&[0]);
    hasher.update(network.as_str().as_bytes());
    hasher.update(&[0]);
    hasher.update(author.as_bytes());
    hasher.update(&crate::codec::encode(&unattested));
    *hasher.finalize().as_bytes()
}

/// The reading signed by a kos-native device for the node `author` relaying it on `network` (any earlier
/// attestation replaced).
pub fn attest(network: &NetworkId, author: &PublicKey, reading: Reading, device: &crate::Keypair) -> Reading {
    let signature = device.sign_digest(&device_reading_digest(network, author, &reading));
    let attestation = Attestation::Ed25519(DeviceSignature { key: device.public(), signature });
    Reading { device: BoundedVec::new(vec![attestation]).unwrap_or_default(), ..reading }
}

/// Why a reading's device attestation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestationError {
    /// The ed25519 device signature does not verify.
    BadSignature,
    Ocmf(OcmfError),
    /// The OCMF record attests neither lifetime register.
    NoRegister,
    /// A register the record attests differs from the reading's.
    Mismatch {
        register: &'static str,
        signed_wh: u64,
        claimed_wh: u64,
    },
    /// The reading claims a flow on a register the record does not sign.
    UnsignedFlow {
        register: &'static str,
        flow_wh: u64,
    },
    /// A register was read outside the reading's interval.
    OutsideInterval {
        register: &'static str,
        time_s: i64,
    },
}

impl fmt::Display for AttestationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttestationError::BadSignature => f.write_str("the device signature does not verify"),
            AttestationError::Ocmf(error) => write!(f, "{error}"),
            AttestationError::NoRegister => {
                f.write_str("the OCMF record attests no lifetime import or export register (1.8.0, 2.8.0)")
            }
            AttestationError::Mismatch { register, signed_wh, claimed_wh } => {
                write!(f, "the device signed {register} {signed_wh} Wh, the reading claims {claimed_wh} Wh")
            }
            AttestationError::UnsignedFlow { register, flow_wh } => {
                write!(f, "the reading claims {flow_wh} Wh of {register}, a register the OCMF record does not sign")
            }
            AttestationError::OutsideInterval { register, time_s } => {
                write!(f, "the device read {register} at {time_s}, outside the reading's interval")
            }
        }
    }
}

impl std::error::Error for AttestationError {}

/// Checks a reading's device attestation, if it has one, on its own (no state): the signature verifies with the key
/// it names, and an OCMF record's registers are the reading's. Whether the key is the one the meter's asset names
/// is the ledger's check ([`check_binding`]).
pub fn check_attestation(network: &NetworkId, author: &PublicKey, reading: &Reading) -> Result<(), AttestationError> {
    let Some(attestation) = reading.device.as_slice().first() else { return Ok(()) };
    match attestation {
        Attestation::Ed25519(signed) => {
            let digest = device_reading_digest(network, author, reading);
            crate::keys::verify(&signed.key, &digest, &signed.signature).map_err(|_| AttestationError::BadSignature)
        }
        Attestation::Ocmf(record) => {
            let parsed = ocmf::parse(record.record.as_str()).map_err(AttestationError::Ocmf)?;
            ocmf::verify(&parsed, &record.key).map_err(AttestationError::Ocmf)?;
            let registers = ocmf::registers(parsed.payload).map_err(AttestationError::Ocmf)?;
            check_registers(&registers, reading)
        }
    }
}

/// An OCMF record's registers against a reading: at least one lifetime register; each one the record has equals
/// the reading's counter and was read in `(interval start, interval end + OCMF_LATE_SECONDS_MAX]`; a register the
/// record does not sign claims no flow (its `import_wh` or `export_wh` is 0), so nothing unsigned earns rewards.
fn check_registers(registers: &ocmf::Registers, reading: &Reading) -> Result<(), AttestationError> {
    if registers.import.is_none() && registers.export.is_none() {
        return Err(AttestationError::NoRegister);
    }
    let start = i64::try_from(reading.interval_start_s).unwrap_or(i64::MAX);
    let late =
        reading.interval_start_s.saturating_add(u64::from(reading.interval_s)).saturating_add(OCMF_LATE_SECONDS_MAX);
    let late = i64::try_from(late).unwrap_or(i64::MAX);
    let pairs = [
        ("import", registers.import, reading.import_counter_wh),
        ("export", registers.export, reading.export_counter_wh),
    ];
    for (register, signed, claimed_wh) in pairs {
        let Some(signed) = signed else {
            let flow_wh = if register == "import" { reading.import_wh } else { reading.export_wh };
            if flow_wh > 0 {
                return Err(AttestationError::UnsignedFlow { register, flow_wh });
            }
            continue;
        };
        if signed.time_s <= start || signed.time_s > late {
            return Err(AttestationError::OutsideInterval { register, time_s: signed.time_s });
        }
        if signed.wh != claimed_wh {
            return Err(AttestationError::Mismatch { register, signed_wh: signed.wh, claimed_wh });
        }
    }
    Ok(())
}

/// Why a reading does not fit the device its meter's asset names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingError {
    /// The asset names a device key (as written by [`DeviceKey`]'s `Display`) and the reading carries no
    /// attestation.
    Unattested { key: String },
    /// The reading is attested with a key the asset does not name.
    WrongKey { named: Option<String>, used: String },
}

impl fmt::Display for BindingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindingError::Unattested { key } => {
                write!(f, "the meter's asset names device key {key}: its readings must carry the device's signature")
            }
            BindingError::WrongKey { named: Some(named), used } => {
                write!(f, "signed by device key {used}, but the meter's asset names {named}")
            }
            BindingError::WrongKey { named: None, used } => {
                write!(f, "signed by device key {used}, but the meter's asset names no device key")
            }
        }
    }
}

impl std::error::Error for BindingError {}

/// The one rule binding a reading to its meter's device: a meter whose asset names a device key takes only readings
/// attested with that key; a meter without one takes only readings without an attestation.
pub fn check_binding(named: Option<&DeviceKey>, reading: &Reading) -> Result<(), BindingError> {
    let used = reading.device.as_slice().first().map(Attestation::key);
    match (named, used) {
        (None, None) => Ok(()),
        (Some(named), Some(used)) if *named == used => Ok(()),
        (Some(named), None) => Err(BindingError::Unattested { key: named.to_string() }),
        (named, Some(used)) => {
            Err(BindingError::WrongKey { named: named.map(ToString::to_string), used: used.to_string() })
        }
    }
}

/// How a reading is attested, weakest first (PROTOCOL.md §5, *Device-signed readings*, and §10, *trust levels*):
/// shown with every reading, and what a pool rule or the export reward may ask. The level is a number: 1 for the
/// device's signature plus 2 for the cell's feeder, so that a level asks for at least what its bits say, and a
/// feeder's check of the whole cell weighs more than a device key its own owner registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trust {
    /// Signed by its author's node only.
    Node = 0,
    /// Also signed by the meter's registered device.
    Device = 1,
    /// Signed by its author's node, and its cell's feeder meter confirmed it when the interval closed.
    Balanced = 2,
    /// Signed by the meter's device, and confirmed by its cell's feeder.
    DeviceBalanced = 3,
}

impl Trust {
    /// Every level, weakest first.
    pub const ALL: [Trust; 4] = [Trust::Node, Trust::Device, Trust::Balanced, Trust::DeviceBalanced];

    /// The reading's level as it stands on its own (before its cell's interval closes).
    pub fn of(reading: &Reading) -> Trust {
        if reading.device.is_empty() { Trust::Node } else { Trust::Device }
    }

    /// The level once the cell's feeder confirmed the reading.
    #[must_use]
    pub fn balanced(self) -> Trust {
        match self {
            Trust::Node | Trust::Balanced => Trust::Balanced,
            Trust::Device | Trust::DeviceBalanced => Trust::DeviceBalanced,
        }
    }

    /// The level without the feeder's confirmation.
    #[must_use]
    pub fn unbalanced(self) -> Trust {
        if self.device() { Trust::Device } else { Trust::Node }
    }

    /// Whether a device signed it.
    pub fn device(self) -> bool {
        matches!(self, Trust::Device | Trust::DeviceBalanced)
    }

    /// Its number: 0 to 3.
    pub fn level(self) -> u8 {
        self as u8
    }

    pub fn from_level(level: u64) -> Option<Trust> {
        Trust::ALL.into_iter().find(|trust| u64::from(trust.level()) == level)
    }

    /// The lowercase name the API and the genesis file use.
    pub fn name(self) -> &'static str {
        match self {
            Trust::Node => "node",
            Trust::Device => "device",
            Trust::Balanced => "balanced",
            Trust::DeviceBalanced => "device+balanced",
        }
    }

    pub fn from_name(name: &str) -> Option<Trust> {
        Trust::ALL.into_iter().find(|trust| trust.name() == name)
    }
}

/// Where a meter's counters stood at its last anchored reading (the ledger's `m` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub interval_start_s: u64,
    pub import_counter_wh: u64,
    pub export_counter_wh: u64,
}

/// Why an OCMF record cannot become a reading of its meter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcmfReadingError {
    #[error("the OCMF record: {0}")]
    Ocmf(OcmfError),
    #[error("the OCMF record attests neither lifetime register (1.8.0 import, 2.8.0 export)")]
    NoRegister,
    #[error("interval_s must be more than 0")]
    NoInterval,
    #[error("the record's {register} register was read at {time_s}, before the interval its last register was read in")]
    Apart { register: &'static str, time_s: i64 },
    #[error("the record was read in the interval starting {start_s}, not after the meter's last reading's ({last_s})")]
    NotNewer { start_s: u64, last_s: u64 },
    #[error("the record's {register} register ({signed_wh} Wh) is below the meter's last reading's ({last_wh} Wh)")]
    Backwards { register: &'static str, signed_wh: u64, last_wh: u64 },
    #[error("the reading it makes: {0}")]
    Reading(String),
}

/// The reading of `meter` that an OCMF record of its device attests (PROTOCOL.md §5, *Relaying a record*), as a
/// node relays a charger's signed values: its counters are the registers the record signs (one it does not sign
/// stays where `previous` left it, with no flow); its interval, of `interval_s`, is the one holding the last
/// register's read — or the one before, when the reads came within 60 s of its end and after the last reading's
/// interval (its window, `(start, end + 60 s]`, holds them); its import and export are the registers' growth since
/// `previous` when that is the interval right before (otherwise no flow: the record only moves the counters, as
/// nobody knows in which intervals the energy flowed); its consumption is its import, its generation 0 (a
/// charger's export is storage's). The record must verify with `key`.
pub fn ocmf_reading(
    meter: super::MeterId,
    key: P256Key,
    record: &str,
    interval_s: u32,
    previous: Option<Counters>,
) -> Result<Reading, OcmfReadingError> {
    if interval_s == 0 {
        return Err(OcmfReadingError::NoInterval);
    }
    let parsed = ocmf::parse(record).map_err(OcmfReadingError::Ocmf)?;
    ocmf::verify(&parsed, &key).map_err(OcmfReadingError::Ocmf)?;
    let registers = ocmf::registers(parsed.payload).map_err(OcmfReadingError::Ocmf)?;
    let present = [("import", registers.import), ("export", registers.export)];
    let last_s = present.iter().filter_map(|(_, register)| register.map(|register| register.time_s)).max();
    let last_s = last_s.ok_or(OcmfReadingError::NoRegister)?;
    let length = i64::from(interval_s);
    let late = i64::try_from(OCMF_LATE_SECONDS_MAX).unwrap_or(i64::MAX);
    // The interval (start, start + interval_s] holding the last read, or the one before when the read came within
    // its grace after that one's end (an interval already over); every register must be read after its start.
    let mut start = (last_s - 1).div_euclid(length) * length;
    let first_s = present.iter().filter_map(|(_, register)| register.map(|register| register.time_s)).min();
    let after_previous = |start: i64| {
        previous.is_none_or(|previous| i64::try_from(previous.interval_start_s).is_ok_and(|last| start > last))
    };
    if last_s - start <= late && first_s.is_some_and(|first| first > start - length) && after_previous(start - length) {
        start -= length;
    }
    for (register, value) in present {
        if let Some(value) = value
            && value.time_s <= start
        {
            return Err(OcmfReadingError::Apart { register, time_s: value.time_s });
        }
    }
    let interval_start_s = u64::try_from(start).map_err(|_| OcmfReadingError::Reading("read before 1970".into()))?;
    if let Some(previous) = previous
        && previous.interval_start_s >= interval_start_s
    {
        return Err(OcmfReadingError::NotNewer { start_s: interval_start_s, last_s: previous.interval_start_s });
    }
    // Each register: (counter, flow). Its growth flowed in this interval only if the last reading was the one before.
    let follows = previous
        .is_some_and(|previous| previous.interval_start_s.checked_add(u64::from(interval_s)) == Some(interval_start_s));
    let register = |name: &'static str, signed: Option<ocmf::Register>, last: Option<u64>| match (signed, last) {
        (Some(signed), Some(last)) if signed.wh < last => {
            Err(OcmfReadingError::Backwards { register: name, signed_wh: signed.wh, last_wh: last })
        }
        (Some(signed), Some(last)) if follows => Ok((signed.wh, signed.wh - last)),
        (Some(signed), Some(_)) => Ok((signed.wh, 0)),
        (Some(signed), None) => Ok((signed.wh, 0)),
        (None, last) => Ok((last.unwrap_or(0), 0)),
    };
    let (import_counter_wh, import_wh) =
        register("import", registers.import, previous.map(|previous| previous.import_counter_wh))?;
    let (export_counter_wh, export_wh) =
        register("export", registers.export, previous.map(|previous| previous.export_counter_wh))?;
    let reading = Reading {
        meter,
        interval_start_s,
        interval_s,
        import_wh,
        export_wh,
        generation_wh: 0,
        consumption_wh: import_wh,
        import_counter_wh,
        export_counter_wh,
        source: super::MeterSource::Manual,
        device: BoundedVec::new(vec![Attestation::Ocmf(OcmfRecord {
            key,
            record: Text::new(record).map_err(|problem| OcmfReadingError::Reading(problem.to_string()))?,
        })])
        .map_err(|problem| OcmfReadingError::Reading(problem.to_string()))?,
    };
    Ok(reading)
}
