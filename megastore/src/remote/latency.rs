//! A wide-area network on one machine: a [`Transport`] wrapper that delays every call
//! between replicas by the round-trip time between their regions (half on the way
//! there, half on the way back), so the paper's setting (replicas tens of milliseconds
//! apart) can be reproduced on loopback. Round-trip times are given as
//! `region:region=ms,...` (`--inject-latency`), each pair in both directions; replicas
//! in one region, or in a pair not listed, are not delayed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::TransportWrapper;
use crate::paxos::proposer::Reply;
use crate::replica::RootRow;
use crate::replicas::{Peer, Transport};
use crate::replication::Acceptor;
use crate::Error;

/// Round-trip times between regions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latencies {
    round_trips: HashMap<(String, String), Duration>,
}

impl Latencies {
    /// Parses `a:b=20,a:c=40` (milliseconds).
    pub fn parse(spec: &str) -> Result<Latencies, Error> {
        let mut latencies = Latencies::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                Error::Invalid(format!(
                    "latency {part:?} is not region:region=milliseconds"
                ))
            };
            let (pair, ms) = part.split_once('=').ok_or_else(bad)?;
            let (a, b) = pair.split_once(':').ok_or_else(bad)?;
            let ms: u64 = ms.trim().parse().map_err(|_| bad())?;
            let (a, b) = (a.trim().to_string(), b.trim().to_string());
            if a.is_empty() || b.is_empty() {
                return Err(bad());
            }
            let rtt = Duration::from_millis(ms);
            latencies.round_trips.insert((a.clone(), b.clone()), rtt);
            latencies.round_trips.insert((b, a), rtt);
        }
        Ok(latencies)
    }

    /// The round-trip time from region `a` to region `b`.
    pub fn round_trip(&self, a: &str, b: &str) -> Duration {
        self.round_trips
            .get(&(a.to_string(), b.to_string()))
            .copied()
            .unwrap_or_default()
    }
}

/// `inner`, with each call from this replica's region to a member's delayed.
pub struct DelayedTransport {
    pub inner: Arc<dyn Transport>,
    /// This replica's region, and every member's (by member index).
    pub from: String,
    pub regions: Vec<String>,
    pub latencies: Arc<Latencies>,
}

impl Transport for DelayedTransport {
    fn peer(&self, member: usize) -> Result<Arc<dyn Peer>, Error> {
        let peer = self.inner.peer(member)?;
        let to = self.regions.get(member).map_or("", String::as_str);
        let one_way = self.latencies.round_trip(&self.from, to) / 2;
        if one_way.is_zero() {
            return Ok(peer);
        }
        Ok(Arc::new(DelayedPeer { peer, one_way }))
    }
}

/// What a `Cluster` (`Cluster::open_wrapped`) needs so that each call between its
/// replicas, made through `base` (in process if `None`), is delayed as `latencies`
/// says for the replicas' `regions` (one per member).
pub fn cluster_wrapper(
    base: Option<Arc<TransportWrapper>>,
    regions: Vec<String>,
    latencies: Arc<Latencies>,
) -> Arc<TransportWrapper> {
    Arc::new(move |me, in_process| {
        let inner = match &base {
            Some(wrap) => wrap(me, in_process),
            None => in_process as Arc<dyn Transport>,
        };
        Arc::new(DelayedTransport {
            inner,
            from: regions.get(me).cloned().unwrap_or_default(),
            regions: regions.clone(),
            latencies: latencies.clone(),
        }) as Arc<dyn Transport>
    })
}

/// A peer a network delay away.
struct DelayedPeer {
    peer: Arc<dyn Peer>,
    one_way: Duration,
}

impl DelayedPeer {
    fn call<T>(&self, f: impl FnOnce(&dyn Peer) -> T) -> T {
        std::thread::sleep(self.one_way);
        let answer = f(self.peer.as_ref());
        std::thread::sleep(self.one_way);
        answer
    }
}

impl Acceptor for DelayedPeer {
    fn prepare(&self, root: &RootRow, position: u64, ballot: u64) -> Result<Reply, Error> {
        self.call(|p| p.prepare(root, position, ballot))
    }
    fn accept(
        &self,
        root: &RootRow,
        position: u64,
        ballot: u64,
        value: &[u8],
    ) -> Result<Reply, Error> {
        self.call(|p| p.accept(root, position, ballot, value))
    }
    fn highest_position(&self, root: &RootRow) -> Result<u64, Error> {
        self.call(|p| p.highest_position(root))
    }
    fn chosen_value(&self, root: &RootRow, position: u64) -> Result<Option<Vec<u8>>, Error> {
        self.call(|p| p.chosen_value(root, position))
    }
}

impl Peer for DelayedPeer {
    fn apply(&self, root: &RootRow, position: u64, value: &[u8]) -> Result<(), Error> {
        self.call(|p| p.apply(root, position, value))
    }
    fn invalidate(&self, root: &RootRow, position: u64) -> Result<(), Error> {
        self.call(|p| p.invalidate(root, position))
    }
    fn durable_applied(&self, root: &RootRow) -> Result<u64, Error> {
        self.call(|p| p.durable_applied(root))
    }
    fn apply_in_background(self: Arc<Self>, root: RootRow, position: u64, value: Vec<u8>) {
        // The message is on its way: the sender does not wait for the delay.
        std::thread::spawn(move || {
            std::thread::sleep(self.one_way);
            self.peer.clone().apply_in_background(root, position, value);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_hold_both_ways_and_bad_specs_are_refused() {
        let l = Latencies::parse("us:eu=20, us:asia=80").unwrap();
        assert_eq!(l.round_trip("eu", "us"), Duration::from_millis(20));
        assert_eq!(l.round_trip("us", "asia"), Duration::from_millis(80));
        assert_eq!(l.round_trip("eu", "asia"), Duration::ZERO);
        assert_eq!(l.round_trip("us", "us"), Duration::ZERO);
        assert_eq!(Latencies::parse("").unwrap(), Latencies::default());
        for bad in ["us-eu=20", "us:eu", "us:eu=fast", ":eu=3", "us:eu=-1"] {
            assert!(Latencies::parse(bad).is_err(), "{bad}");
        }
    }
}
