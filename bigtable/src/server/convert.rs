//! Between the Cloud Bigtable v2 messages and the engine's types, one direction each:
//! requests become engine values (rejecting what is malformed with INVALID_ARGUMENT),
//! engine values become responses.

use std::ops::Bound;
use std::time::Duration;

use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as admin;
use googleapis_tonic_google_bigtable_v2::google::bigtable::v2 as pb;
use tonic::Status;

use crate::engine::{ReadModifyWrite, RowRange, RowSet};
use crate::error::Error;
use crate::filter::RowFilter;
use crate::gc_rule::GcRule;
use crate::mutation::{Mutation, TimestampRange};
use crate::row_reader::Row;

pub fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// The gRPC status of an engine error.
pub fn status(error: Error) -> Status {
    match error {
        Error::NotFound(m) => Status::not_found(m),
        Error::AlreadyExists(m) => Status::already_exists(m),
        Error::InvalidArgument(m) => Status::invalid_argument(m),
        Error::Stalled(m) => Status::unavailable(format!("writes stalled: {m}")),
        other => Status::internal(other.to_string()),
    }
}

fn family(name: String) -> Vec<u8> {
    name.into_bytes()
}

/// `0` means "no upper bound" in the protocol.
fn timestamp_range(range: Option<pb::TimestampRange>) -> TimestampRange {
    let range = range.unwrap_or_default();
    TimestampRange {
        start: range.start_timestamp_micros,
        end: (range.end_timestamp_micros != 0).then_some(range.end_timestamp_micros),
    }
}

pub fn mutation(m: pb::Mutation) -> Result<Mutation, Status> {
    use pb::mutation::Mutation as M;
    Ok(
        match m
            .mutation
            .ok_or_else(|| invalid("mutation without a kind"))?
        {
            M::SetCell(s) => Mutation::SetCell {
                family: family(s.family_name),
                qualifier: s.column_qualifier,
                timestamp: match s.timestamp_micros {
                    -1 => None,
                    ts if ts < -1 => return Err(invalid(format!("timestamp {ts} out of range"))),
                    ts => Some(ts),
                },
                value: s.value,
            },
            M::DeleteFromColumn(d) => Mutation::DeleteFromColumn {
                family: family(d.family_name),
                qualifier: d.column_qualifier,
                range: timestamp_range(d.time_range),
            },
            M::DeleteFromFamily(d) => Mutation::DeleteFromFamily {
                family: family(d.family_name),
            },
            M::DeleteFromRow(_) => Mutation::DeleteFromRow,
            M::AddToCell(a) => Mutation::AddToCell {
                family: family(a.family_name),
                qualifier: raw_bytes(a.column_qualifier, "column_qualifier")?,
                timestamp: match raw_timestamp(a.timestamp)? {
                    -1 => None,
                    ts if ts < -1 => return Err(invalid(format!("timestamp {ts} out of range"))),
                    ts => Some(ts),
                },
                input: int_value(a.input)?,
            },
            M::MergeToCell(_) => return Err(invalid("MergeToCell is not supported")),
        },
    )
}

fn value_kind(v: Option<pb::Value>, what: &str) -> Result<pb::value::Kind, Status> {
    v.and_then(|v| v.kind)
        .ok_or_else(|| invalid(format!("AddToCell without {what}")))
}

fn raw_bytes(v: Option<pb::Value>, what: &str) -> Result<Vec<u8>, Status> {
    match value_kind(v, what)? {
        pb::value::Kind::RawValue(b) | pb::value::Kind::BytesValue(b) => Ok(b),
        pb::value::Kind::StringValue(s) => Ok(s.into_bytes()),
        _ => Err(invalid(format!("{what} must be bytes"))),
    }
}

fn raw_timestamp(v: Option<pb::Value>) -> Result<i64, Status> {
    match value_kind(v, "timestamp")? {
        pb::value::Kind::RawTimestampMicros(ts) => Ok(ts),
        _ => Err(invalid("timestamp must be raw_timestamp_micros")),
    }
}

