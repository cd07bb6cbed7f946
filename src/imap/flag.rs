//! Maps flags between IMAP (RFC 3501 2.3.2) and the Maildir flags the store keeps: system
//! flags by letter, keywords through the folder's keyword table. It refuses to touch the
//! store: defining new keyword names is the caller's (`Folder::define_keywords`).

use super::command::Flag;
use crate::mailbox::{Flag as MaildirFlag, Flags, KeywordTable};

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

/// The keyword names in a flag list.
pub fn keyword_names<'a>(list: &[Flag<'a>]) -> Vec<&'a str> {
    list.iter()
        .filter_map(|f| match f {
            Flag::Keyword(name) => Some(*name),
            _ => None,
        })
        .collect()
}

/// The stored flags a list of IMAP flags stands for: system flags and the
/// keywords `table` has slots for (others dropped).
pub fn flags_of(list: &[Flag<'_>], table: &KeywordTable) -> Flags {
    let mut flags = Flags::empty();
    for flag in list {
        if let Some(system) = to_maildir(flag) {
            flags.insert(system);
        } else if let Flag::Keyword(name) = flag {
            if let Some(slot) = table.slot(name) {
                flags.set_keyword(slot, true);
            }
        }
    }
    flags
}

/// The IMAP flags of a message: its system flags, its named keywords,
/// then `\Recent` when this session holds it. Maildir's Passed
/// (forwarded) has no IMAP name, nor has a keyword letter without a name.
pub fn imap_flags(flags: Flags, recent: bool, table: &KeywordTable) -> Vec<Flag<'_>> {
    let mut out: Vec<Flag<'_>> = SYSTEM
        .iter()
        .copied()
        .filter(|f| to_maildir(f).is_some_and(|m| flags.contains(m)))
        .collect();
    out.extend(
        flags
            .keywords()
            .filter_map(|s| table.name(s))
            .map(Flag::Keyword),
    );
    if recent {
        out.push(Flag::Recent);
    }
    out
}

/// The flags a folder defines (untagged FLAGS): the system flags, then
/// its keywords.
pub fn defined_flags(table: &KeywordTable) -> Vec<Flag<'_>> {
    let mut out = SYSTEM.to_vec();
    out.extend(table.iter().map(|(_, name)| Flag::Keyword(name)));
    out
}

/// `flags` with everything IMAP shows replaced by `list` (STORE FLAGS),
/// keeping what IMAP cannot see (Passed, keyword letters without names).
pub fn replace_visible(flags: Flags, list: &[Flag<'_>], table: &KeywordTable) -> Flags {
    let mut out = flags;
    for f in SYSTEM.iter().filter_map(to_maildir) {
        out.remove(f);
    }
    for (slot, _) in table.iter() {
        out.set_keyword(slot, false);
    }
    add(out, flags_of(list, table))
}

/// `flags` with every flag of `given` set.
pub fn add(flags: Flags, given: Flags) -> Flags {
    let mut out = flags;
    for f in MaildirFlag::ALL.into_iter().filter(|f| given.contains(*f)) {
        out.insert(f);
    }
    for slot in given.keywords() {
        out.set_keyword(slot, true);
    }
    out
}

/// `flags` with every flag of `given` cleared.
pub fn remove(flags: Flags, given: Flags) -> Flags {
    let mut out = flags;
    for f in MaildirFlag::ALL.into_iter().filter(|f| given.contains(*f)) {
        out.remove(f);
    }
    for slot in given.keywords() {
        out.set_keyword(slot, false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replace_keeps_hidden_flags() {
        let mut table = KeywordTable::default();
        table.assign("x");
        let stored = flags_of(
            &[
                Flag::Seen,
                Flag::Deleted,
                Flag::Keyword("X"),
                Flag::Keyword("y"),
            ],
            &table,
        );
        assert_eq!(stored.letters(), "STa", "y has no slot");
        assert_eq!(
            imap_flags(stored, true, &table),
            vec![Flag::Deleted, Flag::Seen, Flag::Keyword("x"), Flag::Recent]
        );
        let hidden = Flags::from_letters("Pz").with(MaildirFlag::Seen);
        let replaced = replace_visible(add(hidden, stored), &[Flag::Flagged], &table);
        assert_eq!(replaced.letters(), "FPz", "Passed and the unnamed z stay");
        assert_eq!(
            remove(stored, flags_of(&[Flag::Keyword("x")], &table)).letters(),
            "ST"
        );
        assert_eq!(defined_flags(&table).last(), Some(&Flag::Keyword("x")));
        assert_eq!(keyword_names(&[Flag::Seen, Flag::Keyword("k")]), vec!["k"]);
    }
}
