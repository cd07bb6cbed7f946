//! The authenticated state's mailbox commands (RFC 3501 6.3): LIST, LSUB, CREATE, DELETE,
//! RENAME, SUBSCRIBE, UNSUBSCRIBE, STATUS, APPEND and opening a mailbox for SELECT/EXAMINE.
//! It refuses to handle authentication, the selected state's message commands (see
//! [`super::selected`]) or when updates are sent.

use std::collections::HashSet;
use std::time::SystemTime;

use chrono::{DateTime, FixedOffset};

use super::command::{Flag, List, Mailbox, Qresync, StatusItem};
use super::condstore::Enabled;
use super::flag::{flags_of, keyword_names};
use super::list::{self, Entry};
use super::name;
use super::reply::{completed, tagged, write_mailbox_error, Say};
use super::response::{write_list, write_untagged_status, Code, Status};
use super::selected::Selected;
use crate::mailbox::{Folder, FolderName, MailboxError, UserMailbox};

/// A logged-in user and, in the selected state, the open mailbox.
#[derive(Debug)]
pub struct User {
    pub name: String,
    pub mailbox: UserMailbox,
    pub selected: Option<Selected>,
    /// The user's quota in bytes as it was at login (a directory reload
    /// applies to the next login, as Dovecot's userdb lookup); `None` is
    /// unlimited.
    pub quota: Option<u64>,
    /// RFC 7162 CONDSTORE / QRESYNC, once enabled.
    pub enabled: Enabled,
}

/// RFC 9208 4.3.1: adding `bytes` would put the user over `quota`
/// (answered `NO [OVERQUOTA]`). The usage figure is the store's, kept up
/// to date by every delivery, APPEND, COPY and EXPUNGE; a usage that
/// cannot be measured refuses nothing (delivery checks again).
pub fn over_quota(mailbox: &UserMailbox, quota: Option<u64>, bytes: u64) -> bool {
    let Some(limit) = quota else {
        return false;
    };
    match mailbox.stored_bytes() {
        Ok(used) => used.saturating_add(bytes) > limit,
        Err(e) => {
            tracing::warn!(user = %mailbox.name(), error = %e, "cannot measure mailbox usage");
            false
        }
    }
}

/// The folder a mailbox argument names, or the NO that answers it:
/// `[TRYCREATE]` when `trycreate` (COPY, MOVE, APPEND; RFC 3501 6.3.11).
pub fn existing_folder(
    mailbox: &UserMailbox,
    name: &Mailbox<'_>,
    trycreate: bool,
) -> Result<(FolderName, Folder), (Code<'static>, Say)> {
    let folder_name = name::folder(name).map_err(|e| super::reply::mailbox_error(&e))?;
    match mailbox.folder(&folder_name) {
        Ok(folder) => Ok((folder_name, folder)),
        Err(MailboxError::FolderNotFound(_)) if trycreate => Err((Code::TryCreate, Say::TryCreate)),
        Err(e) => {
            if e.is_transient() {
                tracing::warn!(error = %e, "IMAP cannot open a folder");
            }
            Err(super::reply::mailbox_error(&e))
        }
    }
}

impl User {
    /// SELECT / EXAMINE. A failed SELECT leaves no mailbox selected
    /// (RFC 3501 6.3.1); one that closes a selected mailbox says so with
    /// `[CLOSED]` first (RFC 7162 3.2.11). `qresync` is the RFC 7162
    /// 3.2.5 parameter (the caller checked QRESYNC is enabled).
    pub fn select(
        &mut self,
        out: &mut Vec<u8>,
        tag: &str,
        mailbox: &Mailbox<'_>,
        read_only: bool,
        max_structures: usize,
        qresync: Option<&Qresync>,
    ) {
        if self.selected.take().is_some() {
            write_untagged_status(
                out,
                Status::Ok,
                Some(&Code::Closed),
                "Previous mailbox closed",
            );
        }
        let command = if read_only { "EXAMINE" } else { "SELECT" };
        let (folder_name, folder) = match existing_folder(&self.mailbox, mailbox, false) {
            Ok(found) => found,
            Err((code, say)) => return tagged(out, tag, Status::No, Some(&code), say),
        };
        let opened = Selected::open(
            folder_name,
            folder,
            read_only,
            max_structures,
            self.enabled,
            out,
        );
        match opened {
            Ok(selected) => {
                if let Some(params) = qresync {
                    selected.qresync(out, params);
                }
                completed(out, tag, Some(&selected.access_code()), command);
                self.selected = Some(selected);
            }
            Err(e) => write_mailbox_error(out, tag, &e),
        }
    }

    pub fn create(&mut self, out: &mut Vec<u8>, tag: &str, mailbox: &Mailbox<'_>) {
        let result = name::folder_to_create(mailbox).and_then(|n| {
            if n.is_inbox() {
                return Err(MailboxError::FolderExists(n.to_string()));
            }
            self.mailbox.create_folder(&n)
        });
        match result {
            Ok(_) => completed(out, tag, None, "CREATE"),
            Err(e) => write_mailbox_error(out, tag, &e),
        }
    }

