//! The IMAP4rev1 server session (RFC 3501 with LITERAL-, SASL-IR, ID, ENABLE, IDLE, NAMESPACE,
//! UIDPLUS, MOVE, UNSELECT, CHILDREN, SPECIAL-USE, LIST-EXTENDED, SORT, THREAD, QUOTA, CONDSTORE,
//! QRESYNC): executes parsed commands against the mailbox store synchronously and collects the
//! replies. It refuses to touch sockets, TLS, clocks or the command framing: the driver reads
//! commands with
//! [`super::CommandReader`], runs [`Session::execute`] on a blocking thread, and acts on the
//! [`Outcome`].
//!
//! # The driver's side
//!
//! | outcome / state | the driver does |
//! |---|---|
//! | `Continue` | flushes `output()`, reads the next command |
//! | `Partial` | flushes `output()` (part of a long FETCH reply), then calls `resume`, until another outcome |
//! | `StartTls` | flushes (it ends with "OK Begin TLS"), drops unread plaintext, handshakes, calls `tls_established` |
//! | `Idle` | flushes "+ idling", calls `idle_poll` on changes or a timer, `idle_done` on `DONE` |
//! | `AuthFailed` | delays (login throttle), then flushes the NO |
//! | `Logout` | flushes BYE and OK, closes |
//! | `wants_sasl_line()` | reads one raw line with `next_line`, gives it to `sasl_response` |
//!
//! After each command in the selected state the view is synced with the
//! store and the untagged updates go out before the tagged reply
//! (RFC 3501 7.4.1: no EXPUNGE during FETCH, STORE or SEARCH).
//!
//! A FETCH whose reply grows past [`REPLY_PART`] stops there and returns
//! `Partial`: the driver writes that part without holding a thread, however
//! slowly the client reads, and `resume` writes the next. The view does not
//! change between parts (the sync waits for the last), and a command given
//! to `execute` while a FETCH is unfinished first finishes it.

use std::sync::Arc;

use super::authenticated::{existing_folder, over_quota, User};
use super::command::{Command, CommandBody, FetchAttribute, FetchItems, StatusItem};
use super::condstore::{self, Enabled};
use super::parser::CommandError;
use super::quota::{self, QUOTA_CAPABILITIES};
use super::reader::Rejection;
use super::reply::{completed, tagged, write_mailbox_error, Say};
use super::response::{
    write_command_error, write_continuation, write_rejection, write_untagged_status, Code, Status,
};
use super::selected::{write_copyuid_untagged, CopyUid, Failure, FetchCursor};
use crate::local::Login;
use crate::mailbox::{MailboxError, UserMailbox};
use crate::sasl;

/// What the session needs from the rest of the server: password checks
/// and mailboxes (the glue implements it over `LocalTier`).
pub trait Backend {
    fn authenticate(&self, login: &str, password: &str) -> Login;
    fn mailbox(&self, user: &str) -> Result<UserMailbox, MailboxError>;
    /// The user's quota in bytes; `None` is unlimited.
    fn quota(&self, user: &str) -> Option<u64> {
        let _ = user;
        None
    }
}

/// The configuration a session needs; an immutable snapshot shared by
/// the sessions of a core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapConfig {
    /// A certificate is configured: STARTTLS is offered until TLS is up.
    pub starttls: bool,
    /// Largest APPEND message (answered `NO [TOOBIG]` past it).
    pub max_append: u64,
    /// Parsed message structures kept per selected mailbox.
    pub max_cached_structures: usize,
    /// Invalid commands in a row before the session says BYE.
    pub max_bad_commands: u32,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            starttls: false,
            max_append: 32 * 1024 * 1024,
            max_cached_structures: 4096,
            max_bad_commands: 20,
        }
    }
}

/// What the driver knows about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerInfo {
    /// TLS is up (port 993, or after STARTTLS).
    pub tls: bool,
    /// Plaintext passwords are allowed: TLS, a loopback peer, or the
    /// configuration allows them everywhere (DESIGN.md).
    pub plaintext_allowed: bool,
}

/// What the driver does after a call; see the module header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// `output()` holds part of a FETCH reply: write it, then call
    /// [`Session::resume`].
    Partial,
    StartTls,
    Idle,
    AuthFailed,
    Logout,
}

/// RFC 3501 3: the states, each with its data.
#[derive(Debug)]
enum State {
    /// `sasl` holds the tag of an AUTHENTICATE waiting for its response
    /// line.
    NotAuthenticated {
        sasl: Option<String>,
    },
    /// Authenticated, or selected when `user.selected` is set; `idle`
    /// holds the tag of a running IDLE.
    Authenticated {
        user: Box<User>,
        idle: Option<String>,
    },
    Logout,
}

