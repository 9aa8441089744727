//! OCMF, the Open Charge Metering Format of German calibration-law chargers and meters (S.A.F.E. e.V.): a signed
//! meter value `OCMF|<payload JSON>|<signature JSON>`, ECDSA over SHA-256 of the payload text exactly as sent.
//!
//! kos reads the subset PROTOCOL.md §5 (*OCMF records*) specifies: the record splits on `|` into exactly three
//! sections, the signature is `ECDSA-secp256r1-SHA256` in DER (hex or base64), and a record attests the lifetime
//! import and export registers (OBIS `1.8.0` / `2.8.0`, or OCMF 1.4's `B0.08.00` / `C0.08.00`) of its last good
//! reading of each. Everything here is pure: the caller compares the registers with what a kos reading claims.

use std::fmt;

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::types::P256Key;

/// Why an OCMF record was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcmfError {
    /// Not `OCMF|payload|signature`.
    Shape(&'static str),
    /// The payload or signature section is not the JSON object the format defines.
    Json { section: &'static str, reason: String },
    /// A signature algorithm, encoding or method kos does not verify.
    Unsupported(String),
    /// The signature is not a DER ECDSA signature, or the key is not a P-256 point.
    Malformed(&'static str),
    /// The signature does not verify over the payload with the key.
    BadSignature,
    /// A reading's value, time or register could not be read.
    Reading { index: usize, reason: String },
}

impl fmt::Display for OcmfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OcmfError::Shape(reason) => write!(f, "OCMF record: {reason}"),
            OcmfError::Json { section, reason } => write!(f, "OCMF {section} section: {reason}"),
            OcmfError::Unsupported(what) => write!(f, "OCMF: unsupported {what}"),
            OcmfError::Malformed(what) => write!(f, "OCMF: malformed {what}"),
            OcmfError::BadSignature => f.write_str("OCMF: the signature does not verify over the payload"),
            OcmfError::Reading { index, reason } => write!(f, "OCMF reading {index}: {reason}"),
        }
    }
}

impl std::error::Error for OcmfError {}

/// The signature algorithm kos verifies, as OCMF names it (its default since OCMF 0.4).
pub const ALGORITHM: &str = "ECDSA-secp256r1-SHA256";

/// A record split into its sections; `payload` is the signed text, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub payload: &'a str,
    /// The DER signature's bytes (decoded from hex or base64).
    pub signature: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureSection {
    #[serde(rename = "SA")]
    algorithm: Option<String>,
    #[serde(rename = "SE")]
    encoding: Option<String>,
    #[serde(rename = "SM")]
    method: Option<String>,
    #[serde(rename = "SD")]
    data: String,
}

/// Splits a record and decodes its signature section (nothing is verified yet).
pub fn parse(text: &str) -> Result<Record<'_>, OcmfError> {
    let mut sections = text.split('|');
    let (Some(header), Some(payload), Some(signature), None) =
        (sections.next(), sections.next(), sections.next(), sections.next())
    else {
        return Err(OcmfError::Shape("want exactly three sections separated by '|'"));
    };
    if header != "OCMF" {
        return Err(OcmfError::Shape("the first section is not \"OCMF\""));
    }
    let section: SignatureSection = serde_json::from_str(signature)
        .map_err(|error| OcmfError::Json { section: "signature", reason: error.to_string() })?;
    if let Some(algorithm) = section.algorithm.as_deref()
        && algorithm != ALGORITHM
    {
        return Err(OcmfError::Unsupported(format!("signature algorithm {algorithm:?} (kos verifies {ALGORITHM})")));
    }
    if let Some(method) = section.method.as_deref()
        && method != "application/x-der"
    {
        return Err(OcmfError::Unsupported(format!("signature method {method:?}")));
    }
    let signature = match section.encoding.as_deref() {
        None | Some("hex") => hex::decode(section.data.trim()).map_err(|_| OcmfError::Malformed("hex signature"))?,
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(section.data.trim())
            .map_err(|_| OcmfError::Malformed("base64 signature"))?,
        Some(other) => return Err(OcmfError::Unsupported(format!("signature encoding {other:?}"))),
    };
    Ok(Record { payload, signature })
}

/// Verifies a record's signature with a device key: ECDSA P-256 over SHA-256 of the payload's bytes.
pub fn verify(record: &Record<'_>, key: &P256Key) -> Result<(), OcmfError> {
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key.as_bytes())
        .map_err(|_| OcmfError::Malformed("device key (not a P-256 point)"))?;
    let signature = p256::ecdsa::Signature::from_der(&record.signature)
        .map_err(|_| OcmfError::Malformed("signature (not DER ECDSA-Sig-Value)"))?;
    key.verify(record.payload.as_bytes(), &signature).map_err(|_| OcmfError::BadSignature)
}