fn int_value(v: Option<pb::Value>) -> Result<i64, Status> {
    match value_kind(v, "input")? {
        pb::value::Kind::IntValue(n) => Ok(n),
        _ => Err(invalid(
            "input must be int_value (only Int64 sums are supported)",
        )),
    }
}

pub fn mutations(ms: Vec<pb::Mutation>) -> Result<Vec<Mutation>, Status> {
    ms.into_iter().map(mutation).collect()
}

pub fn read_modify_write(rule: pb::ReadModifyWriteRule) -> Result<ReadModifyWrite, Status> {
    use pb::read_modify_write_rule::Rule;
    let family = family(rule.family_name);
    let qualifier = rule.column_qualifier;
    Ok(
        match rule.rule.ok_or_else(|| invalid("rule without a kind"))? {
            Rule::AppendValue(value) => ReadModifyWrite::Append {
                family,
                qualifier,
                value,
            },
            Rule::IncrementAmount(delta) => ReadModifyWrite::Increment {
                family,
                qualifier,
                delta,
            },
        },
    )
}

pub fn row_set(set: Option<pb::RowSet>) -> RowSet {
    use pb::row_range::{EndKey, StartKey};
    let set = set.unwrap_or_default();
    let ranges = set
        .row_ranges
        .into_iter()
        .map(|r| RowRange {
            start: match r.start_key {
                Some(StartKey::StartKeyClosed(k)) if !k.is_empty() => Bound::Included(k),
                Some(StartKey::StartKeyOpen(k)) if !k.is_empty() => Bound::Excluded(k),
                _ => Bound::Unbounded,
            },
            end: match r.end_key {
                Some(EndKey::EndKeyClosed(k)) if !k.is_empty() => Bound::Included(k),
                Some(EndKey::EndKeyOpen(k)) if !k.is_empty() => Bound::Excluded(k),
                _ => Bound::Unbounded,
            },
        })
        .collect();
    RowSet {
        keys: set.row_keys,
        ranges,
    }
}

fn count(n: i32, what: &str) -> Result<usize, Status> {
    usize::try_from(n).map_err(|_| invalid(format!("{what} must not be negative, got {n}")))
}

fn bound<T>(closed: Option<T>, open: Option<T>) -> Bound<T> {
    match (closed, open) {
        (Some(v), _) => Bound::Included(v),
        (None, Some(v)) => Bound::Excluded(v),
        (None, None) => Bound::Unbounded,
    }
}

