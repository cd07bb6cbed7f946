//! Parses an address header (From, To, ...) into IMAP ENVELOPE addresses (RFC 3501 7.4.2,
//! RFC 5322 3.4 with the obsolete route and phrase forms); it refuses to decode encoded words
//! (RFC 2047): ENVELOPE carries names as they are in the header and the client decodes them.
//!
//! Sloppy input gets the answers Dovecot and UW IMAP give, which clients
//! know: a missing local part is `MISSING_MAILBOX`, a missing domain
//! `MISSING_DOMAIN`; a lone phrase (`To: John Doe`) is a name with both
//! missing; a comment after a bare address becomes its name
//! (`a@b (Ann)`). A group is a start marker (mailbox = group name, host
//! NIL), its members, and an end marker (mailbox and host NIL).

use super::header::is_blank;
use super::Address;

/// At most this many addresses (group markers included) are kept from one
/// field; ENVELOPE stays bounded for hostile headers.
pub const MAX_ADDRESSES: usize = 1000;

pub(crate) const MISSING_MAILBOX: &[u8] = b"MISSING_MAILBOX";
pub(crate) const MISSING_DOMAIN: &[u8] = b"MISSING_DOMAIN";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An atom, a quoted string's content, or a domain literal with its brackets.
    Word(Vec<u8>),
    Comment(Vec<u8>),
    /// One of `< > , : ; @`. Dots belong to atoms, so that a dot-atom
    /// (`first.last`) or an obs-phrase (`John Q. Public`) keeps its shape.
    Special(u8),
}

fn tokenize(s: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        match b {
            _ if is_blank(b) || b == 0 => i += 1,
            b'(' => {
                let mut depth = 0usize;
                let mut text = Vec::new();
                while i < s.len() {
                    let c = s[i];
                    i += 1;
                    match c {
                        b'\\' if i < s.len() => {
                            text.push(s[i]);
                            i += 1;
                        }
                        b'(' => {
                            if depth > 0 {
                                text.push(c);
                            }
                            depth += 1;
                        }
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                            text.push(c);
                        }
                        b'\r' | b'\n' => {}
                        _ => text.push(c),
                    }
                }
                out.push(Tok::Comment(text));
            }
            b'"' => {
                let mut text = Vec::new();
                i += 1;
                while i < s.len() {
                    let c = s[i];
                    i += 1;
                    match c {
                        b'"' => break,
                        b'\\' if i < s.len() => {
                            text.push(s[i]);
                            i += 1;
                        }
                        b'\r' | b'\n' => {}
                        _ => text.push(c),
                    }
                }
                out.push(Tok::Word(text));
            }
            b'[' => {
                let start = i;
                while i < s.len() && s[i] != b']' {
                    i += 1;
                }
                i = (i + 1).min(s.len());
                out.push(Tok::Word(s[start..i].to_vec()));
            }
            b'<' | b'>' | b',' | b':' | b';' | b'@' => {
                out.push(Tok::Special(b));
                i += 1;
            }
            _ => {
                // At least one byte, so a stray `)` or `]` cannot stall us.
                let start = i;
                i += 1;
                while i < s.len() && !is_blank(s[i]) && !b"()<>,:;@\"[".contains(&s[i]) && s[i] != 0
                {
                    i += 1;
                }
                out.push(Tok::Word(s[start..i].to_vec()));
            }
        }
    }
    out
}

/// Parses an unfolded address header value.
pub(crate) fn parse_list(value: &[u8]) -> Vec<Address> {
    let toks = tokenize(value);
    let mut p = Parser {
        toks: &toks,
        i: 0,
        out: Vec::new(),
    };
    while p.i < p.toks.len() && p.out.len() < MAX_ADDRESSES {
        p.address(false);
    }
    p.out.truncate(MAX_ADDRESSES);
    p.out
}

