//! A replica's coordinator (Megastore §4.4.1, §4.7), as a pure state machine: it knows
//! which entity groups its replica has seen every write of, so a current read there can
//! skip the majority read. It keeps no persistent state; time comes in as ticks.
//!
//! - A writer that chose position `p` without this replica's acceptance *invalidates*
//!   the group here at `p`; a reader that caught the replica up through `p` *validates*
//!   it at `p`. A validate counts only if it covers every invalidation so far, so a later
//!   invalidate beats an earlier validate, whatever order they arrive in.
//! - Each lifetime of a coordinator has a unique epoch. A reader reads the epoch before
//!   catching up and passes it with its validate; a validate from an older lifetime
//!   changes nothing.
//! - It serves only while it holds its lease (from the lock service). On losing the
//!   lease, or at its expiry, it forgets every group (all out of date) and, once locked
//!   again, starts a new lifetime. A writer may skip invalidating a coordinator only after
//!   the coordinator's lease has provably expired (`lease_expiry`).

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct GroupState {
    /// The highest position invalidated.
    invalidated: u64,
    /// The highest position validated (in this lifetime), if any.
    validated: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Coordinator<G> {
    epoch: u64,
    /// The tick at which the lease expires (`None`: not held).
    lease_until: Option<u64>,
    groups: HashMap<G, GroupState>,
}

impl<G: Eq + Hash + Clone> Coordinator<G> {
    /// A coordinator without a lease, in lifetime `epoch` (unique: from the lock service).
    pub fn new(epoch: u64) -> Self {
        Coordinator {
            epoch,
            lease_until: None,
            groups: HashMap::new(),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The lease was granted (or renewed) until tick `until`. Acquiring it after it was
    /// lost starts lifetime `new_epoch`, with every group out of date.
    pub fn lease_granted(&mut self, until: u64, new_epoch: u64) {
        if self.lease_until.is_none() {
            self.epoch = new_epoch;
            self.groups.clear();
        }
        self.lease_until = Some(until);
    }

    /// The lease is gone (lost, or found expired): every group is out of date.
    pub fn lease_lost(&mut self) {
        self.lease_until = None;
        self.groups.clear();
    }

    /// When the lease ends, as a writer deciding whether it may skip invalidating this
    /// coordinator sees it: after this tick, it may.
    pub fn lease_expiry(&self) -> Option<u64> {
        self.lease_until
    }

    fn serving(&mut self, now: u64) -> bool {
        match self.lease_until {
            Some(until) if now < until => true,
            Some(_) => {
                self.lease_lost();
                false
            }
            None => false,
        }
    }

    /// Whether a current read of `group` may be served locally at tick `now`.
    pub fn is_up_to_date(&mut self, group: &G, now: u64) -> bool {
        self.serving(now)
            && self
                .groups
                .get(group)
                .is_some_and(|g| g.validated.is_some_and(|v| v >= g.invalidated))
    }

    /// A write chose `position` without this replica.
    pub fn invalidate(&mut self, group: &G, position: u64) {
        let g = self.groups.entry(group.clone()).or_default();
        g.invalidated = g.invalidated.max(position);
    }

    /// The replica was caught up through `position` by a reader that read epoch `epoch`
    /// before catching up. Whether the group is now up to date.
    pub fn validate(&mut self, group: &G, position: u64, epoch: u64, now: u64) -> bool {
        if epoch != self.epoch || !self.serving(now) {
            return false;
        }
        let g = self.groups.entry(group.clone()).or_default();
        if position < g.invalidated {
            return false; // a write this catch-up did not see came later
        }
        g.validated = Some(g.validated.map_or(position, |v| v.max(position)));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leased() -> Coordinator<&'static str> {
        let mut c = Coordinator::new(1);
        c.lease_granted(100, 1);
        c
    }

    #[test]
    fn groups_start_out_of_date_and_validate_makes_them_current() {
        let mut c = leased();
        assert!(!c.is_up_to_date(&"g", 0), "a fresh lifetime knows nothing");
        assert!(c.validate(&"g", 5, 1, 0));
        assert!(c.is_up_to_date(&"g", 1));
        c.invalidate(&"g", 6);
        assert!(!c.is_up_to_date(&"g", 2));
        assert!(c.validate(&"g", 6, 1, 3));
        assert!(c.is_up_to_date(&"g", 4));
    }

    #[test]
    fn a_later_invalidate_beats_an_earlier_validate_in_any_arrival_order() {
        let mut c = leased();
        // The invalidation for position 8 arrives before a validate that caught up only
        // through 7: the validate must not count.
        c.invalidate(&"g", 8);
        assert!(!c.validate(&"g", 7, 1, 0));
        assert!(!c.is_up_to_date(&"g", 0));
        // Arriving the other way round ends the same.
        let mut d = leased();
        assert!(d.validate(&"g", 7, 1, 0));
        d.invalidate(&"g", 8);
        assert!(!d.is_up_to_date(&"g", 0));
    }

    #[test]
    fn validates_from_another_lifetime_and_lease_loss_count_for_nothing() {
        let mut c = leased();
        assert!(!c.validate(&"g", 3, 0, 0), "epoch 0 is an older lifetime");
        assert!(c.validate(&"g", 3, 1, 0));
        c.lease_lost();
        assert!(!c.is_up_to_date(&"g", 1), "no lease, no local reads");
        c.lease_granted(200, 2);
        assert_eq!(c.epoch(), 2);
        assert!(
            !c.is_up_to_date(&"g", 1),
            "a new lifetime forgets every group"
        );
        assert!(!c.validate(&"g", 3, 1, 1), "a reader of the old lifetime");
        assert!(c.validate(&"g", 3, 2, 1));
        // The lease runs out: the coordinator stops serving by itself.
        assert!(!c.is_up_to_date(&"g", 200));
        assert_eq!(c.lease_expiry(), None);
    }

    #[test]
    fn renewing_a_held_lease_keeps_the_lifetime() {
        let mut c = leased();
        assert!(c.validate(&"g", 1, 1, 0));
        c.lease_granted(300, 9);
        assert_eq!(c.epoch(), 1);
        assert!(c.is_up_to_date(&"g", 150));
        assert_eq!(c.lease_expiry(), Some(300));
    }
}
