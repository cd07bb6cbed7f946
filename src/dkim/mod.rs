//! DKIM signing of outgoing mail (RFC 6376, RFC 8463 for Ed25519): the
//! keys of `[dkim]` loaded from their PEM files, and for one message the
//! `DKIM-Signature:` header of the key of its RFC5322.From domain. Sans-IO
//! once loaded: bytes in, header out; no clock of its own beyond the `t=`
//! tag mail-auth writes, no socket, no spool. Which messages are signed
//! (those of clients that may relay) and where the header goes are the
//! SMTP glue's business, not this module's.
//!
//! Canonicalization, hashing and the header's syntax are `mail-auth`'s
//! (Stalwart's), on its `ring` backend.

pub mod from;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization as Canon, DkimSigner, Done};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::config::DkimConfig;

/// The header fields signed by default: RFC 6376 5.4.1's list of those
/// that SHOULD be signed, less the ones of mailing lists and resent mail.
/// mail-auth signs every instance present and, for a name absent from the
/// message, its absence (the name is still listed in `h=`), so none can
/// be added on the way without breaking the signature (RFC 6376 5.4.2).
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "In-Reply-To",
    "References",
];

/// Named once more in `h=` than the message has them (RFC 6376 8.15:
/// "over-signing"), so that a second From cannot be added above the
/// signed one and shown by a reader instead.
pub const DEFAULT_OVER_SIGN: &[&str] = &["From"];

/// `c=` (RFC 6376 3.4): header and body canonicalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Canonicalization {
    pub header: Canon,
    pub body: Canon,
}

impl Default for Canonicalization {
    /// relaxed/relaxed: what most signers use; `simple` breaks on any
    /// whitespace change a relay may make.
    fn default() -> Self {
        Canonicalization {
            header: Canon::Relaxed,
            body: Canon::Relaxed,
        }
    }
}

impl TryFrom<String> for Canonicalization {
    type Error = String;

    /// `header/body` as in the `c=` tag; a lone `header` means
    /// `header/simple` (RFC 6376 3.5: "If only one algorithm is named,
    /// that algorithm is used for the header and "simple" is used for the
    /// body").
    fn try_from(text: String) -> Result<Self, String> {
        let one = |s: &str| match s.trim().to_ascii_lowercase().as_str() {
            "relaxed" => Ok(Canon::Relaxed),
            "simple" => Ok(Canon::Simple),
            other => Err(format!(
                "dkim canonicalization {other:?}: want relaxed or simple (e.g. \"relaxed/relaxed\")"
            )),
        };
        let (header, body) = match text.split_once('/') {
            Some((h, b)) => (one(h)?, one(b)?),
            None => (one(&text)?, Canon::Simple),
        };
        Ok(Canonicalization { header, body })
    }
}

impl fmt::Display for Canonicalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |c: Canon| match c {
            Canon::Relaxed => "relaxed",
            Canon::Simple => "simple",
        };
        write!(f, "{}/{}", name(self.header), name(self.body))
    }
}

/// Why the keys of `[dkim]` could not be loaded (at start: spate does not
/// start; on a reload: the reload is refused and the old keys stay).
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("dkim key for {domain}: cannot read {path}: {source}")]
    Read {
        domain: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dkim key for {domain}: {path}: {why}")]
    Key {
        domain: String,
        path: PathBuf,
        why: String,
    },
}

/// Signing failed for a message (the message is then accepted unsigned).
#[derive(Debug, thiserror::Error)]
#[error("dkim signing for {domain} failed: {why}")]
pub struct SignError {
    pub domain: String,
    pub why: String,
}

/// The kind of a loaded key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `rsa-sha256`; the modulus in bits.
    Rsa(usize),
    /// `ed25519-sha256` (RFC 8463).
    Ed25519,
}

/// One signing domain's key, selector and signing template.
pub struct DomainKey {
    /// `d=`: the configured domain (lower-case, A-labels).
    pub domain: String,
    /// `s=`.
    pub selector: String,
    pub kind: KeyKind,
    signer: DkimSigner<DkimKey, Done>,
}

impl fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl DomainKey {
    /// The `DKIM-Signature:` field for `message` (header section, blank
    /// line, body: CRLF lines, as it will be relayed), folded, ending in
    /// CRLF, to be put above the message's first line.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let signature = self.signer.sign(message).map_err(|e| SignError {
            domain: self.domain.clone(),
            why: e.to_string(),
        })?;
        Ok(signature.to_header().into_bytes())
    }

    /// An RSA signature costs hundreds of microseconds (an Ed25519 one
    /// tens): the glue signs those on the blocking pool, not on the core.
    pub fn is_slow(&self) -> bool {
        matches!(self.kind, KeyKind::Rsa(_))
    }
}

/// Every signing domain's key; built from `[dkim]` at start and on each
/// reload, then shared read-only by every core.
#[derive(Debug, Default)]
pub struct Signer {
    keys: HashMap<String, Arc<DomainKey>>,
}

