//! Builds delivery status notifications: RFC 3464 multipart/report
//! messages (RFC 6522) honouring RET, ENVID, NOTIFY and ORCPT (RFC 3461),
//! never addressed to the null sender (RFC 5321 4.5.5). Pure: envelope and
//! bytes in, envelope and bytes out; it refuses to decide which recipients
//! failed, to spool the result or to read a clock (`now_wall` comes in).
//!
//! What the returned content is, decided here (RFC 3461 4.3 and 6.2 leave
//! it to the MTA when RET is absent):
//! - RET=FULL: the whole message, as message/rfc822 (RFC 3462 / RFC 6522),
//!   when it fits in the return limit (`[delivery] bounce_size_limit`,
//!   Postfix's `bounce_size_limit`, default [`DEFAULT_RETURN_LIMIT`]).
//! - RET=HDRS, no RET, or a message over the limit: the header block, as
//!   text/rfc822-headers (RFC 3462 / RFC 6522 section 5), itself cut at
//!   the last whole line within the limit. A stranger's content is never
//!   sent back in full unless its sender asked (RFC 3461 4.3 leaves the
//!   default to the MTA), and never more than the limit: a bounce cannot
//!   carry a spammer's message to a forged sender.
//! - a DSN that reports only delays returns the headers (RFC 3461 4.3).
//! - a BINARYMIME message returns the headers (binary content cannot ride
//!   in message/rfc822 over an 8BITMIME path).
//!
//! For an SMTPUTF8 message with non-ASCII addresses or headers, the parts
//! use the RFC 6533 types (message/global-delivery-status, message/global,
//! message/global-headers) and the `utf-8` address type.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use crate::envelope::{BodyType, DsnReturn, Envelope, Notify, Recipient};
use crate::spool::{OutcomeKind, RecipientOutcome};

/// The most of the original a DSN returns by default (Postfix's
/// `bounce_size_limit`): a RET=FULL message up to this size is returned
/// whole, a larger one (or any other) by its headers, cut to this size.
pub const DEFAULT_RETURN_LIMIT: usize = 50_000;

/// Longest diagnostic text quoted per recipient; a hostile server's reply
/// must not make every bounce huge.
const MAX_DIAGNOSTIC: usize = 1000;

/// The DSN Action of a recipient (RFC 3464 2.3.3). `expanded` is not
/// produced: a local alias that forwards is reported `delivered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsnAction {
    /// Permanently undeliverable (5xx, or the queue lifetime ran out).
    Failed,
    /// Still being retried; reported only to senders who asked (DELAY).
    Delayed,
    /// Put in the recipient's mailbox (RFC 3461 5.2.3: owed to
    /// NOTIFY=SUCCESS).
    Delivered,
    /// Accepted by a next hop that does not offer DSN, so no further
    /// notice will come (RFC 3461 5.2.2 (b): owed to NOTIFY=SUCCESS).
    Relayed,
}

impl DsnAction {
    fn keyword(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
            DsnAction::Delivered => "delivered",
            DsnAction::Relayed => "relayed",
        }
    }

    fn is_success(self) -> bool {
        matches!(self, DsnAction::Delivered | DsnAction::Relayed)
    }
}

/// One recipient to report on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedRecipient {
    /// Position in the original envelope's recipients: gives the address,
    /// NOTIFY and ORCPT, so they cannot disagree with the envelope.
    pub index: u32,
    /// RFC 3463 enhanced status code, e.g. `5.1.1` (see [`status_of`]).
    pub status: String,
    /// The remote reply (or local reason) as received, e.g.
    /// `550 5.1.1 <bob@example.test>: no such user`.
    pub diagnostic: String,
    /// The host that gave the reply, when one did.
    pub remote_mta: Option<String>,
    pub action: DsnAction,
    /// The failure's bounce class (`shaping::BounceClass`), reported in
    /// the `X-Spate-Class` extension field (RFC 3464 "X-" fields).
    pub class: Option<&'static str>,
    /// For a `delayed` report: when spate gives up (Unix seconds), the
    /// `Will-Retry-Until` field (RFC 3464 2.3.9; in no other report).
    pub retry_until: Option<u64>,
}

impl ReportedRecipient {
    /// What a recorded outcome calls for: bounced and expired recipients
    /// are reported as failed (an expiry keeps its last temporary status,
    /// as Postfix does, or 4.4.7 "delivery time expired"); `None` for a
    /// delivered one.
    pub fn from_outcome(index: u32, outcome: &RecipientOutcome) -> Option<Self> {
        let fallback = match outcome.kind {
            OutcomeKind::Delivered => return None,
            OutcomeKind::Bounced => "5.0.0",
            OutcomeKind::Expired => "4.4.7",
        };
        Some(ReportedRecipient {
            index,
            status: status_of(&outcome.reply).unwrap_or_else(|| fallback.to_owned()),
            diagnostic: outcome.reply.clone(),
            remote_mta: outcome.remote_mta.clone(),
            action: DsnAction::Failed,
            class: None,
            retry_until: None,
        })
    }

    /// A successful delivery reported as `action` (delivered, relayed),
    /// with the reply that accepted it.
    pub fn success(index: u32, outcome: &RecipientOutcome, action: DsnAction) -> Self {
        ReportedRecipient {
            index,
            status: status_of(&outcome.reply)
                .filter(|s| s.starts_with('2'))
                .unwrap_or_else(|| "2.0.0".to_owned()),
            diagnostic: outcome.reply.clone(),
            remote_mta: outcome.remote_mta.clone(),
            action,
            class: None,
            retry_until: None,
        }
    }
}

/// A DSN ready to be spooled like any message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// From `<>` (no bounce of a bounce) to the original sender, with
    /// NOTIFY=NEVER (RFC 3461 6.1).
    pub envelope: Envelope,
    /// The whole message, CRLF line endings.
    pub body: Vec<u8>,
}

