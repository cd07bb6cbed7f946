//! Unit tests of the signer: keys made by ring at test time, messages in,
//! headers out, checked against the RFC's rules and verified with ring.

use super::*;
use crate::config::DkimDomain;
use base64::Engine as _;
use ring::signature::{self, KeyPair};

const MESSAGE: &[u8] = b"Received: from client.test ([192.0.2.7])\r\n\tby mx.test (spate) with ESMTPA; Sat, 1 Jan 2000 00:00:00 +0000\r\nFrom: Alice <alice@example.com>\r\nTo: bob@far.test\r\nSubject: hello\r\n  world\r\nMessage-ID: <1@example.com>\r\n\r\n.leading dot\r\n8-bit: caf\xc3\xa9\r\n\r\n\r\n";

/// A PEM file holding `der` under `label`.
fn pem_file(dir: &Path, name: &str, label: &str, der: &[u8]) -> PathBuf {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).unwrap());
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// An Ed25519 PKCS#8 key made by ring, and its raw public key.
fn ed25519(dir: &Path) -> (PathBuf, Vec<u8>) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = pair.public_key().as_ref().to_vec();
    (
        pem_file(dir, "ed.pem", "PRIVATE KEY", pkcs8.as_ref()),
        public,
    )
}

fn config(domains: &[(&str, &str, &Path)]) -> DkimConfig {
    let mut config = DkimConfig::default();
    for (domain, selector, path) in domains {
        config.domain.insert(
            (*domain).to_owned(),
            DkimDomain {
                selector: (*selector).to_owned(),
                private_key: path.to_path_buf(),
            },
        );
    }
    config
}

/// The tags of a `DKIM-Signature:` field, unfolded, whitespace removed.
fn tags(header: &[u8]) -> HashMap<String, String> {
    let text = std::str::from_utf8(header).unwrap();
    let value = text.strip_prefix("DKIM-Signature:").expect("field name");
    value
        .split(';')
        .filter_map(|tag| {
            let tag: String = tag.chars().filter(|c| !c.is_whitespace()).collect();
            let (k, v) = tag.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[test]
fn an_ed25519_signature_verifies_and_carries_the_rfc_tags() {
    let dir = tempfile::tempdir().unwrap();
    let (path, public) = ed25519(dir.path());
    let signer = Signer::load(&config(&[("example.com", "sel1", &path)])).unwrap();
    let key = signer.key_for(MESSAGE).expect("a key for example.com");
    assert_eq!(key.kind, KeyKind::Ed25519);
    assert!(!key.is_slow());
    let header = key.sign(MESSAGE).unwrap();
    assert!(header.ends_with(b"\r\n"));
    // Folded: within RFC 5322 2.1.1's 998 (mail-auth folds the tag list
    // at 76 columns, but not its first line, which may pass 78).
    for line in header.split(|&b| b == b'\n') {
        assert!(line.len() <= 998, "{}", String::from_utf8_lossy(line));
    }
    assert!(header.split(|&b| b == b'\n').count() > 3);
    let t = tags(&header);
    assert_eq!(t["v"], "1");
    assert_eq!(t["a"], "ed25519-sha256");
    assert_eq!(t["d"], "example.com");
    assert_eq!(t["s"], "sel1");
    assert_eq!(t["c"], "relaxed/relaxed");
    // Every configured field, present or not, and From once more.
    let h: Vec<String> = t["h"].split(':').map(str::to_ascii_lowercase).collect();
    assert_eq!(h.iter().filter(|n| *n == "from").count(), 2, "{h:?}");
    for name in ["to", "subject", "message-id", "cc", "reply-to", "date"] {
        assert!(h.contains(&name.to_owned()), "{name} in {h:?}");
    }
    assert!(!h.contains(&"received".to_owned()));

    // RFC 8463 3: the signature is Ed25519 over the SHA-256 of the
    // canonicalized header fields and the signature field with b= empty.
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&t["b"])
        .unwrap();
    let mut data = Vec::new();
    let headers: Vec<(&[u8], &[u8])> = from::fields(MESSAGE).collect();
    let mut used = vec![false; headers.len()];
    // RFC 6376 5.4.2: instances are taken from the bottom up.
    for name in t["h"].split(':') {
        if let Some(i) = (0..headers.len())
            .rev()
            .find(|&i| !used[i] && headers[i].0.eq_ignore_ascii_case(name.as_bytes()))
        {
            used[i] = true;
            relaxed(headers[i].0, headers[i].1, &mut data);
        }
    }
    // RFC 6376 3.7: the new field itself, canonicalized, b= emptied.
    let text = std::str::from_utf8(&header).unwrap();
    let (name, value) = text.split_once(':').unwrap();
    let mut field = Vec::new();
    relaxed(name.as_bytes(), value.as_bytes(), &mut field);
    let field = String::from_utf8(field).unwrap();
    let start = field.find("; b=").unwrap() + 4;
    let end = start + field[start..].find(';').unwrap();
    data.extend(format!("{}{}", &field[..start], &field[end..]).into_bytes());
    data.truncate(data.len() - 2); // no CRLF after the signature field
    let digest = ring::digest::digest(&ring::digest::SHA256, &data);
    signature::UnparsedPublicKey::new(&signature::ED25519, &public)
        .verify(digest.as_ref(), &sig)
        .expect("the signature verifies");
}

/// RFC 6376 3.4.2, relaxed header canonicalization of one field.
fn relaxed(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.extend(name.trim_ascii().to_ascii_lowercase());
    out.push(b':');
    let unfolded: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    let mut last_space = false;
    let mut v = Vec::new();
    for b in unfolded {
        if b == b' ' || b == b'\t' {
            last_space = true;
        } else {
            if last_space && !v.is_empty() {
                v.push(b' ');
            }
            last_space = false;
            v.push(b);
        }
    }
    out.extend(v);
    out.extend(b"\r\n");
}

#[test]
fn the_body_hash_is_of_the_relaxed_body() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = ed25519(dir.path());
    let signer = Signer::load(&config(&[("example.com", "s", &path)])).unwrap();
    let key = signer.key_for(MESSAGE).unwrap();
    let t = tags(&key.sign(MESSAGE).unwrap());
    // RFC 6376 3.4.4: trailing blanks and empty lines at the end go; the
    // body then ends in one CRLF. Dots are as unstuffed, 8-bit as is.
    let canonical = b".leading dot\r\n8-bit: caf\xc3\xa9\r\n";
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical);
    assert_eq!(
        t["bh"],
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    );
}