impl Signer {
    /// Reads every domain's key file. A file that does not read or holds
    /// no usable key fails the whole load, naming the file.
    pub fn load(config: &DkimConfig) -> Result<Signer, DkimError> {
        let mut headers: Vec<String> = config.headers.clone();
        headers.extend(config.over_sign.iter().cloned());
        let mut keys = HashMap::with_capacity(config.domain.len());
        for (domain, entry) in &config.domain {
            let (key, kind) = read_key(domain, &entry.private_key)?;
            let signer = DkimSigner::from_key(key)
                .domain(domain.clone())
                .selector(entry.selector.clone())
                .headers(headers.iter().cloned())
                .header_canonicalization(config.canonicalization.header)
                .body_canonicalization(config.canonicalization.body);
            let key = DomainKey {
                domain: domain.clone(),
                selector: entry.selector.clone(),
                kind,
                signer,
            };
            keys.insert(domain.clone(), Arc::new(key));
        }
        Ok(Signer { keys })
    }

    /// Every domain's key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &DomainKey> {
        self.keys.values().map(|k| &**k)
    }

    /// No domain has a key: nothing is ever signed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for mail from `domain`: its own, else that of the closest
    /// parent domain that has one (mail from `news.example.com` signed
    /// `d=example.com`, which DMARC's relaxed alignment accepts).
    pub fn key_for_domain(&self, domain: &str) -> Option<&Arc<DomainKey>> {
        let mut name = domain;
        loop {
            if let Some(key) = self.keys.get(name) {
                return Some(key);
            }
            name = name.split_once('.')?.1;
        }
    }

    /// The key for `message`, by its RFC5322.From domain (see
    /// [`from::from_domain`]); `None` when it has none or no key fits.
    pub fn key_for(&self, message: &[u8]) -> Option<Arc<DomainKey>> {
        if self.keys.is_empty() {
            return None;
        }
        let domain = from::from_domain(message)?;
        self.key_for_domain(&domain).cloned()
    }
}

/// Reads a PEM private key: RSA (PKCS#1 `RSA PRIVATE KEY` or PKCS#8
/// `PRIVATE KEY`, 2048 to 4096 bits as ring takes them; RFC 8301 4 asks
/// for at least 1024 and recommends 2048) or Ed25519 (PKCS#8, as `openssl
/// genpkey -algorithm ed25519` writes it, with or without its public key).
fn read_key(domain: &str, path: &Path) -> Result<(DkimKey, KeyKind), DkimError> {
    let pem = std::fs::read(path).map_err(|source| DkimError::Read {
        domain: domain.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let bad = |why: String| DkimError::Key {
        domain: domain.to_owned(),
        path: path.to_owned(),
        why,
    };
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| bad(format!("no PEM private key in it ({e})")))?;
    match der {
        PrivateKeyDer::Pkcs1(_) => {
            let key = RsaKey::<Sha256>::from_key_der(der)
                .map_err(|e| bad(format!("not a usable RSA key: {e}")))?;
            let bits = key.public_key_bits();
            Ok((DkimKey::Rsa(key), KeyKind::Rsa(bits)))
        }
        PrivateKeyDer::Pkcs8(pkcs8) => {
            let bytes = pkcs8.secret_pkcs8_der();
            if let Ok(key) = Ed25519Key::from_pkcs8_maybe_unchecked_der(bytes) {
                return Ok((DkimKey::Ed25519(key), KeyKind::Ed25519));
            }
            let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(pkcs8.clone_key()))
                .map_err(|e| {
                    bad(format!(
                        "neither an Ed25519 key nor a usable RSA key (2048 to 4096 bits): {e}"
                    ))
                })?;
            let bits = key.public_key_bits();
            Ok((DkimKey::Rsa(key), KeyKind::Rsa(bits)))
        }
        _ => Err(bad(
            "an EC key: DKIM signs with RSA or Ed25519 only".to_owned()
        )),
    }
}

/// What [`RsaKey`] does not tell: the modulus length, from its DER public
/// key (`RSAPublicKey ::= SEQUENCE { modulus INTEGER, ... }`).
trait ModulusBits {
    fn public_key_bits(&self) -> usize;
}

impl ModulusBits for RsaKey<Sha256> {
    fn public_key_bits(&self) -> usize {
        rsa_modulus_bits(&self.public_key()).unwrap_or(0)
    }
}

/// The bit length of the modulus of a DER `RSAPublicKey`.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    // SEQUENCE, then INTEGER modulus; lengths in DER's short or long form.
    fn header(input: &[u8], tag: u8) -> Option<(usize, &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        if first < 0x80 {
            return Some((first as usize, rest));
        }
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | b as usize);
        Some((len, &rest[n..]))
    }
    let (_, inner) = header(der, 0x30)?;
    let (len, rest) = header(inner, 0x02)?;
    let modulus = rest.get(..len)?;
    let skip = modulus.iter().take_while(|&&b| b == 0).count();
    let significant = &modulus[skip..];
    let first = *significant.first()?;
    Some((significant.len() - 1) * 8 + (8 - first.leading_zeros() as usize))
}

#[cfg(test)]
mod tests;
