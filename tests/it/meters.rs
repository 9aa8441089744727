//! Meters against real servers: the SunSpec adapter reads a Modbus TCP server (pymodbus, from Debian's packages)
//! serving a SunSpec map; the MQTT adapter reads Shelly and Tasmota payloads through a real mosquitto broker; and
//! a `kos run` node with a simulated home signs readings that are anchored on its ledger.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use energy::meter::{Error, Meter as _, Sample};
use energy::mqtt::Preset;
use kos::meter::{mqtt, sunspec};
use kos_tests::cli::{keys, kos, wait_until};
use kos_tests::http;
use kos_tests::process::{Process, kos_binary};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Debian's Python, which has python3-pymodbus (a `python3` on PATH may be another installation).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

fn sunspec_server(port: u16) -> Process {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sunspec_server.py");
    let mut command = Command::new(python());
    command.arg(script).arg(port.to_string());
    let server = Process::start(command).expect("starting the pymodbus server (scripts/deps installs it)");
    assert!(
        wait_until(Duration::from_secs(20), || listening(port)),
        "the Modbus server did not start: {:#?}",
        server.lines()
    );
    server
}

fn mosquitto(port: u16) -> Process {
    let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("mosquitto");
    let mut command = Command::new(binary);
    command.args(["-p", &port.to_string()]);
    let broker = Process::start(command).expect("starting mosquitto (scripts/deps installs it)");
    assert!(wait_until(Duration::from_secs(20), || listening(port)), "mosquitto did not start: {:#?}", broker.lines());
    broker
}

