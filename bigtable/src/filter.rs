//! Row filters: the Cloud Bigtable `RowFilter` set, applied to one row's cells at a time.
//! [`RowFilter`] is the plain description (what the gRPC layer maps 1:1);
//! [`CompiledFilter`] is it with regular expressions compiled, ready to run.
//!
//! Semantics follow Cloud Bigtable: a chain feeds each filter's output to the next; an
//! interleave runs each filter on the input and merges the outputs (duplicates kept);
//! a condition runs `true_filter` when the predicate outputs any cell, else
//! `false_filter`; a sink copies its input straight to the final output and passes
//! nothing to its parent. Regular expressions must match the whole string (RE2 syntax
//! as the `regex` crate supports it, bytes mode).

use std::ops::Bound;

use regex::bytes::{Regex, RegexBuilder};

use crate::error::{Error, Result};
use crate::key::Timestamp;
use crate::row_reader::{Cell, ColumnSpan, ReadWindow};

/// A filter, as a client describes it.
#[derive(Debug, Clone, PartialEq)]
pub enum RowFilter {
    Chain(Vec<RowFilter>),
    Interleave(Vec<RowFilter>),
    Condition {
        predicate: Box<RowFilter>,
        true_filter: Option<Box<RowFilter>>,
        false_filter: Option<Box<RowFilter>>,
    },
    PassAll,
    BlockAll,
    Sink,
    RowKeyRegex(Vec<u8>),
    /// Keeps each row with this probability.
    RowSample(f64),
    FamilyNameRegex(String),
    QualifierRegex(Vec<u8>),
    ColumnRange {
        family: String,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    },
    /// `start <= ts < end` (`end = None`: no upper bound).
    TimestampRange {
        start: Timestamp,
        end: Option<Timestamp>,
    },
    ValueRegex(Vec<u8>),
    ValueRange {
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    },
    CellsPerRowOffset(usize),
    CellsPerRowLimit(usize),
    CellsPerColumnLimit(usize),
    StripValue,
    ApplyLabel(String),
}

/// A filter ready to apply.
#[derive(Debug, Clone)]
pub enum CompiledFilter {
    Chain(Vec<CompiledFilter>),
    Interleave(Vec<CompiledFilter>),
    Condition(Box<[CompiledFilter; 3]>),
    PassAll,
    BlockAll,
    Sink,
    RowKeyRegex(Regex),
    RowSample(f64),
    FamilyNameRegex(Regex),
    QualifierRegex(Regex),
    ColumnRange {
        family: Vec<u8>,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    },
    TimestampRange(Timestamp, Option<Timestamp>),
    ValueRegex(Regex),
    ValueRange(Bound<Vec<u8>>, Bound<Vec<u8>>),
    CellsPerRowOffset(usize),
    CellsPerRowLimit(usize),
    CellsPerColumnLimit(usize),
    StripValue,
    ApplyLabel(String),
}

/// Largest compiled regular expression accepted (bytes of the compiled program).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const MAX_FILTER_DEPTH: usize = 20;

fn compile_regex(pattern: &[u8]) -> Result<Regex> {
    let text = std::str::from_utf8(pattern)
        .map_err(|_| Error::InvalidArgument("regular expression is not UTF-8".into()))?;
    RegexBuilder::new(&format!("^(?:{text})$"))
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("bad regular expression {text:?}: {e}")))
}

impl RowFilter {
    pub fn compile(&self) -> Result<CompiledFilter> {
        self.compile_at(0)
    }

