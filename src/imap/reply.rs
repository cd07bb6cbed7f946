//! The session's fixed reply texts in one table, and the one place where mailbox store errors
//! become IMAP response codes (RFC 5530). It refuses to decide when a reply is sent or to
//! encode it (see [`super::response`]).

use super::response::{write_tagged, Code, Status};
use crate::mailbox::MailboxError;

/// Every fixed text the session sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    Ready,
    Completed,
    LoggedIn,
    LoggingOut,
    Autologout,
    TooManyErrors,
    BeginTls,
    TlsUnavailable,
    AlreadyAuthenticated,
    NotAuthenticated,
    NoMailboxSelected,
    PrivacyRequired,
    AuthFailed,
    AuthUnavailable,
    AuthCancelled,
    UnsupportedMechanism,
    InvalidBase64,
    ReadOnly,
    NoSuchMailbox,
    TryCreate,
    InvalidMailboxName,
    MailboxExists,
    CannotDeleteInbox,
    InvalidSequence,
    SavedResultUnsupported,
    UnsupportedItem,
    /// RFC 7162 3.2.3: QRESYNC parameters before ENABLE QRESYNC.
    QresyncNotEnabled,
    /// RFC 7162 3.2.6: VANISHED is a UID FETCH modifier.
    VanishedNeedsUid,
    /// RFC 7162 3.1.3: some messages failed UNCHANGEDSINCE.
    ConditionalStoreFailed,
    BadCharset,
    SomeExpunged,
    IdleTerminated,
    Idling,
    MessageTooBig,
    Unavailable,
    ServerBug,
    DiskFull,
    NotPermitted,
    InUse,
    RecentReadOnly,
    InvalidKeyword,
    TooManyKeywords,
    QuotaExceeded,
    NoSuchQuotaRoot,
    QuotaNotSettable,
}

impl Say {
    pub fn as_str(self) -> &'static str {
        match self {
            Say::Ready => "spate IMAP4rev1 ready",
            Say::Completed => "completed",
            Say::LoggedIn => "Logged in",
            Say::LoggingOut => "Logging out",
            Say::Autologout => "Autologout; idle for too long",
            Say::TooManyErrors => "Too many invalid commands",
            Say::BeginTls => "Begin TLS negotiation now",
            Say::TlsUnavailable => "TLS is not available",
            Say::AlreadyAuthenticated => "Already authenticated",
            Say::NotAuthenticated => "Log in first",
            Say::NoMailboxSelected => "No mailbox selected",
            Say::PrivacyRequired => "Plaintext authentication is disallowed without TLS",
            Say::AuthFailed => "Authentication failed",
            Say::AuthUnavailable => "Authentication is temporarily unavailable",
            Say::AuthCancelled => "Authentication cancelled",
            Say::UnsupportedMechanism => "Unsupported authentication mechanism",
            Say::InvalidBase64 => "Invalid SASL response",
            Say::ReadOnly => "Mailbox is read-only",
            Say::NoSuchMailbox => "Mailbox does not exist",
            Say::TryCreate => "Mailbox does not exist",
            Say::InvalidMailboxName => "Invalid mailbox name",
            Say::MailboxExists => "Mailbox already exists",
            Say::CannotDeleteInbox => "INBOX cannot be deleted",
            Say::InvalidSequence => "Invalid message sequence number",
            Say::SavedResultUnsupported => "No saved search result ($)",
            Say::UnsupportedItem => "Unsupported data item",
            Say::QresyncNotEnabled => "ENABLE QRESYNC first",
            Say::VanishedNeedsUid => "VANISHED is only allowed with UID FETCH",
            Say::ConditionalStoreFailed => "Conditional STORE failed for some messages",
            Say::BadCharset => "Unsupported charset (use UTF-8 or US-ASCII)",
            Say::SomeExpunged => "Some of the requested messages no longer exist",
            Say::IdleTerminated => "IDLE terminated",
            Say::Idling => "idling",
            Say::MessageTooBig => "Message too big",
            Say::Unavailable => "Mailbox temporarily unavailable, try again",
            Say::ServerBug => "Internal error",
            Say::DiskFull => "Out of disk space or quota",
            Say::NotPermitted => "Operation not permitted",
            Say::InUse => "Mailbox is in use, try again",
            Say::RecentReadOnly => "\\Recent cannot be changed",
            Say::InvalidKeyword => "Invalid keyword",
            Say::TooManyKeywords => "Too many keywords in this mailbox (26 at most)",
            Say::QuotaExceeded => "Quota exceeded (mailbox for user is full)",
            Say::NoSuchQuotaRoot => "No such quota root (yours is \"\")",
            Say::QuotaNotSettable => "Quotas are set by the administrator",
        }
    }
}

/// The response code and text for a store error.
pub fn mailbox_error(error: &MailboxError) -> (Code<'static>, Say) {
    match error {
        MailboxError::InvalidName { .. } => (Code::Cannot, Say::InvalidMailboxName),
        MailboxError::FolderNotFound(_) => (Code::NonExistent, Say::NoSuchMailbox),
        MailboxError::FolderExists(_) => (Code::AlreadyExists, Say::MailboxExists),
        MailboxError::NoSuchMessage { .. } => (Code::ExpungeIssued, Say::SomeExpunged),
        MailboxError::NotPermitted(_) => (Code::Cannot, Say::NotPermitted),
        MailboxError::InUse => (Code::InUse, Say::InUse),
        MailboxError::UserNotFound(_) => (Code::Unavailable, Say::Unavailable),
        e if e.is_disk_full() => (Code::OverQuota, Say::DiskFull),
        MailboxError::Io { .. } => (Code::Unavailable, Say::Unavailable),
    }
}

/// `tag NO [code] text` for a store error; logs the ones that are the
/// server's trouble.
pub fn write_mailbox_error(out: &mut Vec<u8>, tag: &str, error: &MailboxError) {
    if error.is_transient() {
        tracing::warn!(error = %error, "IMAP command failed in the mailbox store");
    }
    let (code, say) = mailbox_error(error);
    write_tagged(out, tag, Status::No, Some(&code), say.as_str());
}

/// `tag STATUS [code] text` from the table.
pub fn tagged(out: &mut Vec<u8>, tag: &str, status: Status, code: Option<&Code<'_>>, say: Say) {
    write_tagged(out, tag, status, code, say.as_str());
}

/// `tag OK NAME completed`.
pub fn completed(out: &mut Vec<u8>, tag: &str, code: Option<&Code<'_>>, command: &str) {
    let text = format!("{command} {}", Say::Completed.as_str());
    write_tagged(out, tag, Status::Ok, code, &text);
}
