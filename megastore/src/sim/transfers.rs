//! The simulator's two-phase workload: clients move amounts between accounts in the
//! two register groups with two-phase transactions, and sometimes stop as a crashed
//! coordinator would (after preparing, or right after deciding); finishers run at
//! random replicas. Balances start absent (0), so the total of every balance must
//! stay 0. Checked after healing ([`Transfers::check`]): once the finisher has run, no
//! part is left prepared at any replica, and every replica's balances sum to 0.

use crate::sim::registers::group_key;
use crate::{Database, Entity, Error, Value};

pub const ACCOUNTS_PER_GROUP: i64 = 2;

/// How a client ends a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Prepare, decide, resolve every part.
    Complete,
    /// Stop after preparing every part.
    AfterPrepare,
    /// Stop after recording the decision (commit) at the coordinator.
    AfterDecision,
}

#[derive(Debug, Default)]
pub struct Transfers {
    pub attempted: usize,
    pub committed: usize,
    pub abandoned: usize,
}

fn key(group: i64, id: i64) -> [Value; 2] {
    [Value::Int64(group), Value::Int64(id)]
}

fn balance_of(tx: &crate::Transaction<'_>, group: i64, id: i64) -> Result<i64, Error> {
    Ok(match tx.get("Account", &key(group, id))? {
        Some(account) => match account.get("balance") {
            Some(Value::Int64(v)) => *v,
            _ => 0,
        },
        None => 0,
    })
}

fn account(group: i64, id: i64, balance: i64) -> Entity {
    Entity::new("Account")
        .set("g", Value::Int64(group))
        .set("id", Value::Int64(id))
        .set("balance", Value::Int64(balance))
}

impl Transfers {
    /// Moves `amount` from account `from` (group, id) to `to` in another group.
    pub fn transfer(
        &mut self,
        db: &Database,
        from: (i64, i64),
        to: (i64, i64),
        amount: i64,
        ending: Ending,
    ) {
        self.attempted += 1;
        let groups = [group_key(from.0), group_key(to.0)];
        let prepared = db.prepare_multi(&groups, |tx| {
            let source = balance_of(tx.on(&group_key(from.0))?, from.0, from.1)?;
            let target = balance_of(tx.on(&group_key(to.0))?, to.0, to.1)?;
            tx.on(&group_key(from.0))?
                .put(account(from.0, from.1, source - amount))?;
            tx.on(&group_key(to.0))?
                .put(account(to.0, to.1, target + amount))
        });
        let Ok((_, prepared)) = prepared else {
            return; // aborted (or unknown): a finisher cleans up what is left
        };
        match ending {
            Ending::Complete => {
                if matches!(prepared.commit(db), Ok(true)) {
                    self.committed += 1;
                }
            }
            Ending::AfterPrepare => self.abandoned += 1,
            Ending::AfterDecision => {
                self.abandoned += 1;
                let _ = prepared.decide(db, true);
            }
        }
    }

    /// Finishes every abandoned transaction at `db` (after healing).
    pub fn finish(&self, db: &Database) -> Result<(), Error> {
        db.finish_prepared(std::time::Duration::ZERO).map(|_| ())
    }

    /// The violations at `db` once finished: parts left prepared, or a total that is
    /// not 0.
    pub fn check(replica: usize, db: &Database) -> Vec<String> {
        let mut violations = Vec::new();
        let mut total = 0;
        for group in [0, 1] {
            let seen = db.transact(&group_key(group), |tx| {
                (0..ACCOUNTS_PER_GROUP)
                    .map(|id| balance_of(tx, group, id))
                    .sum::<Result<i64, Error>>()
            });
            match seen {
                Ok((sum, _)) => total += sum,
                Err(e) => violations.push(format!(
                    "after healing, replica {replica} cannot read group {group}'s accounts: {e}"
                )),
            }
        }
        if total != 0 {
            violations.push(format!(
                "transfers did not conserve money: the balances at replica {replica} sum to {total}"
            ));
        }
        match db.prepared_transactions() {
            Ok(left) if !left.is_empty() => violations.push(format!(
                "after finishing, replica {replica} still holds {} prepared parts: {:?}",
                left.len(),
                left.iter().map(|r| r.txid).collect::<Vec<_>>()
            )),
            Ok(_) => {}
            Err(e) => violations.push(format!("replica {replica}: {e}")),
        }
        violations
    }
}