    fn compile_at(&self, depth: usize) -> Result<CompiledFilter> {
        if depth > MAX_FILTER_DEPTH {
            return Err(Error::InvalidArgument(format!(
                "filter nests deeper than {MAX_FILTER_DEPTH}"
            )));
        }
        let all = |filters: &[RowFilter]| -> Result<Vec<CompiledFilter>> {
            filters.iter().map(|f| f.compile_at(depth + 1)).collect()
        };
        let optional = |f: &Option<Box<RowFilter>>| -> Result<CompiledFilter> {
            f.as_ref()
                .map_or(Ok(CompiledFilter::BlockAll), |f| f.compile_at(depth + 1))
        };
        Ok(match self {
            RowFilter::Chain(filters) => CompiledFilter::Chain(all(filters)?),
            RowFilter::Interleave(filters) => CompiledFilter::Interleave(all(filters)?),
            RowFilter::Condition {
                predicate,
                true_filter,
                false_filter,
            } => CompiledFilter::Condition(Box::new([
                predicate.compile_at(depth + 1)?,
                optional(true_filter)?,
                optional(false_filter)?,
            ])),
            RowFilter::PassAll => CompiledFilter::PassAll,
            RowFilter::BlockAll => CompiledFilter::BlockAll,
            RowFilter::Sink => CompiledFilter::Sink,
            RowFilter::RowKeyRegex(p) => CompiledFilter::RowKeyRegex(compile_regex(p)?),
            RowFilter::RowSample(p) => {
                if !(0.0..=1.0).contains(p) {
                    return Err(Error::InvalidArgument(format!(
                        "row sample probability {p} is not in [0, 1]"
                    )));
                }
                CompiledFilter::RowSample(*p)
            }
            RowFilter::FamilyNameRegex(p) => {
                CompiledFilter::FamilyNameRegex(compile_regex(p.as_bytes())?)
            }
            RowFilter::QualifierRegex(p) => CompiledFilter::QualifierRegex(compile_regex(p)?),
            RowFilter::ColumnRange { family, start, end } => CompiledFilter::ColumnRange {
                family: family.as_bytes().to_vec(),
                start: start.clone(),
                end: end.clone(),
            },
            RowFilter::TimestampRange { start, end } => {
                CompiledFilter::TimestampRange(*start, *end)
            }
            RowFilter::ValueRegex(p) => CompiledFilter::ValueRegex(compile_regex(p)?),
            RowFilter::ValueRange { start, end } => {
                CompiledFilter::ValueRange(start.clone(), end.clone())
            }
            RowFilter::CellsPerRowOffset(n) => CompiledFilter::CellsPerRowOffset(*n),
            RowFilter::CellsPerRowLimit(n) => CompiledFilter::CellsPerRowLimit(*n),
            RowFilter::CellsPerColumnLimit(n) => CompiledFilter::CellsPerColumnLimit(*n),
            RowFilter::StripValue => CompiledFilter::StripValue,
            RowFilter::ApplyLabel(l) => CompiledFilter::ApplyLabel(l.clone()),
        })
    }
}

/// The window all of `filters` share, ignoring those that output nothing: the same
/// timestamps and versions, over the union of their columns.
fn flatten_chain<'a>(parts: &'a [CompiledFilter], out: &mut Vec<&'a CompiledFilter>) {
    for part in parts {
        match part {
            CompiledFilter::Chain(inner) => flatten_chain(inner, out),
            other => out.push(other),
        }
    }
}

fn common_window<'a>(filters: impl Iterator<Item = &'a CompiledFilter>) -> Option<ReadWindow> {
    let mut common: Option<ReadWindow> = None;
    for f in filters.filter(|f| !f.blocks_all()) {
        let w = f.read_window()?;
        match &mut common {
            None => common = Some(w),
            Some(c) if (c.start, c.end, c.versions) != (w.start, w.end, w.versions) => return None,
            Some(c) => {
                c.columns = match (c.columns.take(), w.columns) {
                    (Some(mut a), Some(b)) => {
                        a.extend(b);
                        Some(a)
                    }
                    _ => None,
                }
            }
        }
    }
    common
}

fn in_range(v: &[u8], start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    crate::key::after_start(v, start) && crate::key::before_end(v, end)
}

/// Orders cells the way a row is returned: by column, newest first.
fn column_order(a: &Cell, b: &Cell) -> std::cmp::Ordering {
    (&a.family, &a.qualifier, std::cmp::Reverse(a.timestamp)).cmp(&(
        &b.family,
        &b.qualifier,
        std::cmp::Reverse(b.timestamp),
    ))
}

impl CompiledFilter {
    /// The cells of row `key` that the filter outputs, in column order.
    pub fn apply(&self, key: &[u8], cells: Vec<Cell>) -> Vec<Cell> {
        let mut sunk = Vec::new();
        let mut out = self.run(key, cells, &mut sunk);
        if !sunk.is_empty() {
            out.append(&mut sunk);
            out.sort_by(column_order);
        }
        out
    }

