//! A real browser for the dashboard tests: Debian's `chromium`, headless, driven over the Chrome DevTools Protocol.
//! The page runs in real time (a live event stream never ends, so a dump after a virtual-time budget would not), and
//! the test reads what the page shows with `Runtime.evaluate`. The WebSocket client is the few lines CDP needs: a
//! handshake, masked text frames out, unmasked frames in.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::process::Process;

/// A headless Chromium showing one page.
pub struct Browser {
    _process: Process,
    _profile: tempfile::TempDir,
    /// `host:port` of the DevTools endpoint and the page's WebSocket path.
    address: String,
    path: String,
}

impl Browser {
    /// Starts Chromium on `url` and finds the page's DevTools target.
    pub fn open(url: &str) -> Result<Browser, String> {
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut command = Command::new("chromium");
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url);
        let process = Process::start(command).map_err(|e| format!("starting chromium: {e}"))?;
        let line = process
            .wait_for_line(Duration::from_secs(30), |line| line.contains("DevTools listening on ws://"))
            .ok_or_else(|| format!("chromium did not start its DevTools endpoint: {:?}", process.lines()))?;
        let address = line
            .split("ws://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| format!("no address in {line:?}"))?
            .to_owned();
        let mut path = None;
        for _ in 0..100 {
            let targets = targets(&address).map_err(|e| format!("listing chromium's targets: {e}"))?;
            path = targets.as_array().into_iter().flatten().find_map(|target| {
                let page = target["type"] == "page" && target["url"].as_str().is_some_and(|at| at.starts_with(url));
                let socket = target["webSocketDebuggerUrl"].as_str()?;
                page.then(|| socket.split_once(&address).map(|(_, path)| path.to_owned())).flatten()
            });
            if path.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let path = path.ok_or_else(|| format!("chromium shows no page at {url}"))?;
        Ok(Browser { _process: process, _profile: profile, address, path })
    }

    /// Evaluates a JavaScript expression in the page; returns its value (JSON).
    pub fn evaluate(&self, expression: &str) -> Result<serde_json::Value, String> {
        let mut stream = TcpStream::connect(&self.address).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
        write!(
            stream,
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: a29zIGRhc2hib2FyZCB0ZXN0\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.path, self.address
        )
        .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut status = String::new();
        reader.read_line(&mut status).map_err(|e| e.to_string())?;
        if !status.contains(" 101 ") {
            return Err(format!("the DevTools endpoint refused the WebSocket: {status}"));
        }
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let request = serde_json::json!({
            "id": 1,
            "method": "Runtime.evaluate",
            "params": { "expression": expression, "returnByValue": true, "awaitPromise": true },
        });
        send_text(&mut stream, request.to_string().as_bytes()).map_err(|e| e.to_string())?;
        loop {
            let message = read_message(&mut reader).map_err(|e| e.to_string())?;
            let value: serde_json::Value = serde_json::from_slice(&message).map_err(|e| e.to_string())?;
            if value["id"] == 1 {
                if let Some(exception) = value["result"].get("exceptionDetails") {
                    return Err(format!("the page threw: {exception}"));
                }
                return Ok(value["result"]["result"]["value"].clone());
            }
        }
    }
}

/// GET `/json/list` of the DevTools endpoint (which keeps the connection open: read by Content-Length).
fn targets(address: &str) -> std::io::Result<serde_json::Value> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /json/list HTTP/1.1\r\nHost: {address}\r\n\r\n")?;
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(std::io::Error::other)?;
        }
    }
    let mut body = vec![0u8; length];
    std::io::Read::read_exact(&mut reader, &mut body)?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

/// Sends one masked text frame (clients must mask).
fn send_text(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    let mask = [0x6b, 0x6f, 0x73, 0x21];
    let mut frame = vec![0x81];
    match payload.len() {
        len if len < 126 => frame.push(0x80 | u8::try_from(len).unwrap_or(0)),
        len if len < 65_536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&u16::try_from(len).unwrap_or(0).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    stream.write_all(&frame)
}

/// Reads one whole message (text frames and their continuations; control frames are skipped).
fn read_message(reader: &mut impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut message = Vec::new();
    loop {
        let mut head = [0u8; 2];
        reader.read_exact(&mut head)?;
        let (fin, opcode, masked) = (head[0] & 0x80 != 0, head[0] & 0x0f, head[1] & 0x80 != 0);
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut bytes = [0u8; 2];
            reader.read_exact(&mut bytes)?;
            len = u64::from(u16::from_be_bytes(bytes));
        } else if len == 127 {
            let mut bytes = [0u8; 8];
            reader.read_exact(&mut bytes)?;
            len = u64::from_be_bytes(bytes);
        }
        let mut mask = [0u8; 4];
        if masked {
            reader.read_exact(&mut mask)?;
        }
        let mut payload = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
        reader.read_exact(&mut payload)?;
        if masked {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
        }
        match opcode {
            0x8 => return Err(std::io::Error::other("the DevTools endpoint closed the WebSocket")),
            0x9 | 0xa => continue,
            _ => message.extend_from_slice(&payload),
        }
        if fin {
            return Ok(message);
        }
    }
}
