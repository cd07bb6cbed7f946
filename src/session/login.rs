//! One login check for SMTP AUTH and POP3 (IMAP's is its session's
//! backend): the client address's failure history first (shared by all
//! cores through the mailbox tier), then the password off the executor, in
//! the pool's urgent lane (no mailbox read delays it), then the slow-down a
//! failure earns. It decides nothing about protocol replies.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::blocking::Lane;
use crate::local::Login;
use crate::sasl::Password;
use crate::shard::ShardContext;
use crate::spool::SegmentStore;

/// Checks `login`/`password` for a client at `ip`. A blocked client is
/// refused unchecked; every failure is counted and answered only after
/// the throttle's delay.
pub async fn check_login<S: SegmentStore>(
    ctx: &ShardContext<S>,
    ip: IpAddr,
    login: String,
    password: Password,
) -> Login {
    let ip = ip.to_canonical();
    let Some(tier) = ctx.local.clone() else {
        ctx.metrics.borrow_mut().counters.auth_failures += 1;
        return Login::Failed;
    };
    let verdict = if tier.login_blocked(ip, Instant::now()) {
        Login::Failed
    } else {
        let checker = Arc::clone(&tier);
        let typed = login.clone();
        ctx.blocking
            .run(Lane::Urgent, move || {
                checker.authenticate(&typed, password.expose())
            })
            .await
            .unwrap_or(Login::Temporary)
    };
    match &verdict {
        Login::Success(user) => tier.login_succeeded(ip, &login, user),
        Login::Failed => {
            ctx.metrics.borrow_mut().counters.auth_failures += 1;
            let delay = tier.login_failed(ip, &login, Instant::now());
            glommio::timer::sleep(delay).await;
        }
        Login::Temporary => {}
    }
    verdict
}
