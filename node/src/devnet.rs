//! `kos devnet`: a local network in one command. Four validators and N simulated homes, each a `kos run` process
//! of this same binary with its own data directory and RocksDB, on loopback. A simulated day runs faster than the
//! clock: each home signs a meter reading per interval, which the ledger anchors, and offers its forecast surplus or
//! deficit in the neighbourhood's energy pool; the pool clears, the ledger settles the trades in escrow and checks
//! them against the readings. A live summary prints every few seconds; every node serves the dashboard.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value;

use crate::clock::now_s;
use crate::keyfile;

/// The neighbourhood's energy pool: 15-second delivery intervals (a simulated quarter hour at 60×).
pub const POOL: &str = "energy/credit/u33db/15";
/// The neighbourhood's cell (its pool's): the homes' assets and the feeder's.
pub const CELL: &str = "u33db";
/// The lying home's over-report, ppm.
const LIE_PPM: u32 = 200_000;
/// The home whose meter signs its readings as its device would (`device_key_file`; its asset names the key): its
/// readings show the `device` trust level, `device+balanced` once the feeder confirms them.
const SIGNING_HOME: usize = 0;
/// Validators of the devnet.
pub const VALIDATORS: usize = 4;
/// Most homes `kos devnet` starts (each is a process).
pub const HOMES_MAX: usize = 64;

/// Settings of `kos devnet`.
#[derive(Debug, Clone, Args)]
pub struct DevnetArgs {
    /// Simulated homes besides the 4 validators.
    #[arg(long, default_value_t = 8)]
    pub homes: usize,
    /// Stop after this many seconds; 0 runs until Ctrl-C.
    #[arg(long, default_value_t = 0)]
    pub seconds: u64,
    /// The directory for the nodes' data; default a temporary one, removed at the end.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// First p2p port (the nodes take the ones after it); API ports start 100 above.
    #[arg(long, default_value_t = 7170)]
    pub port: u16,
    /// How many times faster than the clock the simulated day runs.
    #[arg(long, default_value_t = 60)]
    pub speed: u32,
    /// Hour of the simulated day (UTC, midsummer) the devnet starts at: 4 is sunrise near Potsdam; by 6 the roofs
    /// make enough for neighbours to trade within the first minute.
    #[arg(long, default_value_t = 6)]
    pub hour: u32,
    /// Seconds between summaries.
    #[arg(long, default_value_t = 5)]
    pub every: u64,
    /// Only write the nodes' data directories for `devnet/docker-compose.yml` into `--dir` (node i at
    /// <subnet>.(10+i), p2p port 7070, API 7080) and exit; `devnet/compose` runs them.
    #[arg(long, requires = "dir")]
    pub compose: bool,
    /// The compose network's /24, as its first three octets (`devnet/compose` picks one no other Docker network
    /// on the machine overlaps and passes it here and to `devnet/docker-compose.yml` as `KOS_SUBNET`).
    #[arg(long, default_value = COMPOSE_SUBNET_PREFIX, value_parser = subnet_prefix, requires = "compose")]
    pub subnet: String,
    /// The home that lies: it claims a fifth more export than its meter measured, which the cell's feeder (run
    /// by validator-1) catches when each interval closes.
    #[arg(long, default_value_t = 3)]
    pub liar: usize,
    /// No home lies.
    #[arg(long)]
    pub honest: bool,
    /// Start a node again (on its data directory) when it stops. Without it a stopped node stays down, the others
    /// go on, and the devnet exits with an error at the end. Either way the summary reports it.
    #[arg(long)]
    pub restart_crashed: bool,
}

/// The compose network's /24 when `devnet/compose` is not asked for another (`devnet/docker-compose.yml`).
pub const COMPOSE_SUBNET_PREFIX: &str = "172.29.0";

