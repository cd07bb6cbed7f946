//! The stop signal inside one core: set once, wakes every task that waits
//! on it. It carries no policy about what a task does when stopped.

use std::cell::Cell;

use event_listener::Event;

/// One per executor; shared by its tasks through `Rc`.
#[derive(Debug, Default)]
pub struct Shutdown {
    fired: Cell<bool>,
    event: Event,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown; idempotent.
    pub fn fire(&self) {
        self.fired.set(true);
        self.event.notify(usize::MAX);
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once [`Shutdown::fire`] has been called.
    pub async fn wait(&self) {
        while !self.fired.get() {
            let listener = self.event.listen();
            if self.fired.get() {
                break;
            }
            listener.await;
        }
    }
}
