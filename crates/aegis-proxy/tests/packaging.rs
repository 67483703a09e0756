//! The packaging in `packaging/` agrees with itself and with the proxy: the Kubernetes
//! manifest's embedded configuration validates, its ports, probes, paths and grace period
//! match that configuration and the Dockerfile, and the systemd unit passes
//! `systemd-analyze verify`.

use std::path::Path;
use std::process::Command;

use aegis_proxy::config::Config;

const MANIFEST: &str = include_str!("../../../packaging/kubernetes/aegis-flow.yaml");
const DOCKERFILE: &str = include_str!("../../../packaging/Dockerfile");
const UNIT: &str = include_str!("../../../packaging/systemd/aegis-proxy.service");

/// The block scalar under `key: |`, unindented.
fn block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines.next().expect("block key");
    let indent = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .collect();
    let strip = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    body.iter()
        .map(|l| l.get(strip..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every value of `key:` in the document, in order.
fn values<'a>(yaml: &'a str, key: &str) -> Vec<&'a str> {
    yaml.lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("- ");
            l.strip_prefix(key)?.strip_prefix(':').map(str::trim)
        })
        .collect()
}

/// The configuration the manifest ships, validated against the certificate files it mounts.
fn manifest_config(test: &str) -> Config {
    let dir = std::env::temp_dir().join(format!("aegis-packaging-{test}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    let ca = aegis_tls::LocalCa::generate("packaging test").unwrap();
    let leaf = ca.issue(&["localhost"]).unwrap();
    std::fs::write(dir.join("tls/tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("tls/tls.key"), &leaf.key_pem).unwrap();
    let text = block(MANIFEST, "aegis.toml");
    let env = |name: &str| (name == "AEGIS_ADMIN_TOKEN").then(|| "t".repeat(32));
    let config = Config::parse_with_env(&text, &dir, &env);
    std::fs::remove_dir_all(&dir).unwrap();
    config.unwrap_or_else(|e| panic!("the manifest's aegis.toml does not validate:\n{e}"))
}

#[test]
fn the_kubernetes_manifest_matches_the_configuration_it_embeds() {
    let config = manifest_config("kubernetes");
    let admin = config
        .admin
        .as_ref()
        .expect("the manifest configures admin");
    let listener = &config.listeners[0];
    let ports = values(MANIFEST, "containerPort");
    let protocols = values(MANIFEST, "protocol");
    let listener_port = listener.addr.port().to_string();
    let admin_port = admin.listen.port().to_string();
    // containerPort lines pair with the protocol line after each.
    let exposed: Vec<(&str, &str)> = ports
        .iter()
        .copied()
        .zip(protocols.iter().copied())
        .collect();
    assert!(
        exposed.contains(&(listener_port.as_str(), "TCP")),
        "{exposed:?}"
    );
    assert_eq!(
        exposed.contains(&(listener_port.as_str(), "UDP")),
        listener.quic.is_some(),
        "UDP port exactly when the listener serves h3: {exposed:?}"
    );
    assert!(
        exposed.contains(&(admin_port.as_str(), "TCP")),
        "{exposed:?}"
    );
    assert_eq!(
        values(MANIFEST, "prometheus.io/port"),
        [format!("\"{admin_port}\"")]
    );
    // Probes: readiness on /ready and liveness on /healthz, both on the admin port.
    assert_eq!(values(MANIFEST, "path"), ["/ready", "/healthz"]);
    assert_eq!(values(MANIFEST, "port"), ["admin", "admin", "443", "443"]);
    let admin_named = MANIFEST
        .split("- name: admin")
        .nth(1)
        .and_then(|rest| values(rest, "containerPort").first().copied());
    assert_eq!(admin_named, Some(admin_port.as_str()));
    // The grace period outlasts the shutdown delay and the drain together.
    let grace: u64 = values(MANIFEST, "terminationGracePeriodSeconds")[0]
        .parse()
        .unwrap();
    let needed = config.shutdown_delay + config.drain_timeout;
    assert!(
        grace * 1000 > needed.as_millis() as u64,
        "{grace} s < {needed:?}"
    );
    assert!(
        !config.shutdown_delay.is_zero(),
        "no shutdown delay: rolling deploys refuse connections"
    );
    // The config path the container runs with is where the ConfigMap is mounted.
    let mount = values(MANIFEST, "mountPath")[0];
    let args = values(MANIFEST, "args")[0];
    assert!(
        args.contains(&format!("\"{mount}/aegis.toml\"")),
        "{args} vs {mount}"
    );
    // The token the admin listener needs comes from the environment the Deployment sets.
    assert!(MANIFEST.contains("- name: AEGIS_ADMIN_TOKEN"));
}

#[test]
fn the_dockerfile_exposes_and_runs_what_the_manifest_uses() {
    let config = manifest_config("docker");
    let expose = DOCKERFILE
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE");
    let exposed: Vec<&str> = expose.split_whitespace().collect();
    let listener = config.listeners[0].addr.port();
    let admin = config.admin.as_ref().unwrap().listen.port();
    assert_eq!(
        exposed,
        [
            format!("{listener}/tcp"),
            format!("{listener}/udp"),
            format!("{admin}/tcp")
        ]
    );
    let cmd = DOCKERFILE.lines().find(|l| l.starts_with("CMD ")).unwrap();
    let args = values(MANIFEST, "args")[0];
    assert_eq!(cmd.trim_start_matches("CMD "), args);
    // The runtime stage runs as a numeric non-root user, which runAsNonRoot can check.
    assert!(DOCKERFILE.contains("\nUSER 65532:65532\n"));
    assert_eq!(values(MANIFEST, "runAsUser"), ["65532"]);
    // The build stage's toolchain is the pinned one.
    let pinned = include_str!("../../../rust-toolchain.toml")
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    assert!(DOCKERFILE.contains(&format!("FROM rust:{pinned}-bookworm AS build")));
}

#[test]
fn the_systemd_unit_verifies_and_runs_the_binary_as_documented() {
    for line in [
        "ExecStart=/usr/local/bin/aegis-proxy run --config /etc/aegis/aegis.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(UNIT.lines().any(|l| l == line), "{line} missing");
    }
    // systemd-analyze checks that executables exist: point the unit at the binary under test.
    let bin = env!("CARGO_BIN_EXE_aegis-proxy");
    let dir = std::env::temp_dir().join(format!("aegis-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("aegis-proxy.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/aegis-proxy", bin)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (scripts/setup.sh installs it)");
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about the unit itself; systemd-analyze also reports on units it loads beside it.
    let own: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("aegis-proxy.service"))
        .collect();
    assert!(out.status.success() && own.is_empty(), "{stderr}");
    assert!(Path::new(bin).exists());
}
