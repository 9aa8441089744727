//! A `kos` process under test: its stderr log is collected line by line so a test can wait for what it says.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A running process whose output lines (stdout and stderr) are collected.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `command` with stdout and stderr captured, in a process group of its own; the whole group is killed
    /// when this value is dropped.
    pub fn start(mut command: Command) -> std::io::Result<Process> {
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null()).env("NO_COLOR", "1");
        let mut child = command.spawn()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().map(|stream| Box::new(stream) as Box<dyn std::io::Read + Send>);
        let stderr = child.stderr.take().map(|stream| Box::new(stream) as Box<dyn std::io::Read + Send>);
        for stream in [stdout, stderr].into_iter().flatten() {
            let lines = lines.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut lines) = lines.lock() {
                        lines.push(line);
                    }
                }
            });
        }
        Ok(Process { child, lines })
    }

    /// Starts the `kos` binary at `kos` with a data directory and arguments.
    pub fn kos(kos: &Path, data_dir: &Path, args: &[&str]) -> std::io::Result<Process> {
        Process::kos_with_env(kos, data_dir, args, &[])
    }

    /// [`Process::kos`] with environment variables set.
    pub fn kos_with_env(kos: &Path, data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::io::Result<Process> {
        let mut command = Command::new(kos);
        command.arg("--data-dir").arg(data_dir).args(args).env_remove("KOS_KEY_FILE").env_remove("RUST_LOG");
        command.envs(env.iter().copied());
        Process::start(command)
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|lines| lines.clone()).unwrap_or_default()
    }

    /// Waits for a line matching `predicate`, for at most `timeout`; returns it.
    pub fn wait_for_line(&self, timeout: Duration, predicate: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|line| predicate(line)) {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The value of `key=value` in the first line containing `message`, waiting up to `timeout`.
    pub fn wait_for_field(&self, timeout: Duration, message: &str, key: &str) -> Option<String> {
        let pattern = format!("{key}=");
        let line = self.wait_for_line(timeout, |line| line.contains(message) && line.contains(&pattern))?;
        let start = line.find(&pattern)? + pattern.len();
        line[start..].split_whitespace().next().map(|value| value.trim_matches('"').to_owned())
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) to the process.
    pub fn signal(&self, name: &str) -> std::io::Result<()> {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status()?;
        if status.success() { Ok(()) } else { Err(std::io::Error::other(format!("kill -{name} failed"))) }
    }

    /// Waits for the process to exit, for at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut latest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() { newest(&path) } else { entry.metadata().and_then(|m| m.modified()).ok() };
        latest = latest.max(time);
    }
    latest
}

/// The `kos` binary of this workspace. `cargo test --workspace` (the README's test command) builds it along with
/// the tests; when it is missing or older than any source file (a partial `cargo test -p kos-tests`), it is built
/// here first.
pub fn kos_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // target/debug/deps/<test binary> -> target/debug/kos
            let exe = std::env::current_exe().unwrap_or_default();
            let binary = exe.parent().and_then(Path::parent).map(|dir| dir.join("kos")).unwrap_or_default();
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let sources = ["node", "protocol", "ledger", "market", "energy"]
                .iter()
                .filter_map(|krate| newest(&root.join(krate).join("src")))
                .max();
            let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
            if built.is_none() || built < sources {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let status = Command::new(cargo)
                    .args(["build", "--quiet", "-p", "kos", "--bin", "kos"])
                    .current_dir(&root)
                    .status();
                assert!(matches!(status, Ok(status) if status.success()), "building kos failed: {status:?}");
            }
            binary
        })
        .clone()
}
