//! Maps flags between IMAP (RFC 3501 2.3.2) and the Maildir flags the store keeps. It refuses
//! to touch the store or to name keywords: keyword slots have no names yet (Dovecot's
//! `dovecot-keywords` is not read), so keywords are neither shown nor kept.

use super::command::Flag;
use crate::mailbox::{Flag as MaildirFlag, Flags};

/// The system flags a client may set, in the order FLAGS and
/// PERMANENTFLAGS list them.
pub const SYSTEM: [Flag<'static>; 5] = [
    Flag::Answered,
    Flag::Flagged,
    Flag::Deleted,
    Flag::Seen,
    Flag::Draft,
];

/// The Maildir flag behind an IMAP system flag; `None` for `\Recent`
/// (not a stored flag), keywords and unknown `\` flags.
pub fn to_maildir(flag: &Flag<'_>) -> Option<MaildirFlag> {
    match flag {
        Flag::Seen => Some(MaildirFlag::Seen),
        Flag::Answered => Some(MaildirFlag::Replied),
        Flag::Flagged => Some(MaildirFlag::Flagged),
        Flag::Deleted => Some(MaildirFlag::Trashed),
        Flag::Draft => Some(MaildirFlag::Draft),
        Flag::Recent | Flag::Extension(_) | Flag::Keyword(_) => None,
    }
}

/// The stored flags a list of IMAP flags stands for (others dropped).
pub fn flags_of(list: &[Flag<'_>]) -> Flags {
    let mut flags = Flags::empty();
    for flag in list.iter().filter_map(to_maildir) {
        flags.insert(flag);
    }
    flags
}

/// The IMAP flags of a message: its system flags, then `\Recent` when
/// this session holds it. Maildir's Passed (forwarded) has no IMAP name.
pub fn imap_flags(flags: Flags, recent: bool) -> Vec<Flag<'static>> {
    let mut out: Vec<Flag<'static>> = SYSTEM
        .iter()
        .copied()
        .filter(|f| to_maildir(f).is_some_and(|m| flags.contains(m)))
        .collect();
    if recent {
        out.push(Flag::Recent);
    }
    out
}

/// The system flags of `flags` replaced by those in `list` (STORE FLAGS),
/// keeping what IMAP cannot see (Passed, keyword slots).
pub fn replace_system(flags: Flags, list: &[Flag<'_>]) -> Flags {
    let mut out = flags;
    for f in SYSTEM.iter().filter_map(to_maildir) {
        out.remove(f);
    }
    for f in list.iter().filter_map(to_maildir) {
        out.insert(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replace_keeps_hidden_flags() {
        let stored = flags_of(&[Flag::Seen, Flag::Deleted, Flag::Keyword("x")]);
        assert_eq!(stored.letters(), "ST");
        assert_eq!(
            imap_flags(stored, true),
            vec![Flag::Deleted, Flag::Seen, Flag::Recent]
        );
        let passed = stored.with(MaildirFlag::Passed);
        let replaced = replace_system(passed, &[Flag::Flagged]);
        assert_eq!(replaced.letters(), "FP");
    }
}
