//! SunSpec register maps, decoded without IO: the node's Modbus TCP adapter reads the registers and hands them
//! here. A SunSpec device starts its map with the marker "SunS" at register 40000 (or 50000, or 0), followed by
//! models, each a header (id, length) and `length` registers, up to the end model (id 0xFFFF).
//!
//! Models read: 1 (common: manufacturer, model, version, serial), 101–103 (inverter, single/split/three phase:
//! AC power `W`·10^`W_SF` at offsets 12/13, lifetime energy `WH` (acc32)·10^`WH_SF` at 22–24), and 201–204
//! (meter: total power `W`·10^`W_SF` at 16/20, `TotWhExp` (acc32) at 36, `TotWhImp` (acc32) at 44, `TotWh_SF` at
//! 52). A meter at the grid connection point counts energy taken from the grid as imported. Model 124 (basic
//! storage controls) gives a battery's state of charge and takes the commands of the home controller.

/// The "SunS" marker.
pub const MARKER: [u16; 2] = [0x5375, 0x6e53];
/// Where a SunSpec map may start, in the order to try.
pub const BASE_ADDRESSES: [u16; 3] = [40_000, 50_000, 0];
/// The id of the end model.
pub const END: u16 = 0xFFFF;
/// Most models walked in one map (a map is a few models; this bounds a hostile device).
pub const MODELS_MAX: usize = 64;
/// Most registers in one Modbus read.
pub const READ_REGISTERS_MAX: u16 = 125;

/// Why registers could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("model {model} has {got} registers, at least {need} are needed")]
    Short { model: u16, got: usize, need: usize },
    #[error("model {model}: {field} is not implemented by the device")]
    NotImplemented { model: u16, field: &'static str },
    #[error("model {model}: scale factor {scale} of {field} is out of range")]
    Scale { model: u16, field: &'static str, scale: i16 },
}

/// A model's place in the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelHeader {
    pub id: u16,
    /// Registers after the header.
    pub length: u16,
    /// Address of the first register after the header.
    pub address: u16,
}

/// The common model (1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Common {
    pub manufacturer: String,
    pub model: String,
    pub version: String,
    pub serial: String,
}

/// What the inverter models (101–103) give kos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inverter {
    /// AC output power, W.
    pub power_w: i64,
    /// Lifetime energy produced, Wh.
    pub lifetime_wh: u64,
}

/// What the meter models (201–204) give kos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meter {
    /// Total real power, W (positive: taken from the grid).
    pub power_w: i64,
    /// Lifetime energy taken from the grid, Wh.
    pub imported_wh: u64,
    /// Lifetime energy fed into the grid, Wh.
    pub exported_wh: u64,
    /// Average line-to-neutral voltage, V, when the meter implements it (`PhV`).
    pub voltage_v: Option<u64>,
}

/// Is this a model kos reads?
#[must_use]
pub fn is_inverter(id: u16) -> bool {
    (101..=103).contains(&id)
}

#[must_use]
pub fn is_meter(id: u16) -> bool {
    (201..=204).contains(&id)
}

/// A string of `registers`, two ASCII bytes each, NUL-padded.
fn string(registers: &[u16]) -> String {
    let bytes: Vec<u8> = registers.iter().flat_map(|register| register.to_be_bytes()).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&bytes).trim().to_owned()
}

fn need(model: u16, data: &[u16], need: usize) -> Result<(), Error> {
    if data.len() < need { Err(Error::Short { model, got: data.len(), need }) } else { Ok(()) }
}

/// Decodes the common model's registers (after its header).
pub fn common(data: &[u16]) -> Result<Common, Error> {
    need(1, data, 64)?;
    Ok(Common {
        manufacturer: string(&data[0..16]),
        model: string(&data[16..32]),
        version: string(&data[40..48]),
        serial: string(&data[48..64]),
    })
}

/// value · 10^scale as an integer, or an error when the scale is "not implemented" or absurd.
fn scaled(model: u16, field: &'static str, value: i128, scale: u16) -> Result<i128, Error> {
    let scale = scale as i16;
    if scale == i16::MIN {
        return Err(Error::NotImplemented { model, field });
    }
    if !(-10..=10).contains(&scale) {
        return Err(Error::Scale { model, field, scale });
    }
    let factor = 10i128.pow(u32::from(scale.unsigned_abs()));
    Ok(if scale >= 0 { value * factor } else { value / factor })
}

fn int16(model: u16, field: &'static str, register: u16) -> Result<i128, Error> {
    if register == 0x8000 { Err(Error::NotImplemented { model, field }) } else { Ok(i128::from(register as i16)) }
}

