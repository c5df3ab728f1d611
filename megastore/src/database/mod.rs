//! A Megastore database on one replica: transactions on entity groups through each
//! group's log in its root row, the three read modes, index queries, schema changes
//! with index back-fill, and the background global-index maintainer.
//!
//! A transaction reads at the group's latest position `p` (after rolling forward every
//! committed entry), buffers its writes, and commits them as one log entry by getting
//! position `p + 1` accepted (compare-and-set on that position's cell in the root row).
//! Of two transactions that read at `p`, exactly one gets `p + 1`; the other retries
//! from a fresh read. The entry is then applied to the data and the group's applied
//! position advanced; a crash in between is repaired by whoever reads the group next.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bigtable::clock::{Clock, SystemClock};
use bigtable::Engine;
use parking_lot::{Mutex, RwLock};

use crate::catalog::Catalog;
use crate::coordinator::Coordinator;
use crate::global::IndexQueue;
use crate::index::IndexHit;
use crate::keys::{row_key, storage_table, Value};
use crate::layout::{create_tables, data_table, GroupMeta, ValueRange};
use crate::read::{self, ReadMode};
use crate::replica::{Replica, RootRow};
use crate::replicas::{Peer, ReplicaKind, Replication};
use crate::schema::{parse, GroupRole, IndexScope, Schema};
use crate::sim::Rng;
use crate::txn::{Snapshot, Transaction};
use crate::Error;
use commit::CommitQueues;
pub(crate) use commit::{Prepared, Verdict};
pub use delivery::QueueStats;
pub(crate) use group::Ran;
pub use two_phase::{MultiCommitted, MultiTransaction, PreparedMulti};

mod commit;
mod delivery;
pub mod detached;
mod group;
mod indexing;
mod proposing;
mod replicated;
mod schema_changes;
use schema_changes::unbuilt_indexes;
mod schema_versions;
mod suspects;
mod two_phase;

#[derive(Clone)]
pub struct DatabaseOptions {
    /// How many times `transact` runs the closure before giving up on conflicts.
    pub max_attempts: u32,
    /// Log positions kept below the applied (and globally indexed) position; older ones
    /// are deleted. At least 1.
    pub log_retention: u64,
    /// This replica's id (nominated as the next position's leader by its writes).
    pub replica_id: u32,
    pub clock: Arc<dyn Clock>,
    /// The replicas of the database's groups and this one's place among them; `None`:
    /// this replica alone.
    pub replication: Option<Replication>,
    /// Runs the queue deliverer in a background thread (the simulator delivers with
    /// [`Database::deliver_messages`] instead).
    pub deliver_in_background: bool,
    /// A two-phase transaction prepared longer ago than this is taken as abandoned by
    /// its coordinator: the upkeep thread, or a writer it locks out, finishes it.
    pub prepared_timeout: std::time::Duration,
    /// How long overwritten versions of entities and index entries are kept: a snapshot
    /// or transaction reads for at most this long after it began
    /// (`Error::SnapshotTooOld` after). Replicas' clocks must agree to well within it.
    pub version_retention: std::time::Duration,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        DatabaseOptions {
            max_attempts: 32,
            log_retention: 16,
            replica_id: 0,
            clock: Arc::new(SystemClock),
            replication: None,
            deliver_in_background: true,
            prepared_timeout: std::time::Duration::from_secs(5),
            version_retention: std::time::Duration::from_secs(3600),
        }
    }
}

/// An entity group, named by its root entity: the root table and its primary key.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupKey {
    pub root: String,
    pub key: Vec<Value>,
}

impl GroupKey {
    pub fn new(root: impl Into<String>, key: Vec<Value>) -> Self {
        GroupKey {
            root: root.into(),
            key,
        }
    }
}

/// A group as a transaction names it: its root table, and its root key when known
/// (a back-fill walks root rows without decoding their keys).
#[derive(Clone, Copy)]
pub(crate) struct GroupName<'a> {
    pub root: &'a str,
    pub key: Option<&'a [Value]>,
}

