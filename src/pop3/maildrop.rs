//! The open maildrop as the POP3 session sees it: the message list handed over by the driver,
//! with deletion marks and the numbering rules of RFC 1939. It refuses to read, lock or
//! expunge anything; the driver does that on the session's requests.

use std::fmt;

use thiserror::Error;

use super::parser::MessageNumber;

/// RFC 1939 7 (UIDL): a unique-id is 1 to 70 characters in 0x21..=0x7E.
pub const MAX_UNIQUE_ID_LENGTH: usize = 70;

/// A UIDL unique-id, valid by construction, so it can be written into a
/// reply line as it is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UniqueId(String);

/// The driver offered a unique-id RFC 1939 does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid UIDL unique-id {0:?}: 1 to 70 characters in 0x21..=0x7E")]
pub struct InvalidUniqueId(pub String);

impl UniqueId {
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidUniqueId> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= MAX_UNIQUE_ID_LENGTH
            && id.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if valid {
            Ok(UniqueId(id))
        } else {
            Err(InvalidUniqueId(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UniqueId {
    type Error = InvalidUniqueId;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        UniqueId::new(id)
    }
}

impl fmt::Debug for UniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for UniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One message of the maildrop, as the driver describes it when opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Octets as sent with CRLF line ends, before dot-stuffing (RFC 1939
    /// 5: the "exact size" LIST and STAT report).
    pub size: u64,
    pub uid: UniqueId,
}

/// A message number did not name a live message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LookupError {
    /// Out of range (0, or past the last message).
    #[error("no such message")]
    NoSuchMessage,
    /// RFC 1939 5: a message marked deleted may not be referred to.
    #[error("message {0} already deleted")]
    Deleted(u32),
}

/// The maildrop of the TRANSACTION state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maildrop {
    messages: Vec<MessageInfo>,
    deleted: Vec<bool>,
    live_count: usize,
    live_octets: u64,
}

impl Maildrop {
    pub fn new(messages: Vec<MessageInfo>) -> Self {
        let live_octets = messages.iter().map(|m| m.size).fold(0, u64::saturating_add);
        Maildrop {
            deleted: vec![false; messages.len()],
            live_count: messages.len(),
            live_octets,
            messages,
        }
    }

    /// STAT: messages not marked deleted, and their octets.
    pub fn stat(&self) -> (usize, u64) {
        (self.live_count, self.live_octets)
    }

    /// The 0-based index of a live message.
    pub fn lookup(&self, number: MessageNumber) -> Result<usize, LookupError> {
        let index = (number.0 as usize)
            .checked_sub(1)
            .filter(|&i| i < self.messages.len())
            .ok_or(LookupError::NoSuchMessage)?;
        if self.deleted[index] {
            return Err(LookupError::Deleted(number.0));
        }
        Ok(index)
    }

    pub fn info(&self, index: usize) -> Option<&MessageInfo> {
        self.messages.get(index)
    }

    /// Marks a live message deleted (DELE).
    pub fn delete(&mut self, number: MessageNumber) -> Result<(), LookupError> {
        let index = self.lookup(number)?;
        self.deleted[index] = true;
        self.live_count -= 1;
        self.live_octets = self.live_octets.saturating_sub(self.messages[index].size);
        Ok(())
    }

    /// RSET: every mark is removed.
    pub fn undelete_all(&mut self) {
        *self = Maildrop::new(std::mem::take(&mut self.messages));
    }

    /// Live messages from 0-based `from` on: (index, info); for listings
    /// generated a piece at a time.
    pub fn live_from(&self, from: usize) -> impl Iterator<Item = (usize, &MessageInfo)> {
        self.messages
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(i, _)| !self.deleted[*i])
    }

    /// 0-based indexes of the messages marked deleted, ascending.
    pub fn deleted_indexes(&self) -> Vec<usize> {
        (0..self.messages.len())
            .filter(|&i| self.deleted[i])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop3() -> Maildrop {
        Maildrop::new(
            [100, 200, 300]
                .iter()
                .enumerate()
                .map(|(i, &size)| MessageInfo {
                    size,
                    uid: UniqueId::new(format!("uid{i}")).unwrap(),
                })
                .collect(),
        )
    }

    #[test]
    fn unique_ids() {
        assert!(UniqueId::new("a").is_ok());
        assert!(UniqueId::new("~!".repeat(35)).is_ok());
        assert!(UniqueId::new("x".repeat(71)).is_err());
        assert!(UniqueId::new("").is_err());
        assert!(UniqueId::new("a b").is_err());
        assert!(UniqueId::new("a\r\n").is_err());
        assert!(UniqueId::new("é").is_err());
    }

    #[test]
    fn numbering_and_marks() {
        let mut m = drop3();
        assert_eq!(m.stat(), (3, 600));
        assert_eq!(m.lookup(MessageNumber(0)), Err(LookupError::NoSuchMessage));
        assert_eq!(m.lookup(MessageNumber(4)), Err(LookupError::NoSuchMessage));
        assert_eq!(
            m.lookup(MessageNumber(u32::MAX)),
            Err(LookupError::NoSuchMessage)
        );
        assert_eq!(m.lookup(MessageNumber(1)), Ok(0));
        m.delete(MessageNumber(2)).unwrap();
        assert_eq!(m.delete(MessageNumber(2)), Err(LookupError::Deleted(2)));
        assert_eq!(m.lookup(MessageNumber(2)), Err(LookupError::Deleted(2)));
        assert_eq!(m.stat(), (2, 400));
        assert_eq!(m.deleted_indexes(), vec![1]);
        let live: Vec<usize> = m.live_from(0).map(|(i, _)| i).collect();
        assert_eq!(live, vec![0, 2]);
        m.undelete_all();
        assert_eq!(m.stat(), (3, 600));
        assert!(m.deleted_indexes().is_empty());
    }
}
