//! A BTreeMap-backed [`Store`] for unit tests of command semantics: the simplest model of the
//! laws in `store/mod.rs`, with a settable clock.

use super::{
    BoxFuture, Entry, Mutation, Outcome, RequestContext, ScanPage, Store, StoreError, evaluate,
};
use bytes::Bytes;
use hearsay_ring::token_of;
use hearsay_types::Token;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct MemoryStore {
    data: Mutex<BTreeMap<(Token, Bytes), Entry>>,
    pub now_ms: AtomicU64,
}

impl MemoryStore {
    pub fn new(now_ms: u64) -> MemoryStore {
        MemoryStore {
            data: Mutex::new(BTreeMap::new()),
            now_ms: AtomicU64::new(now_ms),
        }
    }

    fn live(&self, key: &Bytes) -> Option<Entry> {
        let now = self.now_ms();
        self.data
            .lock()
            .get(&(token_of(key), key.clone()))
            .filter(|e| e.expires_at_ms.is_none_or(|at| at > now))
            .cloned()
    }
}

impl Store for MemoryStore {
    fn get<'a>(
        &'a self,
        _ctx: &'a RequestContext,
        key: Bytes,
    ) -> BoxFuture<'a, Result<Option<Entry>, StoreError>> {
        Box::pin(async move { Ok(self.live(&key)) })
    }

    fn get_many<'a>(
        &'a self,
        _ctx: &'a RequestContext,
        keys: Vec<Bytes>,
    ) -> BoxFuture<'a, Result<Vec<Option<Entry>>, StoreError>> {
        Box::pin(async move { Ok(keys.iter().map(|k| self.live(k)).collect()) })
    }

    fn write<'a>(
        &'a self,
        _ctx: &'a RequestContext,
        mutations: Vec<Mutation>,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StoreError>> {
        Box::pin(async move {
            let now = self.now_ms();
            let mut out = Vec::new();
            for m in mutations {
                let cur = self.live(&m.key);
                let (o, cell) = evaluate(cur.as_ref(), &m, now);
                if let Some(c) = cell {
                    let k = (token_of(&m.key), m.key.clone());
                    let mut data = self.data.lock();
                    match c.value {
                        Some(value) => {
                            data.insert(
                                k,
                                Entry {
                                    value,
                                    expires_at_ms: c.expires_at_ms,
                                },
                            );
                        }
                        None => {
                            data.remove(&k);
                        }
                    }
                }
                out.push(o);
            }
            Ok(out)
        })
    }

    fn scan<'a>(
        &'a self,
        _ctx: &'a RequestContext,
        from: Token,
        count: usize,
    ) -> BoxFuture<'a, Result<ScanPage, StoreError>> {
        Box::pin(async move {
            let now = self.now_ms();
            let data = self.data.lock();
            let mut entries: Vec<(Bytes, Entry)> = Vec::new();
            let mut last: Option<Token> = None;
            for ((t, k), e) in data.range((from, Bytes::new())..) {
                if entries.len() >= count && last != Some(*t) {
                    break;
                }
                if e.expires_at_ms.is_some_and(|at| at <= now) {
                    continue;
                }
                entries.push((k.clone(), e.clone()));
                last = Some(*t);
            }
            let more = last.is_some_and(|l| {
                data.range((Token(l.0.saturating_add(1)), Bytes::new())..)
                    .next()
                    .is_some()
                    && l != Token::MAX
            });
            let next = if more {
                last.map(|l| Token(l.0 + 1))
            } else {
                None
            };
            Ok(ScanPage { entries, next })
        })
    }

    fn count_keys<'a>(
        &'a self,
        _ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let now = self.now_ms();
            Ok(self
                .data
                .lock()
                .values()
                .filter(|e| e.expires_at_ms.is_none_or(|at| at > now))
                .count() as u64)
        })
    }

    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn shutdown(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn info(&self) -> Vec<(&'static str, String, String)> {
        Vec::new()
    }
}

/// Keeps `Ordering` used when the module is compiled alone.
#[allow(dead_code)]
fn _assert_store_is_object_safe(s: &dyn Store) -> &dyn Store {
    s
}
