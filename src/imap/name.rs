//! Converts mailbox names between the wire (modified UTF-7, RFC 3501 5.1.3) and the store's
//! [`FolderName`]. It refuses to decide whether a folder exists or may be used.

use super::command::Mailbox;
use super::response::write_astring;
use crate::mailbox::{utf7, FolderName, MailboxError, NameKind};

/// The UTF-8 text of a wire name: modified UTF-7 decoded; raw UTF-8
/// (which RFC 3501 forbids but clients send) taken as is.
pub fn decode(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_ascii() {
        utf7::decode(text)
    } else {
        Some(text.to_owned())
    }
}

fn invalid(bytes: &[u8], reason: &'static str) -> MailboxError {
    MailboxError::InvalidName {
        kind: NameKind::Folder,
        name: String::from_utf8_lossy(bytes).into_owned(),
        reason,
    }
}

/// The folder a command's mailbox argument names.
pub fn folder(mailbox: &Mailbox<'_>) -> Result<FolderName, MailboxError> {
    let text = decode(mailbox.as_bytes())
        .ok_or_else(|| invalid(mailbox.as_bytes(), "not modified UTF-7"))?;
    FolderName::new(&text)
}

/// CREATE's argument: a trailing delimiter only says the name will have
/// children (RFC 3501 6.3.3), so it is dropped.
pub fn folder_to_create(mailbox: &Mailbox<'_>) -> Result<FolderName, MailboxError> {
    let text = decode(mailbox.as_bytes())
        .ok_or_else(|| invalid(mailbox.as_bytes(), "not modified UTF-7"))?;
    FolderName::new(text.strip_suffix('/').unwrap_or(&text))
}

/// A name on the wire: modified UTF-7, as an astring (`mailbox` in
/// RFC 3501 9).
pub fn write(out: &mut Vec<u8>, name: &str) {
    write_astring(out, utf7::encode(name).as_bytes());
}
