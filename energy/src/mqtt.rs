//! Meter registers from MQTT messages, decoded without IO: the node's MQTT adapter subscribes and hands each
//! message here. Which topic and which field hold which register is configuration ([`Mapping`]); presets cover
//! the common devices:
//!
//! - **Tasmota** (`tele/<device>/SENSOR`, JSON): an energy-monitoring plug reports `{"ENERGY":{"Total":kWh,...}}`,
//!   a smart-meter reader (SML script) reports `{"<name>":{"Total_in":kWh,"Total_out":kWh,...}}`.
//! - **Shelly EM / 3EM** (Gen 1): `shellies/<device>/emeter/<n>/total` and `.../total_returned`, plain numbers in Wh.
//! - **Shelly Pro EM / Pro 3EM** (Gen 2+): `<device>/status/em1data:<n>` or `emdata:<n>`, JSON with
//!   `total_act_energy` and `total_act_ret_energy` in Wh.
//!
//! A field is found by a JSON pointer (RFC 6901, `/ENERGY/Total`); a payload that is a plain number needs none.
//! Its value times `scale` is the register in Wh — or, for `grid-voltage`, the voltage at the connection point in
//! V: the grid counts as present at [`GRID_VOLTS_MIN`] or more (the Shelly presets map it).

use crate::meter::Sample;

/// Which register a mapped value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Register {
    Import,
    Export,
    Generation,
    Consumption,
    /// The voltage at the grid connection point, V (optional: it only tells whether the grid is there).
    GridVoltage,
}

pub use crate::meter::GRID_VOLTS_MIN;

/// Where one register is found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub register: Register,
    /// The MQTT topic (exact; no wildcards).
    pub topic: String,
    /// JSON pointer to the value in the payload; absent when the payload is a plain number.
    #[serde(default)]
    pub pointer: Option<String>,
    /// Multiplier from the payload's unit to Wh (1000 for kWh).
    #[serde(default = "one")]
    pub scale: f64,
}

fn one() -> f64 {
    1.0
}

/// Device presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// A Tasmota energy-monitoring plug: its `ENERGY.Total` is the consumption it measured.
    TasmotaPlug,
    /// A Tasmota smart-meter reader whose SML script names the meter `SML` with `Total_in`, `Total_out` (kWh).
    TasmotaSml,
    /// A Shelly EM or 3EM (Gen 1), channel 0 at the grid connection point.
    ShellyEm,
    /// A Shelly Pro EM (Gen 2+), channel 0 at the grid connection point.
    ShellyProEm,
}

impl Preset {
    /// The mappings of a device named `device`.
    #[must_use]
    pub fn mappings(self, device: &str) -> Vec<Mapping> {
        let map = |register, topic: String, pointer: Option<&str>, scale| Mapping {
            register,
            topic,
            pointer: pointer.map(str::to_owned),
            scale,
        };
        match self {
            Preset::TasmotaPlug => {
                vec![map(Register::Consumption, format!("tele/{device}/SENSOR"), Some("/ENERGY/Total"), 1000.0)]
            }
            Preset::TasmotaSml => vec![
                map(Register::Import, format!("tele/{device}/SENSOR"), Some("/SML/Total_in"), 1000.0),
                map(Register::Export, format!("tele/{device}/SENSOR"), Some("/SML/Total_out"), 1000.0),
            ],
            Preset::ShellyEm => vec![
                map(Register::Import, format!("shellies/{device}/emeter/0/total"), None, 1.0),
                map(Register::Export, format!("shellies/{device}/emeter/0/total_returned"), None, 1.0),
                map(Register::GridVoltage, format!("shellies/{device}/emeter/0/voltage"), None, 1.0),
            ],
            Preset::ShellyProEm => vec![
                map(Register::Import, format!("{device}/status/em1data:0"), Some("/total_act_energy"), 1.0),
                map(Register::Export, format!("{device}/status/em1data:0"), Some("/total_act_ret_energy"), 1.0),
                map(Register::GridVoltage, format!("{device}/status/em1:0"), Some("/voltage"), 1.0),
            ],
        }
    }
}

