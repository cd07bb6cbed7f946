//! LIST and LSUB matching (RFC 3501 6.3.8/6.3.9, RFC 5258, RFC 6154, RFC 3348): which names a
//! pattern matches, the implied parents of nested folders, and each name's attributes. It
//! refuses to read the store or write replies: the session passes folder and subscription
//! names in and writes the entries out.

use std::collections::{BTreeMap, HashSet};

use crate::mailbox::{FolderName, SpecialUse};

/// The hierarchy delimiter on the wire.
pub const DELIMITER: char = '/';

/// One name a LIST may show, with what is known about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The folder name, UTF-8 (the session encodes it for the wire).
    pub name: String,
    /// A folder exists under this name; false for an implied parent of a
    /// nested folder, or a subscription to a missing folder.
    pub exists: bool,
    pub has_children: bool,
    pub subscribed: bool,
    /// RFC 6154 attribute (`\Sent`, ...) for the standard names.
    pub special_use: Option<&'static str>,
}

impl Entry {
    /// The attributes of a LIST reply. `extended` asks for the RFC 5258
    /// forms (`\NonExistent`, `\Subscribed`).
    pub fn attributes(&self, extended: bool, subscribed: bool) -> Vec<&'static str> {
        let mut out = Vec::with_capacity(4);
        if !self.exists {
            // RFC 5258 3.4: \NonExistent implies \Noselect.
            out.push(if extended {
                "\\NonExistent"
            } else {
                "\\Noselect"
            });
        }
        out.push(if self.has_children {
            "\\HasChildren"
        } else {
            "\\HasNoChildren"
        });
        if subscribed && self.subscribed {
            out.push("\\Subscribed");
        }
        if let Some(special) = self.special_use {
            out.push(special);
        }
        out
    }
}

/// The special-use attribute of a top-level folder named like the
/// folders `UserMailbox::create_special_use` makes.
pub fn special_use(name: &str) -> Option<&'static str> {
    SpecialUse::ALL
        .iter()
        .find(|s| s.folder_name() == name)
        .map(|s| s.attribute())
}

/// Every name LIST may show: the folders (INBOX first), their missing
/// ancestors, and subscribed names, with attributes filled in.
pub fn entries(folders: &[FolderName], subscriptions: &[FolderName]) -> Vec<Entry> {
    let subscribed: HashSet<&str> = subscriptions.iter().map(|f| f.as_str()).collect();
    let mut names: BTreeMap<String, bool> = BTreeMap::new();
    for folder in folders {
        names.insert(folder.as_str().to_owned(), true);
        let mut parent = folder.parent();
        while let Some(p) = parent {
            names.entry(p.as_str().to_owned()).or_insert(false);
            parent = p.parent();
        }
    }
    for sub in subscriptions {
        names.entry(sub.as_str().to_owned()).or_insert(false);
        // The parents of a subscription to a missing folder: LSUB and
        // RECURSIVEMATCH may have to show them (plain LIST shows only
        // names with a real folder at or below them).
        for parent in ancestors(sub.as_str()) {
            names.entry(parent.to_owned()).or_insert(false);
        }
    }
    let mut out: Vec<Entry> = names
        .iter()
        .map(|(name, &exists)| {
            // Only folders that exist count as children (RFC 3348 4).
            let has_children = has_real_below(name, &names);
            Entry {
                name: name.clone(),
                exists,
                has_children,
                subscribed: subscribed.contains(name.as_str()),
                special_use: if exists { special_use(name) } else { None },
            }
        })
        .collect();
    // INBOX first, as clients expect.
    out.sort_by(|a, b| (a.name != "INBOX", &a.name).cmp(&(b.name != "INBOX", &b.name)));
    out
}

/// The names above `name`, nearest first: "a/b/c" gives "a/b", "a".
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.rmatch_indices(DELIMITER)
        .map(move |(at, _)| &name[..at])
}

/// The names that have a subscribed name somewhere below them: those a
/// LIST (SUBSCRIBED RECURSIVEMATCH) shows with `CHILDINFO ("SUBSCRIBED")`
/// whether or not the descendant matches the pattern (RFC 5258 3.5 and
/// section 5, example 9).
pub fn parents_of_subscribed(entries: &[Entry]) -> HashSet<&str> {
    entries
        .iter()
        .filter(|e| e.subscribed)
        .flat_map(|e| ancestors(&e.name))
        .collect()
}

/// What LSUB answers for `pattern` (RFC 3501 6.3.9), in `entries`' order:
/// each name with whether it is `\Noselect`. The subscribed names that
/// match, `\Noselect` when the folder does not exist; and, since `%`
/// stops at the delimiter, an unsubscribed parent that matches when a
/// subscribed name below it does not: "foo/bar" subscribed, "foo" not,
/// `%` returns "foo" with `\Noselect`, not "foo/bar".
pub fn lsub<'a>(entries: &'a [Entry], pattern: &str) -> Vec<(&'a str, bool)> {
    let mut parents: HashSet<&str> = HashSet::new();
    for entry in entries.iter().filter(|e| e.subscribed) {
        if !matches(pattern, &entry.name) {
            parents.extend(ancestors(&entry.name).filter(|p| matches(pattern, p)));
        }
    }
    entries
        .iter()
        .filter_map(|e| {
            if e.subscribed && matches(pattern, &e.name) {
                Some((e.name.as_str(), !e.exists))
            } else if !e.subscribed && parents.contains(e.name.as_str()) {
                Some((e.name.as_str(), true))
            } else {
                None
            }
        })
        .collect()
}

