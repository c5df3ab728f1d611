//! Rows as ReadRows `CellChunk`s, following the protocol's rules: the first chunk of a
//! row names its key, a chunk names its family and qualifier when they change, values
//! larger than [`MAX_CHUNK_VALUE`] are split over several chunks (all but the last carry
//! the whole `value_size`; continuations carry nothing but value bytes), and the row's
//! last chunk commits it.

use googleapis_tonic_google_bigtable_v2::google::bigtable::v2::read_rows_response::{
    cell_chunk::RowStatus, CellChunk,
};

use crate::row_reader::Row;

/// Largest piece of a value in one chunk.
pub const MAX_CHUNK_VALUE: usize = 1 << 20;

/// Appends `row`'s chunks to `out`. A row without cells yields nothing.
pub fn row_chunks(row: Row, out: &mut Vec<CellChunk>) {
    let mut family: Option<Vec<u8>> = None;
    let mut qualifier: Option<Vec<u8>> = None;
    let first = out.len();
    for cell in row.cells {
        let new_family = family.as_ref() != Some(&cell.family);
        let new_column = new_family || qualifier.as_ref() != Some(&cell.qualifier);
        let mut chunk = CellChunk {
            row_key: if out.len() == first {
                row.key.clone()
            } else {
                Vec::new()
            },
            family_name: new_family.then(|| String::from_utf8_lossy(&cell.family).into_owned()),
            qualifier: new_column.then(|| cell.qualifier.clone()),
            timestamp_micros: cell.timestamp,
            labels: cell.labels,
            value: Vec::new(),
            value_size: 0,
            row_status: None,
        };
        family = Some(cell.family);
        qualifier = Some(cell.qualifier);
        let value = cell.value;
        if value.len() <= MAX_CHUNK_VALUE {
            chunk.value = value;
            out.push(chunk);
            continue;
        }
        let total = i32::try_from(value.len()).unwrap_or(i32::MAX);
        let mut pieces = value.chunks(MAX_CHUNK_VALUE).peekable();
        chunk.value = pieces.next().map(<[u8]>::to_vec).unwrap_or_default();
        chunk.value_size = total;
        out.push(chunk);
        while let Some(piece) = pieces.next() {
            out.push(CellChunk {
                value: piece.to_vec(),
                value_size: if pieces.peek().is_some() { total } else { 0 },
                ..CellChunk::default()
            });
        }
    }
    if let Some(last) = out.get_mut(first..).and_then(|c| c.last_mut()) {
        last.row_status = Some(RowStatus::CommitRow(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row_reader::Cell;

    fn cell(family: &str, qualifier: &str, ts: i64, value: Vec<u8>) -> Cell {
        Cell {
            family: family.into(),
            qualifier: qualifier.into(),
            timestamp: ts,
            value,
            labels: Vec::new(),
        }
    }

    #[test]
    fn names_change_only_when_they_change_and_the_last_chunk_commits() {
        let row = Row {
            key: b"r".to_vec(),
            cells: vec![
                cell("a", "x", 2, b"1".to_vec()),
                cell("a", "x", 1, b"2".to_vec()),
                cell("a", "y", 1, b"3".to_vec()),
                cell("b", "y", 1, b"4".to_vec()),
            ],
        };
        let mut out = Vec::new();
        row_chunks(row, &mut out);
        let names: Vec<_> = out
            .iter()
            .map(|c| {
                (
                    c.row_key.clone(),
                    c.family_name.clone(),
                    c.qualifier.clone(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                (b"r".to_vec(), Some("a".into()), Some(b"x".to_vec())),
                (vec![], None, None),
                (vec![], None, Some(b"y".to_vec())),
                (vec![], Some("b".into()), Some(b"y".to_vec())),
            ]
        );
        assert!(out[..3].iter().all(|c| c.row_status.is_none()));
        assert_eq!(out[3].row_status, Some(RowStatus::CommitRow(true)));
    }

    #[test]
    fn large_values_are_split_with_value_size_on_all_but_the_last_piece() {
        let value: Vec<u8> = (0..MAX_CHUNK_VALUE * 2 + 10).map(|i| i as u8).collect();
        let row = Row {
            key: b"r".to_vec(),
            cells: vec![cell("a", "x", 1, value.clone())],
        };
        let mut out = Vec::new();
        row_chunks(row, &mut out);
        assert_eq!(out.len(), 3);
        let sizes: Vec<i32> = out.iter().map(|c| c.value_size).collect();
        let total = value.len() as i32;
        assert_eq!(sizes, vec![total, total, 0]);
        assert!(out[1..]
            .iter()
            .all(|c| c.row_key.is_empty() && c.family_name.is_none()));
        let joined: Vec<u8> = out.iter().flat_map(|c| c.value.clone()).collect();
        assert_eq!(joined, value);
        assert_eq!(out[2].row_status, Some(RowStatus::CommitRow(true)));
    }
}