/// Samples until the meter answers, for at most `timeout`.
async fn sample_until(meter: &mut impl energy::meter::Meter, timeout: Duration) -> Result<Sample, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let result = meter.sample(kos_tests::now_ms()).await;
        if result.is_ok() || tokio::time::Instant::now() >= deadline {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn write_register(address: SocketAddr, register: u16, value: u16) {
    use tokio_modbus::client::Writer as _;
    let mut context = tokio_modbus::client::tcp::connect_slave(address, tokio_modbus::slave::Slave(1)).await.unwrap();
    context.write_single_register(register, value).await.unwrap().unwrap();
}

async fn write_acc32(address: SocketAddr, register: u16, value: u32) {
    use tokio_modbus::client::Writer as _;
    let mut context = tokio_modbus::client::tcp::connect_slave(address, tokio_modbus::slave::Slave(1)).await.unwrap();
    context.write_multiple_registers(register, &[(value >> 16) as u16, value as u16]).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sunspec_registers_are_read_from_a_modbus_tcp_server() {
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = Some(sunspec_server(port));
    let settings = sunspec::Settings { address, unit: 1, timeout: Duration::from_secs(2), battery: None };
    let mut device = sunspec::Device::new(settings);

    let first = sample_until(&mut device, Duration::from_secs(20)).await.unwrap();
    let layout = device.layout().unwrap().clone();
    assert_eq!(layout.common.manufacturer, "kos-test");
    assert_eq!(layout.common.model, "SimInverter");
    assert_eq!(layout.common.serial, "SN-0042");
    assert_eq!(layout.inverter.map(|model| (model.id, model.address)), Some((103, 40_072)));
    assert_eq!(layout.meter.map(|model| (model.id, model.address)), Some((203, 40_124)));
    assert_eq!(layout.storage.map(|model| (model.id, model.address)), Some((124, 40_231)));
    // Imported and exported are stored ×10 with a scale factor of −1.
    assert_eq!((first.import_wh, first.export_wh, first.generation_wh), (250_000, 70_000, 1_234_567));
    assert_eq!(first.consumption_wh, 1_234_567 + 250_000 - 70_000);
    // The meter's PhV (230.1 V) says the grid is there; when it reads 0 V the grid is gone.
    assert_eq!(first.grid_present, Some(true));

    // The device's counters move: the inverter made 1 kWh, the house took 500 Wh from the grid.
    write_acc32(address, 40_072 + 22, 1_235_567).await;
    write_acc32(address, 40_124 + 44, 2_505_000).await;
    let second = device.sample(kos_tests::now_ms()).await.unwrap();
    assert_eq!((second.import_wh, second.export_wh, second.generation_wh), (250_500, 70_000, 1_235_567));
    write_register(address, 40_124 + 5, 0).await;
    assert_eq!(device.sample(kos_tests::now_ms()).await.unwrap().grid_present, Some(false));
    assert_eq!(second.consumption_wh - first.consumption_wh, 1_500);

    // The device goes away: the sample is an error, not stale numbers; it comes back and is read again.
    server.take();
    assert!(wait_until(Duration::from_secs(10), || !listening(port)));
    assert!(matches!(device.sample(kos_tests::now_ms()).await, Err(Error::Unreachable(_))));
    let _server = sunspec_server(port);
    let again = sample_until(&mut device, Duration::from_secs(20)).await.unwrap();
    assert_eq!(again.import_wh, 250_000, "a restarted device serves its initial registers");
}

async fn read_registers(address: SocketAddr, register: u16, count: u16) -> Vec<u16> {
    use tokio_modbus::client::Reader as _;
    let mut context = tokio_modbus::client::tcp::connect_slave(address, tokio_modbus::slave::Slave(1)).await.unwrap();
    context.read_holding_registers(register, count).await.unwrap().unwrap()
}

/// Model 124's points in the fixture's map.
const STORAGE: u16 = 40_231;

/// The battery's control points as the device holds them: StorCtl_Mod, (OutWRte, InWRte, WinTms, RvrtTms),
/// ChaGriSet.
async fn storage_controls(address: SocketAddr) -> (u16, [i16; 4], u16) {
    let registers = read_registers(address, STORAGE, 24).await;
    let limits = [registers[10] as i16, registers[11] as i16, registers[12] as i16, registers[13] as i16];
    (registers[3], limits, registers[15])
}

/// The storage model's battery is read (state of charge, power) and driven: each command of the home controller
/// becomes the limits it should in the device's registers, as read back from the Modbus server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sunspec_battery_is_read_and_commanded_through_its_storage_model() {
    use energy::home::BatteryCommand;
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _server = sunspec_server(port);
    let battery = sunspec::Battery { capacity_wh: 10_000, efficiency_ppm: 900_000 };
    let settings = sunspec::Settings { address, unit: 1, timeout: Duration::from_secs(2), battery: Some(battery) };
    let mut device = sunspec::Device::new(settings);
    sample_until(&mut device, Duration::from_secs(20)).await.unwrap();
    let storage = device.storage().await.unwrap().expect("the fixture has a storage model");
    assert_eq!((storage.max_charge_w, storage.charge_ppm, storage.reserve_ppm), (5_000, 500_000, 100_000));
    // What an earlier controller left: both limits at 100 %.
    assert_eq!(storage_controls(address).await, (3, [1_000, 1_000, 0, 0], 0));

    device.command(BatteryCommand::Charge(2_000), &storage, 2_700).await.unwrap();
    assert_eq!(storage_controls(address).await, (3, [-400, 400, 0, 2_700], 1), "charge at 40.0 % of 5 kW");
    device.command(BatteryCommand::Discharge(1_000), &storage, 2_700).await.unwrap();
    assert_eq!(storage_controls(address).await, (3, [200, -200, 0, 2_700], 1), "discharge at 20.0 %");
    device.command(BatteryCommand::Idle, &storage, 60).await.unwrap();
    assert_eq!(storage_controls(address).await, (3, [0, 0, 0, 60], 1));
    device.command(BatteryCommand::SelfConsumption, &storage, 60).await.unwrap();
    assert_eq!(storage_controls(address).await.0, 0, "self-consumption: no limits, the battery follows the home");

    // The battery charges: the next read says so.
    write_register(address, STORAGE + 6, 8_125).await;
    assert_eq!(device.storage().await.unwrap().map(|storage| storage.charge_ppm), Some(812_500));
}

async fn publish(client: &rumqttc::AsyncClient, topic: &str, payload: &str) {
    client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shelly_and_tasmota_meters_are_read_through_a_mosquitto_broker() {
    let port = free_port();
    let mut broker = Some(mosquitto(port));
    let settings = |client_id: &str, preset: Preset, device: &str| mqtt::Settings {
        host: "127.0.0.1".into(),
        port,
        client_id: client_id.into(),
        credentials: None,
        mappings: preset.mappings(device),
    };
    let mut shelly = mqtt::Meter::spawn(settings("kos-test-shelly", Preset::ShellyEm, "shellyem-1"));
    let mut tasmota = mqtt::Meter::spawn(settings("kos-test-tasmota", Preset::TasmotaSml, "meter-2"));

    // A device publishing, as Shellys and Tasmotas do, every few seconds.
    let (publisher, mut events) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("kos-test-device", "127.0.0.1", port), 16);
    let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let mut shelly_sample = None;
    let mut tasmota_sample = None;
    for _ in 0..100 {
        publish(&publisher, "shellies/shellyem-1/emeter/0/total", "81234.5").await;
        publish(&publisher, "shellies/shellyem-1/emeter/0/total_returned", "100").await;
        publish(
            &publisher,
            "tele/meter-2/SENSOR",
            r#"{"Time":"2026-11-27T10:00:00","SML":{"Total_in":12345.678,"Total_out":2345.6,"Power_curr":512}}"#,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        shelly_sample = shelly.sample(kos_tests::now_ms()).await.ok();
        tasmota_sample = tasmota.sample(kos_tests::now_ms()).await.ok();
        if shelly_sample.is_some() && tasmota_sample.is_some() {
            break;
        }
    }
    let shelly_sample = shelly_sample.expect("the Shelly meter never got its registers");
    assert_eq!((shelly_sample.import_wh, shelly_sample.export_wh), (81_235, 100));
    let tasmota_sample = tasmota_sample.expect("the Tasmota meter never got its registers");
    assert_eq!((tasmota_sample.import_wh, tasmota_sample.export_wh), (12_345_678, 2_345_600));

    // A malformed payload is refused and counted; the registers keep their last good values.
    let (_, refused_before) = tasmota.counts();
    publish(&publisher, "tele/meter-2/SENSOR", "{not json").await;
    assert!(wait_until_async(Duration::from_secs(10), || tasmota.counts().1 > refused_before).await);
    assert_eq!(tasmota.sample(kos_tests::now_ms()).await.unwrap().import_wh, 12_345_678);

    // The broker goes away: samples are errors (no stale numbers); when it is back the meter resubscribes.
    broker.take();
    pump.abort();
    assert!(wait_until_async(Duration::from_secs(10), || !listening(port)).await);
    let mut down = false;
    for _ in 0..50 {
        if matches!(shelly.sample(kos_tests::now_ms()).await, Err(Error::Unreachable(_))) {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(down, "the meter kept reporting while its broker was gone");
    let _broker = mosquitto(port);
    let (publisher, mut events) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("kos-test-device-2", "127.0.0.1", port), 16);
    let _pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let mut back = None;
    for _ in 0..100 {
        publish(&publisher, "shellies/shellyem-1/emeter/0/total", "81300").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(sample) = shelly.sample(kos_tests::now_ms()).await
            && sample.import_wh == 81_300
        {
            back = Some(sample);
            break;
        }
    }
    assert!(back.is_some(), "the meter did not come back with its broker");
}

async fn wait_until_async(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn json(api: &str, path: &str) -> Option<serde_json::Value> {
    let response = http::get(api, path).ok()?;
    (response.status == 200).then(|| serde_json::from_slice(&response.body).ok()).flatten()
}

#[test]
fn a_simulated_home_signs_readings_that_are_anchored_on_the_ledger() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("home");
    let (key, _) = keys(&dir);
    let genesis = dir.join("genesis.toml");
    kos(&["ledger", "genesis", "--network", "kos-devnet", "--out", genesis.to_str().unwrap(), "--validator", &key]);
    // A midsummer day near Potsdam from 10:00 UTC, 180 times faster than the wall clock: each 5-second interval
    // is 15 simulated minutes of a sunny roof.
    let start = energy::calendar::days(2025, 6, 21) * 86_400 + 10 * 3600;
    let now_s = kos_tests::now_ms() / 1000;
    let config = format!(
        "[meter]\nkind = \"simulated\"\ninterval_s = 5\npoll_ms = 500\n\n[meter.simulated]\npv_kwp = 8.0\n\
         speed = 180\nsimulated_origin_s = {start}\nwall_origin_s = {now_s}\n\
         battery = {{ capacity_wh = 500, power_w = 3000, efficiency_ppm = 900000 }}\n\n\
         [meter.dispatch]\nflexible = {{ energy_wh = 10, power_w = 2000, deadline_hour = 13 }}\n"
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let args = ["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "false", "--api", "127.0.0.1:0"];
    let node = Process::kos(&kos_binary(), &dir, &args).unwrap();
    let api = node.wait_for_field(Duration::from_secs(30), "API listening", "address").expect("no API address");

    let mut meter = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(60), || {
            meter = json(&api, "/meter").unwrap_or_default();
            meter["readings_published"].as_u64().unwrap_or(0) >= 3
        }),
        "no readings: {meter:#}\n{:#?}",
        node.lines()
    );
    assert_eq!(meter["source"], "simulated");
    // The home controller planned the battery (tariff only: no pool configured).
    assert!(meter["battery"]["command"].is_string(), "{meter:#}");
    assert_eq!(meter["battery"]["buy_per_kwh"], 300);
    assert_eq!(meter["readings_refused"], 0, "{meter:#}");
    let reading = &meter["last_reading"];
    assert_eq!(reading["interval_s"], 5);
    // 8 kWp at a summer noon make several kW: 5 wall seconds of it is a few Wh; the house uses some.
    assert!(reading["generation_wh"].as_u64().unwrap() >= 3, "{reading:#}");
    let id = reading["id"].as_str().unwrap().to_owned();
    let mut anchored = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), || {
            anchored = json(&api, &format!("/entries/{id}")).unwrap_or_default();
            anchored["height"].as_u64().is_some()
        }),
        "the reading {id} was not committed: {:#?}",
        node.lines()
    );
    // The home registers its meter as an asset (8 kWp, a household connection, a 3 kW battery): the ledger holds
    // its readings to those limits and counts them in the asset's history.
    let data_dir = dir.to_str().unwrap();
    let registered = std::process::Command::new(kos_binary())
        .args([
            "--data-dir",
            data_dir,
            "asset",
            "register",
            "--kind",
            "meter",
            "--purpose",
            "home meter",
            "--meter",
            "main",
            "--generation-w",
            "8000",
            "--import-w",
            "43470",
            "--export-w",
            "43470",
            "--consumption-w",
            "63470",
            "--storage-w",
            "3000",
            "--storage-wh",
            "500",
            "--cell",
            "u33db",
            "--maintenance-days",
            "365",
        ])
        .env("KOS_API", &api)
        .output()
        .unwrap();
    assert!(registered.status.success(), "{registered:?}");
    let asset = String::from_utf8_lossy(&registered.stdout).split_whitespace().nth(1).unwrap().to_owned();
    let mut shown = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(60), || {
            shown = json(&api, &format!("/assets/{asset}")).unwrap_or_default();
            shown["readings"].as_u64() >= Some(2)
        }),
        "the asset's readings are not counted: {shown:#}\n{:#?}",
        node.lines()
    );
    assert_eq!(shown["kind"], "meter");
    assert_eq!(shown["limits"]["generation_w_max"], 8000);
    assert_eq!(shown["meters"][0], "main");
    assert_eq!(shown["maintenance_interval_s"], 365 * 86_400);
    assert!(!shown["recent_readings"].as_array().unwrap().is_empty(), "{shown:#}");
    let status = json(&api, "/meter").unwrap();
    assert_eq!(status["readings_refused"], 0, "{status:#}");
    // The flexible load (10 Wh at 2 kW, due by 13:00 local, two simulated hours after the start) ran in the sunny
    // late morning and is done (its energy counts only what it was switched on for).
    let mut flexible = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(90), || {
            flexible = json(&api, "/meter").unwrap_or_default()["flexible"].clone();
            flexible["done_wh"].as_u64() >= Some(10) && flexible["running_w"] == 0
        }),
        "the flexible load did not run to completion: {flexible:#}"
    );
    assert_eq!(flexible["energy_wh"], 10);
    // Governance caps the home's export at 500 W (the node is the network's only validator: its vote passes
    // it): the home controller plans within the cap from the next interval on.
    let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
    let cap = serde_json::json!({"title": "Cap the home's feed-in", "voting_period_blocks": 20,
        "action": {"kind": "override", "measure": "device-cap", "account": key, "meter": "main",
            "import_w_max": 43470, "export_w_max": 500, "duration_blocks": 1000}});
    let proposed = post(&api, token.trim(), "/proposals", &cap);
    assert_eq!(proposed.status, 202, "{}", proposed.text());
    let proposal =
        serde_json::from_slice::<serde_json::Value>(&proposed.body).unwrap()["id"].as_str().unwrap().to_owned();
    assert!(wait_until(Duration::from_secs(30), || json(&api, "/governance").is_some_and(|g| g["proposals"]
        .as_array()
        .is_some_and(|list| list.iter().any(|p| p["id"] == proposal.as_str())))));
    let voted =
        post(&api, token.trim(), &format!("/proposals/{proposal}/votes"), &serde_json::json!({"choice": "yes"}));
    assert_eq!(voted.status, 202, "{}", voted.text());
    assert!(
        wait_until(Duration::from_secs(60), || json(&api, "/meter")
            .is_some_and(|meter| meter["battery"]["grid_cap_w"] == serde_json::json!([43470, 500]))),
        "the controller did not take the cap: {:?} {:?}",
        json(&api, "/meter"),
        json(&api, "/governance")
    );
    let governance = json(&api, "/governance").unwrap();
    assert_eq!(governance["overrides"][0]["measure"], "device-cap", "{governance}");
    assert_eq!(json(&api, &format!("/assets/{asset}")).unwrap()["interventions"][0]["measure"], "device-cap");
}

