//! The command line: `spate serve`, `spate queue ...`, `spate user ...`,
//! `spate tune check`, `spate debug panic` and the load tools `spate blast`
//! and `spate sink`. It parses arguments, wires the pieces together and
//! reports; it holds no protocol or storage logic.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use socket2::{Domain, Socket, Type};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::sd_notify::State;
use crate::session::limits::{ConnectionLimits, PerAddress};
use crate::shard::{self, ShardPlan, ShardReport};

#[derive(Debug, Parser)]
#[command(
    name = "spate",
    version,
    about = "Thread-per-core SMTP relay with a durable spool"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (on the embedded default configuration without --config).
    Serve {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Look at the mail queue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Manage the users of the local mailbox tier (edits `[local] users_file`).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Compare this host with the bare-metal tuning kit (tuning/).
    Tune {
        #[command(subcommand)]
        action: TuneAction,
    },
    /// Fault injection for testing the running server's crash policy.
    Debug {
        #[command(subcommand)]
        action: DebugAction,
    },
    /// Check a configuration file and print what it means.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// SMTP load generator (a modern smtp-source): send messages over many
    /// connections, then report rates, errors by reply code and latency
    /// percentiles.
    Blast(Box<BlastArgs>),
    /// SMTP sink (a modern smtp-sink): accept and discard mail (or keep it,
    /// or count it per domain), with injected failures and delays. Prints
    /// its counters on exit and on SIGUSR1.
    Sink(Box<SinkArgs>),
}

/// `spate blast` flags.
#[derive(Debug, clap::Args)]
pub struct BlastArgs {
    /// The server, ip:port.
    #[arg(long, value_name = "ADDR")]
    pub to: SocketAddr,
    /// Connections open at once (spread over the cores).
    #[arg(short = 'c', long, default_value_t = 10, value_name = "N")]
    pub connections: usize,
    /// Messages to send in all [default: 1000 unless --duration].
    #[arg(short = 'n', long, value_name = "N", conflicts_with = "duration")]
    pub messages: Option<u64>,
    /// Send for this long instead of a number of messages (10s, 2m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Messages per connection before QUIT and a new connection; 0 = no limit.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub per_connection: u64,
    /// Recipients per message.
    #[arg(short = 'r', long, default_value_t = 1, value_name = "N")]
    pub recipients: u32,
    /// Recipient domains, spread round-robin over the recipients.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "LIST",
        conflicts_with = "domain_pattern"
    )]
    pub domains: Vec<String>,
    /// Recipient domains from a pattern: {} becomes 1..=--domain-count.
    #[arg(long, value_name = "PATTERN")]
    pub domain_pattern: Option<String>,
    /// How many domains --domain-pattern makes.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub domain_count: u64,
    /// Message size, headers included (4096, 4k, 1m).
    #[arg(short = 's', long, default_value = "4k", value_name = "SIZE", value_parser = parse_size)]
    pub size: u64,
    /// Message sizes drawn by weight: 1k:60,10k:30,100k:10.
    #[arg(long, value_name = "DIST", conflicts_with_all = ["size", "message_file"], value_parser = parse_size_dist)]
    pub size_dist: Option<crate::blast::options::SizeDistribution>,
    /// Send this file's content as every message (line endings become CRLF).
    #[arg(long, value_name = "FILE", conflicts_with = "size")]
    pub message_file: Option<PathBuf>,
    /// At most this many messages per second, all connections together
    /// (500, 500/s, 30000/m).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Envelope sender.
    #[arg(long, default_value = "blast@example.test", value_name = "ADDR")]
    pub from: String,
    /// Our name in EHLO.
    #[arg(long, default_value = "blast.example.test", value_name = "NAME")]
    pub helo: String,
    /// Require STARTTLS (any certificate is accepted).
    #[arg(long)]
    pub starttls: bool,
    /// AUTH PLAIN with these credentials after EHLO (and TLS).
    #[arg(long, value_name = "USER:PASS", value_parser = parse_credentials)]
    pub auth: Option<(String, String)>,
    /// Never pipeline, even when the server offers PIPELINING.
    #[arg(long)]
    pub no_pipelining: bool,
    /// Use DATA, even when the server offers CHUNKING (BDAT).
    #[arg(long)]
    pub no_bdat: bool,
    /// Executors (one per core, pinned); 0 = one per CPU.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub cores: usize,
    /// Longest wait for a connection, a reply or a write.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Seed of the size distribution's draws.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write the transaction latency's HdrHistogram percentile
    /// distribution (milliseconds) to FILE, for plotting.
    #[arg(long, value_name = "FILE")]
    pub histogram: Option<PathBuf>,
}

