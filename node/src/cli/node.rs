//! Commands for a person running a node: `kos init` prepares a data directory to join a network; `kos status`,
//! `kos balance` and `kos offer place|cancel` talk to the running node's API on loopback.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::Paths;
use crate::keyfile;

/// Settings of `kos init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The network's genesis file (network id, validators, tokens, policies): copied into the data directory.
    /// Without it the node only gossips until a genesis file is put there.
    #[arg(long, value_name = "GENESIS_FILE")]
    pub network: Option<PathBuf>,
    /// The genesis hash the network's founders published (64 hex digits): the genesis file must have it, or
    /// nothing is written. Check it: a node started from another file is on another network.
    #[arg(long, requires = "network")]
    pub genesis_hash: Option<String>,
    /// A file of bootnodes, one multiaddr per line (`#` comments); default `bootnodes.txt` beside the genesis file.
    #[arg(long)]
    pub bootnodes: Option<PathBuf>,
    /// A bootnode to dial (repeatable; added to the file's).
    #[arg(long)]
    pub bootnode: Vec<String>,
    /// The p2p listen address.
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/7070")]
    pub listen: String,
    /// The API address (keep it on loopback unless a reverse proxy guards it).
    #[arg(long, default_value = "127.0.0.1:7080")]
    pub api: String,
    /// Pool to serve (repeatable): energy/credit/u33db/900.
    #[arg(long)]
    pub pool: Vec<String>,
    /// Add a simulated home (PV, household load) as the node's meter, trading in the first pool.
    #[arg(long)]
    pub simulated_home: bool,
    /// Replace an existing config and genesis (the key and the ledger are kept).
    #[arg(long)]
    pub force: bool,
}