/// A register value a record attests: Wh (rounded down) at a time (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register {
    pub wh: u64,
    pub time_s: i64,
}

/// The lifetime registers a record attests: the last good reading of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Registers {
    pub import: Option<Register>,
    pub export: Option<Register>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(rename = "RD", borrow)]
    readings: Vec<RawReading<'a>>,
}

#[derive(Deserialize, Default, Clone)]
struct RawReading<'a> {
    #[serde(rename = "TM")]
    time: Option<String>,
    #[serde(rename = "RV", borrow)]
    value: Option<&'a RawValue>,
    #[serde(rename = "RI")]
    register: Option<String>,
    #[serde(rename = "RU")]
    unit: Option<String>,
    #[serde(rename = "EF")]
    errors: Option<String>,
    #[serde(rename = "ST")]
    status: Option<String>,
}

/// Which lifetime register an OBIS code names, if either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    Import,
    Export,
}

/// Reads the registers of a payload (PROTOCOL.md §5, *OCMF records*). A reading without `TM`, `RI`, `RU`, `EF`
/// or `ST` takes it from the reading before (the format's rule); a reading counts when its status `ST` is `G`, its
/// error flags `EF` hold neither `E` nor `t`, it has a value, its unit is `kWh` or `Wh` and its register is a
/// lifetime total (see [`total`]).
pub fn registers(payload: &str) -> Result<Registers, OcmfError> {
    let payload: Payload<'_> = serde_json::from_str(payload)
        .map_err(|error| OcmfError::Json { section: "payload", reason: error.to_string() })?;
    let mut registers = Registers::default();
    let mut carried = RawReading::default();
    for (index, reading) in payload.readings.into_iter().enumerate() {
        let error = |reason: String| OcmfError::Reading { index, reason };
        carried = RawReading {
            time: reading.time.or(carried.time),
            value: reading.value,
            register: reading.register.or(carried.register),
            unit: reading.unit.or(carried.unit),
            errors: reading.errors.or(carried.errors),
            status: reading.status.or(carried.status),
        };
        let usable =
            carried.status.as_deref() == Some("G") && !carried.errors.as_deref().unwrap_or("").contains(['E', 't']);
        let (Some(value), Some(register), Some(unit), Some(time)) =
            (carried.value, carried.register.as_deref(), carried.unit.as_deref(), carried.time.as_deref())
        else {
            continue;
        };
        let Some(which) = total(register) else { continue };
        if !usable {
            continue;
        }
        let scale = match unit {
            "kWh" => 3,
            "Wh" => 0,
            other => return Err(error(format!("unit {other:?} is neither kWh nor Wh"))),
        };
        let wh = decimal_floor(value.get(), scale).map_err(|reason| error(format!("value: {reason}")))?;
        let time_s = time_seconds(time).map_err(|reason| error(format!("time {time:?}: {reason}")))?;
        let slot = match which {
            Total::Import => &mut registers.import,
            Total::Export => &mut registers.export,
        };
        *slot = Some(Register { wh, time_s });
    }
    Ok(registers)
}

/// The lifetime register an OBIS code (`RI`) names: `[A-B:]C.D.E[*F|.F]`, groups read as hex as OCMF 1.4 writes
/// them; import is C = 1 or B0, export C = 2 or C0, with D = 8, E = 0 and A (when given) = 1 (electricity).
pub fn total(obis: &str) -> Option<Total> {
    let (medium, rest) = match obis.split_once(':') {
        Some((ab, rest)) => (ab.split('-').next().map(hex_group), rest),
        None => (None, obis),
    };
    if medium.is_some_and(|medium| medium != Some(1)) {
        return None;
    }
    let rest = rest.split('*').next().unwrap_or(rest);
    let mut groups = rest.split('.').map(hex_group);
    let (Some(Some(c)), Some(Some(8)), Some(Some(0))) = (groups.next(), groups.next(), groups.next()) else {
        return None;
    };
    match c {
        0x01 | 0xB0 => Some(Total::Import),
        0x02 | 0xC0 => Some(Total::Export),
        _ => None,
    }
}

fn hex_group(group: &str) -> Option<u8> {
    if group.is_empty() || group.len() > 2 {
        return None;
    }
    u8::from_str_radix(group, 16).ok()
}

/// Most digits a value may have (an `u128` holds 38).
const DIGITS_MAX: usize = 30;

