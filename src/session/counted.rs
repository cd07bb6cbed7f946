//! Counts a session in its shard's metrics while it lives: opened when
//! made, closed when dropped, however the session ends (even cancelled at
//! shutdown). It counts nothing else.

use std::rc::Rc;

use crate::metrics::ConnectionKind;
use crate::shard::ShardContext;
use crate::spool::SegmentStore;

/// One open connection of `kind` in the shard's gauges.
pub struct CountedConnection<S: SegmentStore> {
    ctx: Rc<ShardContext<S>>,
    kind: ConnectionKind,
}

impl<S: SegmentStore> CountedConnection<S> {
    pub fn open(ctx: &Rc<ShardContext<S>>, kind: ConnectionKind) -> Self {
        ctx.metrics.borrow_mut().connection_opened(kind);
        CountedConnection {
            ctx: Rc::clone(ctx),
            kind,
        }
    }
}

impl<S: SegmentStore> Drop for CountedConnection<S> {
    fn drop(&mut self) {
        self.ctx.metrics.borrow_mut().connection_closed(self.kind);
    }
}
