//! An MQTT meter (rumqttc): a task keeps a session with the broker, subscribes to the mapped topics (again after
//! every reconnect) and hands each message to the energy crate's decoder; a sample is the latest registers. The
//! same session switches the home's flexible-load relay for the home controller.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use energy::meter::{Error, Sample};
use energy::mqtt::{Mapping, Registers};
use protocol::message::MeterSource;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tracing::{debug, warn};

/// Where the broker is and what to read.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub mappings: Vec<Mapping>,
}

#[derive(Debug, Default)]
struct Shared {
    registers: Option<Registers>,
    connected: bool,
    messages: u64,
    rejected: u64,
    last_error: Option<String>,
}

/// An MQTT meter. Dropping it stops its task.
pub struct Meter {
    shared: Arc<Mutex<Shared>>,
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Most messages queued between the broker connection and the decoder.
const QUEUE_LEN_MAX: usize = 64;
/// Wait before reconnecting after the broker went away.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

impl Meter {
    /// Connects (and keeps reconnecting) in a task on the current runtime.
    #[must_use]
    pub fn spawn(settings: Settings) -> Meter {
        let registers = Registers::new(settings.mappings.clone());
        let topics = registers.topics();
        let shared = Arc::new(Mutex::new(Shared { registers: Some(registers), ..Shared::default() }));
        let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(energy::mqtt::PAYLOAD_BYTES_MAX + 1024, 4 * 1024);
        if let Some((user, password)) = &settings.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        let (client, mut events) = AsyncClient::new(options, QUEUE_LEN_MAX);
        let task_shared = shared.clone();
        let task_client = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        debug!(topics = ?topics, "MQTT meter connected; subscribing");
                        lock(&task_shared).connected = true;
                        for topic in &topics {
                            if let Err(error) = task_client.try_subscribe(topic.clone(), QoS::AtMostOnce) {
                                warn!(%error, topic, "MQTT meter: subscribing");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let mut shared = lock(&task_shared);
                        shared.messages += 1;
                        let result = shared.registers.as_mut().map(|r| r.message(&publish.topic, &publish.payload));
                        if let Some(Err(error)) = result {
                            shared.rejected += 1;
                            debug!(%error, "MQTT meter: message refused");
                            shared.last_error = Some(error.to_string());
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        {
                            let mut shared = lock(&task_shared);
                            if shared.connected {
                                warn!(%error, "MQTT meter: connection lost; reconnecting");
                            }
                            shared.connected = false;
                            shared.last_error = Some(error.to_string());
                        }
                        tokio::time::sleep(RECONNECT_DELAY).await;
                    }
                }
            }
        });
        Meter { shared, client, task }
    }

    /// Switches a relay on the same broker: `ON` or `OFF` to its command topic (Tasmota and Shelly plugs take
    /// these), at least once. Fails at once when the broker is not connected or the queue is full.
    pub fn switch(&self, topic: &str, on: bool) -> Result<(), String> {
        if !lock(&self.shared).connected {
            return Err("the MQTT broker is not connected".into());
        }
        let payload = if on { "ON" } else { "OFF" };
        self.client.try_publish(topic, QoS::AtLeastOnce, false, payload).map_err(|error| error.to_string())
    }

    /// Messages received and refused so far.
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        let shared = lock(&self.shared);
        (shared.messages, shared.rejected)
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl energy::meter::Meter for Meter {
    fn source(&self) -> MeterSource {
        MeterSource::Mqtt
    }

    async fn sample(&mut self, now_ms: u64) -> Result<Sample, Error> {
        let mut shared = lock(&self.shared);
        if !shared.connected {
            // Registers kept from before would read as "no energy flowed": no sample at all is the truth.
            let reason = shared.last_error.clone().unwrap_or_else(|| "not connected yet".into());
            return Err(Error::Unreachable(format!("MQTT broker: {reason}")));
        }
        let Some(registers) = shared.registers.as_mut() else { return Err(Error::NotReady("no registers".into())) };
        registers.sample(now_ms).map_err(|error| Error::NotReady(error.to_string()))
    }
}
