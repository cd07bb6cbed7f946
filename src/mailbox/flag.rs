//! Message flags as Maildir stores them in file names (`:2,<letters>`);
//! it does not rename files (see `folder`) or name IMAP keywords (the
//! letters `a`-`z` are indexes into Dovecot's `dovecot-keywords`, which a
//! later keyword layer maps to names).

use std::fmt;

/// One of the six standard Maildir flags. IMAP names: Draft `\Draft`,
/// Flagged `\Flagged`, Passed (forwarded; no IMAP system flag, Dovecot
/// shows none either), Replied `\Answered`, Seen `\Seen`, Trashed
/// `\Deleted`. `\Recent` is not a flag on disk: it is "still in `new/`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    Draft,
    Flagged,
    Passed,
    Replied,
    Seen,
    Trashed,
}

impl Flag {
    /// All flags in the ASCII order of their letters, which is the order
    /// the Maildir spec requires in file names.
    pub const ALL: [Flag; 6] = [
        Flag::Draft,
        Flag::Flagged,
        Flag::Passed,
        Flag::Replied,
        Flag::Seen,
        Flag::Trashed,
    ];

    /// The letter in the file name.
    pub fn letter(self) -> char {
        match self {
            Flag::Draft => 'D',
            Flag::Flagged => 'F',
            Flag::Passed => 'P',
            Flag::Replied => 'R',
            Flag::Seen => 'S',
            Flag::Trashed => 'T',
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The flags of one message: the six standard flags plus up to 26
/// keyword slots (`a`-`z`, Dovecot's keyword letters). Unknown letters
/// found in a file name are not kept; they are dropped when spate next
/// renames that file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags {
    system: u8,
    keywords: u32,
}

impl Flags {
    /// No flags: a message that nobody has touched.
    pub const fn empty() -> Flags {
        Flags {
            system: 0,
            keywords: 0,
        }
    }

    pub fn is_empty(self) -> bool {
        self.system == 0 && self.keywords == 0
    }

    pub fn contains(self, flag: Flag) -> bool {
        self.system & flag.bit() != 0
    }

    /// A copy with `flag` set (builder style, for literals in callers).
    #[must_use]
    pub fn with(mut self, flag: Flag) -> Flags {
        self.insert(flag);
        self
    }

    pub fn insert(&mut self, flag: Flag) {
        self.system |= flag.bit();
    }

    pub fn remove(&mut self, flag: Flag) {
        self.system &= !flag.bit();
    }

    /// Keyword slot `index` (0 = `a` .. 25 = `z`); false past 25.
    pub fn has_keyword(self, index: u8) -> bool {
        index < 26 && self.keywords & (1 << index) != 0
    }

    /// Sets or clears keyword slot `index`; slots past 25 are ignored
    /// (Maildir has no letter for them).
    pub fn set_keyword(&mut self, index: u8, on: bool) {
        if index < 26 {
            if on {
                self.keywords |= 1 << index;
            } else {
                self.keywords &= !(1 << index);
            }
        }
    }

    /// The set keyword slots, lowest first.
    pub fn keywords(self) -> impl Iterator<Item = u8> {
        (0..26u8).filter(move |&i| self.keywords & (1 << i) != 0)
    }

    /// Parses the letters after `:2,`.
    pub fn from_letters(letters: &str) -> Flags {
        let mut flags = Flags::empty();
        for c in letters.chars() {
            if let Some(flag) = Flag::ALL.iter().find(|f| f.letter() == c) {
                flags.insert(*flag);
            } else if c.is_ascii_lowercase() {
                flags.set_keyword(c as u8 - b'a', true);
            }
        }
        flags
    }

    /// The letters for the file name, in ASCII order as the spec requires.
    pub fn letters(self) -> String {
        let mut s = String::new();
        for flag in Flag::ALL {
            if self.contains(flag) {
                s.push(flag.letter());
            }
        }
        for i in self.keywords() {
            s.push(char::from(b'a' + i));
        }
        s
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.letters())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_sorted_and_round_trip() {
        let f = Flags::from_letters("TSa?RcD");
        assert_eq!(f.letters(), "DRSTac");
        assert!(f.contains(Flag::Seen) && f.contains(Flag::Trashed));
        assert!(!f.contains(Flag::Flagged));
        assert_eq!(f.keywords().collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(Flags::from_letters(&f.letters()), f);
        assert!(Flags::from_letters("").is_empty());
    }
}