/// Reads the bootnodes file: one multiaddr per line, blank lines and `#` comments ignored.
pub fn read_bootnodes(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading bootnodes {}", path.display()))?;
    let mut list = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        line.parse::<libp2p::Multiaddr>()
            .with_context(|| format!("{} line {}: {line:?} is not a multiaddr", path.display(), number + 1))?;
        list.push(line.to_string());
    }
    Ok(list)
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("{item:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Refuses a genesis file whose hash is not the one its network published.
fn check_genesis_hash(path: &Path, genesis: &::ledger::genesis::Genesis, published: &str) -> anyhow::Result<()> {
    let published = ::ledger::Hash::from_hex(published.trim())
        .with_context(|| format!("--genesis-hash {published:?} is not 64 hex digits"))?;
    if published != genesis.hash {
        bail!(
            "{} has the genesis hash {}, not the published {published}: it is another network's file, or a damaged \
             or altered copy. Get the file again from the network's founders; nothing was written",
            path.display(),
            genesis.hash
        );
    }
    Ok(())
}

/// The `[meter]` section `kos init` writes: a simulated home, or a commented example.
fn meter_section(args: &InitArgs) -> String {
    if args.simulated_home {
        // The home trades in the first pool of offers named (a barter pool has no prices to trade at).
        let trade = args
            .pool
            .iter()
            .find(|pool| !pool.starts_with("barter/"))
            .map_or(String::new(), |pool| format!("\n[meter.trade]\npool = {pool:?}\n"));
        let interval = args
            .pool
            .first()
            .and_then(|pool| pool.parse::<protocol::message::PoolId>().ok())
            .map_or(900, |pool| pool.interval_s);
        format!(
            "\n# A simulated home: PV and a household load (BDEW H25), read every second, a reading per interval.\n\
             [meter]\nkind = \"simulated\"\ninterval_s = {interval}\n\n[meter.simulated]\npv_kwp = 6.0\n\
             annual_kwh = 4000.0\n{trade}"
        )
    } else {
        "\n# The home's meter: kind = \"simulated\", \"sunspec\" (Modbus TCP) or \"mqtt\"; see README.md.\n\
         # [meter]\n# kind = \"sunspec\"\n# [meter.sunspec]\n# address = \"192.168.1.50:502\"\n"
            .to_string()
    }
}

/// `kos init`: key, genesis, bootnodes and config in the data directory.
pub fn init(paths: &Paths, args: InitArgs) -> anyhow::Result<()> {
    // Every input is read and checked before anything is written: a bad one leaves the data directory as it was.
    let genesis = match &args.network {
        Some(path) => {
            let genesis = ::ledger::genesis::Genesis::load(path)
                .with_context(|| format!("{} is not a kos genesis file", path.display()))?;
            if let Some(published) = &args.genesis_hash {
                check_genesis_hash(path, &genesis, published)?;
            }
            Some(genesis)
        }
        None => None,
    };
    let list = match (&args.bootnodes, &args.network) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(genesis_path)) => {
            genesis_path.parent().map(|dir| dir.join("bootnodes.txt")).filter(|path| path.exists())
        }
        (None, None) => None,
    };
    let mut bootnodes = match list {
        Some(path) => read_bootnodes(&path)?,
        None => Vec::new(),
    };
    for bootnode in &args.bootnode {
        bootnode.parse::<libp2p::Multiaddr>().with_context(|| format!("--bootnode {bootnode:?} is not a multiaddr"))?;
        bootnodes.push(bootnode.clone());
    }
    for pool in &args.pool {
        pool.parse::<protocol::message::PoolKey>().map_err(|problem| anyhow::anyhow!("--pool {pool:?}: {problem}"))?;
    }
    let data_dir = &paths.data_dir;
    let config_path = crate::config::default_path(data_dir);
    if config_path.exists() && !args.force {
        bail!("{} exists; pass --force to replace it (the key and the ledger are kept)", config_path.display());
    }
    let target = data_dir.join("genesis.toml");
    if let Some(genesis) = &genesis
        && target.exists()
        && !args.force
        && std::fs::read_to_string(&target).unwrap_or_default() != genesis.text
    {
        bail!("{} holds another genesis; pass --force to replace it", target.display());
    }

    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let key_file = paths.key_file();
    let keypair = if key_file.exists() {
        keyfile::read(&key_file)?
    } else {
        let keypair = protocol::Keypair::generate();
        keyfile::write(&key_file, &keypair, false)?;
        keypair
    };
    let mut network = "kos-local".to_string();
    let mut genesis_hash = None;
    let mut validator = false;
    if let Some(genesis) = &genesis {
        // The file's bytes, not a re-encoding: its hash is the parent of block 1.
        std::fs::write(&target, genesis.text.as_bytes()).with_context(|| format!("writing {}", target.display()))?;
        network = genesis.network.as_str().to_string();
        genesis_hash = Some(genesis.hash);
        validator = genesis.validators.iter().any(|member| member.key == keypair.public());
    }
    let meter = meter_section(&args);
    let config = format!(
        "# kos node configuration, written by `kos init`; every setting is described in README.md.\n\
         network = {network:?}\nlog = \"info\"\n\n[p2p]\nlisten = [{listen:?}]\nbootnodes = {bootnodes}\n\
         pools = {pools}\n# Addresses others reach this node at, when it has a public one:\n\
         # external_addresses = [\"/ip4/203.0.113.7/tcp/7070\"]\n\n[api]\nlisten = {api:?}\n{meter}",
        listen = args.listen,
        bootnodes = toml_list(&bootnodes),
        pools = toml_list(&args.pool),
        api = args.api,
    );
    // Check what was written is a config `kos run` takes.
    let parsed: crate::config::Config = toml::from_str(&config).context("the config kos init wrote")?;
    parsed.validate().context("the config kos init wrote")?;
    std::fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))?;
    crate::api::token(data_dir)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "data directory: {}", data_dir.display())?;
    writeln!(out, "account (public key): {}", keypair.public())?;
    writeln!(out, "peer id: {}", keyfile::peer_id(&keypair))?;
    writeln!(out, "network: {network}{}", if validator { " (this key is one of its validators)" } else { "" })?;
    if let Some(hash) = genesis_hash {
        writeln!(out, "genesis hash: {hash} (compare it with the one the network published, or pass --genesis-hash)")?;
    }
    writeln!(out, "bootnodes: {}", bootnodes.len())?;
    writeln!(out, "config: {}", config_path.display())?;
    if args.network.is_none() {
        writeln!(out, "no genesis file given: the node will gossip but keep no ledger (use --network GENESIS_FILE)")?;
    }
    writeln!(out, "next: kos --data-dir {} run", data_dir.display())?;
    Ok(())
}

