//! What an SRE reads during an incident, from the binary as it runs: the startup lines, the
//! filter, debug lines for each attempt, upstream errors that say what happened, and access-log
//! lines with the query, user agent, request id and byte counts, in a file logrotate can move.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use support::process::*;

/// Every line up to and including the first that contains `needle`.
fn until(log: &Receiver<String>, needle: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = log
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no {needle:?} after {lines:#?}"));
        let found = line.contains(needle);
        lines.push(line);
        if found {
            return lines;
        }
    }
}

/// One HTTP/1.1 request over a fresh connection; the whole answer.
fn get(addr: SocketAddr, head: &str) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    out
}

/// A TCP origin that answers each connection's first bytes with `reply`, then reads until the
/// proxy closes (so that the proxy reads the reply before it sees the end); with `every`, it
/// answers every read (one small request each) the same way.
fn raw_origin(reply: &'static [u8], every: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(reply);
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                    if every {
                        let _ = stream.write_all(reply);
                    }
                }
            });
        }
    });
    addr
}

fn write_config(name: &str, text: &str) -> String {
    let dir = temp_dir(name);
    let path = dir.join("aegis.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn startup_names_version_config_addresses_and_groups_in_text_and_json() {
    let dir = temp_dir("startup");
    aegis_proxy::demo::write_certs(&dir).unwrap();
    let path = dir.join("aegis.toml");
    std::fs::write(
        &path,
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\n\
         tls = { cert = \"server.pem\", key = \"server.key\" }\nprotocols = [\"http/1.1\", \"h2\", \"h3\"]\n\n\
         [[routes]]\ncluster = \"api\"\n\n[clusters.api]\nendpoints = [\"127.0.0.1:9\"]\n",
    )
    .unwrap();
    let config = path.display().to_string();
    for json in [false, true] {
        let mut command = Command::new(BIN);
        if json {
            command.args(["--log-format", "json"]);
        }
        let (child, addr, log) = spawn_command(command.args(["run", "--config", &config]));
        let lines = until(&log, "admin listening");
        terminate(&child);
        let text = lines.join("\n");
        for needle in [
            "starting",
            env!("CARGO_PKG_VERSION"),
            config.as_str(),
            "X25519MLKEM768,X25519,secp256r1",
            "http/1.1,h2,h3",
        ] {
            assert!(
                text.contains(needle),
                "json={json}: no {needle:?} in\n{text}"
            );
        }
        let udp = lines
            .iter()
            .any(|l| l.contains("udp") && l.contains(&addr.to_string()));
        assert!(udp, "json={json}: no UDP address line in\n{text}");
        if json {
            for line in &lines {
                let parsed: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(parsed["level"].is_string(), "{line}");
            }
        }
    }
}

#[test]
fn an_invalid_log_filter_is_an_error() {
    let out = Command::new(BIN)
        .env("RUST_LOG", "aegis=verbose")
        .args(["validate", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: RUST_LOG=\"aegis=verbose\" is not a valid filter"),
        "{stderr}"
    );
}

/// RUST_LOG=debug shows each attempt's route, cluster and endpoint on the fast path and the
/// general path; upstream errors say what went wrong in words an operator can act on.
#[test]
fn debug_lines_and_upstream_errors_say_what_happened() {
    // An HTTP/2-only origin: its first bytes are a SETTINGS frame (RFC 9113 §3.4).
    let h2_only = raw_origin(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", false);
    // An HTTP/1.1-only origin behind a cluster that speaks HTTP/2 to it.
    let h1_only = raw_origin(
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
        false,
    );
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = write_config(
        "upstream-errors",
        &format!(
            "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
             [[routes]]\npath_prefix = \"/h2\"\ncluster = \"h2\"\n\n\
             [[routes]]\npath_prefix = \"/refused\"\ncluster = \"refused\"\n\n\
             [[routes]]\ncluster = \"h1\"\n\n\
             [clusters.h1]\nendpoints = [\"{h2_only}\"]\n\n\
             [clusters.h2]\nprotocol = \"http2\"\nendpoints = [\"{h1_only}\"]\n\n\
             [clusters.refused]\nendpoints = [\"{refused}\"]\n\
             health_check = {{ path = \"/\", interval_ms = 200, timeout_ms = 100, unhealthy_threshold = 1 }}\n"
        ),
    );
    let (child, addr, log) = spawn_command(
        Command::new(BIN)
            .env("RUST_LOG", "info,aegis_proxy=debug")
            .args(["run", "--config", &config]),
    );
    let health = until(&log, "endpoint failed its health checks")
        .pop()
        .unwrap();
    assert!(
        health.contains(&format!(
            "cannot connect to {refused}: Connection refused (os error 111)"
        )),
        "{health}"
    );
    get(
        addr,
        "GET /fast HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    );
    let lines = until(&log, "upstream failure");
    let attempt = lines
        .iter()
        .find(|l| l.contains("upstream attempt"))
        .unwrap();
    for field in [
        "route=\"routes[2]\"",
        "cluster=h1",
        &format!("endpoint={h2_only}"),
        "attempt=1",
    ] {
        assert!(attempt.contains(field), "no {field} in {attempt}");
    }
    let failure = lines.last().unwrap();
    assert!(
        failure.contains("answered with an HTTP/2 frame (HTTP/2 required?"),
        "{failure}"
    );

    // The general path (a header that Connection names) takes the same decisions.
    get(
        addr,
        "GET /general HTTP/1.1\r\nhost: a\r\nconnection: close, x-a\r\nx-a: 1\r\n\r\n",
    );
    let lines = until(&log, "upstream failure");
    assert!(lines
        .iter()
        .any(|l| l.contains("upstream attempt") && l.contains("protocol=\"http/1.1\"")));
    assert!(lines
        .last()
        .unwrap()
        .contains("answered with an HTTP/2 frame"));

    get(
        addr,
        "GET /h2 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    );
    let failure = until(&log, "upstream failure").pop().unwrap();
    // Which of the two hints depends on whether HTTP/2 read the answer before the close.
    assert!(failure.contains("protocol = \"http2\""), "{failure}");
    assert!(!failure.contains("client error (SendRequest)"), "{failure}");
    terminate(&child);
}

#[test]
fn access_log_lines_carry_query_agent_request_id_and_bytes_in_a_rotatable_file() {
    let origin = raw_origin(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", true);
    let dir = temp_dir("access-file");
    let file = dir.join("access.log");
    let config = dir.join("aegis.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\naccess_log_file = \"access.log\"\naccess_log_query = \"redacted\"\n\n\
             [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
             [[routes]]\ncluster = \"api\"\n\n[clusters.api]\nendpoints = [\"{origin}\"]\n"
        ),
    )
    .unwrap();
    let (child, addr, log) = spawn_with_log(&["run", "--config", config.to_str().unwrap()]);
    let request = |path: &str, extra: &str| {
        let answer = get(
            addr,
            &format!(
                "POST {path} HTTP/1.1\r\nhost: a\r\nuser-agent: probe/1.0\r\nx-request-id: req-7\r\n\
                 content-length: 3\r\n{extra}connection: close\r\n\r\nabc"
            ),
        );
        assert!(answer.ends_with("hello"), "{answer}");
    };
    // The fast path, then the general path.
    request("/a?token=s3cret&page=2", "");
    request("/b?token=s3cret", "connection: x-a\r\nx-a: 1\r\n");
    let lines = wait_lines(&file, 2);
    for (line, path, query) in [
        (&lines[0], "/a", "token=REDACTED&page=REDACTED"),
        (&lines[1], "/b", "token=REDACTED"),
    ] {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["path"], path, "{line}");
        assert_eq!(entry["query"], query, "{line}");
        assert_eq!(entry["user_agent"], "probe/1.0", "{line}");
        assert_eq!(entry["request_id"], "req-7", "{line}");
        assert_eq!(entry["bytes_received"], 3, "{line}");
        assert_eq!(entry["bytes_sent"], 5, "{line}");
        // Rounded to the microsecond.
        let ms = entry["duration_ms"].as_f64().unwrap();
        assert_eq!((ms * 1000.0).round() / 1000.0, ms, "{line}");
        assert!(!line.contains("s3cret"), "{line}");
    }
    // logrotate: move the file, send SIGUSR1, and the next line goes to a new file.
    std::fs::rename(&file, dir.join("access.log.1")).unwrap();
    let status = Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until(&log, "access log reopened");
    request("/c", "");
    let fresh = wait_lines(&file, 1);
    assert!(fresh[0].contains("\"path\":\"/c\""), "{fresh:?}");
    // Without X-Request-Id, on either path, the line gets a fresh id (as nginx's $request_id).
    get(
        addr,
        "GET /d HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    );
    get(
        addr,
        "GET /e HTTP/1.1\r\nhost: a\r\nconnection: close, x-a\r\nx-a: 1\r\n\r\n",
    );
    let fresh = wait_lines(&file, 3);
    let ids: Vec<String> = fresh[1..]
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].to_string())
        .collect();
    for id in &ids {
        let id = id.trim_matches('"');
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{ids:?}"
        );
    }
    assert_ne!(ids[0], ids[1]);
    assert_eq!(
        std::fs::read_to_string(dir.join("access.log.1"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    terminate(&child);
}

/// The file's first `n` lines, once it has them (the proxy writes each line whole).
fn wait_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    for _ in 0..2000 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{} has fewer than {n} lines", path.display());
}

/// A log reader that goes away (a closed stderr and stdout) costs the log lines, never the
/// service: every request after it is still answered.
#[test]
fn closed_log_pipes_do_not_stop_the_proxy() {
    use std::io::BufRead;
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = write_config(
        "closed-stderr",
        &format!(
            "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
             [[routes]]\ncluster = \"api\"\n\n[clusters.api]\nendpoints = [\"{refused}\"]\n"
        ),
    );
    let mut child = KillOnDrop::new(
        Command::new(BIN)
            .env("RUST_LOG", "info")
            .args(["run", "--config", &config])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("exited before listening").unwrap();
        if let Some(addr) = line_addr(&line) {
            break addr;
        }
    };
    drop(lines);
    drop(child.stdout.take());
    // Each request logs a warning (the upstream refuses) and an access-log line.
    for _ in 0..5 {
        let answer = get(
            addr,
            "GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 502 "), "{answer:?}");
    }
    terminate(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
