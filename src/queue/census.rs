//! The queue's census: how many recipients wait per recipient domain and
//! how many messages and recipients per tenant, kept up to date as
//! messages enter and leave the queue and as recipients finish, so that a
//! summary of a million queued messages (`GET /api/v1/queue/summary`)
//! costs one walk over the domains, not over the messages. Each message
//! carries its [`Shape`] (the domain of each recipient and its tenant),
//! shared by every message shaped alike: bulk mail to one domain costs
//! one copy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use crate::envelope::Envelope;

/// What the census needs of a message: the domain of each recipient, in
/// envelope order (lower case), and its tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Shape {
    pub tenant: Option<Rc<str>>,
    pub domains: Box<[Rc<str>]>,
}

impl Shape {
    /// The shape of a message with this envelope.
    pub fn of(envelope: &Envelope) -> Shape {
        Shape::new(
            envelope.tenant.as_deref(),
            envelope.recipients.iter().map(|r| r.address.as_str()),
        )
    }

    /// A shape from a tenant and recipient addresses (`local@domain`; an
    /// address without `@` counts under its whole text).
    pub fn new<'a>(tenant: Option<&str>, recipients: impl IntoIterator<Item = &'a str>) -> Shape {
        Shape {
            tenant: tenant.map(Rc::from),
            domains: recipients
                .into_iter()
                .map(|address| {
                    let domain = address.rsplit_once('@').map_or(address, |(_, d)| d);
                    Rc::from(domain.to_ascii_lowercase().as_str())
                })
                .collect(),
        }
    }
}

/// Queued messages and recipients of one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TenantCount {
    pub messages: u64,
    pub recipients: u64,
}

/// See the module header.
#[derive(Debug, Default)]
pub struct Census {
    shapes: HashSet<Rc<Shape>>,
    recipients_by_domain: HashMap<Rc<str>, u64>,
    by_tenant: HashMap<Rc<str>, TenantCount>,
}

impl Census {
    /// The shared copy of `shape` (every message shaped alike holds one).
    pub fn intern(&mut self, shape: Rc<Shape>) -> Rc<Shape> {
        if let Some(shared) = self.shapes.get(&shape) {
            return Rc::clone(shared);
        }
        self.shapes.insert(Rc::clone(&shape));
        shape
    }

    /// A message holding `shape` is leaving the queue (call it before
    /// copying the message's `Rc` anywhere): the set's copy is forgotten
    /// once no other message holds it.
    pub fn release(&mut self, shape: &Rc<Shape>) {
        // The leaving message's copy and the set's.
        if Rc::strong_count(shape) <= 2 {
            self.shapes.remove(&**shape);
        }
    }

    /// A message entered the queue with these recipients pending.
    pub fn enter(&mut self, shape: &Shape, pending: impl Iterator<Item = u32>) {
        let mut count = 0;
        for index in pending {
            count += 1;
            if let Some(domain) = shape.domains.get(index as usize) {
                *self
                    .recipients_by_domain
                    .entry(Rc::clone(domain))
                    .or_default() += 1;
            }
        }
        if let Some(tenant) = &shape.tenant {
            let t = self.by_tenant.entry(Rc::clone(tenant)).or_default();
            t.messages += 1;
            t.recipients += count;
        }
    }

    /// Recipient `index` of a message needs no more attempts.
    pub fn recipient_done(&mut self, shape: &Shape, index: u32) {
        if let Some(domain) = shape.domains.get(index as usize) {
            decrement(&mut self.recipients_by_domain, domain);
        }
        if let Some(tenant) = &shape.tenant {
            if let Some(t) = self.by_tenant.get_mut(tenant) {
                t.recipients = t.recipients.saturating_sub(1);
            }
        }
    }

    /// A message left the queue with these recipients still pending.
    pub fn leave(&mut self, shape: &Shape, pending: impl Iterator<Item = u32>) {
        let mut count = 0;
        for index in pending {
            count += 1;
            if let Some(domain) = shape.domains.get(index as usize) {
                decrement(&mut self.recipients_by_domain, domain);
            }
        }
        if let Some(tenant) = &shape.tenant {
            if let Some(t) = self.by_tenant.get_mut(tenant) {
                t.messages = t.messages.saturating_sub(1);
                t.recipients = t.recipients.saturating_sub(count);
                if t.messages == 0 {
                    self.by_tenant.remove(tenant);
                }
            }
        }
    }

    /// Pending recipients per domain.
    pub fn domains(&self) -> BTreeMap<String, u64> {
        self.recipients_by_domain
            .iter()
            .map(|(d, n)| (d.to_string(), *n))
            .collect()
    }

    /// Queued messages and pending recipients per tenant.
    pub fn tenants(&self) -> BTreeMap<String, TenantCount> {
        self.by_tenant
            .iter()
            .map(|(t, n)| (t.to_string(), *n))
            .collect()
    }

    /// Distinct shapes held (for tests of the sharing).
    pub fn shapes(&self) -> usize {
        self.shapes.len()
    }
}

fn decrement(counts: &mut HashMap<Rc<str>, u64>, key: &Rc<str>) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}
