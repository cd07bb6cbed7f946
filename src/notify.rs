//! A wake-up signal inside one core: any task may set it, one waiting
//! task wakes and clears it. Several sets before the wake count as one.
//! It carries no data and decides nothing.

use std::cell::Cell;

use event_listener::Event;

#[derive(Debug, Default)]
pub struct Notify {
    set: Cell<bool>,
    event: Event,
}

impl Notify {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the waiter, now or when it next waits.
    pub fn notify(&self) {
        self.set.set(true);
        self.event.notify(1);
    }

    /// Resolves once notified since the last wait, and clears the signal.
    pub async fn wait(&self) {
        loop {
            if self.set.replace(false) {
                return;
            }
            let listener = self.event.listen();
            if self.set.replace(false) {
                return;
            }
            listener.await;
        }
    }
}
