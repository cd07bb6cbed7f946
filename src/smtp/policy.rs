//! What the SMTP core asks about local users while a transaction is being
//! built: does this local recipient exist (RFC 5321 4.2.2's 550 5.1.1 at RCPT
//! time, so we never accept mail we cannot deliver), is its mailbox full
//! or its quota smaller than the message,
//! and may an authenticated user send as this address. It is a trait so
//! the core stays sans-IO; the glue answers from its in-memory directory.

use std::fmt::Debug;

/// The verdict on one recipient in a local domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalRecipient {
    Accept,
    /// No such user or alias: 550 5.1.1.
    Unknown,
    /// The mailbox is over quota. RFC 5321 4.5.3.1.10 and RFC 3463 X.2.2:
    /// 452 4.2.2 when it may clear up, 552 5.2.2 when it will not.
    MailboxFull {
        permanent: bool,
    },
    /// The message's declared size is larger than the whole quota (RFC
    /// 1870 6.4: 552 5.2.2, never retried).
    LargerThanQuota,
}

/// Answers the core's questions about local users; see the module header.
pub trait LocalPolicy: Debug {
    /// `address` is `local@domain` as received, its domain one of ours
    /// (or the bare `Postmaster`); `declared_size` is MAIL's SIZE
    /// parameter, if given. Called on the executor: no file I/O.
    fn recipient(&self, address: &str, declared_size: Option<u64>) -> LocalRecipient;

    /// Whether a message of `size` octets is larger than a local
    /// recipient's whole quota (asked at the end of DATA, RFC 1870 6.3).
    fn larger_than_quota(&self, address: &str, size: u64) -> bool {
        let _ = (address, size);
        false
    }

    /// Whether `user`, authenticated, may use `sender` as the envelope
    /// sender (`""` is the null sender).
    fn may_send_as(&self, user: &str, sender: &str) -> bool;
}

/// Accepts every local recipient and any sender: the policy when no user
/// directory is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl LocalPolicy for AcceptAll {
    fn recipient(&self, _address: &str, _declared_size: Option<u64>) -> LocalRecipient {
        LocalRecipient::Accept
    }

    fn may_send_as(&self, _user: &str, _sender: &str) -> bool {
        true
    }
}

/// The policy when no mailbox tier is configured: local-domain recipients
/// are accepted (they wait in the queue until one is, `451 4.3.5`), but
/// the bare `<Postmaster>` reaches nobody and is refused at RCPT: it would
/// only ever bounce (RFC 5321 4.5.1 asks for a postmaster; a host without
/// mailboxes has none to offer).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMailboxes;

impl LocalPolicy for NoMailboxes {
    fn recipient(&self, address: &str, _declared_size: Option<u64>) -> LocalRecipient {
        if address.contains('@') {
            LocalRecipient::Accept
        } else {
            LocalRecipient::Unknown
        }
    }

    fn may_send_as(&self, _user: &str, _sender: &str) -> bool {
        true
    }
}