impl<'a> GroupName<'a> {
    pub fn table(root: &'a str) -> Self {
        GroupName { root, key: None }
    }
}

impl<'a> From<&'a GroupKey> for GroupName<'a> {
    fn from(group: &'a GroupKey) -> Self {
        GroupName {
            root: &group.root,
            key: Some(&group.key),
        }
    }
}

/// What a successful `transact` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The log position of the transaction's entry, or the position it read at when it
    /// wrote nothing.
    pub position: u64,
    /// The entry's timestamp (its cells' timestamp).
    pub timestamp: i64,
    /// Whether the transaction wrote anything (a log entry).
    pub wrote: bool,
    /// How many times the closure ran.
    pub attempts: u32,
}

/// A possibly stale answer: it reflects every commit with a timestamp at or below
/// `watermark`; later commits may be missing from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stale<T> {
    pub value: T,
    pub watermark: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatabaseStats {
    /// Transactions committed by this replica.
    pub commits: u64,
    /// Transaction runs that could not commit because another commit changed what they
    /// read (each ran again).
    pub conflicts: u64,
    /// Log entries this replica's transactions committed (several transactions may
    /// share one).
    pub entries: u64,
    /// Log entries applied (by their writer or by a later reader rolling forward).
    pub entries_applied: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    conflicts: AtomicU64,
    entries: AtomicU64,
    applied: AtomicU64,
}

/// What the transactions, reads and the indexer thread share.
pub(crate) struct Core {
    replica: Replica,
    name: String,
    current: RwLock<(u64, Arc<Schema>)>,
    versions: Mutex<BTreeMap<u64, Arc<Schema>>>,
    /// Indexes whose back-fill has not finished: queries on them are refused.
    building: Mutex<BTreeSet<String>>,
    /// Signalled when an index leaves `building`.
    built: parking_lot::Condvar,
    /// A back-fill was interrupted (by a crash, or an error): the upkeep thread
    /// finishes it.
    resume_backfills: std::sync::atomic::AtomicBool,
    /// Held (shared) by each transaction attempt; a schema change takes it exclusively
    /// so that no transaction of the old version commits after its back-fill starts.
    schema_gate: RwLock<()>,
    queue: IndexQueue,
    options: DatabaseOptions,
    counters: Counters,
    /// Source of unique proposal ids: a random start, then a counter.
    proposals: AtomicU64,
    /// This replica's coordinator (used only when replicated and full).
    coordinator: Mutex<Coordinator<RootRow>>,
    /// Proposer ids of this replica's proposals (a counter).
    proposers: AtomicU32,
    rng: Mutex<Rng>,
    commit_queues: CommitQueues,
    /// Peers that recently failed to answer (not waited for by writers).
    suspects: Arc<suspects::Suspects>,
    /// Positions this replica's writers are proposing (current reads wait for them).
    proposing: proposing::Proposing,
    /// Groups whose outboxes the background deliverer should look at.
    outboxes: delivery::Outboxes,
}

pub struct Database {
    core: Arc<Core>,
    indexer: Option<JoinHandle<()>>,
    deliverer: Option<JoinHandle<()>>,
    maintenance: Option<Maintenance>,
}

