//! Secondary indexes: which entries an entity has in an index, what an entry's cell
//! holds, and the merge-join that intersects index scans. Local entries are written by
//! the apply of each log entry (`apply.rs`); global ones by the background indexer
//! (`global.rs`).

use std::collections::BTreeMap;

use bigtable::coding::{put_varint, Reader};

use crate::entity::{damaged, encode_prop, encode_value, put_bytes, read_bytes, read_prop};
use crate::entity::{read_value, Entity, Prop};
use crate::keys::Value;
use crate::schema::{Index, Schema};
use crate::Error;

/// One index entry, as a query returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexHit {
    /// The indexed values.
    pub values: Vec<Value>,
    /// The entity's primary key.
    pub key: Vec<Value>,
    /// The `STORING` properties (present ones), copied from the entity.
    pub storing: BTreeMap<String, Prop>,
}

/// The entries `entity` has in `index`: one per element of a repeated indexed property
/// (distinct elements), none when an indexed property is absent.
pub fn entries(index: &Index, schema: &Schema, entity: &Entity) -> Result<Vec<IndexHit>, Error> {
    let table = schema
        .table(&index.table)
        .ok_or_else(|| Error::Invalid(format!("index {} names no table", index.name)))?;
    let key = entity.key(table)?;
    let storing: BTreeMap<String, Prop> = index
        .storing
        .iter()
        .filter_map(|name| Some((name.clone(), entity.props.get(name)?.clone())))
        .collect();
    let mut tuples: Vec<Vec<Value>> = vec![Vec::new()];
    for column in &index.columns {
        let Some(prop) = entity.props.get(column) else {
            return Ok(Vec::new());
        };
        let mut elements: Vec<&Value> = Vec::new();
        for v in prop.values() {
            if !elements.contains(&v) {
                elements.push(v);
            }
        }
        tuples = tuples
            .into_iter()
            .flat_map(|t| {
                elements.iter().map(move |v| {
                    let mut t = t.clone();
                    t.push((*v).clone());
                    t
                })
            })
            .collect();
    }
    Ok(tuples
        .into_iter()
        .map(|values| IndexHit {
            values,
            key: key.clone(),
            storing: storing.clone(),
        })
        .collect())
}

/// An entry's cell: `01`, the values, the key, then the stored properties. A removed
/// entry is an empty cell at the removing position's timestamp.
pub fn encode_hit(hit: &IndexHit) -> Vec<u8> {
    let mut out = vec![1];
    for list in [&hit.values, &hit.key] {
        put_varint(&mut out, list.len() as u64);
        for v in list {
            encode_value(&mut out, v);
        }
    }
    put_varint(&mut out, hit.storing.len() as u64);
    for (name, prop) in &hit.storing {
        put_bytes(&mut out, name.as_bytes());
        encode_prop(&mut out, prop);
    }
    out
}

/// The inverse of [`encode_hit`]; `Ok(None)` for a removed entry.
pub fn decode_hit(bytes: &[u8]) -> Result<Option<IndexHit>, Error> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut r = Reader::new(bytes);
    let hit = (|| {
        if r.u8()? != 1 {
            return None;
        }
        let mut lists = Vec::with_capacity(2);
        for _ in 0..2 {
            let n = r.varint_usize()?;
            if n > r.remaining() {
                return None;
            }
            lists.push(
                (0..n)
                    .map(|_| read_value(&mut r))
                    .collect::<Option<Vec<_>>>()?,
            );
        }
        let key = lists.pop()?;
        let values = lists.pop()?;
        let mut storing = BTreeMap::new();
        for _ in 0..r.varint_usize()? {
            let name = String::from_utf8(read_bytes(&mut r)?.to_vec()).ok()?;
            storing.insert(name, read_prop(&mut r)?);
        }
        r.is_empty().then_some(IndexHit {
            values,
            key,
            storing,
        })
    })();
    hit.map(Some).ok_or_else(|| damaged("index entry"))
}

/// The entries to write when an entity changes from `old` to `new`: removals (entries
/// only the old one had) and entries to (re)write.
pub fn diff(old: Vec<IndexHit>, new: Vec<IndexHit>) -> (Vec<IndexHit>, Vec<IndexHit>) {
    let removed = old
        .into_iter()
        .filter(|o| !new.iter().any(|n| n.values == o.values && n.key == o.key))
        .collect();
    (removed, new)
}

/// The keys present in every input: a merge-join of index scans, each input sorted by
/// `order` (for instance, equality scans on several indexes return hits in key order).
/// Runs in one pass over the inputs, skipping ahead in each to the largest current key.
pub fn merge_join<K: Ord + Clone>(inputs: &[Vec<K>]) -> Vec<K> {
    let Some((first, rest)) = inputs.split_first() else {
        return Vec::new();
    };
    let mut cursors = vec![0usize; rest.len()];
    let mut out = Vec::new();
    'candidates: for candidate in first {
        for (input, at) in rest.iter().zip(cursors.iter_mut()) {
            while *at < input.len() && input[*at] < *candidate {
                *at += 1;
            }
            match input.get(*at) {
                Some(k) if k == candidate => {}
                Some(_) => continue 'candidates,
                None => break 'candidates,
            }
        }
        out.push(candidate.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_join_intersects_sorted_inputs() {
        let a = vec![1, 3, 5, 7, 9];
        let b = vec![2, 3, 4, 7, 9, 11];
        let c = vec![3, 7, 8];
        assert_eq!(merge_join(&[a.clone(), b.clone(), c]), vec![3, 7]);
        assert_eq!(merge_join(std::slice::from_ref(&a)), a);
        assert_eq!(merge_join(&[a, Vec::new()]), Vec::<i32>::new());
        assert_eq!(merge_join::<i32>(&[]), Vec::<i32>::new());
    }

    #[test]
    fn hits_round_trip() {
        let hit = IndexHit {
            values: vec![Value::String("dinner".into())],
            key: vec![Value::Int64(1), Value::Int32(2)],
            storing: BTreeMap::from([(
                "thumbnail_url".to_string(),
                Prop::One(Value::String("u".into())),
            )]),
        };
        assert_eq!(decode_hit(&encode_hit(&hit)).ok().flatten(), Some(hit));
        assert_eq!(decode_hit(&[]).ok(), Some(None));
        assert!(decode_hit(&[1, 9]).is_err());
    }
}