struct Parser<'t> {
    toks: &'t [Tok],
    i: usize,
    out: Vec<Address>,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&'t Tok> {
        self.toks.get(self.i)
    }

    /// One address, or one whole group, up to and including its `,`.
    fn address(&mut self, in_group: bool) {
        // Words (and dots, @) before whatever decides the form.
        let mut words: Vec<&'t Tok> = Vec::new();
        let mut comment: Option<Vec<u8>> = None;
        while let Some(t) = self.peek() {
            match t {
                Tok::Special(b',') => {
                    self.i += 1;
                    break;
                }
                Tok::Special(b';') if in_group => break,
                Tok::Special(b'<') => {
                    self.i += 1;
                    let name = phrase(&words);
                    self.angle(name);
                    self.skip_to_separator(in_group);
                    return;
                }
                Tok::Special(b':') if !in_group => {
                    self.i += 1;
                    self.group(phrase(&words));
                    return;
                }
                Tok::Comment(c) => {
                    comment = Some(c.clone());
                    self.i += 1;
                }
                Tok::Special(b'>' | b';' | b':') => self.i += 1,
                t => {
                    words.push(t);
                    self.i += 1;
                }
            }
        }
        self.addr_spec(&words, comment);
    }

    /// A bare addr-spec (or sloppy phrase) collected by `address`.
    fn addr_spec(&mut self, words: &[&Tok], comment: Option<Vec<u8>>) {
        if words.is_empty() {
            return;
        }
        match words.iter().rposition(|t| **t == Tok::Special(b'@')) {
            Some(at) => {
                let local = join_tight(&words[..at]);
                let domain = join_tight(&words[at + 1..]);
                self.push_mailbox(comment.filter(|c| !c.is_empty()), None, local, domain);
            }
            None => {
                let word_count = words.iter().filter(|t| matches!(t, Tok::Word(_))).count();
                if word_count > 1 {
                    // "To: John Doe": a name without an address.
                    self.push_mailbox(Some(phrase(words)), None, Vec::new(), Vec::new());
                } else {
                    let local = join_tight(words);
                    self.push_mailbox(comment.filter(|c| !c.is_empty()), None, local, Vec::new());
                }
            }
        }
    }

    /// After `<`: `[@route,@route:] local@domain >`.
    fn angle(&mut self, name: Vec<u8>) {
        let mut inner: Vec<&'t Tok> = Vec::new();
        while let Some(t) = self.peek() {
            self.i += 1;
            match t {
                Tok::Special(b'>') => break,
                Tok::Comment(_) => {}
                t => inner.push(t),
            }
        }
        // obs-route: "@a,@b:" before the addr-spec.
        let mut adl = None;
        if inner.first() == Some(&&Tok::Special(b'@')) {
            if let Some(colon) = inner.iter().position(|t| **t == Tok::Special(b':')) {
                adl = Some(join_tight(&inner[..colon]));
                inner.drain(..=colon);
            }
        }
        let (local, domain) = match inner.iter().rposition(|t| **t == Tok::Special(b'@')) {
            Some(at) => (join_tight(&inner[..at]), join_tight(&inner[at + 1..])),
            None => (join_tight(&inner), Vec::new()),
        };
        let name = (!name.is_empty()).then_some(name);
        self.push_mailbox(name, adl, local, domain);
    }

    /// After `name:`: members up to `;`, between the group markers.
    fn group(&mut self, name: Vec<u8>) {
        self.out.push(Address {
            name: None,
            adl: None,
            mailbox: Some(name),
            host: None,
        });
        while let Some(t) = self.peek() {
            if *t == Tok::Special(b';') {
                self.i += 1;
                break;
            }
            if self.out.len() >= MAX_ADDRESSES {
                self.i = self.toks.len();
                break;
            }
            self.address(true);
        }
        self.out.push(Address {
            name: None,
            adl: None,
            mailbox: None,
            host: None,
        });
        self.skip_to_separator(false);
    }

    /// Drops whatever follows an address up to the next `,` (consumed) or,
    /// in a group, `;` (left for the group).
    fn skip_to_separator(&mut self, in_group: bool) {
        while let Some(t) = self.peek() {
            match t {
                Tok::Special(b',') => {
                    self.i += 1;
                    return;
                }
                Tok::Special(b';') if in_group => return,
                _ => self.i += 1,
            }
        }
    }

    fn push_mailbox(
        &mut self,
        name: Option<Vec<u8>>,
        adl: Option<Vec<u8>>,
        local: Vec<u8>,
        domain: Vec<u8>,
    ) {
        let mailbox = if local.is_empty() {
            MISSING_MAILBOX.to_vec()
        } else {
            local
        };
        let host = if domain.is_empty() {
            MISSING_DOMAIN.to_vec()
        } else {
            domain
        };
        self.out.push(Address {
            name,
            adl,
            mailbox: Some(mailbox),
            host: Some(host),
        });
    }
}

/// A display name: words joined by one space.
fn phrase(words: &[&Tok]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in words {
        match t {
            Tok::Word(w) => {
                if !out.is_empty() {
                    out.push(b' ');
                }
                out.extend_from_slice(w);
            }
            Tok::Special(b) => out.push(*b),
            Tok::Comment(_) => {}
        }
    }
    out
}

/// A local part, domain or route: tokens joined without blanks.
fn join_tight(words: &[&Tok]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in words {
        match t {
            Tok::Word(w) => out.extend_from_slice(w),
            Tok::Special(b) => out.push(*b),
            Tok::Comment(_) => {}
        }
    }
    out
}
