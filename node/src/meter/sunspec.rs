//! A SunSpec device over Modbus TCP (tokio-modbus): finds the SunSpec map, walks its models once, then reads the
//! inverter (101–103) and meter (201–204) models on every sample, and drives a battery through the basic
//! storage controls (124) for the home controller. Decoding and encoding are the energy crate's.

use std::net::SocketAddr;
use std::time::Duration;

use energy::meter::{Derived, Error, Sample};
use energy::sunspec::{self, ModelHeader};
use protocol::message::MeterSource;
use tokio_modbus::client::{Context, Reader as _, Writer as _};
use tokio_modbus::slave::Slave;

/// Where the device is.
#[derive(Debug, Clone)]
pub struct Settings {
    pub address: SocketAddr,
    pub unit: u8,
    /// Most time for one request.
    pub timeout: Duration,
    /// The battery behind the storage model (124), when the home controller drives it.
    pub battery: Option<Battery>,
}

/// What the device does not tell of its battery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Battery {
    /// Usable capacity, Wh.
    pub capacity_wh: u64,
    /// Round-trip efficiency, parts per million.
    #[serde(default = "Battery::efficiency_default")]
    pub efficiency_ppm: u32,
}

impl Battery {
    fn efficiency_default() -> u32 {
        900_000
    }
}

/// The models found on the device.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub common: sunspec::Common,
    pub inverter: Option<ModelHeader>,
    pub meter: Option<ModelHeader>,
    /// Basic storage controls (124): a battery kos can drive.
    pub storage: Option<ModelHeader>,
}

/// A SunSpec device; reconnects on the next sample after any error.
pub struct Device {
    settings: Settings,
    context: Option<Context>,
    layout: Option<Layout>,
    derived: Derived,
}

