//! The embedded mode: every replica of a database in one process, each its own
//! tablet-server engine with its own data directory, reaching the others through an
//! in-process transport. Replicas can be stopped and started again (tests, the
//! simulator, and the command-line tool use this to take replicas down).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bigtable::clock::{Clock, SystemClock};
use bigtable::{Engine, EngineOptions};
use wal::fs::SharedFs;

use crate::replicas::{
    LocalLocks, LocalTransport, LockService, Member, MonotonicClock, ReplicaKind, Replication,
    Sleeper, Transport, Waiter,
};
use crate::replication::ProposeOptions;
use crate::{Database, DatabaseOptions, Error};

/// Wraps the transport a replica uses to reach the others (the simulator's network).
pub type TransportWrapper = dyn Fn(usize, Arc<LocalTransport>) -> Arc<dyn Transport> + Send + Sync;

#[derive(Clone)]
pub struct ClusterOptions {
    /// One entry per replica; replica `i` has member id `i`.
    pub kinds: Vec<ReplicaKind>,
    pub engine: EngineOptions,
    /// How long a coordinator's lease lasts (and so how long a writer that cannot
    /// reach a coordinator waits before going on without it).
    pub lease: Duration,
    /// The wall clock: entry timestamps.
    pub clock: Arc<dyn Clock>,
    /// What leases are measured on (monotonic: see `replicas::MonotonicClock`).
    pub lease_clock: Arc<dyn Clock>,
    /// How a writer waits out a lease, on `lease_clock`.
    pub waiter: Arc<dyn Waiter>,
    pub propose: ProposeOptions,
    /// Seeds every replica's randomness (replica `i` gets `seed + i`); `None`: random.
    pub seed: Option<u64>,
    /// How often each replica scavenges and cleans its logs in the background.
    pub maintenance_every: Option<Duration>,
    /// Transaction retries and log retention (replication fields are set per replica).
    pub database: DatabaseOptions,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            kinds: vec![ReplicaKind::Full; 3],
            engine: crate::layout::engine_options(),
            lease: Duration::from_secs(2),
            clock: Arc::new(SystemClock),
            lease_clock: Arc::new(MonotonicClock::new()),
            waiter: Arc::new(Sleeper),
            // In one process a call to a peer costs less than a thread to make it in
            // parallel (docs/benchmarks.md, "Parallel accepts").
            propose: ProposeOptions {
                parallel: false,
                ..ProposeOptions::default()
            },
            seed: None,
            maintenance_every: Some(Duration::from_secs(10)),
            database: DatabaseOptions::default(),
        }
    }
}

struct Slot {
    fs: SharedFs,
    dir: PathBuf,
    database: Option<Arc<Database>>,
}

/// A database's replicas, all in this process.
pub struct Cluster {
    schema: String,
    options: ClusterOptions,
    members: Vec<Member>,
    slots: Vec<Slot>,
    transport: Arc<LocalTransport>,
    locks: Arc<dyn LockService>,
    wrap: Option<Arc<TransportWrapper>>,
}

impl Cluster {
    /// Opens (creating if new) replica `i` in `dirs[i]` on `fs[i]`, for each kind in
    /// `options.kinds`, all with the schema `schema`.
    pub fn open(
        fs: Vec<SharedFs>,
        dirs: Vec<PathBuf>,
        schema: &str,
        options: ClusterOptions,
    ) -> Result<Self, Error> {
        Self::open_wrapped(fs, dirs, schema, options, None)
    }

