//! DANE for SMTP (RFC 7672) on TLSA records (RFC 6698): which records are
//! usable, how a certificate matches one, and the rustls certificate
//! verifier that accepts a server only through its TLSA records. The
//! lookups (and the DNSSEC status they need) are `policy`'s.

use std::sync::Arc;

use ring::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// RFC 7218 names of the certificate usages DANE for SMTP uses.
pub const DANE_TA: u8 = 2;
pub const DANE_EE: u8 = 3;

/// One TLSA record (RFC 6698 2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    /// 0: the whole certificate; 1: its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0: exact; 1: SHA-256; 2: SHA-512.
    pub matching: u8,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// RFC 7672 3.1.3: PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP
    /// (no agreed set of CAs for MX hosts); unknown selectors and
    /// matching types are unusable too (RFC 6698 4.1). A digest of the
    /// wrong length can match nothing.
    pub fn is_usable(&self) -> bool {
        let length_fits = match self.matching {
            0 => !self.data.is_empty(),
            1 => self.data.len() == 32,
            2 => self.data.len() == 64,
            _ => false,
        };
        matches!(self.usage, DANE_TA | DANE_EE) && self.selector <= 1 && length_fits
    }

    /// Whether `cert` (DER) is the certificate or key this record names.
    pub fn matches(&self, cert: &[u8]) -> bool {
        let selected = match self.selector {
            0 => cert,
            1 => match subject_public_key_info(cert) {
                Some(spki) => spki,
                None => return false,
            },
            _ => return false,
        };
        match self.matching {
            0 => selected == self.data.as_slice(),
            1 => digest::digest(&digest::SHA256, selected).as_ref() == self.data.as_slice(),
            2 => digest::digest(&digest::SHA512, selected).as_ref() == self.data.as_slice(),
            _ => false,
        }
    }
}

/// The DER of a certificate's SubjectPublicKeyInfo (tag and length
/// included), found by walking the outer structure (RFC 5280 4.1):
/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
/// OPTIONAL, serialNumber, signature, issuer, validity, subject,
/// subjectPublicKeyInfo, ... }, ... }. `None` for anything malformed.
pub fn subject_public_key_info(cert: &[u8]) -> Option<&[u8]> {
    let (_, certificate, _) = der_element(cert)?;
    let (_, tbs, _) = der_element(certificate)?;
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    // serialNumber, signature, issuer, validity, subject
    for _ in 0..5 {
        let (_, _, after) = der_element(rest)?;
        rest = after;
    }
    let (tag, _, after) = der_element(rest)?;
    if tag != 0x30 {
        return None;
    }
    Some(&rest[..rest.len() - after.len()])
}

/// One DER element: (tag, contents, what follows). Single-byte tags and
/// definite lengths only, as DER requires for certificates.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Accepts a server's chain only if a usable TLSA record vouches for it:
/// DANE-EE(3) matches the server's own certificate, and then neither
/// its names nor its dates are checked (RFC 7672 3.1.1); DANE-TA(2)
/// matches a certificate of the presented chain, which becomes the only
/// trust anchor of an ordinary chain check, names included, against the
/// MX host name we connected to (RFC 7672 3.1.2 and 3.2.2; a server
/// using DANE-TA must send its TA certificate in the chain).
#[derive(Debug)]
pub struct DaneVerifier {
    records: Vec<Tlsa>,
    provider: Arc<CryptoProvider>,
}

impl DaneVerifier {
    /// `records`: the usable ones (see [`Tlsa::is_usable`]).
    pub fn new(records: Vec<Tlsa>, provider: Arc<CryptoProvider>) -> Self {
        DaneVerifier { records, provider }
    }

    /// A client configuration that trusts nothing but these records.
    pub fn client_config(records: Vec<Tlsa>) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(DaneVerifier::new(records, Arc::clone(&provider)));
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    fn chains_to_trust_anchor(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<(), String> {
        let mut last_error = None;
        for anchor in intermediates {
            let pinned = self
                .records
                .iter()
                .any(|r| r.usage == DANE_TA && r.matches(anchor));
            if !pinned {
                continue;
            }
            let mut roots = rustls::RootCertStore::empty();
            if let Err(e) = roots.add(anchor.clone()) {
                last_error = Some(format!("the TLSA-pinned CA is unusable: {e}"));
                continue;
            }
            let checked = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&self.provider),
            )
            .build()
            .map_err(|e| e.to_string())
            .and_then(|verifier| {
                verifier
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                    .map_err(|e| e.to_string())
            });
            match checked {
                Ok(_) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| "no TLSA record matches the certificate chain".into()))
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ee_match = self
            .records
            .iter()
            .any(|r| r.usage == DANE_EE && r.matches(end_entity));
        if ee_match {
            return Ok(ServerCertVerified::assertion());
        }
        match self.chains_to_trust_anchor(end_entity, intermediates, server_name, ocsp, now) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err(why) => Err(rustls::Error::General(format!("DANE: {why}"))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(data: &[u8]) -> Vec<u8> {
        digest::digest(&digest::SHA256, data).as_ref().to_vec()
    }

    fn generated() -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["mx.example.test".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.der().to_vec(), key.public_key_der())
    }

    #[test]
    fn spki_is_found_in_a_certificate() {
        let (cert, spki) = generated();
        assert_eq!(subject_public_key_info(&cert), Some(spki.as_slice()));
        assert_eq!(subject_public_key_info(&cert[..cert.len() / 2]), None);
        assert_eq!(subject_public_key_info(b"\x30\x03\x02\x01\x01"), None);
    }

    #[test]
    fn tlsa_matching() {
        let (cert, spki) = generated();
        let (other, _) = generated();
        let record = |usage, selector, matching, data| Tlsa {
            usage,
            selector,
            matching,
            data,
        };
        // 3 1 1: SHA-256 of the key, the common choice.
        let r = record(3, 1, 1, sha256(&spki));
        assert!(r.is_usable() && r.matches(&cert) && !r.matches(&other));
        // 3 0 0, 3 0 1, 3 1 2.
        assert!(record(3, 0, 0, cert.clone()).matches(&cert));
        assert!(record(3, 0, 1, sha256(&cert)).matches(&cert));
        let sha512 = digest::digest(&digest::SHA512, &spki).as_ref().to_vec();
        assert!(record(3, 1, 2, sha512).matches(&cert));
        assert!(
            !record(3, 1, 1, sha256(&cert)).matches(&cert),
            "selector counts"
        );
        // Unusable: PKIX usages, unknown selector or matching, bad length.
        assert!(!record(1, 1, 1, sha256(&spki)).is_usable());
        assert!(!record(0, 1, 1, sha256(&spki)).is_usable());
        assert!(!record(3, 2, 1, sha256(&spki)).is_usable());
        assert!(!record(3, 1, 3, sha256(&spki)).is_usable());
        assert!(!record(3, 1, 1, vec![0; 31]).is_usable());
        assert!(record(2, 0, 1, sha256(&cert)).is_usable());
    }
}
