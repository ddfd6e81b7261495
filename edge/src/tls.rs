//! TLS for the listeners that need it: the QUIC endpoints (ALPN `janus`; from the configured
//! PEM certificate and key, or a self-signed development pair generated at start) and, when a
//! certificate and key are configured, the WebSocket listener (wss).

use std::sync::Arc;

use janus_transport::quic::QUIC_ALPN;
use janus_transport::tls::{install_crypto_provider, load_certs, load_key};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::{QuicConfig, WebSocketConfig};
use crate::error::{Error, Result};

/// A certificate chain and its key.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Reads the configured pair, or generates a self-signed one for `localhost`.
fn identity(cert_file: Option<&str>, key_file: Option<&str>, field: &str) -> Result<Identity> {
    match (cert_file, key_file) {
        (Some(cert), Some(key)) => {
            let read = |path: &str, what: &str| {
                std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(format!("{field}.{what}: cannot read {path:?}: {e}"))
                })
            };
            let certs = load_certs(&read(cert, "tls_cert_file")?)
                .map_err(|e| Error::Config(format!("{field}.tls_cert_file: {e}")))?;
            let key = load_key(&read(key, "tls_key_file")?)
                .map_err(|e| Error::Config(format!("{field}.tls_key_file: {e}")))?;
            Ok((certs, key))
        }
        _ => {
            tracing::warn!(
                "{field}: no TLS certificate configured; using a self-signed one (development only)"
            );
            let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .map_err(|e| {
                    Error::Config(format!("{field}: cannot generate a certificate: {e}"))
                })?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                generated.signing_key.serialize_der(),
            ));
            Ok((vec![generated.cert.der().clone()], key))
        }
    }
}

/// The QUIC listener's TLS: `config`'s certificate (or a development one), ALPN `janus`.
pub(crate) fn quic_crypto(config: &QuicConfig) -> Result<quinn::crypto::rustls::QuicServerConfig> {
    install_crypto_provider();
    let (certs, key) = identity(
        config.tls_cert_file.as_deref(),
        config.tls_key_file.as_deref(),
        "quic",
    )?;
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("quic: unusable certificate or key: {e}")))?;
    tls.alpn_protocols = vec![QUIC_ALPN.to_vec()];
    quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| Error::Config(format!("quic: {e}")))
}

/// The wss acceptor when `config` names a certificate and key; `None` means plain ws.
pub(crate) fn websocket_acceptor(
    config: &WebSocketConfig,
) -> Result<Option<tokio_rustls::TlsAcceptor>> {
    let (Some(cert), Some(key)) = (
        config.tls_cert_file.as_deref(),
        config.tls_key_file.as_deref(),
    ) else {
        return Ok(None);
    };
    install_crypto_provider();
    let (certs, key) = identity(Some(cert), Some(key), "websocket")?;
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("websocket: unusable certificate or key: {e}")))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_files_a_development_pair_is_generated() {
        let (certs, _) = identity(None, None, "quic").unwrap();
        assert_eq!(certs.len(), 1);
    }

    #[test]
    fn unreadable_files_name_the_field() {
        let err = identity(Some("/nonexistent.crt"), Some("/nonexistent.key"), "quic").unwrap_err();
        assert!(err.to_string().contains("quic.tls_cert_file"), "{err}");
    }
}