pub fn filter(f: pb::RowFilter) -> Result<RowFilter, Status> {
    use pb::row_filter::Filter as F;
    let list = |filters: Vec<pb::RowFilter>| -> Result<Vec<RowFilter>, Status> {
        filters.into_iter().map(filter).collect()
    };
    Ok(
        match f.filter.ok_or_else(|| invalid("filter without a kind"))? {
            F::Chain(c) => RowFilter::Chain(list(c.filters)?),
            F::Interleave(i) => RowFilter::Interleave(list(i.filters)?),
            F::Condition(c) => {
                let c = *c;
                let predicate = c
                    .predicate_filter
                    .ok_or_else(|| invalid("condition without a predicate"))?;
                let branch =
                    |b: Option<Box<pb::RowFilter>>| b.map(|b| filter(*b).map(Box::new)).transpose();
                RowFilter::Condition {
                    predicate: Box::new(filter(*predicate)?),
                    true_filter: branch(c.true_filter)?,
                    false_filter: branch(c.false_filter)?,
                }
            }
            F::Sink(true) => RowFilter::Sink,
            F::PassAllFilter(true) => RowFilter::PassAll,
            F::BlockAllFilter(true) => RowFilter::BlockAll,
            F::StripValueTransformer(true) => RowFilter::StripValue,
            F::Sink(false)
            | F::PassAllFilter(false)
            | F::BlockAllFilter(false)
            | F::StripValueTransformer(false) => {
                return Err(invalid("a boolean filter must be set to true"))
            }
            F::RowKeyRegexFilter(r) => RowFilter::RowKeyRegex(r),
            F::RowSampleFilter(p) if (0.0..=1.0).contains(&p) => RowFilter::RowSample(p),
            F::RowSampleFilter(p) => {
                return Err(invalid(format!("row sample {p} is not in [0, 1]")))
            }
            F::FamilyNameRegexFilter(r) => RowFilter::FamilyNameRegex(r),
            F::ColumnQualifierRegexFilter(r) => RowFilter::QualifierRegex(r),
            F::ColumnRangeFilter(r) => {
                use pb::column_range::{EndQualifier as E, StartQualifier as S};
                let (sc, so) = match r.start_qualifier {
                    Some(S::StartQualifierClosed(q)) => (Some(q), None),
                    Some(S::StartQualifierOpen(q)) => (None, Some(q)),
                    None => (None, None),
                };
                let (ec, eo) = match r.end_qualifier {
                    Some(E::EndQualifierClosed(q)) => (Some(q), None),
                    Some(E::EndQualifierOpen(q)) => (None, Some(q)),
                    None => (None, None),
                };
                RowFilter::ColumnRange {
                    family: r.family_name,
                    start: bound(sc, so),
                    end: bound(ec, eo),
                }
            }
            F::TimestampRangeFilter(r) => {
                let r = timestamp_range(Some(r));
                RowFilter::TimestampRange {
                    start: r.start,
                    end: r.end,
                }
            }
            F::ValueRegexFilter(r) => RowFilter::ValueRegex(r),
            F::ValueRangeFilter(r) => {
                use pb::value_range::{EndValue as E, StartValue as S};
                let (sc, so) = match r.start_value {
                    Some(S::StartValueClosed(v)) => (Some(v), None),
                    Some(S::StartValueOpen(v)) => (None, Some(v)),
                    None => (None, None),
                };
                let (ec, eo) = match r.end_value {
                    Some(E::EndValueClosed(v)) => (Some(v), None),
                    Some(E::EndValueOpen(v)) => (None, Some(v)),
                    None => (None, None),
                };
                RowFilter::ValueRange {
                    start: bound(sc, so),
                    end: bound(ec, eo),
                }
            }
            F::CellsPerRowOffsetFilter(n) => RowFilter::CellsPerRowOffset(count(n, "offset")?),
            F::CellsPerRowLimitFilter(n) => RowFilter::CellsPerRowLimit(count(n, "limit")?),
            F::CellsPerColumnLimitFilter(n) => RowFilter::CellsPerColumnLimit(count(n, "limit")?),
            F::ApplyLabelTransformer(label) => RowFilter::ApplyLabel(label),
        },
    )
}

/// A row as the `Row` message (ReadModifyWriteRow's answer): families, then columns,
/// then cells, in the engine's order.
pub fn row(row: Row) -> pb::Row {
    let mut families: Vec<pb::Family> = Vec::new();
    for cell in row.cells {
        let name = String::from_utf8_lossy(&cell.family).into_owned();
        if families.last().is_none_or(|f| f.name != name) {
            families.push(pb::Family {
                name,
                columns: Vec::new(),
            });
        }
        let Some(family) = families.last_mut() else {
            continue;
        };
        if family
            .columns
            .last()
            .is_none_or(|c| c.qualifier != cell.qualifier)
        {
            family.columns.push(pb::Column {
                qualifier: cell.qualifier.clone(),
                cells: Vec::new(),
            });
        }
        if let Some(column) = family.columns.last_mut() {
            column.cells.push(pb::Cell {
                timestamp_micros: cell.timestamp,
                value: cell.value,
                labels: cell.labels,
            });
        }
    }
    pb::Row {
        key: row.key,
        families,
    }
}