/// A non-negative decimal (a JSON number, or a JSON string holding one), times `10^scale`, rounded down:
/// `-?digits[.digits][(e|E)[+-]digits]`.
pub fn decimal_floor(text: &str, scale: i32) -> Result<u64, String> {
    let text = text.trim();
    let text = text.strip_prefix('"').and_then(|inner| inner.strip_suffix('"')).unwrap_or(text);
    let (number, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().map_err(|_| format!("bad exponent in {text:?}"))?),
        None => (text, 0),
    };
    if number.starts_with('-') {
        return Err(format!("{text:?} is negative"));
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{whole}{fraction}");
    if whole.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a decimal number"));
    }
    let digits = digits.trim_start_matches('0');
    if digits.len() > DIGITS_MAX {
        return Err(format!("{text:?} has more than {DIGITS_MAX} digits"));
    }
    let mantissa: u128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| format!("{text:?}"))? };
    let fraction_digits = i32::try_from(fraction.len()).map_err(|_| format!("{text:?} is too long"))?;
    let shift = exponent.saturating_add(scale).saturating_sub(fraction_digits);
    let scaled = if shift >= 0 {
        u32::try_from(shift)
            .ok()
            .and_then(|shift| 10u128.checked_pow(shift))
            .and_then(|factor| mantissa.checked_mul(factor))
            .ok_or_else(|| format!("{text:?} is too large"))?
    } else {
        10u128.checked_pow(shift.unsigned_abs()).map_or(0, |d| mantissa / d)
    };
    u64::try_from(scaled).map_err(|_| format!("{text:?} is too large"))
}

/// A reading's time `YYYY-MM-DDThh:mm:ss,fff±hhmm S` (the status letter after a space) as Unix seconds, rounded
/// down.
pub fn time_seconds(text: &str) -> Result<i64, &'static str> {
    let stamp = text.split(' ').next().unwrap_or(text);
    let bytes = stamp.as_bytes();
    if bytes.len() != 28 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' || bytes[13] != b':' {
        return Err("not YYYY-MM-DDThh:mm:ss,fff+hhmm");
    }
    if bytes[16] != b':' || bytes[19] != b',' || !matches!(bytes[23], b'+' | b'-') {
        return Err("not YYYY-MM-DDThh:mm:ss,fff+hhmm");
    }
    let number = |from: usize, to: usize| -> Result<i64, &'static str> {
        let field = stamp.get(from..to).ok_or("not ASCII")?;
        if !field.bytes().all(|b| b.is_ascii_digit()) {
            return Err("a field is not digits");
        }
        field.parse().map_err(|_| "a field is not digits")
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    number(20, 23)?;
    let (offset_hours, offset_minutes) = (number(24, 26)?, number(26, 28)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such date");
    }
    if hour > 23 || minute > 59 || second > 59 || offset_hours > 23 || offset_minutes > 59 {
        return Err("no such time");
    }
    let offset = (offset_hours * 60 + offset_minutes) * 60 * if bytes[23] == b'-' { -1 } else { 1 };
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_scale_and_round_down() {
        assert_eq!(decimal_floor("0.2597", 3), Ok(259));
        assert_eq!(decimal_floor("57.584", 3), Ok(57_584));
        assert_eq!(decimal_floor("\"00000000.000\"", 3), Ok(0));
        assert_eq!(decimal_floor("1.606848e7", 0), Ok(16_068_480));
        assert_eq!(decimal_floor("1833", 0), Ok(1833));
        assert_eq!(decimal_floor("12E-1", 0), Ok(1));
        assert!(decimal_floor("-1", 0).is_err());
        assert!(decimal_floor("1e40", 0).is_err());
        assert!(decimal_floor(".5", 0).is_err());
        assert!(decimal_floor("0x10", 0).is_err());
    }

    #[test]
    fn times_read_with_their_offset() {
        assert_eq!(time_seconds("2019-08-13T10:03:15,000+0000 I"), Ok(1_565_690_595));
        assert_eq!(time_seconds("2021-10-06T13:13:56,000+0200 R"), Ok(1_633_518_836));
        assert_eq!(time_seconds("1970-01-01T00:00:00,999+0000 S"), Ok(0));
        assert!(time_seconds("2019-02-29T10:03:15,000+0000 S").is_err());
        assert!(time_seconds("2019-08-13 10:03:15").is_err());
    }

    #[test]
    fn obis_totals() {
        assert_eq!(total("1-b:1.8.0"), Some(Total::Import));
        assert_eq!(total("1-0:2.8.0*255"), Some(Total::Export), "the F group is not read");
        assert_eq!(total("01-00:B0.08.00*FF"), Some(Total::Import));
        assert_eq!(total("01-00:C0.08.00"), Some(Total::Export));
        assert_eq!(total("1-0:1.8.1"), None, "a tariff register is not the total");
        assert_eq!(total("1-0:98.8.0.FF"), None);
        assert_eq!(total("7-0:1.8.0"), None, "gas");
        assert_eq!(total("2.8.0"), Some(Total::Export));
    }
}