fn acc32(model: u16, field: &'static str, high: u16, low: u16) -> Result<i128, Error> {
    let value = (u32::from(high) << 16) | u32::from(low);
    // An accumulator of 0 means "not accumulated" in SunSpec.
    if value == 0 { Err(Error::NotImplemented { model, field }) } else { Ok(i128::from(value)) }
}

fn watt_hours(value: i128) -> u64 {
    u64::try_from(value.max(0)).unwrap_or(u64::MAX)
}

/// Decodes an inverter model (101–103) from its registers (after its header).
pub fn inverter(id: u16, data: &[u16]) -> Result<Inverter, Error> {
    need(id, data, 25)?;
    let power = scaled(id, "W", int16(id, "W", data[12])?, data[13])?;
    let lifetime = scaled(id, "WH", acc32(id, "WH", data[22], data[23])?, data[24])?;
    Ok(Inverter { power_w: i64::try_from(power).unwrap_or(0), lifetime_wh: watt_hours(lifetime) })
}

/// Decodes a meter model (201–204) from its registers (after its header).
pub fn meter(id: u16, data: &[u16]) -> Result<Meter, Error> {
    need(id, data, 53)?;
    let power = scaled(id, "W", int16(id, "W", data[16])?, data[20])?;
    let exported = scaled(id, "TotWhExp", acc32(id, "TotWhExp", data[36], data[37]).unwrap_or(0), data[52])?;
    let imported = scaled(id, "TotWhImp", acc32(id, "TotWhImp", data[44], data[45])?, data[52])?;
    // PhV with V_SF; optional (a meter may not implement it).
    let voltage = int16(id, "PhV", data[5]).and_then(|volts| scaled(id, "PhV", volts, data[13])).ok();
    Ok(Meter {
        power_w: i64::try_from(power).unwrap_or(0),
        imported_wh: watt_hours(imported),
        exported_wh: watt_hours(exported),
        voltage_v: voltage.map(|volts| u64::try_from(volts.max(0)).unwrap_or(0)),
    })
}

/// Is this the basic storage controls model?
#[must_use]
pub fn is_storage(id: u16) -> bool {
    id == STORAGE
}

/// The basic storage controls model (124): a battery's state and the limits through which it is driven.
pub const STORAGE: u16 = 124;

/// Offsets of model 124's points (after its header).
pub mod storage_points {
    pub const W_CHA_MAX: usize = 0;
    pub const STOR_CTL_MOD: usize = 3;
    pub const MIN_RSV_PCT: usize = 5;
    pub const CHA_STATE: usize = 6;
    pub const CHA_ST: usize = 9;
    pub const OUT_W_RTE: usize = 10;
    pub const IN_W_RTE: usize = 11;
    pub const IN_OUT_W_RTE_RVRT_TMS: usize = 13;
    pub const CHA_GRI_SET: usize = 15;
    pub const W_CHA_MAX_SF: usize = 16;
    pub const MIN_RSV_PCT_SF: usize = 19;
    pub const CHA_STATE_SF: usize = 20;
    pub const IN_OUT_W_RTE_SF: usize = 23;
    /// Registers the model has.
    pub const LENGTH: usize = 24;
}

/// What model 124 tells of a battery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storage {
    /// Most charge (and discharge) power, W (`WChaMax`).
    pub max_charge_w: u64,
    /// State of charge, parts per million of the usable capacity (`ChaState`).
    pub charge_ppm: u32,
    /// Reserve the battery keeps for backup, ppm (`MinRsvPct`; 0 when not implemented).
    pub reserve_ppm: u32,
    /// The scale factor of the rate points `OutWRte` and `InWRte` (percent of `WChaMax` × 10^-sf).
    pub rate_scale: i16,
}

fn percent_ppm(model: u16, field: &'static str, value: u16, scale: u16) -> Result<u32, Error> {
    if value == 0xFFFF {
        return Err(Error::NotImplemented { model, field });
    }
    // percent × 10^scale × 10,000 = ppm.
    let ppm = scaled(model, field, i128::from(value) * 10_000, scale)?;
    Ok(u32::try_from(ppm.clamp(0, 1_000_000)).unwrap_or(0))
}

