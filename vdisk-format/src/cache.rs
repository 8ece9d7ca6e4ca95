//! The small cache every container reader keeps its tables in: a few
//! values by file offset, bounded by count, least recently used out first.

use alloc::vec::Vec;

/// A few values by key; the least recently used goes first.
pub(crate) struct Lru<T> {
    /// (key, value, last use).
    entries: Vec<(u64, T, u64)>,
    tick: u64,
    /// Index of the entry used last: sequential reads ask for it again
    /// and again, so it is looked at before the scan.
    last: usize,
}

impl<T> Default for Lru<T> {
    fn default() -> Self {
        Lru {
            entries: Vec::new(),
            tick: 0,
            last: 0,
        }
    }
}

impl<T> Lru<T> {
    /// The value kept for `key`, marked as just used.
    pub(crate) fn get(&mut self, key: u64) -> Option<&T> {
        self.tick += 1;
        let tick = self.tick;
        let i = match self.entries.get(self.last) {
            Some(e) if e.0 == key => self.last,
            _ => self.entries.iter().position(|e| e.0 == key)?,
        };
        self.last = i;
        self.entries.get_mut(i).map(|e| {
            e.2 = tick;
            &e.1
        })
    }

    /// The value kept for `key`, to change in place, marked as just used.
    #[cfg_attr(
        not(feature = "std"),
        allow(dead_code, reason = "the writers need std")
    )]
    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        self.tick += 1;
        let tick = self.tick;
        let i = match self.entries.get(self.last) {
            Some(e) if e.0 == key => self.last,
            _ => self.entries.iter().position(|e| e.0 == key)?,
        };
        self.last = i;
        self.entries.get_mut(i).map(|e| {
            e.2 = tick;
            &mut e.1
        })
    }

    /// Keeps `value` for `key`, dropping the least recently used value
    /// when `max` are kept already.
    pub(crate) fn insert(&mut self, key: u64, value: T, max: usize) {
        self.entries.retain(|e| e.0 != key);
        if self.entries.len() >= max {
            if let Some(lru) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.2)
                .map(|(i, _)| i)
            {
                self.entries.swap_remove(lru);
            }
        }
        self.tick += 1;
        self.entries.push((key, value, self.tick));
    }
}
