//! What a replica sends one peer in batches: whatever accumulated while the previous
//! call was out goes in the next one, so under load a peer handles one request, on one
//! thread, per batch instead of one per write. One sender task per peer and outbox at
//! a time; it ends when the outbox is empty. Two outboxes per peer:
//!
//! - chosen values to apply, told without waiting (`Peer::apply_in_background`), in
//!   `ApplyBatch` calls. Applies are best effort (a peer that misses one catches up
//!   later), so this outbox is bounded: past [`MAX_WAITING`] applies (a peer that does
//!   not answer while writes go on), the oldest are dropped;
//! - accept requests, in `AcceptBatch` calls, which the peer judges together with one
//!   fsync. Each waits for its answer, so there are never more than there are
//!   proposers: this outbox is not bounded, and drops nothing.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use super::messages::{AcceptRequest, ApplyRequest};

/// Applies waiting for one peer, at most.
pub const MAX_WAITING: usize = 10_000;
/// Bytes of values in one batch, at most (one item larger than this goes alone).
const MAX_BATCH_BYTES: usize = 4 << 20;

/// What an outbox holds: its value bytes count towards a batch's size.
pub trait Parcel {
    fn value_bytes(&self) -> usize;
}

impl Parcel for ApplyRequest {
    fn value_bytes(&self) -> usize {
        self.value.len()
    }
}

impl<T> Parcel for (AcceptRequest, T) {
    fn value_bytes(&self) -> usize {
        self.0.value.len()
    }
}

pub struct Outbox<T> {
    state: Mutex<State<T>>,
    /// Past this many waiting, the oldest are dropped (`None`: no bound).
    bound: Option<usize>,
}

struct State<T> {
    waiting: VecDeque<T>,
    /// Whether a sender task is running (it will send what is waiting).
    sending: bool,
    dropped: u64,
}

impl<T: Parcel> Outbox<T> {
    /// An outbox that drops its oldest parcels past `bound` waiting.
    pub fn bounded(bound: usize) -> Self {
        Self::new(Some(bound))
    }

    pub fn unbounded() -> Self {
        Self::new(None)
    }

    fn new(bound: Option<usize>) -> Self {
        Outbox {
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                sending: false,
                dropped: 0,
            }),
            bound,
        }
    }

    /// Queues `parcel`; true if the caller must start a sender (none is running).
    pub fn push(&self, parcel: T) -> bool {
        let mut state = self.state.lock();
        if self.bound.is_some_and(|b| state.waiting.len() >= b) {
            state.waiting.pop_front();
            state.dropped += 1;
            if state.dropped.is_power_of_two() {
                tracing::warn!(
                    "{} messages for an unresponsive replica dropped (it will catch up)",
                    state.dropped
                );
            }
        }
        state.waiting.push_back(parcel);
        let start = !state.sending;
        state.sending = true;
        start
    }

    /// The sender's next batch, oldest first; empty when the outbox is empty, and then
    /// the sender must stop (a later push starts another).
    pub fn next_batch(&self) -> Vec<T> {
        let mut state = self.state.lock();
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(next) = state.waiting.front() {
            let size = next.value_bytes();
            if !batch.is_empty() && bytes + size > MAX_BATCH_BYTES {
                break;
            }
            bytes += size;
            batch.extend(state.waiting.pop_front());
        }
        if batch.is_empty() {
            state.sending = false;
        }
        batch
    }
}

/// Sends `outbox`'s batches with `send` until it is empty.
pub async fn drain<T, F, Fut>(outbox: Arc<Outbox<T>>, send: F)
where
    T: Parcel,
    F: Fn(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let batch = outbox.next_batch();
        if batch.is_empty() {
            return;
        }
        send(batch).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(position: u64, bytes: usize) -> ApplyRequest {
        ApplyRequest {
            group: None,
            position,
            value: vec![0; bytes],
        }
    }

    #[test]
    fn one_sender_takes_everything_waiting_in_order_then_stops() {
        let outbox = Outbox::bounded(MAX_WAITING);
        assert!(outbox.push(apply(1, 10)), "the first push starts a sender");
        assert!(!outbox.push(apply(2, 10)), "one sender at a time");
        let batch: Vec<u64> = outbox.next_batch().iter().map(|a| a.position).collect();
        assert_eq!(batch, [1, 2]);
        assert!(!outbox.push(apply(3, 10)), "the sender is still running");
        assert_eq!(outbox.next_batch().len(), 1);
        assert!(outbox.next_batch().is_empty());
        assert!(
            outbox.push(apply(4, 10)),
            "an empty outbox stopped the sender"
        );
    }

    #[test]
    fn a_batch_stops_at_its_byte_limit_but_never_leaves_an_apply_behind() {
        let outbox = Outbox::bounded(MAX_WAITING);
        outbox.push(apply(1, MAX_BATCH_BYTES + 1));
        outbox.push(apply(2, MAX_BATCH_BYTES / 2));
        outbox.push(apply(3, MAX_BATCH_BYTES / 2));
        outbox.push(apply(4, 1));
        let sizes: Vec<usize> = std::iter::from_fn(|| Some(outbox.next_batch().len()))
            .take_while(|&n| n > 0)
            .collect();
        assert_eq!(sizes, [1, 2, 1]);
    }

    #[test]
    fn past_its_bound_the_oldest_applies_are_dropped() {
        let outbox = Outbox::bounded(MAX_WAITING);
        for position in 0..MAX_WAITING as u64 + 5 {
            outbox.push(apply(position, 0));
        }
        let batch = outbox.next_batch();
        assert_eq!(batch.len(), MAX_WAITING);
        assert_eq!(batch[0].position, 5);
    }

    #[test]
    fn an_unbounded_outbox_drops_nothing() {
        let outbox = Outbox::unbounded();
        for position in 0..MAX_WAITING as u64 + 5 {
            outbox.push(apply(position, 0));
        }
        assert_eq!(outbox.next_batch().len(), MAX_WAITING + 5);
    }
}
