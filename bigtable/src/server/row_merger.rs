//! The client side of ReadRows: merges a stream of `CellChunk`s back into rows, checking
//! the protocol's rules as Google's client libraries do. Used by our CLI and tests.

use googleapis_tonic_google_bigtable_v2::google::bigtable::v2::read_rows_response::{
    cell_chunk::RowStatus, CellChunk,
};

use crate::row_reader::{Cell, Row};

#[derive(Default)]
pub struct RowMerger {
    row: Option<Row>,
    family: Option<Vec<u8>>,
    qualifier: Option<Vec<u8>>,
    /// A value split over chunks is being assembled.
    splitting: bool,
    last_key: Option<Vec<u8>>,
}

impl RowMerger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next chunk; returns the row it completes, if any.
    pub fn push(&mut self, chunk: CellChunk) -> Result<Option<Row>, String> {
        if chunk.row_status == Some(RowStatus::ResetRow(true)) {
            self.row = None;
            self.splitting = false;
            return Ok(None);
        }
        if self.splitting {
            if !chunk.row_key.is_empty() || chunk.family_name.is_some() || chunk.qualifier.is_some()
            {
                return Err("a value continuation names a cell".into());
            }
            let cell = self.current_cell()?;
            cell.value.extend_from_slice(&chunk.value);
        } else {
            self.start_cell(&chunk)?;
        }
        self.splitting = chunk.value_size > 0;
        if chunk.row_status == Some(RowStatus::CommitRow(true)) {
            if self.splitting {
                return Err("a row committed in the middle of a value".into());
            }
            let row = self.row.take().ok_or("commit without a row")?;
            self.last_key = Some(row.key.clone());
            self.family = None;
            self.qualifier = None;
            return Ok(Some(row));
        }
        Ok(None)
    }

    /// Whether the stream may end here (no row half read).
    pub fn is_idle(&self) -> bool {
        self.row.is_none()
    }

    fn start_cell(&mut self, chunk: &CellChunk) -> Result<(), String> {
        if self.row.is_none() {
            if chunk.row_key.is_empty() {
                return Err("a new row without a key".into());
            }
            if self.last_key.as_ref() == Some(&chunk.row_key) {
                return Err("a row key repeated".into());
            }
            if chunk.family_name.is_none() || chunk.qualifier.is_none() {
                return Err("a row's first cell without family and qualifier".into());
            }
            self.row = Some(Row {
                key: chunk.row_key.clone(),
                cells: Vec::new(),
            });
        } else if !chunk.row_key.is_empty()
            && Some(&chunk.row_key) != self.row.as_ref().map(|r| &r.key)
        {
            return Err("a row key changed inside a row".into());
        }
        if let Some(f) = &chunk.family_name {
            if chunk.qualifier.is_none() {
                return Err("a new family without a qualifier".into());
            }
            self.family = Some(f.clone().into_bytes());
        }
        if let Some(q) = &chunk.qualifier {
            self.qualifier = Some(q.clone());
        }
        let cell = Cell {
            family: self.family.clone().ok_or("a cell without a family")?,
            qualifier: self.qualifier.clone().ok_or("a cell without a qualifier")?,
            timestamp: chunk.timestamp_micros,
            value: chunk.value.clone(),
            labels: chunk.labels.clone(),
        };
        if let Some(row) = self.row.as_mut() {
            row.cells.push(cell);
        }
        Ok(())
    }

    fn current_cell(&mut self) -> Result<&mut Cell, String> {
        self.row
            .as_mut()
            .and_then(|r| r.cells.last_mut())
            .ok_or_else(|| "a value continuation without a cell".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::chunks::{row_chunks, MAX_CHUNK_VALUE};

    #[test]
    fn merges_what_the_server_sends() {
        let rows = vec![
            Row {
                key: b"a".to_vec(),
                cells: vec![
                    Cell {
                        family: b"f".to_vec(),
                        qualifier: b"q".to_vec(),
                        timestamp: 2,
                        value: vec![1; MAX_CHUNK_VALUE * 2 + 1],
                        labels: vec![],
                    },
                    Cell {
                        family: b"f".to_vec(),
                        qualifier: b"q".to_vec(),
                        timestamp: 1,
                        value: b"x".to_vec(),
                        labels: vec!["l".into()],
                    },
                    Cell {
                        family: b"g".to_vec(),
                        qualifier: b"".to_vec(),
                        timestamp: 1,
                        value: b"".to_vec(),
                        labels: vec![],
                    },
                ],
            },
            Row {
                key: b"b".to_vec(),
                cells: vec![Cell {
                    family: b"f".to_vec(),
                    qualifier: b"q".to_vec(),
                    timestamp: 5,
                    value: b"y".to_vec(),
                    labels: vec![],
                }],
            },
        ];
        let mut chunks = Vec::new();
        for row in rows.clone() {
            row_chunks(row, &mut chunks);
        }
        let mut merger = RowMerger::new();
        let mut merged = Vec::new();
        for chunk in chunks {
            merged.extend(merger.push(chunk).unwrap());
        }
        assert!(merger.is_idle());
        assert_eq!(merged, rows);
    }

    #[test]
    fn rejects_a_row_without_a_key() {
        let mut merger = RowMerger::new();
        let chunk = CellChunk {
            family_name: Some("f".into()),
            qualifier: Some(vec![]),
            ..Default::default()
        };
        assert!(merger.push(chunk).is_err());
    }
}