/// The reply a FETCH writes before it stops for the driver to send it
/// (`Outcome::Partial`): a session holds at most this much and one
/// message's response.
pub const REPLY_PART: usize = 256 * 1024;

/// A FETCH that stopped after a part of its reply.
#[derive(Debug)]
struct PendingFetch {
    tag: String,
    /// `FETCH` or `UID FETCH`.
    name: &'static str,
    cursor: FetchCursor,
}

/// One IMAP connection's protocol state and pending output.
#[derive(Debug)]
pub struct Session {
    config: Arc<ImapConfig>,
    peer: PeerInfo,
    state: State,
    out: Vec<u8>,
    /// Set between the parts of a long FETCH reply.
    fetching: Option<PendingFetch>,
    bad_in_a_row: u32,
}

/// How a command that may be followed by updates ended.
#[derive(Debug)]
enum Done {
    /// The handler wrote its whole reply to the held buffer.
    Held,
    Ok,
    /// OK with a response code that warns (`[EXPUNGEISSUED]`).
    OkWarned(Code<'static>, Say),
    /// COPY's `[COPYUID validity source destination]` (RFC 4315 3).
    CopyUid(CopyUid),
    /// RFC 7162 3.1.3: a conditional STORE left these messages alone.
    Modified(Vec<u32>),
    /// RFC 7162 3.2.7: an EXPUNGE under QRESYNC removed messages; the
    /// tagged OK carries the folder's new highest modseq.
    HighestModSeq,
    Failed(Failure),
}

impl From<Failure> for Done {
    fn from(f: Failure) -> Self {
        Done::Failed(f)
    }
}

impl From<Result<(), Failure>> for Done {
    fn from(r: Result<(), Failure>) -> Self {
        match r {
            Ok(()) => Done::Ok,
            Err(f) => Done::Failed(f),
        }
    }
}

/// Whether a selected-state command is a CONDSTORE enabling command
/// (RFC 7162 3.1): FETCH of MODSEQ or with CHANGEDSINCE, SEARCH with a
/// MODSEQ key, STORE with UNCHANGEDSINCE.
fn condstore_enabling(body: &CommandBody<'_>) -> bool {
    match body {
        CommandBody::Fetch {
            items: FetchItems::List(items),
            ..
        } if items.contains(&FetchAttribute::ModSeq) => true,
        CommandBody::Fetch { changed_since, .. } => changed_since.is_some(),
        CommandBody::Store {
            unchanged_since, ..
        } => unchanged_since.is_some(),
        CommandBody::Search { criteria, .. } | CommandBody::Sort { criteria, .. } => {
            condstore::has_modseq_key(criteria)
        }
        _ => false,
    }
}

/// Enables CONDSTORE for the connection and the selected mailbox (which
/// reports its HIGHESTMODSEQ the first time, RFC 7162 3.1).
fn enable_condstore(user: &mut User, out: &mut Vec<u8>) {
    user.enabled.condstore = true;
    if let Some(selected) = &mut user.selected {
        selected.enable_condstore(out);
    }
}

/// The commands of each state, for the wrong-state answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Any,
    NotAuthenticated,
    Authenticated,
    Selected,
}

fn needs(body: &CommandBody<'_>) -> Needs {
    use CommandBody as C;
    match body {
        C::Capability | C::Noop | C::Logout | C::Id(_) => Needs::Any,
        C::StartTls | C::Authenticate { .. } | C::Login { .. } => Needs::NotAuthenticated,
        C::Enable(_)
        | C::Select { .. }
        | C::Create(_)
        | C::Delete(_)
        | C::Rename { .. }
        | C::Subscribe(_)
        | C::Unsubscribe(_)
        | C::List(_)
        | C::Lsub { .. }
        | C::Namespace
        | C::Status { .. }
        | C::Append { .. }
        | C::GetQuota(_)
        | C::GetQuotaRoot(_)
        | C::SetQuota { .. }
        | C::Idle => Needs::Authenticated,
        C::Check
        | C::Close
        | C::Unselect
        | C::Expunge
        | C::UidExpunge(_)
        | C::Search { .. }
        | C::Sort { .. }
        | C::Thread { .. }
        | C::Fetch { .. }
        | C::Store { .. }
        | C::Copy { .. }
        | C::Move { .. } => Needs::Selected,
    }
}

