//! The `subscriptions` file (IMAP SUBSCRIBE/LSUB state) in Dovecot's
//! formats: reads version 1 (one name per line, `.` separated, modified
//! UTF-7, as Courier and older Dovecot write) and version 2 (`V\t2` header,
//! components separated by tabs, as Dovecot 2.x writes); writes version 2
//! with UTF-8 components. It does not check that folders exist
//! (subscriptions may name folders that do not, RFC 3501 6.3.6).

use std::path::Path;

use super::durable;
use super::error::Result;
use super::lock;
use super::name::FolderName;
use super::utf7;

/// File name in the user's Maildir.
pub const FILE: &str = "subscriptions";
/// Lock for writers. Not `subscriptions.lock`: Dovecot uses that name for
/// its dotlock and would mistake ours for a held lock.
const LOCK: &str = "spate-subscriptions.lock";
/// Dovecot's version 2 header.
const V2_HEADER: &str = "V\t2\n\n";

/// Parses either version; unreadable or invalid lines are skipped, so a
/// damaged file loses only its damaged names.
pub fn parse(bytes: &[u8]) -> Vec<FolderName> {
    let text = String::from_utf8_lossy(bytes);
    let (v2, body) = match text.strip_prefix(V2_HEADER) {
        Some(body) => (true, body),
        None => (false, &text[..]),
    };
    let mut names: Vec<FolderName> = Vec::new();
    for line in body.lines() {
        if line.is_empty() {
            continue;
        }
        let name = if v2 {
            // \x01 starts Dovecot's tab escapes, which only escape
            // characters folder names cannot hold anyway.
            (!line.contains('\u{1}')).then(|| line.replace('\t', "/"))
        } else {
            line.split('.')
                .map(utf7::decode)
                .collect::<Option<Vec<_>>>()
                .map(|parts| parts.join("/"))
        };
        if let Some(name) = name.and_then(|n| FolderName::new(&n).ok()) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// The version 2 file for `names`.
pub fn serialize(names: &[FolderName]) -> Vec<u8> {
    let mut out = String::from(V2_HEADER);
    for name in names {
        out.push_str(&name.components().collect::<Vec<_>>().join("\t"));
        out.push('\n');
    }
    out.into_bytes()
}

/// The subscribed names of the user at `root`, in file order.
pub fn read(root: &Path) -> Result<Vec<FolderName>> {
    Ok(durable::read_optional(&root.join(FILE))?
        .map(|bytes| parse(&bytes))
        .unwrap_or_default())
}

/// Adds or removes one name; the file is replaced atomically under a lock.
pub fn set(root: &Path, name: &FolderName, subscribed: bool) -> Result<()> {
    let _guard = lock::lock_exclusive(&root.join(LOCK))?;
    let mut names = read(root)?;
    let present = names.contains(name);
    if present == subscribed {
        return Ok(());
    }
    if subscribed {
        names.push(name.clone());
    } else {
        names.retain(|n| n != name);
    }
    durable::replace_file(root, FILE, &serialize(&names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[FolderName]) -> Vec<&str> {
        list.iter().map(FolderName::as_str).collect()
    }

    #[test]
    fn reads_both_versions() {
        assert_eq!(
            names(&parse(b"INBOX\nArchive.2024\nEntw&APw-rfe\nbad..name\n")),
            vec!["INBOX", "Archive/2024", "Entwürfe"]
        );
        assert_eq!(
            names(&parse(b"V\t2\n\nINBOX\nArchive\t2024\nEntw\xc3\xbcrfe\n")),
            vec!["INBOX", "Archive/2024", "Entwürfe"]
        );
        let list = vec![
            FolderName::new("Archive/2024").unwrap(),
            FolderName::new("Sent").unwrap(),
        ];
        assert_eq!(serialize(&list), b"V\t2\n\nArchive\t2024\nSent\n");
        assert_eq!(parse(&serialize(&list)), list);
    }
}