fn post(api: &str, token: &str, path: &str, body: &serde_json::Value) -> http::Response {
    let authorization = format!("Bearer {token}");
    http::request(
        api,
        "POST",
        path,
        &[("Authorization", &authorization), ("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .unwrap()
}

#[test]
fn a_microgrid_controller_shares_local_supply_when_the_grid_is_lost() {
    let root = tempfile::tempdir().unwrap();
    let (home_dir, controller_dir) = (root.path().join("home"), root.path().join("controller"));
    let (home_key, _) = keys(&home_dir);
    let (_, controller_peer) = keys(&controller_dir);
    // A member that never reports: its essential need still counts.
    let silent = "11".repeat(32);
    std::fs::write(
        controller_dir.join("config.toml"),
        format!(
            "[island]\nenabled = true\ninterval_s = 5\nreturn_intervals = 2\n\
             members = [{{ account = \"{home_key}\", essential_wh = 1 }}, {{ account = \"{silent}\", essential_wh = 2 }}]\n"
        ),
    )
    .unwrap();
    let start = energy::calendar::days(2025, 6, 21) * 86_400 + 10 * 3600;
    let now_s = kos_tests::now_ms() / 1000;
    std::fs::write(
        home_dir.join("config.toml"),
        format!(
            "[meter]\nkind = \"simulated\"\ninterval_s = 5\npoll_ms = 500\n\n[meter.simulated]\npv_kwp = 8.0\n\
             speed = 180\nsimulated_origin_s = {start}\nwall_origin_s = {now_s}\n"
        ),
    )
    .unwrap();
    let args = ["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "false", "--api", "127.0.0.1:0"];
    let controller = Process::kos(&kos_binary(), &controller_dir, &args).unwrap();
    let api = controller.wait_for_field(Duration::from_secs(30), "API listening", "address").expect("no API");
    let p2p = controller.wait_for_field(Duration::from_secs(30), "listening", "address").unwrap();
    let token = std::fs::read_to_string(controller_dir.join("api.token")).unwrap().trim().to_owned();
    let bootnode = format!("{p2p}/p2p/{controller_peer}");
    let mut home_args = args.to_vec();
    home_args.extend(["--bootnode", &bootnode]);
    let home = Process::kos(&kos_binary(), &home_dir, &home_args).unwrap();

    assert_eq!(json(&api, "/island").unwrap()["mode"], "grid");
    let answer = post(&api, &token, "/island", &serde_json::json!({"grid_present": false}));
    assert_eq!(answer.status, 202, "{}", answer.text());
    let mut island = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(60), || {
            island = json(&api, "/island").unwrap_or_default();
            island["mode"] == "island" && island["reporting"] == 1 && island["supply_wh"].as_u64().unwrap_or(0) > 3
        }),
        "no island allocation from the home's readings: {island:#}\ncontroller: {:#?}\nhome: {:#?}",
        controller.lines(),
        home.lines()
    );
    // Midsummer noon: more supply than need. Everyone gets what they need; nothing is hoarded; energy is conserved.
    let allocations = island["allocations"].as_array().unwrap();
    let given: u64 =
        allocations.iter().map(|a| a["essential_wh"].as_u64().unwrap() + a["other_wh"].as_u64().unwrap()).sum();
    assert_eq!(given + island["unallocated_wh"].as_u64().unwrap(), island["supply_wh"].as_u64().unwrap(), "{island:#}");
    for allocation in allocations {
        assert_eq!(allocation["essential_wh"], allocation["need_essential_wh"], "{island:#}");
        assert_eq!(allocation["other_wh"], allocation["need_other_wh"], "{island:#}");
    }
    let silent_member = allocations.iter().find(|a| a["account"] == silent.as_str()).unwrap();
    assert_eq!(silent_member["essential_wh"], 2);

    // The grid comes back: after two intervals with it, grid mode returns.
    let answer = post(&api, &token, "/island", &serde_json::json!({"grid_present": true}));
    assert_eq!(answer.status, 202);
    assert!(
        wait_until(Duration::from_secs(30), || json(&api, "/island").is_some_and(|island| island["mode"] == "grid")),
        "grid mode did not return: {:#}",
        json(&api, "/island").unwrap_or_default()
    );
    assert_eq!(post(&api, "wrong", "/island", &serde_json::json!({"grid_present": false})).status, 401);
}

/// A microgrid controller whose own meter (a Shelly EM through mosquitto) reports the voltage at the connection
/// point: when the voltage drops the controller islands by itself, with no signal posted to its API, and when the
/// grid has been back for its return intervals it returns to grid mode.
#[test]
fn the_grid_lost_at_the_meter_islands_the_microgrid() {
    let port = free_port();
    let _broker = mosquitto(port);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("controller");
    let (key, _) = keys(&dir);
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[meter]\nkind = \"mqtt\"\ninterval_s = 5\npoll_ms = 300\n\n[meter.mqtt]\nbroker = \"127.0.0.1:{port}\"\n\
             preset = \"shelly-em\"\ndevice = \"grid-em\"\n\n[island]\nenabled = true\ninterval_s = 5\nreturn_intervals = 1\n\
             members = [{{ account = \"{key}\", essential_wh = 1 }}]\n"
        ),
    )
    .unwrap();
    let args = ["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "false", "--api", "127.0.0.1:0"];
    let node = Process::kos(&kos_binary(), &dir, &args).unwrap();
    let api = node.wait_for_field(Duration::from_secs(30), "API listening", "address").expect("no API address");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (publisher, mut events) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("kos-test-grid", "127.0.0.1", port), 16);
    let pump = runtime.spawn(async move { while events.poll().await.is_ok() {} });
    let mut counter = 1_000u64;
    let mut publish_state = |volts: &str| {
        counter += 1;
        let total = counter.to_string();
        runtime.block_on(async {
            publish(&publisher, "shellies/grid-em/emeter/0/total", &total).await;
            publish(&publisher, "shellies/grid-em/emeter/0/total_returned", "0").await;
            publish(&publisher, "shellies/grid-em/emeter/0/voltage", volts).await;
        });
    };
    let mode = |api: &str| json(api, "/island").map(|island| island["mode"].as_str().unwrap_or("").to_owned());
    let sees = |api: &str, present: bool| {
        json(api, "/meter").is_some_and(|meter| meter["sample"]["grid_present"] == serde_json::json!(present))
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            publish_state("230.1");
            std::thread::sleep(Duration::from_millis(200));
            sees(&api, true)
        }),
        "the meter never saw the grid: {:#?}",
        node.lines()
    );
    assert_eq!(mode(&api).as_deref(), Some("grid"));
    // The grid goes: the voltage at the connection point drops to nothing.
    assert!(
        wait_until(Duration::from_secs(30), || {
            publish_state("0");
            std::thread::sleep(Duration::from_millis(200));
            mode(&api).as_deref() == Some("island")
        }),
        "the controller did not island when the meter lost the grid: {:?}\n{:#?}",
        json(&api, "/island"),
        node.lines()
    );
    assert!(sees(&api, false));
    // It comes back: after its return interval the microgrid is on the grid again.
    assert!(
        wait_until(Duration::from_secs(40), || {
            publish_state("229.8");
            std::thread::sleep(Duration::from_millis(200));
            mode(&api).as_deref() == Some("grid")
        }),
        "the controller did not return to the grid: {:?}",
        json(&api, "/island")
    );
    pump.abort();
}

