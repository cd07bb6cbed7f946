//! Bounce classes: what kind of failure a reply reports (a receiver's, or
//! spate's own for DNS, connection and TLS failures), so operators count
//! and act on kinds rather than texts. `[[class]]` rules of the shaping
//! file name a class for replies they match (spate ships rules for the
//! common texts; a user's file goes first); a reply no rule matches is
//! classed by its enhanced status code (RFC 3463), else `other`.
//!
//! ```toml
//! [[class]]
//! name = "mailbox-full"
//! reply = "(?i)over quota|mailbox (is )?full"
//! ```

use serde::Deserialize;

use super::reply_match::{ReplyMatch, ReplyMatchEntry};
use super::rules::ShapingError;

/// See the module header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BounceClass {
    InvalidRecipient = 0,
    MailboxFull = 1,
    MessageTooLarge = 2,
    /// Refused as spam, or by the receiver's policy (block lists, SPF,
    /// DMARC, reputation).
    Policy = 3,
    /// The receiver asks to slow down.
    RateLimited = 4,
    Tls = 5,
    Dns = 6,
    Connection = 7,
    Other = 8,
}

impl BounceClass {
    pub const ALL: [BounceClass; 9] = [
        BounceClass::InvalidRecipient,
        BounceClass::MailboxFull,
        BounceClass::MessageTooLarge,
        BounceClass::Policy,
        BounceClass::RateLimited,
        BounceClass::Tls,
        BounceClass::Dns,
        BounceClass::Connection,
        BounceClass::Other,
    ];

    /// The name in rules, log lines, metrics and DSNs.
    pub fn label(self) -> &'static str {
        match self {
            BounceClass::InvalidRecipient => "invalid-recipient",
            BounceClass::MailboxFull => "mailbox-full",
            BounceClass::MessageTooLarge => "message-too-large",
            BounceClass::Policy => "policy",
            BounceClass::RateLimited => "rate-limited",
            BounceClass::Tls => "tls",
            BounceClass::Dns => "dns",
            BounceClass::Connection => "connection",
            BounceClass::Other => "other",
        }
    }

    fn named(name: &str) -> Option<BounceClass> {
        BounceClass::ALL.into_iter().find(|c| c.label() == name)
    }

    /// The class RFC 3463's enhanced status code gives a reply (X.1.x
    /// addressing, X.2.2 mailbox full, X.2.3 and X.3.4 too large, X.4.x
    /// routing and network, X.7.x security and policy).
    pub fn of_status(reply: &str) -> BounceClass {
        let Some(status) = crate::delivery::dsn::status_of(reply) else {
            return BounceClass::Other;
        };
        let mut parts = status.splitn(3, '.').skip(1);
        let (Some(subject), Some(detail)) = (parts.next(), parts.next()) else {
            return BounceClass::Other;
        };
        match (subject, detail) {
            ("1", _) => BounceClass::InvalidRecipient,
            ("2", "2") => BounceClass::MailboxFull,
            ("2", "3") | ("3", "4") => BounceClass::MessageTooLarge,
            ("4", "3") | ("4", "4") => BounceClass::Dns,
            ("4", "1") | ("4", "2") | ("4", "7") => BounceClass::Connection,
            ("4", "5") => BounceClass::RateLimited,
            ("7", "4") | ("7", "5") | ("7", "10") | ("7", "11") => BounceClass::Tls,
            ("7", _) => BounceClass::Policy,
            _ => BounceClass::Other,
        }
    }
}

impl std::fmt::Display for BounceClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A `[[class]]` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassEntry {
    /// The class: one of [`BounceClass::label`]'s names.
    name: String,
    reply: Option<String>,
    code: Option<u16>,
    enhanced: Option<String>,
}

/// A compiled `[[class]]` rule.
#[derive(Debug, Clone)]
pub struct ClassRule {
    matcher: ReplyMatch,
    pub class: BounceClass,
}