/// `spate sink` flags.
#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// Address to listen on, ip:port (port 0: a free one, printed); repeatable.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2525")]
    pub listen: Vec<SocketAddr>,
    /// Executors (one per core, pinned); 0 = one per CPU.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub cores: usize,
    /// Our name in the greeting and EHLO.
    #[arg(long, default_value = "sink.test", value_name = "NAME")]
    pub hostname: String,
    /// Write every accepted message to DIR (client and envelope as
    /// X-Sink-Peer/Helo/From/To lines).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Count accepted recipients per domain.
    #[arg(long)]
    pub count_domains: bool,
    /// Fail a fraction of a stage's commands: STAGE:CODE:FRACTION, STAGE
    /// one of connect, helo, mail, rcpt, data, dot; CODE 4xx, 5xx or a
    /// code; FRACTION 0.1 or 10% (every 10th fails). Repeatable.
    #[arg(long, value_name = "RULE", value_parser = parse_fault)]
    pub fail: Vec<crate::sink::fault::Fault>,
    /// Answer a fraction of a stage's commands with a reply text of your
    /// own: STAGE:FRACTION:TEXT, e.g. 'rcpt:0.3:421 4.7.0 [TSS04]
    /// Messages temporarily deferred' (STAGE as for --fail; ehlo and
    /// end-of-data also name helo and dot). Repeatable.
    #[arg(long, value_name = "RULE", value_parser = parse_reply)]
    pub reply: Vec<crate::sink::fault::Fault>,
    /// Wait before replying at a stage: STAGE:DURATION. Repeatable.
    #[arg(long, value_name = "STAGE:DURATION", value_parser = parse_delay)]
    pub delay: Vec<(crate::sink::fault::Stage, std::time::Duration)>,
    /// Wait before the greeting.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub banner_delay: Option<std::time::Duration>,
    /// Wait before every reply.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub tarpit: Option<std::time::Duration>,
    /// Refuse (421) a client address's connections beyond N open at once.
    #[arg(long, value_name = "N")]
    pub max_per_ip: Option<usize>,
    /// Stop after accepting N messages (later ones get 421).
    #[arg(long, value_name = "N")]
    pub stop_after: Option<u64>,
    /// Largest message, advertised with SIZE; 0 = no limit (64 MiB with --dir).
    #[arg(long, default_value = "0", value_name = "SIZE", value_parser = parse_size)]
    pub max_size: u64,
    /// Certificate (PEM) to offer STARTTLS; needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::blast::options::parse_duration(s).map_err(|e| e.to_string())
}
fn parse_size(s: &str) -> Result<u64, String> {
    crate::blast::options::parse_size(s).map_err(|e| e.to_string())
}
fn parse_size_dist(s: &str) -> Result<crate::blast::options::SizeDistribution, String> {
    crate::blast::options::SizeDistribution::parse(s).map_err(|e| e.to_string())
}
fn parse_rate(s: &str) -> Result<f64, String> {
    crate::blast::options::parse_rate(s).map_err(|e| e.to_string())
}
fn parse_credentials(s: &str) -> Result<(String, String), String> {
    crate::blast::options::parse_credentials(s).map_err(|e| e.to_string())
}
fn parse_fault(s: &str) -> Result<crate::sink::fault::Fault, String> {
    crate::sink::fault::Fault::parse(s).map_err(|e| e.to_string())
}
fn parse_reply(s: &str) -> Result<crate::sink::fault::Fault, String> {
    crate::sink::fault::Fault::parse_reply(s).map_err(|e| e.to_string())
}
fn parse_delay(s: &str) -> Result<(crate::sink::fault::Stage, std::time::Duration), String> {
    crate::sink::fault::parse_delay(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// List queued messages (reads the spool; the server may be running or not).
    List {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Retry every deferred message now (asks the running server).
    Flush {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Retry the selected waiting messages now (asks the running server).
    Retry {
        #[command(flatten)]
        selection: SelectionArgs,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Drop queued messages without notice: one by ID, or every one the
    /// options select (asks the running server).
    Delete {
        #[command(flatten)]
        selection: SelectionArgs,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Return queued messages to their senders now: one by ID, or every
    /// one the options select (asks the running server).
    Bounce {
        #[command(flatten)]
        selection: SelectionArgs,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// The queue by state, recipient domain, tenant, site and egress
    /// source (asks the running server; no message is read).
    Summary {
        /// The JSON the HTTP API answers.
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Suspensions, throttles and the active sites' limits, as JSON (asks
    /// the running server).
    Shaping {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Stop sending to a destination site for a while: SITE as the
    /// server names it (`mx:HOST[,HOST...]` or `[HOST]:PORT`, see
    /// `suspensions` and the log), with `@SOURCE` for one egress source
    /// only (without it, every source); or a recipient domain
    /// (`domain:NAME`), or an egress source at every site (`*@SOURCE`).
    /// Its mail waits, uncounted.
    Suspend {
        site: crate::queue::DestinationKey,
        /// How long, e.g. `30m`, `2h`.
        #[arg(long = "for", value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// End a site's suspension; its held mail is due at once.
    Resume {
        site: crate::queue::DestinationKey,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List the suspended sites, why and for how long.
    Suspensions {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Which messages `retry`, `delete` and `bounce` act on.
#[derive(Debug, clap::Args)]
pub struct SelectionArgs {
    /// One message, by queue id.
    id: Option<crate::spool::SpoolId>,
    /// Messages with a pending recipient in this domain.
    #[arg(long)]
    domain: Option<String>,
    /// Messages of this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Messages from this sender (`""` for the null sender).
    #[arg(long)]
    sender: Option<String>,
    /// Every queued message (no other option needed).
    #[arg(long)]
    all: bool,
}

impl SelectionArgs {
    fn selection(self) -> anyhow::Result<crate::control::Selection> {
        let selection = crate::control::Selection {
            id: self.id,
            domain: self.domain,
            tenant: self.tenant,
            sender: self.sender,
            all: self.all,
        };
        if selection.is_empty() {
            bail!("say which messages: an ID, --domain, --tenant, --sender or --all");
        }
        Ok(selection)
    }
}

#[derive(Debug, Subcommand)]
pub enum DebugAction {
    /// The crash drill: make shard N of the running server panic, as a bug
    /// would. spate then exits with status 70 and the service manager
    /// restarts it (Restart=on-failure); acknowledged mail stays in the
    /// spool, sessions open on any shard are cut. Asks over the control
    /// socket (root or the server's user only).
    Panic {
        /// The shard (0 to cores-1).
        shard: usize,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TuneAction {
    /// Read the running system and print each setting that differs from
    /// the recommendations (kernel settings, limits, CPU governor, the
    /// spool's filesystem and disk). Changes nothing.
    Check {
        /// The configuration whose spool_dir is checked.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Read /proc and /sys below this directory instead of /.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Exit with status 1 when a setting differs.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a user. The password is asked twice on a terminal, or read from
    /// the first line of standard input otherwise. Stored as ARGON2ID.
    Add {
        name: crate::account::UserName,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Change a user's password (asked like for `add`); the rest of the
    /// user's line is kept.
    Passwd {
        name: crate::account::UserName,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Remove a user from the users file (the mailbox is left in place).
    Del {
        name: crate::account::UserName,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List the users, one per line.
    List {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    // `serve` logs as its `[log]` says; the other commands as by default.
    let command = match cli.command {
        Command::Serve { config: path } => {
            let config = load(path.as_ref())?;
            crate::logging::init(&config.log)?;
            return serve(config, path);
        }
        other => other,
    };
    crate::logging::init(&crate::config::Log::default())?;
    match command {
        Command::Serve { .. } => bail!("serve is handled above"),
        Command::Queue {
            action: QueueAction::List { config, json },
        } => queue_list(&load(config.as_ref())?, json),
        Command::Queue {
            action: QueueAction::Flush { config },
        } => control(&load(config.as_ref())?, crate::control::Request::Flush),
        Command::Queue {
            action: QueueAction::Retry { selection, config },
        } => control(
            &load(config.as_ref())?,
            crate::control::Request::Retry(selection.selection()?),
        ),
        Command::Queue {
            action: QueueAction::Delete { selection, config },
        } => control(
            &load(config.as_ref())?,
            crate::control::Request::Delete(selection.selection()?),
        ),
        Command::Queue {
            action: QueueAction::Bounce { selection, config },
        } => control(
            &load(config.as_ref())?,
            crate::control::Request::Bounce(selection.selection()?),
        ),
        Command::Queue {
            action: QueueAction::Summary { json, config },
        } => queue_summary(&load(config.as_ref())?, json),
        Command::Queue {
            action: QueueAction::Shaping { config },
        } => control(&load(config.as_ref())?, crate::control::Request::Shaping),
        Command::Queue {
            action:
                QueueAction::Suspend {
                    site,
                    duration,
                    config,
                },
        } => control(
            &load(config.as_ref())?,
            crate::control::Request::Suspend(site, duration.as_secs().max(1)),
        ),
        Command::Queue {
            action: QueueAction::Resume { site, config },
        } => control(
            &load(config.as_ref())?,
            crate::control::Request::Resume(site),
        ),
        Command::Queue {
            action: QueueAction::Suspensions { config },
        } => control(
            &load(config.as_ref())?,
            crate::control::Request::Suspensions,
        ),
        Command::User { action } => user(action),
        Command::Debug {
            action: DebugAction::Panic { shard, config },
        } => debug_panic(&load(config.as_ref())?, shard),
        Command::Tune {
            action:
                TuneAction::Check {
                    config,
                    root,
                    strict,
                },
        } => tune_check(&load(config.as_ref())?, root, strict),
        Command::CheckConfig { config } => {
            let config = load(config.as_ref())?;
            println!("{config:#?}");
            Ok(())
        }
        Command::Blast(args) => blast(*args),
        Command::Sink(args) => sink(*args),
    }
}

/// Recipients per message `spate blast` will generate (RFC 5321 asks
/// servers to take at least 100; sinks and relays rarely take more than
/// a few thousand).
const MAX_BLAST_RECIPIENTS: u32 = 100_000;

fn cpu_count(cores: usize) -> usize {
    if cores == 0 {
        crate::shard::allowed_cpus().len()
    } else {
        cores
    }
}

fn blast(args: BlastArgs) -> anyhow::Result<()> {
    use crate::blast::options::{BlastOptions, Budget, Content, Domains, SizeDistribution};
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.recipients == 0 || args.recipients > MAX_BLAST_RECIPIENTS {
        bail!("--recipients must be from 1 to {MAX_BLAST_RECIPIENTS}");
    }
    let budget = match (args.messages, args.duration) {
        (_, Some(d)) => Budget::Duration(d),
        (Some(n), None) => Budget::Messages(n),
        (None, None) => Budget::Messages(1000),
    };
    let domains = match (&args.domain_pattern, args.domains.is_empty()) {
        (Some(pattern), _) => Domains::pattern(pattern, args.domain_count)?,
        (None, false) => Domains::List(args.domains.clone()),
        (None, true) => Domains::List(vec!["example.test".into()]),
    };
    let content = match (&args.message_file, &args.size_dist) {
        (Some(file), _) => Content::File(file.clone()),
        (None, Some(dist)) => Content::Generated(dist.clone()),
        (None, None) => Content::Generated(SizeDistribution::fixed(args.size)),
    };
    let options = BlastOptions {
        target: args.to,
        connections: args.connections,
        budget,
        per_connection: args.per_connection,
        recipients: args.recipients,
        domains,
        content,
        rate: args.rate,
        from: args.from.clone(),
        helo: args.helo.clone(),
        starttls: args.starttls,
        auth: args.auth.clone(),
        pipelining: !args.no_pipelining,
        bdat: !args.no_bdat,
        cores: cpu_count(args.cores),
        timeout: args.timeout,
        seed: args.seed,
    };
    let run = crate::blast::driver::start(options)?;
    let shared = Arc::clone(&run.shared);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing signal handlers")?;
    let handle = signals.handle();
    let on_signal = Arc::clone(&shared);
    let signal_thread = std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            on_signal.stop();
        }
    });
    let bar = match budget {
        Budget::Messages(n) => indicatif::ProgressBar::new(n),
        Budget::Duration(d) => indicatif::ProgressBar::new(d.as_secs().max(1)),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let template = match budget {
        Budget::Messages(_) => "{elapsed_precise} [{bar:40}] {pos}/{len} messages, {per_sec} {msg}",
        Budget::Duration(_) => "{elapsed_precise} [{bar:40}] {pos}/{len} s {msg}",
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    while shared.running() {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let delivered = shared.delivered.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        match budget {
            Budget::Messages(_) => bar.set_position(delivered + failed),
            Budget::Duration(_) => bar.set_position(run.started.elapsed().as_secs()),
        }
        bar.set_message(format!("({delivered} delivered, {failed} failed)"));
    }
    bar.finish_and_clear();
    handle.close();
    let _ = signal_thread.join();
    let (stats, elapsed) = run.finish()?;
    let summary = crate::blast::report::Summary::new(&stats, elapsed);
    if let Some(path) = &args.histogram {
        std::fs::write(
            path,
            crate::blast::report::percentile_distribution(&stats.transaction),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    } else {
        write!(out, "{}", summary.text())?;
    }
    Ok(())
}

fn sink(args: SinkArgs) -> anyhow::Result<()> {
    use crate::sink::fault::{FaultPlan, Stage};
    let mut plan = FaultPlan {
        faults: args.fail.iter().chain(&args.reply).cloned().collect(),
        tarpit: args.tarpit.unwrap_or_default(),
        ..FaultPlan::default()
    };
    for (stage, delay) in &args.delay {
        plan.delays[*stage as usize] = *delay;
    }
    if let Some(delay) = args.banner_delay {
        plan.delays[Stage::Connect as usize] = delay;
    }
    let dir = match &args.dir {
        Some(dir) => {
            Some(std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?)
        }
        None => None,
    };
    let options = crate::sink::driver::SinkOptions {
        listen: args.listen.clone(),
        cores: cpu_count(args.cores),
        dir,
        max_per_ip: args.max_per_ip,
        stop_after: args.stop_after,
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        config: crate::sink::session::SinkConfig {
            hostname: args.hostname.clone(),
            count_domains: args.count_domains,
            max_message_size: args.max_size,
            plan,
            ..crate::sink::session::SinkConfig::default()
        },
    };
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGUSR1,
    ])
    .context("installing signal handlers")?;
    let running = crate::sink::driver::start(options)?;
    let print = |counters: &crate::sink::counters::Counters| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "counters {}", serde_json::to_string(counters)?)?;
        out.flush()?;
        Ok(())
    };
    {
        let mut out = std::io::stdout().lock();
        for addr in &running.addresses {
            writeln!(out, "listening smtp {addr}")?;
        }
        writeln!(out, "ready")?;
        out.flush()?;
    }
    let (events, inbox) = mpsc::channel();
    let handle = signals.handle();
    let signal_thread = std::thread::spawn(move || {
        for signal in signals.forever() {
            if events.send(signal).is_err() {
                return;
            }
        }
    });
    loop {
        match inbox.recv_timeout(std::time::Duration::from_millis(20)) {
            Ok(signal_hook::consts::SIGUSR1) => print(&running.counters())?,
            Ok(_) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if running.limit_reached() {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    handle.close();
    let _ = signal_thread.join();
    print(&running.stop())
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => Config::load(path).with_context(|| format!("loading {}", path.display()))?,
        None => Config::embedded(),
    };
    // Relative paths mean relative to where spate was started; resolve
    // them once so nothing later depends on the working directory.
    config.spool_dir = std::path::absolute(&config.spool_dir)
        .with_context(|| format!("resolving {}", config.spool_dir.display()))?;
    let local = &mut config.local;
    for path in [
        &mut local.mailbox_dir,
        &mut local.users_file,
        &mut local.aliases_file,
        &mut config.delivery.shaping_file,
    ]
    .into_iter()
    .flatten()
    {
        *path =
            std::path::absolute(&*path).with_context(|| format!("resolving {}", path.display()))?;
    }
    for entry in config.dkim.domain.values_mut() {
        let path = &mut entry.private_key;
        *path =
            std::path::absolute(&*path).with_context(|| format!("resolving {}", path.display()))?;
    }
    Ok(config)
}

fn user(action: UserAction) -> anyhow::Result<()> {
    use crate::account::edit;
    let users_file = |config: &Option<PathBuf>| -> anyhow::Result<PathBuf> {
        load(config.as_ref())?
            .local
            .users_file
            .context("[local] users_file is not set in the configuration")
    };
    match action {
        UserAction::Add { name, config } => {
            let path = users_file(&config)?;
            let field = read_new_password()?.hash()?;
            edit::add_user(&path, &name, &field)?;
            println!("added {name}");
        }
        UserAction::Passwd { name, config } => {
            let path = users_file(&config)?;
            let field = read_new_password()?.hash()?;
            edit::set_password(&path, &name, &field)?;
            println!("changed the password of {name}");
        }
        UserAction::Del { name, config } => {
            edit::delete_user(&users_file(&config)?, &name)?;
            println!("deleted {name}");
        }
        UserAction::List { config } => {
            let mut out = std::io::stdout().lock();
            for name in edit::list_users(&users_file(&config)?)? {
                writeln!(out, "{name}")?;
            }
        }
    }
    Ok(())
}

/// A new password: asked twice without echo on a terminal, else the first
/// line of standard input (for scripts).
fn read_new_password() -> anyhow::Result<crate::account::NewPassword> {
    use std::io::{BufRead, IsTerminal, Read};
    let stdin = std::io::stdin();
    let text = if stdin.is_terminal() {
        let first = rpassword::prompt_password("New password: ")?;
        let second = rpassword::prompt_password("Retype new password: ")?;
        if first != second {
            bail!("the two passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        // One byte more than the longest password plus CRLF, so a longer
        // line is seen and refused rather than cut.
        let limit = crate::account::scheme::MAX_PASSWORD_LEN as u64 + 3;
        stdin
            .lock()
            .take(limit)
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        line.strip_suffix('\r').unwrap_or(line).to_owned()
    };
    Ok(crate::account::NewPassword::parse(&text)?)
}

fn tune_check(config: &Config, root: PathBuf, strict: bool) -> anyhow::Result<()> {
    use crate::tune;
    let target = tune::Target {
        root,
        spool_dir: config.spool_dir.clone(),
        limits: tune::system::Limits::of_this_process(),
    };
    let findings = tune::check(&target);
    print!("{}", tune::report(&target.root, &findings));
    let differing = findings
        .iter()
        .filter(|f| f.status == tune::Status::Differs)
        .count();
    if strict && differing > 0 {
        bail!("{differing} setting(s) differ from the recommendations (--strict)");
    }
    Ok(())
}

fn control(config: &Config, request: crate::control::Request) -> anyhow::Result<()> {
    match crate::control::request(&config.spool_dir, request)? {
        crate::control::Reply::Done(text) => {
            println!("{text}");
            Ok(())
        }
        crate::control::Reply::Data(value) => {
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        crate::control::Reply::Failed(text) => bail!(text),
    }
}

/// `spate queue summary`: the summary as tables (or its JSON).
fn queue_summary(config: &Config, json: bool) -> anyhow::Result<()> {
    let value = match crate::control::request(&config.spool_dir, crate::control::Request::Summary)?
    {
        crate::control::Reply::Data(value) => value,
        crate::control::Reply::Done(text) => bail!("unexpected answer: {text}"),
        crate::control::Reply::Failed(text) => bail!(text),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let summary: crate::api::summary::QueueSummary = serde_json::from_value(value)?;
    print!("{}", summary.to_table());
    Ok(())
}

/// `spate debug panic`: the server answers by exiting, so a connection
/// closed without a reply is the expected outcome.
fn debug_panic(config: &Config, shard: usize) -> anyhow::Result<()> {
    match crate::control::request(&config.spool_dir, crate::control::Request::Panic(shard)) {
        Err(crate::control::ControlError::Closed) => {
            println!(
                "shard {shard} panicked: the server exits with status {}",
                crate::crash::PANIC_EXIT_STATUS
            );
            Ok(())
        }
        Ok(crate::control::Reply::Failed(text)) => bail!(text),
        Ok(crate::control::Reply::Done(text)) => bail!("the server did not panic: {text}"),
        Ok(crate::control::Reply::Data(value)) => bail!("the server did not panic: {value}"),
        Err(e) => Err(e.into()),
    }
}

/// Messages from the shards and the signal thread to the main thread.
enum MainEvent {
    Shard(ShardReport),
    Signal(i32),
}

/// Runs the server on `config`, read from `config_path` (`None`: the
/// embedded configuration), which SIGHUP reads again.
fn serve(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    // Before anything is created: the spool, its segments, quarantine files
    // and the control socket are private whatever umask we inherited.
    crate::spool::restrict_umask();
    let notifier = crate::sd_notify::Notifier::from_env().context("reading NOTIFY_SOCKET")?;
    for listener in &config.listeners {
        if !shard::serves(listener.protocol) {
            bail!(
                "listener {} asks for protocol {}, which this version does not serve yet",
                listener.address,
                listener.protocol.name()
            );
        }
        use crate::config::Protocol;
        let implicit_tls = matches!(
            listener.protocol,
            Protocol::Submissions | Protocol::Pop3s | Protocol::Imaps
        );
        if implicit_tls && config.tls.is_none() {
            bail!(
                "listener {} ({}) needs a certificate: set [tls] certificate and private_key",
                listener.address,
                listener.protocol.name()
            );
        }
        let needs_users = matches!(
            listener.protocol,
            Protocol::Submission
                | Protocol::Submissions
                | Protocol::Pop3
                | Protocol::Pop3s
                | Protocol::Imap
                | Protocol::Imaps
                | Protocol::Lmtp
        );
        if needs_users && config.local.mailbox_dir.is_none() {
            bail!(
                "listener {} ({}) needs the mailbox tier: set [local] mailbox_dir and users_file",
                listener.address,
                listener.protocol.name()
            );
        }
    }
    std::fs::create_dir_all(&config.spool_dir)
        .with_context(|| format!("creating spool directory {}", config.spool_dir.display()))?;
    // One server per spool, before recovery reads anything; held until
    // this function returns, after every shard has stopped.
    let _spool_lock = crate::spool::SpoolLock::acquire(&config.spool_dir)?;
    crate::spool::make_private(&config.spool_dir)?;
    let local = crate::local::LocalTier::load(&config).context("loading the user directory")?;
    if let Some(tier) = &local {
        tier.watch_directory_files();
    }
    // Before the cores: they hand events to it from their first message.
    let life_events = crate::events::Events::start(&config.events, &config.spool_dir)
        .context("starting the events service")?;
    // Created here, on the unpinned main thread: workers inherit affinity.
    let blocking = crate::blocking::BlockingPool::new(config.local.io_threads)
        .context("starting the blocking-work threads")?;
    let live = Arc::new(
        crate::reload::LiveSettings::load(&config)
            .context("loading the certificate, shaping rules and DKIM keys")?,
    );
    for key in live.dkim.keys() {
        tracing::info!(domain = %key.domain, selector = %key.selector, kind = ?key.kind, "dkim key loaded");
    }
    let (reservations, addresses) = reserve_ports(&config)?;
    // No other process serves these addresses (SO_REUSEPORT is for our own
    // cores only); the claims are held until this function returns.
    let _claims = addresses
        .iter()
        .map(|address| crate::claim::claim(*address))
        .collect::<Result<Vec<_>, _>>()?;
    let metrics_listener = match config.metrics.address {
        Some(address) => Some(
            crate::metrics::endpoint::bind(address)
                .with_context(|| format!("cannot listen on {address} for metrics"))?,
        ),
        None => None,
    };
    let api_listener = match (config.api.address, &config.api.token_file) {
        (Some(address), Some(token_file)) => Some((
            crate::api::server::bind(address)?,
            crate::api::server::read_token(token_file)?,
        )),
        _ => None,
    };
    let count = config.executor_count();
    // The CPUs this process may run on (taskset, CPUAffinity=, cpusets):
    // executor i is pinned to the i-th of them.
    let cpus = shard::allowed_cpus();
    let existing = shard::existing_shard_dirs(&config.spool_dir);
    let config = Arc::new(config);
    let limits = ConnectionLimits::new(
        config.smtp.max_connections,
        PerAddress {
            smtp: config.smtp.max_connections_per_ip,
            mailbox: config.local.max_connections_per_ip,
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (events, inbox) = mpsc::channel();
    // A shard's panic ends the process (status 70) for the service manager
    // to restart it: see `crash`.
    let fatal = crate::crash::FatalThreads::default();
    crate::crash::install(fatal.clone());

    let (shard_reports, shard_inbox) = mpsc::channel();
    let forward = events.clone();
    std::thread::spawn(move || {
        for report in shard_inbox {
            if forward.send(MainEvent::Shard(report)).is_err() {
                return;
            }
        }
    });
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing signal handlers")?;
    let signal_events = events.clone();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal_events.send(MainEvent::Signal(signal)).is_err() {
                return;
            }
        }
    });

    let resolver =
        crate::resolver::DnsResolver::start(crate::resolver::ResolverConfig::from_config(&config))
            .context("starting the resolver thread")?;
    let outbound_tls = crate::tls::client_config(false, None)?;
    let smarthost_tls = match config.relay.smarthost_tls {
        crate::config::SmarthostTls::Verify => Some(crate::tls::client_config(
            true,
            config.relay.smarthost_ca.as_deref(),
        )?),
        crate::config::SmarthostTls::May => None,
    };
    let d = &config.delivery;
    let tls_policies = Arc::new(
        crate::outbound_tls::TlsPolicies::new(crate::outbound_tls::TlsPolicySettings {
            mta_sts: d.mta_sts,
            dane: d.dane,
            nameservers: config.dns.nameservers.clone(),
            ca_file: d.mta_sts_ca_file.clone(),
            https_port: d.mta_sts_port,
            smtp_port: d.mx_port,
            timeout: d.tls_policy_timeout,
            cache_dir: Some(config.spool_dir.join("mta-sts")),
        })
        .context("setting up MTA-STS / DANE")?,
    );
    let mut inboxes = Vec::with_capacity(count);
    let mut reload_inboxes = Vec::with_capacity(count);
    let mut snapshot_inboxes = Vec::with_capacity(count);
    let mut handles = Vec::with_capacity(count);
    // Limits shared with other hosts: the client and subscriber threads,
    // and a link per core; the table's own changes go out through them.
    let (suspensions, mut cluster) = match &config.cluster {
        None => (
            Arc::new(
                crate::delivery::suspensions::Suspensions::default()
                    .kept_in(&config.spool_dir, std::time::SystemTime::now()),
            ),
            None,
        ),
        Some(settings) => {
            let (feed_tx, feed) = crossbeam_channel::unbounded();
            let suspensions = Arc::new(
                crate::delivery::suspensions::Suspensions::with_feed(feed_tx)
                    .kept_in(&config.spool_dir, std::time::SystemTime::now()),
            );
            let cluster = crate::cluster::Cluster::start(
                crate::cluster::Settings::from_config(settings, &config.hostname),
                count,
                Arc::clone(&suspensions),
                feed,
                Arc::clone(&stop),
            )?;
            (suspensions, Some(cluster))
        }
    };
    let mut links = cluster
        .as_mut()
        .map(|c| c.take_links())
        .unwrap_or_default()
        .into_iter();
    let throttles = Arc::new(crate::delivery::throttles::Throttles::default());
    let warmup = Arc::new(crate::egress::WarmupLedger::kept_in(
        &config.spool_dir,
        count,
        crate::egress::Day::of_unix(crate::delivery::engine::unix_now().0),
    ));
    for index in 0..count {
        let (inbox, control) = async_channel::unbounded();
        inboxes.push(inbox);
        let (reload_inbox, reloads) = async_channel::unbounded();
        reload_inboxes.push(reload_inbox);
        let (snapshot_inbox, snapshots) =
            async_channel::bounded(crate::metrics::endpoint::INBOX_DEPTH);
        snapshot_inboxes.push(snapshot_inbox);
        let plan = ShardPlan {
            index,
            adopt: shard::adoption(index, count, &existing),
            config: Arc::clone(&config),
            listeners: config
                .listeners
                .iter()
                .map(|l| l.protocol)
                .zip(addresses.iter().copied())
                .collect(),
            local: local.clone(),
            blocking: Arc::clone(&blocking),
            limits: Arc::clone(&limits),
            live: Arc::clone(&live),
            reloads,
            stop: Arc::clone(&stop),
            reports: shard_reports.clone(),
            resolver: resolver.handle(),
            outbound_tls: Arc::clone(&outbound_tls),
            smarthost_tls: smarthost_tls.clone(),
            sites: crate::delivery::engine::SiteTables {
                suspensions: Arc::clone(&suspensions),
                throttles: Arc::clone(&throttles),
                warmup: Arc::clone(&warmup),
                tls_policies: Arc::clone(&tls_policies),
            },
            cluster: links.next(),
            control,
            snapshots,
            fatal: fatal.clone(),
            events: life_events.as_ref().map(crate::events::Events::sink),
        };
        handles.push(shard::spawn(plan, cpus[index % cpus.len()]).context("starting an executor")?);
    }
    drop(shard_reports);

    let mut ready = 0;
    let mut recovered = 0;
    let mut failure = None;
    while ready < count && failure.is_none() {
        match inbox.recv() {
            Ok(MainEvent::Shard(ShardReport::Ready { recovered: n, .. })) => {
                ready += 1;
                recovered += n;
            }
            Ok(MainEvent::Shard(ShardReport::Failed { shard, error })) => {
                failure = Some(format!("shard {shard}: {error}"));
            }
            Ok(MainEvent::Shard(ShardReport::Reloaded { .. })) => {}
            // A reload asked for before the server is ready: the
            // configuration being loaded is already the newest.
            Ok(MainEvent::Signal(signal_hook::consts::SIGHUP)) => {}
            Ok(MainEvent::Signal(_)) => failure = Some("stopped by a signal while starting".into()),
            Err(_) => failure = Some("every shard stopped while starting".into()),
        }
    }
    let api = match (failure.is_none(), api_listener) {
        (true, Some((listener, token))) => {
            let address = listener.local_addr()?;
            let tls = match &config.tls {
                Some(tls) => Some(crate::tls::server_config(
                    &tls.certificate,
                    &tls.private_key,
                )?),
                None => None,
            };
            let thread =
                crate::api::server::serve(listener, token, tls, inboxes.clone(), Arc::clone(&stop))
                    .context("starting the management API")?;
            Some((address, thread))
        }
        _ => None,
    };
    let control = match failure {
        None => Some(
            crate::control::serve(&config.spool_dir, inboxes, Arc::clone(&stop))
                .context("opening the control socket")?,
        ),
        Some(_) => None,
    };
    let metrics_endpoint = match (failure.is_none(), metrics_listener) {
        (true, Some(listener)) => {
            let address = listener.local_addr()?;
            let resolver = resolver.handle();
            let spool_dir = config.spool_dir.clone();
            let cluster_figures = cluster.as_ref().map(|c| c.figures_handle());
            let event_figures = life_events.as_ref().map(|e| e.figures_handle());
            let complete: crate::metrics::endpoint::Complete = Box::new(move |snapshot| {
                let dns = resolver.stats();
                snapshot.dns_queries = dns.queries;
                snapshot.dns_cache_hits = dns.cache_hits;
                snapshot.cluster = cluster_figures.as_ref().map(|figures| figures());
                snapshot.events = event_figures.as_ref().map(|figures| figures());
                match crate::spool::disk_usage(&spool_dir) {
                    Ok(bytes) => snapshot.spool_bytes = bytes,
                    Err(e) => tracing::warn!(error = %e, "cannot measure the spool"),
                }
            });
            let thread = crate::metrics::endpoint::serve(
                listener,
                snapshot_inboxes,
                complete,
                Arc::clone(&stop),
            )
            .context("starting the metrics endpoint")?;
            Some((address, thread))
        }
        _ => None,
    };
    if failure.is_none() {
        drop(reservations);
        let mut out = std::io::stdout().lock();
        for (listener, addr) in config.listeners.iter().zip(&addresses) {
            writeln!(out, "listening {} {addr}", listener.protocol.name())?;
        }
        if let Some((address, _)) = &metrics_endpoint {
            writeln!(out, "listening metrics {address}")?;
        }
        if let Some((address, _)) = &api {
            writeln!(out, "listening api {address}")?;
        }
        writeln!(out, "ready")?;
        out.flush()?;
        drop(out);
        tracing::info!(cores = count, recovered, "spate is ready");
        let status = format!("serving on {count} core(s)");
        if let Err(e) = notifier.send(&State::Ready {
            status: status.clone(),
        }) {
            tracing::warn!(error = %e, "cannot tell the service manager spate is ready");
        }
        let mut running = (*config).clone();
        // Shards yet to take the settings of the reload under way.
        let mut reload_pending = 0;
        loop {
            match inbox.recv() {
                Ok(MainEvent::Signal(signal_hook::consts::SIGHUP)) => {
                    notify(
                        &notifier,
                        State::Reloading {
                            monotonic_usec: crate::sd_notify::monotonic_usec(),
                            status: "reloading the configuration".into(),
                        },
                    );
                    match reload(&running, config_path.as_ref(), local.as_deref()) {
                        Ok((effective, settings)) => {
                            running = effective;
                            let settings = Arc::new(settings);
                            reload_pending = reload_inboxes
                                .iter()
                                .filter(|inbox| inbox.send_blocking(Arc::clone(&settings)).is_ok())
                                .count();
                        }
                        Err(e) => {
                            tracing::error!(
                                "reload refused, the running configuration stays: {e:#}"
                            );
                            println!("reload refused");
                        }
                    }
                    if reload_pending == 0 {
                        notify(
                            &notifier,
                            State::Ready {
                                status: status.clone(),
                            },
                        );
                    }
                }
                Ok(MainEvent::Signal(signal)) => {
                    tracing::info!(signal, "stopping");
                    break;
                }
                Ok(MainEvent::Shard(ShardReport::Failed { shard, error })) => {
                    failure = Some(format!("shard {shard}: {error}"));
                    break;
                }
                Ok(MainEvent::Shard(ShardReport::Reloaded { .. })) if reload_pending > 1 => {
                    reload_pending -= 1;
                }
                Ok(MainEvent::Shard(ShardReport::Reloaded { .. })) => {
                    // A second SIGHUP before the first one finished
                    // restarts the count: extra answers are ignored.
                    if reload_pending == 1 {
                        reload_pending = 0;
                        tracing::info!("reload done: new connections use the new settings");
                        println!("reloaded");
                        notify(
                            &notifier,
                            State::Ready {
                                status: status.clone(),
                            },
                        );
                    }
                }
                Ok(MainEvent::Shard(ShardReport::Ready { .. })) => {}
                Err(_) => break,
            }
        }
    }
    notify(
        &notifier,
        State::Stopping {
            status: "finishing open transactions".into(),
        },
    );
    stop.store(true, Ordering::Release);
    if let Some(control) = control {
        let _ = control.join();
    }
    if let Some((_, endpoint)) = metrics_endpoint {
        let _ = endpoint.join();
    }
    // The accept loop stops; a connection thread still waiting for a
    // shard gets "the server is stopping" and ends by itself.
    if let Some((_, thread)) = api {
        let _ = thread.join();
    }
    let mut metrics = Metrics::default();
    for (index, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(shard_metrics) => metrics.merge(&shard_metrics),
            Err(e) => {
                tracing::error!(shard = index, error = %e, "a shard ended abnormally");
                failure.get_or_insert_with(|| format!("shard {index} ended abnormally: {e}"));
            }
        }
    }
    // After the cores: every event they made is in the log when it stops.
    if let Some(life_events) = life_events {
        life_events.stop();
    }
    println!("stats {}", serde_json::to_string(&metrics.stats())?);
    if let Some(failure) = failure {
        bail!(failure);
    }
    Ok(())
}

/// Sends a state to the service manager; a failure is logged, never
/// fatal (the manager may have gone away).
fn notify(notifier: &crate::sd_notify::Notifier, state: State) {
    if let Err(e) = notifier.send(&state) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Reads the configuration again and swaps the user directory; returns
/// the configuration now in force and the settings for the shards. On
/// an error nothing has changed.
fn reload(
    running: &Config,
    path: Option<&PathBuf>,
    local: Option<&crate::local::LocalTier>,
) -> anyhow::Result<(Config, crate::reload::LiveSettings)> {
    let reread = match path {
        Some(_) => load(path)?,
        None => {
            tracing::info!("no --config file: reloading the certificate, users and aliases only");
            running.clone()
        }
    };
    let prepared = crate::reload::prepare(running, &reread)?;
    for section in &prepared.needs_restart {
        tracing::warn!("{section} changed in the configuration file: needs a restart");
    }
    if let (Some(tier), Some(directory)) = (local, prepared.directory) {
        for warning in directory.warnings() {
            tracing::warn!("{warning}");
        }
        tier.replace_directory(directory);
        tier.set_source(&prepared.effective.local);
    }
    Ok((prepared.effective, prepared.settings))
}

/// Listeners configured with port 0 get one free port, shared by every
/// core: a socket with SO_REUSEPORT holds the port (bound, not listening,
/// so it never receives a connection) until every core has bound it. It
/// does not keep another process out of the port; `claim` does.
fn reserve_ports(config: &Config) -> anyhow::Result<(Vec<Socket>, Vec<SocketAddr>)> {
    let mut reservations = Vec::new();
    let mut addresses = Vec::new();
    for listener in &config.listeners {
        let mut addr = listener.address;
        if addr.port() == 0 {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket
                .bind(&addr.into())
                .with_context(|| format!("binding {addr}"))?;
            let bound = socket
                .local_addr()?
                .as_socket()
                .context("listener address is not an IP socket")?;
            addr.set_port(bound.port());
            reservations.push(socket);
        }
        addresses.push(addr);
    }
    Ok((reservations, addresses))
}

/// One queued message as `spate queue list --json` prints it.
#[derive(serde::Serialize)]
struct QueueLine<'a> {
    id: String,
    from: &'a str,
    to: Vec<&'a str>,
    size: u64,
    age_seconds: u64,
    received_at: u64,
    /// `queued` (never tried) or `deferred`.
    state: &'static str,
    attempts: u32,
    next_attempt: Option<u64>,
    last_error: Option<&'a str>,
    /// Recipients still to be delivered.
    pending: Vec<&'a str>,
}

fn queue_list(config: &Config, json: bool) -> anyhow::Result<()> {
    let messages = crate::spool::scan_dir(&config.spool_dir)
        .with_context(|| format!("reading spool {}", config.spool_dir.display()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:<16}  {:>9}  {:>7}  {:<30}  RECIPIENTS",
            "ID", "SIZE", "AGE", "SENDER"
        )?;
    }
    for message in &messages {
        let envelope = &message.envelope;
        let line = QueueLine {
            id: message.id.to_string(),
            from: &envelope.sender,
            to: envelope
                .recipients
                .iter()
                .map(|r| r.address.as_str())
                .collect(),
            size: message.size,
            age_seconds: now.saturating_sub(envelope.received_at),
            received_at: envelope.received_at,
            state: if message.delivery.attempts() == 0 {
                "queued"
            } else {
                "deferred"
            },
            attempts: message.delivery.attempts(),
            next_attempt: message.delivery.next_attempt_unix(),
            last_error: message.delivery.last_error(),
            pending: message
                .delivery
                .pending(envelope.recipients.len())
                .filter_map(|i| {
                    envelope
                        .recipients
                        .get(i as usize)
                        .map(|r| r.address.as_str())
                })
                .collect(),
        };
        if json {
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
        } else {
            let from = if line.from.is_empty() {
                "<>"
            } else {
                line.from
            };
            writeln!(
                out,
                "{:<16}  {:>9}  {:>6}s  {:<30}  {}",
                line.id,
                line.size,
                line.age_seconds,
                from,
                line.pending.join(", ")
            )?;
            if let (Some(error), Some(next)) = (line.last_error, line.next_attempt) {
                writeln!(
                    out,
                    "{:18}({} attempt(s), next in {}s: {error})",
                    "",
                    line.attempts,
                    next.saturating_sub(now)
                )?;
            }
        }
    }
    if !json {
        writeln!(out, "-- {} message(s)", messages.len())?;
    }
    Ok(())
}
