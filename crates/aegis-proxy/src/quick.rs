//! `aegis-proxy reverse-proxy`: a one-line proxy without a config file, like Caddy's.
//!
//! The flags become a configuration text that goes through the same validation as a file.
//! Addresses are taken as Caddy users write them (`:8080`, `localhost:8080`,
//! `http://127.0.0.1:9000`), and errors name the flag, never a line of a file nobody wrote.

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, ConfigErrors};

/// The flags of quick mode.
#[derive(Debug, Clone, Default)]
pub struct QuickOptions {
    /// Address to listen on.
    pub from: String,
    /// Upstream endpoints, balanced by least request.
    pub to: Vec<String>,
    /// Certificate and key files; TLS when set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Offer only the hybrid post-quantum group.
    pub pq_only: bool,
    /// Also serve HTTP/3 (QUIC) on the same port.
    pub h3: bool,
    /// Write JSON access-log lines.
    pub access_log: bool,
    /// Admin listener address.
    pub admin: Option<String>,
}

impl QuickOptions {
    /// The equivalent configuration file, with addresses written as a file wants them.
    pub fn to_toml(&self) -> Result<String, ConfigErrors> {
        let mut errors = Vec::new();
        let mut flag = |flag: &str, result: Result<String, String>, given: &str| {
            result.unwrap_or_else(|message| {
                errors.push(flag_error(flag, message));
                given.to_owned()
            })
        };
        let https = self.from.starts_with("https://");
        let from = flag("--from", listen_address(&self.from), &self.from);
        let to: Vec<String> = self
            .to
            .iter()
            .map(|t| flag("--to", upstream_address(t), t))
            .collect();
        let admin = self
            .admin
            .as_ref()
            .map(|a| flag("--admin", listen_address(a), a));
        if https && self.tls.is_none() {
            let message = "https:// needs --tls-cert and --tls-key".to_owned();
            errors.push(flag_error("--from", message));
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let quick = Self {
            from,
            to,
            admin,
            ..self.clone()
        };
        Ok(quick.file_text())
    }

    fn file_text(&self) -> String {
        let mut root = toml::Table::new();
        if let Some(admin) = &self.admin {
            root.insert("admin".into(), table([("listen", admin.as_str().into())]));
        }
        root.insert(
            "server".into(),
            table([("access_log", self.access_log.into())]),
        );
        let mut listener = toml::Table::new();
        listener.insert("name".into(), "quick".into());
        listener.insert("listen".into(), self.from.as_str().into());
        if let Some((cert, key)) = &self.tls {
            listener.insert(
                "tls".into(),
                table([
                    ("cert", path_value(cert)),
                    ("key", path_value(key)),
                    ("pq_only", self.pq_only.into()),
                ]),
            );
        }
        if self.h3 {
            let protocols = ["http/1.1", "h2", "h3"].map(toml::Value::from);
            listener.insert("protocols".into(), toml::Value::Array(protocols.to_vec()));
        }
        root.insert(
            "listeners".into(),
            toml::Value::Array(vec![listener.into()]),
        );
        let route = table([("cluster", "upstream".into())]);
        root.insert("routes".into(), toml::Value::Array(vec![route]));
        let endpoints: Vec<toml::Value> = self.to.iter().map(|t| t.as_str().into()).collect();
        let cluster = table([("endpoints", toml::Value::Array(endpoints))]);
        root.insert("clusters".into(), table([("upstream", cluster)]));
        toml::to_string(&root).unwrap_or_default()
    }

    /// Validates the options as a configuration; paths are relative to `base_dir`.
    pub fn to_config(&self, base_dir: &Path) -> Result<Config, ConfigErrors> {
        Config::parse(&self.to_toml()?, base_dir).map_err(|e| {
            ConfigErrors(
                e.0.into_iter()
                    .map(|e| flag_error(flag_of(&e.key), e.message))
                    .collect(),
            )
        })
    }
}

fn flag_error(flag: &str, message: String) -> ConfigError {
    ConfigError {
        key: flag.to_owned(),
        line: None,
        message,
    }
}

/// The flag a key of the generated file came from.
fn flag_of(key: &str) -> &'static str {
    match key {
        k if k.starts_with("admin") => "--admin",
        k if k.starts_with("clusters") => "--to",
        "listeners[0].tls.cert" => "--tls-cert",
        "listeners[0].tls.key" => "--tls-key",
        k if k.starts_with("listeners[0].tls") => "--tls-cert",
        _ => "--from",
    }
}

/// `:8080` (every interface), `localhost:8080`, `http://127.0.0.1:8080`, `[::1]:8080` as
/// `ip:port`.
fn listen_address(given: &str) -> Result<String, String> {
    let bare = strip_scheme(given)?;
    let (host, port) = split_port(bare).ok_or_else(|| format!("\"{given}\" needs a port"))?;
    let ip = match host {
        "" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        other => other.trim_start_matches('[').trim_end_matches(']'),
    };
    let ip: std::net::IpAddr = ip.parse().map_err(|_| {
        format!("\"{given}\": listen on an IP address, localhost or :PORT (every interface)")
    })?;
    Ok(std::net::SocketAddr::new(ip, port).to_string())
}