/// Decodes the storage model (124) from its registers (after its header).
pub fn storage(data: &[u16]) -> Result<Storage, Error> {
    use storage_points as p;
    let id = STORAGE;
    need(id, data, p::LENGTH)?;
    if data[p::W_CHA_MAX] == 0xFFFF {
        return Err(Error::NotImplemented { model: id, field: "WChaMax" });
    }
    let max_charge = scaled(id, "WChaMax", i128::from(data[p::W_CHA_MAX]), data[p::W_CHA_MAX_SF])?;
    let rate_scale = data[p::IN_OUT_W_RTE_SF] as i16;
    if !(-4..=0).contains(&rate_scale) {
        return Err(Error::Scale { model: id, field: "InOutWRte_SF", scale: rate_scale });
    }
    Ok(Storage {
        max_charge_w: watt_hours(max_charge),
        charge_ppm: percent_ppm(id, "ChaState", data[p::CHA_STATE], data[p::CHA_STATE_SF])?,
        reserve_ppm: percent_ppm(id, "MinRsvPct", data[p::MIN_RSV_PCT], data[p::MIN_RSV_PCT_SF]).unwrap_or(0),
        rate_scale,
    })
}

/// Registers to write, as (offset after the model header, values).
pub type Writes = Vec<(u16, Vec<u16>)>;

/// The writes that put a model-124 battery under a command for the next `revert_s` seconds, after which the
/// device goes back to its own control (`InOutWRte_RvrtTms`) — so a stopped or cut-off node never leaves a
/// battery forcing charge or discharge.
///
/// `StorCtl_Mod` enables the charge limit (bit 0) and the discharge limit (bit 1); `InWRte` and `OutWRte` are
/// those limits in percent of `WChaMax`. A negative limit forces the opposite direction (the convention of the
/// common hybrid inverters, e.g. Fronius): `OutWRte` = −x charges at x %, `InWRte` = −x discharges at x %.
///
/// - self-consumption: `StorCtl_Mod` = 0 (no limits: the battery follows the home by itself);
/// - idle: both limits at 0;
/// - charge at P: `InWRte` = P, `OutWRte` = −P, grid charging allowed (`ChaGriSet` = 1);
/// - discharge at P: `OutWRte` = P, `InWRte` = −P.
///
/// The mode is written last, once its limits are in place.
#[must_use]
pub fn storage_writes(command: crate::home::BatteryCommand, storage: &Storage, revert_s: u16) -> Writes {
    use crate::home::BatteryCommand;
    use storage_points as p;
    // Percent of WChaMax in the device's rate scale: P / WChaMax × 100 × 10^-sf, at most 100 %.
    let rate = |watts: u64| -> u16 {
        let unit = 10i64.pow(u32::from(storage.rate_scale.unsigned_abs()));
        let percent = (watts.min(storage.max_charge_w) as i64 * 100 * unit) / storage.max_charge_w.max(1) as i64;
        percent.clamp(0, i64::from(i16::MAX)) as u16
    };
    let negative = |value: u16| (-(value as i16)) as u16;
    let offset = |point: usize| point as u16;
    let limits = |out_rate: u16, in_rate: u16| {
        // OutWRte, InWRte, InOutWRte_WinTms (0: at once), InOutWRte_RvrtTms.
        (offset(p::OUT_W_RTE), vec![out_rate, in_rate, 0, revert_s])
    };
    match command {
        BatteryCommand::SelfConsumption => vec![(offset(p::STOR_CTL_MOD), vec![0])],
        BatteryCommand::Idle => vec![limits(0, 0), (offset(p::STOR_CTL_MOD), vec![3])],
        BatteryCommand::Charge(watts) => vec![
            limits(negative(rate(watts)), rate(watts)),
            (offset(p::CHA_GRI_SET), vec![1]),
            (offset(p::STOR_CTL_MOD), vec![3]),
        ],
        BatteryCommand::Discharge(watts) => {
            vec![limits(rate(watts), negative(rate(watts))), (offset(p::STOR_CTL_MOD), vec![3])]
        }
    }
}

