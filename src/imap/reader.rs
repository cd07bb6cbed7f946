//! Frames received bytes into complete IMAP commands, literals included, with every size
//! bounded; over-limit commands are rejected and their remaining octets discarded as they arrive.
//! It refuses to parse commands (beyond finding literal markers at line ends and a tag to
//! reply to), to know session state, or to buffer more than its configured capacity.
//!
//! RFC 3501 2.2 and 7.5, RFC 7888: a command is lines joined by literals.
//! A line that ends in `{n}` announces a synchronising literal: the client
//! waits for a continuation request before sending its n octets, so the
//! reader stops and says [`Step::NeedContinuation`]; a server that will not
//! take the literal answers the tag instead (RFC 3501 7.5), which is what
//! [`Step::Rejected`] asks for. `{n+}` (LITERAL+/LITERAL-) and `~{n}`
//! (literal8, RFC 3516) follow at once; a non-synchronising literal that is
//! too big cannot be refused in advance, so its octets are swallowed and
//! dropped (RFC 7888 4, choice 1: the BAD may go out before them).
//!
//! A line ends at LF, a CR before it optional (lenient clients exist; IMAP
//! has no end-of-data marker to smuggle). Empty lines between commands are
//! skipped. Memory: the buffer never holds
//! more than [`ReaderConfig::capacity`] octets: [`CommandReader::push`]
//! takes only what fits, and a complete command is at most
//! [`ReaderConfig::max_command`] octets, which is below the capacity.

use memchr::memchr;

/// Octets kept from a line being discarded: enough to see a literal
/// marker (`~{` 20 digits `+}` CR) at its end.
const MARKER_TAIL: usize = 26;

/// Buffer room beyond one command, for what the client pipelines.
const PIPELINE_ROOM: usize = 16 * 1024;

/// RFC 7888 5: with LITERAL- a non-synchronising literal is at most this.
pub const LITERAL_MINUS_MAX: u64 = 4096;

/// Text of the continuation request for a synchronising literal.
pub const CONTINUATION: &[u8] = b"+ Ready for literal data\r\n";

/// The reader's limits. Not a serde type: the config layer fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderConfig {
    /// Octets of a command outside its literals, CRLFs included, over all
    /// its lines.
    pub max_line: usize,
    /// Largest single literal: for APPEND this is the message size limit.
    pub max_literal: u64,
    /// Largest non-synchronising literal: [`LITERAL_MINUS_MAX`] when
    /// LITERAL- is advertised, `max_literal` with LITERAL+.
    pub max_nonsync_literal: u64,
    /// Largest whole command, literals and lines together.
    pub max_command: u64,
}

impl Default for ReaderConfig {
    /// 64 KiB of command text, 32 MiB messages, LITERAL- semantics.
    fn default() -> Self {
        ReaderConfig {
            max_line: 64 * 1024,
            max_literal: 32 * 1024 * 1024,
            max_nonsync_literal: LITERAL_MINUS_MAX,
            max_command: 32 * 1024 * 1024 + 64 * 1024,
        }
    }
}

impl ReaderConfig {
    /// The limits before login: literals of at most [`LITERAL_MINUS_MAX`]
    /// octets (a LOGIN or ID argument never needs more; a bigger
    /// synchronising literal is refused without a continuation, so its
    /// octets are never sent), lines of 8 KiB (a SASL PLAIN response
    /// fits), commands of 16 KiB. An unauthenticated client can so make a
    /// connection hold about 32 KiB, not a message's worth.
    pub fn before_login() -> Self {
        ReaderConfig {
            max_line: 8 * 1024,
            max_literal: LITERAL_MINUS_MAX,
            max_nonsync_literal: LITERAL_MINUS_MAX,
            max_command: 16 * 1024,
        }
    }

    /// Buffer size: one whole command (never more than `max_command`
    /// octets are buffered for it) plus room for pipelined input.
    pub fn capacity(&self) -> usize {
        let command = usize::try_from(self.max_command).unwrap_or(usize::MAX);
        command.max(self.max_line).saturating_add(PIPELINE_ROOM)
    }
}

/// Why a command was refused before it was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The command's text outside literals passed `max_line`.
    LineTooLong,
    /// One literal over `max_literal` (or over `max_nonsync_literal` for
    /// a non-synchronising one, `nonsync` true).
    LiteralTooBig { size: u64, nonsync: bool },
    /// The whole command would pass `max_command`.
    CommandTooBig,
}

/// A refused command: answer it (tagged when the tag is known) and move
/// on; the reader discards the rest of it by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection<'a> {
    /// The command's tag, if its first octets formed a valid one.
    pub tag: Option<&'a str>,
    /// The command name as sent (uppercase it to compare), if read: APPEND
    /// gets `[TOOBIG]` (RFC 7888 5).
    pub command: Option<&'a str>,
    pub limit: Limit,
}

