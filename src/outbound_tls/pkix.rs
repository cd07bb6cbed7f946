//! Certificate checks of the Web PKI kind for outbound TLS under an
//! MTA-STS policy (RFC 8461 4.2): the trusted roots (the system's plus
//! an optional extra CA file), a verifying client configuration, and one
//! for `mode: testing` that accepts every certificate but writes down
//! why it would have been refused.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Why the roots or configurations could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PkixError {
    #[error("cannot read CA file {path}: {error}")]
    CaFile { path: String, error: String },
    #[error("no trusted roots: the system has none and no CA file is given")]
    NoRoots,
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("certificate verifier: {0}")]
    Verifier(String),
}

/// The system's roots plus the certificates of `extra_ca` (PEM).
pub fn roots(extra_ca: Option<&Path>) -> Result<Arc<rustls::RootCertStore>, PkixError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        let ca_error = |error: String| PkixError::CaFile {
            path: path.display().to_string(),
            error,
        };
        let text = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        for cert in rustls_pemfile::certs(&mut text.as_slice()) {
            let cert = cert.map_err(|e| ca_error(e.to_string()))?;
            roots.add(cert)?;
        }
    }
    if roots.is_empty() {
        return Err(PkixError::NoRoots);
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that checks chain, dates and name.
pub fn verifying_config(
    roots: &Arc<rustls::RootCertStore>,
) -> Result<Arc<rustls::ClientConfig>, PkixError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(Arc::clone(roots))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What a `testing` connection's certificate check found: `None` while
/// nothing failed.
pub type TestingReport = Arc<Mutex<Option<String>>>;

/// A client configuration that accepts any certificate and writes the
/// reason a verifying one would have refused it into `report`.
pub fn reporting_config(
    roots: &Arc<rustls::RootCertStore>,
    report: TestingReport,
) -> Result<Arc<rustls::ClientConfig>, PkixError> {
    let provider = provider();
    let inner =
        WebPkiServerVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| PkixError::Verifier(e.to_string()))?;
    let verifier = Arc::new(ReportingVerifier { inner, report });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct ReportingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    report: TestingReport,
}

impl ServerCertVerifier for ReportingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Err(e) =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            let mut report = self.report.lock().unwrap_or_else(|p| p.into_inner());
            *report = Some(format!(
                "certificate not valid for {}: {e}",
                server_name.to_str()
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
