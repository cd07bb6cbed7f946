//! Password schemes in Dovecot's `{SCHEME}secret` notation: parses a
//! stored secret once, verifies a password against it, and hashes new
//! passwords as ARGON2ID. It refuses to know about users, files or
//! timing policy (the user database decides when to verify a dummy).

use std::fmt;

use argon2::password_hash::phc;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use sha_crypt::ShaCrypt;

use super::error::AccountError;

/// Argon2 cost of new hashes: m=19456 KiB (19 MiB), t=2, p=1, the OWASP
/// minimum recommendation for argon2id and the `argon2` crate's default.
/// Dovecot 2.3's `doveadm pw -s ARGON2ID` writes m=65536,t=3,p=1; both
/// verify here because the cost is read from each stored hash.
/// 19 MiB keeps a login at a few tens of milliseconds in an optimised
/// build, so a burst of logins cannot exhaust memory.
pub const NEW_HASH_M_COST: u32 = 19_456;
/// See [`NEW_HASH_M_COST`].
pub const NEW_HASH_T_COST: u32 = 2;
/// See [`NEW_HASH_M_COST`].
pub const NEW_HASH_P_COST: u32 = 1;

/// Stored argon2 hashes asking for more memory (KiB) than this are
/// refused: one login must not be able to take a gigabyte.
pub const MAX_ARGON2_M_COST: u32 = 1 << 20;
/// Stored argon2 hashes asking for more passes than this are refused.
pub const MAX_ARGON2_T_COST: u32 = 64;
/// Stored argon2 hashes asking for more lanes than this are refused.
pub const MAX_ARGON2_P_COST: u32 = 64;
/// Stored SHA-crypt hashes with more rounds than this are refused (the
/// crypt(3) default is 5000; a million takes about half a second).
pub const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;
/// Longest password accepted, new or offered at login.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// An argon2id hash with the cost of new hashes, of a random password
/// nobody knows. Users that do not exist (or cannot log in) are verified
/// against it, so a failed login takes as long whether or not the user
/// exists.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$hB2q+MoGLFfIAdQSGKdlEQ$u6zmO3bV4JyzRVKXAuR/1mOGGMRaHm1Jn7VLimhjbUs";

/// A stored secret, parsed. `Debug` never shows the secret itself.
#[derive(Clone)]
pub enum Secret {
    /// `{ARGON2ID}`, `{ARGON2I}` or `{CRYPT}$argon2...`: a PHC string.
    /// (Boxed: a parsed PHC string is about 300 bytes.)
    Argon2(Box<phc::PasswordHash>),
    /// `{SHA512-CRYPT}`, `{SHA256-CRYPT}` or `{CRYPT}$6$`/`$5$`: crypt(3)
    /// Modular Crypt Format.
    ShaCrypt(sha_crypt::PasswordHash),
    /// `{PLAIN}`: the password itself, for tests and throwaway setups.
    Plain(String),
    /// A scheme spate does not implement, or a secret that does not parse
    /// or exceeds a cost bound: the user cannot log in.
    Unusable {
        scheme: String,
        reason: &'static str,
    },
}

impl Secret {
    /// Parses a password field of a passwd-file. A field without a
    /// `{SCHEME}` prefix is `CRYPT`, as in Dovecot's passwd-file driver.
    /// Scheme names are case-insensitive. Never fails: what cannot be used
    /// becomes [`Secret::Unusable`] with the reason.
    pub fn parse(field: &str) -> Secret {
        let (scheme, secret) = match field.strip_prefix('{').and_then(|r| r.split_once('}')) {
            Some((scheme, secret)) => (scheme.to_ascii_uppercase(), secret),
            None => ("CRYPT".to_owned(), field),
        };
        let parsed = match scheme.as_str() {
            "ARGON2ID" => parse_argon2(secret, "argon2id"),
            "ARGON2I" => parse_argon2(secret, "argon2i"),
            "SHA512-CRYPT" => parse_sha_crypt(secret, "6"),
            "SHA256-CRYPT" => parse_sha_crypt(secret, "5"),
            "CRYPT" if secret.starts_with("$argon2id$") => parse_argon2(secret, "argon2id"),
            "CRYPT" if secret.starts_with("$argon2i$") => parse_argon2(secret, "argon2i"),
            "CRYPT" if secret.starts_with("$6$") => parse_sha_crypt(secret, "6"),
            "CRYPT" if secret.starts_with("$5$") => parse_sha_crypt(secret, "5"),
            "CRYPT" => Err("only $6$, $5$ and $argon2 crypt hashes are supported"),
            "PLAIN" if secret.is_empty() => Err("empty password"),
            "PLAIN" => Ok(Secret::Plain(secret.to_owned())),
            _ => Err("unknown password scheme"),
        };
        parsed.unwrap_or_else(|reason| Secret::Unusable { scheme, reason })
    }