/// The enhanced status code in an SMTP reply (`550 5.1.1 ...` gives
/// `5.1.1`), or the class of its reply code (`451 busy` gives `4.0.0`);
/// `None` if the text is not a reply.
pub fn status_of(reply: &str) -> Option<String> {
    let b = reply.as_bytes();
    let code_ok = b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit);
    if !code_ok || b.get(3).is_some_and(|c| *c != b' ' && *c != b'-') {
        return None;
    }
    let class = b[0];
    let word = reply[3..]
        .trim_start_matches([' ', '-'])
        .split(' ')
        .next()
        .unwrap_or("");
    if is_status(word) && word.as_bytes()[0] == class {
        return Some(word.to_owned());
    }
    match class {
        b'2' | b'4' | b'5' => Some(format!("{}.0.0", class as char)),
        _ => None,
    }
}

/// RFC 3463 syntax: class 2, 4 or 5, subject 1-3 digits, detail 1-3.
fn is_status(s: &str) -> bool {
    let mut it = s.split('.');
    let (Some(c), Some(sub), Some(det), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return false;
    };
    let digits = |x: &str| (1..=3).contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit());
    matches!(c, "2" | "4" | "5") && digits(sub) && digits(det)
}

/// Whether this recipient asked for a DSN of this kind. No NOTIFY means
/// FAILURE,DELAY (RFC 3461 4.1) and never SUCCESS (5.2.2 (e), 5.2.3
/// (c)); NEVER means none at all.
pub fn wants(notify: Option<Notify>, action: DsnAction) -> bool {
    match notify {
        None => !action.is_success(),
        Some(n) if n.never => false,
        Some(n) => match action {
            DsnAction::Failed => n.failure,
            DsnAction::Delayed => n.delay,
            DsnAction::Delivered | DsnAction::Relayed => n.success,
        },
    }
}

/// Decodes RFC 3461 xtext (`+XX` hex escapes); `None` if malformed or
/// if the result would not be clean one-line text (then quote it raw).
fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    (!text.chars().any(char::is_control)).then_some(text)
}