    /// As [`Cluster::open`], with each replica's outgoing transport wrapped.
    pub fn open_wrapped(
        fs: Vec<SharedFs>,
        dirs: Vec<PathBuf>,
        schema: &str,
        options: ClusterOptions,
        wrap: Option<Arc<TransportWrapper>>,
    ) -> Result<Self, Error> {
        let n = options.kinds.len();
        if fs.len() != n || dirs.len() != n {
            return Err(Error::Invalid(format!(
                "{n} replicas need {n} file systems and directories"
            )));
        }
        if !options.kinds.contains(&ReplicaKind::Full) {
            return Err(Error::Invalid("a cluster needs a full replica".into()));
        }
        let members = options
            .kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| Member {
                id: i as u32,
                kind: *kind,
            })
            .collect();
        let locks = Arc::new(LocalLocks::new(options.lease_clock.clone(), options.lease));
        let mut cluster = Cluster {
            schema: schema.to_string(),
            members,
            slots: fs
                .into_iter()
                .zip(dirs)
                .map(|(fs, dir)| Slot {
                    fs,
                    dir,
                    database: None,
                })
                .collect(),
            transport: Arc::new(LocalTransport::default()),
            locks,
            wrap,
            options,
        };
        for i in 0..n {
            cluster.start(i)?;
        }
        Ok(cluster)
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Replica `i`'s database, if it is running.
    pub fn replica(&self, i: usize) -> Result<&Database, Error> {
        self.slots
            .get(i)
            .and_then(|s| s.database.as_deref())
            .ok_or_else(|| Error::Unavailable(format!("replica {i} is not running")))
    }

    /// Replica `i`'s database as a handle that outlives a borrow of the cluster (a
    /// server holds it). The replica closes when the cluster stops it and no handle
    /// is left.
    pub fn handle(&self, i: usize) -> Result<Arc<Database>, Error> {
        self.slots
            .get(i)
            .and_then(|s| s.database.clone())
            .ok_or_else(|| Error::Unavailable(format!("replica {i} is not running")))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.database.is_some())
    }

    /// Stops replica `i`: the others stop reaching it, and its database closes.
    pub fn stop(&mut self, i: usize) {
        self.transport.unregister(i);
        if let Some(slot) = self.slots.get_mut(i) {
            slot.database = None;
        }
    }

    /// Starts replica `i` (a no-op if it runs): opens its engine and database and
    /// makes it reachable.
    pub fn start(&mut self, i: usize) -> Result<(), Error> {
        if self.is_running(i) {
            return Ok(());
        }
        let slot = self
            .slots
            .get(i)
            .ok_or_else(|| Error::Invalid(format!("no replica {i}")))?;
        let engine = Arc::new(Engine::open(
            slot.fs.clone(),
            &slot.dir,
            self.options.engine.clone(),
        )?);
        let transport: Arc<dyn Transport> = match &self.wrap {
            Some(wrap) => wrap(i, self.transport.clone()),
            None => self.transport.clone(),
        };
        let options = DatabaseOptions {
            replica_id: i as u32,
            clock: self.options.clock.clone(),
            replication: Some(Replication {
                members: self.members.clone(),
                local: i,
                transport,
                locks: self.locks.clone(),
                lease_clock: self.options.lease_clock.clone(),
                waiter: self.options.waiter.clone(),
                propose: self.options.propose,
                seed: self.options.seed.map(|s| s.wrapping_add(i as u64)),
                maintenance_every: self.options.maintenance_every,
            }),
            ..self.options.database.clone()
        };
        let database = Database::open_with_schema(engine, &self.schema, options)?;
        self.transport.register(i, database.peer());
        self.slots[i].database = Some(Arc::new(database));
        Ok(())
    }

    /// Replica `i`'s file system (the simulator crashes it).
    pub fn file_system(&self, i: usize) -> Option<SharedFs> {
        self.slots.get(i).map(|s| s.fs.clone())
    }

    pub fn lock_service(&self) -> Arc<dyn LockService> {
        self.locks.clone()
    }
}

impl Drop for Cluster {
    /// Stops every replica. The transport holds each running replica (so that the
    /// others reach it) and each replica holds the transport: without unregistering
    /// them, closing the cluster would keep every engine open.
    fn drop(&mut self) {
        for i in 0..self.slots.len() {
            self.stop(i);
        }
    }
}
