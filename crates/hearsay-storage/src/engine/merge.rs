//! K-way merge of sorted sources (memtables, SSTables) into one ascending stream with the
//! winning version of each key, by the conflict rule. Sources may come in any order: the
//! conflict rule is a total order, so the result does not depend on which source is "newer".

use crate::cell::{Cell, CellKey};
use crate::error::Result;
use std::cmp::Ordering;

/// A sorted source: strictly ascending keys, at most one cell per key.
pub(crate) type Source = Box<dyn Iterator<Item = Result<(CellKey, Cell)>> + Send>;

/// The merge. After the first error it yields nothing more.
///
/// Each step scans the sources' current heads linearly for the smallest key rather than
/// keeping a binary heap: a scan merges a handful of sources (memtables and a few tables), and
/// a heap's sift moves ~100-byte heads around at every step, which profiled as the largest
/// cost of a short range scan. Compaction merges at most `max_threshold` tables (32 by
/// default), where a comparison of tokens per source per cell is still cheap.
pub(crate) struct MergeIter {
    sources: Vec<Source>,
    /// The next cell of each source (`None`: exhausted or not pulled yet).
    heads: Vec<Option<(CellKey, Cell)>>,
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
            heads: sources.iter().map(|_| None).collect(),
            sources,
            started: false,
            failed: false,
        }
    }

    fn pull(&mut self, src: usize) -> Result<()> {
        self.heads[src] = match self.sources[src].next() {
            Some(item) => Some(item?),
            None => None,
        };
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(CellKey, Cell)>> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                self.pull(i)?;
            }
        }
        // The first source holding the smallest key: sources before it hold larger keys.
        let mut first: Option<(usize, &CellKey)> = None;
        for (i, head) in self.heads.iter().enumerate() {
            if let Some((k, _)) = head
                && first.is_none_or(|(_, m)| k < m)
            {
                first = Some((i, k));
            }
        }
        let Some((first, _)) = first else {
            return Ok(None);
        };
        let Some((key, mut best)) = self.heads[first].take() else {
            return Ok(None);
        };
        self.pull(first)?;
        for i in first + 1..self.heads.len() {
            if self.heads[i].as_ref().is_some_and(|(k, _)| *k == key) {
                if let Some((_, cell)) = self.heads[i].take()
                    && cell.reconcile_cmp(&best) == Ordering::Greater
                {
                    best = cell;
                }
                self.pull(i)?;
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