    /// The cells this filter drops however the rest of the row looks, as a window a
    /// row reader can apply while reading: a chain of column selections, then perhaps
    /// a timestamp range, then perhaps a per-column version limit. `None` when the
    /// filter does not start that way.
    pub fn read_window(&self) -> Option<ReadWindow> {
        match self {
            CompiledFilter::Chain(parts) => {
                let mut window = ReadWindow::ALL;
                // A chain inside a chain is the same chain, spelled out.
                let mut flat = Vec::new();
                flatten_chain(parts, &mut flat);
                for part in flat {
                    match part {
                        CompiledFilter::TimestampRange(start, end) => {
                            window.start = window.start.max(*start);
                            window.end = match (window.end, end) {
                                (Some(a), Some(b)) => Some(a.min(*b)),
                                (a, b) => a.or(*b),
                            };
                        }
                        CompiledFilter::CellsPerColumnLimit(n) => {
                            window.versions = Some(*n);
                            break;
                        }
                        p if p.selects_columns() => {
                            // A chain keeps the columns every part keeps: any one part's
                            // columns are a safe (larger) set.
                            if window.columns.is_none() {
                                window.columns = p.column_spans();
                            }
                        }
                        _ => break,
                    }
                }
                Some(window)
            }
            CompiledFilter::Interleave(parts) => common_window(parts.iter()),
            CompiledFilter::Condition(parts) => common_window(parts.iter()),
            f if f.selects_columns() => Some(ReadWindow {
                columns: f.column_spans(),
                ..ReadWindow::ALL
            }),
            _ => None,
        }
    }

    /// The columns a column-selecting filter keeps, as spans (`None`: not known as
    /// spans, so possibly any).
    fn column_spans(&self) -> Option<Vec<ColumnSpan>> {
        match self {
            CompiledFilter::ColumnRange { family, start, end } => Some(vec![ColumnSpan {
                family: family.clone(),
                start: start.clone(),
                end: end.clone(),
            }]),
            CompiledFilter::Chain(parts) => parts.iter().find_map(CompiledFilter::column_spans),
            CompiledFilter::Interleave(parts) => {
                let mut all = Vec::new();
                for p in parts {
                    all.extend(p.column_spans()?);
                }
                Some(all)
            }
            _ => None,
        }
    }

    /// Whether the filter outputs no cell whatever the row.
    fn blocks_all(&self) -> bool {
        matches!(self, CompiledFilter::BlockAll)
    }

    /// Whether the filter keeps or drops whole columns (whatever their versions).
    fn selects_columns(&self) -> bool {
        match self {
            CompiledFilter::PassAll
            | CompiledFilter::ColumnRange { .. }
            | CompiledFilter::FamilyNameRegex(_)
            | CompiledFilter::QualifierRegex(_) => true,
            CompiledFilter::Chain(parts) | CompiledFilter::Interleave(parts) => {
                parts.iter().all(CompiledFilter::selects_columns)
            }
            _ => false,
        }
    }

    /// Whether the filter passes every cell unchanged (so reads can skip it).
    pub fn is_pass_all(&self) -> bool {
        matches!(self, CompiledFilter::PassAll)
    }

