//! A compact binary form of [`MessageStructure`] for a per-mailbox cache, so FETCH over many
//! messages does not parse them again; it refuses to trust its input: garbage, truncation or
//! another version is an error, never a panic or an unbounded allocation.
//!
//! Layout (version 1): the version byte, then LEB128 unsigned integers and
//! length-prefixed byte strings in the order of the fields of the types in
//! `mime.rs`. An optional string is its length plus one, 0 for `None`;
//! lists are a count then the items; a part kind is a tag (0 leaf,
//! 1 multipart, 2 message) then its contents. The total parts and the
//! nesting are checked against [`MAX_PARTS`] and [`MAX_DEPTH`] again on
//! decode.

use thiserror::Error;

use super::{
    Address, Disposition, Envelope, Message, MessageStructure, Param, Part, PartKind, Span,
    MAX_DEPTH, MAX_PARTS,
};

/// Bump when the layout or the parser's answers change, so old entries
/// are parsed again rather than misread.
pub const CACHE_VERSION: u8 = 1;

/// Why cached bytes were not accepted; every case means "parse the
/// message again".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CacheError {
    #[error("structure cache version {0} is not {CACHE_VERSION}")]
    Version(u8),
    #[error("structure cache entry is truncated")]
    Truncated,
    #[error("structure cache entry is invalid: {0}")]
    Invalid(&'static str),
}

impl MessageStructure {
    pub fn to_cache_bytes(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(256);
        w.push(CACHE_VERSION);
        put_uint(&mut w, self.raw_len as u64);
        put_message(&mut w, &self.message);
        w
    }

    pub fn from_cache_bytes(bytes: &[u8]) -> Result<MessageStructure, CacheError> {
        let (&version, rest) = bytes.split_first().ok_or(CacheError::Truncated)?;
        if version != CACHE_VERSION {
            return Err(CacheError::Version(version));
        }
        let mut r = Reader { b: rest, parts: 0 };
        let raw_len = r.usize()?;
        let message = r.message(0)?;
        if !r.b.is_empty() {
            return Err(CacheError::Invalid("trailing bytes"));
        }
        Ok(MessageStructure { message, raw_len })
    }
}

fn put_uint(w: &mut Vec<u8>, mut n: u64) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            w.push(low);
            return;
        }
        w.push(low | 0x80);
    }
}

fn put_bytes(w: &mut Vec<u8>, s: &[u8]) {
    put_uint(w, s.len() as u64);
    w.extend_from_slice(s);
}

fn put_opt(w: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => {
            put_uint(w, s.len() as u64 + 1);
            w.extend_from_slice(s);
        }
        None => w.push(0),
    }
}

fn put_span(w: &mut Vec<u8>, s: Span) {
    put_uint(w, s.start as u64);
    put_uint(w, s.len() as u64);
}

fn put_params(w: &mut Vec<u8>, params: &[Param]) {
    put_uint(w, params.len() as u64);
    for p in params {
        put_bytes(w, &p.name);
        put_bytes(w, &p.value);
    }
}

fn put_addresses(w: &mut Vec<u8>, list: &[Address]) {
    put_uint(w, list.len() as u64);
    for a in list {
        for s in [&a.name, &a.adl, &a.mailbox, &a.host] {
            put_opt(w, s.as_deref());
        }
    }
}

fn put_envelope(w: &mut Vec<u8>, e: &Envelope) {
    put_opt(w, e.date.as_deref());
    put_opt(w, e.subject.as_deref());
    for list in [&e.from, &e.sender, &e.reply_to, &e.to, &e.cc, &e.bcc] {
        put_addresses(w, list);
    }
    put_opt(w, e.in_reply_to.as_deref());
    put_opt(w, e.message_id.as_deref());
}

fn put_message(w: &mut Vec<u8>, m: &Message) {
    put_envelope(w, &m.envelope);
    put_part(w, &m.root);
}

