//! Waking only the threads whose wait is over.
//!
//! A condition variable's `notify_all` wakes every waiter, and under load most of them
//! find their wait is not over and go back to sleep: with many concurrent writers each
//! commit then costs dozens of context switches. Here each waiter registers the point
//! it waits for (an LSN, a sequence number), and whoever advances the state wakes those
//! it satisfied, after releasing the lock, and no one else.

use std::thread::{self, Thread, ThreadId};

use parking_lot::MutexGuard;

/// The threads waiting for a counter to reach their targets. Kept inside the state the
/// counter belongs to, under that state's mutex.
#[derive(Default)]
pub struct Waiters {
    waiting: Vec<Waiter>,
}

struct Waiter {
    target: u64,
    /// A second kind of wait (for the log: durable rather than only written).
    strict: bool,
    thread: Thread,
}

impl Waiters {
    /// Takes out the waiters that `reached` satisfies: `reached(target, strict)`.
    #[must_use = "the taken threads must be woken (after unlocking)"]
    pub fn take_reached(&mut self, reached: impl Fn(u64, bool) -> bool) -> Vec<Thread> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        let mut woken = Vec::new();
        self.waiting.retain(|w| {
            let done = reached(w.target, w.strict);
            if done {
                woken.push(w.thread.clone());
            }
            !done
        });
        woken
    }

    /// Takes out the longest-waiting thread, if any (to hand it a job, such as leading
    /// the next write).
    pub fn take_first(&mut self) -> Option<Thread> {
        (!self.waiting.is_empty()).then(|| self.waiting.remove(0).thread)
    }

    /// Takes out every waiter (the state failed: each must see why).
    pub fn take_all(&mut self) -> Vec<Thread> {
        self.waiting.drain(..).map(|w| w.thread).collect()
    }

    fn remove(&mut self, id: ThreadId) {
        self.waiting.retain(|w| w.thread.id() != id);
    }
}

/// Sleeps once until woken through `waiters` (or spuriously): registers the calling
/// thread for `target`, releases the lock while parked, and relocks. The caller loops,
/// checking its condition under the lock.
pub fn sleep<T>(
    guard: &mut MutexGuard<'_, T>,
    waiters: impl Fn(&mut T) -> &mut Waiters,
    target: u64,
    strict: bool,
) {
    let me = thread::current();
    let id = me.id();
    waiters(guard).waiting.push(Waiter {
        target,
        strict,
        thread: me,
    });
    MutexGuard::unlocked(guard, thread::park);
    // Woken spuriously, our entry is still there; the caller may now return.
    waiters(guard).remove(id);
}

/// Wakes the threads taken out of a [`Waiters`] (call with the lock released).
pub fn wake(threads: Vec<Thread>) {
    for t in threads {
        t.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;

    struct Counter {
        value: u64,
        waiters: Waiters,
    }

    #[test]
    fn only_the_satisfied_waiters_are_taken() {
        let mut w = Waiters::default();
        for (target, strict) in [(5, false), (9, false), (5, true)] {
            w.waiting.push(Waiter {
                target,
                strict,
                thread: thread::current(),
            });
        }
        let taken = w.take_reached(|t, strict| !strict && t <= 6);
        assert_eq!(taken.len(), 1);
        assert_eq!(w.waiting.len(), 2);
        assert!(w.take_first().is_some());
        assert_eq!(w.take_all().len(), 1);
        assert!(w.take_first().is_none());
    }

    #[test]
    fn waiters_wake_when_the_counter_reaches_their_target() {
        let state = Arc::new(Mutex::new(Counter {
            value: 0,
            waiters: Waiters::default(),
        }));
        let sleepers: Vec<_> = (1..=4u64)
            .map(|target| {
                let state = state.clone();
                thread::spawn(move || {
                    let mut s = state.lock();
                    while s.value < target {
                        sleep(&mut s, |c| &mut c.waiters, target, false);
                    }
                    s.value
                })
            })
            .collect();
        for _ in 1..=4 {
            let woken = {
                let mut s = state.lock();
                s.value += 1;
                let value = s.value;
                s.waiters.take_reached(|t, _| t <= value)
            };
            wake(woken);
        }
        for s in sleepers {
            assert!(s.join().unwrap() >= 1);
        }
        assert!(state.lock().waiters.waiting.is_empty());
    }
}