/// `--subnet`: three octets of an IPv4 address, such as `10.213.7`.
fn subnet_prefix(text: &str) -> Result<String, String> {
    let octets: Vec<&str> = text.split('.').collect();
    if octets.len() == 3 && octets.iter().all(|octet| octet.len() <= 3 && octet.parse::<u8>().is_ok()) {
        Ok(octets.iter().map(|octet| octet.parse::<u8>().unwrap_or(0).to_string()).collect::<Vec<_>>().join("."))
    } else {
        Err(format!("{text:?} is not the first three octets of an IPv4 /24 (such as 172.29.0)"))
    }
}
const COMPOSE_FIRST_HOST: usize = 10;

/// One node of the devnet.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    dir: PathBuf,
    account: String,
    peer_id: String,
    api: String,
}

/// A home's equipment, by index: PV peak kW, annual consumption kWh, and whether it has a battery.
fn home_profile(index: usize) -> (f64, f64, bool) {
    const PV: [f64; 8] = [10.0, 0.0, 6.0, 8.0, 0.0, 5.0, 0.0, 12.0];
    const ANNUAL: [f64; 8] = [3500.0, 4500.0, 3000.0, 5000.0, 2500.0, 4000.0, 6000.0, 3500.0];
    (PV[index % 8], ANNUAL[index % 8], index % 3 == 2)
}

/// `hour`:00 UTC on midsummer day of the current year.
fn midsummer(hour: u32) -> u64 {
    let year = energy::calendar::date(i64::try_from(now_s() / 86_400).unwrap_or(0)).year;
    let days = energy::calendar::days(year, 6, 21);
    u64::try_from(days).unwrap_or(0) * 86_400 + u64::from(hour) * 3600
}

fn config_text(args: &DevnetArgs, index: usize, home: Option<usize>, origins: (u64, u64), bootnode: &str) -> String {
    let mut text = if args.compose {
        // Each container has its own address on the compose network; the API is published on the host's loopback.
        let host = COMPOSE_FIRST_HOST + index;
        let subnet = &args.subnet;
        let bootnodes = if index == 0 { String::new() } else { format!("{bootnode:?}") };
        format!(
            "network = \"kos-devnet\"\nlog = \"info\"\n\n[p2p]\nlisten = [\"/ip4/0.0.0.0/tcp/7070\"]\n\
             external_addresses = [\"/ip4/{subnet}.{host}/tcp/7070\"]\nbootnodes = [{bootnodes}]\n\
             mdns = false\nautonat_only_global = false\npools = [\"{POOL}\"]\n\n[api]\nlisten = \"0.0.0.0:7080\"\n"
        )
    } else {
        let port = u32::from(args.port) + u32::try_from(index).unwrap_or(0);
        let api = port + 100;
        format!(
            "network = \"kos-devnet\"\nlog = \"info\"\n\n[p2p]\nlisten = [\"/ip4/127.0.0.1/tcp/{port}\"]\nmdns = false\n\
             pools = [\"{POOL}\"]\n\n[api]\nlisten = \"127.0.0.1:{api}\"\n"
        )
    };
    // Validator 1 runs the cell's simulated feeder: the homes' meters as measured, summed (not in compose).
    if index == 1 && !args.compose && args.homes > 0 {
        let apis: Vec<String> = (0..args.homes)
            .map(|home| format!("\"http://127.0.0.1:{}\"", u32::from(args.port) + 100 + (VALIDATORS + home) as u32))
            .collect();
        text.push_str(&format!("\n[feeder]\nmeters = [{}]\ninterval_s = 15\npoll_ms = 500\n", apis.join(", ")));
    }
    if let Some(home) = home {
        let (pv, annual, battery) = home_profile(home);
        let battery = if battery {
            // Energy is power × wall time, so a 15-second interval moves Wh, not kWh: batteries are sized to match.
            "battery = { capacity_wh = 200, power_w = 3000, efficiency_ppm = 900000 }\n"
        } else {
            ""
        };
        let mut extra =
            if !args.honest && home == args.liar { format!("over_report_ppm = {LIE_PPM}\n") } else { String::new() };
        // Not in compose, which registers no asset: an unregistered meter's signed readings are refused.
        if home == SIGNING_HOME && !args.compose {
            extra.push_str("device_key_file = \"device.key\"\n");
        }
        text.push_str(&format!(
            "\n[meter]\nkind = \"simulated\"\ninterval_s = 15\npoll_ms = 1000\n{extra}\n[meter.simulated]\npv_kwp = {pv:.1}\n\
             annual_kwh = {annual:.1}\nseed = 7\nload_seed = {load_seed}\nspeed = {speed}\nsimulated_origin_s = {sim}\n\
             wall_origin_s = {wall}\n{battery}\n\
             # Devnet credits are play money: tariffs of 300 and 80 credits per kWh make the Wh-sized trades visible.\n\
             [meter.dispatch]\nbuy_per_kwh = 300000\nsell_per_kwh = 80000\n\n[meter.trade]\npool = \"{POOL}\"\n",
            load_seed = home + 1,
            speed = args.speed,
            sim = origins.0,
            wall = origins.1,
        ));
    }
    text
}

