//! `aegis-proxy probe`: run as a user would, against the proxy over HTTP/1.1, HTTP/2 and
//! HTTP/3, it reports the group the server chose, the ALPN, the certificate and the status,
//! and says why a handshake a policy forbids failed.

mod support;

use support::*;

/// Runs the probe binary with `args`; its exit code and output.
async fn run_probe(args: Vec<String>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aegis-proxy"))
            .arg("probe")
            .args(&args)
            .output()
            .unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (out.status.code(), text(out.stdout), text(out.stderr))
    })
    .await
    .unwrap()
}

fn config(origin: std::net::SocketAddr) -> String {
    format!(
        r#"
[[listeners]]
name = "secure"
listen = "127.0.0.1:0"
tls = {TLS}
{TLS_H3}

[[listeners]]
name = "pq"
listen = "127.0.0.1:0"
tls = {TLS_PQ_ONLY}

[[routes]]
cluster = "api"

[clusters.api]
endpoints = ["{origin}"]
"#
    )
}

#[tokio::test]
async fn probe_reports_the_group_alpn_certificate_and_status_over_each_version() {
    let dir = TestDir::new("probe");
    let (origin, _) = recording_origin().await;
    let proxy = start(&config(origin), &dir).await;
    let port = proxy.listener_addr("secure").unwrap().port();
    let url = format!("https://localhost:{port}/hello");
    for (http, alpn, version) in [
        ("1.1", "http/1.1", "HTTP/1.1"),
        ("2", "h2", "HTTP/2"),
        ("3", "h3", "HTTP/3"),
    ] {
        for (policy, group) in [
            (None, "X25519MLKEM768 (post-quantum hybrid)"),
            (Some("--pq"), "X25519MLKEM768 (post-quantum hybrid)"),
            (Some("--classical"), "X25519 (classical)"),
        ] {
            let mut args = vec![
                url.clone(),
                "--http".into(),
                http.into(),
                "--ca".into(),
                dir.file("ca.pem"),
            ];
            args.extend(policy.map(str::to_owned));
            let (code, out, err) = run_probe(args).await;
            assert_eq!(code, Some(0), "{http} {policy:?}: {err}");
            for line in [
                "tls: TLSv1.3".to_owned(),
                format!("group: {group}"),
                format!("alpn: {alpn}"),
                format!("http: {version}"),
                "status: 200".to_owned(),
            ] {
                assert!(
                    out.lines().any(|l| l == line),
                    "{http} {policy:?}: no {line:?} in\n{out}"
                );
            }
            assert!(
                out.contains("certificate 0: subject \"CN=localhost\", issuer \"CN=Aegis-Flow local CA\", names [localhost, 127.0.0.1, ::1]"),
                "{out}"
            );
        }
    }
}

#[tokio::test]
async fn a_refused_handshake_says_why() {
    let dir = TestDir::new("probe-refused");
    let (origin, _) = recording_origin().await;
    let proxy = start(&config(origin), &dir).await;
    let pq = proxy.listener_addr("pq").unwrap().port();
    let (code, out, err) = run_probe(vec![
        format!("https://localhost:{pq}/"),
        "--classical".into(),
        "--ca".into(),
        dir.file("ca.pem"),
    ])
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        err.contains("it requires post-quantum key exchange"),
        "{err}"
    );
    // Without --ca, the local CA is unknown: the error says what to pass.
    let secure = proxy.listener_addr("secure").unwrap().port();
    let (code, _, err) = run_probe(vec![format!("https://localhost:{secure}/")]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("UnknownIssuer") && err.contains("--ca FILE"),
        "{err}"
    );
}
