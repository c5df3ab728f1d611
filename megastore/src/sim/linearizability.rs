//! A linearizability checker for histories of one register (one key): reads, writes and
//! compare-and-sets, each with the time it was called and the time it returned. This is
//! the Wing-Gong search with Lowe's memoization (WGL): try every operation that may
//! come next (called before the earliest return among the operations left), apply it
//! to the register, and remember (operations done, register value) pairs already seen,
//! so each is explored once.
//!
//! An operation whose outcome is unknown (timed out) may take effect at any time after
//! its call, or never: the search may leave it out. A failed operation (known not
//! applied) is left out of the history by the caller.

use std::collections::HashSet;
use std::hash::Hash;

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<V> {
    /// Read `output` (`None`: the register was empty; for an unknown read, ignored).
    Read {
        output: Option<V>,
    },
    Write {
        value: V,
    },
    /// Set `new` if the register holds `expected`; `succeeded` is the answer (`None`
    /// when unknown).
    Cas {
        expected: Option<V>,
        new: V,
        succeeded: Option<bool>,
    },
}

/// One completed (or timed-out) operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<V> {
    pub op: Op<V>,
    pub call: u64,
    /// `None`: the outcome is unknown (it may have taken effect at any time after `call`).
    pub ret: Option<u64>,
}

/// Applies `op` to the register; `None` if the op's answer is impossible in that state.
fn step<V: Clone + PartialEq>(state: &Option<V>, op: &Op<V>, known: bool) -> Option<Option<V>> {
    match op {
        Op::Read { output } => (!known || output == state).then(|| state.clone()),
        Op::Write { value } => Some(Some(value.clone())),
        Op::Cas {
            expected,
            new,
            succeeded,
        } => {
            let matches = state == expected;
            match succeeded {
                Some(s) if *s != matches => None,
                _ if matches => Some(Some(new.clone())),
                _ => Some(state.clone()),
            }
        }
    }
}

/// Whether `history` (from an initially empty register) is linearizable. Returns an
/// explanation when it is not.
pub fn check<V: Clone + Eq + Hash>(history: &[Event<V>]) -> Result<(), String> {
    let n = history.len();
    let mut done = vec![false; n];
    let mut seen: HashSet<(Vec<u64>, Option<V>)> = HashSet::new();
    if search(history, &mut done, None, &mut seen) {
        Ok(())
    } else {
        Err(format!(
            "no linearization of {n} operations ({} states explored)",
            seen.len()
        ))
    }
}

fn bits(done: &[bool]) -> Vec<u64> {
    let mut out = vec![0u64; done.len().div_ceil(64)];
    for (i, d) in done.iter().enumerate() {
        if *d {
            out[i / 64] |= 1 << (i % 64);
        }
    }
    out
}

fn search<V: Clone + Eq + Hash>(
    history: &[Event<V>],
    done: &mut Vec<bool>,
    state: Option<V>,
    seen: &mut HashSet<(Vec<u64>, Option<V>)>,
) -> bool {
    // Every operation with a known outcome is placed: the rest (unknown) may never
    // have happened.
    let pending_known = history
        .iter()
        .zip(done.iter())
        .filter(|(e, d)| !**d && e.ret.is_some());
    let Some(horizon) = pending_known.filter_map(|(e, _)| e.ret).min() else {
        return true;
    };
    for i in 0..history.len() {
        let e = &history[i];
        if done[i] || e.call > horizon {
            continue;
        }
        let Some(next) = step(&state, &e.op, e.ret.is_some()) else {
            continue;
        };
        done[i] = true;
        if seen.insert((bits(done), next.clone())) && search(history, done, next, seen) {
            return true;
        }
        done[i] = false;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A history produced by a real register: operations take effect at distinct points
    /// in time, each inside its own [call, return] interval.
    fn real_history(ops: Vec<(u8, i64, u64, u64)>) -> Vec<Event<i64>> {
        let mut register: Option<i64> = None;
        ops.into_iter()
            .enumerate()
            .map(|(i, (kind, v, before, after))| {
                let point = 10 * i as u64 + 10;
                let (call, ret) = (point - before.min(9), point + after);
                let op = match kind % 3 {
                    0 => Op::Read { output: register },
                    1 => {
                        register = Some(v);
                        Op::Write { value: v }
                    }
                    _ => {
                        let ok = register == Some(v);
                        if ok {
                            register = Some(v + 1);
                        }
                        Op::Cas {
                            expected: Some(v),
                            new: v + 1,
                            succeeded: Some(ok),
                        }
                    }
                };
                Event {
                    op,
                    call,
                    ret: Some(ret),
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn real_registers_pass_and_a_forged_read_fails(
            ops in proptest::collection::vec((0u8..3, 0i64..3, 0u64..30, 0u64..30), 1..14),
        ) {
            let history = real_history(ops);
            prop_assert!(check(&history).is_ok());
            // A read of a value nobody ever wrote cannot be explained.
            let mut forged = history.clone();
            forged.push(Event { op: Op::Read { output: Some(99) }, call: 0, ret: Some(1000) });
            prop_assert!(check(&forged).is_err());
        }
    }

    fn ev(op: Op<i64>, call: u64, ret: Option<u64>) -> Event<i64> {
        Event { op, call, ret }
    }

    fn read(v: Option<i64>, call: u64, ret: u64) -> Event<i64> {
        ev(Op::Read { output: v }, call, Some(ret))
    }

    fn write(v: i64, call: u64, ret: Option<u64>) -> Event<i64> {
        ev(Op::Write { value: v }, call, ret)
    }

    #[test]
    fn sequential_and_overlapping_histories() {
        // w1 then r1: fine; a read overlapping a write may see either value.
        assert!(check(&[write(1, 0, Some(1)), read(Some(1), 2, 3)]).is_ok());
        assert!(check(&[write(1, 0, Some(5)), read(None, 1, 2), read(Some(1), 3, 4)]).is_ok());
        // A stale read after the write returned is not linearizable.
        assert!(check(&[write(1, 0, Some(1)), read(None, 2, 3)]).is_err());
        // Once a read saw the new value, a later read may not see the old one.
        let h = [write(1, 0, Some(10)), read(Some(1), 1, 2), read(None, 3, 4)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn unknown_operations_may_or_may_not_have_happened() {
        assert!(check(&[write(1, 0, None), read(Some(1), 5, 6)]).is_ok());
        assert!(check(&[write(1, 0, None), read(None, 5, 6)]).is_ok());
        // But not both ways: once seen, it happened.
        let h = [write(1, 0, None), read(Some(1), 5, 6), read(None, 7, 8)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn compare_and_set_answers_must_match_the_register() {
        let cas = |expected, new, ok, call, ret| {
            ev(
                Op::Cas {
                    expected,
                    new,
                    succeeded: Some(ok),
                },
                call,
                Some(ret),
            )
        };
        let ok = [
            write(1, 0, Some(1)),
            cas(Some(1), 2, true, 2, 3),
            read(Some(2), 4, 5),
        ];
        assert!(check(&ok).is_ok());
        let both_won = [
            write(1, 0, Some(1)),
            cas(Some(1), 2, true, 2, 5),
            cas(Some(1), 3, true, 3, 6),
        ];
        assert!(check(&both_won).is_err());
        let wrong_failure = [write(1, 0, Some(1)), cas(Some(1), 2, false, 2, 3)];
        assert!(check(&wrong_failure).is_err());
    }
}
