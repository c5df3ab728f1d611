//! A plain model of the Bigtable data model, which tests and crash schedules compare
//! the engine against: a sorted map of every cell version, no LSM, no encoding.

use std::collections::BTreeMap;

use crate::mutation::Mutation;

/// `(row, family, qualifier) -> timestamp -> value`.
pub type Model = BTreeMap<(Vec<u8>, Vec<u8>, Vec<u8>), BTreeMap<i64, Vec<u8>>>;

/// Applies one mutation of `row` to the model; `now` is the server time.
pub fn apply(model: &mut Model, row: &[u8], m: &Mutation, now: i64) {
    match m {
        Mutation::SetCell {
            family,
            qualifier,
            timestamp,
            value,
        } => {
            let column = (row.to_vec(), family.clone(), qualifier.clone());
            let ts = timestamp.unwrap_or(now);
            model.entry(column).or_default().insert(ts, value.clone());
        }
        Mutation::AddToCell {
            family,
            qualifier,
            timestamp,
            input,
        } => {
            let column = (row.to_vec(), family.clone(), qualifier.clone());
            let cell = model
                .entry(column)
                .or_default()
                .entry(timestamp.unwrap_or(now))
                .or_insert_with(|| 0i64.to_be_bytes().to_vec());
            let sum = crate::mutation::read_sum(cell).wrapping_add(*input);
            *cell = sum.to_be_bytes().to_vec();
        }
        Mutation::DeleteFromColumn {
            family,
            qualifier,
            range,
        } => {
            if let Some(v) = model.get_mut(&(row.to_vec(), family.clone(), qualifier.clone())) {
                v.retain(|ts, _| !range.contains(*ts));
            }
        }
        Mutation::DeleteFromFamily { family } => {
            model.retain(|(r, f, _), _| !(r == row && f == family))
        }
        Mutation::DeleteFromRow => model.retain(|(r, _, _), _| r != row),
    }
    model.retain(|_, v| !v.is_empty());
}
