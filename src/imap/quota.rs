//! The QUOTA extension's commands (RFC 9208): GETQUOTAROOT, GETQUOTA and
//! SETQUOTA (refused). Each user has one quota root, named `""`, over all
//! of their mailboxes; its one resource is STORAGE, the user's configured
//! quota against the store's usage figure (the one APPEND, COPY and
//! delivery check). It refuses to enforce anything: APPEND and COPY do
//! (`NO [OVERQUOTA]`, see [`super::authenticated::over_quota`]).

use super::authenticated::User;
use super::command::Mailbox;
use super::name;
use super::reply::{completed, tagged, write_mailbox_error, Say};
use super::response::{Code, Status};

/// What CAPABILITY adds. No `QUOTA=RES-MESSAGE`: there is no message
/// count limit; no `QUOTASET`: users cannot set their quota.
pub const QUOTA_CAPABILITIES: [&str; 2] = ["QUOTA", "QUOTA=RES-STORAGE"];

/// The name of a user's only quota root, as it goes on the wire.
const ROOT: &[u8] = b"\"\"";

/// STORAGE is in units of 1024 octets (RFC 9208 5.1): the usage rounded
/// up, the limit down, so a client never sees more room than there is.
fn kib_up(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// RFC 9208 4.2.1: `* QUOTA "" (STORAGE used limit)`; an empty list for a
/// user without a quota (no resource is limited).
fn write_quota(user: &User, out: &mut Vec<u8>) -> Result<(), crate::mailbox::MailboxError> {
    let storage = match user.quota {
        Some(limit) => Some((user.mailbox.stored_bytes()?, limit)),
        None => None,
    };
    out.extend_from_slice(b"* QUOTA ");
    out.extend_from_slice(ROOT);
    out.extend_from_slice(b" (");
    if let Some((used, limit)) = storage {
        let text = format!("STORAGE {} {}", kib_up(used), limit / 1024);
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(b")\r\n");
    Ok(())
}

/// GETQUOTAROOT (RFC 9208 4.1.2): every mailbox name, existing or not
/// (the RFC allows asking before a CREATE), is under the user's root.
pub fn get_quota_root(user: &User, out: &mut Vec<u8>, tag: &str, mailbox: &Mailbox<'_>) {
    let folder = match name::folder(mailbox) {
        Ok(folder) => folder,
        Err(e) => return write_mailbox_error(out, tag, &e),
    };
    let mut reply = b"* QUOTAROOT ".to_vec();
    name::write(&mut reply, folder.as_str());
    reply.push(b' ');
    reply.extend_from_slice(ROOT);
    reply.extend_from_slice(b"\r\n");
    if let Err(e) = write_quota(user, &mut reply) {
        return write_mailbox_error(out, tag, &e);
    }
    out.extend_from_slice(&reply);
    completed(out, tag, None, "GETQUOTAROOT")
}

/// GETQUOTA (RFC 9208 4.1.1): only the root `""` exists.
pub fn get_quota(user: &User, out: &mut Vec<u8>, tag: &str, root: &[u8]) {
    if !root.is_empty() {
        return tagged(
            out,
            tag,
            Status::No,
            Some(&Code::NonExistent),
            Say::NoSuchQuotaRoot,
        );
    }
    let mut reply = Vec::new();
    if let Err(e) = write_quota(user, &mut reply) {
        return write_mailbox_error(out, tag, &e);
    }
    out.extend_from_slice(&reply);
    completed(out, tag, None, "GETQUOTA")
}

/// SETQUOTA (RFC 9208 4.1.3): the administrator sets quotas (the user
/// directory), never the user; the RFC lets a server refuse, and we do not
/// advertise QUOTASET.
pub fn set_quota(out: &mut Vec<u8>, tag: &str) {
    tagged(
        out,
        tag,
        Status::No,
        Some(&Code::NoPerm),
        Say::QuotaNotSettable,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_in_kib_never_showing_more_room_than_there_is() {
        assert_eq!(kib_up(0), 0);
        assert_eq!(kib_up(1), 1);
        assert_eq!(kib_up(1024), 1);
        assert_eq!(kib_up(1025), 2);
        assert_eq!(1023 / 1024, 0, "a limit rounds down");
    }
}
