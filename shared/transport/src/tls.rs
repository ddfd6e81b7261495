//! TLS material both ends load: the process's rustls crypto provider and PEM certificate
//! chains and keys (the edge's TLS and QUIC listeners, the QUIC client, internal mTLS).

use crate::error::{Error, Result};

/// Installs ring as the process's rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads a PEM certificate chain.
pub fn load_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::key("TLS certificate", e))?;
    if certs.is_empty() {
        return Err(Error::key("TLS certificate", "no certificate in the PEM"));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(pem: &str) -> Result<rustls::pki_types::PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| Error::key("TLS key", e))?
        .ok_or_else(|| Error::key("TLS key", "no private key in the PEM"))
}

#[cfg(test)]
mod tests {
    use super::{load_certs, load_key};

    #[test]
    fn pem_without_a_certificate_or_key_is_a_key_error() {
        assert_eq!(load_certs("nothing").unwrap_err().kind(), "key");
        assert_eq!(load_key("nothing").unwrap_err().kind(), "key");
    }
}
