//! Real `kos run` processes: clean shutdown on signals, joining through a bootnode, mDNS discovery.

use std::process::Command;
use std::time::Duration;

use kos_tests::process::{Process, kos_binary};

const STARTUP: Duration = Duration::from_secs(20);

fn keys(dir: &std::path::Path) -> String {
    keys_at(dir, &dir.join("node.key"))
}

fn keys_at(dir: &std::path::Path, key_file: &std::path::Path) -> String {
    let output = Command::new(kos_binary())
        .arg("--data-dir")
        .arg(dir)
        .arg("--key-file")
        .arg(key_file)
        .args(["keys", "generate"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines().find_map(|line| line.strip_prefix("peer id:")).unwrap().trim().to_owned()
}

fn run(dir: &std::path::Path, extra: &[&str]) -> Process {
    let mut args =
        vec!["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "false", "--log", "info", "--api", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Process::kos(&kos_binary(), dir, &args).unwrap()
}

#[test]
fn kos_run_stops_cleanly_on_sigterm_and_sigint() {
    // Signalled at its first line: a node still starting (ledger, API, subscriptions) stops cleanly too. Three
    // times each, since the window this guards was a few milliseconds wide.
    for signal in ["TERM", "INT", "TERM", "INT", "TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        keys(dir.path());
        let mut node = run(dir.path(), &[]);
        assert!(node.wait_for_line(STARTUP, |_| true).is_some(), "{:?}", node.lines());
        node.signal(signal).unwrap();
        let status = node.wait(Duration::from_secs(10)).expect("the node did not stop");
        assert!(status.success(), "exit status {status:?}: {:?}", node.lines());
        assert!(node.lines().iter().any(|line| line.contains(&format!("signal=\"SIG{signal}\""))));
        assert!(node.lines().iter().any(|line| line.contains("kos node stopped")));
    }
}

/// Issue 28, item 7: a node runs without transparent huge pages. With them, every corner of mimalloc's 2 MiB-aligned
/// arenas the node touched became a 2 MiB page: half of a home's memory (BENCHMARKS.md).
#[cfg(target_os = "linux")]
#[test]
fn kos_run_keeps_transparent_huge_pages_off() {
    // (The flag is inherited: under a parent that has them off already, this holds without kos's doing.)
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let node = run(dir.path(), &[]);
    assert!(node.wait_for_line(STARTUP, |_| true).is_some(), "{:?}", node.lines());
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.id())).unwrap();
    let thp = status.lines().find_map(|line| line.strip_prefix("THP_enabled:")).map(str::trim);
    node.signal("TERM").unwrap();
    assert_eq!(thp, Some("0"), "{status}");
}

/// Issue 28, item 7: RocksDB's C++ allocates through mimalloc, as kos's Rust does (mimalloc's `override`): the kos
/// binary defines `malloc` and `free`, which RocksDB (linked in; C++'s `operator new` calls `malloc`) then uses.
/// Before, RocksDB's allocations went to glibc's per-thread arenas, which held some 6 MB free in a devnet home
/// (BENCHMARKS.md, *A home's memory*).
#[cfg(target_os = "linux")]
#[test]
fn the_kos_binary_allocates_rocksdbs_memory_through_mimalloc() {
    let output = Command::new("nm").args(["--dynamic", "--defined-only"]).arg(kos_binary()).output().expect("nm");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let symbols = String::from_utf8_lossy(&output.stdout);
    for symbol in ["malloc", "free", "posix_memalign"] {
        assert!(
            symbols.lines().any(|line| line.split_whitespace().skip(1).eq(["T", symbol])),
            "the kos binary does not define {symbol}"
        );
    }
}

#[test]
fn kos_run_refuses_a_bad_config_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    std::fs::write(dir.path().join("config.toml"), "[p2p]\nlisten = [\"tcp:7070\"]\n").unwrap();
    let output = Command::new(kos_binary()).arg("--data-dir").arg(dir.path()).arg("run").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("p2p.listen") && stderr.contains("tcp:7070"), "{stderr}");
}

#[test]
fn two_processes_connect_through_a_bootnode_given_in_the_config_file() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a_peer = keys(a_dir.path());
    // b's key lives outside its data directory, named by the config file.
    let b_key = b_dir.path().join("keys").join("home.key");
    let b_peer = keys_at(b_dir.path(), &b_key);
    let a = run(a_dir.path(), &[]);
    let address = a.wait_for_field(STARTUP, "listening", "address").expect("a's listen address");
    std::fs::write(
        b_dir.path().join("config.toml"),
        format!(
            "network = \"kos-devnet\"\nkey_file = \"{}\"\n[p2p]\nmdns = false\nbootnodes = [\"{address}/p2p/{a_peer}\"]\n",
            b_key.display()
        ),
    )
    .unwrap();
    let b = run(b_dir.path(), &[]);
    assert!(
        a.wait_for_line(STARTUP, |line| line.contains("connected") && line.contains(&b_peer)).is_some(),
        "{:?}",
        a.lines()
    );
    assert!(
        b.wait_for_line(STARTUP, |line| line.contains("connected") && line.contains(&a_peer)).is_some(),
        "{:?}",
        b.lines()
    );
}

/// Two nodes find each other by mDNS alone. Everything stays inside a private network namespace (`unshare --net`)
/// holding a veth pair, one end per node (mDNS ignores loopback), so nothing reaches the machine's real network.
#[test]
fn two_processes_find_each_other_by_mdns_in_a_private_network_namespace() {
    let usable = Command::new("unshare").args(["--net", "true"]).status().is_ok_and(|status| status.success());
    if !usable {
        assert!(std::env::var_os("CI").is_none(), "CI must be able to create a network namespace (unshare --net)");
        eprintln!("skipped: this user cannot create a network namespace (unshare --net)");
        return;
    }
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a_peer, b_peer) = (keys(a_dir.path()), keys(b_dir.path()));
    let kos = kos_binary();
    let node = |dir: &std::path::Path, ip: &str| {
        format!(
            "timeout --foreground 60 {} --data-dir {} run --listen /ip4/{ip}/tcp/0 --mdns true --api '' --log info,libp2p_mdns=debug",
            kos.display(),
            dir.display()
        )
    };
    let script = format!(
        "ip link set lo up && ip link add kos0 type veth peer name kos1 && ip link set kos0 up && ip link set kos1 up \
         && ip addr add 10.99.0.1/24 dev kos0 && ip addr add 10.99.0.2/24 dev kos1 && {{ {} & {} & wait; }}",
        node(a_dir.path(), "10.99.0.1"),
        node(b_dir.path(), "10.99.0.2")
    );
    let mut command = Command::new("unshare");
    command.args(["--net", "--kill-child", "sh", "-c", &script]);
    let both = Process::start(command).unwrap();
    let found =
        both.wait_for_line(Duration::from_secs(30), |line| line.contains("connected") && line.contains(&b_peer));
    assert!(found.is_some(), "{:#?}", both.lines());
    let found =
        both.wait_for_line(Duration::from_secs(10), |line| line.contains("connected") && line.contains(&a_peer));
    assert!(found.is_some(), "{:#?}", both.lines());
}