/// The replica's periodic upkeep thread, and the channel whose closing stops it.
struct Maintenance {
    stop: std::sync::mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Database {
    /// Opens the database of schema `text`, storing it first if it is new, or adding
    /// to the stored one (and back-filling new indexes) if it differs.
    pub fn open_with_schema(
        engine: Arc<Engine>,
        text: &str,
        options: DatabaseOptions,
    ) -> Result<Self, Error> {
        let schema = parse(text).map_err(crate::catalog::CatalogError::from)?;
        let catalog = Catalog::open(&engine)?;
        let stored = catalog.get(&schema.name)?;
        if stored.is_none() {
            let version = catalog.put(text)?;
            for index in &schema.indexes {
                catalog.mark_built(&schema.name, &index.name, version)?;
            }
        }
        let db = Self::open(engine, &schema.name, options)?;
        if stored.is_some_and(|(_, old)| old != schema) {
            if db.core.sole_voter() {
                db.update_schema(text)?;
            } else {
                // The other replicas may not be up yet: a change goes through
                // `update_schema` once they are.
                tracing::warn!(
                    "schema {} differs from the stored one, which stays: change a \
                     replicated schema with UpdateSchema",
                    schema.name
                );
            }
        }
        Ok(db)
    }

    /// Opens the database of the stored schema `name`, finishing any interrupted
    /// index back-fill (at once with one replica; else through the upkeep thread).
    pub fn open(engine: Arc<Engine>, name: &str, options: DatabaseOptions) -> Result<Self, Error> {
        let catalog = Catalog::open(&engine)?;
        let (version, schema) = catalog
            .get(name)?
            .ok_or_else(|| Error::Invalid(format!("no schema {name} is stored")))?;
        create_tables(&engine, &schema, options.version_retention)?;
        let building = unbuilt_indexes(&catalog, &schema)?.into_iter().collect();
        let schema = Arc::new(schema);
        let background_delivery = options.deliver_in_background;
        let seed = options
            .replication
            .as_ref()
            .and_then(|r| r.seed)
            .unwrap_or_else(group::random_u64);
        let core = Arc::new(Core {
            replica: Replica::new(engine),
            name: name.to_string(),
            current: RwLock::new((version, schema.clone())),
            versions: Mutex::new(BTreeMap::from([(version, schema)])),
            building: Mutex::new(building),
            built: parking_lot::Condvar::new(),
            resume_backfills: std::sync::atomic::AtomicBool::new(false),
            schema_gate: RwLock::new(()),
            queue: IndexQueue::new(options.clock.clone()),
            options,
            counters: Counters::default(),
            proposals: AtomicU64::new(seed),
            coordinator: Mutex::new(Coordinator::new(0)),
            proposers: AtomicU32::new(0),
            rng: Mutex::new(Rng::new(seed)),
            commit_queues: CommitQueues::default(),
            suspects: Arc::default(),
            proposing: proposing::Proposing::default(),
            outboxes: delivery::Outboxes::new(background_delivery),
        });
        // Schema changes chosen before a crash but not applied yet.
        core.roll_forward(&core.catalog_root())?;
        core.find_unindexed_groups()?;
        let worker = core.clone();
        let indexer = std::thread::Builder::new()
            .name("megastore-global-indexer".into())
            .spawn(move || worker.run_indexer())
            .map_err(|e| Error::Invalid(format!("cannot start the indexer thread: {e}")))?;
        let maintenance = core.start_maintenance()?;
        let deliverer = match core.options.deliver_in_background {
            true => {
                let worker = core.clone();
                let thread = std::thread::Builder::new()
                    .name("megastore-queue-deliverer".into())
                    .spawn(move || worker.run_deliverer())
                    .map_err(|e| {
                        Error::Invalid(format!("cannot start the deliverer thread: {e}"))
                    })?;
                Some(thread)
            }
            false => None,
        };
        let db = Database {
            core,
            indexer: Some(indexer),
            deliverer,
            maintenance,
        };
        if db.core.sole_voter() {
            db.core.finish_backfills()?;
        } else if !db.core.building.lock().is_empty() {
            // Back-filling commits in every group of the table, which needs the other
            // replicas, perhaps not up yet: the upkeep thread finishes it.
            tracing::info!(
                "indexes {:?} are not back-filled yet: the upkeep thread finishes them",
                db.core.building.lock()
            );
            db.core.resume_backfills.store(true, Ordering::SeqCst);
        }
        Ok(db)
    }

    pub fn schema(&self) -> Arc<Schema> {
        self.core.current.read().1.clone()
    }

    pub fn schema_version(&self) -> u64 {
        self.core.current.read().0
    }

    /// The stored text of the current schema, and its version.
    pub fn schema_text(&self) -> Result<(u64, String), Error> {
        let history = self.core.catalog().history(&self.core.name)?;
        history
            .into_iter()
            .next_back()
            .ok_or_else(|| Error::Damaged(format!("schema {} has no text", self.core.name)))
    }

    /// Adds to the schema (tables, properties, indexes; nothing may be removed or
    /// changed) and back-fills its new indexes; returns the new version. The change is
    /// replicated: every replica installs the new version. Back-filling commits one
    /// entry in every entity group of the indexed table. Sending the current schema
    /// again changes nothing but finishes a back-fill that was interrupted.
    pub fn update_schema(&self, text: &str) -> Result<u64, Error> {
        self.core.serves_reads()?;
        self.core.change_schema(text)
    }

    /// Waits until index `index` is back-filled here (queries on it are served), at
    /// most `timeout`; whether it is.
    pub fn wait_for_index(&self, index: &str, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut building = self.core.building.lock();
        while building.contains(index) {
            if self
                .core
                .built
                .wait_until(&mut building, deadline)
                .timed_out()
            {
                return !building.contains(index);
            }
        }
        true
    }

    /// Catches this replica up on schema changes made through other replicas; returns
    /// the current version. (Applying an entry written under a newer version does this
    /// by itself.)
    pub fn refresh_schema(&self) -> Result<u64, Error> {
        self.core.serves_reads()?;
        self.core.make_current(&self.core.catalog_root())?;
        Ok(self.schema_version())
    }

    /// Runs `f` as a transaction on `group` and commits what it wrote. On a conflict
    /// (another transaction committed first) `f` runs again on a fresh snapshot, up to
    /// `max_attempts` times. An error from `f` aborts without writing.
    pub fn transact<R>(
        &self,
        group: &GroupKey,
        f: impl FnMut(&mut Transaction<'_>) -> Result<R, Error>,
    ) -> Result<(R, Committed), Error> {
        let root = self.core.root_row(group)?;
        self.core.serves_reads()?;
        self.core.transact(group.into(), &root, f)
    }

    /// A snapshot of `group` to read from, as current as `mode` asks.
    pub fn read(&self, group: &GroupKey, mode: ReadMode) -> Result<Snapshot<'_>, Error> {
        let root = self.core.root_row(group)?;
        self.core.serves_reads()?;
        let meta = match mode {
            ReadMode::Current => Some(self.core.make_current(&root)?.meta),
            ReadMode::Snapshot => Some(self.core.replica.group_meta(&root)?.0),
            ReadMode::Inconsistent => None,
        };
        let (schema_version, schema) = match &meta {
            Some(m) => self.core.schema_for(m.schema_version)?,
            None => self.core.current.read().clone(),
        };
        Ok(Snapshot {
            core: &self.core,
            schema,
            schema_version,
            root_table: group.root.clone(),
            root_key: Some(group.key.clone()),
            group_row: root.row,
            position: meta.as_ref().map(|m| m.applied),
            timestamp: meta.as_ref().map(|m| m.applied_timestamp),
            reads: None,
            taken_at: self.core.options.clock.now_micros(),
        })
    }

    /// The entries of global index `index` whose values lie in `range`. Global indexes
    /// are maintained in the background, so the answer may miss recent commits: it
    /// reflects those at or below the returned watermark.
    pub fn query_global(
        &self,
        index: &str,
        range: &ValueRange,
    ) -> Result<Stale<Vec<IndexHit>>, Error> {
        let schema = self.schema();
        if !schema
            .indexes
            .iter()
            .any(|i| i.name == index && i.scope == IndexScope::Global)
        {
            return Err(Error::Invalid(format!("no global index {index}")));
        }
        self.core.check_built(index)?;
        // The watermark is taken first: whatever it promises is in what we read next.
        let watermark = self.core.queue.watermark();
        let value = read::global_index(self.core.engine(), &schema, index, range)?;
        Ok(Stale { value, watermark })
    }

    /// Every commit at or below this timestamp is reflected in the global indexes.
    pub fn global_index_watermark(&self) -> i64 {
        self.core.queue.watermark()
    }

    /// Blocks until the global indexes reflect every commit at or below `timestamp`.
    pub fn wait_for_global_indexes(&self, timestamp: i64) {
        self.core.queue.wait_for(timestamp);
    }

    /// Stops (or restarts) global-index maintenance, both as entries are applied and in
    /// the background; commits go on.
    pub fn pause_global_indexing(&self, paused: bool) {
        self.core.queue.set_paused(paused);
    }

    /// This replica's id and the members of its groups (itself alone when not
    /// replicated).
    pub fn membership(&self) -> (u32, Vec<crate::replicas::Member>) {
        let id = self.core.options.replica_id;
        match self.core.replication() {
            Some(r) => (r.local_member().id, r.members.clone()),
            None => (
                id,
                vec![crate::replicas::Member {
                    id,
                    kind: ReplicaKind::Full,
                }],
            ),
        }
    }

    pub fn stats(&self) -> DatabaseStats {
        let c = &self.core.counters;
        DatabaseStats {
            commits: c.commits.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            entries: c.entries.load(Ordering::Relaxed),
            entries_applied: c.applied.load(Ordering::Relaxed),
        }
    }

    /// The group's replication state on this replica, as stored (no roll-forward), and
    /// the log positions its root row holds.
    pub fn group_meta(&self, group: &GroupKey) -> Result<(GroupMeta, Vec<u64>), Error> {
        let root = self.core.root_row(group)?;
        let (meta, _) = self.core.replica.group_meta(&root)?;
        Ok((meta, self.core.replica.log_positions(&root)?))
    }
}

impl Database {
    /// Runs `f` once as a transaction on `group` without committing what it wrote
    /// (the simulator commits several at once with [`Database::commit_prepared`]).
    pub(crate) fn prepare<R>(
        &self,
        group: &GroupKey,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<R, Error>,
    ) -> Result<Ran<R>, Error> {
        let root = self.core.root_row(group)?;
        self.core.serves_reads()?;
        self.core.prepare(group.into(), &root, &mut f)
    }

