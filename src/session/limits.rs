//! Counts open connections, in total and per client address, across all
//! cores: an IPv6 client by its /64, SMTP apart from the mailbox protocols
//! (the session names its family). Touched once when a connection opens and
//! once when it closes, never per command or per message.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::account::throttle::ClientKey;

/// Why a new connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyInTotal,
    TooManyFromAddress,
}

/// Which budget of a client address a connection draws on: idle IMAP
/// connections must not use up the address's SMTP budget, nor the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// SMTP relay, submission and submissions.
    Smtp,
    /// POP3, IMAP and their implicit-TLS variants.
    Mailbox,
}

/// Open connections allowed from one client address, per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerAddress {
    pub smtp: usize,
    pub mailbox: usize,
}

impl PerAddress {
    /// The same budget for both families.
    pub fn same(n: usize) -> Self {
        PerAddress {
            smtp: n,
            mailbox: n,
        }
    }

    fn of(self, family: Family) -> usize {
        match family {
            Family::Smtp => self.smtp,
            Family::Mailbox => self.mailbox,
        }
    }
}

/// What one count is kept under: the client (an IPv4 address or an IPv6
/// /64, as the login throttle counts) and the family.
type Key = (ClientKey, Family);

/// Shared by every core; cloned as an `Arc`.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_address: PerAddress,
    total: AtomicUsize,
    per_address: Mutex<HashMap<Key, usize>>,
}

/// Holds one counted connection; dropping it releases the count.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    key: Key,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_address: PerAddress) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_address,
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new `family` connection from `ip`, or says why it must be
    /// refused.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, family: Family) -> Result<ConnectionSlot, Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::TooManyInTotal);
        }
        let key = (ClientKey::from(ip), family);
        let mut per_address = self.lock();
        let count = per_address.entry(key).or_insert(0);
        if *count >= self.max_per_address.of(family) {
            if *count == 0 {
                per_address.remove(&key);
            }
            drop(per_address);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::TooManyFromAddress);
        }
        *count += 1;
        Ok(ConnectionSlot {
            limits: Arc::clone(self),
            key,
        })
    }

    /// Open connections right now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, usize>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (each critical section is one insert or decrement), so a poisoned
        // lock is still usable.
        self.per_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per_address = self.limits.lock();
        if let Some(count) = per_address.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                per_address.remove(&self.key);
            }
        }
        drop(per_address);
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_and_total_limits_hold_and_release() {
        let limits = ConnectionLimits::new(3, PerAddress::same(2));
        let a = ip("127.0.0.2");
        let b = ip("127.0.0.3");
        let a1 = limits.admit(a, Family::Smtp).unwrap();
        let _a2 = limits.admit(a, Family::Smtp).unwrap();
        assert_eq!(
            limits.admit(a, Family::Smtp).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        let _b1 = limits.admit(b, Family::Smtp).unwrap();
        assert_eq!(
            limits.admit(b, Family::Smtp).unwrap_err(),
            Refusal::TooManyInTotal
        );
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _a3 = limits.admit(a, Family::Smtp).unwrap();
    }

    #[test]
    fn ipv6_addresses_share_a_budget_per_64() {
        let limits = ConnectionLimits::new(100, PerAddress::same(2));
        // Two hosts (or two privacy addresses of one host) in one /64.
        let _x = limits.admit(ip("2001:db8:1:2::1"), Family::Smtp).unwrap();
        let _y = limits
            .admit(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), Family::Smtp)
            .unwrap();
        assert_eq!(
            limits
                .admit(ip("2001:db8:1:2:abcd::7"), Family::Smtp)
                .unwrap_err(),
            Refusal::TooManyFromAddress
        );
        // The next /64 has a budget of its own.
        let _z = limits.admit(ip("2001:db8:1:3::1"), Family::Smtp).unwrap();
        let _w = limits.admit(ip("2001:db8:1:3::2"), Family::Smtp).unwrap();
        assert_eq!(
            limits
                .admit(ip("2001:db8:1:3::3"), Family::Smtp)
                .unwrap_err(),
            Refusal::TooManyFromAddress
        );
        // IPv4-mapped IPv6 counts as its IPv4 address.
        let _v4 = limits.admit(ip("192.0.2.1"), Family::Smtp).unwrap();
        let _mapped = limits.admit(ip("::ffff:192.0.2.1"), Family::Smtp).unwrap();
        assert_eq!(
            limits.admit(ip("192.0.2.1"), Family::Smtp).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        assert_eq!(limits.open(), 6);
    }

    #[test]
    fn smtp_and_mailbox_are_counted_apart() {
        let limits = ConnectionLimits::new(
            100,
            PerAddress {
                smtp: 2,
                mailbox: 3,
            },
        );
        let a = ip("2001:db8::1");
        // Idle IMAP connections fill the mailbox budget...
        let imap: Vec<_> = (0..3)
            .map(|_| limits.admit(a, Family::Mailbox).unwrap())
            .collect();
        assert_eq!(
            limits.admit(a, Family::Mailbox).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        // ...and SMTP from the same address still has all of its own.
        let smtp1 = limits.admit(a, Family::Smtp).unwrap();
        let smtp2 = limits.admit(a, Family::Smtp).unwrap();
        assert_eq!(
            limits.admit(a, Family::Smtp).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        // Releasing one family's slot frees only that family.
        drop(smtp1);
        assert_eq!(
            limits.admit(a, Family::Mailbox).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        let smtp3 = limits.admit(a, Family::Smtp).unwrap();
        drop(imap);
        assert_eq!(limits.open(), 2);
        let imap = limits.admit(a, Family::Mailbox).unwrap();
        // Everything released leaves no entries behind.
        drop(imap);
        drop(smtp2);
        drop(smtp3);
        assert_eq!(limits.open(), 0);
        assert!(limits.lock().is_empty());
    }

    #[test]
    fn a_zero_budget_leaves_no_entry() {
        let limits = ConnectionLimits::new(
            10,
            PerAddress {
                smtp: 1,
                mailbox: 0,
            },
        );
        let a = ip("192.0.2.9");
        assert_eq!(
            limits.admit(a, Family::Mailbox).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        assert!(limits.lock().is_empty());
        assert_eq!(limits.open(), 0);
    }
}
