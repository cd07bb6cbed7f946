//! The MIME structure of a stored message as IMAP FETCH needs it: ENVELOPE, BODY and
//! BODYSTRUCTURE (RFC 3501 7.4.2) and the byte ranges behind `BODY[section]` (RFC 3501 6.4.5). The
//! structure keeps everything as stored (only [`decode`] undoes encodings, for SEARCH); it
//! refuses to read files or to know about sessions: it gets the stored bytes and answers with
//! offsets and IMAP syntax.
//!
//! Map: [`mod@header`] finds header blocks and fields, [`param`] parses
//! Content-Type and Content-Disposition, [`address`] parses address fields
//! for ENVELOPE, [`structure`] builds the part tree ([`MessageStructure::parse`]),
//! [`mod@write`] serializes ENVELOPE and BODY/BODYSTRUCTURE, [`section`] cuts
//! `BODY[section]<partial>` out of the stored bytes, [`cache`] stores a
//! parsed structure compactly so FETCH over many messages does not parse
//! them again, [`decode`] gives SEARCH the text a reader sees.
//!
//! Everything is measured on the stored bytes: a message kept with LF-only
//! line ends has its parts' sizes and line counts in those bytes, and
//! `BODY[section]` returns exactly them. (Dovecot reports CRLF sizes for such
//! files; spate's driver is expected to store CRLF or convert before asking.)
//!
//! The parser never fails and never panics: every input has a structure,
//! defaults come from RFC 2045 5.2 (text/plain; charset=us-ascii), and
//! what cannot be split is reported as a leaf. Nesting is bounded by
//! [`MAX_DEPTH`] and the part count by [`MAX_PARTS`]; beyond them a
//! multipart or message/rfc822 part is reported as application/octet-stream.
//!
//! Why not mail-parser: its part offsets follow its own recovery rules
//! (nested messages re-rooted, multiparts without parts folded away, a
//! message without a header returns nothing) and it decodes encoded words
//! and RFC 2231 values that IMAP must pass through as stored. The part
//! splitting IMAP needs is small, so it lives here, following RFC 2046
//! 5.1.1 and Dovecot's answers for broken mail.

pub mod address;
pub mod cache;
pub mod decode;
pub mod header;
pub mod param;
pub mod section;
pub mod structure;
pub mod write;

#[cfg(test)]
mod tests;

pub use cache::CacheError;
pub use param::Param;
pub use section::{partial, section_bytes, Section, SectionPart};

/// Multiparts and message/rfc822 parts nested deeper than this are not
/// split: they are reported as application/octet-stream leaves. Bounds the
/// recursion of the parser and of every walk over the tree.
pub const MAX_DEPTH: usize = 64;

/// At most this many parts are described for one message (a bound on
/// hostile input); later delimiters are not split, so the last
/// described part runs on to the end of its multipart.
pub const MAX_PARTS: usize = 10_000;

/// A byte range `start..end` in the stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of this span, or `None` when it does not fit `raw` (a
    /// structure from a stale cache, say).
    pub fn get<'a>(&self, raw: &'a [u8]) -> Option<&'a [u8]> {
        raw.get(self.start..self.end)
    }
}

/// One address of an ENVELOPE list, exactly the four IMAP fields
/// (RFC 3501 7.4.2): a group start has `mailbox` = the group name and no
/// host, a group end has neither.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Address {
    pub name: Option<Vec<u8>>,
    pub adl: Option<Vec<u8>>,
    pub mailbox: Option<Vec<u8>>,
    pub host: Option<Vec<u8>>,
}

/// The ENVELOPE of a message (RFC 3501 7.4.2). Strings are the header
/// values unfolded and trimmed, encoded words left as they are (the client
/// decodes them); an absent header is `None`, an absent or empty address
/// list is empty (both are NIL on the wire). `sender` and `reply_to` are
/// already defaulted to `from` as the RFC requires.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    pub date: Option<Vec<u8>>,
    pub subject: Option<Vec<u8>>,
    pub from: Vec<Address>,
    pub sender: Vec<Address>,
    pub reply_to: Vec<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub bcc: Vec<Address>,
    pub in_reply_to: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
}

/// A Content-Disposition (RFC 2183): its type and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposition {
    pub kind: Vec<u8>,
    pub params: Vec<Param>,
}

/// What a part contains below itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartKind {
    /// A leaf (text, image, a multipart or message too deep to split, ...).
    Leaf,
    /// multipart/*: its body parts in order. Empty when no delimiter was
    /// found; BODYSTRUCTURE then shows one empty text/plain part, as
    /// Dovecot does, because the grammar needs at least one.
    Multipart(Vec<Part>),
    /// message/rfc822: the encapsulated message.
    Message(Box<Message>),
}

/// An encapsulated message (message/rfc822) or the message itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub envelope: Envelope,
    /// The message's top-level entity: its header is the message header.
    pub root: Part,
}

/// One MIME entity. Values are as stored (unfolded, trimmed); type,
/// subtype, parameter names and the encoding keep the case they had, as
/// Dovecot reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The header block including its terminating empty line (the MIME
    /// header of a body part, the message header of a message).
    pub header: Span,
    /// The body: for a body part of a multipart, up to but excluding the
    /// line end before the next delimiter (RFC 2046 5.1.1).
    pub body: Span,
    pub media_type: Vec<u8>,
    pub media_subtype: Vec<u8>,
    /// Content-Type parameters, RFC 2231 continuations joined (see [`param`]).
    pub params: Vec<Param>,
    pub id: Option<Vec<u8>>,
    pub description: Option<Vec<u8>>,
    /// Content-Transfer-Encoding, `7bit` when absent.
    pub encoding: Vec<u8>,
    /// Content-MD5 as stored (RFC 1864); IMAP's body-fld-md5.
    pub md5: Option<Vec<u8>>,
    pub disposition: Option<Disposition>,
    /// Content-Language tags (RFC 3282), in order.
    pub language: Vec<Vec<u8>>,
    pub location: Option<Vec<u8>>,
    /// LF count of the body, which is what Dovecot reports; written for
    /// text/* and message/rfc822 only.
    pub lines: u64,
    pub kind: PartKind,
}

impl Part {
    /// The body size in octets, IMAP's body-fld-octets.
    pub fn size(&self) -> usize {
        self.body.len()
    }

    pub fn is_type(&self, media_type: &str) -> bool {
        self.media_type.eq_ignore_ascii_case(media_type.as_bytes())
    }

    /// The first Content-Type parameter named `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// A parsed message: its ENVELOPE and its part tree, with the length of the
/// bytes it was parsed from so a stale cache entry can be told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStructure {
    pub message: Message,
    pub raw_len: usize,
}

impl MessageStructure {
    pub fn envelope(&self) -> &Envelope {
        &self.message.envelope
    }

    pub fn root(&self) -> &Part {
        &self.message.root
    }

    /// ENVELOPE, from its opening parenthesis.
    pub fn write_envelope(&self, out: &mut Vec<u8>) {
        write::envelope(out, &self.message.envelope);
    }

    /// BODY (`extensible` false) or BODYSTRUCTURE (`extensible` true),
    /// from its opening parenthesis.
    pub fn write_body(&self, out: &mut Vec<u8>, extensible: bool) {
        write::body(out, &self.message.root, extensible);
    }
}
