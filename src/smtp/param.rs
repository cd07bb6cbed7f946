//! Parses the ESMTP parameters of MAIL and RCPT (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8,
//! RFC 3461 RET/ENVID/NOTIFY/ORCPT) into typed values, borrowing; it refuses to apply limits or policy.

use thiserror::Error;

use crate::envelope::{BodyType, DsnReturn, Notify};

/// RFC 3461 4.4: "The ENVID parameter MAY be up to 100 characters in length."
/// Counted after xtext decoding.
pub const MAX_ENVID_LENGTH: usize = 100;

/// RFC 3461 4.2: "The ORCPT parameter MAY be up to 500 characters in length."
pub const MAX_ORCPT_LENGTH: usize = 500;

/// The parameters we know, named in replies so a client sees which one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    Size,
    Body,
    Smtputf8,
    Ret,
    Envid,
    Notify,
    Orcpt,
}

impl Keyword {
    /// The keyword as it is spelled on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Size => "SIZE",
            Keyword::Body => "BODY",
            Keyword::Smtputf8 => "SMTPUTF8",
            Keyword::Ret => "RET",
            Keyword::Envid => "ENVID",
            Keyword::Notify => "NOTIFY",
            Keyword::Orcpt => "ORCPT",
        }
    }
}

impl std::fmt::Display for Keyword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the parameters were refused. All are permanent (the same bytes will
/// fail again); `Unknown`, `Duplicate` and `Unsupported` are RFC 5321's 555
/// ("parameters not recognized or not implemented"), the others 501.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParamError {
    #[error("malformed esmtp-param")]
    Syntax,
    #[error("unknown parameter")]
    Unknown,
    #[error("parameter given twice")]
    Duplicate,
    #[error("unsupported {0} value")]
    Unsupported(Keyword),
    #[error("bad {0} value")]
    BadValue(Keyword),
}

/// MAIL FROM parameters. Absent ones are `None`/`false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailParams<'a> {
    /// RFC 1870 declared size; saturates instead of overflowing, so a
    /// ridiculous value is simply "too big".
    pub size: Option<u64>,
    pub body: Option<BodyType>,
    pub smtputf8: bool,
    pub ret: Option<DsnReturn>,
    /// RFC 3461 ENVID, still xtext-encoded.
    pub envid: Option<&'a str>,
}

impl MailParams<'_> {
    /// No parameter was given: the only form a plain HELO session may use
    /// (RFC 5321 4.1.1.11).
    pub fn is_empty(&self) -> bool {
        *self == MailParams::default()
    }
}

/// RCPT TO parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RcptParams<'a> {
    pub notify: Option<Notify>,
    /// RFC 3461 ORCPT, `addr-type;xtext` verbatim.
    pub orcpt: Option<&'a str>,
}

impl RcptParams<'_> {
    /// No parameter was given (see [`MailParams::is_empty`]).
    pub fn is_empty(&self) -> bool {
        *self == RcptParams::default()
    }
}

/// One `esmtp-keyword ["=" esmtp-value]` (RFC 5321 4.1.2).
struct RawParam<'a> {
    keyword: &'a [u8],
    value: Option<&'a [u8]>,
}

/// Splits the text after a path into parameters. Parameters are separated
/// by SP; runs of spaces are tolerated.
fn params(raw: &[u8]) -> impl Iterator<Item = Result<RawParam<'_>, ParamError>> {
    raw.split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .map(|token| {
            let (keyword, value) = match token.iter().position(|&b| b == b'=') {
                Some(eq) => (&token[..eq], Some(&token[eq + 1..])),
                None => (token, None),
            };
            // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
            let keyword_ok = keyword.first().is_some_and(u8::is_ascii_alphanumeric)
                && keyword
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-');
            // esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 (RFC 6531 3.3)
            let value_ok = value.is_none_or(|v| {
                !v.is_empty()
                    && v.iter()
                        .all(|&b| matches!(b, 33..=60 | 62..=126) || b >= 0x80)
            });
            if keyword_ok && value_ok {
                Ok(RawParam { keyword, value })
            } else {
                Err(ParamError::Syntax)
            }
        })
}

