//! The chosen values a writer tells one peer about without waiting (`Peer::apply_in_background`),
//! sent in batches: whatever accumulated while the previous `ApplyBatch` call was out goes
//! in the next one, so under load a peer handles one request, on one thread, per batch
//! instead of one per write. One sender task per peer at a time; it ends when the
//! outbox is empty.
//!
//! Applies are best effort (a peer that misses one catches up later), so the outbox is
//! bounded: past [`MAX_WAITING`] applies (a peer that does not answer while writes go
//! on), the oldest are dropped.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use super::messages::ApplyRequest;

/// Applies waiting for one peer, at most.
pub const MAX_WAITING: usize = 10_000;
/// Bytes of values in one batch, at most (one apply larger than this goes alone).
const MAX_BATCH_BYTES: usize = 4 << 20;

#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<ApplyRequest>,
    /// Whether a sender task is running (it will send what is waiting).
    sending: bool,
    dropped: u64,
}

impl Outbox {
    /// Queues `apply`; true if the caller must start a sender (none is running).
    pub fn push(&self, apply: ApplyRequest) -> bool {
        let mut state = self.state.lock();
        if state.waiting.len() >= MAX_WAITING {
            state.waiting.pop_front();
            state.dropped += 1;
            if state.dropped.is_power_of_two() {
                tracing::warn!(
                    "{} applies for an unresponsive replica dropped (it will catch up)",
                    state.dropped
                );
            }
        }
        state.waiting.push_back(apply);
        let start = !state.sending;
        state.sending = true;
        start
    }

    /// The sender's next batch, oldest first; empty when the outbox is empty, and then
    /// the sender must stop (a later push starts another).
    pub fn next_batch(&self) -> Vec<ApplyRequest> {
        let mut state = self.state.lock();
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(next) = state.waiting.front() {
            if !batch.is_empty() && bytes + next.value.len() > MAX_BATCH_BYTES {
                break;
            }
            bytes += next.value.len();
            batch.extend(state.waiting.pop_front());
        }
        if batch.is_empty() {
            state.sending = false;
        }
        batch
    }
}

/// Sends `outbox`'s batches with `send` until it is empty.
pub async fn drain<F, Fut>(outbox: Arc<Outbox>, send: F)
where
    F: Fn(Vec<ApplyRequest>) -> Fut,
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
        let outbox = Outbox::default();
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
        let outbox = Outbox::default();
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
        let outbox = Outbox::default();
        for position in 0..MAX_WAITING as u64 + 5 {
            outbox.push(apply(position, 0));
        }
        let batch = outbox.next_batch();
        assert_eq!(batch.len(), MAX_WAITING);
        assert_eq!(batch[0].position, 5);
    }
}