/// Where the running node's API is, with the data directory's token.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// The API of the node of `paths`: `--api`, else the config's `api.listen`, else 127.0.0.1:7080.
    pub fn new(paths: &Paths, api: Option<String>) -> anyhow::Result<Client> {
        let address = match api {
            Some(address) => address,
            None => crate::config::Config::load(&crate::config::default_path(&paths.data_dir), false)?.api.listen,
        };
        if address.is_empty() {
            bail!("the node's config turns its API off (api.listen = \"\"); pass --api ADDRESS");
        }
        let token = std::fs::read_to_string(paths.data_dir.join("api.token")).ok().map(|text| text.trim().to_string());
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(15)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Client { base: format!("http://{address}"), token, agent })
    }

    fn answer(
        &self,
        path: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let mut response = result.map_err(|problem| {
            anyhow::anyhow!("{}{path}: {problem}; is the node running (`kos run`) with its API there?", self.base)
        })?;
        let status = response.status();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = value.get("error").and_then(Value::as_str).map_or_else(|| value.to_string(), str::to_string);
            bail!("the node answered {status}: {message}");
        }
        Ok(value)
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.answer(path, self.agent.get(format!("{}{path}", self.base)).call())
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let Some(token) = &self.token else {
            bail!("no API token: writes need the running node's data directory (its api.token); pass --data-dir");
        };
        let request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .content_type("application/json");
        self.answer(path, request.send(body.to_string()))
    }
}

/// `kos status`.
pub fn status(client: &Client) -> anyhow::Result<()> {
    let status = client.get("/status")?;
    let mut out = std::io::stdout().lock();
    let text = |value: &Value| value.as_str().map_or_else(|| value.to_string(), str::to_string);
    writeln!(out, "network {}  peer id {}", text(&status["network"]), text(&status["peer_id"]))?;
    writeln!(out, "account {}", text(&status["account"]))?;
    writeln!(out, "peers {}", status["peers"])?;
    match status.get("ledger").filter(|ledger| !ledger.is_null()) {
        Some(ledger) => {
            writeln!(
                out,
                "ledger height {} (round {}), mempool {}, {} validators{}",
                ledger["height"],
                ledger["round"],
                ledger["mempool_entries"],
                ledger["validators"],
                if ledger["validator"] == json!(true) { ", this node validates" } else { "" }
            )?;
            if let Some(tip) = ledger.get("syncing_to").filter(|tip| !tip.is_null()) {
                writeln!(out, "catching up with peers at height {tip}")?;
            }
        }
        None => writeln!(out, "no ledger (no genesis file in the data directory)")?,
    }
    let gossip = &status["gossip"];
    writeln!(
        out,
        "gossip: accepted {}, rejected {}, throttled {}, fuel-throttled {}",
        gossip["accepted"], gossip["rejected"], gossip["throttled"], gossip["fuel_throttled"]
    )?;
    let pools = status["pools"].as_array().cloned().unwrap_or_default();
    if !pools.is_empty() {
        writeln!(out, "pools ({}):", pools.len())?;
    }
    let now_ms = crate::clock::now_ms();
    let ago = |value: &Value| match value.as_u64() {
        Some(ms) => format!("{} s ago", now_ms.saturating_sub(ms) / 1000),
        None => "never".to_owned(),
    };
    for pool in pools {
        writeln!(
            out,
            "  {}{}: {} providers known, {} mesh peers ({} subscribed), book last filled {}",
            text(&pool["pool"]),
            if pool["pinned"] == json!(true) { " (configured)" } else { "" },
            pool["providers"],
            pool["mesh"],
            pool["subscribed"],
            ago(&pool["book_filled_ms"]),
        )?;
    }
    Ok(())
}

