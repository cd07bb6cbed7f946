//! Whether the shared limiter (Redis) is usable, and what follows when it
//! is not: each host falls back to its own share of every shared limit,
//! the limit divided by the hosts there are (the most of `[cluster]
//! hosts` and the hosts heard from lately), says so once when it falls
//! back and once when it recovers. Sans-IO: the client thread reports
//! each call's success or failure and logs the transitions it is given.

/// What changed with a call's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The first successful call after start.
    Connected,
    /// The limiter cannot be reached: every host uses its own share.
    FellBack,
    /// Reached again after a fallback: shared limits again.
    Recovered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Up,
    Down,
}

/// See the module header.
#[derive(Debug, Clone)]
pub struct Health {
    state: State,
    fallbacks: u64,
    /// Hosts heard from in the last heartbeat window (0: never known).
    heard: usize,
    /// `[cluster] hosts`: the fewest hosts assumed.
    configured: usize,
}

impl Health {
    pub fn new(configured_hosts: usize) -> Health {
        Health {
            state: State::Starting,
            fallbacks: 0,
            heard: 0,
            configured: configured_hosts.max(1),
        }
    }

    /// A call to the limiter succeeded.
    pub fn succeeded(&mut self) -> Option<Transition> {
        let was = std::mem::replace(&mut self.state, State::Up);
        match was {
            State::Starting => Some(Transition::Connected),
            State::Down => Some(Transition::Recovered),
            State::Up => None,
        }
    }

    /// A call to the limiter failed (refused, timed out, broken).
    pub fn failed(&mut self) -> Option<Transition> {
        let was = std::mem::replace(&mut self.state, State::Down);
        if was == State::Down {
            return None;
        }
        self.fallbacks += 1;
        Some(Transition::FellBack)
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Times this host fell back to its own share.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks
    }

    /// A heartbeat counted `n` hosts alive (this one included).
    pub fn heard(&mut self, n: usize) {
        self.heard = n;
    }

    /// The hosts a limit is divided by in fallback (and for connections):
    /// the configured number or the last count heard, whichever is more,
    /// so a host never takes more than its share when others are there.
    pub fn hosts(&self) -> usize {
        self.configured.max(self.heard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_each_change_once() {
        let mut h = Health::new(1);
        assert_eq!(
            h.failed(),
            Some(Transition::FellBack),
            "down from the start"
        );
        assert_eq!(h.failed(), None);
        assert!(!h.is_up());
        assert_eq!(h.succeeded(), Some(Transition::Recovered));
        assert_eq!(h.succeeded(), None);
        assert_eq!(h.failed(), Some(Transition::FellBack));
        assert_eq!(h.fallbacks(), 2);
        let mut h = Health::new(1);
        assert_eq!(h.succeeded(), Some(Transition::Connected));
        assert!(h.is_up());
        assert_eq!(h.fallbacks(), 0);
    }

    #[test]
    fn the_share_divides_by_the_most_hosts_known() {
        let mut h = Health::new(2);
        assert_eq!(h.hosts(), 2, "nothing heard yet: the configured number");
        h.heard(3);
        assert_eq!(h.hosts(), 3);
        h.heard(1);
        assert_eq!(h.hosts(), 2, "never fewer than configured");
        assert_eq!(Health::new(0).hosts(), 1);
    }
}
