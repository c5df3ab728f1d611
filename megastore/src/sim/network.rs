//! The simulator's network between in-process replicas: each replica reaches the
//! others through a [`NetTransport`], and every request crosses a [`Network`] that can
//! cut links (one way or both), lose requests or replies, deliver a request twice,
//! and hold a request back to deliver it later, out of order. Decisions come from the
//! network's seeded generator, in call order, so a single-threaded run replays exactly.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::paxos::proposer::Reply;
use crate::replica::RootRow;
use crate::replicas::{LocalTransport, Peer, Transport};
use crate::replication::Acceptor;
use crate::sim::Rng;
use crate::Error;

/// How often (in percent of requests) each fault happens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultRates {
    pub drop_request: u64,
    pub drop_reply: u64,
    pub duplicate: u64,
    /// Held back, to be delivered by a later `deliver_delayed`.
    pub delay: u64,
}

type Delivery = Box<dyn FnOnce() + Send>;

struct State {
    rng: Rng,
    rates: FaultRates,
    /// Cut links, as (from, to).
    cut: BTreeSet<(usize, usize)>,
    delayed: Vec<Delivery>,
    requests: u64,
}

pub struct Network {
    state: Mutex<State>,
}

enum Fate {
    Cut,
    Lost,
    Delayed,
    Deliver { twice: bool, lose_reply: bool },
}

impl Network {
    /// What a cluster's replicas reach each other through, to go over `net`
    /// (`Cluster::open_wrapped`).
    pub fn wrapper(net: &Arc<Network>) -> Arc<crate::cluster::TransportWrapper> {
        let net = net.clone();
        Arc::new(move |from, inner| {
            Arc::new(NetTransport {
                from,
                inner,
                net: net.clone(),
            }) as Arc<dyn crate::replicas::Transport>
        })
    }

    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Network {
            state: Mutex::new(State {
                rng: Rng::new(seed),
                rates: FaultRates::default(),
                cut: BTreeSet::new(),
                delayed: Vec::new(),
                requests: 0,
            }),
        })
    }

    pub fn set_rates(&self, rates: FaultRates) {
        self.state.lock().rates = rates;
    }

    /// Cuts (or heals) the link from `from` to `to` only.
    pub fn set_cut(&self, from: usize, to: usize, cut: bool) {
        let mut state = self.state.lock();
        if cut {
            state.cut.insert((from, to));
        } else {
            state.cut.remove(&(from, to));
        }
    }

    /// Cuts (or heals) both directions between `a` and `b`.
    pub fn set_partitioned(&self, a: usize, b: usize, cut: bool) {
        self.set_cut(a, b, cut);
        self.set_cut(b, a, cut);
    }

    pub fn heal(&self) {
        let mut state = self.state.lock();
        state.cut.clear();
        state.rates = FaultRates::default();
    }

    pub fn requests(&self) -> u64 {
        self.state.lock().requests
    }

    /// Delivers up to `n` held-back requests, oldest first (their replies are lost).
    pub fn deliver_delayed(&self, n: usize) {
        let due: Vec<Delivery> = {
            let mut state = self.state.lock();
            let n = n.min(state.delayed.len());
            state.delayed.drain(..n).collect()
        };
        for delivery in due {
            delivery();
        }
    }

    fn fate(&self, from: usize, to: usize) -> Fate {
        let mut s = self.state.lock();
        s.requests += 1;
        if s.cut.contains(&(from, to)) {
            return Fate::Cut;
        }
        let rates = s.rates;
        let mut roll = |percent: u64| percent > 0 && s.rng.below(100) < percent;
        if roll(rates.drop_request) {
            return Fate::Lost;
        }
        if roll(rates.delay) {
            return Fate::Delayed;
        }
        let twice = roll(rates.duplicate);
        let lose_reply = roll(rates.drop_reply) || s.cut.contains(&(to, from));
        Fate::Deliver { twice, lose_reply }
    }

    /// Sends one request from `from` to `to`: `call` runs zero, one or two times now,
    /// or once later; the caller hears its first answer unless the request or the
    /// reply was lost.
    fn send<T>(
        &self,
        from: usize,
        to: usize,
        replicas: &Arc<LocalTransport>,
        call: impl Fn(&dyn Peer) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let lost = || Err(Error::Unavailable(format!("no answer from replica {to}")));
        match self.fate(from, to) {
            Fate::Cut | Fate::Lost => lost(),
            Fate::Delayed => {
                // Delivered to whichever replica runs at `to` by then (a restarted one
                // receives its predecessor's mail, as a network would deliver it).
                let replicas = replicas.clone();
                self.state.lock().delayed.push(Box::new(move || {
                    if let Ok(peer) = replicas.peer(to) {
                        let _ = call(peer.as_ref());
                    }
                }));
                lost()
            }
            Fate::Deliver { twice, lose_reply } => {
                let peer = replicas.peer(to)?;
                let answer = call(peer.as_ref());
                if twice {
                    let _ = call(peer.as_ref());
                }
                if lose_reply {
                    lost()
                } else {
                    answer
                }
            }
        }
    }
}

/// How replica `from` reaches the others across the network.
pub struct NetTransport {
    pub from: usize,
    pub inner: Arc<LocalTransport>,
    pub net: Arc<Network>,
}

impl Transport for NetTransport {
    fn peer(&self, member: usize) -> Result<Arc<dyn Peer>, Error> {
        Ok(Arc::new(NetPeer {
            from: self.from,
            to: member,
            replicas: self.inner.clone(),
            net: self.net.clone(),
        }))
    }
}

struct NetPeer {
    from: usize,
    to: usize,
    replicas: Arc<LocalTransport>,
    net: Arc<Network>,
}

impl NetPeer {
    fn send<T>(
        &self,
        call: impl Fn(&dyn Peer) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.net.send(self.from, self.to, &self.replicas, call)
    }
}

impl Acceptor for NetPeer {
    fn prepare(&self, root: &RootRow, position: u64, ballot: u64) -> Result<Reply, Error> {
        let root = root.clone();
        self.send(move |p| p.prepare(&root, position, ballot))
    }

    fn accept(
        &self,
        root: &RootRow,
        position: u64,
        ballot: u64,
        value: &[u8],
    ) -> Result<Reply, Error> {
        let (root, value) = (root.clone(), value.to_vec());
        self.send(move |p| p.accept(&root, position, ballot, &value))
    }

    fn highest_position(&self, root: &RootRow) -> Result<u64, Error> {
        let root = root.clone();
        self.send(move |p| p.highest_position(&root))
    }

    fn chosen_value(&self, root: &RootRow, position: u64) -> Result<Option<Vec<u8>>, Error> {
        let root = root.clone();
        self.send(move |p| p.chosen_value(&root, position))
    }
}

impl Peer for NetPeer {
    fn apply(&self, root: &RootRow, position: u64, value: &[u8]) -> Result<(), Error> {
        let (root, value) = (root.clone(), value.to_vec());
        self.send(move |p| p.apply(&root, position, &value))
    }

    fn invalidate(&self, root: &RootRow, position: u64) -> Result<(), Error> {
        let root = root.clone();
        self.send(move |p| p.invalidate(&root, position))
    }

    fn durable_applied(&self, root: &RootRow) -> Result<u64, Error> {
        let root = root.clone();
        self.send(move |p| p.durable_applied(&root))
    }
}