impl Rejection<'_> {
    /// RFC 7888 5 / RFC 4469: the reply to an APPEND refused for size
    /// carries TOOBIG.
    pub fn is_append(&self) -> bool {
        self.command
            .is_some_and(|c| c.eq_ignore_ascii_case("APPEND"))
    }
}

/// What [`CommandReader::next_command`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// A complete command, literals inline, without its final CRLF: give it
    /// to [`super::parser::parse_command`]. It borrows the reader's buffer,
    /// so it is used before the reader is called again.
    Command(&'a [u8]),
    /// A synchronising literal was announced and is within limits: send
    /// [`CONTINUATION`], then feed more.
    NeedContinuation,
    /// The command passed a limit: answer it now; its remaining octets
    /// are dropped as they come.
    Rejected(Rejection<'a>),
    /// Feed more.
    Incomplete,
}

/// What [`CommandReader::next_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStep<'a> {
    /// One line without its CRLF.
    Line(&'a [u8]),
    /// A line over `max_line` ended; all of it was dropped.
    TooLong,
    Incomplete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the LF that ends the current line of a command.
    Line,
    /// Collecting `remaining` octets of an accepted literal.
    Literal { remaining: u64 },
    /// Dropping a refused command up to the end of its current line.
    DiscardLine,
    /// Dropping a refused non-synchronising literal's octets.
    DiscardLiteral { remaining: u64 },
    /// [`CommandReader::next_line`] is dropping an over-long line.
    DiscardRawLine,
}

/// The receive side of an IMAP server connection: a bounded buffer and the
/// framing state of the command being received.
#[derive(Debug)]
pub struct CommandReader {
    config: ReaderConfig,
    buf: Vec<u8>,
    /// Start of the current command (or of what is being discarded);
    /// octets before it are dropped on the next push.
    start: usize,
    /// Framed up to here: the current line starts here.
    scan: usize,
    /// No LF in the current line before here (so a line fed in small
    /// pieces is searched once, not once per piece).
    searched: usize,
    /// Octets outside literals in finished lines of the current command.
    line_octets: usize,
    /// Octets of the current command so far, literals included.
    total: u64,
    state: State,
}

impl CommandReader {
    pub fn new(config: ReaderConfig) -> Self {
        CommandReader {
            buf: Vec::with_capacity(config.capacity().min(4096)),
            config,
            start: 0,
            scan: 0,
            searched: 0,
            line_octets: 0,
            total: 0,
            state: State::Line,
        }
    }

    pub fn config(&self) -> &ReaderConfig {
        &self.config
    }

    /// Changes the limits (after login). Call it between commands, after
    /// a [`Step::Command`]: the command being framed next is held to them.
    pub fn set_config(&mut self, config: ReaderConfig) {
        self.config = config;
    }

    /// Takes as much of `input` as fits; returns how many octets it took.
    /// Call [`CommandReader::next_command`] until `Incomplete`, then push
    /// the rest.
    pub fn push(&mut self, input: &[u8]) -> usize {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scan -= self.start;
            self.searched = self.searched.saturating_sub(self.start);
            self.start = 0;
        }
        let room = self.config.capacity().saturating_sub(self.buf.len());
        let n = input.len().min(room);
        self.buf.extend_from_slice(&input[..n]);
        n
    }

    /// Unprocessed octets buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Forgets everything buffered and any command in progress (RFC 3501
    /// 6.2.1 / RFC 2595 3.1: nothing received before TLS counts after it).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scan = 0;
        self.searched = 0;
        self.reset_command();
    }

    fn reset_command(&mut self) {
        self.line_octets = 0;
        self.total = 0;
        self.state = State::Line;
    }

    /// Frames the next command, or says what the session must do first.
    pub fn next_command(&mut self) -> Step<'_> {
        loop {
            match self.state {
                State::Line | State::DiscardRawLine => {
                    if self.state == State::DiscardRawLine {
                        // A next_line discard in progress: finish it first.
                        if let LineStep::Incomplete = self.next_line() {
                            return Step::Incomplete;
                        }
                        continue;
                    }
                    match self.frame_line() {
                        Framed::More => continue,
                        Framed::Incomplete => return Step::Incomplete,
                        Framed::Complete(end) => {
                            let from = self.start;
                            self.start = self.scan;
                            self.reset_command();
                            return Step::Command(&self.buf[from..end]);
                        }
                        Framed::Continuation => return Step::NeedContinuation,
                        Framed::Rejected(command_start, limit) => {
                            let (tag, command) = tag_and_command(&self.buf[command_start..]);
                            return Step::Rejected(Rejection {
                                tag,
                                command,
                                limit,
                            });
                        }
                    }
                }
                State::Literal { remaining } => {
                    let available = (self.buf.len() - self.scan) as u64;
                    let take = available.min(remaining);
                    // take <= available, which is a usize.
                    self.scan += take as usize;
                    if take < remaining {
                        self.state = State::Literal {
                            remaining: remaining - take,
                        };
                        return Step::Incomplete;
                    }
                    self.state = State::Line;
                }
                State::DiscardLiteral { remaining } => {
                    let available = (self.buf.len() - self.start) as u64;
                    let take = available.min(remaining);
                    self.start += take as usize;
                    self.scan = self.start;
                    if take < remaining {
                        self.state = State::DiscardLiteral {
                            remaining: remaining - take,
                        };
                        return Step::Incomplete;
                    }
                    self.state = State::DiscardLine;
                }
                State::DiscardLine => match memchr(b'\n', &self.buf[self.scan..]) {
                    Some(k) => {
                        let lf = self.scan + k;
                        let tail_from = lf.saturating_sub(MARKER_TAIL).max(self.start);
                        let marker = literal_marker(&self.buf[tail_from..lf]);
                        self.start = lf + 1;
                        self.scan = self.start;
                        match marker {
                            // The client already has its answer and will
                            // not send a synchronising literal's octets.
                            Some(Marker { sync: true, .. }) | None => self.reset_command(),
                            Some(Marker { size, .. }) => {
                                self.state = State::DiscardLiteral { remaining: size }
                            }
                        }
                    }
                    None => {
                        self.scan = self.buf.len();
                        self.start = self.buf.len().saturating_sub(MARKER_TAIL).max(self.start);
                        return Step::Incomplete;
                    }
                },
            }
        }
    }

    /// Frames the current line of a command from `scan`.
    fn frame_line(&mut self) -> Framed {
        let line_room = self.config.max_line.saturating_sub(self.line_octets);
        let command_room = usize::try_from(self.config.max_command.saturating_sub(self.total))
            .unwrap_or(usize::MAX);
        let allowed = line_room.min(command_room);
        let line_start = self.scan;
        let limit_end = line_start.saturating_add(allowed);
        let from = self.searched.max(line_start);
        let end = self.buf.len().min(limit_end);
        let Some(k) = memchr(b'\n', &self.buf[from..end]) else {
            self.searched = end;
            if self.buf.len() >= limit_end {
                let limit = if line_room <= command_room {
                    Limit::LineTooLong
                } else {
                    Limit::CommandTooBig
                };
                return self.reject_mid_line(limit, limit_end);
            }
            return Framed::Incomplete;
        };
        let lf = from + k;
        let length = lf + 1 - line_start;
        self.line_octets += length;
        self.total += length as u64;
        self.scan = lf + 1;
        let line = &self.buf[line_start..lf];
        let Some(marker) = literal_marker(line) else {
            if self.total == length as u64 && (line.is_empty() || line == b"\r") {
                // An empty line between commands: some clients send one
                // after a literal. Not a command; skip it.
                self.start = self.scan;
                self.reset_command();
                return Framed::More;
            }
            let end = if line.ends_with(b"\r") { lf - 1 } else { lf };
            return Framed::Complete(end);
        };
        let max = if marker.sync {
            self.config.max_literal
        } else {
            self.config.max_nonsync_literal.min(self.config.max_literal)
        };
        if marker.size > max {
            let limit = Limit::LiteralTooBig {
                size: marker.size,
                nonsync: !marker.sync,
            };
            return self.reject_at_literal(limit, marker);
        }
        if self.total.saturating_add(marker.size) > self.config.max_command {
            return self.reject_at_literal(Limit::CommandTooBig, marker);
        }
        self.total += marker.size;
        self.state = State::Literal {
            remaining: marker.size,
        };
        if marker.sync {
            Framed::Continuation
        } else {
            Framed::More
        }
    }

    /// Refuses the command at a literal marker that ended the line.
    fn reject_at_literal(&mut self, limit: Limit, marker: Marker) -> Framed {
        let command_start = self.start;
        self.start = self.scan;
        if marker.sync {
            // RFC 3501 7.5: no continuation, so no literal octets follow.
            self.reset_command();
        } else {
            self.state = State::DiscardLiteral {
                remaining: marker.size,
            };
        }
        Framed::Rejected(command_start, limit)
    }

    /// Refuses the command in the middle of a line; there is no LF before
    /// `searched_to`.
    fn reject_mid_line(&mut self, limit: Limit, searched_to: usize) -> Framed {
        let command_start = self.start;
        self.scan = searched_to;
        // The octets stay in the buffer until the next push, so the tag
        // can still be read; then only the tail is kept.
        self.start = searched_to.saturating_sub(MARKER_TAIL).max(self.start);
        self.state = State::DiscardLine;
        Framed::Rejected(command_start, limit)
    }

    /// The next raw line, for the exchanges that are not commands: SASL
    /// responses during AUTHENTICATE (RFC 3501 6.2.2) and `DONE` during
    /// IDLE (RFC 2177). Call it only between commands (after a
    /// `Step::Command`): it does not look for literals.
    pub fn next_line(&mut self) -> LineStep<'_> {
        let max = self.config.max_line;
        if self.state == State::DiscardRawLine {
            return match memchr(b'\n', &self.buf[self.start..]) {
                Some(k) => {
                    self.start += k + 1;
                    self.scan = self.start;
                    self.state = State::Line;
                    LineStep::TooLong
                }
                None => {
                    self.start = self.buf.len();
                    self.scan = self.start;
                    LineStep::Incomplete
                }
            };
        }
        let limit_end = self.start.saturating_add(max);
        let from = self.searched.max(self.start);
        let end = self.buf.len().min(limit_end);
        match memchr(b'\n', &self.buf[from..end]) {
            Some(k) => {
                let line_start = self.start;
                let lf = from + k;
                let line_end = if lf > line_start && self.buf[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                self.start = lf + 1;
                self.scan = self.start;
                LineStep::Line(&self.buf[line_start..line_end])
            }
            None if self.buf.len() >= limit_end => {
                self.start = end;
                self.scan = self.start;
                self.state = State::DiscardRawLine;
                self.next_line()
            }
            None => {
                self.searched = end;
                LineStep::Incomplete
            }
        }
    }
}

