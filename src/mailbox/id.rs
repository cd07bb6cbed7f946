//! The mailbox's number types: `Uid`, `UidValidity`, `ModSeq`; they know
//! nothing about files or indexes.

use std::fmt;

/// A message's unique identifier in one folder (RFC 3501 2.3.1.1), shared
/// by IMAP UIDs and POP3 UIDL. Never zero; strictly increasing in the
/// order messages were indexed, and never reused while the folder's
/// [`UidValidity`] stays the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(u32);

impl Uid {
    /// The first UID of a fresh folder.
    pub const FIRST: Uid = Uid(1);
    /// The largest UID.
    pub const MAX: Uid = Uid(u32::MAX);

    /// `None` for 0, which IMAP reserves.
    pub fn new(value: u32) -> Option<Uid> {
        (value != 0).then_some(Uid(value))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The UID after this one; `None` at `u32::MAX` (the folder then has to
    /// be renumbered under a new [`UidValidity`]).
    pub fn next(self) -> Option<Uid> {
        self.0.checked_add(1).map(Uid)
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Tells clients whether the UIDs they cached still name the same
/// messages (RFC 3501 2.3.1.1). Allocated per user, strictly increasing
/// (see `validity`), so a folder that is deleted and created again, or
/// whose index had to be rebuilt, never shows an old value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UidValidity(u32);

impl UidValidity {
    /// `None` for 0, which IMAP does not allow.
    pub fn new(value: u32) -> Option<UidValidity> {
        (value != 0).then_some(UidValidity(value))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for UidValidity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A modification sequence (RFC 7162 CONDSTORE): bumped for a message when
/// it is indexed or its flags change, and for the folder on every change
/// (expunges included). A folder's starts at [`ModSeq::FIRST`], so every
/// value a client sees is positive (RFC 7162 7 `mod-sequence-value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ModSeq(u64);

impl ModSeq {
    /// A new folder's highest modseq, before any change.
    pub const FIRST: ModSeq = ModSeq(1);

    pub fn new(value: u64) -> ModSeq {
        ModSeq(value)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// The next value; saturates (2^64 changes will not happen).
    pub fn next(self) -> ModSeq {
        ModSeq(self.0.saturating_add(1))
    }
}

impl fmt::Display for ModSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
