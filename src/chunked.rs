//! `ChunkedMap`: an ordered map stored as sorted runs ("chunks") of at most
//! [`CHUNK`] entries, indexed by their first key. Keys that arrive in
//! ascending order, or nearly (spool ids, deadlines), fill chunks nearly
//! completely (a full chunk splits where the new key goes),
//! where a `BTreeMap` leaves each node a little over half full; so the
//! per-message tables of the queue and the spool's ledger cost little more
//! than their entries (issue 13: a million held messages). A chunk's capacity follows its length
//! (never more than four times it, or [`MIN_CAPACITY`]) and small chunks
//! merge with a neighbour, so removals in any order give the memory back.
//! It stores and orders, nothing else.

use std::collections::BTreeMap;

/// Entries per chunk at most: lookups binary-search a chunk, inserts and
/// removals move at most this many entries.
pub const CHUNK: usize = 64;
/// The smallest capacity a chunk is given or shrunk to.
pub const MIN_CAPACITY: usize = 4;

/// See the module header.
#[derive(Debug, Clone)]
pub struct ChunkedMap<K, V> {
    /// Sorted, non-empty chunks by their first key; every key of a chunk is
    /// below the first key of the next.
    chunks: BTreeMap<K, Vec<(K, V)>>,
    len: usize,
}

impl<K, V> Default for ChunkedMap<K, V> {
    fn default() -> Self {
        ChunkedMap {
            chunks: BTreeMap::new(),
            len: 0,
        }
    }
}

/// Room for one more entry: capacity doubles up to [`CHUNK`], exactly.
fn grow<T>(chunk: &mut Vec<T>) {
    if chunk.len() == chunk.capacity() {
        let want = (chunk.capacity() * 2).clamp(MIN_CAPACITY, CHUNK);
        chunk.reserve_exact(want.saturating_sub(chunk.len()));
    }
}

/// Gives memory back once a chunk is a quarter full (down to twice its
/// length).
fn shrink<T>(chunk: &mut Vec<T>) {
    if chunk.capacity() > MIN_CAPACITY && chunk.len() <= chunk.capacity() / 4 {
        chunk.shrink_to((chunk.len() * 2).max(MIN_CAPACITY));
    }
}