/// `kos balance [ACCOUNT]`: the node's own account by default.
pub fn balance(client: &Client, paths: &Paths, account: Option<String>) -> anyhow::Result<()> {
    let account = match account {
        Some(account) => account,
        None => keyfile::read(&paths.key_file())?.public().to_string(),
    };
    let answer = client.get(&format!("/accounts/{account}/balances"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "account {account} at height {}", answer["height"])?;
    let balances = answer["balances"].as_object().cloned().unwrap_or_default();
    if balances.is_empty() {
        writeln!(out, "  no balance")?;
    }
    for (token, amount) in balances {
        let milli = amount.as_u64().unwrap_or(0);
        writeln!(out, "  {token:<12} {}", protocol::amount::format_milli(milli))?;
    }
    Ok(())
}

/// `kos offer place|cancel`: through the running node, which signs with its key.
#[derive(Debug, Subcommand)]
pub enum OfferAction {
    /// Place a bid or ask in a pool through the running node (signed with its key, gossiped, in its book).
    Place {
        /// Pool as resource/token/cell/interval_s: energy/credit/u33db/900.
        #[arg(long)]
        pool: String,
        #[arg(long, value_enum)]
        side: super::SideArg,
        /// Quantity in the resource's unit: Wh for energy, milli-units otherwise.
        #[arg(long)]
        quantity: u64,
        /// Limit price per kWh (energy) or unit, up to 3 decimals: 0.30.
        #[arg(long)]
        price: String,
        /// Start of the delivery interval (Unix seconds); default the pool's next one.
        #[arg(long)]
        delivery_start: Option<u64>,
        /// Lifetime in seconds; default 900, or until the delivery starts when that is later (the node decides).
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// Withdraw one of the node's offers (a signed cancel, gossiped and put on the ledger).
    Cancel {
        /// The offer's id (64 hex digits, as `kos offer place` printed it).
        id: String,
        /// The offer's pool (a barter offer's: barter/<cell>).
        #[arg(long)]
        pool: String,
    },
}

pub fn offer(client: &Client, action: OfferAction) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match action {
        OfferAction::Place { pool, side, quantity, price, delivery_start, expires_in } => {
            let side = match side {
                super::SideArg::Bid => "bid",
                super::SideArg::Ask => "ask",
            };
            let mut body = json!({ "pool": pool, "side": side, "quantity": quantity, "price": price,
                                   "expires_in_s": expires_in });
            if let Some(start) = delivery_start {
                body["delivery_start"] = json!(start);
            }
            let answer = client.post("/offers", &body)?;
            writeln!(
                out,
                "offer {} placed in {} for delivery from {}{}",
                answer["id"].as_str().unwrap_or(""),
                answer["pool"].as_str().unwrap_or(""),
                answer["delivery_start"],
                if answer["published"] == json!(true) { "" } else { " (no peer in the pool yet: in this node's book)" }
            )?;
        }
        OfferAction::Cancel { id, pool } => {
            let encoded: String = pool.replace('*', "%2A").replace('/', "%2F");
            let answer = client.post(&format!("/offers/{id}/cancel?pool={encoded}"), &json!({}))?;
            writeln!(out, "cancel {} submitted", answer["id"].as_str().unwrap_or(""))?;
        }
    }
    Ok(())
}

/// `kos transfer`: tokens from the node's account, through the running node.
pub fn transfer(client: &Client, to: &str, token: &str, amount: &str, memo: Option<String>) -> anyhow::Result<()> {
    let mut body = json!({ "to": to, "token": token, "amount": amount });
    if let Some(memo) = memo {
        body["memo"] = json!(memo);
    }
    let answer = client.post("/transfers", &body)?;
    writeln!(
        std::io::stdout().lock(),
        "transfer {} submitted: {amount} {token} to {to}",
        answer["id"].as_str().unwrap_or("")
    )?;
    Ok(())
}

/// `kos guild ...`: shared accounts whose spending needs k of n members' approvals, through the running node.
#[derive(Debug, Subcommand)]
pub enum GuildAction {
    /// Create a guild (the node signs; it need not be a member) and print its account.
    Create {
        #[arg(long)]
        name: String,
        /// A member's account (repeatable; 1 to 32).
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        /// Approvals a spend needs.
        #[arg(long)]
        threshold: u32,
    },
    /// A guild's members, threshold and balances.
    Show { account: String },
    /// Ask to spend from a guild the node is a member of; counts as its approval.
    Spend {
        /// The guild's account.
        account: String,
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "credit")]
        token: String,
        /// In tokens, up to 3 decimals.
        #[arg(long)]
        amount: String,
        #[arg(long)]
        memo: Option<String>,
    },
    /// Approve a pending spend (its id, as `kos guild spend` printed it).
    Approve { spend: String },
    /// A spend's approvals and status.
    Status { spend: String },
}

