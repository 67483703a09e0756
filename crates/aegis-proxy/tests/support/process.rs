//! The `aegis-proxy` binary as a child process: start it, read its log, stop it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_aegis-proxy");

/// A fresh folder under the system's temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("aegis-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child process that a failing assertion does not leave running: dropped, it is killed
/// (if it has not exited) and reaped.
pub struct KillOnDrop(Child);

impl KillOnDrop {
    /// Guards `child`.
    pub fn new(child: Child) -> Self {
        Self(child)
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // A child already reaped by `wait` is not signalled again (std keeps its status).
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and waits for its first `listening` line; returns it, the address and
/// every later stderr line.
pub fn spawn_with_log(
    args: &[&str],
) -> (KillOnDrop, SocketAddr, std::sync::mpsc::Receiver<String>) {
    spawn_command(Command::new(BIN).args(args))
}

/// Like [`spawn_with_log`], for any command that ends up running the binary.
pub fn spawn_command(
    command: &mut Command,
) -> (KillOnDrop, SocketAddr, std::sync::mpsc::Receiver<String>) {
    if !command.get_envs().any(|(k, _)| k == "RUST_LOG") {
        command.env("RUST_LOG", "info");
    }
    let mut child = KillOnDrop(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (send, receive) = std::sync::mpsc::channel();
    // The lines up to the address are passed on too: tests read the startup lines.
    let addr = loop {
        let line = lines
            .next()
            .expect("proxy exited before listening")
            .unwrap();
        let addr = line_addr(&line);
        let _ = send.send(line);
        if let Some(addr) = addr {
            break addr;
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    (child, addr, receive)
}

/// The `addr=` of a text or JSON log line.
pub fn line_addr(line: &str) -> Option<SocketAddr> {
    let rest = line
        .split("addr=")
        .nth(1)
        .or_else(|| line.split("\"addr\":\"").nth(1))?;
    rest.split([' ', '"']).next()?.parse().ok()
}

/// Starts the binary and waits for its first `listening` line; returns it and the address.
pub fn spawn(args: &[&str]) -> (KillOnDrop, SocketAddr) {
    // The dropped receiver is fine: the reader thread keeps draining stderr regardless.
    let (child, addr, _) = spawn_with_log(args);
    (child, addr)
}

pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
