//! The messages `spate blast` sends: envelope (sender, recipients spread
//! over the domains) and content (generated to an exact size, or a file's
//! bytes with CRLF line endings). It only builds bytes; it never sends
//! them, and it refuses nothing but an unreadable or empty file.

use std::fmt::Write as _;
use std::rc::Rc;

use super::options::{Content, Domains, SizeDistribution};

/// A small, fast, seeded generator (SplitMix64): message sizes must be
/// reproducible from `--seed`, not secure.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One line of filler, 78 characters and CRLF; no line starts with a dot.
const FILLER_LINE: &[u8] =
    b"The quick brown fox jumps over the lazy dog; spate blast filler text 0123456789\r\n";

/// Builds the envelope and content of each message of one core.
#[derive(Debug)]
pub struct MessageFactory {
    from: String,
    helo: String,
    domains: Domains,
    recipients: u32,
    sizes: Option<SizeDistribution>,
    /// The file's content (CRLF, ending in CRLF) when `--message-file`.
    file: Option<Rc<[u8]>>,
    /// Repeated filler lines, as long as the largest message.
    filler: Vec<u8>,
    /// Distinguishes this run's Message-IDs from another run's.
    run: u64,
    core: usize,
    date: String,
    rng: SplitMix,
}

/// The envelope and content of one message.
#[derive(Debug, Default)]
pub struct Message {
    pub from: String,
    pub recipients: Vec<String>,
    /// The content with CRLF line endings, ending in CRLF, not dot-stuffed.
    pub content: Vec<u8>,
}

/// Why the message file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("cannot read message file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("message file {0} is empty")]
    Empty(String),
}

/// Reads a message file and gives it CRLF line endings and a final CRLF.
pub fn load_message_file(path: &std::path::Path) -> Result<Rc<[u8]>, MessageError> {
    let raw = std::fs::read(path).map_err(|source| MessageError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if raw.is_empty() {
        return Err(MessageError::Empty(path.display().to_string()));
    }
    Ok(normalize_line_endings(&raw).into())
}

/// Bare LF and bare CR become CRLF; a final CRLF is added if missing.
pub fn normalize_line_endings(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl MessageFactory {
    /// `file` is the already loaded `--message-file` when `content` names one.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        from: &str,
        helo: &str,
        domains: Domains,
        recipients: u32,
        content: &Content,
        file: Option<Rc<[u8]>>,
        run: u64,
        core: usize,
        seed: u64,
    ) -> Self {
        let sizes = match content {
            Content::Generated(sizes) => Some(sizes.clone()),
            Content::File(_) => None,
        };
        let largest = sizes.as_ref().map_or(0, |s| s.largest()) as usize;
        let mut filler = Vec::with_capacity(largest + FILLER_LINE.len());
        while filler.len() < largest {
            filler.extend_from_slice(FILLER_LINE);
        }
        MessageFactory {
            from: from.to_owned(),
            helo: helo.to_owned(),
            domains,
            recipients: recipients.max(1),
            sizes,
            file,
            filler,
            run,
            core,
            date: chrono::Utc::now()
                .format("%a, %d %b %Y %H:%M:%S +0000")
                .to_string(),
            rng: SplitMix::new(seed ^ (core as u64).wrapping_mul(0x9E37_79B9)),
        }
    }

    /// Fills `message` (reusing its buffers) with message number `seq`.
    pub fn fill(&mut self, seq: u64, message: &mut Message) {
        message.from.clear();
        message.from.push_str(&self.from);
        let r = u64::from(self.recipients);
        message.recipients.truncate(r as usize);
        message
            .recipients
            .resize_with(r as usize, || String::with_capacity(32));
        for (j, rcpt) in message.recipients.iter_mut().enumerate() {
            let k = seq.wrapping_mul(r).wrapping_add(j as u64);
            rcpt.clear();
            let _ = write!(rcpt, "user{}@", k % 1_000_000);
            self.domains.write(k, rcpt);
        }
        let content = &mut message.content;
        content.clear();
        if let Some(file) = &self.file {
            content.extend_from_slice(file);
            return;
        }
        let size = match &self.sizes {
            Some(sizes) => sizes.pick(self.rng.next_u64()) as usize,
            None => 0,
        };
        let mut headers = String::with_capacity(256);
        let _ = write!(
            headers,
            "From: <{}>\r\nTo: <{}>\r\nSubject: spate blast {}-{seq}\r\nMessage-ID: <{}.{}.{seq}@{}>\r\nDate: {}\r\n\r\n",
            self.from,
            message.recipients.first().map_or("", String::as_str),
            self.core,
            self.run,
            self.core,
            self.helo,
            self.date,
        );
        content.extend_from_slice(headers.as_bytes());
        // The filler makes up the rest, ending with CRLF.
        let body = size.saturating_sub(content.len());
        if body >= 2 {
            content.extend_from_slice(&self.filler[..body - 2]);
            if content.last() == Some(&b'\r') {
                // Never a bare CR before our final CRLF.
                if let Some(last) = content.last_mut() {
                    *last = b'x';
                }
            }
            content.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factory(content: Content, file: Option<Rc<[u8]>>) -> MessageFactory {
        MessageFactory::new(
            "blast@example.test",
            "blast.test",
            Domains::pattern("d{}.test", 2).unwrap(),
            3,
            &content,
            file,
            7,
            0,
            1,
        )
    }

    #[test]
    fn generated_messages_have_the_exact_size_and_spread_recipients() {
        for size in [600u64, 1024, 4096, 4097, 100_000] {
            let mut f = factory(Content::Generated(SizeDistribution::fixed(size)), None);
            let mut m = Message::default();
            f.fill(5, &mut m);
            assert_eq!(m.content.len() as u64, size);
            assert!(m.content.ends_with(b"\r\n"));
            assert!(!m.content.windows(2).any(|w| w == b"\n."));
            // Every LF is preceded by CR.
            for (i, &b) in m.content.iter().enumerate() {
                if b == b'\n' {
                    assert_eq!(m.content[i - 1], b'\r', "size {size} at {i}");
                }
            }
            assert_eq!(
                m.recipients,
                ["user15@d2.test", "user16@d1.test", "user17@d2.test"]
            );
        }
    }

    #[test]
    fn file_content_is_normalised() {
        assert_eq!(
            normalize_line_endings(b"a\nb\r\nc\rd"),
            b"a\r\nb\r\nc\r\nd\r\n"
        );
        let file: Rc<[u8]> = normalize_line_endings(b"Subject: x\n\nhello\n").into();
        let mut f = factory(Content::File("m.eml".into()), Some(file));
        let mut m = Message::default();
        f.fill(0, &mut m);
        assert_eq!(m.content, b"Subject: x\r\n\r\nhello\r\n");
    }
}