/// A real home — a SunSpec inverter, meter and battery on Modbus TCP, no simulator — under `kos run`: the node
/// learns the home's PV and load from the intervals it measures and plans the battery on that forecast, writing
/// each decision into the device's storage controls (with a revert timeout) and telling it on `/meter`. Its
/// meter is registered as an asset; when the device goes silent the maintenance rules put an alert on the
/// ledger under the asset, and a neighbour's report about the asset becomes a proposal.
#[test]
fn a_real_home_controller_learns_its_forecast_and_drives_a_sunspec_battery() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};
    const DEFICIT: u8 = 0;
    const SURPLUS: u8 = 1;
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = sunspec_server(port);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // The home's flows, written into the device's counters every 250 ms: 2 Wh/s from the grid (deficit), or
    // 8 Wh/s of PV with 6 Wh/s exported (surplus).
    let phase = Arc::new(AtomicU8::new(DEFICIT));
    let flows = phase.clone();
    let counters = runtime.spawn(async move {
        let (mut generation, mut imported, mut exported) = (1_234_567u32, 2_500_000u32, 700_000u32);
        loop {
            if flows.load(Ordering::Relaxed) == DEFICIT {
                imported += 5; // ×10 in the register: 0.5 Wh
            } else {
                generation += 2;
                exported += 15;
            }
            write_acc32(address, 40_072 + 22, generation).await;
            write_acc32(address, 40_124 + 36, exported).await;
            write_acc32(address, 40_124 + 44, imported).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("home");
    let (key, _) = keys(&dir);
    let genesis = dir.join("genesis.toml");
    kos(&["ledger", "genesis", "--network", "kos-devnet", "--out", genesis.to_str().unwrap(), "--validator", &key]);
    // A small battery, so that a 2-second interval moves it by whole planning steps; the home trades its
    // forecast in a 2-second energy pool.
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[meter]\nkind = \"sunspec\"\ninterval_s = 2\npoll_ms = 250\n\n[meter.sunspec]\naddress = \"{address}\"\n\
             battery = {{ capacity_wh = 100 }}\n\n[meter.dispatch]\nbuy_per_kwh = 300\nsell_per_kwh = 80\n\n\
             [meter.trade]\npool = \"energy/credit/u33db/2\"\n"
        ),
    )
    .unwrap();
    let args = [
        "run",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--mdns",
        "false",
        "--api",
        "127.0.0.1:0",
        "--log",
        "info,kos::meter=debug,kos::market=debug",
    ];
    let node = Process::kos(&kos_binary(), &dir, &args).unwrap();
    let api = node.wait_for_field(Duration::from_secs(30), "API listening", "address").expect("no API address");
    let controls = || runtime.block_on(storage_controls(address));
    let battery = |api: &str| json(api, "/meter").map(|meter| meter["battery"].clone()).unwrap_or_default();

    // Half full, the home drawing from the grid: the battery covers the load by itself (no limits), instead of
    // the mode an earlier controller left.
    // (The register and the command the node shows are read one after the other, and the controller may plan
    // anew in between on a busy machine: both are waited for together.)
    assert_eq!(controls().0, 3);
    assert!(
        wait_until(Duration::from_secs(30), || controls().0 == 0 && battery(&api)["command"] == "self-consumption"),
        "the controller never released the battery to self-consumption: {:?} {:?}\n{:#?}",
        controls(),
        json(&api, "/meter"),
        node.lines()
    );
    assert_eq!(battery(&api)["stored_wh"], 50, "ChaState 50 % of 100 Wh");
    // The first interval was counted from when the node started, partway through: it is published but not
    // learnt. The first whole interval teaches the load (4 Wh in 2 s).
    assert!(
        wait_until(Duration::from_secs(10), || json(&api, "/meter")
            .is_some_and(|meter| meter["forecast"]["history_intervals"].as_u64() >= Some(1))),
        "no whole interval learnt: {:?}",
        json(&api, "/meter")
    );
    let meter = json(&api, "/meter").unwrap();
    assert_eq!(meter["source"], "sunspec");
    assert!(meter["forecast"]["load_wh"].as_u64().unwrap() >= 3, "the load is learnt: {meter}");
    assert_eq!(meter["forecast"]["pv_wh"], 0);
    // The forecast deficit is bid for in the pool.
    assert!(
        wait_until(Duration::from_secs(20), || json(&api, "/meter").is_some_and(|meter| meter["bids"] != 0)),
        "no bid for the forecast deficit: {:?}\n{:#?}",
        json(&api, "/meter"),
        node.lines().iter().filter(|line| line.contains("market") || line.contains("WARN")).collect::<Vec<_>>()
    );
    assert_eq!(json(&api, "/meter").unwrap()["asks"], 0);
    // The home's offers are placed as any offer of the node is: their pool is served (announced in the DHT) so that
    // strangers trading in it find this node.
    let status = json(&api, "/status").unwrap();
    assert!(
        status["served_pools"].as_array().unwrap().iter().any(|pool| pool == "energy/credit/u33db/2"),
        "the home's pool is not served: {status}"
    );

    // Empty, still in deficit: nothing to discharge and nothing worth charging from the grid at a flat tariff:
    // held idle — both limits at 0, reverting after three intervals should the node stop.
    runtime.block_on(write_register(address, STORAGE + 6, 0));
    assert!(
        wait_until(Duration::from_secs(30), || controls() == (3, [0, 0, 0, 6], 0)),
        "the empty battery was not held idle: {:?} {:?}",
        controls(),
        json(&api, "/meter")
    );
    assert_eq!(battery(&api)["command"], "idle");
    assert_eq!(battery(&api)["stored_wh"], 0);

    // The sun comes out: the learnt forecast turns to surplus and the battery is let to soak it up.
    phase.store(SURPLUS, Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(30), || controls().0 == 0),
        "the battery was not released for the surplus: {:?} {:?}",
        controls(),
        json(&api, "/meter")
    );
    let meter = json(&api, "/meter").unwrap();
    assert!(meter["forecast"]["pv_wh"].as_u64().unwrap() >= 8, "PV is learnt: {meter}");
    assert!(
        wait_until(Duration::from_secs(20), || json(&api, "/meter").is_some_and(|meter| meter["asks"] != 0)),
        "no ask for the forecast surplus: {:?}",
        json(&api, "/meter")
    );
    // Every reading was signed and anchored on the ledger.
    let meter = json(&api, "/meter").unwrap();
    assert!(meter["readings_published"].as_u64().unwrap() >= 3, "{meter}");
    assert_eq!(meter["readings_refused"], 0, "{meter}");

    // The meter registered as an asset: the node's maintenance rules watch it.
    let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
    let limits = serde_json::json!({"generation_w_max": 30000, "import_w_max": 43470, "export_w_max": 43470,
        "consumption_w_max": 63470, "storage_w_max": 20000, "storage_wh": 100});
    let manifest = serde_json::json!({"kind": "meter", "purpose": "the home's grid meter and battery",
        "meters": ["main"], "limits": limits, "cell": "u33db"});
    let registered = post(&api, token.trim(), "/assets", &manifest);
    assert_eq!(registered.status, 202, "{}", registered.text());
    let asset =
        serde_json::from_slice::<serde_json::Value>(&registered.body).unwrap()["id"].as_str().unwrap().to_owned();
    assert!(
        wait_until(Duration::from_secs(30), || json(&api, "/meter")
            .is_some_and(|meter| meter["asset"] == asset.as_str())),
        "the maintenance rules did not pick up the asset: {:?}",
        json(&api, "/meter")
    );
    // The device goes silent: after four whole intervals without a sample, an alert, on the ledger, under the
    // asset.
    counters.abort();
    drop(server);
    let silent = |api: &str| {
        json(api, &format!("/assets/{asset}")).is_some_and(|answer| {
            answer["alerts"].as_array().is_some_and(|alerts| alerts.iter().any(|alert| alert["rule"] == "silent"))
        })
    };
    assert!(
        wait_until(Duration::from_secs(40), || silent(&api)),
        "no silence alert: {:?} {:?}",
        json(&api, "/meter"),
        json(&api, &format!("/assets/{asset}"))
    );
    let governance = json(&api, "/governance").unwrap();
    assert_eq!(governance["alerts"][0]["asset"], asset.as_str(), "{governance}");
    assert!(governance["alerts"][0]["measured"].as_u64().unwrap() >= 4, "{governance}");
    assert_eq!(json(&api, "/meter").unwrap()["alerts"], 1, "one alert, not one per poll");
    // A neighbour (here the node itself) reports on the asset, and the report becomes a proposal.
    let report = serde_json::json!({"asset": asset, "cell": "u33db", "severity": "fault",
        "text": "The inverter's display is dark and the meter cabinet smells burnt."});
    let reported = post(&api, token.trim(), "/reports", &report);
    assert_eq!(reported.status, 202, "{}", reported.text());
    let report_id =
        serde_json::from_slice::<serde_json::Value>(&reported.body).unwrap()["id"].as_str().unwrap().to_owned();
    assert!(wait_until(Duration::from_secs(20), || json(&api, "/governance").is_some_and(|g| g["reports"]
        .as_array()
        .is_some_and(|reports| reports.iter().any(|r| r["id"] == report_id.as_str())))));
    // The asset's history holds the report, and the repair logged afterwards.
    let done = serde_json::json!({"asset": asset, "cell": "u33db", "severity": "maintenance-done",
        "text": "Replaced the inverter's fan and the cabinet's fuse."});
    assert_eq!(post(&api, token.trim(), "/reports", &done).status, 202);
    assert!(
        wait_until(Duration::from_secs(20), || json(&api, &format!("/assets/{asset}")).is_some_and(|answer| {
            let severities: Vec<&str> =
                answer["reports"].as_array().into_iter().flatten().filter_map(|r| r["severity"].as_str()).collect();
            severities.contains(&"fault") && severities.contains(&"maintenance-done")
        })),
        "{:?}",
        json(&api, &format!("/assets/{asset}"))
    );
    let proposed = post(&api, token.trim(), &format!("/reports/{report_id}/propose"), &serde_json::json!({}));
    assert_eq!(proposed.status, 202, "{}", proposed.text());
    let proposal_id =
        serde_json::from_slice::<serde_json::Value>(&proposed.body).unwrap()["id"].as_str().unwrap().to_owned();
    assert!(
        wait_until(Duration::from_secs(20), || json(&api, "/governance").is_some_and(|g| g["proposals"]
            .as_array()
            .is_some_and(|list| list
                .iter()
                .any(|p| p["id"] == proposal_id.as_str() && p["action"]["kind"] == "text")))),
        "{:?}",
        json(&api, "/governance")
    );
    // A report about an asset nobody registered is refused.
    let unknown = serde_json::json!({"asset": "00".repeat(32), "cell": "u33db", "severity": "info", "text": "hello"});
    assert_eq!(post(&api, token.trim(), "/reports", &unknown).status, 400);
}