fn put_part(w: &mut Vec<u8>, p: &Part) {
    put_span(w, p.header);
    put_span(w, p.body);
    put_bytes(w, &p.media_type);
    put_bytes(w, &p.media_subtype);
    put_params(w, &p.params);
    put_opt(w, p.id.as_deref());
    put_opt(w, p.description.as_deref());
    put_bytes(w, &p.encoding);
    put_opt(w, p.md5.as_deref());
    match &p.disposition {
        Some(d) => {
            w.push(1);
            put_bytes(w, &d.kind);
            put_params(w, &d.params);
        }
        None => w.push(0),
    }
    put_uint(w, p.language.len() as u64);
    for tag in &p.language {
        put_bytes(w, tag);
    }
    put_opt(w, p.location.as_deref());
    put_uint(w, p.lines);
    match &p.kind {
        PartKind::Leaf => w.push(0),
        PartKind::Multipart(children) => {
            w.push(1);
            put_uint(w, children.len() as u64);
            for c in children {
                put_part(w, c);
            }
        }
        PartKind::Message(inner) => {
            w.push(2);
            put_message(w, inner);
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    /// Parts decoded so far, held to `MAX_PARTS`.
    parts: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, CacheError> {
        let (&b, rest) = self.b.split_first().ok_or(CacheError::Truncated)?;
        self.b = rest;
        Ok(b)
    }

    fn uint(&mut self) -> Result<u64, CacheError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(CacheError::Invalid("integer overflow"));
            }
            n |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(CacheError::Invalid("integer too long"))
    }

    fn usize(&mut self) -> Result<usize, CacheError> {
        usize::try_from(self.uint()?).map_err(|_| CacheError::Invalid("integer too large"))
    }

    /// A count of items that take at least one byte each: never more than
    /// the bytes left, so a forged count cannot make us allocate.
    fn count(&mut self) -> Result<usize, CacheError> {
        let n = self.usize()?;
        if n > self.b.len() {
            return Err(CacheError::Truncated);
        }
        Ok(n)
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, CacheError> {
        if n > self.b.len() {
            return Err(CacheError::Truncated);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head.to_vec())
    }

    fn bytes(&mut self) -> Result<Vec<u8>, CacheError> {
        let n = self.usize()?;
        self.take(n)
    }

    fn opt(&mut self) -> Result<Option<Vec<u8>>, CacheError> {
        match self.usize()? {
            0 => Ok(None),
            n => self.take(n - 1).map(Some),
        }
    }

    fn span(&mut self) -> Result<Span, CacheError> {
        let start = self.usize()?;
        let len = self.usize()?;
        let end = start
            .checked_add(len)
            .ok_or(CacheError::Invalid("span overflow"))?;
        Ok(Span { start, end })
    }

    fn params(&mut self) -> Result<Vec<Param>, CacheError> {
        let n = self.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(Param {
                name: self.bytes()?,
                value: self.bytes()?,
            });
        }
        Ok(out)
    }

    fn addresses(&mut self) -> Result<Vec<Address>, CacheError> {
        let n = self.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(Address {
                name: self.opt()?,
                adl: self.opt()?,
                mailbox: self.opt()?,
                host: self.opt()?,
            });
        }
        Ok(out)
    }

    fn envelope(&mut self) -> Result<Envelope, CacheError> {
        Ok(Envelope {
            date: self.opt()?,
            subject: self.opt()?,
            from: self.addresses()?,
            sender: self.addresses()?,
            reply_to: self.addresses()?,
            to: self.addresses()?,
            cc: self.addresses()?,
            bcc: self.addresses()?,
            in_reply_to: self.opt()?,
            message_id: self.opt()?,
        })
    }

    fn message(&mut self, depth: usize) -> Result<Message, CacheError> {
        Ok(Message {
            envelope: self.envelope()?,
            root: self.part(depth)?,
        })
    }

    fn part(&mut self, depth: usize) -> Result<Part, CacheError> {
        // The parser nests at most MAX_DEPTH levels below the root.
        if depth > MAX_DEPTH {
            return Err(CacheError::Invalid("nested too deep"));
        }
        self.parts += 1;
        if self.parts > MAX_PARTS {
            return Err(CacheError::Invalid("too many parts"));
        }
        let header = self.span()?;
        let body = self.span()?;
        let media_type = self.bytes()?;
        let media_subtype = self.bytes()?;
        let params = self.params()?;
        let id = self.opt()?;
        let description = self.opt()?;
        let encoding = self.bytes()?;
        let md5 = self.opt()?;
        let disposition = match self.byte()? {
            0 => None,
            1 => Some(Disposition {
                kind: self.bytes()?,
                params: self.params()?,
            }),
            _ => return Err(CacheError::Invalid("disposition tag")),
        };
        let n = self.count()?;
        let mut language = Vec::with_capacity(n);
        for _ in 0..n {
            language.push(self.bytes()?);
        }
        let location = self.opt()?;
        let lines = self.uint()?;
        let kind = match self.byte()? {
            0 => PartKind::Leaf,
            1 => {
                let n = self.count()?;
                let mut children = Vec::with_capacity(n);
                for _ in 0..n {
                    children.push(self.part(depth + 1)?);
                }
                PartKind::Multipart(children)
            }
            2 => PartKind::Message(Box::new(self.message(depth + 1)?)),
            _ => return Err(CacheError::Invalid("part kind tag")),
        };
        Ok(Part {
            header,
            body,
            media_type,
            media_subtype,
            params,
            id,
            description,
            encoding,
            md5,
            disposition,
            language,
            location,
            lines,
            kind,
        })
    }
}
