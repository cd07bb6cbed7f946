//! What the queue's tables cost per message, weighed by a counting global
//! allocator (issue 13: a million held messages must fit well under 256
//! MiB): a fresh message, one held by a limit of spate's own (the state the
//! engine leaves it in, and its id in `HeldMessages`), and one deferred
//! with the same error as all the others. Prints bytes per message and
//! fails past a bound. Ids arrive nearly in order, as from a group commit
//! (`arrival_order`). Before the tables were packed: 288, 286, 20.6 (a
//! `BTreeSet` of ids) and 331 bytes; now about 116, 114, 10.3 and 114.
//! `SPATE_QUEUE_MEMORY_MESSAGES=1000000` weighs a million (default
//! 200,000, quick in a debug build).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use spate::queue::{DestinationKey, HeldMessages, Queue, QueueEntry, UnixTime};
use spate::spool::SpoolId;

/// Counts the bytes this thread has allocated and not freed.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counter is a const-initialised thread local without a destructor, so
// touching it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

const T0: u64 = 1_700_000_000;

fn messages() -> u64 {
    std::env::var("SPATE_QUEUE_MEMORY_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000)
}

/// Ids as one shard's spool gives them: growing offsets in 64 MiB
/// segments, about 600 bytes apart.
fn id(n: u64) -> SpoolId {
    let per_segment = (64 << 20) / 600;
    SpoolId::from_u64(((n / per_segment) << 32) | ((n % per_segment) * 600))
}

/// The order messages reach the queue in: growing ids, but those of one
/// group commit (here 20 at a time) in the order their sessions woke up
/// (a fixed shuffle), as with concurrent senders.
fn arrival_order(n: u64) -> impl Iterator<Item = u64> {
    const WOKE: [u64; 20] = [
        7, 2, 13, 0, 19, 5, 11, 3, 16, 9, 1, 14, 6, 18, 10, 4, 17, 8, 12, 15,
    ];
    (0..n.div_ceil(20))
        .flat_map(move |g| WOKE.iter().map(move |k| g * 20 + k).filter(move |&i| i < n))
}

/// A message of a bulk sender: one recipient at one domain, shaped like
/// every other (the queue keeps one copy of the shape for them all).
fn entry() -> QueueEntry {
    QueueEntry {
        size: 600,
        recipients: 1,
        received_at: T0,
        acknowledged_at: Some(std::time::Instant::now()),
        shape: std::rc::Rc::new(spate::queue::Shape::new(
            Some("acme"),
            ["someone@bulk.example"],
        )),
    }
}

fn per_message(bytes: isize, n: u64) -> f64 {
    bytes as f64 / n as f64
}

#[test]
fn a_held_message_costs_the_queue_little() {
    let n = messages();
    let site = DestinationKey::route("held.example", 25);
    let base = live();
    let mut queue = Queue::new();
    for i in arrival_order(n) {
        queue.insert(id(i), entry());
    }
    let fresh = live() - base;
    // As the engine holds them: handed out, then held until a suspension
    // ends (or the recheck), and each id noted for its site.
    let until = UnixTime(T0 + 7200);
    for d in queue.due(UnixTime(T0)) {
        queue.hold(d.id, d.attempt, until).expect("current");
    }
    let queue_held = live() - base;
    let before = live();
    let mut held = HeldMessages::new();
    for i in arrival_order(n) {
        held.hold(site.clone(), id(i));
    }
    let held_set = live() - before;
    // The same messages deferred (a real failure), every one with the
    // same reply.
    let deferred_base = live();
    let mut deferred = Queue::new();
    for i in arrival_order(n) {
        deferred.insert(id(i), entry());
    }
    let reply = "451 4.4.1 [192.0.2.25]:25: connection refused";
    for d in deferred.due(UnixTime(T0)) {
        deferred
            .defer(d.id, d.attempt, UnixTime(T0), reply)
            .expect("current");
    }
    let queue_deferred = live() - deferred_base;

    let rows = [
        ("queue, fresh", per_message(fresh, n), 120.0),
        ("queue, held", per_message(queue_held, n), 120.0),
        ("held ids (HeldMessages)", per_message(held_set, n), 12.0),
        (
            "queue, deferred, one reply",
            per_message(queue_deferred, n),
            120.0,
        ),
    ];
    eprintln!("{n} messages, bytes per message:");
    for (what, bytes, _) in rows {
        eprintln!("  {what:<28} {bytes:7.1}");
    }
    for (what, bytes, bound) in rows {
        assert!(
            bytes <= bound,
            "{what}: {bytes:.1} bytes per message, over {bound}"
        );
    }
    assert_eq!(
        (queue.len(), held.len(), deferred.len()),
        (n as usize, n as usize, n as usize)
    );
}