/// A real home's flexible load behind a relay: a node with a Shelly EM meter on mosquitto runs its daily
/// flexible load (here 4 Wh at 3.6 kW: two 2-second intervals) by switching the relay's command topic `ON`
/// when the plan places it and `OFF` once its energy is done.
#[test]
fn a_real_home_switches_its_flexible_load_through_an_mqtt_relay() {
    let port = free_port();
    let _broker = mosquitto(port);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // The relay: every command it is sent, in order.
    let commands = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut options = rumqttc::MqttOptions::new("kos-test-relay", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (relay, mut relay_events) = rumqttc::AsyncClient::new(options, 16);
    let heard = commands.clone();
    runtime.spawn(async move {
        while let Ok(event) = relay_events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish)) = event {
                heard.lock().unwrap().push(String::from_utf8_lossy(&publish.payload).into_owned());
            }
        }
    });
    runtime.block_on(relay.subscribe("cmnd/wallbox/POWER", rumqttc::QoS::AtLeastOnce)).unwrap();
    // The meter: the home draws from the grid, 1 Wh every 250 ms.
    let (meter, mut meter_events) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("kos-test-em", "127.0.0.1", port), 16);
    runtime.spawn(async move { while meter_events.poll().await.is_ok() {} });
    let counters = runtime.spawn(async move {
        for total in 1_000u64.. {
            publish(&meter, "shellies/home-em/emeter/0/total", &total.to_string()).await;
            publish(&meter, "shellies/home-em/emeter/0/total_returned", "0").await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("home");
    keys(&dir);
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[meter]\nkind = \"mqtt\"\ninterval_s = 2\npoll_ms = 250\n\n[meter.mqtt]\nbroker = \"127.0.0.1:{port}\"\n\
             preset = \"shelly-em\"\ndevice = \"home-em\"\n\n[meter.dispatch.flexible]\nenergy_wh = 4\npower_w = 3600\n\
             deadline_hour = 24\nswitch_topic = \"cmnd/wallbox/POWER\"\n"
        ),
    )
    .unwrap();
    let args = ["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "false", "--api", "127.0.0.1:0"];
    let node = Process::kos(&kos_binary(), &dir, &args).unwrap();
    let api = node.wait_for_field(Duration::from_secs(30), "API listening", "address").expect("no API address");
    let flexible = || json(&api, "/meter").map(|meter| meter["flexible"].clone()).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(40), || flexible()["done_wh"] == 4 && flexible()["running_w"] == 0),
        "the flexible load did not run its 4 Wh: {:?} {:?}\n{:#?}",
        flexible(),
        commands.lock().unwrap(),
        node.lines()
    );
    // The relay was switched on for two intervals (3.6 kW × 2 s = 2 Wh each), then off, and stays off.
    assert!(wait_until(Duration::from_secs(10), || commands.lock().unwrap().len() >= 3));
    let heard = commands.lock().unwrap().clone();
    let first_on = heard.iter().position(|command| command == "ON").expect("never switched on");
    assert_eq!(heard[first_on..first_on + 3], ["ON", "ON", "OFF"], "{heard:?}");
    assert!(heard[first_on + 2..].iter().all(|command| command == "OFF"), "{heard:?}");
    counters.abort();
}

