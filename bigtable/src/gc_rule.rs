//! Per-family garbage-collection rules, as Cloud Bigtable defines them (and one of our
//! own, `KeepFor`): a cell is collected when the family's rule says so; reads hide
//! collected cells and compactions drop them.

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
    /// Keep every cell written within this age, and each column's newest cell older
    /// than it: a read as of any time within the age sees what it would with every cell
    /// kept. (Not a Cloud Bigtable rule: Megastore's data, read at past log positions.)
    KeepFor(Duration),
}

impl GcRule {
    /// Whether to keep `cell` of a column, at time `now` (microseconds).
    pub fn keeps(&self, cell: CellVersion, now: Timestamp) -> bool {
        let horizon =
            |age: &Duration| now.saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX));
        match self {
            GcRule::KeepAll => true,
            GcRule::MaxVersions(n) => cell.version < *n as usize,
            GcRule::MaxAge(age) => cell.timestamp >= horizon(age),
            GcRule::KeepFor(age) => {
                let horizon = horizon(age);
                cell.timestamp >= horizon || cell.newer.is_none_or(|newer| newer >= horizon)
            }
            GcRule::Union(rules) => rules.iter().all(|r| r.keeps(cell, now)),
            GcRule::Intersection(rules) => {
                rules.is_empty() || rules.iter().any(|r| r.keeps(cell, now))
            }
        }
    }
}

/// A cell as a rule judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellVersion {
    /// 0 for the newest of its column, 1 for the next, ...
    pub version: usize,
    pub timestamp: Timestamp,
    /// The timestamp of the next newer cell of the column (`None` for the newest).
    pub newer: Option<Timestamp>,
}

impl GcRule {
    /// Whether the rule's verdict on a cell may depend on the cells at or after `end`
    /// (a read window's exclusive end; `None`: no end), which the window leaves out.
    /// `MaxVersions` counts them; `KeepFor` looks at the next newer one, which only
    /// matters if it could be older than the age.
    pub fn needs_cells_after(&self, end: Option<Timestamp>, now: Timestamp) -> bool {
        match self {
            GcRule::KeepAll | GcRule::MaxAge(_) => false,
            GcRule::MaxVersions(_) => true,
            GcRule::KeepFor(age) => {
                let horizon =
                    now.saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX));
                end.is_some_and(|end| end < horizon)
            }
            GcRule::Union(rules) | GcRule::Intersection(rules) => {
                rules.iter().any(|r| r.needs_cells_after(end, now))
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
        let newer = cells[..i]
            .last()
            .filter(|p| p.family == c.family && p.qualifier == c.qualifier);
        version = if newer.is_some() { version + 1 } else { 0 };
        let cell = CellVersion {
            version,
            timestamp: c.timestamp,
            newer: newer.map(|p| p.timestamp),
        };
        keep.push(
            schema
                .gc_rule(&c.family)
                .is_some_and(|rule| rule.keeps(cell, now)),
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

    /// The newest-but-`version` cell at `timestamp`, its newer neighbour unknown (the
    /// rules below do not look at it).
    fn cell(version: usize, timestamp: Timestamp) -> CellVersion {
        CellVersion {
            version,
            timestamp,
            newer: None,
        }
    }

    #[test]
    fn single_rules() {
        assert!(GcRule::KeepAll.keeps(cell(1000, 0), NOW));
        let two = GcRule::MaxVersions(2);
        assert!(two.keeps(cell(0, 0), NOW) && two.keeps(cell(1, 0), NOW));
        assert!(!two.keeps(cell(2, 0), NOW));
        let hour = GcRule::MaxAge(Duration::from_secs(3600));
        assert!(hour.keeps(cell(5, NOW - HOUR), NOW));
        assert!(!hour.keeps(cell(0, NOW - HOUR - 1), NOW));
    }

    #[test]
    fn keep_for_keeps_what_a_read_within_the_age_sees() {
        let hour = GcRule::KeepFor(Duration::from_secs(3600));
        let at = |version, timestamp, newer| CellVersion {
            version,
            timestamp,
            newer,
        };
        // Within the hour: kept, however many versions follow.
        assert!(hour.keeps(at(7, NOW - 60, Some(NOW)), NOW));
        // Older, but the column's newest: kept.
        assert!(hour.keeps(at(0, NOW - 3 * HOUR, None), NOW));
        // Older, and the newest older than the hour (a read an hour ago saw it): kept.
        assert!(hour.keeps(at(1, NOW - 3 * HOUR, Some(NOW - HOUR)), NOW));
        // Older, with a newer cell older than the hour too: collected.
        assert!(!hour.keeps(at(2, NOW - 3 * HOUR, Some(NOW - HOUR - 1)), NOW));
    }

    #[test]
    fn a_window_may_leave_out_newer_cells_unless_the_rule_looks_at_them() {
        let hour = GcRule::KeepFor(Duration::from_secs(3600));
        // Cells left out are at or after the window's end: newer than the horizon if
        // the end is, and then they cannot change a verdict.
        assert!(!hour.needs_cells_after(Some(NOW - HOUR), NOW));
        assert!(hour.needs_cells_after(Some(NOW - HOUR - 1), NOW));
        assert!(!hour.needs_cells_after(None, NOW));
        assert!(GcRule::MaxVersions(1).needs_cells_after(Some(NOW), NOW));
        assert!(!GcRule::MaxAge(Duration::ZERO).needs_cells_after(Some(0), NOW));
        let both = GcRule::Union(vec![GcRule::KeepAll, hour]);
        assert!(both.needs_cells_after(Some(NOW - 2 * HOUR), NOW));
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
            assert_eq!(
                union.keeps(cell(version, ts), NOW),
                u,
                "union {version} {ts}"
            );
            assert_eq!(
                intersection.keeps(cell(version, ts), NOW),
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
        assert!(nested.keeps(cell(0, 0), NOW));
        assert!(
            nested.keeps(cell(2, NOW), NOW),
            "second rule keeps a fresh cell"
        );
        assert!(!nested.keeps(cell(2, NOW - 1), NOW));
        assert!(!nested.keeps(cell(3, NOW), NOW));
        assert!(GcRule::MaxAge(Duration::MAX).keeps(cell(0, i64::MIN), i64::MIN));
        assert!(GcRule::KeepFor(Duration::MAX).keeps(cell(9, i64::MIN), i64::MIN));
        assert!(GcRule::Intersection(vec![]).keeps(cell(9, 0), NOW));
    }
}