/// Writes the devnet's keys, genesis and configs into `dir`.
fn prepare(args: &DevnetArgs, dir: &Path) -> anyhow::Result<Vec<Node>> {
    let count = VALIDATORS + args.homes;
    let mut nodes = Vec::with_capacity(count);
    for index in 0..count {
        let (name, node_dir) = if index < VALIDATORS {
            (format!("validator-{index}"), dir.join(format!("validator-{index}")))
        } else {
            (format!("home-{}", index - VALIDATORS), dir.join(format!("home-{}", index - VALIDATORS)))
        };
        std::fs::create_dir_all(&node_dir).with_context(|| format!("creating {}", node_dir.display()))?;
        let keypair = protocol::Keypair::generate();
        keyfile::write(&node_dir.join("node.key"), &keypair, true)?;
        nodes.push(Node {
            name,
            dir: node_dir,
            account: keypair.public().to_string(),
            peer_id: keyfile::peer_id(&keypair).to_string(),
            api: format!("127.0.0.1:{}", u32::from(args.port) + 100 + u32::try_from(index).unwrap_or(0)),
        });
    }
    let validators: Vec<protocol::PublicKey> = nodes[..VALIDATORS]
        .iter()
        .map(|node| protocol::PublicKey::from_hex(&node.account))
        .collect::<Result<_, _>>()
        .map_err(|problem| anyhow::anyhow!("a generated key: {problem}"))?;
    let funded: Vec<protocol::PublicKey> = nodes
        .iter()
        .map(|node| protocol::PublicKey::from_hex(&node.account))
        .collect::<Result<_, _>>()
        .map_err(|problem| anyhow::anyhow!("a generated key: {problem}"))?;
    let mut genesis = ::ledger::Genesis::devnet_text("kos-devnet", now_s() * 1000, &validators, &funded, 1_000_000_000);
    // Settle soon after delivery: the day runs fast. A 15-second interval moves a few Wh, so the feeder's tolerance
    // is 1 Wh (and 2 %), and a case's jury has a minute.
    genesis.push_str("\n[params]\nsettlement_grace_ms = 14000\nfeeder_tolerance_wh = 1\njury_period_ms = 60000\n");
    ::ledger::Genesis::parse(&genesis).context("the devnet genesis")?;
    std::fs::write(dir.join("genesis.toml"), &genesis)?;
    let origins = (midsummer(args.hour), now_s());
    let bootnode = format!("/ip4/{}.{COMPOSE_FIRST_HOST}/tcp/7070/p2p/{}", args.subnet, nodes[0].peer_id);
    for (index, node) in nodes.iter().enumerate() {
        std::fs::write(node.dir.join("genesis.toml"), &genesis)?;
        let home = index.checked_sub(VALIDATORS);
        std::fs::write(node.dir.join("config.toml"), config_text(args, index, home, origins, &bootnode))?;
    }
    Ok(nodes)
}