pub fn guild(client: &Client, action: GuildAction) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match action {
        GuildAction::Create { name, members, threshold } => {
            let answer =
                client.post("/guilds", &json!({ "name": name, "members": members, "threshold": threshold }))?;
            writeln!(
                out,
                "guild {} submitted: fund it with kos transfer --to {}",
                answer["account"].as_str().unwrap_or(""),
                answer["account"].as_str().unwrap_or("")
            )?;
        }
        GuildAction::Show { account } => {
            let answer = client.get(&format!("/guilds/{account}"))?;
            writeln!(out, "guild {:?} {account}", answer["name"].as_str().unwrap_or(""))?;
            writeln!(
                out,
                "  spends need {} of {} members",
                answer["threshold"],
                answer["members"].as_array().map_or(0, Vec::len)
            )?;
            for member in answer["members"].as_array().into_iter().flatten() {
                writeln!(out, "  member {}", member.as_str().unwrap_or(""))?;
            }
            for (token, amount) in answer["balances"].as_object().into_iter().flatten() {
                writeln!(out, "  {token:<12} {}", protocol::amount::format_milli(amount.as_u64().unwrap_or(0)))?;
            }
        }
        GuildAction::Spend { account, to, token, amount, memo } => {
            let mut body = json!({ "to": to, "token": token, "amount": amount });
            if let Some(memo) = memo {
                body["memo"] = json!(memo);
            }
            let answer = client.post(&format!("/guilds/{account}/spends"), &body)?;
            writeln!(out, "spend {} submitted with this node's approval", answer["id"].as_str().unwrap_or(""))?;
        }
        GuildAction::Approve { spend } => {
            client.post(&format!("/guild-spends/{spend}/approve"), &json!({}))?;
            writeln!(out, "approval of {spend} submitted")?;
        }
        GuildAction::Status { spend } => {
            let answer = client.get(&format!("/guild-spends/{spend}"))?;
            writeln!(
                out,
                "spend {spend}: {} {} to {}, {} approvals, {}",
                protocol::amount::format_milli(answer["amount"].as_u64().unwrap_or(0)),
                answer["token"].as_str().unwrap_or(""),
                answer["to"].as_str().unwrap_or(""),
                answer["approvals"],
                answer["status"].as_str().unwrap_or("")
            )?;
        }
    }
    Ok(())
}

/// `kos gov ...`: the community's proposals, votes and overrides, through the running node.
#[derive(Debug, Subcommand)]
pub enum GovAction {
    /// Open proposals with their votes, overrides in force, scheduled validator changes.
    Show,
    /// Propose; the action is JSON as `POST /proposals` takes it, e.g.
    /// `{"kind":"set-parameter","name":"grid_fee_per_kwh","value":20}` or
    /// `{"kind":"override","measure":"freeze","account":"<hex>","duration_blocks":600}`.
    Propose {
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        text: String,
        /// Blocks the vote stays open.
        #[arg(long, default_value_t = 100)]
        period: u32,
        #[arg(long)]
        action: String,
    },
    /// Vote on a proposal: yes, no or abstain.
    Vote {
        proposal: String,
        choice: String,
        /// On a proposal decided by stake: the tokens to lock into the vote until it closes.
        #[arg(long)]
        stake: Option<String>,
    },
}

pub fn gov(client: &Client, action: GovAction) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match action {
        GovAction::Show => {
            let answer = client.get("/governance")?;
            writeln!(out, "height {}", answer["height"])?;
            for proposal in answer["proposals"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "proposal {} {} until {}: {} yes {} no {} abstain ({} ballots)  {}",
                    proposal["id"].as_str().unwrap_or(""),
                    proposal["status"].as_str().unwrap_or(""),
                    proposal["end_height"],
                    proposal["yes"],
                    proposal["no"],
                    proposal["abstain"],
                    proposal["ballots"].as_array().map_or(0, Vec::len),
                    proposal["action"]
                )?;
            }
            for measure in answer["overrides"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "override {} {} until height {}{}",
                    measure["id"].as_str().unwrap_or(""),
                    measure["measure"].as_str().unwrap_or(""),
                    measure["until_height"],
                    if measure["emergency"] == true { " (emergency)" } else { "" }
                )?;
            }
            for change in answer["validator_changes"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "validator {} power {} from height {}",
                    change["key"].as_str().unwrap_or(""),
                    change["power"],
                    change["height"]
                )?;
            }
        }
        GovAction::Propose { title, text, period, action } => {
            let action: serde_json::Value =
                serde_json::from_str(&action).map_err(|error| anyhow::anyhow!("--action is not JSON: {error}"))?;
            let body = json!({ "title": title, "text": text, "voting_period_blocks": period, "action": action });
            let answer = client.post("/proposals", &body)?;
            writeln!(out, "proposal {} submitted", answer["id"].as_str().unwrap_or(""))?;
        }
        GovAction::Vote { proposal, choice, stake } => {
            let mut body = json!({ "choice": choice });
            if let Some(stake) = stake {
                body["stake"] = json!(stake);
            }
            let answer = client.post(&format!("/proposals/{proposal}/votes"), &body)?;
            writeln!(out, "vote {} submitted", answer["id"].as_str().unwrap_or(""))?;
        }
    }
    Ok(())
}