/// RFC 2177 3: the line that ends IDLE (case-insensitive).
pub fn is_done(line: &[u8]) -> bool {
    line.eq_ignore_ascii_case(b"DONE")
}

enum Framed {
    /// A literal follows at once: keep framing.
    More,
    Incomplete,
    /// The command ends at this buffer offset (before its CRLF).
    Complete(usize),
    Continuation,
    /// Refused; the command began at this offset.
    Rejected(usize, Limit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marker {
    size: u64,
    sync: bool,
}

/// The literal announced at the end of `line` (LF removed, CR optional):
/// `{n}`, `{n+}`, `~{n}` or `~{n+}`. A size too large for u64 is read as
/// u64::MAX, which every limit refuses.
fn literal_marker(line: &[u8]) -> Option<Marker> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let (digits_end, sync) = match inner.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (inner, true),
    };
    let open = digits_end.iter().rposition(|&b| b == b'{')?;
    let digits = &digits_end[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Some(Marker { size, sync })
}

/// The tag and command name at the start of a command, when they are
/// well-formed (tag: ASTRING-CHARs but "+"; name: letters).
/// Longer than any IMAP command name (`UNSUBSCRIBE`, `AUTHENTICATE`).
const MAX_COMMAND_NAME: usize = 32;
/// The longest tag a rejection is answered with (clients use a few
/// characters).
const MAX_REJECTED_TAG: usize = 64;

fn tag_and_command(command: &[u8]) -> (Option<&str>, Option<&str>) {
    let tag_len = command
        .iter()
        .position(|&b| !is_tag_char(b))
        .unwrap_or(command.len());
    // Likewise a tag: ended by a space within what was received, and of
    // a sane length (a longer one is answered untagged).
    if tag_len == 0 || tag_len > MAX_REJECTED_TAG || command.get(tag_len) != Some(&b' ') {
        return (None, None);
    }
    // Tag characters are ASCII.
    let tag = std::str::from_utf8(&command[..tag_len]).ok();
    let rest = &command[tag_len + 1..];
    // A name is a short run of letters ended within what was received:
    // a run that reaches the end of the buffer or goes on past any
    // command's length names nothing, so the answer does not depend on
    // how the client's bytes were split (found by fuzzing).
    let name = rest
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .filter(|&len| (1..=MAX_COMMAND_NAME).contains(&len))
        .and_then(|len| std::str::from_utf8(&rest[..len]).ok());
    (tag, name)
}

fn is_tag_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){%*\"\\+".contains(&b)
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn a_rejected_commands_name_does_not_depend_on_the_split() {
        assert_eq!(
            tag_and_command(b"a1 LOGIN {9000000}"),
            (Some("a1"), Some("LOGIN"))
        );
        // Cut inside the name, or a run of letters no command has: none.
        assert_eq!(tag_and_command(b"a1 AUTHENT"), (Some("a1"), None));
        let long = format!("x2 AUTHENT{}\r\n", "A".repeat(100));
        assert_eq!(tag_and_command(long.as_bytes()), (Some("x2"), None));
        assert_eq!(tag_and_command(b"(bad"), (None, None));
        let long_tag = format!("{} LOGIN x", "t".repeat(65));
        assert_eq!(tag_and_command(long_tag.as_bytes()), (None, None));
    }
}