/// Stores `value` in `slot`, refusing a second occurrence.
fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), ParamError> {
    if slot.is_some() {
        return Err(ParamError::Duplicate);
    }
    *slot = Some(value);
    Ok(())
}

/// Parses MAIL parameters (the bytes after the reverse-path).
pub fn parse_mail_params(raw: &[u8]) -> Result<MailParams<'_>, ParamError> {
    let mut p = MailParams::default();
    let mut smtputf8_seen = false;
    for param in params(raw) {
        let RawParam { keyword, value } = param?;
        if keyword.eq_ignore_ascii_case(b"SIZE") {
            set_once(&mut p.size, parse_size(value)?)?;
        } else if keyword.eq_ignore_ascii_case(b"BODY") {
            let v = value.ok_or(ParamError::BadValue(Keyword::Body))?;
            let body = if v.eq_ignore_ascii_case(b"7BIT") {
                BodyType::SevenBit
            } else if v.eq_ignore_ascii_case(b"8BITMIME") {
                BodyType::EightBitMime
            } else if v.eq_ignore_ascii_case(b"BINARYMIME") {
                // RFC 3030 3: only valid when BINARYMIME is advertised; it is not.
                return Err(ParamError::Unsupported(Keyword::Body));
            } else {
                return Err(ParamError::BadValue(Keyword::Body));
            };
            set_once(&mut p.body, body)?;
        } else if keyword.eq_ignore_ascii_case(b"SMTPUTF8") {
            // RFC 6531 3.4: "If this parameter is provided, it MUST not accept a value."
            if value.is_some() {
                return Err(ParamError::BadValue(Keyword::Smtputf8));
            }
            if smtputf8_seen {
                return Err(ParamError::Duplicate);
            }
            smtputf8_seen = true;
            p.smtputf8 = true;
        } else if keyword.eq_ignore_ascii_case(b"RET") {
            let v = value.ok_or(ParamError::BadValue(Keyword::Ret))?;
            let ret = if v.eq_ignore_ascii_case(b"FULL") {
                DsnReturn::Full
            } else if v.eq_ignore_ascii_case(b"HDRS") {
                DsnReturn::Headers
            } else {
                return Err(ParamError::BadValue(Keyword::Ret));
            };
            set_once(&mut p.ret, ret)?;
        } else if keyword.eq_ignore_ascii_case(b"ENVID") {
            let v = value.ok_or(ParamError::BadValue(Keyword::Envid))?;
            let s = xtext(v, MAX_ENVID_LENGTH).ok_or(ParamError::BadValue(Keyword::Envid))?;
            set_once(&mut p.envid, s)?;
        } else {
            return Err(ParamError::Unknown);
        }
    }
    Ok(p)
}

/// Parses RCPT parameters (the bytes after the forward-path).
pub fn parse_rcpt_params(raw: &[u8]) -> Result<RcptParams<'_>, ParamError> {
    let mut p = RcptParams::default();
    for param in params(raw) {
        let RawParam { keyword, value } = param?;
        if keyword.eq_ignore_ascii_case(b"NOTIFY") {
            let v = value.ok_or(ParamError::BadValue(Keyword::Notify))?;
            set_once(&mut p.notify, parse_notify(v)?)?;
        } else if keyword.eq_ignore_ascii_case(b"ORCPT") {
            let v = value.ok_or(ParamError::BadValue(Keyword::Orcpt))?;
            set_once(&mut p.orcpt, parse_orcpt(v)?)?;
        } else {
            return Err(ParamError::Unknown);
        }
    }
    Ok(p)
}

