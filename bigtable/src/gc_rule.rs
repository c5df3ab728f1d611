//! Per-family garbage-collection rules, as Cloud Bigtable defines them: a cell is
//! collected when the family's rule says so; reads hide collected cells and compactions
//! drop them.

use std::time::Duration;

use crate::key::Timestamp;
use crate::row_reader::Cell;
use crate::schema::TableSchema;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GcRule {
    /// Keep everything.
    #[default]
    KeepAll,
    /// Keep the newest `n` versions of each column.
    MaxVersions(u32),
    /// Keep cells whose timestamp is at most this old.
    MaxAge(Duration),
    /// Collect a cell if ANY of the rules would collect it.
    Union(Vec<GcRule>),
    /// Collect a cell only if ALL of the rules would collect it.
    Intersection(Vec<GcRule>),
}

impl GcRule {
    /// Whether to keep a cell that is the `version`-th newest of its column (0 = newest),
    /// with timestamp `timestamp` (microseconds), at time `now` (microseconds).
    pub fn keeps(&self, version: usize, timestamp: Timestamp, now: Timestamp) -> bool {
        match self {
            GcRule::KeepAll => true,
            GcRule::MaxVersions(n) => version < *n as usize,
            GcRule::MaxAge(age) => {
                let age = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
                timestamp >= now.saturating_sub(age)
            }
            GcRule::Union(rules) => rules.iter().all(|r| r.keeps(version, timestamp, now)),
            GcRule::Intersection(rules) => {
                rules.is_empty() || rules.iter().any(|r| r.keeps(version, timestamp, now))
            }
        }
    }
}

impl GcRule {
    /// Whether the rule depends on how many newer versions a cell has (so a read may
    /// not leave out newer cells before applying it).
    pub fn counts_versions(&self) -> bool {
        match self {
            GcRule::KeepAll | GcRule::MaxAge(_) => false,
            GcRule::MaxVersions(_) => true,
            GcRule::Union(rules) | GcRule::Intersection(rules) => {
                rules.iter().any(GcRule::counts_versions)
            }
        }
    }
}

/// Removes the cells a read must not return: cells of families the schema does not
/// declare, and cells their family's rule collects. `cells` are in column order, newest
/// first, as a row reader returns them.
pub fn collect_garbage(cells: &mut Vec<Cell>, schema: &TableSchema, now: Timestamp) {
    if schema.families.values().all(|r| *r == GcRule::KeepAll) {
        cells.retain(|c| schema.gc_rule(&c.family).is_some());
        return;
    }
    let mut keep = Vec::with_capacity(cells.len());
    let mut version = 0;
    for (i, c) in cells.iter().enumerate() {
        let same_column = i > 0 && {
            let p = &cells[i - 1];
            p.family == c.family && p.qualifier == c.qualifier
        };
        version = if same_column { version + 1 } else { 0 };
        keep.push(
            schema
                .gc_rule(&c.family)
                .is_some_and(|rule| rule.keeps(version, c.timestamp, now)),
        );
    }
    let mut flags = keep.into_iter();
    cells.retain(|_| flags.next().unwrap_or(false));
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = 1_000_000_000;
    const HOUR: Timestamp = 3_600_000_000;

    #[test]
    fn single_rules() {
        assert!(GcRule::KeepAll.keeps(1000, 0, NOW));
        let two = GcRule::MaxVersions(2);
        assert!(two.keeps(0, 0, NOW) && two.keeps(1, 0, NOW) && !two.keeps(2, 0, NOW));
        let hour = GcRule::MaxAge(Duration::from_secs(3600));
        assert!(hour.keeps(5, NOW - HOUR, NOW));
        assert!(!hour.keeps(0, NOW - HOUR - 1, NOW));
    }

    #[test]
    fn union_collects_what_any_rule_collects_and_intersection_what_all_do() {
        let rules = vec![
            GcRule::MaxVersions(1),
            GcRule::MaxAge(Duration::from_secs(3600)),
        ];
        let union = GcRule::Union(rules.clone());
        let intersection = GcRule::Intersection(rules);
        let old = NOW - 2 * HOUR;
        // (version, timestamp) -> (union keeps, intersection keeps)
        let cases = [
            ((0, NOW), (true, true)),
            ((1, NOW), (false, true)),
            ((0, old), (false, true)),
            ((1, old), (false, false)),
        ];
        for ((version, ts), (u, i)) in cases {
            assert_eq!(union.keeps(version, ts, NOW), u, "union {version} {ts}");
            assert_eq!(
                intersection.keeps(version, ts, NOW),
                i,
                "intersection {version} {ts}"
            );
        }
    }

    #[test]
    fn nested_rules_and_extreme_values() {
        let nested = GcRule::Union(vec![
            GcRule::MaxVersions(3),
            GcRule::Intersection(vec![GcRule::MaxVersions(1), GcRule::MaxAge(Duration::ZERO)]),
        ]);
        assert!(nested.keeps(0, 0, NOW));
        assert!(nested.keeps(2, NOW, NOW), "second rule keeps a fresh cell");
        assert!(!nested.keeps(2, NOW - 1, NOW));
        assert!(!nested.keeps(3, NOW, NOW));
        assert!(GcRule::MaxAge(Duration::MAX).keeps(0, i64::MIN, i64::MIN));
        assert!(GcRule::Intersection(vec![]).keeps(9, 0, NOW));
    }
}