/// `kos job ...`: the job marketplace, through the running node.
#[derive(Debug, Subcommand)]
pub enum JobAction {
    /// Jobs on the ledger (newest first), or one job with its bids, award, escrow and jury.
    Show {
        /// A job's id; none: the list.
        id: Option<String>,
        /// open, awarded, disputed, done, failed or closed.
        #[arg(long)]
        status: Option<String>,
    },
    /// Post a job. The reward is escrowed when it is awarded.
    Post {
        /// compute, storage, bandwidth, build, delivery, maintenance or text.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        text: String,
        /// The most the node pays, in tokens: 24 or 2.5.
        #[arg(long)]
        reward: String,
        /// The collateral each bid locks, in tokens.
        #[arg(long)]
        collateral: Option<String>,
        /// Share of the collateral a failing worker loses, ppm.
        #[arg(long, default_value_t = 0)]
        slash_ppm: u32,
        /// lowest-price, best-score or first-qualified.
        #[arg(long, default_value = "lowest-price")]
        rule: String,
        /// Where the work is (geohash); empty: anywhere.
        #[arg(long, default_value = "")]
        cell: String,
        /// A skill or device class a worker needs (repeatable).
        #[arg(long = "skill")]
        skills: Vec<String>,
        /// The lowest reputation tier of a bidder.
        #[arg(long, default_value_t = 0)]
        tier: u32,
        /// What completes it besides acceptance, as JSON: {"kind":"compute","units":64,"rounds":256,"samples":4},
        /// {"kind":"energy","wh":2000}, {"kind":"healthy","asset":"<id>"}, {"kind":"receipt","recipient":"<key>"}.
        #[arg(long)]
        evidence: Option<String>,
        /// Seconds bids are taken.
        #[arg(long, default_value_t = 60)]
        bids_for: u64,
        /// Seconds the work may take after bidding.
        #[arg(long, default_value_t = 3600)]
        work_for: u64,
    },
    /// Bid on a job.
    Bid {
        job: String,
        /// The price asked, in tokens.
        #[arg(long)]
        price: String,
        /// Collateral to lock; default what the job asks.
        #[arg(long)]
        collateral: Option<String>,
        #[arg(long, default_value = "")]
        cell: String,
        /// Route distance to the job, m.
        #[arg(long, default_value_t = 0)]
        distance_m: u32,
    },
    /// Award a job you posted to the bid its rule picks (closes bidding early).
    Award { job: String },
    /// Deliver an awarded job: claim, meter (with --meter), compute (runs the task here), or reading (--reading hex).
    Deliver {
        job: String,
        #[arg(long, default_value = "claim")]
        proof: String,
        #[arg(long)]
        meter: Option<String>,
        #[arg(long)]
        reading: Option<String>,
    },
    /// Accept the work (the poster, or a receipt's recipient), or as a juror vote: done or failed.
    Complete {
        job: String,
        #[arg(long, default_value = "done")]
        outcome: String,
    },
    /// Dispute an awarded job (the poster or the worker): a jury decides.
    Dispute {
        job: String,
        #[arg(long)]
        text: String,
    },
}

/// `kos job show <id>`: a job, its bids, award and jurors.
fn print_job(out: &mut impl std::io::Write, job: &serde_json::Value) -> anyhow::Result<()> {
    writeln!(
        out,
        "{} {} {} \"{}\" reward {} {} rule {} status {}{}",
        job["id"].as_str().unwrap_or(""),
        if job["quest"] == true { "quest" } else { "job" },
        job["kind"].as_str().unwrap_or(""),
        job["title"].as_str().unwrap_or(""),
        protocol::amount::format_milli(job["reward"].as_u64().unwrap_or(0)),
        job["token"].as_str().unwrap_or(""),
        job["rule"].as_str().unwrap_or(""),
        job["status"].as_str().unwrap_or(""),
        job["reason"]
            .as_str()
            .filter(|reason| !reason.is_empty())
            .map(|reason| format!(" ({reason})"))
            .unwrap_or_default(),
    )?;
    for bid in job["bids"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  bid {} by {} price {} collateral {} distance {} m cost {}",
            bid["id"].as_str().unwrap_or(""),
            bid["worker"].as_str().unwrap_or(""),
            protocol::amount::format_milli(bid["price"].as_u64().unwrap_or(0)),
            protocol::amount::format_milli(bid["collateral"].as_u64().unwrap_or(0)),
            bid["distance_m"],
            bid["cost"],
        )?;
    }
    if let Some(award) = job["award"].as_object() {
        writeln!(
            out,
            "  awarded to {} at {} (height {}); escrow {}",
            award["worker"].as_str().unwrap_or(""),
            protocol::amount::format_milli(award["price"].as_u64().unwrap_or(0)),
            award["height"],
            protocol::amount::format_milli(job["escrow"].as_u64().unwrap_or(0)),
        )?;
    }
    for juror in job["jurors"].as_array().into_iter().flatten() {
        writeln!(out, "  juror {}", juror.as_str().unwrap_or(""))?;
    }
    Ok(())
}

