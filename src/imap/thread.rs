//! THREAD (RFC 5256 3): the ORDEREDSUBJECT and REFERENCES algorithms over
//! the messages a search matched, and the `* THREAD` reply (RFC 5256 4).
//! It reads no files: the session hands it each message's numbers,
//! internal date and stored bytes. Base subjects and sent dates are
//! [`super::sort`]'s, so THREAD and SORT agree.
//!
//! Every walk of a tree is iterative: a chain of replies as long as the
//! mailbox cannot overflow the stack.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::SystemTime;

use super::command::ThreadAlgorithm;
use super::mime::decode::header_text;
use super::mime::header;
use super::mime::Span;
use super::sort::{ascii_casemap, base_subject_and_reply, parse_date, seconds};

/// What threading knows of one matched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadMessage {
    /// What the reply shows: the sequence number, or the UID for UID THREAD.
    pub number: u32,
    /// The sequence number: RFC 5256 2.2's tie-breaker for equal dates.
    seq: u32,
    /// RFC 5256 2.2 sent date in seconds (UTC), else the internal date.
    date: i64,
    /// RFC 5256 2.1 base subject under i;ascii-casemap.
    subject: String,
    /// The base subject extraction removed a reply or forward marker.
    reply: bool,
    /// The normalized Message-ID, when the header holds a valid one.
    message_id: Option<String>,
    /// RFC 5256 3: the References IDs, else the first In-Reply-To ID.
    references: Vec<String>,
}

impl ThreadMessage {
    /// From the message's numbers, internal date and stored bytes (only
    /// the header is read).
    pub fn new(number: u32, seq: u32, internal_date: SystemTime, raw: &[u8]) -> ThreadMessage {
        let span = Span {
            start: 0,
            end: header::header_end(raw, 0, raw.len()),
        };
        let field = |name: &str| header::first(raw, span, name).map(header::unfold);
        let date = field("Date")
            .and_then(|d| parse_date(&String::from_utf8_lossy(&d)))
            .unwrap_or_else(|| seconds(internal_date));
        let (subject, reply) = field("Subject")
            .map(|s| base_subject_and_reply(&header_text(&s)))
            .unwrap_or_default();
        let message_id = field("Message-ID").and_then(|v| message_ids(&v).into_iter().next());
        let mut references = field("References")
            .map(|v| message_ids(&v))
            .unwrap_or_default();
        if references.is_empty() {
            references
                .extend(field("In-Reply-To").and_then(|v| message_ids(&v).into_iter().next()));
        }
        ThreadMessage {
            number,
            seq,
            date,
            subject: ascii_casemap(&subject),
            reply,
            message_id,
            references,
        }
    }

    /// RFC 5256 2.2: by sent date, equal dates by sequence number.
    fn key(&self) -> (i64, u32) {
        (self.date, self.seq)
    }
}

/// The msg-ids of a header value (RFC 5322 3.6.4), normalized as RFC 5256
/// 3 asks: the angle brackets, white space, comments and the quoting of a
/// quoted local part dropped, so `<"a.b"@x>` and `<a.b@x>` are one ID. An
/// ID needs text on both sides of an `@`; anything else is skipped.
fn message_ids(value: &[u8]) -> Vec<String> {
    let mut ids = Vec::new();
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'(' => i = skip_comment(value, i),
            b'<' => {
                let (id, next) = one_id(value, i + 1);
                if let Some(id) = id {
                    ids.push(id);
                }
                i = next;
            }
            _ => i += 1,
        }
    }
    ids
}