    /// The secret every unknown user is checked against.
    pub(crate) fn dummy() -> Secret {
        parse_argon2(DUMMY_HASH, "argon2id").unwrap_or_else(|reason| Secret::Unusable {
            scheme: "ARGON2ID".into(),
            reason,
        })
    }

    /// Whether a login can succeed with this secret at all.
    pub fn is_usable(&self) -> bool {
        !matches!(self, Secret::Unusable { .. })
    }

    /// Checks `password`. `Ok(false)` for a wrong password and for an
    /// unusable secret (after spending the same time as a real check);
    /// `Err` only when the hash function itself failed.
    pub fn verify(&self, password: &[u8]) -> Result<bool, AccountError> {
        if password.len() > MAX_PASSWORD_LEN {
            // Still spend the time, so length is not a shortcut.
            let _ = Secret::dummy().verify(b"")?;
            return Ok(false);
        }
        let result = match self {
            Secret::Argon2(hash) => Argon2::default().verify_password(password, hash.as_ref()),
            Secret::ShaCrypt(hash) => ShaCrypt::default().verify_password(password, hash),
            Secret::Plain(plain) => return Ok(constant_time_eq(plain.as_bytes(), password)),
            Secret::Unusable { .. } => {
                let _ = Secret::dummy().verify(password)?;
                return Ok(false);
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
            Err(e) => Err(AccountError::Hash(e.to_string())),
        }
    }

    /// The scheme name as written in a passwd-file.
    pub fn scheme(&self) -> &str {
        match self {
            Secret::Argon2(hash) if hash.algorithm.as_str() == "argon2i" => "ARGON2I",
            Secret::Argon2(_) => "ARGON2ID",
            Secret::ShaCrypt(hash) if hash.id() == "5" => "SHA256-CRYPT",
            Secret::ShaCrypt(_) => "SHA512-CRYPT",
            Secret::Plain(_) => "PLAIN",
            Secret::Unusable { scheme, .. } => scheme,
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Unusable { scheme, reason } => {
                write!(f, "Secret::Unusable({scheme}: {reason})")
            }
            other => write!(f, "Secret({{{}}}...)", other.scheme()),
        }
    }
}

fn parse_argon2(text: &str, algorithm: &str) -> Result<Secret, &'static str> {
    let hash = phc::PasswordHash::new(text).map_err(|_| "not a PHC string")?;
    if hash.algorithm.as_str() != algorithm {
        return Err("PHC algorithm does not match the scheme");
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("PHC string without salt or hash");
    }
    let params = argon2::Params::try_from(&hash).map_err(|_| "bad argon2 parameters")?;
    if params.m_cost() > MAX_ARGON2_M_COST
        || params.t_cost() > MAX_ARGON2_T_COST
        || params.p_cost() > MAX_ARGON2_P_COST
    {
        return Err("argon2 cost above spate's bound");
    }
    Ok(Secret::Argon2(Box::new(hash)))
}

