//! Builds rustls configurations: the server side from the configured
//! certificate and key, the client side for outbound STARTTLS (verifying,
//! or opportunistic). It only builds configurations; handshakes happen in
//! the glue, and it never decides policy (who must use TLS).

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no private key")]
    NoPrivateKey { path: String },
    #[error("certificate and key do not fit together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the server-side rustls configuration from PEM files.
pub fn server_config(
    certificate: &Path,
    private_key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = read_certificates(certificate)?;
    let key = read_private_key(private_key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // Mail clients rarely resume, but it costs little and helps load tools.
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
    Ok(Arc::new(config))
}

/// Client configuration for outbound STARTTLS. `verify` checks the
/// server's certificate chain and name against the system's roots plus
/// `extra_ca` (for a smarthost with a private CA); without it any
/// certificate is accepted: opportunistic encryption, which protects
/// against passive listeners only (RFC 3207 section 4.1, Postfix `may`).
pub fn client_config(
    verify: bool,
    extra_ca: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable system certificates leave only `extra_ca`; a verifying
        // client with no roots at all then fails every handshake, loudly.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = extra_ca {
            for cert in read_certificates(path)? {
                roots.add(cert)?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Accepts any certificate, but still checks that the server holds its
/// key (the handshake signatures), so the session is really encrypted to
/// whoever presented it.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoPrivateKey {
            path: path.display().to_string(),
        })
}

/// What a server-side handshake agreed, named as the Received header
/// writes it: `TLSv1.3`, the IANA cipher suite name (rustls says
/// `TLS13_AES_256_GCM_SHA384` for the registry's `TLS_AES_256_GCM_SHA384`)
/// and the key exchange group.
pub fn agreed(conn: &rustls::ServerConnection) -> crate::smtp::session::TlsDetails {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_owned(),
    };
    let cipher = conn.negotiated_cipher_suite().map_or_else(
        || "unknown".to_owned(),
        |suite| {
            let suite = suite.suite();
            match suite.as_str() {
                Some(name) => match name.strip_prefix("TLS13_") {
                    Some(rest) => format!("TLS_{rest}"),
                    None => name.to_owned(),
                },
                // RFC 8314 4.3: the four-digit hex form when unnamed.
                None => format!("0x{:04X}", u16::from(suite)),
            }
        },
    );
    let group = conn
        .negotiated_key_exchange_group()
        .and_then(|kx| kx.name().as_str())
        .map(|name| match name {
            "X25519" => "x25519".to_owned(),
            "X448" => "x448".to_owned(),
            other => other.to_owned(),
        });
    crate::smtp::session::TlsDetails {
        version,
        cipher,
        group,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_generated_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
        assert!(server_config(&cert_path, &key_path).is_ok());
        // Swapped files: a clear error, not a panic.
        assert!(server_config(&key_path, &cert_path).is_err());
        assert!(server_config(&dir.path().join("missing"), &key_path).is_err());
    }

    #[test]
    fn client_configs_build() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        assert!(client_config(false, None).is_ok());
        assert!(client_config(true, Some(&ca)).is_ok());
        assert!(client_config(true, Some(&dir.path().join("missing"))).is_err());
    }
}