/// Makes any text safe for a header field: controls become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Multi-line replies (`550-first\r\n550 second`) as one line, bounded.
fn diagnostic_line(s: &str) -> String {
    let joined = s
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut line = one_line(&joined);
    if line.len() > MAX_DIAGNOSTIC {
        let mut end = MAX_DIAGNOSTIC;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

/// Appends `Name: value` CRLF, folded at spaces so lines stay near 78
/// characters; a word too long to fold is cut at 900 bytes so no line
/// passes RFC 5322's 998.
fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    fold(out, name.len() + 1, value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the words of `value`, each after a space, starting a new
/// (space-indented) line before one that would pass 78 characters.
fn fold(out: &mut Vec<u8>, start: usize, value: &str) {
    let mut line_len = start;
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word;
        while word.len() > 900 {
            let mut cut = 900;
            while !word.is_char_boundary(cut) {
                cut -= 1;
            }
            push_word(out, &mut line_len, &word[..cut]);
            word = &word[cut..];
        }
        push_word(out, &mut line_len, word);
    }
}

fn push_word(out: &mut Vec<u8>, line_len: &mut usize, word: &str) {
    if *line_len + 1 + word.len() > 78 && *line_len > 1 {
        out.extend_from_slice(b"\r\n");
        *line_len = 0;
    }
    out.push(b' ');
    out.extend_from_slice(word.as_bytes());
    *line_len += 1 + word.len();
}

/// The header block of a message, up to and including the CRLF that ends
/// its last header (the whole text if it has no body).
fn header_block(body: &[u8]) -> &[u8] {
    if body.starts_with(b"\r\n") || body.starts_with(b"\n") {
        return &[];
    }
    let crlf = memchr::memmem::find(body, b"\r\n\r\n").map(|p| p + 2);
    let lf = memchr::memmem::find(body, b"\n\n").map(|p| p + 1);
    match (crlf, lf) {
        (Some(a), Some(b)) => &body[..a.min(b)],
        (Some(a), None) | (None, Some(a)) => &body[..a],
        (None, None) => body,
    }
}

/// `text` cut after the last line end within `limit` bytes (nothing when
/// even its first line is longer): a header block returned in part still
/// ends on a line boundary.
fn cut_at_line(text: &[u8], limit: usize) -> &[u8] {
    if text.len() <= limit {
        return text;
    }
    match memchr::memrchr(b'\n', &text[..limit]) {
        Some(end) => &text[..=end],
        None => &[],
    }
}

fn rfc5322_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// One recipient kept for the report.
struct Reported<'a> {
    rcpt: &'a Recipient,
    failed: &'a ReportedRecipient,
}

/// What of the original goes into the third part.
enum Returned<'a> {
    Full(&'a [u8]),
    Headers(&'a [u8]),
}

/// Builds the DSN for `failed` recipients of a message, or `None` when
/// none is owed: the null sender, or no recipient left after NOTIFY (and
/// after dropping indexes the envelope does not have). `arrival_date` is
/// when the original was received (Unix seconds); `now_wall` dates the
/// report and seeds its Message-ID. At most `return_limit` bytes of the
/// original are returned (see the module header).
pub fn build_dsn(
    original: &Envelope,
    original_body: &[u8],
    failed: &[ReportedRecipient],
    reporting_mta: &str,
    arrival_date: u64,
    now_wall: SystemTime,
    return_limit: usize,
) -> Option<Dsn> {
    if original.sender.is_empty() {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    let reported: Vec<Reported<'_>> = failed
        .iter()
        .filter(|f| seen.insert(f.index))
        .filter_map(|f| {
            let rcpt = original.recipients.get(f.index as usize)?;
            wants(rcpt.notify, f.action).then_some(Reported { rcpt, failed: f })
        })
        .collect();
    if reported.is_empty() {
        return None;
    }
    let any_failed = reported
        .iter()
        .any(|r| r.failed.action == DsnAction::Failed);
    let headers_only = !any_failed
        || original.body_type == BodyType::BinaryMime
        || original.dsn_return != Some(DsnReturn::Full)
        || original_body.len() > return_limit;
    let returned = if headers_only {
        Returned::Headers(cut_at_line(header_block(original_body), return_limit))
    } else {
        Returned::Full(original_body)
    };
    let returned_bytes = match returned {
        Returned::Full(b) | Returned::Headers(b) => b,
    };
    let mta = one_line(reporting_mta);
    let global = original.smtputf8
        && (!original.sender.is_ascii()
            || reported.iter().any(|r| !r.rcpt.address.is_ascii())
            || !header_block(original_body).is_ascii());

    let now = DateTime::<Utc>::from(now_wall);
    let human = human_part(&reported, &mta, any_failed);
    let status = status_part(original, &reported, &mta, arrival_date, global);

    let mut seed = crc32c::crc32c(original.sender.as_bytes());
    for r in &reported {
        seed = crc32c::crc32c_append(seed, &r.failed.index.to_le_bytes());
    }
    seed = crc32c::crc32c_append(seed, &(original_body.len() as u64).to_le_bytes());
    let nanos = now_wall
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let boundary = pick_boundary(nanos, seed, &[&human, &status, returned_bytes]);

    let mut out = Vec::with_capacity(2048 + returned_bytes.len());
    push_field(
        &mut out,
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{mta}>"),
    );
    push_field(&mut out, "To", &format!("<{}>", one_line(&original.sender)));
    let any_delayed = reported
        .iter()
        .any(|r| r.failed.action == DsnAction::Delayed);
    let subject = if any_failed {
        "Undelivered Mail Returned to Sender"
    } else if any_delayed {
        "Delayed Mail (still being retried)"
    } else {
        "Successful Mail Delivery Report"
    };
    push_field(&mut out, "Subject", subject);
    push_field(&mut out, "Date", &rfc5322_date(now));
    push_field(
        &mut out,
        "Message-ID",
        &format!("<{nanos:x}.{seed:08x}.dsn@{mta}>"),
    );
    push_field(&mut out, "Auto-Submitted", "auto-replied");
    push_field(&mut out, "MIME-Version", "1.0");
    let report_type = if global {
        "global-delivery-status"
    } else {
        "delivery-status"
    };
    push_field(
        &mut out,
        "Content-Type",
        // The report-type is the subtype of the second part (RFC 6522
        // section 3), so a global report says `global-delivery-status`.
        &format!("multipart/report; report-type={report_type}; boundary=\"{boundary}\""),
    );
    out.extend_from_slice(b"\r\nThis is a MIME-encapsulated delivery status notification.\r\n");

    let human_8bit = !human.is_ascii();
    let charset = if human_8bit { "utf-8" } else { "us-ascii" };
    open_part(&mut out, &boundary);
    push_field(
        &mut out,
        "Content-Type",
        &format!("text/plain; charset={charset}"),
    );
    if human_8bit {
        push_field(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    push_field(&mut out, "Content-Description", "Notification");
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&human);

    open_part(&mut out, &boundary);
    let status_type = if global {
        "message/global-delivery-status"
    } else {
        "message/delivery-status"
    };
    push_field(&mut out, "Content-Type", status_type);
    if !status.is_ascii() {
        push_field(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    push_field(&mut out, "Content-Description", "Delivery report");
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&status);

    open_part(&mut out, &boundary);
    let (ctype, what) = match (&returned, global) {
        (Returned::Full(_), false) => ("message/rfc822", "Undelivered Message"),
        (Returned::Full(_), true) => ("message/global", "Undelivered Message"),
        (Returned::Headers(_), false) => ("text/rfc822-headers", "Undelivered Message Headers"),
        (Returned::Headers(_), true) => ("message/global-headers", "Undelivered Message Headers"),
    };
    push_field(&mut out, "Content-Type", ctype);
    let content_8bit = !returned_bytes.is_ascii();
    if content_8bit {
        push_field(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    push_field(&mut out, "Content-Description", what);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(returned_bytes);
    // The CRLF before a delimiter belongs to it (RFC 2046 5.1.1), so the
    // part's content is exactly the returned bytes.
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");

    let any_8bit = human_8bit || !status.is_ascii() || content_8bit;
    let envelope = Envelope {
        sender: String::new(),
        recipients: vec![Recipient {
            address: original.sender.clone(),
            notify: Some(Notify {
                never: true,
                ..Notify::default()
            }),
            orcpt: None,
        }],
        body_type: if any_8bit {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        },
        smtputf8: global || !original.sender.is_ascii(),
        dsn_return: None,
        envid: None,
        received_at: now.timestamp().max(0) as u64,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        helo: mta,
        auth_user: None,
        tenant: None,
    };
    Some(Dsn {
        envelope,
        body: out,
    })
}

fn open_part(out: &mut Vec<u8>, boundary: &str) {
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A boundary that occurs in none of the parts (RFC 2046 5.1.1).
fn pick_boundary(nanos: u128, seed: u32, parts: &[&[u8]]) -> String {
    let mut n = 0u32;
    loop {
        let b = format!("=_spate_dsn_{nanos:x}_{seed:08x}_{n}");
        if parts
            .iter()
            .all(|p| memchr::memmem::find(p, b.as_bytes()).is_none())
        {
            return b;
        }
        n += 1;
    }
}

fn human_part(reported: &[Reported<'_>], mta: &str, any_failed: bool) -> Vec<u8> {
    let mut t = Vec::with_capacity(512);
    t.extend_from_slice(format!("This is the mail system at host {mta}.\r\n\r\n").as_bytes());
    let list = |t: &mut Vec<u8>, action: DsnAction| {
        for r in reported.iter().filter(|r| r.failed.action == action) {
            let head = format!("<{}>:", one_line(&r.rcpt.address));
            t.extend_from_slice(head.as_bytes());
            fold(t, head.len(), &diagnostic_line(&r.failed.diagnostic));
            t.extend_from_slice(b"\r\n");
        }
    };
    if any_failed {
        t.extend_from_slice(
            b"Your message could not be delivered to one or more recipients.\r\n\
              It is attached below. The reasons follow.\r\n\r\n",
        );
        list(&mut t, DsnAction::Failed);
        t.extend_from_slice(b"\r\n");
    }
    if reported
        .iter()
        .any(|r| r.failed.action == DsnAction::Delayed)
    {
        t.extend_from_slice(
            b"Delivery to the following recipients has been delayed. The mail\r\n\
              system will keep trying; there is no need to send the message again.\r\n\r\n",
        );
        list(&mut t, DsnAction::Delayed);
        t.extend_from_slice(b"\r\n");
    }
    if reported
        .iter()
        .any(|r| r.failed.action == DsnAction::Delivered)
    {
        t.extend_from_slice(
            b"Your message was delivered to the mailbox of the following\r\n\
              recipients.\r\n\r\n",
        );
        list(&mut t, DsnAction::Delivered);
        t.extend_from_slice(b"\r\n");
    }
    if reported
        .iter()
        .any(|r| r.failed.action == DsnAction::Relayed)
    {
        t.extend_from_slice(
            b"Your message was handed on for the following recipients to a\r\n\
              system that does not report delivery: no further notice will come.\r\n\r\n",
        );
        list(&mut t, DsnAction::Relayed);
    }
    t
}

fn status_part(
    original: &Envelope,
    reported: &[Reported<'_>],
    mta: &str,
    arrival_date: u64,
    global: bool,
) -> Vec<u8> {
    let mut s = Vec::with_capacity(512);
    if let Some(envid) = &original.envid {
        let id = xtext_decode(envid).unwrap_or_else(|| one_line(envid));
        push_field(&mut s, "Original-Envelope-Id", &id);
    }
    push_field(&mut s, "Reporting-MTA", &format!("dns; {mta}"));
    let arrival = DateTime::<Utc>::from_timestamp(i64::try_from(arrival_date).unwrap_or(0), 0)
        .unwrap_or_default();
    push_field(&mut s, "Arrival-Date", &rfc5322_date(arrival));
    for r in reported {
        s.extend_from_slice(b"\r\n");
        if let Some(orcpt) = &r.rcpt.orcpt {
            let value = match orcpt.split_once(';') {
                Some((kind, addr)) => {
                    let addr = xtext_decode(addr).unwrap_or_else(|| one_line(addr));
                    format!("{};{}", one_line(kind.trim()), addr)
                }
                None => one_line(orcpt),
            };
            push_field(&mut s, "Original-Recipient", &value);
        }
        let addr_type = if global && !r.rcpt.address.is_ascii() {
            "utf-8"
        } else {
            "rfc822"
        };
        push_field(
            &mut s,
            "Final-Recipient",
            &format!("{addr_type}; {}", one_line(&r.rcpt.address)),
        );
        push_field(&mut s, "Action", r.failed.action.keyword());
        let status = if is_status(&r.failed.status) {
            r.failed.status.clone()
        } else {
            match r.failed.action {
                DsnAction::Failed => "5.0.0".to_owned(),
                DsnAction::Delayed => "4.0.0".to_owned(),
                DsnAction::Delivered | DsnAction::Relayed => "2.0.0".to_owned(),
            }
        };
        push_field(&mut s, "Status", &status);
        let retry_until = r
            .failed
            .retry_until
            .filter(|_| r.failed.action == DsnAction::Delayed);
        if let Some(until) = retry_until {
            let until = DateTime::<Utc>::from_timestamp(i64::try_from(until).unwrap_or(0), 0)
                .unwrap_or_default();
            push_field(&mut s, "Will-Retry-Until", &rfc5322_date(until));
        }
        if let Some(remote) = r.failed.remote_mta.as_deref().and_then(remote_mta_name) {
            push_field(&mut s, "Remote-MTA", &format!("dns; {}", one_line(remote)));
        }
        if let Some(class) = r.failed.class {
            push_field(&mut s, "X-Spate-Class", class);
        }
        let diag = diagnostic_line(&r.failed.diagnostic);
        if !diag.is_empty() {
            let kind = if status_of(&diag).is_some() {
                "smtp"
            } else {
                "X-Spate"
            };
            push_field(&mut s, "Diagnostic-Code", &format!("{kind}; {diag}"));
        }
    }
    s
}

/// The remote MTA as RFC 3464 2.3.5 names it: the host name the
/// connection went to (`mx.example.test[192.0.2.1]:25`, as logs write it,
/// gives `mx.example.test`; a host known only by address keeps its
/// literal, `[192.0.2.1]`). `None` for local delivery: no remote MTA was
/// involved, and then the field MUST NOT be included.
fn remote_mta_name(remote: &str) -> Option<&str> {
    if remote == crate::delivery::agent::LOCAL_MTA {
        return None;
    }
    let name = match remote.find('[') {
        Some(0) => remote.find(']').map_or(remote, |end| &remote[..=end]),
        Some(at) => &remote[..at],
        None => remote,
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use mail_parser::{MessageParser, MimeHeaders, PartType};

    use super::*;

    const ARRIVAL: u64 = 1_700_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(ARRIVAL + 3600) + Duration::from_nanos(123)
    }

    fn rcpt(addr: &str, notify: Option<Notify>, orcpt: Option<&str>) -> Recipient {
        Recipient {
            address: addr.into(),
            notify,
            orcpt: orcpt.map(str::to_owned),
        }
    }

    fn envelope() -> Envelope {
        Envelope {
            sender: "alice@example.test".into(),
            recipients: vec![
                rcpt(
                    "bob@example.test",
                    None,
                    Some("rfc822;Bob+2BTag@example.test"),
                ),
                rcpt("carol@example.test", None, None),
                rcpt("dave@example.test", None, None),
            ],
            body_type: BodyType::SevenBit,
            smtputf8: false,
            dsn_return: None,
            envid: Some("QQ314159+2Bx".into()),
            received_at: ARRIVAL,
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            helo: "client.example.test".into(),
            auth_user: None,
            tenant: None,
        }
    }

    const BODY: &[u8] = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hello\r\n\r\nHi Bob,\r\nsee you.\r\n";

    fn failed(index: u32, action: DsnAction) -> ReportedRecipient {
        ReportedRecipient {
            index,
            status: if action == DsnAction::Failed {
                "5.1.1".into()
            } else {
                "4.4.1".into()
            },
            diagnostic: format!("550 5.1.1 <r{index}>: user unknown"),
            // As the SMTP agent names it in logs: host[address]:port.
            remote_mta: Some("mx.example.test[192.0.2.25]:25".into()),
            action,
            class: None,
            retry_until: None,
        }
    }

    fn build(env: &Envelope, body: &[u8], f: &[ReportedRecipient]) -> Option<Dsn> {
        build_dsn(
            env,
            body,
            f,
            "relay.example.test",
            ARRIVAL,
            now(),
            DEFAULT_RETURN_LIMIT,
        )
    }

    /// Splits a delivery-status body into its blocks of fields (the first
    /// is per-message). Continuation lines are unfolded.
    fn field_blocks(text: &str) -> Vec<HashMap<String, String>> {
        let mut blocks = Vec::new();
        for block in text.split("\r\n\r\n").filter(|b| !b.trim().is_empty()) {
            let mut map = HashMap::new();
            let mut last: Option<String> = None;
            for line in block.split("\r\n").filter(|l| !l.is_empty()) {
                if line.starts_with([' ', '\t']) {
                    let k = last.clone().expect("continuation after a field");
                    map.entry(k).and_modify(|v: &mut String| v.push_str(line));
                    continue;
                }
                let (k, v) = line.split_once(':').expect("field");
                assert!(
                    map.insert(k.to_string(), v.trim().to_string()).is_none(),
                    "{k} twice"
                );
                last = Some(k.to_string());
            }
            blocks.push(map);
        }
        blocks
    }

    fn check_lines(body: &[u8]) {
        for (i, w) in body.windows(2).enumerate() {
            if w[1] == b'\n' {
                assert_eq!(w[0], b'\r', "bare LF at {i}");
            }
        }
        assert!(!body.is_empty() && body[0] != b'\n');
        for line in body.split(|b| *b == b'\n') {
            assert!(line.len() <= 998, "line too long");
        }
    }

    #[test]
    fn full_structure_and_every_field() {
        let mut env = envelope();
        env.dsn_return = Some(DsnReturn::Full);
        let mut f1 = failed(1, DsnAction::Failed);
        f1.remote_mta = None;
        let dsn = build(&env, BODY, &[failed(0, DsnAction::Failed), f1]).expect("dsn");
        check_lines(&dsn.body);

        // envelope: from <> to the sender, NOTIFY=NEVER, no RET/ENVID
        assert_eq!(dsn.envelope.sender, "");
        assert_eq!(dsn.envelope.recipients.len(), 1);
        assert_eq!(dsn.envelope.recipients[0].address, "alice@example.test");
        assert!(dsn.envelope.recipients[0].notify.expect("notify").never);
        assert_eq!(dsn.envelope.dsn_return, None);
        assert_eq!(dsn.envelope.envid, None);
        assert_eq!(dsn.envelope.body_type, BodyType::SevenBit);
        assert_eq!(dsn.envelope.received_at, ARRIVAL + 3600);

        let msg = MessageParser::default().parse(&dsn.body).expect("parses");
        assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
        assert_eq!(
            msg.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        assert_eq!(msg.header_raw("MIME-Version").map(str::trim), Some("1.0"));
        assert_eq!(
            msg.date().map(|d| d.to_timestamp()),
            Some((ARRIVAL + 3600) as i64)
        );
        let mid = msg.message_id().expect("Message-ID");
        assert!(mid.ends_with("@relay.example.test"), "{mid}");
        let from = msg.from().and_then(|a| a.first()).expect("From");
        assert_eq!(from.address(), Some("MAILER-DAEMON@relay.example.test"));
        let to = msg.to().and_then(|a| a.first()).expect("To");
        assert_eq!(to.address(), Some("alice@example.test"));
        let ct = msg.content_type().expect("content type");
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        let boundary = ct.attribute("boundary").expect("boundary");

        let root = &msg.parts[0];
        let PartType::Multipart(children) = &root.body else {
            panic!("root is not multipart");
        };
        assert_eq!(children.len(), 3);
        let parts: Vec<_> = children.iter().map(|i| &msg.parts[*i as usize]).collect();

        // 1: human-readable
        let ct = parts[0].content_type().expect("ct");
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("plain")));
        let PartType::Text(text) = &parts[0].body else {
            panic!("text part");
        };
        assert!(text.contains("<bob@example.test>: 550 5.1.1 <r0>: user unknown"));
        assert!(text.contains("<carol@example.test>"));
        assert!(!text.contains("dave"));

        // 2: delivery-status
        let ct = parts[1].content_type().expect("ct");
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("message", Some("delivery-status"))
        );
        let status = std::str::from_utf8(parts[1].contents()).expect("ascii");
        let blocks = field_blocks(status);
        assert_eq!(blocks.len(), 3, "{status}");
        let m = &blocks[0];
        assert_eq!(m["Reporting-MTA"], "dns; relay.example.test");
        assert_eq!(m["Original-Envelope-Id"], "QQ314159+x", "xtext decoded");
        assert_eq!(m["Arrival-Date"], "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(m.len(), 3);
        let b = &blocks[1];
        assert_eq!(b["Original-Recipient"], "rfc822;Bob+Tag@example.test");
        assert_eq!(b["Final-Recipient"], "rfc822; bob@example.test");
        assert_eq!(b["Action"], "failed");
        assert_eq!(b["Status"], "5.1.1");
        assert_eq!(b["Remote-MTA"], "dns; mx.example.test");
        assert_eq!(b["Diagnostic-Code"], "smtp; 550 5.1.1 <r0>: user unknown");
        assert_eq!(b.len(), 6);
        let c = &blocks[2];
        assert!(!c.contains_key("Original-Recipient"), "no ORCPT, no field");
        assert!(!c.contains_key("Remote-MTA"));
        assert_eq!(c["Final-Recipient"], "rfc822; carol@example.test");
        assert_eq!(c.len(), 4);

        // 3: the whole message (RET=FULL, small)
        let ct = parts[2].content_type().expect("ct");
        assert_eq!((ct.ctype(), ct.subtype()), ("message", Some("rfc822")));
        let PartType::Message(inner) = &parts[2].body else {
            panic!("message/rfc822 part");
        };
        assert_eq!(inner.subject(), Some("hello"));
        assert_eq!(inner.raw_message(), BODY, "returned byte for byte");

        // the boundary occurs nowhere but as delimiters
        let count = memchr::memmem::find_iter(&dsn.body, boundary.as_bytes()).count();
        assert_eq!(count, 1 + 4, "header + 3 openings + close");
    }

    #[test]
    fn ret_selects_what_is_returned() {
        let mut env = envelope();
        let part3 = |dsn: &Dsn| -> (String, Vec<u8>) {
            let msg = MessageParser::default().parse(&dsn.body).expect("parses");
            let PartType::Multipart(ch) = &msg.parts[0].body else {
                panic!()
            };
            let p = &msg.parts[ch[2] as usize];
            let ct = p.content_type().expect("ct");
            (
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")),
                p.contents().to_vec(),
            )
        };
        let f = [failed(1, DsnAction::Failed)];
        env.dsn_return = Some(DsnReturn::Headers);
        let (t, c) = part3(&build(&env, BODY, &f).expect("dsn"));
        assert_eq!(t, "text/rfc822-headers");
        assert_eq!(
            c,
            b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hello\r\n"
        );
        // big message: the limit beats RET=FULL, and no RET is headers
        let mut big = BODY.to_vec();
        big.extend(std::iter::repeat_n(b"0123456789abcdef\r\n", 4000).flatten());
        env.dsn_return = Some(DsnReturn::Full);
        let (t, c) = part3(&build(&env, &big, &f).expect("dsn"));
        assert_eq!(t, "text/rfc822-headers");
        assert_eq!(
            c,
            b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hello\r\n"
        );
        env.dsn_return = None;
        let (t, _) = part3(&build(&env, &big, &f).expect("dsn"));
        assert_eq!(t, "text/rfc822-headers");
        // no RET: headers only, however small the message
        let (t, c) = part3(&build(&env, BODY, &f).expect("dsn"));
        assert_eq!(t, "text/rfc822-headers");
        assert_eq!(
            c,
            b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hello\r\n"
        );
        env.dsn_return = Some(DsnReturn::Full);
        let (t, c) = part3(&build(&env, BODY, &f).expect("dsn"));
        assert_eq!((t.as_str(), c.as_slice()), ("message/rfc822", BODY));
        // delay-only DSNs return headers even with RET=FULL
        env.dsn_return = Some(DsnReturn::Full);
        let d = build(&env, BODY, &[failed(1, DsnAction::Delayed)]).expect("dsn");
        assert_eq!(part3(&d).0, "text/rfc822-headers");
        let msg = MessageParser::default().parse(&d.body).expect("parses");
        assert_eq!(msg.subject(), Some("Delayed Mail (still being retried)"));
        // 8-bit content is labelled and the DSN travels as 8BITMIME
        let body8 = "Subject: caf\u{e9}\r\n\r\nd\u{e9}j\u{e0}\r\n".as_bytes();
        let d = build(&env, body8, &f).expect("dsn");
        assert_eq!(d.envelope.body_type, BodyType::EightBitMime);
        assert!(memchr::memmem::find(&d.body, b"Content-Transfer-Encoding: 8bit").is_some());
        assert_eq!(part3(&d).1, body8);
        // BINARYMIME: headers only
        env.body_type = BodyType::BinaryMime;
        assert_eq!(
            part3(&build(&env, BODY, &f).expect("dsn")).0,
            "text/rfc822-headers"
        );
    }

    #[test]
    fn the_return_limit_always_applies() {
        let mut env = envelope();
        env.dsn_return = Some(DsnReturn::Full);
        let f = [failed(1, DsnAction::Failed)];
        let build_with = |body: &[u8], limit: usize| {
            build_dsn(&env, body, &f, "relay.example.test", ARRIVAL, now(), limit).expect("dsn")
        };
        // RET=FULL over the limit: headers only.
        let d = build_with(BODY, BODY.len() - 1);
        assert!(memchr::memmem::find(&d.body, b"text/rfc822-headers").is_some());
        assert!(memchr::memmem::find(&d.body, b"message/rfc822").is_none());
        // A header block over the limit is cut at a line end within it.
        let mut huge = Vec::new();
        for i in 0..5000 {
            huge.extend_from_slice(format!("X-Filler-{i}: 0123456789abcdef\r\n").as_bytes());
        }
        huge.extend_from_slice(b"\r\nbody\r\n");
        let d = build_with(&huge, 1000);
        assert!(
            d.body.len() < 1000 + 4000,
            "DSN of {} bytes for a 1000-byte limit",
            d.body.len()
        );
        assert!(memchr::memmem::find(&d.body, b"X-Filler-0: ").is_some());
        assert!(memchr::memmem::find(&d.body, b"X-Filler-100: ").is_none());
        assert_eq!(cut_at_line(b"ab\r\ncd\r\n", 5), b"ab\r\n");
        assert_eq!(cut_at_line(b"abcdef\r\n", 3), b"");
        assert_eq!(cut_at_line(b"ab\r\n", 4), b"ab\r\n");
    }

    #[test]
    fn notify_rules() {
        let n = |never, failure, delay| {
            Some(Notify {
                never,
                success: false,
                failure,
                delay,
            })
        };
        let mut env = envelope();
        env.recipients = vec![
            rcpt("never@x.test", n(true, false, false), None),
            rcpt("failure@x.test", n(false, true, false), None),
            rcpt("delay@x.test", n(false, false, true), None),
            rcpt("default@x.test", None, None),
            rcpt(
                "success@x.test",
                Some(Notify {
                    success: true,
                    ..Notify::default()
                }),
                None,
            ),
        ];
        let reported = |f: &[ReportedRecipient]| -> Vec<String> {
            let Some(d) = build(&env, BODY, f) else {
                return Vec::new();
            };
            let msg = MessageParser::default().parse(&d.body).expect("parses");
            let PartType::Multipart(ch) = &msg.parts[0].body else {
                panic!()
            };
            let status = std::str::from_utf8(msg.parts[ch[1] as usize].contents())
                .expect("ascii")
                .to_string();
            field_blocks(&status)[1..]
                .iter()
                .map(|b| b["Final-Recipient"].clone())
                .collect()
        };
        let all_failed: Vec<_> = (0..5).map(|i| failed(i, DsnAction::Failed)).collect();
        assert_eq!(
            reported(&all_failed),
            ["rfc822; failure@x.test", "rfc822; default@x.test"]
        );
        let all_delayed: Vec<_> = (0..5).map(|i| failed(i, DsnAction::Delayed)).collect();
        assert_eq!(
            reported(&all_delayed),
            ["rfc822; delay@x.test", "rfc822; default@x.test"]
        );
        // SUCCESS only to those who asked for it (RFC 3461 5.2.2, 5.2.3).
        for action in [DsnAction::Delivered, DsnAction::Relayed] {
            let all: Vec<_> = (0..5).map(|i| failed(i, action)).collect();
            assert_eq!(reported(&all), ["rfc822; success@x.test"], "{action:?}");
        }
        // nothing left: no DSN at all
        assert!(build(&env, BODY, &[failed(0, DsnAction::Failed)]).is_none());
        assert!(build(&env, BODY, &[failed(1, DsnAction::Delayed)]).is_none());
        assert!(build(&env, BODY, &[failed(4, DsnAction::Failed)]).is_none());
        assert!(build(&env, BODY, &[]).is_none());
        assert!(build(&env, BODY, &[failed(99, DsnAction::Failed)]).is_none());
        // duplicates are reported once
        assert_eq!(
            reported(&[failed(1, DsnAction::Failed), failed(1, DsnAction::Failed)]).len(),
            1
        );
    }

    #[test]
    fn null_sender_never_gets_a_dsn() {
        let mut env = envelope();
        env.sender = String::new();
        assert!(build(&env, BODY, &[failed(0, DsnAction::Failed)]).is_none());
        assert!(build(&env, BODY, &[failed(0, DsnAction::Delayed)]).is_none());
    }

    #[test]
    fn no_envid_no_field_and_hostile_text_stays_in_its_field() {
        let mut env = envelope();
        env.envid = None;
        let mut f = failed(2, DsnAction::Failed);
        f.diagnostic = format!(
            "550-5.7.1 first line\r\n550 5.7.1 second\r\nInjected: header {}",
            "x".repeat(3000)
        );
        f.status = "bogus".into();
        f.remote_mta = Some("evil\r\nX-Bad: 1".into());
        let dsn = build(&env, BODY, &[f]).expect("dsn");
        check_lines(&dsn.body);
        let msg = MessageParser::default().parse(&dsn.body).expect("parses");
        let PartType::Multipart(ch) = &msg.parts[0].body else {
            panic!()
        };
        let status = std::str::from_utf8(msg.parts[ch[1] as usize].contents()).expect("ascii");
        let blocks = field_blocks(status);
        assert!(!blocks[0].contains_key("Original-Envelope-Id"));
        let r = &blocks[1];
        assert_eq!(r["Status"], "5.0.0", "invalid status replaced");
        assert!(!r.contains_key("Injected") && !r.contains_key("X-Bad"));
        assert!(r["Diagnostic-Code"].starts_with("smtp; 550-5.7.1 first line 550 5.7.1 second"));
        assert!(r["Diagnostic-Code"].len() < 1100, "bounded");
        assert_eq!(r["Remote-MTA"], "dns; evil X-Bad: 1");
    }

    #[test]
    fn boundary_avoids_the_content() {
        let mut env = envelope();
        env.dsn_return = Some(DsnReturn::Full);
        let f = [failed(0, DsnAction::Failed)];
        let first = build(&env, BODY, &f).expect("dsn");
        let msg = MessageParser::default().parse(&first.body).expect("parses");
        let b = msg
            .content_type()
            .and_then(|c| c.attribute("boundary"))
            .expect("boundary")
            .to_string();
        // a body that contains exactly that boundary (same length, so same seed)
        let prefix = "Subject: x\r\n\r\n";
        let line = format!("--{b}\r\n");
        let fill = BODY.len() - prefix.len() - line.len() - 2;
        let body = format!("{prefix}{}\r\n{line}", "y".repeat(fill)).into_bytes();
        assert_eq!(body.len(), BODY.len());
        let second = build(&env, &body, &f).expect("dsn");
        let msg = MessageParser::default()
            .parse(&second.body)
            .expect("parses");
        let b2 = msg
            .content_type()
            .and_then(|c| c.attribute("boundary"))
            .expect("boundary");
        assert_ne!(b2, b);
        assert!(memchr::memmem::find(&body, b2.as_bytes()).is_none());
        let PartType::Multipart(ch) = &msg.parts[0].body else {
            panic!()
        };
        assert_eq!(ch.len(), 3);
        let PartType::Message(inner) = &msg.parts[ch[2] as usize].body else {
            panic!("message part");
        };
        assert_eq!(inner.raw_message(), &body[..]);
    }

    #[test]
    fn smtputf8_uses_global_types() {
        let mut env = envelope();
        env.smtputf8 = true;
        env.dsn_return = Some(DsnReturn::Full);
        env.recipients[0].address = "用户@例子.测试".into();
        env.recipients[0].orcpt = Some("utf-8;用户@例子.测试".into());
        let dsn = build(&env, BODY, &[failed(0, DsnAction::Failed)]).expect("dsn");
        assert!(dsn.envelope.smtputf8);
        let msg = MessageParser::default().parse(&dsn.body).expect("parses");
        // RFC 6522 section 3: the report-type names the second part.
        let top = msg.parts[0].content_type().expect("ct");
        assert_eq!(top.attribute("report-type"), Some("global-delivery-status"));
        let PartType::Multipart(ch) = &msg.parts[0].body else {
            panic!()
        };
        let p = &msg.parts[ch[1] as usize];
        let ct = p.content_type().expect("ct");
        assert_eq!(ct.subtype(), Some("global-delivery-status"));
        let blocks = field_blocks(std::str::from_utf8(p.contents()).expect("utf-8"));
        assert_eq!(blocks[1]["Final-Recipient"], "utf-8; 用户@例子.测试");
        assert_eq!(blocks[1]["Original-Recipient"], "utf-8;用户@例子.测试");
        let ct = msg.parts[ch[2] as usize].content_type().expect("ct");
        assert_eq!(ct.subtype(), Some("global"));
        // without RET=FULL, the headers as message/global-headers
        env.dsn_return = None;
        let dsn = build(&env, BODY, &[failed(0, DsnAction::Failed)]).expect("dsn");
        let msg = MessageParser::default().parse(&dsn.body).expect("parses");
        let PartType::Multipart(ch) = &msg.parts[0].body else {
            panic!()
        };
        let ct = msg.parts[ch[2] as usize].content_type().expect("ct");
        assert_eq!(ct.subtype(), Some("global-headers"));
    }

    #[test]
    fn a_success_report_says_delivered_or_relayed_and_returns_headers_only() {
        let mut env = envelope();
        env.dsn_return = Some(DsnReturn::Full);
        let success = Some(Notify {
            success: true,
            ..Notify::default()
        });
        env.recipients = vec![
            rcpt("bob@example.test", success, Some("rfc822;bob@example.test")),
            rcpt("carol@example.test", success, None),
        ];
        let outcome = |reply: &str, remote: &str| RecipientOutcome {
            kind: OutcomeKind::Delivered,
            reply: reply.into(),
            remote_mta: Some(remote.into()),
        };
        let delivered = ReportedRecipient::success(
            0,
            &outcome(
                "250 2.0.0 delivered to mailbox",
                crate::delivery::agent::LOCAL_MTA,
            ),
            DsnAction::Delivered,
        );
        let relayed = ReportedRecipient::success(
            1,
            &outcome("250 Ok", "old.example.test[192.0.2.7]:25"),
            DsnAction::Relayed,
        );
        let dsn = build(&env, BODY, &[delivered, relayed]).expect("owed");
        let msg = MessageParser::default().parse(&dsn.body).expect("parses");
        assert_eq!(msg.subject(), Some("Successful Mail Delivery Report"));
        let PartType::Multipart(ch) = &msg.parts[0].body else {
            panic!("multipart");
        };
        let status = std::str::from_utf8(msg.parts[ch[1] as usize].contents()).unwrap();
        let blocks = field_blocks(status);
        assert_eq!(blocks[1]["Action"], "delivered");
        assert_eq!(blocks[1]["Status"], "2.0.0");
        assert!(
            !blocks[1].contains_key("Remote-MTA"),
            "local: no remote MTA"
        );
        assert_eq!(blocks[2]["Action"], "relayed");
        assert_eq!(blocks[2]["Status"], "2.0.0", "a bare 250 is 2.0.0");
        assert_eq!(blocks[2]["Remote-MTA"], "dns; old.example.test");
        // RET=FULL applies to failures only (RFC 3461 4.3): headers here.
        let third = &msg.parts[ch[2] as usize];
        let ct = third.content_type().expect("ct");
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("rfc822-headers")));
        assert!(!String::from_utf8_lossy(&dsn.body).contains("Hi Bob"));
        check_lines(&dsn.body);
    }

    #[test]
    fn will_retry_until_only_in_a_delayed_report() {
        let env = envelope();
        let until = ARRIVAL + 5 * 86_400;
        let mut delayed = failed(2, DsnAction::Delayed);
        delayed.retry_until = Some(until);
        let dsn = build(&env, BODY, &[delayed]).expect("dave has no NOTIFY: DELAY");
        let text = String::from_utf8_lossy(&dsn.body);
        assert!(
            text.contains("Will-Retry-Until: Sun, 19 Nov 2023 22:13:20 +0000"),
            "{text}"
        );
        let mut gave_up = failed(2, DsnAction::Failed);
        gave_up.retry_until = Some(until);
        let dsn = build(&env, BODY, &[gave_up]).expect("a failure");
        assert!(!String::from_utf8_lossy(&dsn.body).contains("Will-Retry-Until"));
    }

    #[test]
    fn the_remote_mta_is_a_host_name_and_absent_for_local_delivery() {
        assert_eq!(
            remote_mta_name("mx.example.test[192.0.2.25]:25"),
            Some("mx.example.test")
        );
        assert_eq!(remote_mta_name("[192.0.2.25]:2525"), Some("[192.0.2.25]"));
        assert_eq!(remote_mta_name("[2001:db8::1]:25"), Some("[2001:db8::1]"));
        assert_eq!(remote_mta_name("smarthost.test"), Some("smarthost.test"));
        assert_eq!(remote_mta_name(crate::delivery::agent::LOCAL_MTA), None);
        assert_eq!(remote_mta_name(""), None);
        let env = envelope();
        let mut f = failed(0, DsnAction::Failed);
        f.remote_mta = Some(crate::delivery::agent::LOCAL_MTA.into());
        let dsn = build(&env, BODY, &[f]).expect("a dsn");
        let text = String::from_utf8_lossy(&dsn.body);
        assert!(!text.contains("Remote-MTA"), "{text}");
    }

    #[test]
    fn status_and_outcome_helpers() {
        assert_eq!(status_of("550 5.1.1 no").as_deref(), Some("5.1.1"));
        assert_eq!(status_of("550-5.1.1 no").as_deref(), Some("5.1.1"));
        assert_eq!(status_of("451 busy").as_deref(), Some("4.0.0"));
        assert_eq!(status_of("451 5.1.1 mismatch").as_deref(), Some("4.0.0"));
        assert_eq!(status_of("connection refused"), None);
        assert_eq!(status_of("5501 x"), None);
        let o = |kind, reply: &str| RecipientOutcome {
            kind,
            reply: reply.into(),
            remote_mta: Some("mx".into()),
        };
        assert!(ReportedRecipient::from_outcome(0, &o(OutcomeKind::Delivered, "250 ok")).is_none());
        let b = ReportedRecipient::from_outcome(2, &o(OutcomeKind::Bounced, "550 5.2.2 full"))
            .expect("bounce");
        assert_eq!(
            (b.index, b.status.as_str(), b.action),
            (2, "5.2.2", DsnAction::Failed)
        );
        assert_eq!(b.remote_mta.as_deref(), Some("mx"));
        let e = ReportedRecipient::from_outcome(1, &o(OutcomeKind::Expired, "connect timeout"))
            .expect("expiry");
        assert_eq!((e.status.as_str(), e.action), ("4.4.7", DsnAction::Failed));
        let e = ReportedRecipient::from_outcome(1, &o(OutcomeKind::Expired, "421 4.4.2 gone"))
            .expect("expiry");
        assert_eq!(e.status, "4.4.2");
    }
}