/// Why a message's value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("payload of {topic} is not JSON or not a number")]
    Payload { topic: String },
    #[error("payload of {topic} has no number at {pointer}")]
    Field { topic: String, pointer: String },
    #[error("value of {topic} is negative, not finite or too large")]
    Value { topic: String },
    #[error("meter not ready: no value yet for {0:?}")]
    NotReady(Register),
}

/// Most bytes of one MQTT payload kos reads.
pub const PAYLOAD_BYTES_MAX: usize = 16 * 1024;

/// The latest value of each mapped register, and the registers that are derived when not mapped.
#[derive(Debug, Clone)]
pub struct Registers {
    mappings: Vec<Mapping>,
    values: [Option<u64>; 5],
    derived: crate::meter::Derived,
}

impl Registers {
    #[must_use]
    pub fn new(mappings: Vec<Mapping>) -> Registers {
        Registers { mappings, values: [None; 5], derived: crate::meter::Derived::default() }
    }

    /// The topics to subscribe to.
    #[must_use]
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.mappings.iter().map(|mapping| mapping.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// Takes one message; returns how many registers it updated.
    pub fn message(&mut self, topic: &str, payload: &[u8]) -> Result<usize, Error> {
        let mut updated = 0;
        for index in 0..self.mappings.len() {
            let mapping = &self.mappings[index];
            if mapping.topic != topic {
                continue;
            }
            let value = value(mapping, payload)?;
            self.values[mapping.register as usize] = Some(value);
            updated += 1;
        }
        Ok(updated)
    }

    /// The registers as a sample at `at_ms`: import is required; export and generation are 0 when not mapped;
    /// consumption, when not mapped, is derived as generation + import − export.
    pub fn sample(&mut self, at_ms: u64) -> Result<Sample, Error> {
        for mapping in &self.mappings {
            if mapping.register != Register::GridVoltage && self.values[mapping.register as usize].is_none() {
                return Err(Error::NotReady(mapping.register));
            }
        }
        let [import, export, generation, consumption, voltage] = self.values;
        let consumption_mapped = consumption.is_some();
        let import = match (import, consumption) {
            (Some(import), _) => import,
            // A plug measures what its load uses; everything it uses comes from the house.
            (None, Some(consumption)) => consumption,
            (None, None) => return Err(Error::NotReady(Register::Import)),
        };
        let mut sample = Sample {
            at_ms,
            import_wh: import,
            export_wh: export.unwrap_or(0),
            generation_wh: generation.unwrap_or(0),
            consumption_wh: consumption.unwrap_or(0),
            grid_present: voltage.map(|volts| volts >= GRID_VOLTS_MIN),
        };
        if !consumption_mapped {
            sample.consumption_wh = self.derived.consumption(&sample);
        }
        Ok(sample)
    }
}

fn value(mapping: &Mapping, payload: &[u8]) -> Result<u64, Error> {
    let topic = || mapping.topic.clone();
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(Error::Payload { topic: topic() });
    }
    let json: serde_json::Value = serde_json::from_slice(payload).map_err(|_| Error::Payload { topic: topic() })?;
    let number = match &mapping.pointer {
        None => json.as_f64(),
        Some(pointer) => json.pointer(pointer).and_then(serde_json::Value::as_f64),
    };
    let number = number.ok_or_else(|| match &mapping.pointer {
        None => Error::Payload { topic: topic() },
        Some(pointer) => Error::Field { topic: topic(), pointer: pointer.clone() },
    })?;
    let wh = number * mapping.scale;
    if !wh.is_finite() || !(0.0..1e18).contains(&wh) {
        return Err(Error::Value { topic: topic() });
    }
    Ok(wh.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shelly_voltage_tells_whether_the_grid_is_there() {
        let mut shelly = Registers::new(Preset::ShellyEm.mappings("em"));
        assert_eq!(shelly.message("shellies/em/emeter/0/total", b"1000"), Ok(1));
        assert_eq!(shelly.message("shellies/em/emeter/0/total_returned", b"0"), Ok(1));
        // The voltage is optional: without it the meter is ready and says nothing about the grid.
        assert_eq!(shelly.sample(0).map(|sample| sample.grid_present), Ok(None));
        assert_eq!(shelly.message("shellies/em/emeter/0/voltage", b"231.4"), Ok(1));
        assert_eq!(shelly.sample(1).map(|sample| sample.grid_present), Ok(Some(true)));
        assert_eq!(shelly.message("shellies/em/emeter/0/voltage", b"0.8"), Ok(1));
        assert_eq!(shelly.sample(2).map(|sample| sample.grid_present), Ok(Some(false)));
        let mut pro = Registers::new(Preset::ShellyProEm.mappings("pro"));
        assert_eq!(pro.message("pro/status/em1:0", br#"{"id":0,"voltage":229.9,"current":1.2}"#), Ok(1));
        assert_eq!(pro.message("pro/status/em1data:0", br#"{"total_act_energy":5,"total_act_ret_energy":1}"#), Ok(2));
        assert_eq!(pro.sample(0).map(|sample| sample.grid_present), Ok(Some(true)));
    }

    #[test]
    fn tasmota_sml_and_shelly_payloads_give_registers() {
        let mut tasmota = Registers::new(Preset::TasmotaSml.mappings("meter1"));
        assert_eq!(tasmota.topics(), vec!["tele/meter1/SENSOR".to_owned()]);
        assert!(matches!(tasmota.sample(0), Err(Error::NotReady(Register::Import))));
        let payload =
            br#"{"Time":"2026-11-27T10:00:00","SML":{"Total_in":12345.678,"Total_out":2345.6,"Power_curr":512}}"#;
        assert_eq!(tasmota.message("tele/meter1/SENSOR", payload), Ok(2));
        let sample = tasmota.sample(5).expect("ready");
        assert_eq!((sample.import_wh, sample.export_wh), (12_345_678, 2_345_600));

        let mut shelly = Registers::new(Preset::ShellyEm.mappings("shellyem-1"));
        assert_eq!(shelly.message("shellies/shellyem-1/emeter/0/total", b"81234.5"), Ok(1));
        assert!(matches!(shelly.sample(0), Err(Error::NotReady(Register::Export))));
        assert_eq!(shelly.message("shellies/shellyem-1/emeter/0/total_returned", b"100"), Ok(1));
        assert_eq!(shelly.sample(0).map(|s| (s.import_wh, s.export_wh)), Ok((81_235, 100)));
        assert_eq!(shelly.message("other/topic", b"1"), Ok(0));

        let mut pro = Registers::new(Preset::ShellyProEm.mappings("shellyproem50-a"));
        let payload = br#"{"id":0,"total_act_energy":5000.25,"total_act_ret_energy":12.0}"#;
        assert_eq!(pro.message("shellyproem50-a/status/em1data:0", payload), Ok(2));
        assert_eq!(pro.sample(0).map(|s| (s.import_wh, s.export_wh)), Ok((5_000, 12)));
    }

    #[test]
    fn bad_payloads_are_errors_and_keep_the_last_good_value() {
        let mut tasmota = Registers::new(Preset::TasmotaSml.mappings("m"));
        assert!(tasmota.message("tele/m/SENSOR", br#"{"SML":{"Total_in":1.0,"Total_out":0.5}}"#).is_ok());
        assert!(matches!(tasmota.message("tele/m/SENSOR", b"not json"), Err(Error::Payload { .. })));
        assert!(matches!(tasmota.message("tele/m/SENSOR", br#"{"SML":{}}"#), Err(Error::Field { .. })));
        assert!(matches!(
            tasmota.message("tele/m/SENSOR", br#"{"SML":{"Total_in":-5,"Total_out":0}}"#),
            Err(Error::Value { .. })
        ));
        assert!(matches!(
            tasmota.message("tele/m/SENSOR", &vec![b' '; PAYLOAD_BYTES_MAX + 1]),
            Err(Error::Payload { .. })
        ));
        assert_eq!(tasmota.sample(0).map(|s| s.import_wh), Ok(1_000));
    }
}
