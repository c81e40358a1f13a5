//! Keyspace definitions across the cluster: loading them from the local `system` keyspace,
//! merging definitions (a change made here or pulled from a peer), keeping the engine's
//! keyspaces in step, and pulling from peers whose gossiped schema version differs. The pure
//! schema (merge rule, version hash, stored form) is in [`super::schema`].

use super::messages::SchemaPull;
use super::schema::{
    self, DEFAULT_KEYSPACE, KeyspaceChange, KeyspaceDef, KeyspaceOptions, SYSTEM_KEYSPACE, Schema,
    TombstoneGc,
};
use super::{Inner, Node, NodeError, storage_err};
use hearsay_gossip::StateKey;
use hearsay_ring::ReplicationStrategy;
use hearsay_storage::Engine;
use hearsay_types::ConsistencyLevel;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// How often a peer with a different schema version is asked again, at most, in ms: a pull
/// is one small RPC, and versions converge within a round or two.
const SCHEMA_PULL_INTERVAL_MS: u64 = 1_000;

pub(super) fn load_schema(engine: &Engine, default_rf: usize) -> Result<Schema, NodeError> {
    let mut schema = Schema::with_default(default_rf);
    if !engine.keyspaces().iter().any(|k| k == SYSTEM_KEYSPACE) {
        match engine.create_keyspace(SYSTEM_KEYSPACE, hearsay_storage::KeyspaceOptions::default()) {
            Ok(()) | Err(hearsay_storage::Error::KeyspaceExists(_)) => {}
            Err(e) => return Err(storage_err(e)),
        }
    }
    let iter = engine
        .scan(
            SYSTEM_KEYSPACE,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
        )
        .map_err(storage_err)?;
    for item in iter {
        let (key, cell) = item.map_err(storage_err)?;
        // The system keyspace also holds repair records, the disk probe and the
        // bootstrapped marker: only definitions are read as definitions.
        if !key.key.starts_with(schema::DEF_KEY_PREFIX.as_bytes()) {
            continue;
        }
        if let Some(def) = schema::def_from_cell(&cell) {
            schema.merge(def);
        }
    }
    Ok(schema)
}

impl Node {
    /// Creates a keyspace cluster-wide with the default options (the definition spreads by
    /// schema pull).
    pub async fn create_keyspace(
        &self,
        name: &str,
        strategy: ReplicationStrategy,
        default_consistency: Option<ConsistencyLevel>,
    ) -> Result<(), NodeError> {
        self.create_keyspace_with(
            name,
            strategy,
            default_consistency,
            KeyspaceOptions::default(),
        )
        .await
    }

    /// Creates a keyspace cluster-wide with `options`.
    pub async fn create_keyspace_with(
        &self,
        name: &str,
        strategy: ReplicationStrategy,
        default_consistency: Option<ConsistencyLevel>,
        options: KeyspaceOptions,
    ) -> Result<(), NodeError> {
        // Schema changes are last-write-wins by timestamp: a skewed clock must not mint them.
        self.inner.check_write_coordinator()?;
        hearsay_storage::config::validate_keyspace_name(name)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        if name == SYSTEM_KEYSPACE {
            return Err(NodeError::Invalid("the system keyspace is reserved".into()));
        }
        strategy
            .validate()
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        options.validate().map_err(NodeError::Invalid)?;
        if self.inner.schema.lock().get(name).is_some() {
            return Err(NodeError::KeyspaceExists(name.to_string()));
        }
        self.inner
            .apply_defs(vec![KeyspaceDef {
                name: name.to_string(),
                strategy,
                default_consistency,
                timestamp: self.inner.hlc.now(),
                dropped: false,
                options,
            }])
            .await;
        Ok(())
    }

