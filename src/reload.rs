//! What a reload (SIGHUP) changes: from the running configuration and the
//! file read again, it builds the new certificate, routing table and user
//! directory, and lists the changed settings that only a restart can
//! apply. It refuses to apply anything itself (the caller swaps the
//! results in) and refuses a new configuration whose parts do not load,
//! so a bad edit leaves the server exactly as it was.

use std::sync::Arc;

use crate::account::{AccountError, Directory};
use crate::config::Config;
use crate::delivery::router::Router;
use crate::dkim::{DkimError, Signer};
use crate::egress::{EgressError, EgressPlan};
use crate::shaping::{Shaping, ShapingError};
use crate::tls::TlsError;

/// The settings each shard holds and a reload replaces: read at each new
/// connection, STARTTLS handshake and routing decision.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// The server certificate, when `[tls]` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Local domains, `[[route]]`s and the smarthost.
    pub router: Router,
    /// The shaping rules (shipped, with `[delivery] shaping_file` over
    /// them): sites that become active after a reload take the new ones.
    pub shaping: Arc<Shaping>,
    /// Egress sources and pools: work placed after a reload takes them
    /// (budgets spent so far are kept by source name).
    pub egress: Arc<EgressPlan>,
    /// The DKIM keys (`[dkim]`): messages whose data ends after a reload
    /// are signed with the new ones.
    pub dkim: Arc<Signer>,
}

impl LiveSettings {
    /// The settings `config` asks for; reads the certificate, shaping and
    /// DKIM key files.
    pub fn load(config: &Config) -> Result<LiveSettings, ReloadError> {
        let tls = match &config.tls {
            Some(tls) => Some(crate::tls::server_config(
                &tls.certificate,
                &tls.private_key,
            )?),
            None => None,
        };
        Ok(LiveSettings {
            tls,
            router: config.router(),
            shaping: Arc::new(Shaping::load(config.delivery.shaping_file.as_deref())?),
            egress: Arc::new(EgressPlan::build(config)?),
            dkim: Arc::new(Signer::load(&config.dkim)?),
        })
    }
}