/// `kos job show`: a line per job.
fn print_jobs(out: &mut impl std::io::Write, answer: &serde_json::Value) -> anyhow::Result<()> {
    for job in answer["jobs"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{} {:<9} {:<11} {:>10} {} {}  {}",
            job["id"].as_str().unwrap_or(""),
            job["status"].as_str().unwrap_or(""),
            job["kind"].as_str().unwrap_or(""),
            protocol::amount::format_milli(job["reward"].as_u64().unwrap_or(0)),
            job["token"].as_str().unwrap_or(""),
            if job["quest"] == true { "quest" } else { "" },
            job["title"].as_str().unwrap_or(""),
        )?;
    }
    Ok(())
}

pub fn job(client: &Client, action: JobAction) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let submitted = |out: &mut std::io::StdoutLock<'_>, what: &str, answer: &serde_json::Value| {
        writeln!(out, "{what} {} submitted", answer["id"].as_str().unwrap_or(""))
    };
    match action {
        JobAction::Show { id: Some(id), .. } => print_job(&mut out, &client.get(&format!("/jobs/{id}"))?)?,
        JobAction::Show { id: None, status } => {
            let path = match status {
                Some(status) => format!("/jobs?status={status}"),
                None => "/jobs".to_owned(),
            };
            print_jobs(&mut out, &client.get(&path)?)?;
        }
        JobAction::Post {
            kind,
            title,
            text,
            reward,
            collateral,
            slash_ppm,
            rule,
            cell,
            skills,
            tier,
            evidence,
            bids_for,
            work_for,
        } => {
            let mut body = json!({
                "kind": kind, "title": title, "text": text, "reward": reward, "slash_ppm": slash_ppm, "rule": rule,
                "cell": cell, "skills": skills, "tier": tier, "bids_for_s": bids_for, "work_for_s": work_for,
            });
            if let Some(collateral) = collateral {
                body["collateral"] = json!(collateral);
            }
            if let Some(evidence) = evidence {
                body["evidence"] = serde_json::from_str(&evidence)
                    .map_err(|error| anyhow::anyhow!("--evidence is not JSON: {error}"))?;
            }
            submitted(&mut out, "job", &client.post("/jobs", &body)?)?;
        }
        JobAction::Bid { job, price, collateral, cell, distance_m } => {
            let mut body = json!({ "price": price, "cell": cell, "distance_m": distance_m });
            if let Some(collateral) = collateral {
                body["collateral"] = json!(collateral);
            }
            submitted(&mut out, "bid", &client.post(&format!("/jobs/{job}/bids"), &body)?)?;
        }
        JobAction::Award { job } => {
            submitted(&mut out, "award", &client.post(&format!("/jobs/{job}/award"), &json!({}))?)?;
        }
        JobAction::Deliver { job, proof, meter, reading } => {
            let mut body = json!({ "proof": proof });
            if let Some(meter) = meter {
                body["meter"] = json!(meter);
            }
            if let Some(reading) = reading {
                body["reading"] = json!(reading);
            }
            submitted(&mut out, "delivery", &client.post(&format!("/jobs/{job}/deliver"), &body)?)?;
        }
        JobAction::Complete { job, outcome } => {
            let answer = client.post(&format!("/jobs/{job}/verdict"), &json!({ "outcome": outcome }))?;
            submitted(&mut out, "verdict", &answer)?;
        }
        JobAction::Dispute { job, text } => {
            submitted(&mut out, "dispute", &client.post(&format!("/jobs/{job}/dispute"), &json!({ "text": text }))?)?;
        }
    }
    Ok(())
}

