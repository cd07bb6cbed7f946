//! Sizes for mailbox quotas: `ByteSize` (`100M`, `1G`, plain bytes) and
//! Dovecot's `quota_rule=*:storage=SIZE` extra field. It refuses to
//! enforce anything; the mailbox store does that.

use std::fmt;

/// A size in bytes, written as a number with an optional 1024-based unit
/// (`B`, `K`, `M`, `G`, `T`, case-insensitive, optionally followed by `B`
/// or `iB`: `512K`, `100MB`, `1GiB`), as Dovecot reads quota sizes.
/// In TOML it may also be a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

/// Why a text is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("{0:?} is not a size (a number with an optional K, M, G or T)")]
    Syntax(String),
    #[error("{0:?} does not fit in 64 bits")]
    Overflow(String),
}

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, SizeError> {
        let text = text.trim();
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = text.split_at(digits);
        let syntax = || SizeError::Syntax(text.to_owned());
        let number: u64 = number.parse().map_err(|_| syntax())?;
        let unit = unit.trim_start().to_ascii_uppercase();
        let unit = unit
            .strip_suffix("IB")
            .or_else(|| unit.strip_suffix('B').filter(|u| !u.is_empty()))
            .unwrap_or(&unit);
        let shift = match unit {
            "" | "B" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            "T" => 40,
            _ => return Err(syntax()),
        };
        number
            .checked_mul(1 << shift)
            .map(ByteSize)
            .ok_or_else(|| SizeError::Overflow(text.to_owned()))
    }

    /// The size as a limit: `None` for 0, which means unlimited.
    pub fn limit(self) -> Option<u64> {
        (self.0 > 0).then_some(self.0)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ByteSize::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => ByteSize::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// The storage limit of a Dovecot quota rule value (`*:storage=100M`),
/// the only form spate understands: `None` for other rules (per-mailbox
/// rules, message counts, percentages), which are ignored.
pub fn storage_rule(value: &str) -> Option<ByteSize> {
    let size = value.strip_prefix("*:storage=")?;
    ByteSize::parse(size).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        for (text, want) in [
            ("0", 0),
            ("123", 123),
            ("10B", 10),
            ("512K", 512 << 10),
            ("512k", 512 << 10),
            ("100M", 100 << 20),
            ("100MB", 100 << 20),
            ("1GiB", 1 << 30),
            ("2 G", 2 << 30),
            ("1T", 1 << 40),
        ] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(want)), "{text}");
        }
        for text in ["", "M", "1X", "-1", "1.5G", "10%"] {
            assert!(ByteSize::parse(text).is_err(), "{text}");
        }
        assert!(matches!(
            ByteSize::parse("99999999999T"),
            Err(SizeError::Overflow(_))
        ));
        assert_eq!(ByteSize(0).limit(), None);
        assert_eq!(ByteSize(5).limit(), Some(5));
    }

    #[test]
    fn storage_rules_parse() {
        assert_eq!(storage_rule("*:storage=100M"), Some(ByteSize(100 << 20)));
        assert_eq!(storage_rule("*:storage=0"), Some(ByteSize(0)));
        assert_eq!(storage_rule("*:messages=1000"), None);
        assert_eq!(storage_rule("Trash:storage=+10%"), None);
        assert_eq!(storage_rule("*:storage=10%"), None);
    }
}
