//! K-way merge of sorted sources (memtables, SSTables) into one ascending stream with the
//! winning version of each key, by the conflict rule. Sources may come in any order: the
//! conflict rule is a total order, so the result does not depend on which source is "newer".

use crate::cell::{Cell, CellKey};
use crate::error::Result;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A sorted source: strictly ascending keys, at most one cell per key.
pub(crate) type Source = Box<dyn Iterator<Item = Result<(CellKey, Cell)>> + Send>;

struct Head {
    key: CellKey,
    cell: Cell,
    src: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    // Reversed so that the max-heap pops the smallest key first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key
            .cmp(&self.key)
            .then_with(|| other.src.cmp(&self.src))
    }
}

/// The merge. After the first error it yields nothing more.
pub(crate) struct MergeIter {
    sources: Vec<Source>,
    heap: BinaryHeap<Head>,
    started: bool,
    failed: bool,
}

impl std::fmt::Debug for MergeIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergeIter")
            .field("sources", &self.sources.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl MergeIter {
    pub fn new(sources: Vec<Source>) -> MergeIter {
        MergeIter {
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
            started: false,
            failed: false,
        }
    }

    fn pull(&mut self, src: usize) -> Result<()> {
        if let Some(item) = self.sources[src].next() {
            let (key, cell) = item?;
            self.heap.push(Head { key, cell, src });
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(CellKey, Cell)>> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                self.pull(i)?;
            }
        }
        let Some(first) = self.heap.pop() else {
            return Ok(None);
        };
        let (key, mut best, src) = (first.key, first.cell, first.src);
        self.pull(src)?;
        while self.heap.peek().is_some_and(|h| h.key == key) {
            if let Some(h) = self.heap.pop() {
                if h.cell.reconcile_cmp(&best) == Ordering::Greater {
                    best = h.cell;
                }
                self.pull(h.src)?;
            }
        }
        Ok(Some((key, best)))
    }
}

impl Iterator for MergeIter {
    type Item = Result<(CellKey, Cell)>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(x) => x.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearsay_types::{Timestamp, Token};

    fn src(items: Vec<(i64, u64)>) -> Source {
        Box::new(items.into_iter().map(|(t, ts)| {
            Ok((
                CellKey::new(Token(t), &b"k"[..]),
                Cell::value(format!("{ts}"), Timestamp(ts)),
            ))
        }))
    }

    #[test]
    fn merges_in_order_keeping_the_winner() {
        let m = MergeIter::new(vec![
            src(vec![(1, 5), (3, 1)]),
            src(vec![(1, 7), (2, 2)]),
            src(vec![]),
            src(vec![(3, 9)]),
        ]);
        let got: Vec<(i64, u64)> = m
            .map(|r| r.unwrap())
            .map(|(k, c)| (k.token.0, c.timestamp.0))
            .collect();
        assert_eq!(got, vec![(1, 7), (2, 2), (3, 9)]);
    }
}