    /// Changes what is given of a keyspace's strategy and default level, and nothing else
    /// (`None` keeps the current value). Existing data is not moved (no streaming yet):
    /// raising RF makes reads repair new replicas as they go.
    pub async fn alter_keyspace(
        &self,
        name: &str,
        strategy: Option<ReplicationStrategy>,
        default_consistency: Option<ConsistencyLevel>,
    ) -> Result<(), NodeError> {
        self.alter_keyspace_with(
            name,
            KeyspaceChange {
                strategy,
                default_consistency,
                ..KeyspaceChange::default()
            },
        )
        .await
    }

    /// Changes what `change` names of a keyspace's definition, and nothing else.
    pub async fn alter_keyspace_with(
        &self,
        name: &str,
        change: KeyspaceChange,
    ) -> Result<(), NodeError> {
        // Schema changes are last-write-wins by timestamp: a skewed clock must not mint them.
        self.inner.check_write_coordinator()?;
        if let Some(s) = &change.strategy {
            s.validate()
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
        }
        let current = self
            .inner
            .schema
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| NodeError::NoSuchKeyspace(name.to_string()))?;
        let mut options = current.options.clone();
        change.apply_to(&mut options);
        options.validate().map_err(NodeError::Invalid)?;
        self.inner
            .apply_defs(vec![KeyspaceDef {
                name: name.to_string(),
                strategy: change.strategy.unwrap_or(current.strategy),
                default_consistency: change.default_consistency.or(current.default_consistency),
                timestamp: self.inner.hlc.now(),
                dropped: false,
                options,
            }])
            .await;
        Ok(())
    }

    /// Drops a keyspace cluster-wide and deletes its data on every node. `default` stays.
    pub async fn drop_keyspace(&self, name: &str) -> Result<(), NodeError> {
        // Schema changes are last-write-wins by timestamp: a skewed clock must not mint them.
        self.inner.check_write_coordinator()?;
        if name == DEFAULT_KEYSPACE {
            return Err(NodeError::Invalid(
                "the default keyspace cannot be dropped".into(),
            ));
        }
        let def = self
            .inner
            .schema
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| NodeError::NoSuchKeyspace(name.to_string()))?;
        self.inner
            .apply_defs(vec![KeyspaceDef {
                dropped: true,
                timestamp: self.inner.hlc.now(),
                ..def
            }])
            .await;
        Ok(())
    }

    /// Live keyspace definitions, by name.
    pub fn keyspaces(&self) -> Vec<KeyspaceDef> {
        self.inner.schema.lock().live_defs().cloned().collect()
    }

    /// The schema version this node gossips.
    pub fn schema_version(&self) -> String {
        self.inner.schema.lock().version()
    }
}

impl Inner {
    /// Creates engine keyspaces for live definitions and drops those of dropped ones.
    pub(super) fn ensure_engine_keyspaces(&self) {
        let schema = self.schema.lock().clone();
        self.sync_engine_keyspaces(&schema);
    }

    pub(super) fn sync_engine_keyspaces(&self, schema: &Schema) {
        let existing = self.engine.keyspaces();
        for def in schema.defs() {
            let exists = existing.contains(&def.name);
            if !def.dropped && !exists {
                match self
                    .engine
                    .create_keyspace(&def.name, def.options.engine_options())
                {
                    Ok(()) | Err(hearsay_storage::Error::KeyspaceExists(_)) => {}
                    Err(e) => {
                        tracing::error!(keyspace = %def.name, error = %e, "cannot create keyspace")
                    }
                }
            } else if def.dropped
                && exists
                && def.name != DEFAULT_KEYSPACE
                && let Err(e) = self.engine.drop_keyspace(&def.name)
            {
                tracing::error!(keyspace = %def.name, error = %e, "cannot drop keyspace");
            } else if !def.dropped && exists {
                // Options changed by an ALTER take effect live (a no-op when equal).
                let want = def.options.engine_options();
                if self.engine.keyspace_options(&def.name).ok() != Some(want)
                    && let Err(e) = self.engine.alter_keyspace(&def.name, want)
                {
                    tracing::error!(keyspace = %def.name, error = %e, "cannot change keyspace options");
                }
            }
            if !def.dropped {
                self.install_purge_horizon(def);
            }
        }
    }

