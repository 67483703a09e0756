//! The `aegis-proxy` binary: validate, cert, signals, and streaming in bounded memory.

use std::net::SocketAddr;
use std::process::{Child, Command};

mod support;

use support::process::*;

#[test]
fn validate_prints_every_error_with_key_and_line_and_exits_2() {
    let dir = temp_dir("validate");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        r#"[admin]
listen = "127.0.0.1:9901"

[[listeners]]
name = "public"
listen = "0.0.0.0:8443"
tls = { cert = "certs/server.pem", key = "certs/server.key", pq_only = false }

[[routes]]
host = "*"
path_prefix = "/"
cluster = "api"

[clusters.api]
lb = "least_request"
endpoints = [
  "127.0.0.1:9000",
  "10.0.0.1",
]
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let p = path.display();
    let d = dir.display();
    let expected = [
        format!("{p}: listeners[0].tls.cert, line 7: cannot read {d}/certs/server.pem: I/O error: No such file or directory (os error 2)"),
        format!("{p}: listeners[0].tls.key, line 7: cannot read {d}/certs/server.key: I/O error: No such file or directory (os error 2)"),
        format!("{p}: clusters.api.endpoints[1], line 18: \"10.0.0.1\" has no port"),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn cert_then_validate_then_run_until_sigterm() {
    let dir = temp_dir("cert");
    let out = Command::new(BIN)
        .args(["cert", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("ok.toml");
    std::fs::write(
        &path,
        r#"[[listeners]]
name = "public"
listen = "127.0.0.1:0"
tls = { cert = "server.pem", key = "server.key" }

[[routes]]
cluster = "api"

[clusters.api]
endpoints = ["127.0.0.1:9"]
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (mut child, _) = spawn(&["run", "--config", path.to_str().unwrap()]);
    terminate(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn run_refuses_a_broken_config_before_binding() {
    let dir = temp_dir("broken");
    let path = dir.join("broken.toml");
    std::fs::write(
        &path,
        "[[listeners]]\nname = \"x\"\nlisten = \"127.0.0.1:0\"\nbogus = 1\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("listeners[0].bogus, line 4: unknown key `bogus`"),
        "{stderr}"
    );
}

/// A port in use: the error names the key of the address and gives the OS error once.
#[test]
fn run_names_the_key_it_cannot_bind_and_the_os_error_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = temp_dir("taken");
    let path = dir.join("taken.toml");
    let listener = format!(
        "[[listeners]]\nname = \"x\"\nlisten = \"127.0.0.1:{port}\"\n\
         [[routes]]\ncluster = \"c\"\n[clusters.c]\nendpoints = [\"127.0.0.1:9\"]\n"
    );
    let admin = format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\n{}",
        listener.replace(&format!(":{port}\""), ":0\"")
    );
    for (text, named) in [
        (
            listener,
            format!("cannot bind listeners[0].listen = \"127.0.0.1:{port}\" (listener x): "),
        ),
        (
            admin,
            format!("cannot bind admin.listen = \"127.0.0.1:{port}\" (admin): "),
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(&named), "{stderr}");
        assert_eq!(
            stderr.matches("Address already in use").count(),
            1,
            "{stderr}"
        );
    }
    drop(taken);
}

#[test]
fn sighup_reloads_and_a_bad_file_is_logged_and_ignored() {
    let dir = temp_dir("sighup");
    let path = dir.join("aegis.toml");
    let good = "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\
                [[routes]]\ncluster = \"api\"\n[clusters.api]\nendpoints = [\"127.0.0.1:9\"]\n";
    std::fs::write(&path, good).unwrap();
    let (mut child, _, log) = spawn_with_log(&["run", "--config", path.to_str().unwrap()]);
    let hangup = |child: &Child| {
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // Every line up to and including the first that contains `needle`.
    let wait_for = |needle: &str| {
        let mut lines = Vec::new();
        loop {
            let line = log.recv().expect("proxy exited");
            lines.push(line.clone());
            if line.contains(needle) {
                return (line, lines);
            }
        }
    };

    std::fs::write(&path, good.replace("127.0.0.1:9", "127.0.0.1:10")).unwrap();
    hangup(&child);
    let (line, _) = wait_for("configuration reloaded");
    // A readable summary, not Rust Debug output.
    assert!(
        line.contains("listeners added: none; removed: none; updated: public; 1 cluster"),
        "{line}"
    );

    std::fs::write(&path, good.replace("127.0.0.1:9", "127.0.0.1")).unwrap();
    hangup(&child);
    let (line, before) = wait_for("SIGHUP");
    // The good reload logged once: nothing more about it came before the next reload's lines.
    assert!(!before.iter().any(|l| l.contains("reloaded")), "{before:?}");
    assert!(line.contains("reload rejected"), "{line}");
    assert!(
        line.contains("clusters.api.endpoints[0], line 7: \"127.0.0.1\" has no port"),
        "{line}"
    );
    terminate(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Out of file descriptors, the data-plane and admin accept loops wait instead of spinning on
/// EMFILE, and serve the waiting clients once descriptors are free again.
#[test]
fn accept_loops_back_off_when_file_descriptors_run_out() {
    let dir = temp_dir("emfile");
    let path = dir.join("aegis.toml");
    std::fs::write(
        &path,
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"public\"\n\
         listen = \"127.0.0.1:0\"\nheader_read_timeout_ms = 600000\nidle_timeout_ms = 600000\n\n\
         [[routes]]\ncluster = \"api\"\n\n[clusters.api]\nendpoints = [\"127.0.0.1:9\"]\n",
    )
    .unwrap();
    let config = path.display().to_string();
    let limited = format!("ulimit -n 48 && exec {BIN} run --config {config}");
    let (child, addr, log) = spawn_command(Command::new("sh").args(["-c", &limited]));
    let admin: SocketAddr = log
        .iter()
        .find_map(|line| {
            let rest = line.split("admin listening addr=").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .expect("admin address logged");
    // More connections than descriptors: the rest wait in the backlog, accept fails.
    let held: Vec<_> = (0..64)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let out_of_files = log
        .iter()
        .find(|line| line.contains("accept failed") && line.contains("os error 24"));
    assert!(
        out_of_files.is_some(),
        "the data plane ran out of descriptors"
    );
    let mut waiting = std::net::TcpStream::connect(admin).unwrap();
    use std::io::{Read, Write};
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    let before = cpu_ticks(child.id());
    // A measurement window, not synchronisation: how busy is the proxy while it cannot accept?
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let busy = cpu_ticks(child.id()) - before;
    // 100 ticks per second: a spinning loop takes ~100, backing off a handful.
    assert!(
        busy < 30,
        "{busy} ticks of CPU in one second while out of descriptors"
    );
    drop(held);
    let mut answer = String::new();
    waiting.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Upload and download `AEGIS_STREAM_MIB` (default 1024) MiB each through the proxy binary;
/// its peak RSS must stay under 64 MiB.
#[test]
fn large_bodies_stream_in_bounded_memory() {
    let mib: u64 = std::env::var("AEGIS_STREAM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let origin = runtime
        .block_on(aegis_proxy::demo::spawn_origin("bulk"))
        .unwrap();
    let (mut child, addr) = spawn(&[
        "reverse-proxy",
        "--from",
        "127.0.0.1:0",
        "--to",
        &origin.to_string(),
    ]);
    let total = mib * 1024 * 1024;
    let (up, down) = runtime.block_on(async {
        let up = stream_upload(addr, total).await;
        let down = stream_download(addr, total).await;
        (up, down)
    });
    assert_eq!((up, down), (total, total));
    let peak_mib = peak_rss_kib(child.id()) / 1024;
    eprintln!("proxy peak RSS: {peak_mib} MiB after {mib} MiB each way");
    terminate(&child);
    child.wait().unwrap();
    assert!(
        peak_mib < 64,
        "proxy peak RSS {peak_mib} MiB for {mib} MiB each way"
    );
}

/// POSTs `total` zero bytes to the echo origin and counts what comes back.
async fn stream_upload(addr: SocketAddr, total: u64) -> u64 {
    use http_body_util::BodyExt;
    let chunk = bytes::Bytes::from(vec![0u8; 256 * 1024]);
    let frames = (0..total / chunk.len() as u64)
        .map(move |_| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone())));
    let body = http_body_util::StreamBody::new(IterStream(frames));
    let request = http::Request::post("/echo")
        .header("host", "bulk")
        .body(body)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
        }
    }
    received
}

async fn stream_download(addr: SocketAddr, total: u64) -> u64 {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(format!("/bytes/{total}"))
        .header("host", "bulk")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
        }
    }
    received
}

struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// The check command the example's first lines give passes as written, run from the
/// repository root (a copy: `examples/aegis.toml` and whatever the command creates).
#[test]
fn the_example_config_validates_with_its_own_check_command() {
    let dir = temp_dir("example");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/aegis.toml");
    let text = std::fs::read_to_string(example).unwrap();
    std::fs::create_dir_all(dir.join("examples")).unwrap();
    std::fs::write(dir.join("examples/aegis.toml"), &text).unwrap();
    let check = text
        .lines()
        .find_map(|line| line.strip_prefix("#   aegis-proxy "))
        .expect("the example names its check command");
    for command in format!("aegis-proxy {check}").split("&&") {
        let args: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(args[0], "aegis-proxy", "{command}");
        let out = Command::new(BIN)
            .args(&args[1..])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A two-hour trace of zones DE and NO in `dir`.
fn two_zone_trace(dir: &std::path::Path) -> std::path::PathBuf {
    let trace = dir.join("trace.csv");
    std::fs::write(
        &trace,
        "datetime_utc,DE,NO\n2023-01-01T00:00:00Z,400,40\n2023-01-01T01:00:00Z,380,45\n",
    )
    .unwrap();
    trace
}

/// A budget or cap the policy cannot use is a usage error naming the flag, never a panic
/// (`--latency-budget-ms NaN` and `=-1` used to exit 101 from inside `decide`).
#[test]
fn simulate_refuses_budgets_and_caps_it_cannot_use() {
    let dir = temp_dir("simulate-args");
    let trace = two_zone_trace(&dir);
    for (flag, value) in [
        ("--latency-budget-ms", "NaN"),
        ("--latency-budget-ms", "-1"),
        ("--latency-budget-ms", "inf"),
        ("--max-share", "0"),
        ("--max-share", "2"),
        ("--max-share", "NaN"),
    ] {
        let out = Command::new(BIN)
            .args(["simulate", "--trace"])
            .arg(&trace)
            .args(["--regions", "DE=1,NO=33"])
            .arg(format!("{flag}={value}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

#[test]
fn simulate_prints_one_row_per_policy_and_rejects_unknown_zones() {
    let dir = temp_dir("simulate");
    let trace = two_zone_trace(&dir);
    let out = Command::new(BIN)
        .args(["simulate", "--trace"])
        .arg(&trace)
        .args(["--regions", "DE=1,NO=33", "--policy", "nearest,greenest"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| policy"))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[1].starts_with("| greenest | 0.0021 |"), "{table}");

    let out = Command::new(BIN)
        .args(["simulate", "--trace"])
        .arg(&trace)
        .args(["--regions", "FR=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap().trim(),
        "error: --regions: zone \"FR\" is not in the trace (it has DE, NO)"
    );
}

/// The demo's CA and keys are throwaway: after SIGTERM the folder it printed is gone.
#[test]
fn demo_removes_its_keys_on_exit() {
    let (mut child, _, lines) =
        spawn_with_log(&["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let dir = std::env::temp_dir().join(format!("aegis-demo-{}", child.id()));
    // The instructions name the CA in that folder once everything is up.
    let ca = dir.join("ca.pem").display().to_string();
    let printed = lines.iter().find(|line| line.contains(&ca));
    assert!(printed.is_some(), "no instructions naming {ca}");
    assert!(dir.join("server.key").exists());
    terminate(&child);
    assert!(child.wait().unwrap().success());
    assert!(!dir.exists(), "{} left behind", dir.display());
}