fn start(node: &Node, bootnode: Option<&str>) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the kos binary")?;
    // Appended to, so that a restarted node's log keeps what it said before it stopped.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.dir.join("log"))
        .context("creating a node's log")?;
    let mut command = Command::new(exe);
    command.arg("--data-dir").arg(&node.dir).arg("run");
    if let Some(bootnode) = bootnode {
        command.arg("--bootnode").arg(bootnode);
    }
    command.env_remove("RUST_LOG").stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    command.spawn().with_context(|| format!("starting {}", node.name))
}

/// One node's process and what became of it.
struct Running {
    child: Option<Child>,
    /// When and how it stopped, while it is down.
    down: Option<(Instant, String)>,
    restarts: u32,
}

/// Checks every node: reports one that stopped, and with `--restart-crashed` starts it again. Returns the lines the
/// summary shows about stopped and restarted nodes.
fn supervise(nodes: &[Node], running: &mut [Running], args: &DevnetArgs) -> Vec<String> {
    let up: Vec<bool> = running.iter().map(|state| state.child.is_some()).collect();
    for (index, (node, state)) in nodes.iter().zip(running.iter_mut()).enumerate() {
        if let Some(child) = state.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            println!("devnet: {} stopped ({status}); its log: {}", node.name, node.dir.join("log").display());
            state.child = None;
            state.down = Some((Instant::now(), status.to_string()));
        }
        if state.child.is_none() && args.restart_crashed {
            // Dial a node that is up (the first validator may be the one that stopped).
            let bootnode = (0..nodes.len())
                .find(|other| *other != index && up[*other])
                .map(|other| bootnode_of(args, other, &nodes[other]));
            match start(node, bootnode.as_deref()) {
                Ok(child) => {
                    state.restarts += 1;
                    println!("devnet: restarted {} (pid {}, restart {})", node.name, child.id(), state.restarts);
                    state.child = Some(child);
                    state.down = None;
                }
                Err(error) => println!("devnet: restarting {} failed: {error:#}", node.name),
            }
        }
    }
    nodes
        .iter()
        .zip(running.iter())
        .filter_map(|(node, state)| match (&state.down, state.restarts) {
            (Some((since, status)), _) => {
                Some(format!("  {:<11} DOWN for {} s ({status})", node.name, since.elapsed().as_secs()))
            }
            (None, 0) => None,
            (None, restarts) => Some(format!("  {:<11} up, restarted {restarts} time(s)", node.name)),
        })
        .collect()
}

/// The p2p address of node `index` on loopback.
fn bootnode_of(args: &DevnetArgs, index: usize, node: &Node) -> String {
    let port = u32::from(args.port) + u32::try_from(index).unwrap_or(0);
    format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", node.peer_id)
}