    fn run(&self, key: &[u8], mut cells: Vec<Cell>, sunk: &mut Vec<Cell>) -> Vec<Cell> {
        use CompiledFilter as F;
        match self {
            F::Chain(filters) => {
                for f in filters {
                    if cells.is_empty() {
                        break;
                    }
                    cells = f.run(key, cells, sunk);
                }
                cells
            }
            F::Interleave(filters) => {
                let mut out: Vec<Cell> = filters
                    .iter()
                    .flat_map(|f| f.run(key, cells.clone(), sunk))
                    .collect();
                out.sort_by(column_order);
                out
            }
            F::Condition(parts) => {
                let [predicate, true_filter, false_filter] = parts.as_ref();
                let matched = !predicate
                    .run(key, cells.clone(), &mut Vec::new())
                    .is_empty();
                let branch = if matched { true_filter } else { false_filter };
                branch.run(key, cells, sunk)
            }
            F::PassAll => cells,
            F::BlockAll => Vec::new(),
            F::Sink => {
                sunk.append(&mut cells);
                Vec::new()
            }
            F::RowKeyRegex(re) => {
                if re.is_match(key) {
                    cells
                } else {
                    Vec::new()
                }
            }
            F::RowSample(p) => {
                if row_sample_hash(key) < *p {
                    cells
                } else {
                    Vec::new()
                }
            }
            F::FamilyNameRegex(re) => keep(cells, |c| re.is_match(&c.family)),
            F::QualifierRegex(re) => keep(cells, |c| re.is_match(&c.qualifier)),
            F::ColumnRange { family, start, end } => keep(cells, |c| {
                &c.family == family && in_range(&c.qualifier, start, end)
            }),
            F::TimestampRange(start, end) => keep(cells, |c| {
                c.timestamp >= *start && end.is_none_or(|e| c.timestamp < e)
            }),
            F::ValueRegex(re) => keep(cells, |c| re.is_match(&c.value)),
            F::ValueRange(start, end) => keep(cells, |c| in_range(&c.value, start, end)),
            F::CellsPerRowOffset(n) => cells.split_off((*n).min(cells.len())),
            F::CellsPerRowLimit(n) => {
                cells.truncate(*n);
                cells
            }
            F::CellsPerColumnLimit(n) => {
                let mut seen = 0;
                let mut column: Option<(Vec<u8>, Vec<u8>)> = None;
                keep(cells, |c| {
                    let same = column
                        .as_ref()
                        .is_some_and(|(f, q)| *f == c.family && *q == c.qualifier);
                    if !same {
                        column = Some((c.family.clone(), c.qualifier.clone()));
                        seen = 0;
                    }
                    seen += 1;
                    seen <= *n
                })
            }
            F::StripValue => {
                for c in &mut cells {
                    c.value.clear();
                }
                cells
            }
            F::ApplyLabel(label) => {
                for c in &mut cells {
                    c.labels.push(label.clone());
                }
                cells
            }
        }
    }
}

