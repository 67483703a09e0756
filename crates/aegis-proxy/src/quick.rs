//! `aegis-proxy reverse-proxy`: a one-line proxy without a config file, like Caddy's.
//!
//! The flags become a configuration text that goes through the same validation as a file.

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigErrors};

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
    /// The equivalent configuration file.
    pub fn to_toml(&self) -> String {
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
        Config::parse(&self.to_toml(), base_dir)
    }
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
    fn bad_upstream_is_reported_like_a_file_error() {
        let options = QuickOptions {
            from: "127.0.0.1:0".into(),
            to: vec!["10.0.0.1".into()],
            ..QuickOptions::default()
        };
        let errors = options.to_config(Path::new(".")).unwrap_err();
        assert!(
            errors
                .to_string()
                .starts_with("clusters.upstream.endpoints[0]"),
            "{errors}"
        );
        assert!(
            errors.to_string().ends_with("\"10.0.0.1\" has no port"),
            "{errors}"
        );
    }
}
