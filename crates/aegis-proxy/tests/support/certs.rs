//! Certificates on disk: a fresh CA, server and client pairs per test.

use super::*;

/// A folder with a fresh CA, a server certificate for 127.0.0.1/localhost and a client pair.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "aegis-test-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        aegis_proxy::demo::write_certs(&path).expect("write certs");
        Self { path }
    }

    pub fn file(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        aegis_tls::pem::load_roots(&self.path.join("ca.pem")).unwrap()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