/// After a `<` at `start`: the ID up to its `>` (if valid) and where to
/// go on. Another `<` before the `>` starts over there.
fn one_id(value: &[u8], start: usize) -> (Option<String>, usize) {
    let mut id = Vec::new();
    let mut quoted = false;
    let mut i = start;
    while i < value.len() {
        let b = value[i];
        match b {
            b'\\' if quoted => {
                if let Some(&next) = value.get(i + 1) {
                    id.push(next);
                }
                i += 2;
                continue;
            }
            b'"' => quoted = !quoted,
            _ if quoted => id.push(b),
            b'(' => {
                i = skip_comment(value, i);
                continue;
            }
            b'<' => return (None, i),
            b'>' => {
                let id = String::from_utf8_lossy(&id).into_owned();
                let valid = id
                    .split_once('@')
                    .is_some_and(|(left, right)| !left.is_empty() && !right.is_empty());
                return (valid.then_some(id), i + 1);
            }
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => id.push(b),
        }
        i += 1;
    }
    (None, i)
}

/// After a comment that opens at `start`: nested comments and quoted
/// pairs inside it (RFC 5322 3.2.2).
fn skip_comment(value: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < value.len() {
        match value[i] {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// One container of the thread tree: a message, or a dummy standing for
/// a message that was referred to but not matched.
#[derive(Debug, Clone, Default)]
struct Node {
    /// Index into the messages; `None` for a dummy.
    message: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

/// The threads of some messages: a forest of [`Node`]s.
#[derive(Debug)]
pub struct Threads<'m> {
    messages: &'m [ThreadMessage],
    nodes: Vec<Node>,
    roots: Vec<usize>,
}

/// Threads `messages` (given in sequence order) with `algorithm`.
pub fn thread(algorithm: ThreadAlgorithm, messages: &[ThreadMessage]) -> Threads<'_> {
    let mut threads = Threads {
        messages,
        nodes: Vec::with_capacity(messages.len()),
        roots: Vec::new(),
    };
    match algorithm {
        ThreadAlgorithm::OrderedSubject => threads.ordered_subject(),
        ThreadAlgorithm::References => threads.references(),
    }
    threads
}

impl Threads<'_> {
    fn add(&mut self, message: Option<usize>) -> usize {
        self.nodes.push(Node {
            message,
            ..Node::default()
        });
        self.nodes.len() - 1
    }

    fn is_dummy(&self, node: usize) -> bool {
        self.nodes[node].message.is_none()
    }

    fn is_reply(&self, node: usize) -> bool {
        self.nodes[node]
            .message
            .is_some_and(|m| self.messages[m].reply)
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    fn unlink(&mut self, child: usize) {
        if let Some(parent) = self.nodes[child].parent.take() {
            self.nodes[parent].children.retain(|&c| c != child);
        }
    }

    /// Making `parent` the parent of `child` would close a loop: `parent`
    /// is `child` or one of its descendants.
    fn would_loop(&self, parent: usize, child: usize) -> bool {
        if self.nodes[child].children.is_empty() {
            // No descendants: the common case costs no walk.
            return parent == child;
        }
        let mut at = Some(parent);
        while let Some(n) = at {
            if n == child {
                return true;
            }
            at = self.nodes[n].parent;
        }
        false
    }

    /// RFC 5256 3, ORDEREDSUBJECT: by base subject then sent date; one
    /// thread per base subject, its first message the parent of all the
    /// others; threads by the sent date of their first message.
    fn ordered_subject(&mut self) {
        let messages = self.messages;
        let mut order: Vec<usize> = (0..messages.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&messages[a], &messages[b]);
            a.subject.cmp(&b.subject).then(a.key().cmp(&b.key()))
        });
        let mut head: Option<(usize, &str)> = None;
        for m in order {
            let node = self.add(Some(m));
            match head {
                Some((parent, subject)) if subject == messages[m].subject => {
                    self.link(parent, node)
                }
                _ => {
                    self.roots.push(node);
                    head = Some((node, &messages[m].subject));
                }
            }
        }
        self.sort_siblings();
    }

    /// RFC 5256 3, REFERENCES, steps 1 to 6.
    fn references(&mut self) {
        let messages = self.messages;
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        // (1) Link each message to its references.
        for (m, message) in messages.iter().enumerate() {
            // A Message-ID seen first wins; later copies get a node of
            // their own (a "unique ID"). A dummy made for a reference
            // earlier becomes the message.
            let me = match message.message_id.as_deref() {
                Some(id) => match by_id.get(id) {
                    Some(&n) if self.is_dummy(n) => {
                        self.nodes[n].message = Some(m);
                        n
                    }
                    Some(_) => self.add(Some(m)),
                    None => {
                        let n = self.add(Some(m));
                        by_id.insert(id, n);
                        n
                    }
                },
                None => self.add(Some(m)),
            };
            let chain: Vec<usize> = message
                .references
                .iter()
                .map(|id| match by_id.get(id.as_str()) {
                    Some(&n) => n,
                    None => {
                        let n = self.add(None);
                        by_id.insert(id, n);
                        n
                    }
                })
                .collect();
            // (1A) Each reference the parent of the next, unless the next
            // has a parent already or the link would close a loop.
            for pair in chain.windows(2) {
                let (parent, child) = (pair[0], pair[1]);
                if self.nodes[child].parent.is_none() && !self.would_loop(parent, child) {
                    self.link(parent, child);
                }
            }
            // (1B) The last reference is the message's parent, replacing
            // any parent it had; no references, no parent.
            self.unlink(me);
            if let Some(&last) = chain.last() {
                if !self.would_loop(last, me) {
                    self.link(last, me);
                }
            }
        }
        // (2) The parentless are the roots.
        self.roots = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].parent.is_none())
            .collect();
        // (3) Prune dummies; (4) sort.
        self.prune();
        self.sort_siblings();
        // (5) Gather threads with the same base subject; (6) sort again.
        self.group_by_subject();
        self.sort_siblings();
    }

    /// Every node under the roots, each after all its descendants.
    fn bottom_up(&self) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut stack = self.roots.clone();
        while let Some(n) = stack.pop() {
            order.push(n);
            stack.extend_from_slice(&self.nodes[n].children);
        }
        order.reverse();
        order
    }

    /// RFC 5256 3 step 3: a dummy with no children goes; one with
    /// children gives them to its parent, except that at the top a dummy
    /// stays unless it has a single child.
    fn prune(&mut self) {
        for n in self.bottom_up() {
            // Its children were pruned already: none of them is a dummy.
            let children = std::mem::take(&mut self.nodes[n].children);
            let mut kept = Vec::with_capacity(children.len());
            for c in children {
                if self.is_dummy(c) {
                    let promoted = std::mem::take(&mut self.nodes[c].children);
                    for &g in &promoted {
                        self.nodes[g].parent = Some(n);
                    }
                    kept.extend(promoted);
                } else {
                    kept.push(c);
                }
            }
            self.nodes[n].children = kept;
        }
        let roots = std::mem::take(&mut self.roots);
        for r in roots {
            if !self.is_dummy(r) || self.nodes[r].children.len() > 1 {
                self.roots.push(r);
            } else if let Some(&only) = self.nodes[r].children.first() {
                self.nodes[only].parent = None;
                self.nodes[r].children.clear();
                self.roots.push(only);
            }
        }
    }

    /// RFC 5256 3 steps 4 and 6: every set of siblings by sent date (2.2),
    /// the deepest first; a dummy sorts as its first child.
    fn sort_siblings(&mut self) {
        let mut keys: Vec<(i64, u32)> = vec![(i64::MIN, 0); self.nodes.len()];
        let by_key =
            |keys: &[(i64, u32)], a: &usize, b: &usize| -> Ordering { keys[*a].cmp(&keys[*b]) };
        for n in self.bottom_up() {
            let mut children = std::mem::take(&mut self.nodes[n].children);
            children.sort_by(|a, b| by_key(&keys, a, b));
            keys[n] = match self.nodes[n].message {
                Some(m) => self.messages[m].key(),
                None => children.first().map_or((i64::MIN, 0), |&c| keys[c]),
            };
            self.nodes[n].children = children;
        }
        let mut roots = std::mem::take(&mut self.roots);
        roots.sort_by(|a, b| by_key(&keys, a, b));
        self.roots = roots;
    }

    /// RFC 5256 3 step 5.B.i: the base subject of a message, or of a
    /// dummy's first child.
    fn thread_subject(&self, node: usize) -> &str {
        let mut at = node;
        loop {
            match self.nodes[at].message {
                Some(m) => return &self.messages[m].subject,
                None => match self.nodes[at].children.first() {
                    Some(&first) => at = first,
                    None => return "",
                },
            }
        }
    }

    /// RFC 5256 3 step 5: threads at the top with the same base subject
    /// become one.
    fn group_by_subject(&mut self) {
        // (5B) One node per subject: a dummy over a message, a message
        // over a reply.
        let mut table: HashMap<String, usize> = HashMap::new();
        for &r in &self.roots {
            let subject = self.thread_subject(r);
            if subject.is_empty() {
                continue;
            }
            match table.get(subject).copied() {
                None => {
                    table.insert(subject.to_owned(), r);
                }
                Some(t) => {
                    let replace = !self.is_dummy(t)
                        && (self.is_dummy(r) || (self.is_reply(t) && !self.is_reply(r)));
                    if replace {
                        table.insert(subject.to_owned(), r);
                    }
                }
            }
        }
        // (5C) Merge each thread into its subject's.
        let mut slots: Vec<Option<usize>> = self.roots.iter().map(|&r| Some(r)).collect();
        let mut slot_of: HashMap<usize, usize> = self
            .roots
            .iter()
            .enumerate()
            .map(|(i, &r)| (r, i))
            .collect();
        for i in 0..slots.len() {
            let Some(r) = slots[i] else { continue };
            let subject = self.thread_subject(r).to_owned();
            if subject.is_empty() {
                continue;
            }
            let Some(&t) = table.get(&subject) else {
                continue;
            };
            if t == r {
                continue;
            }
            slots[i] = None;
            if self.is_dummy(t) && self.is_dummy(r) {
                for c in std::mem::take(&mut self.nodes[r].children) {
                    self.link(t, c);
                }
            } else if self.is_dummy(t) || (self.is_reply(r) && !self.is_reply(t)) {
                self.link(t, r);
            } else {
                let dummy = self.add(None);
                let Some(at) = slot_of.remove(&t) else {
                    // The table holds only nodes at the top.
                    slots[i] = Some(r);
                    continue;
                };
                slots[at] = Some(dummy);
                slot_of.insert(dummy, at);
                self.link(dummy, t);
                self.link(dummy, r);
                table.insert(subject, dummy);
            }
        }
        self.roots = slots.into_iter().flatten().collect();
    }

    /// The threads, as the `* THREAD` reply writes them.
    pub fn write(&self, out: &mut Vec<u8>) {
        enum Emit {
            Node(usize),
            Text(&'static [u8]),
        }
        out.extend_from_slice(b"* THREAD");
        if !self.roots.is_empty() {
            out.push(b' ');
        }
        // Pushed in reverse: popped in writing order.
        let mut stack: Vec<Emit> = Vec::new();
        let nested = |stack: &mut Vec<Emit>, children: &[usize]| {
            for &c in children.iter().rev() {
                stack.push(Emit::Text(b")"));
                stack.push(Emit::Node(c));
                stack.push(Emit::Text(b"("));
            }
        };
        nested(&mut stack, &self.roots);
        while let Some(emit) = stack.pop() {
            let n = match emit {
                Emit::Text(text) => {
                    out.extend_from_slice(text);
                    continue;
                }
                Emit::Node(n) => n,
            };
            let node = &self.nodes[n];
            match (node.message, node.children.as_slice()) {
                // RFC 5256 4: `thread-members`, a parent and its only
                // child in a row; several children, one
                // `thread-list` each.
                (Some(m), children) => {
                    out.extend_from_slice(self.messages[m].number.to_string().as_bytes());
                    match children {
                        [] => {}
                        [only] => {
                            stack.push(Emit::Node(*only));
                            stack.push(Emit::Text(b" "));
                        }
                        several => {
                            nested(&mut stack, several);
                            stack.push(Emit::Text(b" "));
                        }
                    }
                }
                // A dummy at the top: `thread-nested` alone, `((3)(5))`.
                (None, [only]) => stack.push(Emit::Node(*only)),
                (None, children) => nested(&mut stack, children),
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message numbered `seq` with these header fields (`date` as the
    /// minutes after a fixed time).
    fn msg(seq: u32, minute: u32, subject: &str, id: &str, refs: &str) -> ThreadMessage {
        let mut raw =
            format!("Subject: {subject}\r\nDate: Mon, 1 Jan 2024 10:{minute:02}:00 +0000\r\n");
        if !id.is_empty() {
            raw.push_str(&format!("Message-ID: {id}\r\n"));
        }
        if !refs.is_empty() {
            raw.push_str(&format!("References: {refs}\r\n"));
        }
        raw.push_str("\r\nbody\r\n");
        ThreadMessage::new(seq, seq, SystemTime::UNIX_EPOCH, raw.as_bytes())
    }

    fn reply(algorithm: ThreadAlgorithm, messages: &[ThreadMessage]) -> String {
        let mut out = Vec::new();
        thread(algorithm, messages).write(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn refs(messages: &[ThreadMessage]) -> String {
        reply(ThreadAlgorithm::References, messages)
    }

    #[test]
    fn message_ids_are_normalized() {
        assert_eq!(
            message_ids(br#"<"01KF8JCEOCBS0045PS"@xxx.yyy.com> (c <no@t.this>) <a@b>"#),
            vec!["01KF8JCEOCBS0045PS@xxx.yyy.com", "a@b"]
        );
        assert_eq!(
            message_ids(b"<a @ b> <noat> <@b> <x<y@z>"),
            vec!["a@b", "y@z"]
        );
        assert_eq!(message_ids(br#"<"a\"q"@b>"#), vec!["a\"q@b"]);
        assert_eq!(message_ids(b"<unterminated@x"), Vec::<String>::new());
        // In-Reply-To's first ID stands in for a missing References.
        let raw = b"In-Reply-To: <p@x> (sent by <q@x>)\r\n\r\n";
        let m = ThreadMessage::new(1, 1, SystemTime::UNIX_EPOCH, raw);
        assert_eq!(m.references, vec!["p@x"]);
        let raw = b"References: junk\r\nIn-Reply-To: <p@x> <q@x>\r\n\r\n";
        let m = ThreadMessage::new(1, 1, SystemTime::UNIX_EPOCH, raw);
        assert_eq!(m.references, vec!["p@x"], "References without an ID");
    }

    #[test]
    fn ordered_subject_groups_by_base_subject_under_the_first() {
        let messages = [
            msg(1, 5, "Lunch", "", ""),
            msg(2, 1, "Re: party", "", ""),
            msg(3, 9, "RE: LUNCH", "", ""),
            msg(4, 2, "party (fwd)", "", ""),
            msg(5, 7, "[fwd: Lunch]", "", ""),
            msg(6, 3, "alone", "", ""),
            msg(7, 0, "Fwd: Re: party", "", ""),
        ];
        // party: 7 (10:00), 2, 4; lunch: 1 (10:05), 5, 3; alone 6 (10:03).
        assert_eq!(
            reply(ThreadAlgorithm::OrderedSubject, &messages),
            "* THREAD (7 (2)(4))(6)(1 (5)(3))\r\n"
        );
        // Two in a thread: parent and child in a row.
        assert_eq!(
            reply(ThreadAlgorithm::OrderedSubject, &messages[..2]),
            "* THREAD (2)(1)\r\n"
        );
        let pair = [msg(1, 1, "x", "", ""), msg(2, 2, "re: x", "", "")];
        assert_eq!(
            reply(ThreadAlgorithm::OrderedSubject, &pair),
            "* THREAD (1 2)\r\n"
        );
        assert_eq!(reply(ThreadAlgorithm::OrderedSubject, &[]), "* THREAD\r\n");
    }

    #[test]
    fn equal_dates_fall_back_to_sequence_numbers() {
        let messages = [
            msg(1, 0, "b", "", ""),
            msg(2, 0, "a", "", ""),
            msg(3, 0, "re: b", "", ""),
        ];
        assert_eq!(
            reply(ThreadAlgorithm::OrderedSubject, &messages),
            "* THREAD (1 3)(2)\r\n"
        );
        let messages = [
            msg(1, 0, "one", "<1@x>", ""),
            msg(2, 0, "two", "<2@x>", ""),
            msg(3, 0, "re: one", "<3@x>", "<1@x>"),
            msg(4, 0, "re: one", "<4@x>", "<1@x>"),
        ];
        assert_eq!(refs(&messages), "* THREAD (1 (3)(4))(2)\r\n");
    }

    /// RFC 5256 4's example: `(2)(3 6 (4 23)(44 7 96))`, from messages
    /// that were moved in out of order.
    #[test]
    fn the_rfc_nested_example() {
        let messages = [
            msg(2, 0, "other", "<m2@x>", ""),
            msg(3, 1, "topic", "<m3@x>", ""),
            msg(4, 3, "re: topic", "<m4@x>", "<m3@x> <m6@x>"),
            msg(6, 2, "re: topic", "<m6@x>", "<m3@x>"),
            msg(7, 5, "re: topic", "<m7@x>", "<m3@x> <m6@x> <m44@x>"),
            msg(23, 6, "re: topic", "<m23@x>", "<m3@x> <m6@x> <m4@x>"),
            msg(44, 4, "re: topic", "<m44@x>", "<m3@x> <m6@x>"),
            msg(
                96,
                7,
                "re: topic",
                "<m96@x>",
                "<m3@x> <m6@x> <m44@x> <m7@x>",
            ),
        ];
        assert_eq!(refs(&messages), "* THREAD (2)(3 6 (4 23)(44 7 96))\r\n");
    }

    #[test]
    fn missing_parents_become_dummies() {
        // 3 and 5 reply to a message not matched: `((3)(5))`.
        let messages = [
            msg(3, 1, "re: gone", "<3@x>", "<gone@x>"),
            msg(5, 2, "re: gone", "<5@x>", "<gone@x>"),
        ];
        assert_eq!(refs(&messages), "* THREAD ((3)(5))\r\n");
        // One reply to a missing message: the dummy goes.
        assert_eq!(refs(&messages[..1]), "* THREAD (3)\r\n");
        // A missing message in the middle of a chain: its child is
        // promoted to its parent.
        let messages = [
            msg(1, 1, "q", "<1@x>", ""),
            msg(2, 3, "re: q", "<2@x>", "<1@x> <missing@x>"),
            msg(3, 2, "re: q", "<3@x>", "<1@x>"),
        ];
        assert_eq!(refs(&messages), "* THREAD (1 (3)(2))\r\n");
        // Two children of a missing message below the top: both promoted,
        // siblings of 1's other child.
        let messages = [
            msg(1, 1, "q", "<1@x>", ""),
            msg(2, 3, "re: q", "<2@x>", "<1@x> <gone@x>"),
            msg(3, 4, "re: q", "<3@x>", "<1@x> <gone@x>"),
            msg(4, 2, "re: q", "<4@x>", "<1@x>"),
        ];
        assert_eq!(refs(&messages), "* THREAD (1 (4)(2)(3))\r\n");
        // Truncated References: the parent comes from an earlier chain.
        let messages = [
            msg(1, 1, "a", "<1@x>", "<r@x> <s@x>"),
            msg(2, 2, "b", "<2@x>", "<s@x>"),
        ];
        assert_eq!(refs(&messages), "* THREAD ((1)(2))\r\n");
    }

    #[test]
    fn loops_in_references_are_not_followed() {
        let messages = [
            msg(1, 1, "a", "<1@x>", "<2@x>"),
            msg(2, 2, "b", "<2@x>", "<1@x>"),
        ];
        // 2 is 1's parent; 2's own link to 1 would close a loop.
        assert_eq!(refs(&messages), "* THREAD (2 1)\r\n");
        // Messages referring to themselves, and a References loop. 3's
        // References make 3 the parent of 1 (step 1A), so 1 cannot be
        // 3's parent (1B); 2 is the last of its own References: no parent.
        let messages = [
            msg(1, 1, "a", "<1@x>", "<1@x>"),
            msg(2, 2, "b", "<2@x>", "<p@x> <q@x> <p@x> <2@x>"),
            msg(3, 3, "c", "<3@x>", "<3@x> <1@x>"),
        ];
        assert_eq!(refs(&messages), "* THREAD (2)(3 1)\r\n");
        // Duplicate Message-IDs: the first message keeps the ID.
        let messages = [
            msg(1, 1, "a", "<d@x>", ""),
            msg(2, 2, "b", "<d@x>", ""),
            msg(3, 3, "c", "<3@x>", "<d@x>"),
        ];
        assert_eq!(refs(&messages), "* THREAD (1 3)(2)\r\n");
    }

    #[test]
    fn threads_with_one_subject_are_gathered() {
        // Two unrelated messages with one subject, neither a reply: a
        // dummy over both.
        let messages = [
            msg(1, 1, "plan", "<1@x>", ""),
            msg(2, 2, "Plan", "<2@x>", ""),
        ];
        assert_eq!(refs(&messages), "* THREAD ((1)(2))\r\n");
        // A reply without references goes under the original.
        let messages = [
            msg(1, 2, "Re: plan", "<1@x>", ""),
            msg(2, 1, "plan", "<2@x>", ""),
            msg(3, 3, "Fwd: plan", "<3@x>", ""),
        ];
        assert_eq!(refs(&messages), "* THREAD (2 (1)(3))\r\n");
        // Two replies, no original: a dummy over both.
        let messages = [
            msg(1, 1, "Re: plan", "<1@x>", ""),
            msg(2, 2, "re: plan", "<2@x>", ""),
        ];
        assert_eq!(refs(&messages), "* THREAD ((1)(2))\r\n");
        // A dummy thread takes in a message with its subject.
        let messages = [
            msg(1, 1, "Re: plan", "<1@x>", "<gone@x>"),
            msg(2, 2, "Re: plan", "<2@x>", "<gone@x>"),
            msg(3, 3, "plan", "<3@x>", ""),
        ];
        assert_eq!(refs(&messages), "* THREAD ((1)(2)(3))\r\n");
        // Two dummy threads with one subject become one.
        let messages = [
            msg(1, 1, "Re: plan", "<1@x>", "<g1@x>"),
            msg(2, 2, "Re: plan", "<2@x>", "<g1@x>"),
            msg(3, 3, "Re: plan", "<3@x>", "<g2@x>"),
            msg(4, 4, "Re: plan", "<4@x>", "<g2@x>"),
        ];
        assert_eq!(refs(&messages), "* THREAD ((1)(2)(3)(4))\r\n");
        // Empty subjects are never gathered.
        let messages = [msg(1, 1, "", "<1@x>", ""), msg(2, 2, "Re:", "<2@x>", "")];
        assert_eq!(refs(&messages), "* THREAD (1)(2)\r\n");
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let n = 20_000u32;
        let messages: Vec<ThreadMessage> = (1..=n)
            .map(|i| {
                let refs = if i > 1 {
                    format!("<{}@x>", i - 1)
                } else {
                    String::new()
                };
                msg(i, 0, "chain", &format!("<{i}@x>"), &refs)
            })
            .collect();
        let out = refs(&messages);
        assert!(out.starts_with("* THREAD (1 2 3 "), "{}", &out[..40]);
        assert!(out.ends_with(" 19999 20000)\r\n"));
    }
}
