//! A folder's keyword names (IMAP keywords such as `$Forwarded` or
//! `Work`) in Dovecot's `dovecot-keywords` file: one line `N name` per
//! keyword, N the slot whose Maildir letter is `'a' + N` in file names.
//! Parsing, lookup and assignment only: the folder reads and writes the
//! file under its index lock, and flags stay in the file names.

/// The file in each folder directory (Dovecot's name, so both read it).
pub(crate) const KEYWORDS_FILE: &str = "dovecot-keywords";

/// Slots Maildir has letters for: `a` to `z`.
pub const KEYWORD_SLOTS: usize = 26;

/// Longest keyword name kept (a whole IMAP atom can be much longer; a
/// name this long is a client bug or an attack on the file).
const MAX_NAME_LEN: usize = 128;

/// Slot to name, for one folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeywordTable {
    names: [Option<String>; KEYWORD_SLOTS],
}

impl KeywordTable {
    /// Reads the file's lines; lines that are not `N name` with N < 26
    /// and a valid name are skipped (a damaged line loses one keyword's
    /// name, never the file).
    pub fn parse(bytes: &[u8]) -> KeywordTable {
        let mut table = KeywordTable::default();
        for line in bytes.split(|&b| b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let Some((slot, name)) = line.trim_end_matches('\r').split_once(' ') else {
                continue;
            };
            let Ok(slot) = slot.parse::<usize>() else {
                continue;
            };
            if slot < KEYWORD_SLOTS && valid_name(name) && table.slot(name).is_none() {
                table.names[slot] = Some(name.to_owned());
            }
        }
        table
    }

    /// The file's contents.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = String::new();
        for (slot, name) in self.iter() {
            out.push_str(&format!("{slot} {name}\n"));
        }
        out.into_bytes()
    }

    /// The slot of `name`; IMAP flag names compare without regard to
    /// ASCII case (RFC 3501 2.3.2 keywords are atoms; Dovecot matches them
    /// so too).
    pub fn slot(&self, name: &str) -> Option<u8> {
        self.names
            .iter()
            .position(|n| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .map(|i| i as u8)
    }

    pub fn name(&self, slot: u8) -> Option<&str> {
        self.names.get(usize::from(slot))?.as_deref()
    }

    /// Defined keywords, lowest slot first.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &str)> {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((i as u8, n.as_deref()?)))
    }

    pub fn is_full(&self) -> bool {
        self.names.iter().all(Option::is_some)
    }

    /// The slot of `name`, giving it the first free one when it is new;
    /// `None` when every slot is taken or the name is not valid.
    pub fn assign(&mut self, name: &str) -> Option<u8> {
        if let Some(slot) = self.slot(name) {
            return Some(slot);
        }
        if !valid_name(name) {
            return None;
        }
        let free = self.names.iter().position(Option::is_none)?;
        self.names[free] = Some(name.to_owned());
        Some(free as u8)
    }
}

/// An IMAP atom (RFC 3501 9: no space, controls, `(){%*"\]`) that does
/// not start with `\` (system flags are not keywords) and is not too long.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('\\')
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_assign_serialize_round_trip() {
        let mut t = KeywordTable::parse(b"0 $Forwarded\n2 Work\nbad line\n30 far\n1 \n3 Work\n");
        assert_eq!(t.name(0), Some("$Forwarded"));
        assert_eq!(t.name(1), None, "an empty name is skipped");
        assert_eq!(t.slot("work"), Some(2), "case-insensitive");
        assert_eq!(t.name(3), None, "a second Work is dropped");
        assert_eq!(t.assign("abc"), Some(1), "first free slot");
        assert_eq!(t.assign("ABC"), Some(1));
        assert_eq!(t.assign("a b"), None);
        assert_eq!(t.assign("\\Seen"), None);
        assert_eq!(KeywordTable::parse(&t.serialize()), t);
        assert_eq!(t.serialize(), b"0 $Forwarded\n1 abc\n2 Work\n");
    }

    #[test]
    fn twenty_six_slots_then_full() {
        let mut t = KeywordTable::default();
        for i in 0..KEYWORD_SLOTS {
            assert_eq!(t.assign(&format!("k{i}")), Some(i as u8));
        }
        assert!(t.is_full());
        assert_eq!(t.assign("one-more"), None);
        assert_eq!(t.assign("k7"), Some(7));
    }
}