/// `kos asset ...`: an asset's manifest (its rated limits hold its meters' readings), through the running node.
#[derive(Debug, Subcommand)]
pub enum AssetAction {
    /// Register an asset, signed by the node; its meters' readings are then held to its limits.
    Register {
        /// meter, inverter, battery, community-storage, pod or other.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        purpose: String,
        /// The owning account or guild; default the node's account.
        #[arg(long)]
        owner: Option<String>,
        /// A meter of this node whose readings are the asset's (repeatable, up to 4): `main`.
        #[arg(long = "meter")]
        meters: Vec<String>,
        /// Rated limits, W (0: none).
        #[arg(long, default_value_t = 0)]
        generation_w: u64,
        #[arg(long, default_value_t = 0)]
        import_w: u64,
        #[arg(long, default_value_t = 0)]
        export_w: u64,
        #[arg(long, default_value_t = 0)]
        consumption_w: u64,
        #[arg(long, default_value_t = 0)]
        storage_w: u64,
        /// Storage capacity, Wh.
        #[arg(long, default_value_t = 0)]
        storage_wh: u64,
        /// Geohash cell.
        #[arg(long)]
        cell: Option<String>,
        /// Days between maintenance visits (0: none).
        #[arg(long, default_value_t = 0)]
        maintenance_days: u64,
        /// The device that signs its meters' readings: `ed25519:<hex>` (as `kos meter` shows a device key), or
        /// `p256:<hex>` for an OCMF meter (its published public key, e.g. a DER SubjectPublicKeyInfo).
        #[arg(long)]
        device_key: Option<String>,
    },
    /// An asset's manifest and the readings anchored for it.
    Show { id: String },
    /// Relay a signed OCMF record of a meter's device (a charger's, as it sent it) as the meter's reading: the
    /// asset binding the meter names the device's P-256 key.
    Ocmf {
        /// The meter whose reading it is: `charger-1`.
        #[arg(long)]
        meter: String,
        /// A file holding the record, `OCMF|{...}|{...}` (`-`: standard input). Surrounding whitespace is dropped.
        #[arg(long)]
        record: std::path::PathBuf,
        /// The reading's interval length, seconds.
        #[arg(long, default_value_t = 900)]
        interval_s: u32,
    },
}

pub fn asset(client: &Client, action: AssetAction) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match action {
        AssetAction::Register {
            kind,
            purpose,
            owner,
            meters,
            generation_w,
            import_w,
            export_w,
            consumption_w,
            storage_w,
            storage_wh,
            cell,
            maintenance_days,
            device_key,
        } => {
            let mut body = json!({
                "kind": kind, "purpose": purpose, "meters": meters,
                "limits": { "generation_w_max": generation_w, "import_w_max": import_w, "export_w_max": export_w,
                            "consumption_w_max": consumption_w, "storage_w_max": storage_w, "storage_wh": storage_wh },
                "maintenance_interval_s": maintenance_days.saturating_mul(86_400),
            });
            if let Some(owner) = owner {
                body["owner"] = json!(owner);
            }
            if let Some(cell) = cell {
                body["cell"] = json!(cell);
            }
            if let Some(device_key) = device_key {
                body["device_key"] = json!(device_key);
            }
            let answer = client.post("/assets", &body)?;
            writeln!(out, "asset {} submitted", answer["id"].as_str().unwrap_or(""))?;
        }
        AssetAction::Ocmf { meter, record, interval_s } => {
            let text = if record.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the OCMF record from standard input")?
            } else {
                std::fs::read_to_string(&record).with_context(|| format!("reading {}", record.display()))?
            };
            let body = json!({ "meter": meter, "record": text.trim(), "interval_s": interval_s });
            let answer = client.post("/readings/ocmf", &body)?;
            writeln!(out, "reading {} submitted", answer["id"].as_str().unwrap_or(""))?;
        }
        AssetAction::Show { id } => {
            let answer = client.get(&format!("/assets/{id}"))?;
            writeln!(
                out,
                "asset {id}: {} — {}",
                answer["kind"].as_str().unwrap_or(""),
                answer["purpose"].as_str().unwrap_or("")
            )?;
            writeln!(out, "  owner {}", answer["owner"].as_str().unwrap_or(""))?;
            writeln!(out, "  meters {}", answer["meters"])?;
            writeln!(out, "  limits {}", answer["limits"])?;
            if let Some(device_key) = answer["device_key"].as_str() {
                writeln!(out, "  readings signed by device {device_key}")?;
            }
            writeln!(out, "  readings anchored {}", answer["readings"])?;
            for alert in answer["alerts"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "  alert {} at height {}: measured {} against {}",
                    alert["rule"].as_str().unwrap_or(""),
                    alert["height"],
                    alert["measured"],
                    alert["threshold"]
                )?;
            }
            for report in answer["reports"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "  {} at height {}: {}",
                    report["severity"].as_str().unwrap_or(""),
                    report["height"],
                    report["text"].as_str().unwrap_or("")
                )?;
            }
            for intervention in answer["interventions"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "  override {} until height {}",
                    intervention["measure"].as_str().unwrap_or(""),
                    intervention["until_height"]
                )?;
            }
        }
    }
    Ok(())
}
