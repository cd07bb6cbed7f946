//! One Maildir folder with its UID index: delivery and APPEND, snapshots,
//! flag changes, expunge, reading, copy and move. It does not create,
//! rename or list folders (see `user`) and does not enforce quota (the
//! caller compares `UserMailbox::stored_bytes` with its limit); it moves
//! the user's stored-bytes figure by what it adds and removes.
//!
//! Local delivery does not touch the index, as with Dovecot's LDA: a
//! message is delivered once its file is fsynced, linked into `new/` and
//! `new/` is fsynced; the next sync (every reader: snapshot, take_recent,
//! and through them POP3 and IMAP) gives it its UID, a whole batch of
//! arrivals under one lock and one append to the index.
//!
//! Every change to the index happens under a flock on
//! `spate-uidlist.lock` in the folder, held only for the change itself.
//! Changes are appended to the index as records and fdatasynced, so they
//! cost what changed, not the folder's size; now and then the file is
//! compacted, replaced atomically (see `durable::replace_file`). So
//! concurrent threads and processes never lose or duplicate a UID, and
//! readers without the lock see whole records (a torn last one is
//! ignored). Message files are written before the lock is taken: a message
//! is durable first, indexed second.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::cache::Stamp;
use super::durable;
use super::error::{MailboxError, Result};
use super::filename;
use super::flag::Flags;
use super::id::{ModSeq, Uid, UidValidity};
use super::index::{ExpungeHistory, IndexWrite, Parsed, UidIndex};
use super::keywords::{KeywordTable, KEYWORDS_FILE, KEYWORD_SLOTS};
use super::lock::{self, FileLock};
use super::message_cache::{self, CachedData};
use super::name::FolderName;
use super::store::StoreContext;
use super::validity;

/// The index file in each folder directory.
pub(crate) const INDEX_FILE: &str = "spate-uidlist";
/// The lock file that serializes index changes.
const INDEX_LOCK: &str = "spate-uidlist.lock";
/// Attempts at a unique file name before giving up (a clash needs two
/// stores of one process in the same microsecond; eight in a row means
/// something else is wrong).
const NAME_ATTEMPTS: usize = 8;

/// Which Maildir subdirectory a message is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    /// Not yet seen by any reader: IMAP's `\Recent`.
    New,
    Cur,
}

impl Sub {
    fn dir(self) -> &'static str {
        match self {
            Sub::New => "new",
            Sub::Cur => "cur",
        }
    }

    /// Where a message is placed when it arrives (delivery, APPEND, COPY,
    /// MOVE): always `new/`, with its flags in the name if it has any, so
    /// it is `\Recent` for the next reader whatever its flags (RFC 3501
    /// 2.3.2: \Recent means first seen by this session, not "unflagged").
    /// Readers (ours, Dovecot, mutt) take flags from the name in `new/`
    /// too, and `take_recent` keeps them when it moves the file to `cur/`.
    const ARRIVAL: Sub = Sub::New;
}

/// A message file as found on disk.
#[derive(Debug, Clone)]
struct DiskFile {
    sub: Sub,
    file_name: String,
    flags: Flags,
}

/// Message files by base name.
type DiskMap = HashMap<String, DiskFile>;

/// One message in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    pub uid: Uid,
    /// Size in bytes (from the `,S=` of the name or the index), as stored:
    /// with CRLF or LF line ends, whatever was delivered.
    pub size: u64,
    pub flags: Flags,
    /// Still in `new/`: no reader has taken it yet (IMAP `\Recent`).
    pub recent: bool,
    /// The file's modification time, which APPEND sets from its date
    /// argument (IMAP INTERNALDATE).
    pub internal_date: SystemTime,
    pub modseq: ModSeq,
    /// Where the file was at snapshot time; it moves when flags change,
    /// so read through [`Folder::open`] by UID.
    pub path: PathBuf,
}

/// A folder's state at one moment, sorted by UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub uid_validity: UidValidity,
    /// The UID the next message will get (IMAP UIDNEXT).
    pub uid_next: Uid,
    pub highest_modseq: ModSeq,
    pub messages: Vec<MessageInfo>,
    /// The expunges the index remembers (RFC 7162 QRESYNC).
    pub expunged: Arc<ExpungeHistory>,
    /// The folder's keyword names, for the keyword slots in `flags`.
    pub keywords: Arc<KeywordTable>,
}

/// One message's flags after [`Folder::update_flags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagUpdate {
    pub uid: Uid,
    /// The flags on disk now.
    pub flags: Flags,
    pub modseq: ModSeq,
}

/// The outcome of a delivery or APPEND: the message is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The UID it got; `None` means the next sync of the folder assigns
    /// it. Always `None` for [`Folder::deliver`], which leaves indexing to
    /// readers; for [`Folder::append`] only when the message file was
    /// stored durably but updating the index then failed (the message
    /// still counts: retrying would duplicate it).
    pub uid: Option<Uid>,
    pub size: u64,
}

/// A handle on one folder. Cheap; it remembers where it last saw each
/// message so reads need no directory scan.
#[derive(Debug)]
pub struct Folder {
    name: FolderName,
    dir: PathBuf,
    user_root: PathBuf,
    ctx: Arc<StoreContext>,
    /// Last known file of each UID; a cache, checked before use.
    known: Mutex<Known>,
}