/// `SIZE=1*20DIGIT` (RFC 1870 3): digits only; saturating so that an
/// absurd declaration is treated as too big rather than as an error.
fn parse_size(value: Option<&[u8]>) -> Result<u64, ParamError> {
    let v = value.ok_or(ParamError::BadValue(Keyword::Size))?;
    if v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return Err(ParamError::BadValue(Keyword::Size));
    }
    Ok(v.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// RFC 3461 4.1: `NOTIFY="NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" )`;
/// NEVER must stand alone.
fn parse_notify(v: &[u8]) -> Result<Notify, ParamError> {
    let bad = ParamError::BadValue(Keyword::Notify);
    if v.eq_ignore_ascii_case(b"NEVER") {
        return Ok(Notify {
            never: true,
            ..Notify::default()
        });
    }
    let mut n = Notify::default();
    for item in v.split(|&b| b == b',') {
        if item.eq_ignore_ascii_case(b"SUCCESS") {
            n.success = true;
        } else if item.eq_ignore_ascii_case(b"FAILURE") {
            n.failure = true;
        } else if item.eq_ignore_ascii_case(b"DELAY") {
            n.delay = true;
        } else {
            return Err(bad);
        }
    }
    Ok(n)
}

/// RFC 3461 4.2: `ORCPT=addr-type ";" xtext`; addr-type is an atom such as
/// `rfc822` or `utf-8`.
fn parse_orcpt(v: &[u8]) -> Result<&str, ParamError> {
    let bad = ParamError::BadValue(Keyword::Orcpt);
    let semi = v.iter().position(|&b| b == b';').ok_or(bad)?;
    let addr_type = &v[..semi];
    if addr_type.is_empty()
        || !addr_type
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(bad);
    }
    xtext(&v[semi + 1..], MAX_ORCPT_LENGTH)
        .filter(|x| !x.is_empty())
        .ok_or(bad)?;
    // The whole value is ASCII once xtext checked its tail.
    std::str::from_utf8(v).map_err(|_| bad)
}

