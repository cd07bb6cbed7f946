//! Fuzzing on stable Rust, bounded, on every test run: one test per target of `spate::fuzz`. Each
//! runs every input of its corpus (`tests/fuzz/corpus/<target>/`), then mutates them for a bounded
//! time (`SPATE_FUZZ_SECONDS`, default 10): bit flips, byte inserts and deletes, block copies,
//! splices of two inputs, protocol tokens from the target's dictionary, line-ending games (bare CR
//! and LF, NUL, CRLF swaps), long lines and boundary numbers. It refuses coverage guidance (that
//! needs nightly or AFL: see README "Fuzzing"); what it finds is still a real failure.
//!
//! Every iteration is drawn from (seed, iteration number) alone, so a
//! failure is reported with both and replays without the clock: the seed
//! comes from `SPATE_FUZZ_SEED` or the time. The failing input is written
//! to `target/fuzz-failures/<target>-<seed>-<iteration>.bin` and shown
//! escaped; `SPATE_FUZZ_REPLAY=<that file>` runs it alone.
//!
//! `cargo test --test fuzzing -- --ignored write_seed_corpus` writes the
//! seed corpus from the sessions below (files already there are kept).

use std::any::Any;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spate::fuzz::{target, Target};

/// Longest input the mutator makes: big enough for a multipart message
/// or a pipelined session, small enough to keep iterations fast.
const MAX_INPUT: usize = 24 * 1024;

const DEFAULT_SECONDS: u64 = 10;

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(name)
}

fn failure_dir() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target_dir.join("fuzz-failures")
}

/// The corpus of `name`, sorted by file name.
fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(name);
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a readable corpus entry").path();
            let bytes = fs::read(&path).expect("a readable corpus file");
            let file = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into();
            (file, bytes)
        })
        .collect();
    files.sort();
    files
}