    pub fn delete(&mut self, out: &mut Vec<u8>, tag: &str, mailbox: &Mailbox<'_>) {
        if mailbox.is_inbox() {
            return tagged(
                out,
                tag,
                Status::No,
                Some(&Code::Cannot),
                Say::CannotDeleteInbox,
            );
        }
        match name::folder(mailbox).and_then(|n| self.mailbox.delete_folder(&n).map(|()| n)) {
            Ok(n) => {
                if self.selected.as_ref().is_some_and(|s| s.name == n) {
                    // Its messages are gone; RFC 3501 6.3.4 leaves this
                    // open, and a view of nothing helps no one.
                    self.selected = None;
                }
                completed(out, tag, None, "DELETE")
            }
            Err(e) => write_mailbox_error(out, tag, &e),
        }
    }

    /// RENAME (RFC 3501 6.3.5; INBOX moves its messages, the store does
    /// that).
    pub fn rename(&mut self, out: &mut Vec<u8>, tag: &str, from: &Mailbox<'_>, to: &Mailbox<'_>) {
        let result = name::folder(from).and_then(|f| {
            let t = name::folder_to_create(to)?;
            self.mailbox.rename_folder(&f, &t)
        });
        match result {
            Ok(()) => completed(out, tag, None, "RENAME"),
            Err(e) => write_mailbox_error(out, tag, &e),
        }
    }

    pub fn subscribe(&mut self, out: &mut Vec<u8>, tag: &str, mailbox: &Mailbox<'_>, on: bool) {
        let command = if on { "SUBSCRIBE" } else { "UNSUBSCRIBE" };
        // RFC 3501 6.3.6 lets a server check that the folder exists, as
        // Dovecot does; UNSUBSCRIBE must work for names that are gone.
        let result = name::folder(mailbox).and_then(|n| {
            if on && !n.is_inbox() {
                self.mailbox.folder(&n)?;
            }
            self.mailbox.set_subscribed(&n, on)
        });
        match result {
            Ok(()) => completed(out, tag, None, command),
            Err(e) => write_mailbox_error(out, tag, &e),
        }
    }

    /// LIST, basic and extended (RFC 3501 6.3.8, RFC 5258, RFC 6154).
    pub fn list(&mut self, out: &mut Vec<u8>, tag: &str, request: &List<'_>) {
        let reference = name::decode(&request.reference).unwrap_or_default();
        if !request.extended && request.patterns.iter().all(|p| p.is_empty()) {
            // RFC 3501 6.3.8: the delimiter and root of the reference.
            out.extend_from_slice(b"* LIST (\\Noselect) \"/\" \"\"\r\n");
            return completed(out, tag, None, "LIST");
        }
        let patterns: Vec<String> = request
            .patterns
            .iter()
            .filter_map(|p| name::decode(p))
            .map(|p| list::join(&reference, &p))
            .collect();
        let entries = match self.entries() {
            Ok(e) => e,
            Err(e) => return write_mailbox_error(out, tag, &e),
        };
        let select = request.select;
        let show_subscribed = request.ret.subscribed || select.subscribed;
        // RFC 5258 3.5: CHILDINFO only with RECURSIVEMATCH; SUBSCRIBED is
        // the one selection option it can report here.
        let with_child_info = if select.recursive_match && select.subscribed {
            list::parents_of_subscribed(&entries)
        } else {
            HashSet::new()
        };
        for entry in &entries {
            let child_info = with_child_info.contains(entry.name.as_str());
            let listed = if select.subscribed {
                // RFC 5258 3: a name that does not meet the selection
                // itself is listed when RECURSIVEMATCH finds a
                // descendant that does.
                entry.subscribed || child_info
            } else {
                entry.exists || entry.has_children
            };
            if !listed
                || (select.special_use && entry.special_use.is_none())
                || !patterns.iter().any(|p| list::matches(p, &entry.name))
            {
                continue;
            }
            write_entry(
                out,
                "LIST",
                &entry.attributes(request.extended, show_subscribed),
                &entry.name,
            );
            if child_info {
                // The extended data item goes before the line's CRLF.
                out.truncate(out.len() - 2);
                out.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n");
            }
        }
        completed(out, tag, None, "LIST")
    }

    /// LSUB (RFC 3501 6.3.9): subscribed names; `\Noselect` for those
    /// that do not exist and for the parents `%` stops at (see
    /// [`list::lsub`]).
    pub fn lsub(&mut self, out: &mut Vec<u8>, tag: &str, reference: &[u8], pattern: &[u8]) {
        let reference = name::decode(reference).unwrap_or_default();
        let Some(pattern) = name::decode(pattern) else {
            return completed(out, tag, None, "LSUB");
        };
        let pattern = list::join(&reference, &pattern);
        let entries = match self.entries() {
            Ok(e) => e,
            Err(e) => return write_mailbox_error(out, tag, &e),
        };
        for (name, noselect) in list::lsub(&entries, &pattern) {
            let attrs: &[&str] = if noselect { &["\\Noselect"] } else { &[] };
            write_entry(out, "LSUB", attrs, name);
        }
        completed(out, tag, None, "LSUB")
    }