/// A point in `[0, 1)` drawn for a row: uniform over rows, fixed for a row within one
/// process (so a row sample is stable across the pages of one scan).
fn row_sample_hash(key: &[u8]) -> f64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let h = SEED.get_or_init(Default::default).hash_one(key);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn keep(mut cells: Vec<Cell>, mut pred: impl FnMut(&Cell) -> bool) -> Vec<Cell> {
    cells.retain(|c| pred(c));
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(family: &str, qualifier: &str, ts: i64, value: &str) -> Cell {
        Cell {
            family: family.into(),
            qualifier: qualifier.into(),
            timestamp: ts,
            value: value.into(),
            labels: Vec::new(),
        }
    }

    fn row() -> Vec<Cell> {
        vec![
            cell("a", "x", 3, "v3"),
            cell("a", "x", 2, "v2"),
            cell("a", "y", 1, "w"),
            cell("b", "x", 5, "z"),
        ]
    }

    fn run(f: RowFilter) -> Vec<(String, String, i64, String, Vec<String>)> {
        f.compile()
            .unwrap()
            .apply(b"row1", row())
            .into_iter()
            .map(|c| {
                (
                    String::from_utf8(c.family).unwrap(),
                    String::from_utf8(c.qualifier).unwrap(),
                    c.timestamp,
                    String::from_utf8(c.value).unwrap(),
                    c.labels,
                )
            })
            .collect()
    }

    fn stamps(f: RowFilter) -> Vec<i64> {
        run(f).into_iter().map(|c| c.2).collect()
    }

    #[test]
    fn a_chain_nested_in_a_chain_narrows_the_read_window_as_a_flat_chain_does() {
        let column = RowFilter::ColumnRange {
            family: "log".into(),
            start: Bound::Included(b"q".to_vec()),
            end: Bound::Included(b"q".to_vec()),
        };
        let value = RowFilter::ValueRange {
            start: Bound::Included(b"v".to_vec()),
            end: Bound::Included(b"v".to_vec()),
        };
        let flat = RowFilter::Chain(vec![
            column.clone(),
            RowFilter::CellsPerColumnLimit(1),
            value.clone(),
        ]);
        let nested = RowFilter::Chain(vec![
            RowFilter::Chain(vec![column, RowFilter::CellsPerColumnLimit(1)]),
            value,
        ]);
        let window = |f: &RowFilter| f.compile().expect("compiles").read_window();
        let nested_window = window(&nested).expect("a window");
        assert!(
            nested_window.columns.is_some(),
            "only the one column is read"
        );
        assert_eq!(nested_window.versions, Some(1));
        assert_eq!(
            window(&flat).map(|w| (w.columns, w.versions)),
            Some((nested_window.columns, nested_window.versions))
        );
    }

    #[test]
    fn cell_filters() {
        assert_eq!(stamps(RowFilter::PassAll), vec![3, 2, 1, 5]);
        assert!(stamps(RowFilter::BlockAll).is_empty());
        assert_eq!(stamps(RowFilter::FamilyNameRegex("b".into())), vec![5]);
        assert_eq!(
            stamps(RowFilter::QualifierRegex(b"x".to_vec())),
            vec![3, 2, 5]
        );
        assert_eq!(stamps(RowFilter::ValueRegex(b"v.*".to_vec())), vec![3, 2]);
        assert!(
            stamps(RowFilter::ValueRegex(b"v".to_vec())).is_empty(),
            "whole match"
        );
        let range = RowFilter::ColumnRange {
            family: "a".into(),
            start: Bound::Excluded(b"x".to_vec()),
            end: Bound::Unbounded,
        };
        assert_eq!(stamps(range), vec![1]);
        let ts = RowFilter::TimestampRange {
            start: 2,
            end: Some(5),
        };
        assert_eq!(stamps(ts), vec![3, 2]);
        let values = RowFilter::ValueRange {
            start: Bound::Included(b"v3".to_vec()),
            end: Bound::Included(b"w".to_vec()),
        };
        assert_eq!(stamps(values), vec![3, 1]);
        assert_eq!(stamps(RowFilter::CellsPerRowOffset(1)), vec![2, 1, 5]);
        assert_eq!(stamps(RowFilter::CellsPerRowLimit(2)), vec![3, 2]);
        assert_eq!(stamps(RowFilter::CellsPerColumnLimit(1)), vec![3, 1, 5]);
        assert!(run(RowFilter::StripValue).iter().all(|c| c.3.is_empty()));
        assert!(run(RowFilter::ApplyLabel("L".into()))
            .iter()
            .all(|c| c.4 == vec!["L".to_string()]));
    }

    #[test]
    fn row_filters() {
        assert_eq!(stamps(RowFilter::RowKeyRegex(b"row\\d".to_vec())).len(), 4);
        assert!(stamps(RowFilter::RowKeyRegex(b"row".to_vec())).is_empty());
        assert_eq!(stamps(RowFilter::RowSample(1.0)).len(), 4);
        assert!(stamps(RowFilter::RowSample(0.0)).is_empty());
    }

    #[test]
    fn composition() {
        let chain = RowFilter::Chain(vec![
            RowFilter::FamilyNameRegex("a".into()),
            RowFilter::CellsPerColumnLimit(1),
        ]);
        assert_eq!(stamps(chain), vec![3, 1]);
        let interleave = RowFilter::Interleave(vec![
            RowFilter::FamilyNameRegex("b".into()),
            RowFilter::CellsPerRowLimit(1),
            RowFilter::CellsPerRowLimit(1),
        ]);
        assert_eq!(stamps(interleave), vec![3, 3, 5], "duplicates are kept");
        let condition = |predicate: RowFilter| RowFilter::Condition {
            predicate: Box::new(predicate),
            true_filter: Some(Box::new(RowFilter::CellsPerRowLimit(1))),
            false_filter: None,
        };
        assert_eq!(
            stamps(condition(RowFilter::ValueRegex(b"z".to_vec()))),
            vec![3]
        );
        assert!(stamps(condition(RowFilter::ValueRegex(b"nope".to_vec()))).is_empty());
        // A labelled copy of family b is sunk past the chain that blocks everything.
        let sink = RowFilter::Interleave(vec![
            RowFilter::Chain(vec![
                RowFilter::FamilyNameRegex("b".into()),
                RowFilter::ApplyLabel("sunk".into()),
                RowFilter::Sink,
            ]),
            RowFilter::CellsPerRowLimit(1),
        ]);
        let got = run(RowFilter::Chain(vec![sink, RowFilter::BlockAll]));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].4, vec!["sunk".to_string()]);
    }

    #[test]
    fn bad_filters_are_invalid_arguments() {
        for f in [
            RowFilter::ValueRegex(b"(".to_vec()),
            RowFilter::RowSample(1.5),
            RowFilter::QualifierRegex(vec![0xFF]),
        ] {
            assert!(
                matches!(f.compile(), Err(Error::InvalidArgument(_))),
                "{f:?}"
            );
        }
        let mut deep = RowFilter::PassAll;
        for _ in 0..30 {
            deep = RowFilter::Chain(vec![deep]);
        }
        assert!(deep.compile().is_err());
    }
}