fn has_real_below(name: &str, names: &BTreeMap<String, bool>) -> bool {
    let prefix = format!("{name}{DELIMITER}");
    names
        .range(prefix.clone()..)
        .take_while(|(n, _)| n.starts_with(&prefix))
        .any(|(_, &exists)| exists)
}

/// The pattern a LIST reference and mailbox argument stand for (RFC 3501
/// 6.3.8: the reference is prepended as it is, so "A" + "*" is "A*",
/// which also matches "A" itself, as in Dovecot; a pattern starting with
/// the delimiter is taken as is).
pub fn join(reference: &str, pattern: &str) -> String {
    if pattern.starts_with(DELIMITER) {
        return pattern.to_owned();
    }
    format!("{reference}{pattern}")
}

/// Whether `name` matches `pattern`: `*` matches any run of characters,
/// `%` any run without the delimiter (RFC 3501 6.3.8). The INBOX part of
/// a name matches without regard to case. Linear memory, quadratic time
/// at worst (no backtracking blow-up).
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let inbox_len = if name == "INBOX" || name.starts_with("INBOX/") {
        5
    } else {
        0
    };
    let same = |i: usize, c: char| {
        if i < inbox_len {
            n[i].eq_ignore_ascii_case(&c)
        } else {
            n[i] == c
        }
    };
    // reach[j]: the first i chars of the name are matched by the first
    // j chars of the pattern.
    let mut reach = vec![false; n.len() + 1];
    reach[0] = true;
    for &pc in &p {
        let mut next = vec![false; n.len() + 1];
        match pc {
            '*' | '%' => {
                let mut on = false;
                for i in 0..=n.len() {
                    on |= reach[i];
                    next[i] = on;
                    if pc == '%' && i < n.len() && n[i] == DELIMITER {
                        on = false;
                    }
                }
            }
            c => {
                for i in 0..n.len() {
                    if reach[i] && same(i, c) {
                        next[i + 1] = true;
                    }
                }
            }
        }
        reach = next;
        if !reach.iter().any(|&r| r) {
            return false;
        }
    }
    reach[n.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> FolderName {
        FolderName::new(s).unwrap()
    }

    #[test]
    fn wildcards() {
        assert!(matches("*", "INBOX"));
        assert!(matches("*", "a/b/c"));
        assert!(matches("%", "a"));
        assert!(!matches("%", "a/b"));
        assert!(matches("a/%", "a/b"));
        assert!(!matches("a/%", "a/b/c"));
        assert!(matches("a/*", "a/b/c"));
        assert!(matches("inbox", "INBOX"));
        assert!(matches("In%", "INBOX"));
        assert!(!matches("inbox", "Inbox2"));
        assert!(!matches("sent", "Sent"));
        assert!(matches("%/%", "a/b"));
        assert!(matches("", "") && !matches("", "a"));
        assert!(matches("*b*", "abc") && !matches("*x*", "abc"));
    }

    #[test]
    fn implied_parents_and_attributes() {
        let e = entries(&[f("INBOX"), f("A/B"), f("Sent")], &[f("Sent"), f("Gone")]);
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["INBOX", "A", "A/B", "Gone", "Sent"]);
        let a = &e[1];
        assert!(!a.exists && a.has_children);
        assert_eq!(a.attributes(false, false), ["\\Noselect", "\\HasChildren"]);
        let sent = &e[4];
        assert_eq!(
            sent.attributes(true, true),
            ["\\HasNoChildren", "\\Subscribed", "\\Sent"]
        );
        assert!(!e[3].exists && e[3].subscribed);
    }

    #[test]
    fn lsub_percent_returns_parents_of_subscribed_children() {
        let e = entries(
            &[f("INBOX"), f("a/b/c"), f("x")],
            &[f("a/b/c"), f("x"), f("m/n")],
        );
        assert_eq!(lsub(&e, "%"), [("a", true), ("m", true), ("x", false)]);
        assert_eq!(lsub(&e, "a/%"), [("a/b", true)]);
        assert_eq!(
            lsub(&e, "*"),
            [("a/b/c", false), ("m/n", true), ("x", false)],
            "* reaches the subscribed names themselves"
        );
        let parents = parents_of_subscribed(&e);
        assert_eq!(parents, HashSet::from(["a", "a/b", "m"]));
    }

    #[test]
    fn reference_joins() {
        assert_eq!(join("", "%"), "%");
        assert_eq!(join("A/", "%"), "A/%");
        assert_eq!(join("A", "%"), "A%");
        assert_eq!(join("A", "*"), "A*");
        assert!(matches(&join("A", "*"), "A") && matches(&join("A", "*"), "A/b"));
        assert_eq!(join("A", "/x"), "/x");
    }
}