    /// Commits prepared transactions of `group` together, as far as the group-commit
    /// rule allows (`commit.rs`): one verdict per transaction.
    pub(crate) fn commit_prepared(
        &self,
        group: &GroupKey,
        txs: &[Prepared],
    ) -> Result<Vec<Result<Verdict, Error>>, Error> {
        let root = self.core.root_row(group)?;
        Ok(self.core.commit_batch(&root, txs))
    }

    /// This replica as its peers reach it in this process.
    pub fn peer(&self) -> Arc<dyn Peer> {
        self.core.clone()
    }

    /// Finishes abandoned writes (accepted here, outcome unknown) in every group: see
    /// the scavenger in `replicated.rs`. Returns how many groups it caught up.
    pub fn scavenge(&self) -> Result<usize, Error> {
        self.core.serves_reads()?;
        self.core.scavenge()
    }

    /// Deletes, in every group, the log positions every replica has durably applied,
    /// keeping `log_retention` more; returns how many groups it cleaned. Replicated
    /// databases run this (and the scavenger) every `Replication::maintenance_every`.
    pub fn clean_logs(&self) -> Result<usize, Error> {
        self.core.clean_logs()
    }

    /// The root row of `group` (where its log lives).
    pub fn root_row(&self, group: &GroupKey) -> Result<RootRow, Error> {
        self.core.root_row(group)
    }