/// Encodes registers as a device would: for tests, simulators and the documentation's vectors.
pub mod encode {
    /// A string in `registers` registers, NUL-padded.
    #[must_use]
    pub fn string(text: &str, registers: usize) -> Vec<u16> {
        let mut bytes = text.as_bytes().to_vec();
        bytes.resize(registers * 2, 0);
        bytes.chunks(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]])).collect()
    }

    /// An acc32 value as (high, low).
    #[must_use]
    pub fn acc32(value: u32) -> [u16; 2] {
        [(value >> 16) as u16, value as u16]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_decode_with_their_scale_factors() {
        let mut data = vec![0u16; 66];
        data[0..16].copy_from_slice(&encode::string("kos labs", 16));
        data[16..32].copy_from_slice(&encode::string("SimInverter 5k", 16));
        data[40..48].copy_from_slice(&encode::string("1.2.3", 8));
        data[48..64].copy_from_slice(&encode::string("SN-0042", 16));
        let common = common(&data).expect("common");
        assert_eq!(common.manufacturer, "kos labs");
        assert_eq!(common.serial, "SN-0042");

        let mut inverter_data = vec![0u16; 50];
        inverter_data[12] = 4_321;
        inverter_data[13] = 0;
        inverter_data[22..24].copy_from_slice(&encode::acc32(1_234_567));
        inverter_data[24] = 1; // ×10
        assert_eq!(inverter(103, &inverter_data), Ok(Inverter { power_w: 4_321, lifetime_wh: 12_345_670 }));

        let mut meter_data = vec![0u16; 105];
        meter_data[16] = (-1_500i16) as u16;
        meter_data[20] = 0;
        meter_data[36..38].copy_from_slice(&encode::acc32(700_000));
        meter_data[44..46].copy_from_slice(&encode::acc32(2_500_000));
        meter_data[52] = (-1i16) as u16; // ÷10
        // PhV 0 with V_SF 0: the meter measures 0 V (no grid).
        assert_eq!(
            meter(203, &meter_data),
            Ok(Meter { power_w: -1_500, imported_wh: 250_000, exported_wh: 70_000, voltage_v: Some(0) })
        );
        meter_data[5] = 2_301;
        meter_data[13] = (-1i16) as u16;
        assert_eq!(meter(203, &meter_data).map(|meter| meter.voltage_v), Ok(Some(230)));
        // A meter that does not implement PhV says nothing about the grid.
        meter_data[5] = 0x8000;
        assert_eq!(meter(203, &meter_data).map(|meter| meter.voltage_v), Ok(None));
    }

    fn storage_registers() -> Vec<u16> {
        use storage_points as p;
        let mut data = vec![0u16; p::LENGTH];
        data[p::W_CHA_MAX] = 500;
        data[p::W_CHA_MAX_SF] = 1; // 5,000 W
        data[p::CHA_STATE] = 4_250;
        data[p::CHA_STATE_SF] = (-2i16) as u16; // 42.50 %
        data[p::MIN_RSV_PCT] = 10;
        data[p::IN_OUT_W_RTE_SF] = (-1i16) as u16; // rates in 0.1 %
        data
    }

    #[test]
    fn the_storage_model_decodes_and_commands_become_its_limits() {
        use crate::home::BatteryCommand;
        use storage_points as p;
        let storage = storage(&storage_registers()).expect("storage");
        assert_eq!(storage, Storage { max_charge_w: 5_000, charge_ppm: 425_000, reserve_ppm: 100_000, rate_scale: -1 });
        // Charge at 2,000 W: 40.0 % in 0.1 % steps, forced (OutWRte negative), grid charging on, mode last.
        let writes = storage_writes(BatteryCommand::Charge(2_000), &storage, 2_700);
        assert_eq!(
            writes,
            vec![
                (p::OUT_W_RTE as u16, vec![(-400i16) as u16, 400, 0, 2_700]),
                (p::CHA_GRI_SET as u16, vec![1]),
                (p::STOR_CTL_MOD as u16, vec![3]),
            ]
        );
        // Discharge beyond WChaMax is capped at 100 %.
        let writes = storage_writes(BatteryCommand::Discharge(9_000), &storage, 60);
        assert_eq!(writes[0], (p::OUT_W_RTE as u16, vec![1_000, (-1_000i16) as u16, 0, 60]));
        assert_eq!(storage_writes(BatteryCommand::Idle, &storage, 60)[0].1[..2], [0, 0]);
        assert_eq!(
            storage_writes(BatteryCommand::SelfConsumption, &storage, 60),
            vec![(p::STOR_CTL_MOD as u16, vec![0])]
        );
        // Not implemented or absurd points are errors, not batteries at 0 %.
        let mut data = storage_registers();
        data[p::CHA_STATE] = 0xFFFF;
        assert!(matches!(super::storage(&data), Err(Error::NotImplemented { field: "ChaState", .. })));
        let mut data = storage_registers();
        data[p::IN_OUT_W_RTE_SF] = 3;
        assert!(matches!(super::storage(&data), Err(Error::Scale { .. })));
        assert!(matches!(super::storage(&data[..10]), Err(Error::Short { .. })));
    }

    #[test]
    fn missing_or_absurd_registers_are_errors() {
        assert!(matches!(inverter(103, &[0; 10]), Err(Error::Short { .. })));
        let mut data = vec![0u16; 50];
        data[12] = 0x8000;
        assert_eq!(inverter(103, &data), Err(Error::NotImplemented { model: 103, field: "W" }));
        data[12] = 1;
        data[13] = 0;
        assert_eq!(inverter(103, &data), Err(Error::NotImplemented { model: 103, field: "WH" }));
        data[22] = 1;
        data[24] = 90;
        assert!(matches!(inverter(103, &data), Err(Error::Scale { .. })));
    }
}
