//! Table schemas: a table's column families and each family's garbage-collection rule,
//! and their binary encoding in the manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::coding::{put_varint, Reader};
use crate::gc_rule::GcRule;

/// Deepest nesting of union / intersection rules accepted when decoding.
const MAX_RULE_DEPTH: usize = 32;

/// A table's declared column families.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableSchema {
    /// Family name -> its GC rule.
    pub families: BTreeMap<String, GcRule>,
    /// Families whose cells are 64-bit integer sums: `AddToCell` adds to the cell at its
    /// timestamp instead of replacing it (Cloud Bigtable's aggregate `Sum` of `Int64`).
    pub sum_families: BTreeSet<String>,
}

impl TableSchema {
    /// A schema with the given families, each keeping every version.
    pub fn with_families<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        TableSchema {
            families: names
                .into_iter()
                .map(|n| (n.into(), GcRule::KeepAll))
                .collect(),
            sum_families: BTreeSet::new(),
        }
    }

    /// Whether `family` (as bytes) is a sum family.
    pub fn is_sum_family(&self, family: &[u8]) -> bool {
        std::str::from_utf8(family).is_ok_and(|f| self.sum_families.contains(f))
    }

    /// The rule of a family given as bytes, or `None` if it is not declared.
    pub fn gc_rule(&self, family: &[u8]) -> Option<&GcRule> {
        std::str::from_utf8(family)
            .ok()
            .and_then(|f| self.families.get(f))
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.families.len() as u64);
        for (name, rule) in &self.families {
            put_bytes(out, name.as_bytes());
            encode_rule(out, rule);
        }
        put_varint(out, self.sum_families.len() as u64);
        for name in &self.sum_families {
            put_bytes(out, name.as_bytes());
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Option<TableSchema> {
        let n = r.varint_usize()?;
        let mut families = BTreeMap::new();
        for _ in 0..n {
            let name = String::from_utf8(get_bytes(r)?.to_vec()).ok()?;
            families.insert(name, decode_rule(r, 0)?);
        }
        let n = r.varint_usize()?;
        let mut sum_families = BTreeSet::new();
        for _ in 0..n {
            let name = String::from_utf8(get_bytes(r)?.to_vec()).ok()?;
            if !families.contains_key(&name) {
                return None;
            }
            sum_families.insert(name);
        }
        Some(TableSchema {
            families,
            sum_families,
        })
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub(crate) fn get_bytes<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    let n = r.varint_usize()?;
    r.take(n)
}

fn encode_rule(out: &mut Vec<u8>, rule: &GcRule) {
    match rule {
        GcRule::KeepAll => out.push(0),
        GcRule::MaxVersions(n) => {
            out.push(1);
            put_varint(out, u64::from(*n));
        }
        GcRule::MaxAge(age) => {
            out.push(2);
            put_varint(out, u64::try_from(age.as_micros()).unwrap_or(u64::MAX));
        }
        GcRule::KeepFor(age) => {
            out.push(5);
            put_varint(out, u64::try_from(age.as_micros()).unwrap_or(u64::MAX));
        }
        GcRule::Union(rules) | GcRule::Intersection(rules) => {
            out.push(if matches!(rule, GcRule::Union(_)) {
                3
            } else {
                4
            });
            put_varint(out, rules.len() as u64);
            for r in rules {
                encode_rule(out, r);
            }
        }
    }
}

fn decode_rule(r: &mut Reader<'_>, depth: usize) -> Option<GcRule> {
    if depth > MAX_RULE_DEPTH {
        return None;
    }
    Some(match r.u8()? {
        0 => GcRule::KeepAll,
        1 => GcRule::MaxVersions(u32::try_from(r.varint()?).ok()?),
        2 => GcRule::MaxAge(Duration::from_micros(r.varint()?)),
        5 => GcRule::KeepFor(Duration::from_micros(r.varint()?)),
        tag @ (3 | 4) => {
            let n = r.varint_usize()?;
            let mut rules = Vec::new();
            for _ in 0..n {
                rules.push(decode_rule(r, depth + 1)?);
            }
            if tag == 3 {
                GcRule::Union(rules)
            } else {
                GcRule::Intersection(rules)
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_round_trip_and_garbage_is_rejected() {
        let mut schema = TableSchema::with_families(["a", "b"]);
        schema.families.insert(
            "c".into(),
            GcRule::Union(vec![
                GcRule::MaxVersions(3),
                GcRule::Intersection(vec![
                    GcRule::MaxAge(Duration::from_secs(60)),
                    GcRule::MaxVersions(1),
                ]),
            ]),
        );
        let mut bytes = Vec::new();
        schema.encode_into(&mut bytes);
        assert_eq!(TableSchema::decode(&mut Reader::new(&bytes)), Some(schema));
        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            assert!(TableSchema::decode(&mut r).is_none() || cut == 0);
        }
        let deep = [3u8, 1].repeat(100);
        let mut input = vec![1, 1, b'x'];
        input.extend_from_slice(&deep);
        assert!(TableSchema::decode(&mut Reader::new(&input)).is_none());
    }
}
