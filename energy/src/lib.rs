//! kos energy: where energy flows become signed readings and where agents' budgets are kept. Pure and
//! deterministic (no sockets, no clock): the node's adapters read real meters and hand their registers here.
//!
//! - [`home`]: a simulated home (PV by [`solar`], household load by the BDEW [`profile`], a battery);
//! - [`meter`]: the meter trait, and lifetime registers turned into per-interval readings;
//! - [`sunspec`], [`mqtt`]: register maps of SunSpec devices over Modbus TCP and of MQTT meters (Tasmota, Shelly);
//! - [`reading`]: whether a reading is physically possible for the declared capacity;
//! - [`fuel`]: agents' fuel budgets per resource class, which also set the network's per-peer limits;
//! - [`dispatch`]: the home controller that plans battery and flexible load from forecasts and prices;
//! - [`forecast`]: a real home's PV and load forecast from its own measured history;
//! - [`island`]: fair allocation of a microgrid's supply when the grid is lost;
//! - [`maintenance`]: rules over an asset's intervals that raise alerts (wear, depletion, misuse, silence).

pub mod calendar;
pub mod dispatch;
pub mod forecast;
pub mod fuel;
pub mod home;
pub mod island;
pub mod maintenance;
pub mod meter;
pub mod mqtt;
pub mod profile;
pub mod reading;
pub mod solar;
pub mod sunspec;
