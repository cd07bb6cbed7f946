//! Messages held back by a limit of spate's own (a site's full ready
//! queue, a suspended site), by site: only their ids, in spool order, so a
//! million of them cost about 8 bytes each beside their queue entries
//! (issue 13). Handed back oldest first as the site makes room. It
//! decides nothing: the delivery engine says what is held and how much
//! room a site has; the queue keeps each message's state and time.

use std::collections::HashMap;

use crate::chunked::ChunkedSet;
use crate::spool::SpoolId;

use super::ready::DestinationKey;

/// See the module header.
#[derive(Debug, Default)]
pub struct HeldMessages {
    by_site: HashMap<DestinationKey, ChunkedSet<SpoolId>>,
}

impl HeldMessages {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that `id` waits for room at `site` (once, however often it
    /// is held again).
    pub fn hold(&mut self, site: DestinationKey, id: SpoolId) {
        self.by_site.entry(site).or_default().add(id);
    }

    /// Whether messages wait for `site`.
    pub fn is_holding(&self, site: &DestinationKey) -> bool {
        self.by_site.contains_key(site)
    }

    /// Whether `id` waits for `site`.
    pub fn contains(&self, site: &DestinationKey, id: SpoolId) -> bool {
        self.by_site
            .get(site)
            .is_some_and(|ids| ids.get(&id).is_some())
    }

    /// The site `id` waits for, if it is held. Looks in each site's set:
    /// cheap while few sites hold messages (see [`HeldMessages::sites`]).
    pub fn site_of(&self, id: SpoolId) -> Option<&DestinationKey> {
        self.by_site
            .iter()
            .find(|(_, ids)| ids.get(&id).is_some())
            .map(|(site, _)| site)
    }

    /// `id` no longer waits for `site` (it is being handed out).
    pub fn forget(&mut self, site: &DestinationKey, id: SpoolId) {
        if let Some(ids) = self.by_site.get_mut(site) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_site.remove(site);
            }
        }
    }

    /// Sites with messages held.
    pub fn sites(&self) -> impl Iterator<Item = &DestinationKey> + '_ {
        self.by_site.keys()
    }

    /// Messages held per site.
    pub fn counts(&self) -> impl Iterator<Item = (&DestinationKey, usize)> + '_ {
        self.by_site.iter().map(|(site, ids)| (site, ids.len()))
    }

    /// How many sites have messages held.
    pub fn site_count(&self) -> usize {
        self.by_site.len()
    }

    /// Hands messages back, oldest first, as far as each site has room
    /// (`room`, asked once per site): `release` makes one due and says
    /// whether it still waited (one that no longer did, being active again
    /// or gone, leaves the set without using room). Sites left with
    /// nothing held are forgotten.
    pub fn release(
        &mut self,
        mut room: impl FnMut(&DestinationKey) -> usize,
        mut release: impl FnMut(SpoolId) -> bool,
    ) {
        self.by_site.retain(|site, ids| {
            let mut room = room(site);
            while room > 0 {
                let Some((id, ())) = ids.pop_first() else {
                    break;
                };
                if release(id) {
                    room -= 1;
                }
            }
            !ids.is_empty()
        });
    }

    /// Takes every message held for `site` (its suspension ended), in
    /// spool order.
    pub fn take_site(&mut self, site: &DestinationKey) -> Vec<SpoolId> {
        self.by_site
            .remove(site)
            .map(|ids| ids.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Messages held, all sites together.
    pub fn len(&self) -> usize {
        self.by_site.values().map(ChunkedSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_site.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> SpoolId {
        SpoolId::from_u64(n)
    }

    #[test]
    fn released_oldest_first_within_each_sites_room() {
        let a = DestinationKey::route("a.test", 25);
        let b = DestinationKey::route("b.test", 25);
        let mut held = HeldMessages::new();
        for n in [5, 1, 3, 2, 4] {
            held.hold(a.clone(), id(n));
        }
        held.hold(a.clone(), id(3)); // held again: still once
        held.hold(b.clone(), id(10));
        assert_eq!(held.len(), 6);
        assert!(held.is_holding(&a) && held.is_holding(&b));
        assert_eq!(
            (held.site_of(id(3)), held.site_of(id(10))),
            (Some(&a), Some(&b))
        );
        assert_eq!(held.site_of(id(99)), None);
        assert!(held.contains(&a, id(3)) && !held.contains(&b, id(3)));
        assert_eq!(held.site_count(), 2);
        assert_eq!(held.sites().count(), 2);
        let mut out = Vec::new();
        // a has room for 2; id 2 no longer waits (costs no room); b none.
        held.release(
            |site| if *site == a { 2 } else { 0 },
            |i| {
                out.push(i);
                i != id(2)
            },
        );
        assert_eq!(out, vec![id(1), id(2), id(3)]);
        assert_eq!(held.len(), 3);
        assert_eq!(held.take_site(&a), vec![id(4), id(5)]);
        assert!(!held.is_holding(&a));
        assert!(held.take_site(&a).is_empty());
        held.forget(&b, id(10));
        assert!(held.is_empty() && !held.is_holding(&b));
        held.hold(b.clone(), id(11));
        // b emptied by room: forgotten.
        held.release(|_| 5, |_| true);
        assert!(held.is_empty() && !held.is_holding(&b));
    }
}