fn parse_sha_crypt(text: &str, id: &str) -> Result<Secret, &'static str> {
    let hash = sha_crypt::PasswordHash::new(text).map_err(|_| "not a crypt(3) string")?;
    if hash.id() != id {
        return Err("crypt id does not match the scheme");
    }
    let fields: Vec<&str> = hash.fields().map(|f| f.as_str()).collect();
    let rest = match fields.as_slice() {
        [rounds, rest @ ..] if rounds.starts_with("rounds=") => {
            let n: u32 = rounds["rounds=".len()..]
                .parse()
                .map_err(|_| "bad rounds")?;
            if !(sha_crypt::Params::ROUNDS_MIN..=MAX_SHA_CRYPT_ROUNDS).contains(&n) {
                return Err("rounds outside 1000..=1000000");
            }
            rest
        }
        all => all,
    };
    match rest {
        [salt, digest] if salt.len() <= 16 && !digest.is_empty() => Ok(Secret::ShaCrypt(hash)),
        _ => Err("crypt string needs salt and hash"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// A password about to be stored: non-empty, at most
/// [`MAX_PASSWORD_LEN`] bytes, no control characters (they cannot be
/// typed at a login prompt and a newline would break the file).
pub struct NewPassword(String);

impl NewPassword {
    pub fn parse(text: &str) -> Result<NewPassword, AccountError> {
        if text.is_empty() {
            return Err(AccountError::BadPassword("it is empty"));
        }
        if text.len() > MAX_PASSWORD_LEN {
            return Err(AccountError::BadPassword("it is longer than 1024 bytes"));
        }
        if text.chars().any(char::is_control) {
            return Err(AccountError::BadPassword("it contains control characters"));
        }
        Ok(NewPassword(text.to_owned()))
    }

    /// The passwd-file field for this password: `{ARGON2ID}$argon2id$...`
    /// with a fresh random salt and the cost of [`NEW_HASH_M_COST`].
    pub fn hash(&self) -> Result<String, AccountError> {
        let params = argon2::Params::new(NEW_HASH_M_COST, NEW_HASH_T_COST, NEW_HASH_P_COST, None)
            .map_err(|e| AccountError::Hash(e.to_string()))?;
        let hasher = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let hash = hasher
            .hash_password(self.0.as_bytes())
            .map_err(|e| AccountError::Hash(e.to_string()))?;
        Ok(format!("{{ARGON2ID}}{hash}"))
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `doveadm pw -s ARGON2ID -p secret` (Dovecot 2.3.19).
    const DOVEADM_ARGON2ID_SECRET: &str = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$qgolhMZigXE8h35hKhS5vw$EGlZEt2TzJIZQrLmoRbZJnJHZMgBbwC9Fe8fnAbKYRQ";
    /// `doveadm pw -s SHA512-CRYPT -p secret` (Dovecot 2.3.19).
    const DOVEADM_SHA512_SECRET: &str = "{SHA512-CRYPT}$6$EmY6HmvoO.wS2NHm$8wFJM3lxBU64Y4HCS0pxwogzxVUwj96Xq1cSP4/dmV6BAI/2jm1sgk19aouAFRcKFwLB1Hc3YU2Eqhh3fzOdp1";
    /// `PasswordHasher().hash("secret")` of Python's argon2-cffi 25.1
    /// (m=65536,t=3,p=4; `doveadm pw -t` verifies it too).
    const ARGON2_CFFI_SECRET: &str = "$argon2id$v=19$m=65536,t=3,p=4$+aw+ZWT2Lj0t3XxFU3/k/Q$4xTJILR7WEp1wya9B64kvUyLx9UzGBopXfklki3FLxI";
    /// `openssl passwd -6 -salt abc secret`.
    const OPENSSL_SHA512_SECRET: &str = "$6$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1";
    /// `openssl passwd -6 -salt 'rounds=10000$abc' secret`.
    const OPENSSL_SHA512_ROUNDS: &str = "$6$rounds=10000$abc$3DDOWZMNRRKDT142bUtYQRY52ycK/xshRXOQgIyt2QRXzLDnoPq6v4lO9bA3f/JhGz1mHrAh.QUDGHmaE5RxP.";

    fn ok(field: &str, password: &str) -> bool {
        let secret = Secret::parse(field);
        assert!(secret.is_usable(), "{field}: {secret:?}");
        secret.verify(password.as_bytes()).unwrap()
    }

    #[test]
    fn new_argon2id_hash_verifies() {
        // Hashes written this way also pass Dovecot 2.3's
        // `doveadm pw -t HASH -p PASSWORD` (checked by hand).
        let field = NewPassword::parse("correct horse").unwrap().hash().unwrap();
        assert!(
            field.starts_with("{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$"),
            "{field}"
        );
        assert!(ok(&field, "correct horse"));
        assert!(!ok(&field, "correct horsE"));
        assert_eq!(Secret::parse(&field).scheme(), "ARGON2ID");
    }

    #[test]
    fn foreign_argon2id_vectors_verify() {
        assert!(ok(DOVEADM_ARGON2ID_SECRET, "secret"));
        assert!(!ok(DOVEADM_ARGON2ID_SECRET, "secret2"));
        assert!(ok(&format!("{{ARGON2ID}}{ARGON2_CFFI_SECRET}"), "secret"));
        assert!(!ok(&format!("{{argon2id}}{ARGON2_CFFI_SECRET}"), "Secret"));
        assert!(ok(&format!("{{CRYPT}}{ARGON2_CFFI_SECRET}"), "secret"));
    }

    #[test]
    fn sha512_crypt_vectors_verify() {
        assert!(ok(DOVEADM_SHA512_SECRET, "secret"));
        assert!(!ok(DOVEADM_SHA512_SECRET, "Secret"));
        assert!(ok(
            &format!("{{SHA512-CRYPT}}{OPENSSL_SHA512_SECRET}"),
            "secret"
        ));
        assert!(!ok(
            &format!("{{SHA512-CRYPT}}{OPENSSL_SHA512_SECRET}"),
            "secret "
        ));
        assert!(ok(
            &format!("{{SHA512-CRYPT}}{OPENSSL_SHA512_ROUNDS}"),
            "secret"
        ));
        assert!(!ok(
            &format!("{{SHA512-CRYPT}}{OPENSSL_SHA512_ROUNDS}"),
            "wrong"
        ));
        // No prefix means CRYPT, which recognises $6$.
        assert!(ok(OPENSSL_SHA512_SECRET, "secret"));
    }

    #[test]
    fn plain_verifies() {
        assert!(ok("{PLAIN}pa:ss wd", "pa:ss wd"));
        assert!(!ok("{PLAIN}passwd", "passwd2"));
        assert!(!ok("{PLAIN}passwd", "passw"));
        assert!(!ok("{PLAIN}passwd", ""));
    }

    #[test]
    fn unusable_secrets_never_verify() {
        for field in [
            "{MD5-CRYPT}$1$abc$xyz",
            "{SSHA}abcdef",
            "{PLAIN}",
            "{ARGON2ID}not-a-phc",
            "{ARGON2ID}$argon2i$v=19$m=19456,t=2,p=1$oGBXcUJ9ijFuuq+4Ub/Mgw$vrDbJuAhl6s5pvC0bjnmkHRWhSOGaPXeK7iy2q5MDT0",
            "{ARGON2ID}$argon2id$v=19$m=4194304,t=2,p=1$oGBXcUJ9ijFuuq+4Ub/Mgw$vrDbJuAhl6s5pvC0bjnmkHRWhSOGaPXeK7iy2q5MDT0",
            "{SHA512-CRYPT}$5$abc$xyz",
            "{SHA512-CRYPT}$6$rounds=99999999$abc$3DDOWZMNRRKDT142bUtYQRY52ycK",
            "{SHA512-CRYPT}$6$abc",
            "des-crypt-hash",
            "",
        ] {
            let secret = Secret::parse(field);
            assert!(!secret.is_usable(), "{field} is usable");
            assert!(!secret.verify(b"secret").unwrap());
        }
        assert_eq!(Secret::parse("{SSHA}abc").scheme(), "SSHA");
    }

    #[test]
    fn dummy_has_the_cost_of_new_hashes() {
        let Secret::Argon2(hash) = Secret::dummy() else {
            panic!("dummy hash does not parse");
        };
        let params = argon2::Params::try_from(hash.as_ref()).unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (NEW_HASH_M_COST, NEW_HASH_T_COST, NEW_HASH_P_COST)
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", Secret::parse("{PLAIN}hunter2"));
        assert!(!text.contains("hunter2"), "{text}");
        let text = format!("{:?}", NewPassword::parse("hunter2").unwrap());
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn bad_new_passwords_are_refused() {
        assert!(NewPassword::parse("").is_err());
        assert!(NewPassword::parse("a\nb").is_err());
        assert!(NewPassword::parse(&"x".repeat(1025)).is_err());
        assert!(NewPassword::parse("späße ok").is_ok());
    }
}
