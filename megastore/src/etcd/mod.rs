//! A lock service for replicas in different processes (or hosts): coordinator leases
//! kept in etcd, through the few etcd v3 calls in [`messages`].
//!
//! It may be given several members of one etcd cluster. Each call goes to the member
//! that last answered, and on failure to the others in turn, so losing a member (or
//! cutting one off from its leader, which then refuses) stops no lease. Every call is
//! safe to repeat at another member after a failure whose outcome is unknown: a renewal
//! only compares; a grant or revocation done twice leaves the same keys (a lease's
//! epoch is the revision of the last write of its key); a job key written twice is
//! taken for another holder's, which costs that job one lease length of idleness.
//!
//! Keys, under a prefix (`/megastore/<database>` say):
//! - `coordinator/<id>`: replica `id`'s coordinator holds a lease. Written with an etcd
//!   lease whose TTL is at least the coordinator lease's length, and kept alive on each
//!   renewal; so if the key is gone, the coordinator has not renewed for a whole lease
//!   and has stopped serving. The revision that wrote it is the lease's epoch.
//! - `revoked/<id>`: a writer could not reach `id`'s coordinator. Written (only while
//!   the coordinator key exists) with an etcd lease of a little more than the lease
//!   length; while it exists no lease is granted or renewed for `id`.
//!
//! The writer then waits one lease length on its own clock. The coordinator's lease
//! was last renewed before the revocation was written (etcd orders the two), and lasts
//! one length from before that renewal on the coordinator's clock: so it has ended by
//! the time the writer goes on (clock rates assumed equal, as in the paper). Once the
//! revocation expires, a new lease has a new epoch, and the coordinator starts with
//! every group invalid.

pub mod messages;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bigtable::clock::Clock;
use parking_lot::Mutex;
use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::remote::client::{client_runtime, error_of, lazy_channel};
use crate::replicas::{Lease, LockService};
use crate::tls::ClientTls;
use crate::Error;
use messages::{
    absent, delete, present, put, written_at, LeaseGrantRequest, LeaseKeepAliveRequest, TxnRequest,
};

#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.KV.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.Lease.rs"));
}

pub use generated::k_v_client::KVClient as KvClient;
use generated::lease_client::LeaseClient;

/// A lease this process holds for one of its replicas.
#[derive(Debug, Clone, Copy)]
struct Held {
    lease: Lease,
    /// The etcd lease the coordinator key is written with.
    etcd_lease: i64,
}

/// One etcd member, as the lock service calls it.
#[derive(Clone)]
struct EtcdMember {
    endpoint: String,
    kv: KvClient<Channel>,
    leases: LeaseClient<Channel>,
}

/// Coordinator leases in etcd.
pub struct EtcdLocks {
    prefix: String,
    clock: Arc<dyn Clock>,
    length: Duration,
    members: Vec<EtcdMember>,
    /// The member that answered last, tried first.
    current: AtomicUsize,
    runtime: Arc<tokio::runtime::Runtime>,
    held: Mutex<HashMap<u32, Held>>,
    /// The etcd lease of each job key this process wrote.
    jobs: Mutex<HashMap<String, i64>>,
}

/// Whole seconds, at least `d` (etcd's TTLs are in seconds).
fn seconds_at_least(d: Duration) -> i64 {
    i64::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .unwrap_or(i64::MAX)
        .max(1)
}