impl ClassRule {
    pub fn compile(entry: &ClassEntry) -> Result<ClassRule, ShapingError> {
        let class = BounceClass::named(&entry.name).ok_or_else(|| {
            let names: Vec<_> = BounceClass::ALL.iter().map(|c| c.label()).collect();
            ShapingError::Invalid(format!(
                "[[class]] name {:?}: want one of {}",
                entry.name,
                names.join(", ")
            ))
        })?;
        let matcher = ReplyMatch::compile(
            ReplyMatchEntry {
                reply: entry.reply.as_deref(),
                code: entry.code,
                enhanced: entry.enhanced.as_deref(),
            },
            "[[class]]",
        )?;
        Ok(ClassRule { matcher, class })
    }

    pub fn matches(&self, reply: &str) -> bool {
        self.matcher.matches(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaping::Shaping;

    #[test]
    fn the_shipped_rules_class_the_common_replies() {
        let shaping = Shaping::shipped();
        for (reply, class) in [
            ("550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table", "invalid-recipient"),
            ("550 5.1.1 The email account that you tried to reach does not exist.", "invalid-recipient"),
            ("552 5.2.2 The email account that you tried to reach is over quota.", "mailbox-full"),
            ("452 4.2.2 Mailbox full", "mailbox-full"),
            ("552 5.3.4 Message size exceeds fixed maximum message size", "message-too-large"),
            ("421 4.7.28 Our system has detected an unusual rate of unsolicited mail", "rate-limited"),
            ("421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred", "rate-limited"),
            ("451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77714)", "rate-limited"),
            ("550 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", "policy"),
            ("550 5.7.606 Access denied, banned sending IP [192.0.2.1].", "policy"),
            ("550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy", "policy"),
            ("451 4.7.5 TLS handshake failed", "tls"),
            ("451 4.7.4 TLS is required but the server does not offer STARTTLS", "tls"),
            ("451 4.4.3 example.test: no record found for Query", "dns"),
            ("451 4.4.1 connection to mx.example.test[192.0.2.1]:25 failed: Connection refused (os error 111)", "connection"),
            ("451 4.4.2 timeout waiting for the DATA reply", "connection"),
            ("554 5.4.6 too many hops", "other"),
            ("550 5.1.10 Recipient address has null MX", "dns"),
            ("450 4.2.0 something unusual", "other"),
            ("not a reply", "other"),
        ] {
            assert_eq!(shaping.classify(reply).label(), class, "{reply}");
        }
    }

    #[test]
    fn without_a_rule_the_enhanced_code_decides() {
        for (reply, class) in [
            ("550 5.1.2 bad system", BounceClass::InvalidRecipient),
            ("552 5.2.2 x", BounceClass::MailboxFull),
            ("552 5.3.4 x", BounceClass::MessageTooLarge),
            ("554 5.7.1 x", BounceClass::Policy),
            ("451 4.4.5 x", BounceClass::RateLimited),
            ("451 4.4.1 x", BounceClass::Connection),
            ("451 4.4.4 x", BounceClass::Dns),
            ("454 4.7.5 x", BounceClass::Tls),
            ("451 x", BounceClass::Other),
        ] {
            assert_eq!(BounceClass::of_status(reply), class, "{reply}");
        }
    }

    #[test]
    fn a_users_rule_goes_first_and_bad_names_are_refused() {
        let mine = Shaping::parse("[[class]]\nname = \"policy\"\nreply = \"(?i)user unknown\"\n")
            .unwrap()
            .over(Shaping::shipped());
        assert_eq!(mine.classify("550 5.1.1 user unknown"), BounceClass::Policy);
        let err = Shaping::parse("[[class]]\nname = \"spam\"\nreply = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("want one of"), "{err}");
        assert!(
            Shaping::parse("[[class]]\nname = \"tls\"\n").is_err(),
            "no matcher"
        );
    }
}