impl<K: Ord + Copy, V> ChunkedMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk whose range holds `key`, by its first key.
    fn chunk_of(&self, key: &K) -> Option<(&K, &Vec<(K, V)>)> {
        self.chunks.range(..=key).next_back()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        let (_, chunk) = self.chunk_of(key)?;
        let i = chunk.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        chunk.get(i).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let (_, chunk) = self.chunks.range_mut(..=key).next_back()?;
        let i = chunk.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        chunk.get_mut(i).map(|(_, v)| v)
    }

    /// Inserts or replaces; the old value when there was one.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some((_, chunk)) = self.chunks.range_mut(..=key).next_back() {
            let i = match chunk.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) => return chunk.get_mut(i).map(|e| std::mem::replace(&mut e.1, value)),
                Err(i) => i,
            };
            self.len += 1;
            if chunk.len() < CHUNK {
                grow(chunk);
                chunk.insert(i, (key, value));
                return None;
            }
            // Full: split where the key goes. The entries after it move
            // to a new chunk, the key joins the ones before: keys that
            // arrive nearly in order (ids of one group commit, acknowledged
            // in the order their sessions woke) keep the chunks they pass
            // nearly full, where halves would leave each half empty. (`i`
            // is at least 1: the chunk's first key is below `key`.)
            let mut right = chunk.split_off(i);
            if right.is_empty() {
                right.reserve_exact(MIN_CAPACITY);
                right.push((key, value));
            } else {
                chunk.push((key, value));
                shrink(chunk);
                shrink(&mut right);
            }
            if let Some(first) = right.first().map(|(k, _)| *k) {
                self.chunks.insert(first, right);
            }
            return None;
        }
        self.len += 1;
        // Below every key: the first chunk takes it (new first key) or,
        // when full, a chunk of its own goes before it.
        match self.chunks.first_entry() {
            Some(first) if first.get().len() < CHUNK => {
                let mut chunk = first.remove();
                grow(&mut chunk);
                chunk.insert(0, (key, value));
                self.chunks.insert(key, chunk);
            }
            _ => {
                let mut chunk = Vec::with_capacity(MIN_CAPACITY);
                chunk.push((key, value));
                self.chunks.insert(key, chunk);
            }
        }
        None
    }

    /// Removes `key`; its value when it was there.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (&first, chunk) = self.chunks.range_mut(..=key).next_back()?;
        let i = chunk.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        let (_, value) = chunk.remove(i);
        self.len -= 1;
        self.tidy(first);
        Some(value)
    }

    /// The smallest entry.
    pub fn first(&self) -> Option<(&K, &V)> {
        let (_, chunk) = self.chunks.first_key_value()?;
        chunk.first().map(|(k, v)| (k, v))
    }

    /// The greatest entry whose key is at most `key`.
    pub fn last_at_most(&self, key: &K) -> Option<(&K, &V)> {
        let (_, chunk) = self.chunk_of(key)?;
        let i = match chunk.binary_search_by(|(k, _)| k.cmp(key)) {
            Ok(i) => i,
            // The chunk's first key is at most `key`: `i` is at least 1.
            Err(i) => i.checked_sub(1)?,
        };
        chunk.get(i).map(|(k, v)| (k, v))
    }

    /// Removes and returns the smallest entry.
    pub fn pop_first(&mut self) -> Option<(K, V)> {
        let (&first, chunk) = self.chunks.iter_mut().next()?;
        if chunk.is_empty() {
            return None;
        }
        let entry = chunk.remove(0);
        self.len -= 1;
        self.tidy(first);
        Some(entry)
    }

    /// After a removal from the chunk keyed `first`: drops it when empty,
    /// re-keys it when its first key changed, shrinks it, and merges it
    /// into a neighbour when both are small.
    fn tidy(&mut self, first: K) {
        let Some(mut chunk) = self.chunks.remove(&first) else {
            return;
        };
        if chunk.is_empty() {
            return;
        }
        shrink(&mut chunk);
        let small = chunk.len() < CHUNK / 4;
        let key = chunk[0].0;
        if small {
            // The next chunk joins this one, or this one joins the previous.
            let next = self
                .chunks
                .range(key..)
                .next()
                .filter(|(_, c)| c.len() + chunk.len() <= CHUNK / 2)
                .map(|(k, _)| *k);
            if let Some(next) = next.and_then(|k| self.chunks.remove(&k)) {
                chunk.reserve_exact(next.len());
                chunk.extend(next);
            } else if let Some((_, prev)) = self
                .chunks
                .range_mut(..key)
                .next_back()
                .filter(|(_, c)| c.len() + chunk.len() <= CHUNK / 2)
            {
                prev.reserve_exact(chunk.len());
                prev.extend(chunk);
                return;
            }
        }
        self.chunks.insert(key, chunk);
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.chunks
            .values()
            .flat_map(|chunk| chunk.iter().map(|(k, v)| (k, v)))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Bytes held by the chunks themselves (entries and spare capacity),
    /// without the index over them: what the memory tests weigh.
    #[cfg(test)]
    pub fn chunk_bytes(&self) -> usize {
        self.chunks
            .values()
            .map(|c| c.capacity() * std::mem::size_of::<(K, V)>())
            .sum()
    }

    /// Chunks, for the memory tests.
    #[cfg(test)]
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

/// An ordered set as a [`ChunkedMap`] without values.
pub type ChunkedSet<K> = ChunkedMap<K, ()>;

impl<K: Ord + Copy> ChunkedMap<K, ()> {
    /// Adds `key`; false when it was there already.
    pub fn add(&mut self, key: K) -> bool {
        self.insert(key, ()).is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Every chunk sorted, non-empty, at most CHUNK long, keyed by its
    /// first key, below the next; capacity at most four times the length.
    fn check<V>(m: &ChunkedMap<u32, V>) {
        let mut last: Option<u32> = None;
        let mut len = 0;
        for (first, chunk) in &m.chunks {
            assert!(!chunk.is_empty());
            assert!(chunk.len() <= CHUNK);
            assert_eq!(chunk[0].0, *first);
            assert!(
                chunk.capacity() <= CHUNK
                    && chunk.capacity() <= (4 * chunk.len()).max(MIN_CAPACITY),
                "capacity {} for {}",
                chunk.capacity(),
                chunk.len()
            );
            for (k, _) in chunk {
                assert!(last < Some(*k), "out of order");
                last = Some(*k);
            }
            len += chunk.len();
        }
        assert_eq!(len, m.len());
    }

    #[test]
    fn behaves_as_a_btreemap_under_random_operations() {
        for seed in 0..20u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut m: ChunkedMap<u32, u64> = ChunkedMap::new();
            let mut model: BTreeMap<u32, u64> = BTreeMap::new();
            let span = [50u32, 500, 5000][seed as usize % 3];
            for step in 0..20_000u64 {
                match rng.gen_range(0..10) {
                    0..=4 => {
                        let k = rng.gen_range(0..span);
                        assert_eq!(m.insert(k, step), model.insert(k, step));
                    }
                    5 => {
                        // ascending appends, the common case
                        let k = model.last_key_value().map_or(0, |(k, _)| k + 1);
                        assert_eq!(m.insert(k, step), model.insert(k, step));
                    }
                    6 | 7 => {
                        let k = rng.gen_range(0..span);
                        assert_eq!(m.remove(&k), model.remove(&k));
                    }
                    8 => assert_eq!(m.pop_first(), model.pop_first()),
                    _ => {
                        let k = rng.gen_range(0..span);
                        assert_eq!(m.get(&k), model.get(&k));
                        assert_eq!(m.last_at_most(&k), model.range(..=k).next_back());
                        if let Some(v) = m.get_mut(&k) {
                            *v += 1;
                            *model.get_mut(&k).expect("same keys") += 1;
                        }
                    }
                }
                if step % 97 == 0 {
                    check(&m);
                    assert!(m.iter().eq(model.iter()), "seed {seed} step {step}");
                }
            }
            check(&m);
            assert!(m.iter().eq(model.iter()));
            assert_eq!(m.first(), model.first_key_value());
            while let Some(e) = model.pop_first() {
                assert_eq!(m.pop_first(), Some(e));
            }
            assert!(m.is_empty() && m.chunks.is_empty());
        }
    }

    #[test]
    fn ascending_keys_fill_every_chunk() {
        let mut m: ChunkedSet<u32> = ChunkedSet::new();
        for k in 0..100_000 {
            assert!(m.add(k));
        }
        assert!(!m.add(5));
        check(&m);
        // All full but the last.
        assert_eq!(m.chunk_count(), 100_000usize.div_ceil(CHUNK));
        assert!(m.chunk_bytes() <= (100_000 + CHUNK) * std::mem::size_of::<u32>());
        // Descending keys too (each new one goes first).
        let mut d: ChunkedSet<u32> = ChunkedSet::new();
        for k in (0..10_000).rev() {
            d.add(k);
        }
        check(&d);
        assert!(d.chunk_count() <= 10_000usize.div_ceil(CHUNK) + 1);
    }

    #[test]
    fn keys_nearly_in_order_fill_chunks_nearly() {
        // Ascending, but shuffled within each window of 20 (a group
        // commit's messages, acknowledged in any order).
        let mut rng = StdRng::seed_from_u64(3);
        let mut m: ChunkedSet<u32> = ChunkedSet::new();
        for window in (0..100_000u32).collect::<Vec<_>>().chunks_mut(20) {
            for i in (1..window.len()).rev() {
                window.swap(i, rng.gen_range(0..=i));
            }
            for &k in window.iter() {
                m.add(k);
            }
        }
        check(&m);
        let bytes = m.chunk_bytes() as f64;
        let entries = (100_000 * std::mem::size_of::<u32>()) as f64;
        assert!(bytes < entries * 1.3, "{bytes} bytes for {entries}");
    }

    #[test]
    fn removals_in_any_order_give_memory_back() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut m: ChunkedMap<u32, [u64; 4]> = ChunkedMap::new();
        for k in 0..64_000 {
            m.insert(k, [0; 4]);
        }
        let full = m.chunk_bytes();
        // Keep one key in 64, scattered: the rest removed at random.
        let mut keys: Vec<u32> = (0..64_000).filter(|k| k % 64 != 17).collect();
        for i in (1..keys.len()).rev() {
            keys.swap(i, rng.gen_range(0..=i));
        }
        for k in keys {
            assert!(m.remove(&k).is_some());
        }
        check(&m);
        assert_eq!(m.len(), 1000);
        assert!(
            m.chunk_bytes() * 16 <= full,
            "{} bytes left of {full} for 1/64 of the entries",
            m.chunk_bytes()
        );
    }
}