/// `bytes` with everything but printable ASCII escaped, cut at 4 KiB.
fn escaped(bytes: &[u8]) -> String {
    let shown: String = bytes
        .iter()
        .take(4096)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > 4096 {
        format!("{shown}... ({} bytes in all)", bytes.len())
    } else {
        shown
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `input`; on a panic, writes it under target/ and fails the test
/// with `what` (where it came from), the panic and the input.
fn run_one(t: &Target, input: &[u8], what: &str, file_stem: &str) {
    let result = panic::catch_unwind(AssertUnwindSafe(|| (t.run)(input)));
    if let Err(payload) = result {
        save_and_fail(t, input, what, file_stem, &panic_text(&*payload));
    }
}

/// Saves a failing input as `target/fuzz-failures/<target>-<stem>.bin`
/// and fails with the failure, where the input came from, and the input.
fn save_and_fail(t: &Target, input: &[u8], what: &str, file_stem: &str, failure: &str) -> ! {
    let dir = failure_dir();
    let _ = fs::create_dir_all(&dir);
    let path = dir.join(format!("{}-{file_stem}.bin", t.name));
    let saved = match fs::write(&path, input) {
        Ok(()) => format!("saved as {}", path.display()),
        Err(e) => format!("could not be saved to {}: {e}", path.display()),
    };
    let failure: String = failure.chars().take(3000).collect();
    panic!(
        "fuzz target {} failed on {what}: {failure}\ninput ({} bytes, {saved}; replay with \
         SPATE_FUZZ_REPLAY={}):\n{}",
        t.name,
        input.len(),
        path.display(),
        escaped(input)
    );
}

/// SplitMix64: the mutator's generator, one stream per iteration.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, iteration: u64) -> Self {
        let mut r = Rng(seed ^ iteration.wrapping_mul(0xd1b5_4a32_d192_ed03));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `0..n` (`n` at least 1).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Small numbers much more often than large ones.
    fn small(&mut self, max: usize) -> usize {
        let bits = self.below(usize::BITS as usize - max.leading_zeros() as usize + 1);
        self.below((1usize << bits).min(max) + 1)
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Octets that break parsers: line ends, NUL, the top of 7 and 8 bits.
const SPECIAL_BYTES: &[u8] = b"\r\n\0 \t.:<>@[]{}()\"\\+-*$%=\x7f\x80\xff";

/// Numbers at the edges of the types the parsers use.
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"2147483647",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999",
];

/// One mutation of `data`, in place; `pool` is the corpus for splices.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], tokens: &[&[u8]]) {
    let len = data.len();
    let at = rng.below(len + 1);
    match rng.below(16) {
        // Flip a bit.
        0 if len > 0 => data[rng.below(len)] ^= 1 << rng.below(8),
        // Set a byte to a random or a special value.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = if rng.chance(2) {
                rng.next() as u8
            } else {
                SPECIAL_BYTES[rng.below(SPECIAL_BYTES.len())]
            };
        }
        // Insert random or special bytes.
        2 => {
            let n = 1 + rng.small(8);
            let bytes: Vec<u8> = (0..n)
                .map(|_| {
                    if rng.chance(2) {
                        rng.next() as u8
                    } else {
                        SPECIAL_BYTES[rng.below(SPECIAL_BYTES.len())]
                    }
                })
                .collect();
            data.splice(at..at, bytes);
        }
        // Delete a block.
        3 | 4 if len > 0 => {
            let from = at.min(len - 1);
            let n = (1 + rng.small(len)).min(len - from);
            data.drain(from..from + n);
        }
        // Copy a block of itself elsewhere.
        5 if len > 0 => {
            let from = rng.below(len);
            let n = 1 + rng.small(len - from - 1);
            let block = data[from..from + n].to_vec();
            data.splice(at..at, block);
        }
        // Splice: a block of another input, inserted or over the tail.
        6 if !pool.is_empty() => {
            let other = &pool[rng.below(pool.len())];
            if other.is_empty() {
                return;
            }
            let from = rng.below(other.len());
            let n = 1 + rng.small(other.len() - from - 1);
            if rng.chance(2) {
                data.truncate(at);
            }
            data.splice(at..at, other[from..from + n].iter().copied());
        }
        // A protocol token, inserted or overwriting.
        7 | 8 if !tokens.is_empty() => {
            let token = tokens[rng.below(tokens.len())];
            if rng.chance(3) && at + token.len() <= len {
                data[at..at + token.len()].copy_from_slice(token);
            } else {
                data.splice(at..at, token.iter().copied());
            }
        }
        // Line-ending games: one CRLF becomes LF, CR, NUL, LF CR or CR CR LF.
        9 => {
            let lines: Vec<usize> = data
                .windows(2)
                .enumerate()
                .filter(|(_, w)| *w == b"\r\n")
                .map(|(i, _)| i)
                .collect();
            if lines.is_empty() {
                data.splice(at..at, *b"\r\n");
                return;
            }
            let i = lines[rng.below(lines.len())];
            let with: &[u8] = [
                &b"\n"[..],
                b"\r",
                b"\0",
                b"\n\r",
                b"\r\r\n",
                b"\r\n\r\n",
                b"",
            ][rng.below(7)];
            data.splice(i..i + 2, with.iter().copied());
        }
        // A bare CR, LF or NUL somewhere.
        10 => {
            let b = [b'\r', b'\n', 0][rng.below(3)];
            data.insert(at, b);
        }
        // A long line: a run of one octet.
        11 => {
            let n = 64 + rng.small(8192);
            let b = [b'A', b' ', b'.', b'=', b'-', 0xff][rng.below(6)];
            data.splice(at..at, std::iter::repeat_n(b, n));
        }
        // A number at a type's edge, over a run of digits or inserted.
        12 => {
            let number = NUMBERS[rng.below(NUMBERS.len())];
            let digits: Vec<usize> = (0..len).filter(|&i| data[i].is_ascii_digit()).collect();
            if digits.is_empty() || rng.chance(4) {
                data.splice(at..at, number.iter().copied());
                return;
            }
            let start = digits[rng.below(digits.len())];
            let end = (start..len)
                .find(|&i| !data[i].is_ascii_digit())
                .unwrap_or(len);
            data.splice(start..end, number.iter().copied());
        }
        // Flip the case of a letter.
        13 if len > 0 => {
            let i = rng.below(len);
            if data[i].is_ascii_alphabetic() {
                data[i] ^= 0x20;
            }
        }
        // Truncate.
        14 if len > 0 => data.truncate(rng.below(len)),
        // Duplicate a line (pipelining the same command twice).
        _ => {
            let start = data[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let end = data[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(len, |i| at + i + 1);
            let line = data[start..end].to_vec();
            data.splice(end..end, line);
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// The corpus, then seeded mutations until the time is up.
fn fuzz(name: &str) {
    let t = target(name).expect("a target of spate::fuzz");
    if let Ok(replay) = std::env::var("SPATE_FUZZ_REPLAY") {
        // The file is named after its target (as failures are saved), or
        // lies in a directory of that name (a corpus, AFL's output): only
        // that target's test runs it.
        let path = Path::new(&replay);
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
        let in_dir = path.components().any(|c| c.as_os_str() == name);
        if in_dir || file.is_some_and(|f| f.starts_with(&format!("{name}-"))) {
            let input = fs::read(path).unwrap_or_else(|e| panic!("{replay}: {e}"));
            run_one(t, &input, &format!("replayed {replay}"), "replay");
        }
        return;
    }
    let corpus = corpus(name);
    assert!(!corpus.is_empty(), "the corpus of {name} is empty");
    let seconds = env_u64("SPATE_FUZZ_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let seed = env_u64("SPATE_FUZZ_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let only = env_u64("SPATE_FUZZ_ITERATION");
    let run = Arc::new(Run {
        t,
        files: corpus.iter().map(|(file, _)| file.clone()).collect(),
        pool: corpus.into_iter().map(|(_, bytes)| bytes).collect(),
        seed,
        first: only.unwrap_or(0),
        only: only.is_some(),
        deadline: Instant::now() + Duration::from_secs(seconds),
        started: AtomicU64::new(0),
    });
    let worker = {
        let run = Arc::clone(&run);
        thread::spawn(move || run.go())
    };
    // The watchdog: an input still running after HANG is a failure too
    // (a loop that never ends), reported like a panic.
    let mut last = (0, Instant::now());
    while !worker.is_finished() {
        thread::sleep(Duration::from_millis(100));
        let started = run.started.load(Ordering::Relaxed);
        if started != last.0 {
            last = (started, Instant::now());
        } else if started > 0 && last.1.elapsed() >= HANG {
            let (what, stem, input) = run.input(started - 1);
            let failure = format!("still running after {HANG:?}");
            save_and_fail(t, &input, &what, &stem, &failure);
        }
    }
    let (iterations, bytes) = match worker.join() {
        Ok(done) => done,
        Err(payload) => panic::resume_unwind(payload),
    };
    eprintln!(
        "fuzz {name}: {} corpus inputs, then {iterations} mutated inputs ({} KiB) in {seconds} s, \
         seed {seed}",
        run.pool.len(),
        bytes / 1024
    );
}

/// An input that runs longer than this is reported as a hang.
const HANG: Duration = Duration::from_secs(20);

/// One target's run: the corpus, then mutations from `first` on.
struct Run {
    t: &'static Target,
    files: Vec<String>,
    pool: Vec<Vec<u8>>,
    seed: u64,
    first: u64,
    /// Only the iteration `first` (a replay).
    only: bool,
    deadline: Instant,
    /// Inputs started so far, corpus first: the watchdog's view.
    started: AtomicU64,
}

impl Run {
    /// Input number `k` (from 0, corpus first): where it came from, the
    /// file stem to save it under, and its bytes.
    fn input(&self, k: u64) -> (String, String, Vec<u8>) {
        let k = k as usize;
        if let Some(bytes) = self.pool.get(k) {
            let file = &self.files[k];
            return (
                format!("corpus file {file}"),
                format!("corpus-{file}"),
                bytes.clone(),
            );
        }
        let iteration = self.first + (k - self.pool.len()) as u64;
        (
            format!("seed {} iteration {iteration}", self.seed),
            format!("{}-{iteration}", self.seed),
            draw(self.seed, iteration, &self.pool, self.t.tokens),
        )
    }

    /// Runs the corpus, then mutated inputs until the deadline (checked
    /// every 16 inputs); returns how many mutated inputs ran, and their bytes.
    fn go(&self) -> (u64, usize) {
        let corpus = self.pool.len() as u64;
        let mut k = 0u64;
        let mut bytes = 0usize;
        loop {
            let mutated = k.saturating_sub(corpus);
            let done = if self.only {
                mutated == 1
            } else {
                mutated > 0 && mutated.is_multiple_of(16) && Instant::now() >= self.deadline
            };
            if done {
                return (mutated, bytes);
            }
            self.started.store(k + 1, Ordering::Relaxed);
            let (what, stem, input) = self.input(k);
            if k >= corpus {
                bytes += input.len();
            }
            run_one(self.t, &input, &what, &stem);
            k += 1;
        }
    }
}

/// Mutated input number `iteration` of a run with `seed`: a corpus input
/// with one to eight mutations, cut at [`MAX_INPUT`].
fn draw(seed: u64, iteration: u64, pool: &[Vec<u8>], tokens: &[&[u8]]) -> Vec<u8> {
    let mut rng = Rng::new(seed, iteration);
    let mut input = pool[rng.below(pool.len())].clone();
    for _ in 0..1 + rng.small(7) {
        mutate(&mut rng, &mut input, pool, tokens);
    }
    input.truncate(MAX_INPUT);
    input
}

#[test]
fn fuzz_smtp_command() {
    fuzz("smtp_command");
}

#[test]
fn fuzz_smtp_session() {
    fuzz("smtp_session");
}

#[test]
fn fuzz_imap_command() {
    fuzz("imap_command");
}

#[test]
fn fuzz_pop3_session() {
    fuzz("pop3_session");
}

#[test]
fn fuzz_spool_record() {
    fuzz("spool_record");
}

#[test]
fn fuzz_mime_message() {
    fuzz("mime_message");
}

#[test]
fn every_target_has_a_test_here() {
    let source = include_str!("fuzzing.rs");
    for t in spate::fuzz::TARGETS {
        assert!(
            source.contains(&format!("fn fuzz_{}()", t.name)),
            "no test runs fuzz target {}",
            t.name
        );
        assert!(corpus_dir(t.name).is_dir(), "no corpus for {}", t.name);
    }
}

#[test]
fn mutations_stay_within_bounds_and_replay() {
    let pool = vec![b"EHLO x\r\nMAIL FROM:<a@b>\r\n".to_vec(), Vec::new()];
    let tokens = spate::fuzz::smtp::TOKENS;
    for iteration in 0..2000 {
        let input = draw(7, iteration, &pool, tokens);
        assert!(input.len() <= MAX_INPUT);
        assert_eq!(
            input,
            draw(7, iteration, &pool, tokens),
            "iteration {iteration} does not replay"
        );
    }
}

// ------------------------------------------------------------ seed corpus

/// A session prefix for `smtp_session`: limits, peer bits, chunk size
/// (see `spate::fuzz::smtp::smtp_session`). `bits`: 0x80 normalize bare
/// line endings, 0x40 STARTTLS offered, 0x20 submission, 0x10 plaintext
/// AUTH anywhere, 0x02 literals allowed, 0x01 may relay.
fn smtp_prefix(bits: u8, peer: u8, chunk: u8) -> Vec<u8> {
    vec![250, 200, 0x4b, bits, peer, chunk]
}

fn smtp_sessions() -> Vec<(&'static str, Vec<u8>)> {
    let with = |prefix: Vec<u8>, body: &str| {
        let mut v = prefix;
        v.extend_from_slice(body.as_bytes());
        v
    };
    vec![
        (
            "plain-data",
            with(
                smtp_prefix(0x40, 0, 255),
                "EHLO client.example\r\nMAIL FROM:<alice@remote.example>\r\n\
                 RCPT TO:<bob@local.test>\r\nDATA\r\nSubject: hi\r\n\r\nHello\r\n..dots\r\n.\r\nQUIT\r\n",
            ),
        ),
        (
            "pipelined-two-messages",
            with(
                smtp_prefix(0x00, 0, 3),
                "EHLO c.example\r\nMAIL FROM:<a@remote.example> SIZE=40 BODY=8BITMIME\r\n\
                 RCPT TO:<b@local.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@local.test\r\n\
                 RCPT TO:<unknown@local.test>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n\
                 Subject: one\r\n\r\n\u{e9}t\u{e9}\r\n.\r\nMAIL FROM:<> RET=HDRS ENVID=q+2B1\r\n\
                 RCPT TO:<Postmaster>\r\nDATA\r\nx\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n",
            ),
        ),
        (
            "bdat-chunks",
            with(
                smtp_prefix(0x00, 0, 17),
                "EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<b@local.test>\r\n\
                 BDAT 12\r\nSubject: x\r\nBDAT 9 LAST\r\n\r\nbody\r\n\r\nBDAT 3\r\nMAIL FROM:<a@b.example>\r\n\
                 RCPT TO:<c@local.test>\r\nBDAT 0 LAST\r\nQUIT\r\n",
            ),
        ),
        (
            "auth-plain-submission",
            with(
                smtp_prefix(0x34, 0x10, 64),
                "EHLO c.example\r\nMAIL FROM:<tim@local.test>\r\nAUTH PLAIN AHRpbQByaWdodA==\r\n\
                 MAIL FROM:<tim@local.test>\r\nRCPT TO:<friend@remote.example>\r\nDATA\r\nhi\r\n.\r\n\
                 AUTH LOGIN\r\ndGlt\r\ncmlnaHQ=\r\nQUIT\r\n",
            ),
        ),
        (
            "auth-login-wrong-and-cancel",
            with(
                smtp_prefix(0x30, 0x10, 5),
                "EHLO c.example\r\nAUTH LOGIN\r\ndGlt\r\nd3Jvbmc=\r\nAUTH PLAIN\r\n*\r\n\
                 AUTH PLAIN AHRpbQBkb3du\r\nAUTH CRAM-MD5\r\nAUTH PLAIN !!!\r\nQUIT\r\n",
            ),
        ),
        (
            "starttls-pipelined",
            with(
                smtp_prefix(0x40, 0, 255),
                "EHLO c.example\r\nSTARTTLS\r\nMAIL FROM:<smuggled@remote.example>\r\n",
            ),
        ),
        (
            "starttls-then-mail",
            with(
                smtp_prefix(0x40, 0, 9),
                "EHLO c.example\r\nSTARTTLS\r\n",
            ),
        ),
        (
            "smuggling-bare-lf",
            with(
                smtp_prefix(0x00, 0, 255),
                "EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<b@local.test>\r\nDATA\r\n\
                 Subject: x\r\n\r\nbody\n.\nMAIL FROM:<evil@remote.example>\n.\r\nQUIT\r\n",
            ),
        ),
        (
            "normalize-bare-endings",
            with(
                smtp_prefix(0x80, 0, 255),
                "HELO c.example\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<b@LOCAL.TEST.>\r\nDATA\r\n\
                 line\rone\nline two\r\n.\r\nQUIT\r\n",
            ),
        ),
        (
            "helo-with-parameters",
            with(
                smtp_prefix(0x00, 0, 255),
                "HELO c.example\r\nMAIL FROM:<a@remote.example> SIZE=10\r\nMAIL FROM:<a@remote.example>\r\n\
                 RCPT TO:<b@local.test> NOTIFY=NEVER\r\nRCPT TO:<\"quoted @ local\"@local.test>\r\nQUIT\r\n",
            ),
        ),
        (
            "relay-attempts",
            with(
                smtp_prefix(0x00, 0, 255),
                "EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<v@[127.0.0.9]>\r\n\
                 RCPT TO:<v%remote.example@local.test>\r\nRCPT TO:<@local.test:v@remote.example>\r\n\
                 RCPT TO:<remote.example!v@local.test>\r\nRCPT TO:<v@remote.example.>\r\n\
                 RCPT TO:<\"v@remote.example\"@local.test>\r\nRCPT TO:<gone@local.test>\r\n\
                 RCPT TO:<full@local.test>\r\nRCPT TO:<user@例子.测试> \r\nQUIT\r\n",
            ),
        ),
        (
            "smtputf8-and-literals",
            with(
                smtp_prefix(0x03, 0, 31),
                "EHLO [192.0.2.1]\r\nMAIL FROM:<josé@exämple.test> SMTPUTF8\r\n\
                 RCPT TO:<用户@例子.测试>\r\nRCPT TO:<x@[IPv6:2001:db8::1]>\r\nDATA\r\nSubject: é\r\n\r\n.\r\n",
            ),
        ),
        (
            "errors-and-long-line",
            with(
                vec![0, 0, 0x0b, 0, 0, 255],
                &format!(
                    "EHLO\r\nFOO\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@local.test>\r\nDATA\r\n{}\r\nVRFY x\r\n\
                     EXPN y\r\nHELP\r\nDATA x\r\nMAIL FROM:a@b\r\nQUIT\r\n",
                    "X".repeat(3000)
                ),
            ),
        ),
        (
            "message-too-big-and-hops",
            with(
                vec![250, 0, 0x4b, 0, 2, 255],
                "EHLO c.example\r\nMAIL FROM:<a@remote.example> SIZE=99999999999999999999999\r\n\
                 MAIL FROM:<a@remote.example>\r\nRCPT TO:<b@local.test>\r\nDATA\r\nReceived: a\r\n\
                 Received: b\r\nReceived: c\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n.\r\nQUIT\r\n",
            ),
        ),
    ]
}

fn imap_sessions() -> Vec<(&'static str, Vec<u8>)> {
    // Prefix: line limit, literal limit, non-sync literal limit, chunk size.
    let with = |prefix: [u8; 4], body: &[u8]| {
        let mut v = prefix.to_vec();
        v.extend_from_slice(body);
        v
    };
    let roomy = [250, 250, 250, 255];
    vec![
        (
            "login-select-fetch",
            with(
                roomy,
                b"a1 CAPABILITY\r\na2 LOGIN tim \"pass word\"\r\na3 SELECT INBOX\r\n\
                  a4 UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT)])\r\n\
                  a5 FETCH 2,4:6 (BODY[1.2.MIME] BODY[TEXT]<0.1024> BINARY.PEEK[1] BINARY.SIZE[2] ENVELOPE)\r\n\
                  a6 LOGOUT\r\n",
            ),
        ),
        (
            "literals",
            with(
                roomy,
                b"a1 LOGIN {3}\r\ntim {8}\r\npassword\r\na2 LOGIN {3+}\r\ntim {4+}\r\npass\r\n\
                  a3 CREATE {5}\r\nA\"b\\c\r\na4 APPEND INBOX {12}\r\nSubject: x\r\n\r\n",
            ),
        ),
        (
            "append-forms",
            with(
                roomy,
                b"a1 APPEND Drafts (\\Draft \\Seen $Label) \" 5-Mar-2024 09:08:07 +0100\" {23}\r\n\
                  Subject: d\r\n\r\nbody\r\n\r\na2 APPEND INBOX ~{4}\r\na\0b\n\r\n\
                  a3 APPEND INBOX {9999999999}\r\na4 APPEND INBOX {2+}\r\nab\r\n",
            ),
        ),
        (
            "search-and-sort",
            with(
                roomy,
                b"s1 SEARCH CHARSET UTF-8 OR FROM alice (SUBJECT \"re: x\" UNSEEN) NOT DELETED\r\n\
                  s2 UID SEARCH RETURN (MIN MAX COUNT SAVE) SINCE 1-Feb-2024 BEFORE 01-Jan-2025 LARGER 10\r\n\
                  s3 SEARCH HEADER Message-ID {5}\r\n<a@b>\r\ns4 SEARCH UID $ KEYWORD $Junk MODSEQ \"/flags/\\\\seen\" all 3\r\n\
                  s5 SORT (REVERSE DATE SUBJECT) UTF-8 ALL\r\ns6 UID SORT (ARRIVAL) US-ASCII 1:* TEXT x\r\n",
            ),
        ),
        (
            "store-copy-move-expunge",
            with(
                roomy,
                b"c1 STORE 1:3 +FLAGS.SILENT (\\Deleted)\r\nc2 UID STORE 4 (UNCHANGEDSINCE 5) -FLAGS \\Seen $x\r\n\
                  c3 COPY 1:* Archive\r\nc4 UID MOVE 7,9 \"Sent Items\"\r\nc5 UID EXPUNGE 1:5\r\nc6 EXPUNGE\r\n\
                  c7 CLOSE\r\nc8 UNSELECT\r\nc9 CHECK\r\n",
            ),
        ),
        (
            "list-and-status",
            with(
                roomy,
                b"l1 LIST \"\" *\r\nl2 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"INBOX\" \"Sent/%\") RETURN (CHILDREN SPECIAL-USE)\r\n\
                  l3 LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN UIDNEXT SIZE))\r\nl4 LSUB \"\" \"*\"\r\n\
                  l5 STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED HIGHESTMODSEQ)\r\n\
                  l6 SUBSCRIBE &AOk-t&AOk-\r\nl7 RENAME a b\r\nl8 DELETE b\r\nl9 NAMESPACE\r\n",
            ),
        ),
        (
            "auth-idle-id-enable",
            with(
                roomy,
                b"x1 AUTHENTICATE PLAIN AHRpbQB0YW5zdGFhZg==\r\nx2 AUTHENTICATE PLAIN\r\nAHRpbQB0YW5zdGFhZg==\r\n\
                  x3 ID (\"name\" \"mutt\" \"version\" NIL)\r\nx4 ID NIL\r\nx5 ENABLE UTF8=ACCEPT CONDSTORE\r\n\
                  x6 SELECT INBOX (CONDSTORE)\r\nx7 IDLE\r\nDONE\r\nx8 EXAMINE inbox\r\nx9 NOOP\r\n",
            ),
        ),
        (
            "limits-small",
            with(
                [4, 2, 1, 3],
                b"a1 LOGIN {100}\r\na2 APPEND INBOX {20+}\r\n01234567890123456789\r\n\
                  a3 NOOP this line is far too long for the limit\r\na4 LOGIN x y\r\n",
            ),
        ),
        (
            "broken",
            with(
                roomy,
                b"\r\n* NOOP\r\n+ x\r\na1\r\na2 FOO\r\na3 FETCH 0 FLAGS\r\na4 FETCH 1:4294967296 FLAGS\r\n\
                  a5 LOGIN \"unterminated\r\na6 SEARCH (((((((((((((((((((((((((((((((((ALL\r\n\
                  a7 LOGIN \"a\\x\" b\r\na8 SELECT \"\0\"\r\na9 UID FETCH 1 BODY[1.]\r\n",
            ),
        ),
        (
            "lf-only",
            with(roomy, b"a1 LOGIN tim pass\na2 SELECT INBOX\na3 FETCH 1 ALL\na4 LOGOUT\n"),
        ),
    ]
}

fn pop3_sessions() -> Vec<(&'static str, Vec<u8>)> {
    // Prefix: line limit, auth line limit / driver faults, bits (0x0f
    // errors, 0x10 STLS, 0x20 TLS, 0x40 plaintext allowed), chunk size.
    let with = |prefix: [u8; 4], body: &[u8]| {
        let mut v = prefix.to_vec();
        v.extend_from_slice(body);
        v
    };
    vec![
        (
            "user-pass-retr-quit",
            with(
                [250, 200, 0x4f, 255],
                b"CAPA\r\nUSER tim\r\nPASS tanstaaf\r\nSTAT\r\nLIST\r\nUIDL\r\nLIST 2\r\nUIDL 3\r\n\
                  RETR 1\r\nTOP 2 1\r\nDELE 1\r\nDELE 1\r\nRETR 1\r\nRSET\r\nDELE 4\r\nNOOP\r\nQUIT\r\n",
            ),
        ),
        (
            "sasl-plain",
            with(
                [250, 200, 0x4f, 7],
                b"AUTH\r\nAUTH PLAIN AHRpbQB0YW5zdGFhZg==\r\nSTAT\r\nQUIT\r\n",
            ),
        ),
        (
            "sasl-plain-challenge",
            with(
                [250, 200, 0x4f, 1],
                b"AUTH PLAIN\r\nAHRpbQB0YW5zdGFhZg==\r\nLIST\r\nQUIT\r\n",
            ),
        ),
        (
            "stls",
            with(
                [250, 200, 0x1f, 255],
                b"CAPA\r\nUSER tim\r\nSTLS\r\nUSER tim\r\nPASS tanstaaf\r\n",
            ),
        ),
        (
            "wrong-password-and-errors",
            with(
                [250, 200, 0x43, 255],
                b"USER tim\r\nPASS nope\r\nPASS tanstaaf\r\nFOO\r\nAUTH PLAIN !!!\r\nAUTH PLAIN\r\n*\r\n\
                  RETR 1\r\nUSER\r\nQUIT\r\n",
            ),
        ),
        (
            "faults",
            with(
                [250, 0x0f, 0x4f, 255],
                b"USER tim\r\nPASS tanstaaf\r\nUSER tim\r\nPASS tanstaaf\r\nUSER tim\r\nPASS tanstaaf\r\n\
                  DELE 2\r\nQUIT\r\n",
            ),
        ),
        (
            "numbers",
            with(
                [250, 200, 0x4f, 255],
                b"USER tim\r\nPASS tanstaaf\r\nLIST 0\r\nLIST 4294967295\r\nLIST 4294967296\r\n\
                  TOP 1 4294967295\r\nTOP 1 -1\r\nRETR 99\r\nUIDL 1 2\r\nQUIT\r\n",
            ),
        ),
        (
            "long-lines-lf",
            with(
                [20, 2, 0x4f, 255],
                b"USER a-user-name-longer-than-the-limit\nUSER tim\nPASS tanstaaf\nSTAT\nQUIT\n",
            ),
        ),
        (
            "pipelined-retr",
            with(
                [250, 200, 0x4f, 3],
                b"USER tim\r\nPASS tanstaaf\r\nRETR 1\r\nRETR 2\r\nRETR 3\r\nRETR 4\r\nTOP 3 0\r\nQUIT\r\n",
            ),
        ),
        (
            "message-with-dots",
            with([0, 0, 0, 0], b".\r\n..\r\n.x\n\r.\rlast"),
        ),
    ]
}

fn mime_messages() -> Vec<(&'static str, Vec<u8>)> {
    let b = |s: &str| s.as_bytes().to_vec();
    vec![
        ("plain", b("From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: hi\r\n\
            Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <1@example.test>\r\n\r\nHello\r\n")),
        ("multipart-mixed", b("From: a@b.example\r\nSubject: parts\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\npreamble\r\n--outer\r\n\
            Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
            caf=C3=A9 =\r\nsoft break\r\n--outer\r\nContent-Type: application/octet-stream; name=\"x.bin\"\r\n\
            Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"x.bin\"\r\n\r\n\
            AAECAwQFBgcICQ==\r\n--outer--\r\nepilogue\r\n")),
        ("nested-alternative", b("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\
            Content-Type: multipart/alternative; boundary=ab\r\n\r\n--ab\r\nContent-Type: text/plain\r\n\r\n\
            text\r\n--ab\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--ab--\r\n--a\r\n\
            Content-Type: image/png\r\nContent-ID: <i@x>\r\nContent-Language: en, fr\r\n\r\n\x01\r\n--a--\r\n")),
        ("rfc822-attachment", b("Subject: fwd\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\n\r\n\
            see attached\r\n--m\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d.example\r\nSubject: inner\r\n\
            Content-Type: multipart/related; boundary=r\r\n\r\n--r\r\n\r\ninner body\r\n--r--\r\n--m--\r\n")),
        ("digest", b("Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\n1\r\n\
            --d\r\nContent-Type: text/plain\r\n\r\ntwo\r\n--d--\r\n")),
        ("broken-boundaries", b("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--bb\r\nnot a part\r\n\
            --b \t\r\nx: y\r\n\r\nfirst\r\n--b\r\n--b--x\r\nsecond, never closed\r\n")),
        ("no-boundary-param", b("Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\ny\r\n--x--\r\n")),
        ("lf-only-8bit", b("From: =?utf-8?B?w6k=?= <e@x.test>\nSubject: \u{e9}t\u{e9}\n\
            Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\n\
            caf\u{e9}\n")),
        ("rfc2231-and-groups", b("To: undisclosed-recipients:;, friends: a@b.example, \"C, D\" <c@d.example>;\r\n\
            Cc: (comment) e@f.example\r\nContent-Type: application/x; title*0*=us-ascii'en'This%20is; \
            title*1=\" long\"\r\nContent-Disposition: inline\r\n\r\nx")),
        ("header-only", b("Subject: no body\r\nFrom: x@y.example")),
        ("encoded-rfc822", b("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n\
            U3ViamVjdDogeA0KDQp5DQo=\r\n")),
        ("folded-headers", b("Subject: a\r\n very\r\n\tlong subject\r\nContent-Type: text/plain;\r\n \
            charset=\"us-ascii\";\r\n format=flowed\r\n\r\nbody\r\n")),
    ]
}

fn write_files(name: &str, files: Vec<(&str, Vec<u8>)>) {
    let dir = corpus_dir(name);
    fs::create_dir_all(&dir).expect("corpus directory");
    for (file, bytes) in files {
        let path = dir.join(file);
        if !path.exists() {
            fs::write(&path, bytes).expect("corpus file");
        }
    }
}

#[test]
#[ignore = "writes the seed corpus into tests/fuzz/corpus/"]
fn write_seed_corpus() {
    let smtp = smtp_sessions();
    let commands: Vec<(&str, Vec<u8>)> = smtp
        .iter()
        .map(|(name, bytes)| (*name, bytes[spate::fuzz::smtp::SESSION_PREFIX..].to_vec()))
        .collect();
    write_files("smtp_command", commands);
    write_files("smtp_session", smtp);
    write_files("imap_command", imap_sessions());
    write_files("pop3_session", pop3_sessions());
    write_files("mime_message", mime_messages());
    let segments = spate::fuzz::spool::sample_segments();
    write_files(
        "spool_record",
        segments.iter().map(|(n, b)| (*n, b.clone())).collect(),
    );
}