#[test]
fn the_key_is_chosen_by_the_from_domain_or_its_closest_parent() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = ed25519(dir.path());
    let signer = Signer::load(&config(&[
        ("example.com", "a", &path),
        ("news.example.com", "b", &path),
    ]))
    .unwrap();
    let pick = |from: &str| {
        let m = format!("From: {from}\r\nSubject: x\r\n\r\nbody\r\n");
        signer
            .key_for(m.as_bytes())
            .map(|k| (k.domain.clone(), k.selector.clone()))
    };
    assert_eq!(
        pick("a@example.com"),
        Some(("example.com".into(), "a".into()))
    );
    assert_eq!(
        pick("a@x.news.example.com"),
        Some(("news.example.com".into(), "b".into()))
    );
    assert_eq!(
        pick("a@deep.sub.example.com"),
        Some(("example.com".into(), "a".into()))
    );
    assert_eq!(pick("a@example.org"), None);
    assert_eq!(pick("a@notexample.com"), None);
    assert!(Signer::default().key_for(MESSAGE).is_none());
}

#[test]
fn an_rsa_key_in_pkcs1_or_pkcs8_loads_with_its_size() {
    let dir = tempfile::tempdir().unwrap();
    // ring cannot generate RSA keys: openssl does, as an operator would.
    let pkcs8 = dir.path().join("rsa8.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pkcs8)
        .status();
    let Ok(status) = status else {
        panic!("openssl is needed to make an RSA test key");
    };
    assert!(status.success());
    let pkcs1 = dir.path().join("rsa1.pem");
    let status = std::process::Command::new("openssl")
        .args(["rsa", "-traditional", "-in"])
        .arg(&pkcs8)
        .arg("-out")
        .arg(&pkcs1)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(std::fs::read_to_string(&pkcs1)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    for path in [&pkcs8, &pkcs1] {
        let signer = Signer::load(&config(&[("example.com", "s", path)])).unwrap();
        let key = signer.key_for(MESSAGE).unwrap();
        assert_eq!(key.kind, KeyKind::Rsa(2048));
        assert!(key.is_slow());
        let t = tags(&key.sign(MESSAGE).unwrap());
        assert_eq!(t["a"], "rsa-sha256");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&t["b"])
                .unwrap()
                .len(),
            256
        );
    }
}

#[test]
fn a_bad_key_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = Signer::load(&config(&[("example.com", "s", &missing)])).unwrap_err();
    assert!(matches!(err, DkimError::Read { .. }));
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let err = Signer::load(&config(&[("example.com", "s", &garbage)])).unwrap_err();
    assert!(err.to_string().contains("garbage.pem"), "{err}");
    assert!(err.to_string().contains("example.com"), "{err}");
    // A PKCS#8 that is neither RSA nor Ed25519 (here: junk bytes).
    let junk = pem_file(
        dir.path(),
        "junk.pem",
        "PRIVATE KEY",
        &[0x30, 0x03, 0x02, 0x01, 0x00],
    );
    let err = Signer::load(&config(&[("example.com", "s", &junk)])).unwrap_err();
    assert!(matches!(err, DkimError::Key { .. }), "{err}");
}

#[test]
fn canonicalization_parses_as_the_c_tag_does() {
    let parse = |s: &str| Canonicalization::try_from(s.to_owned());
    assert_eq!(
        parse("relaxed/relaxed").unwrap(),
        Canonicalization::default()
    );
    assert_eq!(
        parse("simple/relaxed").unwrap().to_string(),
        "simple/relaxed"
    );
    assert_eq!(parse("relaxed").unwrap().to_string(), "relaxed/simple");
    assert_eq!(parse("Simple/Simple").unwrap().to_string(), "simple/simple");
    assert!(parse("nowsp").is_err());
    assert!(parse("relaxed/").is_err());
}

#[test]
fn simple_canonicalization_and_custom_headers_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = ed25519(dir.path());
    let mut config = config(&[("example.com", "s", &path)]);
    config.headers = vec!["From".into(), "Subject".into()];
    config.over_sign = vec![];
    config.canonicalization = Canonicalization::try_from("simple/simple".to_owned()).unwrap();
    let signer = Signer::load(&config).unwrap();
    let t = tags(&signer.key_for(MESSAGE).unwrap().sign(MESSAGE).unwrap());
    assert_eq!(t["c"], "simple/simple");
    let mut h: Vec<String> = t["h"].split(':').map(str::to_ascii_lowercase).collect();
    h.sort();
    assert_eq!(h, ["from", "subject"]);
}

#[test]
fn the_modulus_length_is_read_from_der() {
    // SEQUENCE { INTEGER 0x00 0x80 (9 bits of value: 128 -> 8 bits), INTEGER 3 }
    assert_eq!(
        rsa_modulus_bits(&[0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x03]),
        Some(8)
    );
    assert_eq!(
        rsa_modulus_bits(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x03]),
        Some(1)
    );
    assert_eq!(rsa_modulus_bits(&[0x31, 0x00]), None);
}