impl EtcdLocks {
    /// Leases of `length`, measured on `clock` (a monotonic one), kept under `prefix`
    /// in the etcd cluster whose members are `endpoints` (`host:port`, comma-separated,
    /// as etcdctl takes them), reached over `tls` if given; `timeout` bounds each call
    /// to one member.
    pub fn new(
        endpoints: &str,
        tls: Option<&ClientTls>,
        prefix: &str,
        clock: Arc<dyn Clock>,
        length: Duration,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let runtime = client_runtime("megastore-etcd-client", 2)?;
        let members = etcd_endpoints(endpoints)?
            .into_iter()
            .map(|endpoint| {
                let channel = lazy_channel(&runtime, endpoint, timeout, tls)?;
                Ok(EtcdMember {
                    endpoint: endpoint.to_string(),
                    kv: KvClient::new(channel.clone()),
                    leases: LeaseClient::new(channel),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(EtcdLocks {
            prefix: prefix.trim_end_matches('/').to_string(),
            clock,
            length,
            members,
            current: AtomicUsize::new(0),
            runtime,
            held: Mutex::new(HashMap::new()),
            jobs: Mutex::new(HashMap::new()),
        })
    }

    fn coordinator_key(&self, id: u32) -> String {
        format!("{}/coordinator/{id}", self.prefix)
    }

    fn job_key(&self, job: &str) -> String {
        format!("{}/jobs/{job}", self.prefix)
    }

    /// Keeps the job key alive if this process wrote it, or writes it if nobody holds
    /// it. The key lives with an etcd lease, so it vanishes when its writer stops.
    fn try_hold_job(&self, job: &str, holder: u32) -> Result<bool, Error> {
        let mine = self.jobs.lock().get(job).copied();
        if let Some(etcd_lease) = mine {
            if self.keep_alive(etcd_lease)? {
                return Ok(true);
            }
            self.jobs.lock().remove(job);
        }
        let etcd_lease = self.grant(seconds_at_least(self.length))?;
        let key = self.job_key(job);
        let (ok, _) = self.txn(TxnRequest {
            compare: vec![absent(&key)],
            success: vec![put(&key, &holder.to_be_bytes(), etcd_lease)],
            failure: vec![],
        })?;
        if ok {
            self.jobs.lock().insert(job.to_string(), etcd_lease);
        }
        Ok(ok)
    }

    fn revoked_key(&self, id: u32) -> String {
        format!("{}/revoked/{id}", self.prefix)
    }

    /// Runs `call` at the member that answered last, then at each other one in turn
    /// until one answers. The error is the last member's.
    fn call<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: Fn(EtcdMember) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let count = self.members.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut failure = None;
        for i in (0..count).map(|k| (first + k) % count) {
            let member = &self.members[i];
            match self.runtime.block_on(call(member.clone())) {
                Ok(answer) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(status) => {
                    let error = error_of(&format!("etcd at {}", member.endpoint), &status);
                    tracing::debug!("{error}");
                    failure = Some(error);
                }
            }
        }
        Err(failure.unwrap_or_else(|| Error::Invalid("no etcd endpoint".into())))
    }

    fn grant(&self, ttl: i64) -> Result<i64, Error> {
        let r = self.call(|mut m| async move {
            let request = LeaseGrantRequest { ttl };
            m.leases
                .lease_grant(request)
                .await
                .map(Response::into_inner)
        })?;
        if !r.error.is_empty() {
            return Err(Error::Unavailable(format!("etcd lease grant: {}", r.error)));
        }
        Ok(r.id)
    }

    /// Extends etcd lease `id`; false if it has already expired.
    fn keep_alive(&self, id: i64) -> Result<bool, Error> {
        let answer = self.call(|mut m| async move {
            let request = tokio_stream::once(LeaseKeepAliveRequest { id });
            let mut replies = m.leases.lease_keep_alive(request).await?.into_inner();
            replies
                .message()
                .await?
                .ok_or_else(|| Status::unavailable("etcd ended the keep-alive"))
        })?;
        Ok(answer.ttl > 0)
    }

    fn txn(&self, request: TxnRequest) -> Result<(bool, i64), Error> {
        let r = self.call(|mut m| {
            let request = request.clone();
            async move { m.kv.txn(request).await.map(Response::into_inner) }
        })?;
        Ok((r.succeeded, r.header.map_or(0, |h| h.revision)))
    }

    /// Renews `held` if the coordinator key is still its and nothing revoked it.
    fn renew(&self, id: u32, held: Held, now: i64) -> Result<Option<Lease>, Error> {
        if !self.keep_alive(held.etcd_lease)? {
            return Ok(None);
        }
        let epoch = i64::try_from(held.lease.epoch).unwrap_or(i64::MAX);
        let (ok, _) = self.txn(TxnRequest {
            compare: vec![
                absent(&self.revoked_key(id)),
                written_at(&self.coordinator_key(id), epoch),
            ],
            success: vec![],
            failure: vec![],
        })?;
        Ok(ok.then(|| Lease {
            epoch: held.lease.epoch,
            until: self.until(now),
        }))
    }

    /// A new lease (a new epoch), unless a revocation stands.
    fn grant_fresh(&self, id: u32, now: i64) -> Result<Option<Held>, Error> {
        let etcd_lease = self.grant(seconds_at_least(self.length))?;
        let (ok, revision) = self.txn(TxnRequest {
            compare: vec![absent(&self.revoked_key(id))],
            success: vec![put(&self.coordinator_key(id), b"", etcd_lease)],
            failure: vec![],
        })?;
        Ok(ok.then(|| Held {
            lease: Lease {
                epoch: u64::try_from(revision).unwrap_or(0),
                until: self.until(now),
            },
            etcd_lease,
        }))
    }

    fn until(&self, now: i64) -> i64 {
        now.saturating_add(i64::try_from(self.length.as_micros()).unwrap_or(i64::MAX / 4))
    }

    fn try_acquire(&self, id: u32, now: i64) -> Result<Option<Lease>, Error> {
        let current = self.held.lock().get(&id).copied();
        if let Some(held) = current.filter(|h| now < h.lease.until) {
            if let Some(lease) = self.renew(id, held, now)? {
                self.held.lock().insert(id, Held { lease, ..held });
                return Ok(Some(lease));
            }
        }
        self.held.lock().remove(&id);
        let fresh = self.grant_fresh(id, now)?;
        if let Some(held) = fresh {
            self.held.lock().insert(id, held);
        }
        Ok(fresh.map(|h| h.lease))
    }
}

/// The members of `list` (`host:port`, comma-separated).
fn etcd_endpoints(list: &str) -> Result<Vec<&str>, Error> {
    let endpoints: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(Error::Invalid(format!(
            "no etcd endpoint in {list:?} (host:port, comma-separated)"
        )));
    }
    Ok(endpoints)
}

impl LockService for EtcdLocks {
    fn acquire(&self, id: u32, now: i64) -> Option<Lease> {
        self.try_acquire(id, now)
            .map_err(|e| tracing::warn!("coordinator lease for replica {id} not granted: {e}"))
            .ok()
            .flatten()
    }

    /// `None` when the coordinator holds no lease; the writer then need not wait.
    /// When etcd cannot be reached, a whole lease from now (the safe answer).
    fn revoke(&self, id: u32) -> Option<i64> {
        let revoked = || -> Result<bool, Error> {
            let marker = self.grant(seconds_at_least(self.length) + 1)?;
            let (ok, _) = self.txn(TxnRequest {
                compare: vec![present(&self.coordinator_key(id))],
                success: vec![put(&self.revoked_key(id), b"", marker)],
                failure: vec![],
            })?;
            Ok(ok)
        };
        match revoked() {
            Ok(false) => None,
            Ok(true) => Some(self.until(self.clock.now_micros())),
            Err(e) => {
                tracing::warn!("revoking replica {id}'s lease: {e}; waiting a whole lease");
                Some(self.until(self.clock.now_micros()))
            }
        }
    }

    fn hold_job(&self, job: &str, holder: u32, _now: i64) -> bool {
        self.try_hold_job(job, holder)
            .map_err(|e| tracing::warn!("lease on job {job} not granted: {e}"))
            .unwrap_or(false)
    }

    fn release(&self, id: u32) {
        self.held.lock().remove(&id);
        let request = TxnRequest {
            compare: vec![],
            success: vec![delete(&self.coordinator_key(id))],
            failure: vec![],
        };
        if let Err(e) = self.txn(request) {
            tracing::debug!("releasing replica {id}'s lease: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_a_comma_separated_list_of_at_least_one() {
        assert_eq!(
            etcd_endpoints(" a:1, b:2 ,c:3,").expect("three members"),
            ["a:1", "b:2", "c:3"]
        );
        assert_eq!(etcd_endpoints("a:1").expect("one member"), ["a:1"]);
        for empty in ["", " ", ",", " , "] {
            match etcd_endpoints(empty) {
                Err(Error::Invalid(why)) => assert!(why.contains("no etcd endpoint"), "{why}"),
                other => panic!("{empty:?} gave {other:?}"),
            }
        }
    }
}