/// Stops the nodes as Ctrl-C would (SIGTERM: they close their databases), killing any still running after 10 s.
fn stop(children: Vec<Child>) {
    for child in &children {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for mut child in children {
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn get(agent: &ureq::Agent, api: &str, path: &str) -> Option<Value> {
    let mut response = agent.get(format!("http://{api}{path}")).call().ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()
}

fn post(agent: &ureq::Agent, node: &Node, path: &str, body: &Value) -> anyhow::Result<Value> {
    let token = crate::api::token(&node.dir)?;
    let mut response = agent
        .post(format!("http://{}{path}", node.api))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(serde_json::to_vec(body)?)
        .with_context(|| format!("POST {path} to {}", node.name))?;
    Ok(serde_json::from_str(&response.body_mut().read_to_string()?)?)
}

/// Waits (up to a minute) until `node` answers `path` with 200.
fn wait_for(agent: &ureq::Agent, node: &Node, path: &str) -> anyhow::Result<Value> {
    for _ in 0..120 {
        if let Some(value) = get(agent, &node.api, path) {
            return Ok(value);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("{} did not answer {path} within a minute", node.name)
}

/// Registers the cell: validator-1's guild and its feeder asset, and every home's meter as an asset of the cell
/// (PROTOCOL.md §10, *cells*).
fn register_cell(agent: &ureq::Agent, nodes: &[Node], args: &DevnetArgs) -> anyhow::Result<()> {
    let operator = &nodes[1];
    wait_for(agent, operator, "/status")?;
    let guild = post(
        agent,
        operator,
        "/guilds",
        &serde_json::json!({"name": format!("Feeder {CELL}"), "members": [operator.account], "threshold": 1}),
    )?;
    let guild = guild["account"].as_str().context("the guild's account")?.to_owned();
    wait_for(agent, operator, &format!("/guilds/{guild}"))?;
    let big = 1_000_000;
    let limits = serde_json::json!({"generation_w_max": big, "import_w_max": big, "export_w_max": big,
        "consumption_w_max": big, "storage_w_max": 0, "storage_wh": 0});
    let feeder = serde_json::json!({"kind": "feeder", "purpose": format!("the feeder of cell {CELL}"),
        "owner": guild, "meters": ["feeder"], "limits": limits, "cell": CELL});
    post(agent, operator, "/assets", &feeder)?;
    for (index, node) in nodes[VALIDATORS..].iter().enumerate() {
        let (pv, _, battery) = home_profile(index);
        // Rated with a margin over the nominal peak (a roof makes up to about its kWp).
        let limits = serde_json::json!({"generation_w_max": (pv * 1500.0) as u64, "import_w_max": 43_470,
            "export_w_max": 43_470, "consumption_w_max": 63_470, "storage_w_max": if battery { 3_000 } else { 0 },
            "storage_wh": if battery { 200 } else { 0 }});
        let mut home = serde_json::json!({"kind": "meter", "purpose": "a home's grid meter", "meters": ["main"],
            "limits": limits, "cell": CELL});
        if index == SIGNING_HOME {
            let meter = wait_for(agent, node, "/meter")?;
            let key = meter["device_key"].as_str().context("the signing home's device key (GET /meter)")?;
            home["device_key"] = serde_json::json!(key);
        }
        post(agent, node, "/assets", &home)?;
    }
    let liar = if args.honest || args.liar >= args.homes {
        String::from("no home lies")
    } else {
        format!("home-{} claims {} % more export than it makes", args.liar, LIE_PPM / 10_000)
    };
    println!(
        "devnet: cell {CELL}: validator-1 reads the feeder (guild {}…), {} homes registered, home-{SIGNING_HOME}'s \
         meter signs as its device; {liar} (GET /cells/{CELL}?interval_s=15, /cases, /readings' trust, the \
         dashboard)",
        &guild[..12],
        args.homes
    );
    Ok(())
}

/// One line on the cell: how its latest intervals closed, and its open cases' named homes.
fn cell_line(agent: &ureq::Agent, api: &str, nodes: &[Node]) -> Option<String> {
    let cell = get(agent, api, &format!("/cells/{CELL}?interval_s=15&count=20"))?;
    let intervals = cell["intervals"].as_array()?;
    let count = |status: &str| intervals.iter().filter(|interval| interval["status"] == status).count();
    let name = |account: &str| {
        nodes
            .iter()
            .find(|node| node.account == account)
            .map_or_else(|| account[..8].to_owned(), |node| node.name.clone())
    };
    let mut named: Vec<String> = cell["cases"]
        .as_array()?
        .iter()
        .filter(|case| case["status"] == "open")
        .flat_map(|case| case["named"].as_array().cloned().unwrap_or_default())
        .filter_map(|account| account.as_str().map(name))
        .collect();
    named.sort();
    named.dedup();
    Some(format!(
        "  cell {CELL}: last {} intervals {} balanced, {} unbalanced, {} unchecked; open cases name: {}",
        intervals.len(),
        count("balanced"),
        count("unbalanced"),
        count("unchecked"),
        if named.is_empty() { "nobody".to_owned() } else { named.join(", ") }
    ))
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// Prints one summary of the devnet, asking the first validator that answers; returns (height, trades settled).
fn summary(
    agent: &ureq::Agent,
    nodes: &[Node],
    started: Instant,
    args: &DevnetArgs,
    origin: u64,
    stopped: &[String],
) -> (u64, u64) {
    let (api, status) = nodes[..VALIDATORS]
        .iter()
        .find_map(|node| Some((node.api.as_str(), get(agent, &node.api, "/status")?)))
        .unwrap_or((nodes[0].api.as_str(), Value::Null));
    let height = number(&status["ledger"]["height"]);
    let trades = get(agent, api, "/trades?limit=500").map_or(0, |t| t["trades"].as_array().map_or(0, Vec::len));
    let accounts = get(agent, api, "/accounts?limit=1000").unwrap_or(Value::Null);
    let elapsed = started.elapsed().as_secs();
    let simulated = (origin + elapsed * u64::from(args.speed)) % 86_400;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n== devnet {elapsed:>4} s, simulated {:02}:{:02} UTC: height {height}, committed entries {}, peers {}, \
         trades settled {trades}",
        simulated / 3600,
        simulated % 3600 / 60,
        status["ledger"]["committed_entries"],
        status["peers"],
    );
    for line in stopped {
        let _ = writeln!(out, "{line}");
    }
    if let Some(line) = cell_line(agent, api, nodes) {
        let _ = writeln!(out, "{line}");
    }
    for node in &nodes[VALIDATORS..] {
        let meter = get(agent, &node.api, "/meter").unwrap_or(Value::Null);
        let reading = &meter["last_reading"];
        let credit = accounts["accounts"]
            .as_array()
            .and_then(|list| list.iter().find(|account| account["account"].as_str() == Some(node.account.as_str())))
            .map_or(0, |account| number(&account["balances"]["credit"]));
        let battery = &meter["battery"];
        let battery = if battery.is_null() {
            String::new()
        } else {
            format!("  battery {} Wh ({})", battery["stored_wh"], battery["command"].as_str().unwrap_or(""))
        };
        let _ = writeln!(
            out,
            "  {:<8} readings {:>4}  asks {:>3} bids {:>3}  last: PV {:>4} Wh use {:>4} Wh import {:>4} export {:>4}  \
             credit {:>12}{battery}",
            node.name,
            number(&meter["readings_published"]),
            number(&meter["asks"]),
            number(&meter["bids"]),
            number(&reading["generation_wh"]),
            number(&reading["consumption_wh"]),
            number(&reading["import_wh"]),
            number(&reading["export_wh"]),
            protocol::amount::format_milli(credit),
        );
    }
    (height, u64::try_from(trades).unwrap_or(0))
}

/// Runs the devnet until `--seconds` pass or Ctrl-C / SIGTERM.
pub fn run(args: &DevnetArgs) -> anyhow::Result<()> {
    if args.homes > HOMES_MAX {
        bail!("--homes {}: at most {HOMES_MAX} (each home is a process)", args.homes);
    }
    if args.hour > 23 {
        bail!("--hour must be between 0 and 23");
    }
    if args.speed == 0 || args.speed > 3600 {
        bail!("--speed must be between 1 and 3600");
    }
    let count = VALIDATORS + args.homes;
    if u32::from(args.port) + 100 + u32::try_from(count).unwrap_or(0) > u32::from(u16::MAX) {
        bail!("--port {} leaves no room for {count} nodes' ports", args.port);
    }
    let (dir, _temporary) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let temporary = tempfile::Builder::new().prefix("kos-devnet-").tempdir()?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    let nodes = std::sync::Arc::new(prepare(args, &dir)?);
    if args.compose {
        for node in nodes.iter() {
            println!("{} {} {}", node.name, node.account, node.peer_id);
        }
        return Ok(());
    }
    let origin = midsummer(args.hour) % 86_400;
    let bootnode = format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", args.port, nodes[0].peer_id);
    let mut running: Vec<Running> = Vec::with_capacity(nodes.len());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Ctrl-C while the nodes are still starting stops those started so far, not the devnet alone.
    let mut shutdown = {
        let _entered = runtime.enter();
        crate::run::Shutdown::install()?
    };
    let outcome: anyhow::Result<()> = runtime.block_on(async {
        for (index, node) in nodes.iter().enumerate() {
            let child = start(node, (index > 0).then_some(bootnode.as_str()))?;
            println!("devnet: {} pid {}, API {}", node.name, child.id(), node.api);
            running.push(Running { child: Some(child), down: None, restarts: 0 });
        }
        let first_home = nodes.get(VALIDATORS).map_or(&nodes[0].api, |home| &home.api);
        println!(
            "devnet: {} validators and {} homes in {}; logs in */log\ndashboard: http://{first_home}/  \
             (every node serves one: APIs on 127.0.0.1:{}..{})\nCtrl-C stops it.",
            VALIDATORS,
            args.homes,
            dir.display(),
            u32::from(args.port) + 100,
            u32::from(args.port) + 99 + u32::try_from(count).unwrap_or(0),
        );
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(3))).build().into();
        if args.homes > 0 {
            let (agent, view, args_copy) = (agent.clone(), nodes.clone(), args.clone());
            // The devnet runs without it if it fails (its cell then stays unchecked): said, not fatal.
            let registered = tokio::task::spawn_blocking(move || register_cell(&agent, &view, &args_copy)).await?;
            if let Err(error) = registered {
                println!("devnet: the cell's feeder and homes could not be registered: {error:#}");
            }
        }
        let started = Instant::now();
        let mut every = tokio::time::interval(Duration::from_secs(args.every.max(1)));
        every.tick().await;
        loop {
            tokio::select! {
                signal = shutdown.wait() => {
                    println!("devnet: {signal} received, stopping the nodes");
                    return Ok(());
                }
                _ = every.tick() => {}
            }
            // A node that stops does not stop the others: it is reported (and restarted with --restart-crashed).
            let stopped = supervise(&nodes, &mut running, args);
            let (agent, view, args_copy) = (agent.clone(), nodes.clone(), args.clone());
            tokio::task::spawn_blocking(move || summary(&agent, &view, started, &args_copy, origin, &stopped)).await?;
            if args.seconds > 0 && started.elapsed().as_secs() >= args.seconds {
                return Ok(());
            }
        }
    });
    let down: Vec<String> = nodes
        .iter()
        .zip(&running)
        .filter_map(|(node, state)| state.down.as_ref().map(|(_, status)| format!("{} ({status})", node.name)))
        .collect();
    stop(running.into_iter().filter_map(|state| state.child).collect());
    outcome?;
    if !down.is_empty() {
        bail!("nodes stopped during the run and stayed down: {}", down.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        devnet: DevnetArgs,
    }

    #[test]
    fn the_compose_subnet_is_three_octets() {
        assert_eq!(subnet_prefix("10.213.7"), Ok("10.213.7".to_string()));
        assert_eq!(subnet_prefix("010.1.2"), Ok("10.1.2".to_string()));
        for bad in ["10.213", "10.213.7.0", "10.256.1", "a.b.c", "10..7", "", "1.2.3/24"] {
            assert!(subnet_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn compose_configs_put_the_nodes_on_the_given_subnet() {
        let dir = tempfile::tempdir().unwrap();
        let args = Cli::try_parse_from([
            "devnet",
            "--compose",
            "--dir",
            dir.path().to_str().unwrap(),
            "--subnet",
            "10.213.7",
            "--homes",
            "1",
        ])
        .unwrap()
        .devnet;
        prepare(&args, dir.path()).unwrap();
        let config = std::fs::read_to_string(dir.path().join("home-0/config.toml")).unwrap();
        assert!(config.contains("/ip4/10.213.7.14/tcp/7070"), "{config}");
        assert!(config.contains("/ip4/10.213.7.10/tcp/7070/p2p/"), "{config}");
        assert!(Cli::try_parse_from(["devnet", "--subnet", "10.213.7"]).is_err(), "--subnet without --compose");
    }
}