/// Validates RFC 3461 section 4 xtext: `xchar` is `!`..`~` except `+` and
/// `=`; `hexchar` is `+` and two hex digits (upper case per the RFC; lower
/// case is tolerated). Returns the text if its decoded length is within
/// `max`.
fn xtext(v: &[u8], max: usize) -> Option<&str> {
    let mut decoded = 0usize;
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => {
                let hex = v.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                i += 3;
            }
            b'=' => return None,
            33..=126 => i += 1,
            _ => return None,
        }
        decoded += 1;
    }
    if decoded > max {
        return None;
    }
    std::str::from_utf8(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_params() {
        assert_eq!(parse_mail_params(b""), Ok(MailParams::default()));
        assert_eq!(parse_mail_params(b"   "), Ok(MailParams::default()));
        assert_eq!(parse_rcpt_params(b""), Ok(RcptParams::default()));
    }

    #[test]
    fn all_mail_params() {
        let p = parse_mail_params(b" size=1000 BODY=8bitmime SMTPUTF8 RET=HDRS ENVID=QQ314159+2B")
            .unwrap();
        assert_eq!(
            p,
            MailParams {
                size: Some(1000),
                body: Some(BodyType::EightBitMime),
                smtputf8: true,
                ret: Some(DsnReturn::Headers),
                envid: Some("QQ314159+2B"),
            }
        );
        assert_eq!(
            parse_mail_params(b" BODY=7BIT").unwrap().body,
            Some(BodyType::SevenBit)
        );
        assert_eq!(
            parse_mail_params(b" RET=full").unwrap().ret,
            Some(DsnReturn::Full)
        );
    }

    #[test]
    fn size_values() {
        assert_eq!(parse_mail_params(b" SIZE=0").unwrap().size, Some(0));
        assert_eq!(
            parse_mail_params(b" SIZE=99999999999999999999")
                .unwrap()
                .size,
            Some(u64::MAX)
        );
        for bad in [
            &b" SIZE"[..],
            b" SIZE=",
            b" SIZE=-1",
            b" SIZE=1k",
            b" SIZE=123456789012345678901",
        ] {
            assert!(
                parse_mail_params(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn body_values() {
        assert_eq!(
            parse_mail_params(b" BODY=BINARYMIME"),
            Err(ParamError::Unsupported(Keyword::Body))
        );
        assert_eq!(
            parse_mail_params(b" BODY=8BIT"),
            Err(ParamError::BadValue(Keyword::Body))
        );
        assert_eq!(
            parse_mail_params(b" BODY"),
            Err(ParamError::BadValue(Keyword::Body))
        );
    }

    #[test]
    fn smtputf8_takes_no_value() {
        assert_eq!(
            parse_mail_params(b" SMTPUTF8=yes"),
            Err(ParamError::BadValue(Keyword::Smtputf8))
        );
    }

    #[test]
    fn duplicates_and_unknown() {
        assert_eq!(
            parse_mail_params(b" SIZE=1 SIZE=2"),
            Err(ParamError::Duplicate)
        );
        assert_eq!(
            parse_mail_params(b" SMTPUTF8 smtputf8"),
            Err(ParamError::Duplicate)
        );
        assert_eq!(
            parse_mail_params(b" RET=FULL RET=HDRS"),
            Err(ParamError::Duplicate)
        );
        assert_eq!(parse_mail_params(b" AUTH=<>"), Err(ParamError::Unknown));
        assert_eq!(
            parse_mail_params(b" NOTIFY=NEVER"),
            Err(ParamError::Unknown)
        );
        assert_eq!(parse_rcpt_params(b" SIZE=10"), Err(ParamError::Unknown));
        assert_eq!(
            parse_rcpt_params(b" NOTIFY=NEVER NOTIFY=NEVER"),
            Err(ParamError::Duplicate)
        );
    }

    #[test]
    fn param_syntax() {
        assert_eq!(parse_mail_params(b" -SIZE=1"), Err(ParamError::Syntax));
        assert_eq!(parse_mail_params(b" SIZE=1=2"), Err(ParamError::Syntax));
        assert_eq!(parse_mail_params(b" SI_ZE=1"), Err(ParamError::Syntax));
        assert_eq!(parse_mail_params(b" SIZE=1\t"), Err(ParamError::Syntax));
        assert_eq!(parse_mail_params(b" =1"), Err(ParamError::Syntax));
    }

    #[test]
    fn envid_xtext() {
        assert!(parse_mail_params(b" ENVID=abc+3Dd").is_ok());
        assert!(parse_mail_params(b" ENVID=abc+3dd").is_ok());
        for bad in [
            &b" ENVID=a+3"[..],
            b" ENVID=a+ZZ",
            b" ENVID",
            b" ENVID=\xc3\xa9",
        ] {
            assert_eq!(
                parse_mail_params(bad),
                Err(ParamError::BadValue(Keyword::Envid)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let max = format!(" ENVID={}", "a".repeat(100));
        assert!(parse_mail_params(max.as_bytes()).is_ok());
        let encoded_max = format!(" ENVID={}", "+41".repeat(100));
        assert!(parse_mail_params(encoded_max.as_bytes()).is_ok());
        let over = format!(" ENVID={}", "a".repeat(101));
        assert!(parse_mail_params(over.as_bytes()).is_err());
    }

    #[test]
    fn notify_values() {
        let never = parse_rcpt_params(b" NOTIFY=never").unwrap().notify.unwrap();
        assert!(never.never && !never.success && !never.failure && !never.delay);
        let n = parse_rcpt_params(b" NOTIFY=SUCCESS,delay")
            .unwrap()
            .notify
            .unwrap();
        assert!(n.success && n.delay && !n.failure && !n.never);
        for bad in [
            &b" NOTIFY=NEVER,SUCCESS"[..],
            b" NOTIFY=",
            b" NOTIFY=SUCCESS,",
            b" NOTIFY=ALWAYS",
            b" NOTIFY",
        ] {
            assert!(
                parse_rcpt_params(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn orcpt_values() {
        let p = parse_rcpt_params(b" ORCPT=rfc822;bob+40example.com NOTIFY=FAILURE").unwrap();
        assert_eq!(p.orcpt, Some("rfc822;bob+40example.com"));
        assert!(p.notify.unwrap().failure);
        for bad in [
            &b" ORCPT=bob"[..],
            b" ORCPT=;bob",
            b" ORCPT=rfc822;",
            b" ORCPT=rfc 822",
        ] {
            assert!(
                parse_rcpt_params(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