impl Device {
    #[must_use]
    pub fn new(settings: Settings) -> Device {
        Device { settings, context: None, layout: None, derived: Derived::default() }
    }

    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The models found, once the device was read.
    #[must_use]
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_ref()
    }

    async fn read(&mut self, address: u16, count: u16) -> Result<Vec<u16>, Error> {
        let timeout = self.settings.timeout;
        let context = self.connected().await?;
        let answer = tokio::time::timeout(timeout, context.read_holding_registers(address, count)).await;
        let result = match answer {
            Err(_) => Err(Error::Unreachable(format!("reading {count} registers at {address} timed out"))),
            Ok(Err(error)) => Err(Error::Unreachable(format!("reading registers at {address}: {error}"))),
            Ok(Ok(Err(exception))) => {
                return Err(Error::Unreadable(format!("registers at {address}: Modbus exception {exception}")));
            }
            Ok(Ok(Ok(registers))) if registers.len() == usize::from(count) => Ok(registers),
            Ok(Ok(Ok(registers))) => {
                Err(Error::Unreadable(format!("asked {count} registers at {address}, got {}", registers.len())))
            }
        };
        if result.is_err() {
            // A broken or confused connection is dropped; the next sample connects again.
            self.context = None;
        }
        result
    }

    /// A whole model's registers, in reads of at most 125.
    async fn model(&mut self, header: ModelHeader) -> Result<Vec<u16>, Error> {
        let mut registers = Vec::with_capacity(usize::from(header.length));
        let mut offset = 0u16;
        while offset < header.length {
            let count = (header.length - offset).min(sunspec::READ_REGISTERS_MAX);
            let address = header.address.checked_add(offset).ok_or(Error::Unreadable("model beyond 65535".into()))?;
            registers.extend(self.read(address, count).await?);
            offset += count;
        }
        Ok(registers)
    }

    async fn connected(&mut self) -> Result<&mut Context, Error> {
        if self.context.is_none() {
            let connect = tokio_modbus::client::tcp::connect_slave(self.settings.address, Slave(self.settings.unit));
            let context = tokio::time::timeout(self.settings.timeout, connect)
                .await
                .map_err(|_| Error::Unreachable(format!("connecting to {} timed out", self.settings.address)))?
                .map_err(|error| Error::Unreachable(format!("connecting to {}: {error}", self.settings.address)))?;
            self.context = Some(context);
        }
        self.context.as_mut().ok_or_else(|| Error::Unreachable("not connected".into()))
    }

    async fn write(&mut self, address: u16, values: &[u16]) -> Result<(), Error> {
        let timeout = self.settings.timeout;
        let context = self.connected().await?;
        let answer = tokio::time::timeout(timeout, context.write_multiple_registers(address, values)).await;
        let result = match answer {
            Err(_) => Err(Error::Unreachable(format!("writing registers at {address} timed out"))),
            Ok(Err(error)) => Err(Error::Unreachable(format!("writing registers at {address}: {error}"))),
            Ok(Ok(Err(exception))) => {
                return Err(Error::Unreadable(format!("writing registers at {address}: Modbus exception {exception}")));
            }
            Ok(Ok(Ok(()))) => Ok(()),
        };
        if result.is_err() {
            self.context = None;
        }
        result
    }

    /// The battery behind the storage model, when the device has one.
    pub async fn storage(&mut self) -> Result<Option<sunspec::Storage>, Error> {
        let layout = match &self.layout {
            Some(layout) => layout.clone(),
            None => self.discover().await?,
        };
        let Some(header) = layout.storage else { return Ok(None) };
        let registers = self.model(header).await?;
        sunspec::storage(&registers).map(Some).map_err(|error| Error::Unreadable(error.to_string()))
    }

    /// Puts the battery under `command` for the next `revert_s` seconds (then the device takes over again).
    pub async fn command(
        &mut self,
        command: energy::home::BatteryCommand,
        storage: &sunspec::Storage,
        revert_s: u16,
    ) -> Result<(), Error> {
        let Some(header) = self.layout.as_ref().and_then(|layout| layout.storage) else {
            return Err(Error::NotReady("the device has no storage model (124)".into()));
        };
        for (offset, values) in sunspec::storage_writes(command, storage, revert_s) {
            let address = header.address.checked_add(offset).ok_or(Error::Unreadable("model beyond 65535".into()))?;
            self.write(address, &values).await?;
        }
        Ok(())
    }

    /// Finds the map and its models.
    pub async fn discover(&mut self) -> Result<Layout, Error> {
        let mut base = None;
        for candidate in sunspec::BASE_ADDRESSES {
            match self.read(candidate, 2).await {
                Ok(marker) if marker == sunspec::MARKER => {
                    base = Some(candidate);
                    break;
                }
                Ok(_) | Err(Error::Unreadable(_)) => {}
                Err(error) => return Err(error),
            }
        }
        let base = base.ok_or_else(|| Error::Unreadable("no SunSpec marker at 40000, 50000 or 0".into()))?;
        let mut layout = Layout::default();
        let mut address = base + 2;
        for _ in 0..sunspec::MODELS_MAX {
            let header = self.read(address, 2).await?;
            let (id, length) = (header[0], header[1]);
            if id == sunspec::END {
                self.layout = Some(layout.clone());
                return Ok(layout);
            }
            let model = ModelHeader { id, length, address: address + 2 };
            if id == 1 {
                let registers = self.model(model).await?;
                layout.common = sunspec::common(&registers).map_err(|error| Error::Unreadable(error.to_string()))?;
            } else if sunspec::is_inverter(id) && layout.inverter.is_none() {
                layout.inverter = Some(model);
            } else if sunspec::is_meter(id) && layout.meter.is_none() {
                layout.meter = Some(model);
            } else if sunspec::is_storage(id) && layout.storage.is_none() {
                layout.storage = Some(model);
            }
            address = address
                .checked_add(2 + length)
                .ok_or_else(|| Error::Unreadable("the SunSpec map runs past register 65535".into()))?;
        }
        Err(Error::Unreadable(format!("more than {} models without an end model", sunspec::MODELS_MAX)))
    }
}

impl energy::meter::Meter for Device {
    fn source(&self) -> MeterSource {
        MeterSource::SunSpecModbus
    }

    async fn sample(&mut self, now_ms: u64) -> Result<Sample, Error> {
        let layout = match &self.layout {
            Some(layout) => layout.clone(),
            None => self.discover().await?,
        };
        let unreadable = |error: sunspec::Error| Error::Unreadable(error.to_string());
        let generation_wh = match layout.inverter {
            Some(header) => sunspec::inverter(header.id, &self.model(header).await?).map_err(unreadable)?.lifetime_wh,
            None => 0,
        };
        let Some(meter_header) = layout.meter else {
            // An inverter alone: everything it makes is counted as exported.
            let mut sample = Sample { at_ms: now_ms, generation_wh, export_wh: generation_wh, ..Sample::default() };
            sample.consumption_wh = self.derived.consumption(&sample);
            return Ok(sample);
        };
        let meter = sunspec::meter(meter_header.id, &self.model(meter_header).await?).map_err(unreadable)?;
        let mut sample = Sample {
            at_ms: now_ms,
            import_wh: meter.imported_wh,
            export_wh: meter.exported_wh,
            generation_wh,
            consumption_wh: 0,
            grid_present: meter.voltage_v.map(|volts| volts >= energy::meter::GRID_VOLTS_MIN),
        };
        sample.consumption_wh = self.derived.consumption(&sample);
        Ok(sample)
    }
}