/// `127.0.0.1:9000`, `http://backend:9000`, `http://backend` (port 80) as `host:port`.
fn upstream_address(given: &str) -> Result<String, String> {
    if given.starts_with("https://") {
        return Err(format!(
            "\"{given}\": TLS to upstreams needs a configuration file ([clusters.NAME.tls])"
        ));
    }
    let had_scheme = given.starts_with("http://");
    let bare = strip_scheme(given)?;
    match split_port(bare) {
        Some(("", _)) => Err(format!("\"{given}\" has no host")),
        Some(_) => Ok(bare.to_owned()),
        None if had_scheme && !bare.is_empty() => Ok(format!("{bare}:80")),
        None => Err(format!("\"{given}\" needs a port, e.g. {bare}:9000")),
    }
}

/// The address without `http://` (or `https://`), refusing a path after it.
fn strip_scheme(given: &str) -> Result<&str, String> {
    let bare = given
        .strip_prefix("http://")
        .or_else(|| given.strip_prefix("https://"))
        .unwrap_or(given);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    if bare.contains('/') || bare.contains("://") {
        return Err(format!(
            "\"{given}\" is not host:port (no path or other scheme)"
        ));
    }
    Ok(bare)
}

/// `host` and port of `host:port` or `[v6]:port`, `None` without a valid port.
fn split_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return None;
    }
    Some((host, port.parse().ok()?))
}

fn table<const N: usize>(pairs: [(&str, toml::Value); N]) -> toml::Value {
    toml::Value::Table(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn path_value(path: &Path) -> toml::Value {
    path.display().to_string().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_quick_mode_is_a_valid_config() {
        let options = QuickOptions {
            from: "127.0.0.1:0".into(),
            to: vec!["127.0.0.1:9000".into(), "localhost:9001".into()],
            ..QuickOptions::default()
        };
        let config = options.to_config(Path::new(".")).unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert!(config.listeners[0].tls.is_none());
        assert_eq!(config.clusters[0].endpoints.len(), 2);
        assert!(!config.access_log);
    }

    #[test]
    fn addresses_are_taken_as_caddy_users_write_them() {
        let options = QuickOptions {
            from: ":8080".into(),
            to: vec![
                "http://127.0.0.1:9000".into(),
                "http://backend".into(),
                "localhost:9001/".into(),
            ],
            admin: Some("localhost:9901".into()),
            ..QuickOptions::default()
        };
        let config = options.to_config(Path::new(".")).unwrap();
        assert_eq!(config.listeners[0].addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(
            config.admin.unwrap().listen,
            "127.0.0.1:9901".parse().unwrap()
        );
        let endpoints: Vec<String> = config.clusters[0]
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            endpoints,
            ["127.0.0.1:9000", "backend:80", "localhost:9001"]
        );
        let local = QuickOptions {
            from: "http://localhost:8080".into(),
            ..options
        };
        let config = local.to_config(Path::new(".")).unwrap();
        assert_eq!(config.listeners[0].addr, "127.0.0.1:8080".parse().unwrap());
    }

    /// Every mistake at once, each naming its flag and no line.
    #[test]
    fn errors_name_the_flag_not_a_line() {
        let options = QuickOptions {
            from: "example.com:8080".into(),
            to: vec![
                "127.0.0.1".into(),
                "https://api:443".into(),
                "[::1]:9000".into(),
            ],
            admin: Some("localhost".into()),
            ..QuickOptions::default()
        };
        let errors = options.to_config(Path::new(".")).unwrap_err().to_string();
        assert_eq!(
            errors,
            "--from: \"example.com:8080\": listen on an IP address, localhost or :PORT (every interface)\n\
             --to: \"127.0.0.1\" needs a port, e.g. 127.0.0.1:9000\n\
             --to: \"https://api:443\": TLS to upstreams needs a configuration file ([clusters.NAME.tls])\n\
             --admin: \"localhost\" needs a port"
        );
        let https = QuickOptions {
            from: "https://127.0.0.1:8443".into(),
            to: vec!["127.0.0.1:9000".into()],
            ..QuickOptions::default()
        };
        let errors = https.to_config(Path::new(".")).unwrap_err().to_string();
        assert_eq!(errors, "--from: https:// needs --tls-cert and --tls-key");
    }

    #[test]
    fn bad_upstream_is_reported_like_a_file_error() {
        let options = QuickOptions {
            from: "127.0.0.1:0".into(),
            to: vec!["10.0.0.1".into()],
            ..QuickOptions::default()
        };
        let errors = options.to_config(Path::new(".")).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "--to: \"10.0.0.1\" needs a port, e.g. 10.0.0.1:9000"
        );
        let options = QuickOptions {
            from: "127.0.0.1:0".into(),
            to: vec!["bad host:1".into()],
            tls: Some(("missing.pem".into(), "missing.key".into())),
            ..QuickOptions::default()
        };
        let errors = options.to_config(Path::new("/nonexistent")).unwrap_err();
        let text = errors.to_string();
        assert!(!text.contains("line"), "{text}");
        assert!(text.contains("--tls-cert: cannot read"), "{text}");
        assert!(text.contains("--to: "), "{text}");
    }
}
