//! Exact conversion between decimal text ("0.305") and integer milli-units (305), for people and JSON. No floats.

/// A decimal that is not a non-negative number with at most three decimals within 64 bits of milli-units.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an amount: {reason}")]
pub struct Error {
    pub text: String,
    pub reason: &'static str,
}

/// Parses `"12"`, `"12.3"`, `"12.345"` into milli-units (12000, 12300, 12345).
pub fn parse_milli(text: &str) -> Result<u64, Error> {
    let error = |reason| Error { text: text.to_owned(), reason };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error("want digits, optionally followed by '.' and up to 3 digits"));
    }
    if fraction.len() > 3
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || (text.contains('.') && fraction.is_empty())
    {
        return Err(error("at most 3 decimals (milli-units) are allowed"));
    }
    let whole: u64 = whole.parse().map_err(|_| error("too large"))?;
    let mut milli: u64 = 0;
    for (position, digit) in fraction.bytes().enumerate() {
        let scale = [100, 10, 1][position];
        milli = milli.saturating_add(u64::from(digit - b'0').saturating_mul(scale));
    }
    whole.checked_mul(1000).and_then(|value| value.checked_add(milli)).ok_or_else(|| error("too large"))
}

/// Formats milli-units as a decimal with no trailing zeros: 12000 → "12", 12300 → "12.3", 5 → "0.005".
pub fn format_milli(milli: u64) -> String {
    let (whole, fraction) = (milli / 1000, milli % 1000);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:03}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_exactly() {
        for (text, milli) in [("0", 0), ("12", 12_000), ("12.3", 12_300), ("0.305", 305), ("0.005", 5)] {
            assert_eq!(parse_milli(text), Ok(milli), "{text}");
            assert_eq!(parse_milli(&format_milli(milli)), Ok(milli));
        }
        assert_eq!(format_milli(12_300), "12.3");
        for bad in ["", ".5", "1.", "1.2345", "-1", "1e3", "18446744073709552", "0x10", " 1"] {
            assert!(parse_milli(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_milli("18446744073709551.615"), Ok(u64::MAX));
    }
}