    /// `tombstone_gc = repair`: the engine purges a keyspace's tombstones only below the
    /// watermarks of completed repairs; `timeout`: by `gc_grace`.
    pub(super) fn install_purge_horizon(&self, def: &KeyspaceDef) {
        let horizon: Option<Arc<dyn hearsay_storage::PurgeHorizon>> = match def.options.tombstone_gc
        {
            TombstoneGc::Repair => Some(Arc::new(super::repair::KeyspaceHorizon::new(
                self.repair.watermarks.clone(),
                &def.name,
            ))),
            TombstoneGc::Timeout => None,
        };
        if let Err(e) = self.engine.set_purge_horizon(&def.name, horizon) {
            tracing::debug!(keyspace = %def.name, error = %e, "cannot set the purge horizon");
        }
    }

    /// Merges definitions (newest per keyspace wins), persists the winners, creates or drops
    /// engine keyspaces, and announces the new schema version. Returns whether anything changed.
    pub(crate) async fn apply_defs(self: &Arc<Self>, defs: Vec<KeyspaceDef>) -> bool {
        let this = self.clone();
        let changed = tokio::task::spawn_blocking(move || {
            // Decide the winners on a copy, make them durable and create their engine
            // keyspaces, and only then publish them: a node must never advertise (or route
            // by) a keyspace its engine cannot take writes for yet.
            let mut next = this.schema.lock().clone();
            let winners: Vec<KeyspaceDef> =
                defs.into_iter().filter(|d| next.merge(d.clone())).collect();
            if winners.is_empty() {
                return false;
            }
            let cells: Vec<_> = winners.iter().map(schema::def_to_cell).collect();
            if let Err(e) = this.engine.apply(SYSTEM_KEYSPACE, &cells) {
                tracing::error!(error = %e, "cannot persist keyspace definitions");
            }
            this.sync_engine_keyspaces(&next);
            let membership = this.membership_now();
            let mut schema = this.schema.lock();
            for d in winners {
                schema.merge(d);
            }
            // Route by it before anyone can see it: a client that saw the new keyspace (or
            // schema version) and wrote to it got NoSuchKeyspace until the next rebuild.
            this.install_view(membership, &schema);
            true
        })
        .await
        .unwrap_or(false);
        if changed {
            let version = self.schema.lock().version();
            if let Some(g) = self.gossip() {
                let _ = g.set_local_state(StateKey::SchemaVersion, version.into_bytes());
            }
        }
        changed
    }

    /// Pulls definitions from alive peers that gossip a different schema version (at most
    /// once per `SCHEMA_PULL_INTERVAL_MS` per peer).
    pub(super) fn maybe_pull_schema(self: &Arc<Self>) {
        let view = self.current_view();
        let ours = self.schema.lock().version();
        let now = Instant::now();
        for m in view.membership.members.values() {
            if m.id == self.id || !m.is_alive() {
                continue;
            }
            let (Some(v), Some(addr)) = (&m.schema_version, m.cluster_addr) else {
                continue;
            };
            if *v == ours {
                continue;
            }
            {
                let mut last = self.last_schema_pull.lock();
                if last.get(&m.id).is_some_and(|t| {
                    now.duration_since(*t) < Duration::from_millis(SCHEMA_PULL_INTERVAL_MS)
                }) {
                    continue;
                }
                last.insert(m.id, now);
            }
            let this = self.clone();
            tokio::spawn(async move {
                this.counters.schema_pulls.fetch_add(1, Relaxed);
                let timeout = Duration::from_millis(this.config.read_timeout_ms);
                match this.rpc.call(addr, &SchemaPull {}, timeout).await {
                    Ok(reply) => {
                        this.apply_defs(reply.defs).await;
                    }
                    Err(e) => {
                        this.counters.schema_pull_failures.fetch_add(1, Relaxed);
                        tracing::debug!(%addr, error = %e, "schema pull failed");
                    }
                }
            });
        }
    }
}