    fn entries(&self) -> Result<Vec<Entry>, MailboxError> {
        let folders = self.mailbox.list_folders()?;
        let subscriptions = self.mailbox.subscriptions()?;
        Ok(list::entries(&folders, &subscriptions))
    }

    /// STATUS (RFC 3501 6.3.10).
    pub fn status(
        &mut self,
        out: &mut Vec<u8>,
        tag: &str,
        mailbox: &Mailbox<'_>,
        items: &[StatusItem],
    ) {
        let (folder_name, folder) = match existing_folder(&self.mailbox, mailbox, false) {
            Ok(found) => found,
            Err((code, say)) => return tagged(out, tag, Status::No, Some(&code), say),
        };
        let snap = match folder.snapshot() {
            Ok(s) => s,
            Err(e) => return write_mailbox_error(out, tag, &e),
        };
        let count = |f: &dyn Fn(&crate::mailbox::MessageInfo) -> bool| {
            snap.messages.iter().filter(|m| f(m)).count() as u64
        };
        out.extend_from_slice(b"* STATUS ");
        name::write(out, folder_name.as_str());
        out.push(b' ');
        write_list(out, items, |out, item| {
            let value = match item {
                StatusItem::Messages => snap.messages.len() as u64,
                StatusItem::Recent => count(&|m| m.recent),
                StatusItem::UidNext => u64::from(snap.uid_next.get()),
                StatusItem::UidValidity => u64::from(snap.uid_validity.get()),
                StatusItem::Unseen => count(&|m| !m.flags.contains(crate::mailbox::Flag::Seen)),
                StatusItem::Deleted => count(&|m| m.flags.contains(crate::mailbox::Flag::Trashed)),
                StatusItem::Size => snap.messages.iter().map(|m| m.size).sum(),
                StatusItem::HighestModSeq => snap.highest_modseq.get(),
                // RFC 9208 4.1.4: what an EXPUNGE would free; our usage
                // is the messages' sizes.
                StatusItem::DeletedStorage => snap
                    .messages
                    .iter()
                    .filter(|m| m.flags.contains(crate::mailbox::Flag::Trashed))
                    .map(|m| m.size)
                    .sum(),
            };
            out.extend_from_slice(item.name().as_bytes());
            out.push(b' ');
            out.extend_from_slice(value.to_string().as_bytes());
        });
        out.extend_from_slice(b"\r\n");
        completed(out, tag, None, "STATUS")
    }

    /// APPEND (RFC 3501 6.3.11, RFC 4315 APPENDUID).
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        out: &mut Vec<u8>,
        tag: &str,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<DateTime<FixedOffset>>,
        message: &[u8],
        max_append: u64,
    ) {
        if message.len() as u64 > max_append {
            return tagged(
                out,
                tag,
                Status::No,
                Some(&Code::TooBig),
                Say::MessageTooBig,
            );
        }
        let (_, folder) = match existing_folder(&self.mailbox, mailbox, true) {
            Ok(found) => found,
            Err((code, say)) => return tagged(out, tag, Status::No, Some(&code), say),
        };
        if over_quota(&self.mailbox, self.quota, message.len() as u64) {
            return tagged(
                out,
                tag,
                Status::No,
                Some(&Code::OverQuota),
                Say::QuotaExceeded,
            );
        }
        let date = date.map(SystemTime::from);
        let names = keyword_names(flags);
        if names.iter().any(|n| !crate::mailbox::valid_keyword(n)) {
            return tagged(
                out,
                tag,
                Status::No,
                Some(&Code::Cannot),
                Say::InvalidKeyword,
            );
        }
        let keywords = match folder.define_keywords(&names) {
            Ok(table) if names.iter().all(|n| table.slot(n).is_some()) => table,
            Ok(_) => {
                return tagged(
                    out,
                    tag,
                    Status::No,
                    Some(&Code::Limit),
                    Say::TooManyKeywords,
                )
            }
            Err(e) => return write_mailbox_error(out, tag, &e),
        };
        let delivered = match folder.append(&[message], flags_of(flags, &keywords), date) {
            Ok(d) => d,
            Err(e) => return write_mailbox_error(out, tag, &e),
        };
        let code = delivered.uid.and_then(|uid| {
            let validity = folder.snapshot().ok()?.uid_validity.get();
            Some(Code::AppendUid {
                validity,
                uid: uid.get(),
            })
        });
        completed(out, tag, code.as_ref(), "APPEND")
    }
}

/// `* LIST (attrs) "/" name`.
fn write_entry(out: &mut Vec<u8>, kind: &str, attrs: &[&str], folder: &str) {
    out.extend_from_slice(b"* ");
    out.extend_from_slice(kind.as_bytes());
    out.push(b' ');
    write_list(out, attrs, |out, a| out.extend_from_slice(a.as_bytes()));
    out.extend_from_slice(b" \"/\" ");
    name::write(out, folder);
    out.extend_from_slice(b"\r\n");
}