/// Where this handle last saw each message: the last snapshot, with the
/// moves and removals it made since.
#[derive(Debug, Default)]
struct Known {
    snapshot: Option<Arc<Snapshot>>,
    moved: HashMap<Uid, PathBuf>,
    removed: HashSet<Uid>,
}

impl Known {
    fn path(&self, uid: Uid) -> Option<PathBuf> {
        if let Some(path) = self.moved.get(&uid) {
            return Some(path.clone());
        }
        if self.removed.contains(&uid) {
            return None;
        }
        let messages = &self.snapshot.as_ref()?.messages;
        let pos = messages.binary_search_by_key(&uid, |m| m.uid).ok()?;
        Some(messages[pos].path.clone())
    }

    fn moved(&mut self, uid: Uid, path: PathBuf) {
        self.removed.remove(&uid);
        self.moved.insert(uid, path);
    }
}

/// The index with its lock held (it records its own unwritten changes),
/// plus what was learnt about the disk while holding it.
struct Locked {
    _guard: FileLock,
    index: UidIndex,
    /// The result of a full scan, when one was made under this lock.
    disk: Option<DiskMap>,
}

impl Folder {
    pub(crate) fn new(
        name: FolderName,
        dir: PathBuf,
        user_root: PathBuf,
        ctx: Arc<StoreContext>,
    ) -> Folder {
        Folder {
            name,
            dir,
            user_root,
            ctx,
            known: Mutex::new(Known::default()),
        }
    }

    pub fn name(&self) -> &FolderName {
        &self.name
    }

    /// The folder's Maildir directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Stores a message from the network: `parts` are written one after
    /// another (header and body need not be joined) into `tmp/`, fsynced,
    /// linked into `new/`, and `new/` is fsynced; then the delivery is
    /// done. Its cost does not depend on the folder's size: the index is
    /// neither locked nor written, the next sync assigns the UID (so the
    /// result's `uid` is `None`). Safe from any number of threads and
    /// processes at once: names are unique and the link never replaces a
    /// file.
    pub fn deliver(&self, parts: &[&[u8]]) -> Result<Delivered> {
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        self.place(size, Flags::empty(), |file| {
            for part in parts {
                file.write_all(part)?;
            }
            Ok(())
        })?;
        self.count_usage(size, 0);
        Ok(Delivered { uid: None, size })
    }

    /// Stores a message with flags and an internal date (IMAP APPEND): the
    /// same durable path as [`Folder::deliver`], then the UID is assigned
    /// at once (APPENDUID needs it), by one record appended to the index.
    /// It goes to `new/` (so it is `\Recent`), its flags in its name.
    pub fn append(
        &self,
        parts: &[&[u8]],
        flags: Flags,
        internal_date: Option<SystemTime>,
    ) -> Result<Delivered> {
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let (base, path) = self.place(size, flags, |file| {
            for part in parts {
                file.write_all(part)?;
            }
            if let Some(date) = internal_date {
                file.set_modified(date)?;
            }
            Ok(())
        })?;
        self.count_usage(size, 0);
        let uid = self.index_new(&[(base, size)], &[path]);
        Ok(Delivered {
            uid: uid.and_then(|u| u.first().copied()),
            size,
        })
    }