    /// Delivers every message waiting in an outbox on this replica to its receiver's
    /// inbox; returns how many it put into inboxes. The background deliverer does this
    /// as messages are sent; calling it as well is safe (nothing is delivered twice).
    pub fn deliver_messages(&self) -> Result<u64, Error> {
        self.core.serves_reads()?;
        self.core.deliver_from(&self.core.groups_with_mail()?, 1)
    }

    /// Blocks until the background deliverer has worked every group whose applied
    /// entries sent messages (or `timeout` passes): whether it did. Without a
    /// background deliverer, or at a replica not holding the deliverer lease, that is
    /// at once.
    pub fn wait_for_delivery(&self, timeout: std::time::Duration) -> bool {
        self.core.outboxes.wait_until_settled(timeout)
    }

    /// Each declared queue's backlog: messages in transit and in inboxes, and the
    /// oldest one's send time, as this replica holds them.
    pub fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        self.core.serves_reads()?;
        self.core.queue_stats()
    }

    /// The coordinator gives up its lease (as on losing the lock service): current
    /// reads here take the majority path until readers validate groups again.
    pub fn drop_coordinator_lease(&self) {
        self.core.drop_lease();
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(Maintenance { stop, thread }) = self.maintenance.take() {
            drop(stop);
            let _ = thread.join();
        }
        self.core.queue.shut_down();
        if let Some(indexer) = self.indexer.take() {
            let _ = indexer.join();
        }
        self.core.outboxes.shut_down();
        if let Some(deliverer) = self.deliverer.take() {
            let _ = deliverer.join();
        }
    }
}

