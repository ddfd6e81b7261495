//! A deployment CA and role certificates on disk for the suites (PROTOCOL.md §15), made the way
//! `janus keygen` makes them, and replaced the way a rotation replaces them (each file renamed
//! into place whole).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use janus_ops::internal_tls::{Authority, InternalTlsConfig, Role};

/// Milliseconds between the suites' processes' looks at their files.
pub const RELOAD_MS: u64 = 100;

/// A directory of internal TLS material: one CA file every process trusts, and a certificate
/// pair per [`Pki::issue`].
pub struct Pki {
    dir: tempfile::TempDir,
    /// The deployment CA the material starts with.
    pub ca: Authority,
    issued: AtomicUsize,
}

impl Pki {
    /// A fresh CA in a fresh directory; the CA file trusts it alone.
    pub fn new() -> Self {
        let pki = Self {
            dir: crate::scratch_dir("pki"),
            ca: Authority::generate().unwrap(),
            issued: AtomicUsize::new(0),
        };
        pki.trust(&[&pki.ca]);
        pki
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn ca_file(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    /// Makes the CA file trust exactly `cas`.
    pub fn trust(&self, cas: &[&Authority]) {
        let pem: String = cas.iter().map(|ca| ca.cert_pem().unwrap()).collect();
        replace(&self.ca_file(), &pem);
    }

    /// A certificate of `role` issued by `by`, in files of its own, and the section naming
    /// them with the shared CA file.
    pub fn issue(&self, by: &Authority, role: Role) -> InternalTlsConfig {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let path = |ext: &str| self.dir().join(format!("{role}-{n}.{ext}"));
        let config = InternalTlsConfig {
            ca_file: self.ca_file().display().to_string(),
            cert_file: path("pem").display().to_string(),
            key_file: path("key").display().to_string(),
            reload_ms: std::time::Duration::from_millis(RELOAD_MS),
        };
        self.reissue(&config, by, role);
        config
    }

    /// Replaces the pair `config` names with a fresh one of `role` issued by `by`.
    pub fn reissue(&self, config: &InternalTlsConfig, by: &Authority, role: Role) {
        let issued = by.issue(role).unwrap();
        replace(Path::new(&config.key_file), &issued.key_pem);
        replace(Path::new(&config.cert_file), &issued.cert_pem);
    }

    /// A section with its own CA file trusting `cas` and a certificate of `role` by `by`.
    pub fn issue_trusting(
        &self,
        cas: &[&Authority],
        by: &Authority,
        role: Role,
    ) -> InternalTlsConfig {
        let mut config = self.issue(by, role);
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let ca_file = self.dir().join(format!("ca-{n}.pem"));
        let pem: String = cas.iter().map(|ca| ca.cert_pem().unwrap()).collect();
        replace(&ca_file, &pem);
        config.ca_file = ca_file.display().to_string();
        config
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes `path` whole: beside it first, then renamed over it.
fn replace(path: &Path, contents: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, path).unwrap();
}