    /// The folder's messages, after bringing the index up to date with
    /// the directory: files that appeared (dropped in by other tools) get
    /// new UIDs, files that vanished are dropped. A missing or damaged
    /// index is rebuilt, never an error.
    ///
    /// Shared: while the folder's [`Stamp`] is the one a snapshot was
    /// taken at, every handle of the store gets that snapshot without
    /// touching the index or listing the directories; otherwise the
    /// internal dates of messages already known are taken from the last
    /// snapshot, so only new files are `stat`ed.
    pub fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let stamp = Stamp::read(&self.dir);
        let cache = &self.ctx.snapshots;
        if let Some(snapshot) = stamp.as_ref().and_then(|s| cache.fresh(&self.dir, s)) {
            self.adopt(&snapshot);
            return Ok(snapshot);
        }
        let settled = stamp.filter(|s| s.settled(SystemTime::now()));
        let snapshot = Arc::new(self.take_snapshot(cache.last(&self.dir).as_deref())?);
        cache.put(&self.dir, settled, Arc::clone(&snapshot));
        self.adopt(&snapshot);
        Ok(snapshot)
    }

    /// Makes `snapshot` where this handle looks for message files.
    fn adopt(&self, snapshot: &Arc<Snapshot>) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        *known = Known {
            snapshot: Some(Arc::clone(snapshot)),
            ..Known::default()
        };
    }

    /// A snapshot from the index and the directories, with the internal
    /// dates of `previous` (same UIDVALIDITY) for the UIDs it has.
    fn take_snapshot(&self, previous: Option<&Snapshot>) -> Result<Snapshot> {
        let mut locked = self.lock_index()?;
        self.sync(&mut locked, &[])?;
        let previous = previous.filter(|p| p.uid_validity == locked.index.validity);
        let known_date = |uid: Uid| {
            let messages = &previous?.messages;
            let pos = messages.binary_search_by_key(&uid, |m| m.uid).ok()?;
            Some(messages[pos].internal_date)
        };
        let mut messages = Vec::with_capacity(locked.index.entries().len());
        let mut rescanned = false;
        for entry in locked.index.entries() {
            if let Some(date) = known_date(entry.uid) {
                // The scan under this lock just listed the file.
                if let Some(file) = locked.disk.as_ref().and_then(|d| d.get(&entry.base)) {
                    messages.push(MessageInfo {
                        uid: entry.uid,
                        size: entry.size,
                        flags: file.flags,
                        recent: file.sub == Sub::New,
                        internal_date: date,
                        modseq: entry.modseq,
                        path: self.file_path(file.sub, &file.file_name),
                    });
                }
                continue;
            }
            let mut found = None;
            for attempt in 0..2 {
                let Some(file) = locked.disk.as_ref().and_then(|d| d.get(&entry.base)) else {
                    break;
                };
                let path = self.file_path(file.sub, &file.file_name);
                match fs::metadata(&path) {
                    Ok(meta) => {
                        found = Some((file.clone(), path, meta));
                        break;
                    }
                    // Renamed by a tool that does not take our lock
                    // (mutt setting a flag): look once more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 && !rescanned => {
                        locked.disk = Some(self.scan()?);
                        rescanned = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => return Err(MailboxError::io("reading metadata of", path, e)),
                }
            }
            let Some((file, path, meta)) = found else {
                continue;
            };
            messages.push(MessageInfo {
                uid: entry.uid,
                size: entry.size,
                flags: file.flags,
                recent: file.sub == Sub::New,
                internal_date: meta.modified().unwrap_or(UNIX_EPOCH),
                modseq: entry.modseq,
                path,
            });
        }
        // A flag change the index did not record (a rename by a tool that
        // takes no lock, as mutt): it gets a new modseq now, as ours do
        // (RFC 7162 3.1). Seen against the last snapshot, so a change made
        // while no snapshot was in memory keeps its old modseq.
        if let Some(previous) = previous {
            for m in &mut messages {
                let Ok(i) = previous.messages.binary_search_by_key(&m.uid, |p| p.uid) else {
                    continue;
                };
                let before = &previous.messages[i];
                if before.flags != m.flags && before.modseq == m.modseq {
                    if let Some(pos) = locked.index.position(m.uid) {
                        m.modseq = locked.index.bump(pos);
                    }
                }
            }
        }
        let snapshot = Snapshot {
            uid_validity: locked.index.validity,
            // Sync renumbers before the UID space runs out, so this holds
            // unless the folder has 2^32 - 1 messages.
            uid_next: locked.index.next_uid.unwrap_or(Uid::MAX),
            highest_modseq: locked.index.highest_modseq,
            messages,
            expunged: Arc::new(locked.index.expunged().clone()),
            keywords: Arc::new(self.keywords()?),
        };
        self.finish(locked)?;
        Ok(snapshot)
    }

    /// The folder's keyword names (slot to name); none when the folder
    /// has no `dovecot-keywords` yet.
    pub fn keywords(&self) -> Result<KeywordTable> {
        let bytes = durable::read_optional(&self.dir.join(KEYWORDS_FILE))?;
        Ok(bytes.map(|b| KeywordTable::parse(&b)).unwrap_or_default())
    }

    /// Gives each of `names` a keyword slot, keeping those it has, and
    /// returns the table; a name that finds no free slot (26 are taken)
    /// or is not a valid keyword is left out, for the caller to refuse.
    /// The file is replaced atomically under the index lock, so readers
    /// without the lock see the old or the new table.
    pub fn define_keywords(&self, names: &[&str]) -> Result<KeywordTable> {
        let table = self.keywords()?;
        if names.iter().all(|n| table.slot(n).is_some()) {
            return Ok(table);
        }
        let _guard = lock::lock_exclusive(&self.dir.join(INDEX_LOCK))?;
        let mut table = self.keywords()?;
        let before = table.clone();
        for name in names {
            table.assign(name);
        }
        if table != before {
            durable::replace_file(&self.dir, KEYWORDS_FILE, &table.serialize())?;
        }
        Ok(table)
    }

    /// How keyword slots of `uids` here map to slots in `dest` (defining
    /// the names there), for COPY and MOVE: slots are per folder, names
    /// are what the user sees. Found through the last snapshot (taken
    /// without this folder's lock, so no two folders' locks are ever held
    /// together); a keyword set after it and unknown to `dest` is dropped.
    fn keyword_translation(
        &self,
        uids: &[Uid],
        dest: &Folder,
    ) -> Result<[Option<u8>; KEYWORD_SLOTS]> {
        let mut map = [None; KEYWORD_SLOTS];
        let source = self.keywords()?;
        if source.iter().next().is_none() {
            return Ok(map);
        }
        let last = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot
            .clone();
        let mut used = Flags::empty();
        match last {
            Some(snapshot) => {
                for uid in uids {
                    if let Ok(pos) = snapshot.messages.binary_search_by_key(uid, |m| m.uid) {
                        for slot in snapshot.messages[pos].flags.keywords() {
                            used.set_keyword(slot, true);
                        }
                    }
                }
            }
            None => {
                for (slot, _) in source.iter() {
                    used.set_keyword(slot, true);
                }
            }
        }
        let names: Vec<&str> = used.keywords().filter_map(|s| source.name(s)).collect();
        let target = dest.define_keywords(&names)?;
        for (slot, name) in source.iter() {
            map[usize::from(slot)] = target.slot(name);
        }
        Ok(map)
    }

    /// Data derived from messages that an earlier session kept (see
    /// `message_cache`): the entries of `uids`, for `validity`.
    pub fn cached_data(&self, validity: UidValidity, uids: &HashSet<Uid>) -> Result<CachedData> {
        message_cache::read(&self.dir, validity, uids)
    }

    /// Keeps derived data for later sessions; with `compact_to`, the file
    /// is rewritten with only those UIDs' entries plus the new ones.
    pub fn keep_cached_data(
        &self,
        validity: UidValidity,
        entries: &[(Uid, Vec<u8>)],
        compact_to: Option<&HashSet<Uid>>,
    ) -> Result<()> {
        message_cache::append(&self.dir, validity, entries, compact_to)
    }

    /// Opens a message for reading.
    pub fn open(&self, uid: Uid) -> Result<File> {
        let cached = self.cached_path(uid);
        if let Some(path) = cached {
            match File::open(&path) {
                Ok(file) => return Ok(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(MailboxError::io("opening", path, e)),
            }
        }
        let mut locked = self.lock_index()?;
        // Opened under the lock: no session renames (STORE) or unlinks
        // (EXPUNGE) it between finding and opening.
        let opened = self
            .locate_uid(&mut locked, uid)?
            .map(|(_, path)| File::open(&path).map_err(|e| (path, e)));
        self.finish(locked)?;
        match opened {
            Some(Ok(file)) => Ok(file),
            // Expunged, or removed by a program that does not take our
            // lock: gone, not an I/O fault.
            None => Err(self.no_such(uid)),
            Some(Err((_, e))) if e.kind() == io::ErrorKind::NotFound => Err(self.no_such(uid)),
            Some(Err((path, e))) => Err(MailboxError::io("opening", path, e)),
        }
    }

    /// A message's bytes.
    pub fn read(&self, uid: Uid) -> Result<Vec<u8>> {
        let mut file = self.open(uid)?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes)
            .map_err(|e| MailboxError::io("reading message of", &self.dir, e))?;
        Ok(bytes)
    }

    /// Replaces one message's flags (moving it to `cur/`); its new modseq.
    pub fn set_flags(&self, uid: Uid, flags: Flags) -> Result<ModSeq> {
        self.set_flags_many(&[(uid, flags)])?
            .first()
            .map(|&(_, modseq)| modseq)
            .ok_or_else(|| self.no_such(uid))
    }

    /// Replaces the flags of several messages under one lock and one index
    /// write. UIDs that no longer exist are skipped; the result lists the
    /// others with their modseq, which only changes when the flags did.
    pub fn set_flags_many(&self, changes: &[(Uid, Flags)]) -> Result<Vec<(Uid, ModSeq)>> {
        let wanted: HashMap<Uid, Flags> = changes.iter().copied().collect();
        let uids: Vec<Uid> = changes.iter().map(|&(uid, _)| uid).collect();
        let done = self.update_flags(&uids, |uid, current| {
            wanted.get(&uid).copied().unwrap_or(current)
        })?;
        Ok(done.into_iter().map(|u| (u.uid, u.modseq)).collect())
    }

    /// Changes the flags of several messages (IMAP STORE, FETCH setting
    /// `\Seen`) under the folder's lock: `change` is given each message's
    /// flags as they are on disk now, never a session's older copy, so two
    /// sessions changing different flags of one message both keep their
    /// change. UIDs that no longer exist are skipped; the result lists the
    /// others with the flags they now have and their modseq, which only
    /// changes when the flags did.
    pub fn update_flags(
        &self,
        uids: &[Uid],
        change: impl FnMut(Uid, Flags) -> Flags,
    ) -> Result<Vec<FlagUpdate>> {
        Ok(self.update_flags_unchanged_since(uids, None, change)?.0)
    }

    /// [`Folder::update_flags`] with RFC 7162 3.1.3 UNCHANGEDSINCE: a
    /// message whose modseq is above `unchanged_since` (checked under the
    /// lock, so no other change can slip in between) is left alone and
    /// listed second.
    pub fn update_flags_unchanged_since(
        &self,
        uids: &[Uid],
        unchanged_since: Option<ModSeq>,
        mut change: impl FnMut(Uid, Flags) -> Flags,
    ) -> Result<(Vec<FlagUpdate>, Vec<Uid>)> {
        let mut locked = self.lock_index()?;
        let mut out = Vec::with_capacity(uids.len());
        let mut modified = Vec::new();
        let mut touched_cur = false;
        let mut touched_new = false;
        for &uid in uids {
            let Some(pos) = locked.index.position(uid) else {
                continue;
            };
            if unchanged_since.is_some_and(|limit| locked.index.entries()[pos].modseq > limit) {
                modified.push(uid);
                continue;
            }
            let Some((mut file, mut path)) = self.locate_uid(&mut locked, uid)? else {
                continue;
            };
            let base = locked.index.entries()[pos].base.clone();
            let mut flags = change(uid, file.flags);
            let mut new_name = filename::with_flags(&base, flags);
            if file.sub != Sub::Cur || file.file_name != new_name {
                let mut to = self.file_path(Sub::Cur, &new_name);
                let mut renamed = fs::rename(&path, &to);
                if renamed
                    .as_ref()
                    .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
                {
                    // Renamed meanwhile by a tool that does not take our
                    // lock (mutt): find it again, once, and apply the
                    // change to the flags it has now.
                    locked.disk = Some(self.scan()?);
                    let Some(found) = self.locate_uid(&mut locked, uid)? else {
                        continue;
                    };
                    (file, path) = found;
                    flags = change(uid, file.flags);
                    new_name = filename::with_flags(&base, flags);
                    to = self.file_path(Sub::Cur, &new_name);
                    renamed = fs::rename(&path, &to);
                }
                renamed.map_err(|e| MailboxError::io("renaming", &path, e))?;
                touched_cur = true;
                touched_new |= file.sub == Sub::New;
                let moved = DiskFile {
                    sub: Sub::Cur,
                    file_name: new_name,
                    flags,
                };
                self.remember(&mut locked, uid, &base, moved, to);
            }
            let modseq = if file.flags != flags {
                locked.index.bump(pos)
            } else {
                locked.index.entries()[pos].modseq
            };
            out.push(FlagUpdate { uid, flags, modseq });
        }
        if touched_cur {
            durable::fsync_dir(&self.dir.join("cur"))?;
        }
        if touched_new {
            durable::fsync_dir(&self.dir.join("new"))?;
        }
        self.finish(locked)?;
        Ok((out, modified))
    }

    /// Moves every message in `new/` to `cur/` (keeping its flags) and
    /// returns their UIDs: the messages that are `\Recent` for the reader
    /// that called this, as the Maildir spec has readers do.
    pub fn take_recent(&self) -> Result<Vec<Uid>> {
        if !self.has_new_files() {
            return Ok(Vec::new());
        }
        let mut locked = self.lock_index()?;
        self.sync(&mut locked, &[])?;
        let recent: Vec<(Uid, String, DiskFile)> = locked
            .index
            .entries()
            .iter()
            .filter_map(|e| {
                let file = locked.disk.as_ref()?.get(&e.base)?;
                (file.sub == Sub::New).then(|| (e.uid, e.base.clone(), file.clone()))
            })
            .collect();
        let mut taken = Vec::with_capacity(recent.len());
        for (uid, base, file) in recent {
            let from = self.file_path(Sub::New, &file.file_name);
            let name = filename::with_flags(&base, file.flags);
            let to = self.file_path(Sub::Cur, &name);
            match fs::rename(&from, &to) {
                Ok(()) => {}
                // Taken by another reader meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(MailboxError::io("renaming", from, e)),
            }
            let moved = DiskFile {
                sub: Sub::Cur,
                file_name: name,
                flags: file.flags,
            };
            self.remember(&mut locked, uid, &base, moved, to);
            taken.push(uid);
        }
        if !taken.is_empty() {
            durable::fsync_dir(&self.dir.join("cur"))?;
            durable::fsync_dir(&self.dir.join("new"))?;
        }
        self.finish(locked)?;
        Ok(taken)
    }

    /// Whether `new/` may hold a message: false only when it was listed
    /// and held none (a file linked just after is taken by the next
    /// reader, as if it had arrived a moment later).
    fn has_new_files(&self) -> bool {
        let Ok(entries) = fs::read_dir(self.dir.join(Sub::New.dir())) else {
            return true; // let the locked path report what is wrong
        };
        entries.filter_map(|e| e.ok()).any(|e| {
            e.file_name()
                .to_str()
                .is_none_or(|n| filename::parse(n).is_some())
        })
    }

    /// Deletes messages for good (IMAP EXPUNGE, POP3 QUIT after DELE):
    /// unlinks the files, then drops them from the index. Returns the UIDs
    /// that were removed, in UID order; unknown UIDs are ignored.
    pub fn expunge(&self, uids: &[Uid]) -> Result<Vec<Uid>> {
        let mut locked = self.lock_index()?;
        let wanted: HashSet<Uid> = uids.iter().copied().collect();
        let mut removed = HashSet::new();
        let mut removed_bytes = 0;
        let targets: Vec<(Uid, u64)> = locked
            .index
            .entries()
            .iter()
            .filter(|e| wanted.contains(&e.uid))
            .map(|e| (e.uid, e.size))
            .collect();
        for (uid, size) in targets {
            removed_bytes += size;
            if let Some((_, path)) = self.locate_uid(&mut locked, uid)? {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(MailboxError::io("unlinking", path, e)),
                }
            }
            removed.insert(uid);
        }
        if !removed.is_empty() {
            durable::fsync_dir(&self.dir.join("cur"))?;
            durable::fsync_dir(&self.dir.join("new"))?;
            locked.index.remove(&removed);
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            known.moved.retain(|uid, _| !removed.contains(uid));
            known.removed.extend(removed.iter().copied());
        }
        self.count_usage(0, removed_bytes);
        self.finish(locked)?;
        let mut removed: Vec<Uid> = removed.into_iter().collect();
        removed.sort();
        Ok(removed)
    }

    /// Copies messages into `dest` (IMAP COPY): each gets a new name and
    /// a new UID there, keeps its flags and internal date (the file is
    /// hard-linked when possible, as Dovecot does). Returns
    /// `(source UID, destination UID)` pairs in the order given, for
    /// UIDPLUS COPYUID; UIDs that do not exist are skipped.
    pub fn copy_to(&self, uids: &[Uid], dest: &Folder) -> Result<Vec<(Uid, Uid)>> {
        self.transfer(uids, dest, false)
    }

    /// Like [`Folder::copy_to`], then removes the sources (IMAP MOVE). The
    /// sources are unlinked only after the copies are durable, so a crash
    /// may leave a message in both folders but never in neither.
    pub fn move_to(&self, uids: &[Uid], dest: &Folder) -> Result<Vec<(Uid, Uid)>> {
        self.transfer(uids, dest, true)
    }

    fn transfer(&self, uids: &[Uid], dest: &Folder, remove: bool) -> Result<Vec<(Uid, Uid)>> {
        let translation = self.keyword_translation(uids, dest)?;
        let translate = |flags: Flags| {
            let mut out = flags;
            for slot in flags.keywords() {
                out.set_keyword(slot, false);
            }
            for slot in flags.keywords() {
                if let Some(to) = translation[usize::from(slot)] {
                    out.set_keyword(to, true);
                }
            }
            out
        };
        let mut locked = self.lock_index()?;
        // (source uid, source path, new base, size, new path)
        let mut placed: Vec<(Uid, PathBuf, String, u64, PathBuf)> = Vec::new();
        let linked = (|| {
            for &uid in uids {
                let Some(pos) = locked.index.position(uid) else {
                    continue;
                };
                let size = locked.index.entries()[pos].size;
                let Some((file, path)) = self.locate_uid(&mut locked, uid)? else {
                    continue;
                };
                let (base, to) = dest.place_copy(&path, size, translate(file.flags))?;
                placed.push((uid, path, base, size, to));
            }
            dest.fsync_message_dirs()
        })();
        if let Err(e) = linked {
            // Undo so a retried COPY does not duplicate; sources untouched.
            for (_, _, _, _, to) in &placed {
                let _ = fs::remove_file(to);
            }
            return Err(e);
        }
        let copied_bytes: u64 = placed.iter().map(|p| p.3).sum();
        dest.count_usage(copied_bytes, 0);
        if remove && !placed.is_empty() {
            let mut gone = HashSet::new();
            for (uid, from, ..) in &placed {
                match fs::remove_file(from) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(MailboxError::io("unlinking", from, e)),
                }
                gone.insert(*uid);
            }
            self.fsync_message_dirs()?;
            locked.index.remove(&gone);
            self.count_usage(0, copied_bytes);
        }
        self.finish(locked)?;
        let items: Vec<(String, u64)> = placed
            .iter()
            .map(|(_, _, base, size, _)| (base.clone(), *size))
            .collect();
        let paths: Vec<PathBuf> = placed.iter().map(|p| p.4.clone()).collect();
        let new_uids = dest.index_new_checked(&items, &paths)?;
        Ok(placed.iter().map(|p| p.0).zip(new_uids).collect())
    }

    /// Moves the user's stored-bytes figure (see `usage`).
    fn count_usage(&self, added: u64, removed: u64) {
        let delta = i128::from(added) - i128::from(removed);
        let delta = i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
        self.ctx.usage.change(&self.user_root, delta);
    }

    /// Writes a new message file durably into `new/` or `cur/` through
    /// `tmp/`, with a fresh unique base name; `write` fills the file.
    /// Returns the base and the final path.
    fn place(
        &self,
        size: u64,
        flags: Flags,
        write: impl Fn(&mut File) -> io::Result<()>,
    ) -> Result<(String, PathBuf)> {
        let sub = Sub::ARRIVAL;
        for _ in 0..NAME_ATTEMPTS {
            let base = self.ctx.unique_base(size);
            let tmp = self.dir.join("tmp").join(&base);
            let mut file = match durable::create_new(&tmp) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !self.dir.is_dir() => {
                    return Err(MailboxError::FolderNotFound(self.name.to_string()));
                }
                Err(e) => return Err(MailboxError::io("creating", tmp, e)),
            };
            if let Err(e) = write(&mut file).and_then(|()| file.sync_all()) {
                let _ = fs::remove_file(&tmp);
                return Err(MailboxError::io("writing", tmp, e));
            }
            drop(file);
            let to = self.file_path(sub, &self.arrival_name(&base, flags));
            // A link, unlike rename, never replaces an existing file.
            let linked = fs::hard_link(&tmp, &to);
            if let Err(e) = fs::remove_file(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %e, "could not remove delivered file from tmp/");
            }
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(MailboxError::io("linking into place", to, e)),
            }
            if let Err(e) = durable::fsync_dir(&self.dir.join(sub.dir())) {
                // Not known to be durable: do not count it as delivered.
                let _ = fs::remove_file(&to);
                return Err(e);
            }
            return Ok((base, to));
        }
        Err(MailboxError::io(
            "finding a unique file name in",
            self.dir.join("tmp"),
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    /// Hard-links `src` in under a new name (copying the bytes when the
    /// filesystem cannot link). The caller fsyncs the directories.
    fn place_copy(&self, src: &Path, size: u64, flags: Flags) -> Result<(String, PathBuf)> {
        let sub = Sub::ARRIVAL;
        for _ in 0..NAME_ATTEMPTS {
            let base = self.ctx.unique_base(size);
            let to = self.file_path(sub, &self.arrival_name(&base, flags));
            match fs::hard_link(src, &to) {
                Ok(()) => return Ok((base, to)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !self.dir.is_dir() => {
                    return Err(MailboxError::FolderNotFound(self.name.to_string()));
                }
                Err(e) if can_not_link(&e) => {
                    let date = fs::metadata(src).and_then(|m| m.modified()).ok();
                    return self.place(size, flags, |file| {
                        io::copy(&mut File::open(src)?, file)?;
                        if let Some(date) = date {
                            file.set_modified(date)?;
                        }
                        Ok(())
                    });
                }
                Err(e) => return Err(MailboxError::io("linking", to, e)),
            }
        }
        Err(MailboxError::io(
            "finding a unique file name in",
            &self.dir,
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    fn arrival_name(&self, base: &str, flags: Flags) -> String {
        if flags.is_empty() {
            base.to_owned()
        } else {
            filename::with_flags(base, flags)
        }
    }

    fn fsync_message_dirs(&self) -> Result<()> {
        durable::fsync_dir(&self.dir.join("new"))?;
        durable::fsync_dir(&self.dir.join("cur"))
    }

    /// Indexes freshly placed files; a failure is logged, not returned,
    /// because the messages are already stored (see [`Delivered::uid`]).
    fn index_new(&self, items: &[(String, u64)], paths: &[PathBuf]) -> Option<Vec<Uid>> {
        match self.index_new_checked(items, paths) {
            Ok(uids) => Some(uids),
            Err(e) => {
                tracing::warn!(folder = %self.dir.display(), error = %e,
                    "message stored but not indexed; the next sync assigns its UID");
                None
            }
        }
    }

    fn index_new_checked(&self, items: &[(String, u64)], paths: &[PathBuf]) -> Result<Vec<Uid>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut locked = self.lock_index()?;
        let uids = self.ensure_indexed(&mut locked, items)?;
        self.finish(locked)?;
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for (uid, path) in uids.iter().zip(paths) {
            known.moved(*uid, path.clone());
        }
        Ok(uids)
    }

    /// The UIDs of `items` (base, size), indexing those not yet known (a
    /// sync may have indexed them since they were placed). Without a
    /// directory scan, so APPEND costs one appended record.
    fn ensure_indexed(&self, locked: &mut Locked, items: &[(String, u64)]) -> Result<Vec<Uid>> {
        let mut by_base: HashMap<&str, Uid> = HashMap::with_capacity(items.len());
        let wanted: HashSet<&str> = items.iter().map(|(b, _)| b.as_str()).collect();
        for e in locked.index.entries() {
            if let Some(&base) = wanted.get(e.base.as_str()) {
                by_base.insert(base, e.uid);
            }
        }
        let mut uids = Vec::with_capacity(items.len());
        for (base, size) in items {
            let uid = match by_base.get(base.as_str()) {
                Some(&uid) => uid,
                None => match locked.index.push(base.clone(), *size) {
                    Some(uid) => {
                        by_base.insert(base, uid);
                        uid
                    }
                    None => {
                        // UID space used up: a full sync renumbers, with
                        // these files (already on disk) first in line.
                        let hint: Vec<String> = items.iter().map(|(b, _)| b.clone()).collect();
                        self.sync(locked, &hint)?;
                        return self.ensure_indexed(locked, items);
                    }
                },
            };
            uids.push(uid);
        }
        Ok(uids)
    }

    /// Takes the index lock and loads the index, rebuilding it from the
    /// files when it is missing or unreadable.
    fn lock_index(&self) -> Result<Locked> {
        let guard = match lock::lock_exclusive(&self.dir.join(INDEX_LOCK)) {
            Ok(guard) => guard,
            Err(MailboxError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound && !self.dir.is_dir() =>
            {
                return Err(MailboxError::FolderNotFound(self.name.to_string()));
            }
            Err(e) => return Err(e),
        };
        let path = self.dir.join(INDEX_FILE);
        let parsed = durable::read_optional(&path)?.map(|bytes| UidIndex::parse(&bytes));
        match parsed {
            Some(Parsed::Intact { index, damaged }) => {
                if damaged > 0 {
                    tracing::warn!(path = %path.display(), damaged,
                        "UID index had damaged lines; their messages get new UIDs");
                }
                Ok(Locked {
                    _guard: guard,
                    index,
                    disk: None,
                })
            }
            lost_or_missing => {
                if lost_or_missing.is_some() {
                    tracing::warn!(path = %path.display(),
                        "UID index unreadable; rebuilding with a new UIDVALIDITY");
                }
                let validity = validity::allocate(&self.user_root, SystemTime::now())?;
                let mut locked = Locked {
                    _guard: guard,
                    index: UidIndex::new(validity),
                    disk: None,
                };
                self.sync(&mut locked, &[])?;
                Ok(locked)
            }
        }
    }

    /// Writes the index's changes (appended, or the whole file when it is
    /// due for compaction), then releases the lock.
    fn finish(&self, mut locked: Locked) -> Result<()> {
        if !locked.index.is_dirty() {
            return Ok(());
        }
        let mut write = locked.index.write();
        if let IndexWrite::Append(bytes) = &write {
            match durable::append_existing(&self.dir.join(INDEX_FILE), bytes) {
                Ok(true) => {}
                // Removed meanwhile by hand: write it whole.
                Ok(false) => write = IndexWrite::Rewrite(locked.index.serialize()),
                Err(e) => return Err(e),
            }
        }
        if let IndexWrite::Rewrite(bytes) = &write {
            durable::replace_file(&self.dir, INDEX_FILE, bytes)?;
        }
        locked.index.written(&write);
        Ok(())
    }

    /// Brings the index in line with the directory: drops entries whose
    /// file is gone, gives new UIDs to unknown files (those in `hint`
    /// first, in its order, then the rest in arrival order, from their
    /// names), renumbering under a new UIDVALIDITY if the UID space would
    /// run out.
    fn sync(&self, locked: &mut Locked, hint: &[String]) -> Result<()> {
        let disk = self.scan()?;
        let gone: HashSet<Uid> = locked
            .index
            .entries()
            .iter()
            .filter(|e| !disk.contains_key(&e.base))
            .map(|e| e.uid)
            .collect();
        locked.index.remove(&gone);
        let known: HashSet<&str> = locked
            .index
            .entries()
            .iter()
            .map(|e| e.base.as_str())
            .collect();
        let mut unknown: Vec<&String> = disk
            .keys()
            .filter(|b| !known.contains(b.as_str()))
            .collect();
        unknown.sort_by_cached_key(|b| {
            (
                hint.iter().position(|h| h == *b).unwrap_or(usize::MAX),
                filename::arrival_key(b),
            )
        });
        let room = locked
            .index
            .next_uid
            .map_or(0, |n| u64::from(u32::MAX - n.get()) + 1);
        if unknown.len() as u64 > room {
            tracing::warn!(folder = %self.dir.display(), "UID space exhausted; renumbering");
            let validity = validity::allocate(&self.user_root, SystemTime::now())?;
            let old = std::mem::replace(&mut locked.index, UidIndex::new(validity));
            for e in old.into_entries() {
                locked.index.push(e.base, e.size);
            }
        }
        let mut added = Vec::with_capacity(unknown.len());
        for base in unknown {
            let file = &disk[base];
            let size = match filename::size_from_base(base) {
                Some(size) => size,
                None => match fs::metadata(self.file_path(file.sub, &file.file_name)) {
                    Ok(meta) => meta.len(),
                    // Gone again (another reader renamed it): next sync.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(MailboxError::io("reading size of", &self.dir, e)),
                },
            };
            added.push((base.clone(), size));
        }
        for (base, size) in added {
            // Room was checked above, so push cannot run out of UIDs.
            let _ = locked.index.push(base, size);
        }
        locked.disk = Some(disk);
        Ok(())
    }

    /// Lists `new/` and `cur/`. Names that are not messages are skipped; of
    /// two files with the same base (left by a crashed foreign tool), the
    /// one in `cur/` wins.
    fn scan(&self) -> Result<DiskMap> {
        let mut disk = DiskMap::new();
        for sub in [Sub::Cur, Sub::New] {
            let dir = self.dir.join(sub.dir());
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !self.dir.is_dir() => {
                    return Err(MailboxError::FolderNotFound(self.name.to_string()));
                }
                Err(e) => return Err(MailboxError::io("listing", dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| MailboxError::io("listing", &dir, e))?;
                let Ok(name) = entry.file_name().into_string() else {
                    tracing::warn!(dir = %dir.display(), "skipping a message file whose name is not UTF-8");
                    continue;
                };
                let Some(parsed) = filename::parse(&name) else {
                    continue;
                };
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let flags = parsed.flags;
                let base = parsed.base.to_owned();
                disk.entry(base).or_insert(DiskFile {
                    sub,
                    file_name: name,
                    flags,
                });
            }
        }
        Ok(disk)
    }

    /// Where the message `uid` is now, if it exists: from this lock's scan,
    /// else from the cache if the file is still there, else by a scan.
    fn locate_uid(&self, locked: &mut Locked, uid: Uid) -> Result<Option<(DiskFile, PathBuf)>> {
        let Some(pos) = locked.index.position(uid) else {
            return Ok(None);
        };
        let base = locked.index.entries()[pos].base.clone();
        if locked.disk.is_none() {
            if let Some(found) = self
                .cached_path(uid)
                .and_then(|p| self.check_cached(&p, &base))
            {
                return Ok(Some(found));
            }
            locked.disk = Some(self.scan()?);
        }
        Ok(locked.disk.as_ref().and_then(|d| d.get(&base)).map(|file| {
            let path = self.file_path(file.sub, &file.file_name);
            (file.clone(), path)
        }))
    }

    /// The cached path as a `DiskFile`, if it still exists and is `base`.
    fn check_cached(&self, path: &Path, base: &str) -> Option<(DiskFile, PathBuf)> {
        let name = path.file_name()?.to_str()?;
        let parsed = filename::parse(name)?;
        if parsed.base != base || fs::symlink_metadata(path).is_err() {
            return None;
        }
        let sub = if path.parent()?.ends_with("new") {
            Sub::New
        } else {
            Sub::Cur
        };
        Some((
            DiskFile {
                sub,
                file_name: name.to_owned(),
                flags: parsed.flags,
            },
            path.to_path_buf(),
        ))
    }

    /// Records where a message now is, in the lock's scan and the cache.
    fn remember(&self, locked: &mut Locked, uid: Uid, base: &str, file: DiskFile, path: PathBuf) {
        if let Some(disk) = locked.disk.as_mut() {
            disk.insert(base.to_owned(), file);
        }
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .moved(uid, path);
    }

    fn cached_path(&self, uid: Uid) -> Option<PathBuf> {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .path(uid)
    }

    fn file_path(&self, sub: Sub, file_name: &str) -> PathBuf {
        self.dir.join(sub.dir()).join(file_name)
    }

    fn no_such(&self, uid: Uid) -> MailboxError {
        MailboxError::NoSuchMessage {
            uid,
            folder: self.name.to_string(),
        }
    }
}

/// Errors of link(2) that mean "this filesystem cannot", not "this file".
fn can_not_link(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV) | Some(libc::EPERM) | Some(libc::EMLINK) | Some(libc::EOPNOTSUPP)
    )
}