/// Why a reload was refused (the running settings stay).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("users or aliases: {0}")]
    Directory(#[from] AccountError),
    #[error("{0}")]
    Shaping(#[from] ShapingError),
    #[error("{0}")]
    Egress(#[from] EgressError),
    #[error(transparent)]
    Dkim(#[from] DkimError),
}

/// A reload ready to be applied.
#[derive(Debug)]
pub struct Reload {
    /// The configuration in force once applied: the running one with the
    /// reloadable settings of the new file.
    pub effective: Config,
    pub settings: LiveSettings,
    /// The new user directory, when the mailbox tier runs.
    pub directory: Option<Directory>,
    /// Sections that changed in the file but keep their running values
    /// until a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Builds a reload from the running configuration and the file read
/// again (paths already made absolute, as at start).
pub fn prepare(running: &Config, reread: &Config) -> Result<Reload, ReloadError> {
    let effective = merge_reloadable(running, reread);
    let settings = LiveSettings::load(&effective)?;
    // At start a missing users file means "no users yet"; on a reload it
    // more likely means a mistake, and dropping every user of a running
    // server is worse than keeping the ones it has.
    if let Some(path) = effective.local.users_file.as_deref() {
        if let Err(e) = std::fs::metadata(path) {
            return Err(AccountError::io("reading", path, e).into());
        }
    }
    let directory = match effective.local.mailbox_dir {
        Some(_) => Some(Directory::load(&effective.local)?),
        None => None,
    };
    Ok(Reload {
        needs_restart: restart_only_changes(&effective, reread),
        effective,
        settings,
        directory,
    })
}

/// The running configuration with what a reload may change taken from
/// `reread`: the certificate files (when TLS stays on), the users and
/// aliases files, the catch-all and quota (all held by the directory),
/// the `[[route]]`s and the smarthost, `[egress]` but its tenant header
/// (read by the SMTP sessions, set at start), `[dkim]` (keys, selectors,
/// signed fields). Everything else stays.
pub fn merge_reloadable(running: &Config, reread: &Config) -> Config {
    let mut effective = running.clone();
    if let (Some(tls), Some(new)) = (&mut effective.tls, &reread.tls) {
        tls.clone_from(new);
    }
    let (local, new) = (&mut effective.local, &reread.local);
    local.users_file.clone_from(&new.users_file);
    local.aliases_file.clone_from(&new.aliases_file);
    local.catch_all.clone_from(&new.catch_all);
    local.quota = new.quota;
    effective.routes.clone_from(&reread.routes);
    effective
        .delivery
        .shaping_file
        .clone_from(&reread.delivery.shaping_file);
    effective
        .relay
        .smarthost
        .clone_from(&reread.relay.smarthost);
    let tenant_header = effective.egress.tenant_header.take();
    effective.egress.clone_from(&reread.egress);
    effective.egress.tenant_header = tenant_header;
    effective.dkim.clone_from(&reread.dkim);
    effective
}

/// The top-level sections of `reread` that differ from `effective`, by
/// name as in the file. Compared through their `Debug` text, which shows
/// every field; a difference outside the named sections is reported as
/// "other settings" so a new section cannot be missed silently.
pub fn restart_only_changes(effective: &Config, reread: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($field:ident => $name:literal),* $(,)?) => {
            $(
                if format!("{:?}", effective.$field) != format!("{:?}", reread.$field) {
                    changed.push($name);
                }
            )*
        };
    }
    compare!(
        hostname => "hostname",
        spool_dir => "spool_dir",
        cores => "cores",
        shutdown_grace => "shutdown_grace",
        listeners => "[[listener]]",
        relay => "[relay]",
        dns => "[dns]",
        routes => "[[route]]",
        local => "[local]",
        tls => "[tls]",
        smtp => "[smtp]",
        spool => "[spool]",
        delivery => "[delivery]",
        egress => "[egress]",
        auth => "[auth]",
        pop3 => "[pop3]",
        cluster => "[cluster]",
        dkim => "[dkim]",
        events => "[events]",
    );
    if changed.is_empty() && format!("{effective:?}") != format!("{reread:?}") {
        changed.push("other settings");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text).expect("test configuration parses")
    }

    const BASE: &str = r#"
spool_dir = "/tmp/spool"
[[listener]]
address = "127.0.0.1:2525"
protocol = "smtp"
[relay]
smarthost = "10.0.0.5:25"
[local]
domains = ["example.test"]
users_file = "/etc/spate/users"
"#;

    #[test]
    fn reloadable_settings_need_no_restart() {
        let running = parse(BASE);
        let reread = parse(
            &(BASE
                .replace("10.0.0.5:25", "10.0.0.6:2525")
                .replace("/etc/spate/users", "/etc/spate/users.new")
                + "[[route]]\ndomain = \"partner.example\"\nto = \"10.0.0.7\"\n"),
        );
        let effective = merge_reloadable(&running, &reread);
        assert!(restart_only_changes(&effective, &reread).is_empty());
        assert_eq!(effective.relay.smarthost.as_deref(), Some("10.0.0.6:2525"));
        assert_eq!(effective.routes.len(), 1);
        assert_eq!(
            effective.local.users_file.as_deref(),
            Some(std::path::Path::new("/etc/spate/users.new"))
        );
    }

    #[test]
    fn egress_reloads_but_its_tenant_header_needs_a_restart() {
        let egress = "[[egress.source]]\nname = \"ip1\"\nbind = \"127.0.0.31\"\n[egress.pool.p]\nsources = { ip1 = 1 }\n[egress]\ndefault_pool = \"p\"\n";
        let running = parse(BASE);
        let reread = parse(&format!("{BASE}{egress}"));
        let effective = merge_reloadable(&running, &reread);
        assert!(restart_only_changes(&effective, &reread).is_empty());
        assert_eq!(effective.egress.sources.len(), 1);
        let settings = LiveSettings::load(&effective).expect("loads");
        assert!(settings.egress.source("ip1").is_some());
        let with_header = parse(&format!("{BASE}{egress}tenant_header = \"X-Tenant\"\n"));
        let effective = merge_reloadable(&running, &with_header);
        assert_eq!(effective.egress.tenant_header, None);
        assert_eq!(
            restart_only_changes(&effective, &with_header),
            vec!["[egress]"]
        );
    }

    #[test]
    fn listeners_cores_and_spool_keep_running_values() {
        let running = parse(BASE);
        let reread = parse(
            &BASE
                .replace("127.0.0.1:2525", "127.0.0.1:2526")
                .replace("/tmp/spool", "/tmp/other")
                .replace("spool_dir", "cores = 3\nspool_dir"),
        );
        let effective = merge_reloadable(&running, &reread);
        assert_eq!(
            restart_only_changes(&effective, &reread),
            vec!["spool_dir", "cores", "[[listener]]"]
        );
        assert_eq!(effective.cores, running.cores);
        assert_eq!(effective.listeners[0].address.port(), 2525);
    }

    #[test]
    fn turning_tls_on_needs_a_restart() {
        let running = parse(BASE);
        let reread = parse(&format!(
            "{BASE}[tls]\ncertificate = \"/c.pem\"\nprivate_key = \"/k.pem\"\n"
        ));
        let effective = merge_reloadable(&running, &reread);
        assert!(effective.tls.is_none());
        assert_eq!(restart_only_changes(&effective, &reread), vec!["[tls]"]);
    }

    #[test]
    fn a_missing_users_file_refuses_the_reload() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{BASE}mailbox_dir = \"{}\"\n",
            dir.path().join("mail").display()
        )
        .replace(
            "/etc/spate/users",
            &dir.path().join("nope").display().to_string(),
        );
        let config = parse(&text);
        match prepare(&config, &config) {
            Err(ReloadError::Directory(_)) => {}
            other => panic!("expected a directory error, got {other:?}"),
        }
    }
}