impl Session {
    /// A new connection: the greeting is in the output.
    pub fn new(config: Arc<ImapConfig>, peer: PeerInfo) -> Session {
        let mut session = Session {
            config,
            peer,
            state: State::NotAuthenticated { sasl: None },
            out: Vec::with_capacity(1024),
            fetching: None,
            bad_in_a_row: 0,
        };
        let caps = session.capabilities();
        write_untagged_status(
            &mut session.out,
            Status::Ok,
            Some(&Code::Capability(&caps)),
            Say::Ready.as_str(),
        );
        session
    }

    /// RFC 3501 7.2.1, with the extensions; what depends on the state:
    /// STARTTLS and AUTH=PLAIN / LOGINDISABLED before login only.
    fn capabilities(&self) -> Vec<&'static str> {
        let mut caps = vec!["IMAP4rev1"];
        if matches!(self.state, State::NotAuthenticated { .. }) {
            if self.config.starttls && !self.peer.tls {
                caps.push("STARTTLS");
            }
            if self.plaintext_allowed() {
                caps.push("AUTH=PLAIN");
            } else {
                caps.push("LOGINDISABLED");
            }
        }
        caps.extend([
            "LITERAL-",
            "SASL-IR",
            "ID",
            "ENABLE",
            "CONDSTORE",
            "QRESYNC",
            "IDLE",
            "NAMESPACE",
            "UIDPLUS",
            "MOVE",
            "UNSELECT",
            "CHILDREN",
            "SPECIAL-USE",
            "LIST-EXTENDED",
            "SORT",
        ]);
        caps.extend(["THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES"]);
        caps.extend(QUOTA_CAPABILITIES);
        caps
    }

    fn plaintext_allowed(&self) -> bool {
        self.peer.tls || self.peer.plaintext_allowed
    }

    pub fn output(&self) -> &[u8] {
        &self.out
    }

    pub fn consume_output(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// A login (LOGIN or AUTHENTICATE) succeeded and the session has not
    /// logged out.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated { .. })
    }

    pub fn is_logged_out(&self) -> bool {
        matches!(self.state, State::Logout)
    }

    /// An AUTHENTICATE is waiting for its response line.
    pub fn wants_sasl_line(&self) -> bool {
        matches!(self.state, State::NotAuthenticated { sasl: Some(_) })
    }

    /// RFC 3501 5.4: the driver's autologout timer ran out.
    pub fn timeout(&mut self) {
        write_untagged_status(&mut self.out, Status::Bye, None, Say::Autologout.as_str());
        self.fetching = None;
        self.state = State::Logout;
    }

    /// A command that did not parse: BAD; too many in a row end the
    /// session.
    pub fn command_error(&mut self, error: &CommandError<'_>) {
        write_command_error(&mut self.out, error);
        self.count_bad();
    }

    /// A command the reader refused for size.
    pub fn rejection(&mut self, rejection: &Rejection<'_>) {
        write_rejection(&mut self.out, rejection);
        self.count_bad();
    }

    fn count_bad(&mut self) {
        self.bad_in_a_row += 1;
        if self.bad_in_a_row >= self.config.max_bad_commands && !self.is_logged_out() {
            write_untagged_status(
                &mut self.out,
                Status::Bye,
                None,
                Say::TooManyErrors.as_str(),
            );
            self.state = State::Logout;
        }
    }

    fn bad(&mut self, tag: &str, say: Say) -> Outcome {
        tagged(&mut self.out, tag, Status::Bad, None, say);
        self.count_bad();
        if self.is_logged_out() {
            Outcome::Logout
        } else {
            Outcome::Continue
        }
    }

    /// Runs one parsed command (`Partial`: see [`Session::resume`]).
    pub fn execute(&mut self, command: Command<'_>, backend: &dyn Backend) -> Outcome {
        // A caller that did not resume a FETCH: it ends first, whole.
        while self.fetching.is_some() {
            if self.resume() != Outcome::Partial {
                break;
            }
        }
        let tag = command.tag;
        let needed = needs(&command.body);
        let ok_state = match (&self.state, needed) {
            (State::Logout, _) => return Outcome::Logout,
            (State::NotAuthenticated { sasl: Some(_) }, _) => false,
            (State::Authenticated { idle: Some(_), .. }, _) => false,
            (_, Needs::Any) => true,
            (State::NotAuthenticated { .. }, Needs::NotAuthenticated) => true,
            (State::NotAuthenticated { .. }, _) => {
                return self.bad(tag, Say::NotAuthenticated);
            }
            (State::Authenticated { .. }, Needs::NotAuthenticated) => {
                return self.bad(tag, Say::AlreadyAuthenticated);
            }
            (State::Authenticated { user, .. }, Needs::Selected) => user.selected.is_some(),
            (State::Authenticated { .. }, Needs::Authenticated) => true,
        };
        if !ok_state {
            return self.bad(tag, Say::NoMailboxSelected);
        }
        self.bad_in_a_row = 0;
        match command.body {
            CommandBody::Capability => {
                let caps = self.capabilities();
                self.out.extend_from_slice(b"* CAPABILITY");
                for cap in caps {
                    self.out.push(b' ');
                    self.out.extend_from_slice(cap.as_bytes());
                }
                self.out.extend_from_slice(b"\r\n");
                self.finish(tag, true, "CAPABILITY")
            }
            CommandBody::Noop => self.finish(tag, true, "NOOP"),
            CommandBody::Logout => {
                write_untagged_status(&mut self.out, Status::Bye, None, Say::LoggingOut.as_str());
                completed(&mut self.out, tag, None, "LOGOUT");
                self.state = State::Logout;
                Outcome::Logout
            }
            CommandBody::Id(_) => {
                // RFC 2971 3.1: the server's fields, whatever the client sent.
                self.out
                    .extend_from_slice(b"* ID (\"name\" \"spate\" \"version\" \"");
                self.out
                    .extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
                self.out.extend_from_slice(b"\")\r\n");
                self.finish(tag, true, "ID")
            }
            CommandBody::StartTls => self.handle_starttls(tag),
            CommandBody::Login { username, password } => {
                if !self.plaintext_allowed() {
                    let code = Code::PrivacyRequired;
                    tagged(
                        &mut self.out,
                        tag,
                        Status::No,
                        Some(&code),
                        Say::PrivacyRequired,
                    );
                    return Outcome::Continue;
                }
                match (
                    std::str::from_utf8(&username),
                    std::str::from_utf8(&password),
                ) {
                    (Ok(u), Ok(p)) => self.login(tag, u, p, backend),
                    _ => self.auth_failed(tag),
                }
            }
            CommandBody::Authenticate { mechanism, initial } => {
                self.handle_authenticate(tag, mechanism, initial, backend)
            }
            body => self.execute_authenticated(tag, body),
        }
    }

    /// Syncs the selected mailbox (when there is one) and writes
    /// `tag OK NAME completed`.
    fn finish(&mut self, tag: &str, allow_expunge: bool, name: &str) -> Outcome {
        self.sync(allow_expunge);
        completed(&mut self.out, tag, None, name);
        Outcome::Continue
    }

    fn sync(&mut self, allow_expunge: bool) {
        if let State::Authenticated { user, .. } = &mut self.state {
            if let Some(selected) = &mut user.selected {
                if let Err(e) = selected.sync(&mut self.out, allow_expunge) {
                    tracing::warn!(error = %e, "IMAP cannot sync the selected mailbox");
                }
            }
        }
    }

    fn handle_starttls(&mut self, tag: &str) -> Outcome {
        if !self.config.starttls || self.peer.tls {
            tagged(&mut self.out, tag, Status::No, None, Say::TlsUnavailable);
            return Outcome::Continue;
        }
        tagged(&mut self.out, tag, Status::Ok, None, Say::BeginTls);
        Outcome::StartTls
    }

    /// TLS is up after STARTTLS: plaintext logins are now allowed.
    pub fn tls_established(&mut self) {
        self.peer.tls = true;
    }

    fn auth_failed(&mut self, tag: &str) -> Outcome {
        let code = Code::AuthenticationFailed;
        tagged(&mut self.out, tag, Status::No, Some(&code), Say::AuthFailed);
        Outcome::AuthFailed
    }

    fn login(&mut self, tag: &str, login: &str, password: &str, backend: &dyn Backend) -> Outcome {
        match backend.authenticate(login, password) {
            Login::Success(name) => match backend.mailbox(&name) {
                Ok(mailbox) => {
                    let user = User {
                        quota: backend.quota(&name),
                        name,
                        mailbox,
                        selected: None,
                        enabled: Enabled::default(),
                    };
                    self.state = State::Authenticated {
                        user: Box::new(user),
                        idle: None,
                    };
                    // RFC 3501 6.2.3 / 7.1: the new capabilities, at once.
                    let caps = self.capabilities();
                    let code = Code::Capability(&caps);
                    tagged(&mut self.out, tag, Status::Ok, Some(&code), Say::LoggedIn);
                    Outcome::Continue
                }
                Err(e) => {
                    write_mailbox_error(&mut self.out, tag, &e);
                    Outcome::Continue
                }
            },
            Login::Failed => self.auth_failed(tag),
            Login::Temporary => {
                let code = Code::Unavailable;
                tagged(
                    &mut self.out,
                    tag,
                    Status::No,
                    Some(&code),
                    Say::AuthUnavailable,
                );
                Outcome::Continue
            }
        }
    }

    /// AUTHENTICATE PLAIN (RFC 3501 6.2.2, RFC 4616, RFC 4959 SASL-IR).
    fn handle_authenticate(
        &mut self,
        tag: &str,
        mechanism: &str,
        initial: Option<&[u8]>,
        backend: &dyn Backend,
    ) -> Outcome {
        if !mechanism.eq_ignore_ascii_case("PLAIN") {
            tagged(
                &mut self.out,
                tag,
                Status::No,
                None,
                Say::UnsupportedMechanism,
            );
            return Outcome::Continue;
        }
        if !self.plaintext_allowed() {
            let code = Code::PrivacyRequired;
            tagged(
                &mut self.out,
                tag,
                Status::No,
                Some(&code),
                Say::PrivacyRequired,
            );
            return Outcome::Continue;
        }
        match initial {
            None => {
                // An empty challenge; the response is the next line.
                write_continuation(&mut self.out, "");
                self.state = State::NotAuthenticated {
                    sasl: Some(tag.to_owned()),
                };
                Outcome::Continue
            }
            Some(initial) => {
                match sasl::decode_initial_response(initial).and_then(|m| sasl::parse_plain(&m)) {
                    Ok(credentials) => self.authenticate_plain(tag, credentials, backend),
                    Err(_) => self.bad(tag, Say::InvalidBase64),
                }
            }
        }
    }

    /// The response line to an AUTHENTICATE continuation.
    pub fn sasl_response(&mut self, line: &[u8], backend: &dyn Backend) -> Outcome {
        let State::NotAuthenticated { sasl: Some(tag) } = &mut self.state else {
            return Outcome::Continue;
        };
        let tag = std::mem::take(tag);
        self.state = State::NotAuthenticated { sasl: None };
        if sasl::is_cancel(line) {
            // RFC 3501 6.2.2: "*" cancels, answered BAD.
            tagged(&mut self.out, &tag, Status::Bad, None, Say::AuthCancelled);
            return Outcome::Continue;
        }
        match sasl::decode_plain(line) {
            Ok(credentials) => self.authenticate_plain(&tag, credentials, backend),
            Err(_) => self.bad(&tag, Say::InvalidBase64),
        }
    }

    /// We have no authorization rules: acting as another user (RFC 4616
    /// authzid) fails like a wrong password.
    fn authenticate_plain(
        &mut self,
        tag: &str,
        credentials: sasl::PlainCredentials,
        backend: &dyn Backend,
    ) -> Outcome {
        if credentials.is_proxy() {
            return self.auth_failed(tag);
        }
        self.login(
            tag,
            &credentials.authcid,
            credentials.password.expose(),
            backend,
        )
    }

    /// The authenticated and selected states' commands.
    fn execute_authenticated(&mut self, tag: &str, body: CommandBody<'_>) -> Outcome {
        let config = Arc::clone(&self.config);
        let State::Authenticated { user, idle } = &mut self.state else {
            // `execute` checked the state.
            return Outcome::Continue;
        };
        let out = &mut self.out;
        match body {
            CommandBody::Enable(ref names) => {
                // RFC 5161 3.1: unknown names are ignored; the reply names
                // what this command enabled.
                let mut now = Vec::new();
                for name in names {
                    if name.eq_ignore_ascii_case("CONDSTORE") && !user.enabled.condstore {
                        enable_condstore(user, out);
                        now.push("CONDSTORE");
                    } else if name.eq_ignore_ascii_case("QRESYNC") && !user.enabled.qresync {
                        // RFC 7162 3.2.3: QRESYNC implies CONDSTORE.
                        enable_condstore(user, out);
                        user.enabled.qresync = true;
                        if let Some(selected) = &mut user.selected {
                            selected.enabled.qresync = true;
                        }
                        now.push("QRESYNC");
                    }
                }
                out.extend_from_slice(b"* ENABLED");
                for name in now {
                    out.push(b' ');
                    out.extend_from_slice(name.as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
            CommandBody::Namespace => {
                out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
            }
            CommandBody::Select {
                mailbox,
                read_only,
                condstore,
                qresync,
            } => {
                // RFC 7162 3.2.5: QRESYNC only once enabled.
                if qresync.is_some() && !user.enabled.qresync {
                    return self.bad(tag, Say::QresyncNotEnabled);
                }
                // RFC 7162 3.1.8: a CONDSTORE enabling command; the
                // HIGHESTMODSEQ goes with the new mailbox's responses.
                user.enabled.condstore |= condstore;
                user.select(
                    out,
                    tag,
                    &mailbox,
                    read_only,
                    config.max_cached_structures,
                    qresync.as_ref(),
                );
                return Outcome::Continue;
            }
            CommandBody::Idle => {
                *idle = Some(tag.to_owned());
                write_continuation(out, Say::Idling.as_str());
                return Outcome::Idle;
            }
            CommandBody::Close | CommandBody::Unselect => {
                let close = matches!(body, CommandBody::Close);
                if let Some(selected) = user.selected.take() {
                    if close {
                        if let Err(e) = selected.close() {
                            write_mailbox_error(out, tag, &e);
                            return Outcome::Continue;
                        }
                    }
                }
                completed(out, tag, None, if close { "CLOSE" } else { "UNSELECT" });
                return Outcome::Continue;
            }
            body => return self.execute_mailbox(tag, body, &config),
        }
        let name = match &body {
            CommandBody::Enable(_) => "ENABLE",
            _ => "NAMESPACE",
        };
        self.finish(tag, true, name)
    }

    /// The commands that may be followed by untagged updates: the reply
    /// is decided first, the view synced, then the tagged line written.
    fn execute_mailbox(
        &mut self,
        tag: &str,
        body: CommandBody<'_>,
        config: &ImapConfig,
    ) -> Outcome {
        let State::Authenticated { user, .. } = &mut self.state else {
            return Outcome::Continue;
        };
        let out = &mut self.out;
        let name = body.name();
        // Mailbox commands write their whole reply here; it goes out
        // after the updates.
        let mut held = Vec::new();
        let mut allow_expunge = true;
        let done = match body {
            CommandBody::Create(m) => {
                user.create(&mut held, tag, &m);
                Done::Held
            }
            CommandBody::Delete(m) => {
                user.delete(&mut held, tag, &m);
                Done::Held
            }
            CommandBody::Rename { from, to } => {
                user.rename(&mut held, tag, &from, &to);
                Done::Held
            }
            CommandBody::Subscribe(m) => {
                user.subscribe(&mut held, tag, &m, true);
                Done::Held
            }
            CommandBody::Unsubscribe(m) => {
                user.subscribe(&mut held, tag, &m, false);
                Done::Held
            }
            CommandBody::List(list) => {
                user.list(&mut held, tag, &list);
                Done::Held
            }
            CommandBody::Lsub { reference, pattern } => {
                user.lsub(&mut held, tag, &reference, &pattern);
                Done::Held
            }
            CommandBody::Status { mailbox, items } => {
                // RFC 7162 3.1: STATUS (HIGHESTMODSEQ) enables CONDSTORE.
                if items.contains(&StatusItem::HighestModSeq) {
                    enable_condstore(user, out);
                }
                user.status(&mut held, tag, &mailbox, &items);
                Done::Held
            }
            CommandBody::GetQuota(root) => {
                quota::get_quota(user, &mut held, tag, &root);
                Done::Held
            }
            CommandBody::GetQuotaRoot(mailbox) => {
                quota::get_quota_root(user, &mut held, tag, &mailbox);
                Done::Held
            }
            CommandBody::SetQuota { .. } => {
                quota::set_quota(&mut held, tag);
                Done::Held
            }
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
                ..
            } => {
                user.append(
                    &mut held,
                    tag,
                    &mailbox,
                    &flags,
                    date,
                    message,
                    config.max_append,
                );
                Done::Held
            }
            other => {
                let enabling = condstore_enabling(&other);
                if enabling {
                    enable_condstore(user, out);
                }
                let qresync = user.enabled.qresync;
                let Some(selected) = user.selected.as_mut() else {
                    // `execute` checked the state.
                    return Outcome::Continue;
                };
                if enabling && !matches!(other, CommandBody::Store { .. }) {
                    // "Changed since" asks about now, not the view's last
                    // sync: bring it up to date first (expunges only
                    // under UID FETCH, RFC 3501 7.4.1).
                    let allow = matches!(other, CommandBody::Fetch { uid: true, .. });
                    if let Err(e) = selected.sync(out, allow) {
                        tracing::warn!(error = %e, "IMAP cannot sync the selected mailbox");
                    }
                }
                match other {
                    CommandBody::Expunge | CommandBody::UidExpunge(_) => {
                        let set = match &other {
                            CommandBody::UidExpunge(set) => Some(set),
                            _ => None,
                        };
                        match selected.expunge(set) {
                            Ok(n) if n > 0 && qresync => Done::HighestModSeq,
                            Ok(_) => Done::Ok,
                            Err(e) => e.into(),
                        }
                    }
                    CommandBody::Fetch { vanished: true, .. } if !qresync => {
                        Failure::Bad(Say::QresyncNotEnabled).into()
                    }
                    CommandBody::Fetch {
                        uid: false,
                        vanished: true,
                        ..
                    } => Failure::Bad(Say::VanishedNeedsUid).into(),
                    CommandBody::Fetch {
                        uid,
                        set,
                        items,
                        changed_since,
                        vanished,
                    } => {
                        allow_expunge = uid;
                        if let (true, Some(since)) = (vanished, changed_since) {
                            // RFC 7162 3.2.6: before any FETCH response.
                            selected.write_vanished_earlier(out, &set, since);
                        }
                        match selected.fetch_begin(uid, &set, items, changed_since) {
                            Ok(cursor) => {
                                self.fetching = Some(PendingFetch {
                                    tag: tag.to_owned(),
                                    name,
                                    cursor,
                                });
                                return self.resume();
                            }
                            Err(e) => e.into(),
                        }
                    }
                    CommandBody::Store {
                        uid,
                        set,
                        action,
                        silent,
                        flags,
                        unchanged_since,
                    } => {
                        allow_expunge = uid;
                        let stored =
                            selected.store(out, uid, &set, action, silent, &flags, unchanged_since);
                        match stored {
                            Ok(modified) if modified.is_empty() => Done::Ok,
                            Ok(modified) => Done::Modified(modified),
                            Err(e) => e.into(),
                        }
                    }
                    CommandBody::Search {
                        uid,
                        charset,
                        criteria,
                        result: None,
                    } => {
                        allow_expunge = uid;
                        let known = charset.as_deref().is_none_or(|c| {
                            c.eq_ignore_ascii_case(b"UTF-8") || c.eq_ignore_ascii_case(b"US-ASCII")
                        });
                        if known {
                            selected.search(out, uid, &criteria);
                            Done::Ok
                        } else {
                            Failure::No(Code::BadCharset, Say::BadCharset).into()
                        }
                    }
                    CommandBody::Sort {
                        uid,
                        keys,
                        charset,
                        criteria,
                    } => {
                        allow_expunge = uid;
                        if searchable_charset(&charset) {
                            selected.sort(out, uid, &keys, &criteria);
                            Done::Ok
                        } else {
                            Failure::No(Code::BadCharset, Say::BadCharset).into()
                        }
                    }
                    CommandBody::Thread {
                        uid,
                        algorithm,
                        charset,
                        criteria,
                    } => {
                        allow_expunge = uid;
                        if searchable_charset(&charset) {
                            selected.thread(out, uid, algorithm, &criteria);
                            Done::Ok
                        } else {
                            Failure::No(Code::BadCharset, Say::BadCharset).into()
                        }
                    }
                    CommandBody::Copy { uid, set, mailbox }
                    | CommandBody::Move { uid, set, mailbox } => {
                        let remove = name.ends_with("MOVE");
                        // RFC 9208 4.3.1: COPY adds to the user's usage;
                        // MOVE does not (the quota root is the user's), so
                        // a full mailbox can still move mail to Trash.
                        let over = !remove
                            && user.quota.is_some()
                            && selected
                                .bytes_of(&set, uid)
                                .is_ok_and(|bytes| over_quota(&user.mailbox, user.quota, bytes));
                        match existing_folder(&user.mailbox, &mailbox, true) {
                            Err((code, say)) => Failure::No(code, say).into(),
                            Ok(_) if over => {
                                Failure::No(Code::OverQuota, Say::QuotaExceeded).into()
                            }
                            Ok((_, dest)) => match selected.transfer(uid, &set, &dest, remove) {
                                // RFC 6851 4.3: untagged, before the expunges.
                                Ok(Some(copied)) if remove => {
                                    write_copyuid_untagged(out, &copied);
                                    Done::Ok
                                }
                                Ok(Some(copied)) => Done::CopyUid(copied),
                                Ok(None) => Done::Ok,
                                Err(e) => e.into(),
                            },
                        }
                    }
                    // CHECK, and the extensions' forms we do not offer
                    // (SEARCH RETURN).
                    CommandBody::Check => Done::Ok,
                    _ => Failure::Bad(Say::UnsupportedItem).into(),
                }
            }
        };
        self.conclude(tag, name, done, allow_expunge, &held)
    }

    /// Writes the next part of a FETCH reply after `Partial`: `Partial`
    /// again while more is left; after the last part, the updates and the
    /// tagged line, and the outcome the command ends with.
    pub fn resume(&mut self) -> Outcome {
        let Some(mut pending) = self.fetching.take() else {
            return Outcome::Continue;
        };
        let State::Authenticated { user, .. } = &mut self.state else {
            return Outcome::Continue;
        };
        let Some(selected) = user.selected.as_mut() else {
            // Nothing unselects between the parts.
            return Outcome::Continue;
        };
        if !selected.fetch_part(&mut self.out, &mut pending.cursor, REPLY_PART) {
            self.fetching = Some(pending);
            return Outcome::Partial;
        }
        // RFC 5530 3 / RFC 9051 7.1: EXPUNGEISSUED is a warning that
        // fits OK; the messages still there were sent. Dovecot answers the
        // same, and imaptest knows its "no longer exist".
        let done = if pending.cursor.complete() {
            Done::Ok
        } else {
            Done::OkWarned(Code::ExpungeIssued, Say::SomeExpunged)
        };
        let allow_expunge = pending.cursor.uid_command();
        self.conclude(&pending.tag, pending.name, done, allow_expunge, &[])
    }

    /// The end of a command that may be followed by updates: syncs the
    /// view, then writes the reply (`held`, for `Done::Held`).
    fn conclude(
        &mut self,
        tag: &str,
        name: &str,
        done: Done,
        allow_expunge: bool,
        held: &[u8],
    ) -> Outcome {
        self.sync(allow_expunge);
        let out = &mut self.out;
        match done {
            Done::Held => out.extend_from_slice(held),
            Done::Ok => completed(out, tag, None, name),
            Done::OkWarned(code, say) => tagged(out, tag, Status::Ok, Some(&code), say),
            Done::Modified(failed) => {
                let code = Code::Modified(&failed);
                tagged(
                    out,
                    tag,
                    Status::Ok,
                    Some(&code),
                    Say::ConditionalStoreFailed,
                )
            }
            Done::HighestModSeq => {
                let highest = match &self.state {
                    State::Authenticated { user, .. } => {
                        user.selected.as_ref().map(|s| s.highest_modseq())
                    }
                    _ => None,
                };
                let code = highest.map(|h| Code::HighestModSeq(h.get()));
                completed(out, tag, code.as_ref(), name)
            }
            Done::CopyUid(copied) => {
                let code = Code::CopyUid {
                    validity: copied.validity,
                    source: &copied.source,
                    destination: &copied.destination,
                };
                completed(out, tag, Some(&code), name)
            }
            Done::Failed(Failure::Bad(say)) => return self.bad(tag, say),
            Done::Failed(Failure::No(code, say)) => tagged(out, tag, Status::No, Some(&code), say),
            Done::Failed(Failure::Store(e)) => write_mailbox_error(out, tag, &e),
        }
        Outcome::Continue
    }

    /// The selected folder's directory, for the driver to watch during
    /// IDLE.
    pub fn selected_dir(&self) -> Option<&std::path::Path> {
        match &self.state {
            State::Authenticated { user, .. } => Some(user.selected.as_ref()?.folder.path()),
            _ => None,
        }
    }

    /// IDLE (RFC 2177): sends what changed in the selected mailbox.
    pub fn idle_poll(&mut self, _backend: &dyn Backend) {
        if let State::Authenticated { idle: Some(_), .. } = &self.state {
            self.sync(true);
        }
    }

    /// `DONE` ended IDLE.
    pub fn idle_done(&mut self, _backend: &dyn Backend) {
        let State::Authenticated { idle, .. } = &mut self.state else {
            return;
        };
        let Some(tag) = idle.take() else {
            return;
        };
        self.sync(true);
        tagged(&mut self.out, &tag, Status::Ok, None, Say::IdleTerminated);
    }
}

/// RFC 5256 3 (SORT and THREAD): the charsets we search in; others get
/// `NO [BADCHARSET]`.
fn searchable_charset(charset: &[u8]) -> bool {
    charset.eq_ignore_ascii_case(b"UTF-8") || charset.eq_ignore_ascii_case(b"US-ASCII")
}