/// Whether a family's `value_type` makes it a sum family; other aggregates are refused.
pub fn is_sum_type(value_type: Option<&admin::Type>) -> Result<bool, Status> {
    use admin::r#type::{aggregate::Aggregator, Kind};
    let Some(kind) = value_type.and_then(|t| t.kind.as_ref()) else {
        return Ok(false);
    };
    match kind {
        Kind::AggregateType(a) => {
            let int64_input = matches!(
                a.input_type.as_deref().and_then(|t| t.kind.as_ref()),
                Some(Kind::Int64Type(_))
            );
            match (&a.aggregator, int64_input) {
                (Some(Aggregator::Sum(_)), true) => Ok(true),
                _ => Err(invalid("only Int64 Sum aggregate families are supported")),
            }
        }
        _ => Err(invalid("only Int64 Sum aggregate families are supported")),
    }
}

/// The `value_type` of a sum family.
pub fn sum_type() -> admin::Type {
    use admin::r#type::{aggregate::Aggregator, aggregate::Sum, Aggregate, Int64, Kind};
    let int64 = || {
        Box::new(admin::Type {
            kind: Some(Kind::Int64Type(Int64 { encoding: None })),
        })
    };
    admin::Type {
        kind: Some(Kind::AggregateType(Box::new(Aggregate {
            input_type: Some(int64()),
            state_type: Some(int64()),
            aggregator: Some(Aggregator::Sum(Sum {})),
        }))),
    }
}

pub fn gc_rule(rule: Option<admin::GcRule>) -> Result<GcRule, Status> {
    use admin::gc_rule::Rule;
    let Some(rule) = rule.and_then(|r| r.rule) else {
        return Ok(GcRule::KeepAll);
    };
    let list = |rules: Vec<admin::GcRule>| -> Result<Vec<GcRule>, Status> {
        rules.into_iter().map(|r| gc_rule(Some(r))).collect()
    };
    Ok(match rule {
        Rule::MaxNumVersions(n) if n > 0 => GcRule::MaxVersions(n as u32),
        Rule::MaxNumVersions(n) => {
            return Err(invalid(format!(
                "max_num_versions must be positive, got {n}"
            )))
        }
        Rule::MaxAge(d) => {
            let secs = u64::try_from(d.seconds).map_err(|_| invalid("negative max_age"))?;
            let nanos = u32::try_from(d.nanos).map_err(|_| invalid("negative max_age"))?;
            GcRule::MaxAge(Duration::new(secs, nanos))
        }
        Rule::Intersection(i) => GcRule::Intersection(list(i.rules)?),
        Rule::Union(u) => GcRule::Union(list(u.rules)?),
    })
}

pub fn gc_rule_message(rule: &GcRule) -> Option<admin::GcRule> {
    use admin::gc_rule::{Intersection, Rule, Union};
    let list = |rules: &[GcRule]| rules.iter().filter_map(gc_rule_message).collect();
    let rule = match rule {
        GcRule::KeepAll => return None,
        GcRule::MaxVersions(n) => Rule::MaxNumVersions(i32::try_from(*n).unwrap_or(i32::MAX)),
        GcRule::MaxAge(d) => Rule::MaxAge(prost_types::Duration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        }),
        GcRule::Intersection(rules) => Rule::Intersection(Intersection { rules: list(rules) }),
        GcRule::Union(rules) => Rule::Union(Union { rules: list(rules) }),
        // No Cloud Bigtable rule keeps the newest cell older than an age; the nearest
        // keeps only the column's newest of those (it collects more).
        GcRule::KeepFor(age) => {
            let nearest = GcRule::Intersection(vec![GcRule::MaxAge(*age), GcRule::MaxVersions(1)]);
            return gc_rule_message(&nearest);
        }
    };
    Some(admin::GcRule { rule: Some(rule) })
}