/// Issue 30, item 1: a charger's signed OCMF values become evidence as they are. The node relays the public KEBA
/// KCP30 sample as its charger's reading (the asset names the charger's published key): it is anchored as a
/// device-attested reading; a tampered record, the same record again and a meter without such an asset are refused
/// with the reason.
#[test]
fn a_chargers_ocmf_record_is_relayed_as_its_meters_reading() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("home");
    let (key, _) = keys(&dir);
    let genesis = dir.join("genesis.toml");
    kos(&["ledger", "genesis", "--network", "kos-devnet", "--out", genesis.to_str().unwrap(), "--validator", &key]);
    let args = ["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "false", "--api", "127.0.0.1:0"];
    let node = Process::kos(&kos_binary(), &dir, &args).unwrap();
    let api = node.wait_for_field(Duration::from_secs(30), "API listening", "address").expect("no API address");
    let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
    let token = token.trim();
    let charger = serde_json::json!({"kind": "meter", "purpose": "wallbox, KEBA KCP30", "meters": ["charger-1"],
        "limits": {"generation_w_max": 0, "import_w_max": 11000, "export_w_max": 0, "consumption_w_max": 11000,
            "storage_w_max": 0, "storage_wh": 0},
        "cell": "u33db", "commissioned_s": 1_565_000_000_u64,
        "device_key": format!("p256:{}", protocol::vectors::OCMF_KCP30_KEY)});
    let registered = post(&api, token, "/assets", &charger);
    assert_eq!(registered.status, 202, "{}", registered.text());
    let asset =
        serde_json::from_slice::<serde_json::Value>(&registered.body).unwrap()["id"].as_str().unwrap().to_owned();
    assert!(
        wait_until(Duration::from_secs(30), || json(&api, &format!("/assets/{asset}")).is_some()),
        "the charger was not registered: {:#?}",
        node.lines()
    );
    let relay = |record: &str, meter: &str| {
        post(&api, token, "/readings/ocmf", &serde_json::json!({"meter": meter, "record": record}))
    };
    // The operator hands the record to its node as the charger sent it (`kos asset ocmf`).
    let record_file = root.path().join("session.ocmf");
    std::fs::write(&record_file, format!("{}\n", protocol::vectors::OCMF_KCP30)).unwrap();
    let relayed = std::process::Command::new(kos_binary())
        .args(["--data-dir", dir.to_str().unwrap(), "asset", "ocmf", "--meter", "charger-1", "--record"])
        .arg(&record_file)
        .env("KOS_API", &api)
        .output()
        .unwrap();
    assert!(relayed.status.success(), "{relayed:?}");
    let id = String::from_utf8_lossy(&relayed.stdout).split_whitespace().nth(1).unwrap().to_owned();
    let mut shown = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), || {
            shown = json(&api, "/readings").unwrap_or_default()["readings"]
                .as_array()
                .and_then(|readings| readings.iter().find(|reading| reading["id"] == id.as_str()).cloned())
                .unwrap_or_default();
            !shown.is_null()
        }),
        "the relayed reading was not anchored: {:#?}",
        node.lines()
    );
    // The interval the record's last register was read in (2019-08-13 10:00 UTC), attested by the charger.
    assert_eq!((shown["meter"].as_str(), shown["interval_start_s"].as_u64()), (Some("charger-1"), Some(1_565_690_400)));
    assert_eq!(shown["trust"], "device", "{shown:#}");
    assert!(shown["device_key"].as_str().is_some_and(|key| key.starts_with("p256:")), "{shown:#}");
    // Refused with the reason: a tampered record, the same one again, a meter no asset binds to a P-256 key.
    let tampered = relay(&protocol::vectors::OCMF_KCP30.replacen("0.2597", "0.2598", 1), "charger-1");
    assert_eq!(tampered.status, 400, "{}", tampered.text());
    assert!(tampered.text().contains("the signature does not verify"), "{}", tampered.text());
    let again = relay(protocol::vectors::OCMF_KCP30, "charger-1");
    assert_eq!(again.status, 400, "{}", again.text());
    assert!(again.text().contains("not after the meter's last reading"), "{}", again.text());
    let unbound = relay(protocol::vectors::OCMF_KCP30, "charger-2");
    assert_eq!(unbound.status, 400, "{}", unbound.text());
    assert!(unbound.text().contains("no asset of this node's account binds it"), "{}", unbound.text());
}