impl Core {
    /// Starts the replica's upkeep thread when replicated with an upkeep period: it
    /// finishes abandoned writes and cleans logs, until the returned channel closes.
    fn start_maintenance(self: &Arc<Self>) -> Result<Option<Maintenance>, Error> {
        let Some(every) = self.replication().and_then(|r| r.maintenance_every) else {
            return Ok(None);
        };
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let core = self.clone();
        let thread = std::thread::Builder::new()
            .name("megastore-replica-upkeep".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    let timeout = core.options.prepared_timeout;
                    let upkeep = core
                        .scavenge()
                        .and_then(|_| core.clean_logs())
                        .and_then(|_| core.finish_prepared(timeout))
                        .and_then(|_| core.resume_interrupted_backfills());
                    if let Err(e) = upkeep {
                        tracing::warn!("replica upkeep failed (retried next period): {e}");
                    }
                }
            })
            .map_err(|e| Error::Invalid(format!("cannot start the upkeep thread: {e}")))?;
        Ok(Some(Maintenance { stop, thread }))
    }

    pub(crate) fn engine(&self) -> &Engine {
        self.replica.engine()
    }

    fn catalog(&self) -> Catalog<'_> {
        Catalog::existing(self.engine())
    }

    fn serves_reads(&self) -> Result<(), Error> {
        match self.replication().map(|r| r.local_member().kind) {
            Some(ReplicaKind::Witness) => Err(Error::Invalid(
                "a witness replica keeps no data: read and write at a full one".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Refuses a read from a snapshot taken at `taken_at` (0: unknown) longer ago than
    /// the version retention: versions it needs may be collected.
    pub(crate) fn check_snapshot_age(&self, taken_at: i64) -> Result<(), Error> {
        let age = self.options.clock.now_micros().saturating_sub(taken_at);
        let age = std::time::Duration::from_micros(u64::try_from(age).unwrap_or(0));
        if taken_at != 0 && age > self.options.version_retention {
            return Err(Error::SnapshotTooOld(age));
        }
        Ok(())
    }

    pub(crate) fn check_built(&self, index: &str) -> Result<(), Error> {
        if self.building.lock().contains(index) {
            return Err(Error::IndexNotReady(index.to_string()));
        }
        Ok(())
    }

    fn root_row(&self, group: &GroupKey) -> Result<RootRow, Error> {
        let mut schema = self.current.read().1.clone();
        if schema.table(&group.root).is_none() && self.serves_reads().is_ok() {
            // Perhaps added through another replica, and not applied here yet.
            self.make_current(&self.catalog_root())?;
            schema = self.current.read().1.clone();
        }
        let table = schema
            .table(&group.root)
            .ok_or_else(|| Error::Invalid(format!("table {} is not in the schema", group.root)))?;
        if table.role != GroupRole::Root {
            return Err(Error::Invalid(format!(
                "{} is not an entity group root",
                group.root
            )));
        }
        Ok(RootRow {
            table: data_table(&schema, storage_table(&schema, &group.root)),
            row: row_key(&schema, &group.root, &group.key)?,
        })
    }
}
