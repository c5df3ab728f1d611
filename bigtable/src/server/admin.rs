//! `google.bigtable.admin.v2.BigtableTableAdmin`: tables and their column families.

use std::ops::Bound;
use std::sync::Arc;

use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as pb;
use tonic::{Request, Response, Status};

use super::convert::{self, invalid, status};
use super::generated::admin::bigtable_table_admin_server::BigtableTableAdmin;
use super::generated::Empty;
use super::names::{instance_name, table_id, table_name};
use super::SharedEngine;
use crate::engine::{Engine, ReadRequest, RowMutations, RowRange, RowSet};
use crate::filter::RowFilter;
use crate::mutation::Mutation;
use crate::schema::TableSchema;

/// Rows deleted per batch by DropRowRange.
const DROP_BATCH: usize = 1000;

pub struct AdminService {
    engine: SharedEngine,
}

impl AdminService {
    pub fn new(engine: Arc<Engine>) -> Self {
        AdminService {
            engine: SharedEngine(engine),
        }
    }
}

/// The `Table` message for `name` in `view` (NAME_ONLY: the name alone).
fn table_message(name: String, schema: &TableSchema, view: i32) -> pb::Table {
    let mut table = pb::Table {
        name,
        ..Default::default()
    };
    if view != pb::table::View::NameOnly as i32 {
        table.granularity = pb::table::TimestampGranularity::Millis as i32;
        table.column_families = schema
            .families
            .iter()
            .map(|(name, rule)| {
                let family = pb::ColumnFamily {
                    gc_rule: convert::gc_rule_message(rule),
                    value_type: schema.sum_families.contains(name).then(convert::sum_type),
                };
                (name.clone(), family)
            })
            .collect();
    }
    table
}

/// Adds or replaces family `name` in the schema. A family's type (plain or sum) is
/// fixed when it is created.
fn put_family(
    schema: &mut TableSchema,
    name: String,
    family: pb::ColumnFamily,
    creating: bool,
) -> Result<(), Status> {
    let sum = convert::is_sum_type(family.value_type.as_ref())?;
    let rule = convert::gc_rule(family.gc_rule)?;
    if !creating && family.value_type.is_some() && sum != schema.sum_families.contains(&name) {
        return Err(invalid(format!(
            "the type of column family {name} cannot change"
        )));
    }
    if creating && sum {
        schema.sum_families.insert(name.clone());
    }
    schema.families.insert(name, rule);
    Ok(())
}

/// Applies column-family modifications to a schema, in order.
fn modify(
    schema: &mut TableSchema,
    modifications: Vec<pb::modify_column_families_request::Modification>,
) -> Result<(), Status> {
    use pb::modify_column_families_request::modification::Mod;
    for m in modifications {
        let id = m.id;
        if id.is_empty() {
            return Err(invalid("modification without a family id"));
        }
        match m
            .r#mod
            .ok_or_else(|| invalid("modification without a kind"))?
        {
            Mod::Create(family) => {
                if schema.families.contains_key(&id) {
                    return Err(Status::already_exists(format!("column family {id} exists")));
                }
                put_family(schema, id, family, true)?;
            }
            Mod::Update(family) => {
                if !schema.families.contains_key(&id) {
                    return Err(Status::not_found(format!("column family {id}")));
                }
                put_family(schema, id, family, false)?;
            }
            Mod::Drop(_) => {
                if schema.families.remove(&id).is_none() {
                    return Err(Status::not_found(format!("column family {id}")));
                }
                schema.sum_families.remove(&id);
            }
        }
    }
    Ok(())
}

/// The rows starting with `prefix` (all rows for an empty prefix).
fn prefix_range(prefix: &[u8]) -> RowRange {
    let mut end = prefix.to_vec();
    while end.last() == Some(&0xFF) {
        end.pop();
    }
    let end = match end.last_mut() {
        Some(last) => {
            *last += 1;
            Bound::Excluded(end)
        }
        None => Bound::Unbounded,
    };
    let start = if prefix.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Included(prefix.to_vec())
    };
    RowRange { start, end }
}

/// Deletes every row in `range`, a batch of row deletions at a time.
fn drop_rows(engine: &Engine, table: &str, range: RowRange) -> crate::Result<u64> {
    let request = ReadRequest {
        rows: RowSet::range(range),
        filter: Some(RowFilter::Chain(vec![
            RowFilter::CellsPerRowLimit(1),
            RowFilter::StripValue,
        ])),
        ..ReadRequest::default()
    };
    let snapshot = engine.snapshot(table)?;
    let mut batch = Vec::new();
    let mut dropped = 0;
    for row in snapshot.read_rows(&request)? {
        batch.push(RowMutations {
            row: row?.key,
            mutations: vec![Mutation::DeleteFromRow],
        });
        if batch.len() == DROP_BATCH {
            dropped += apply(engine, table, std::mem::take(&mut batch))?;
        }
    }
    dropped += apply(engine, table, batch)?;
    Ok(dropped)
}

fn apply(engine: &Engine, table: &str, batch: Vec<RowMutations>) -> crate::Result<u64> {
    let n = batch.len() as u64;
    for result in engine.mutate_rows(table, &batch)? {
        result?;
    }
    Ok(n)
}

#[tonic::async_trait]
impl BigtableTableAdmin for AdminService {
    async fn create_table(
        &self,
        request: Request<pb::CreateTableRequest>,
    ) -> Result<Response<pb::Table>, Status> {
        let r = request.into_inner();
        let parent = instance_name(&r.parent)?;
        let name = format!("{parent}/tables/{}", table_id(&r.table_id)?);
        let mut schema = TableSchema::default();
        for (family, cf) in r.table.unwrap_or_default().column_families {
            put_family(&mut schema, family, cf, true)?;
        }
        let splits: Vec<Vec<u8>> = r.initial_splits.into_iter().map(|s| s.key).collect();
        let response = table_message(name.clone(), &schema, pb::table::View::SchemaView as i32);
        self.engine
            .run(move |e| {
                e.create_table_with_splits(&name, schema, &splits)
                    .map_err(status)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_tables(
        &self,
        request: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        let r = request.into_inner();
        let prefix = format!("{}/tables/", instance_name(&r.parent)?);
        let view = if r.view == 0 {
            pb::table::View::NameOnly as i32
        } else {
            r.view
        };
        let tables = self
            .engine
            .run(move |e| {
                let mut tables = Vec::new();
                for name in e
                    .list_tables()
                    .into_iter()
                    .filter(|n| n.starts_with(&prefix))
                {
                    // A table dropped meanwhile is simply not listed.
                    if let Ok(schema) = e.schema(&name) {
                        tables.push(table_message(name, &schema, view));
                    }
                }
                Ok(tables)
            })
            .await?;
        Ok(Response::new(pb::ListTablesResponse {
            tables,
            next_page_token: String::new(),
        }))
    }

    async fn get_table(
        &self,
        request: Request<pb::GetTableRequest>,
    ) -> Result<Response<pb::Table>, Status> {
        let r = request.into_inner();
        let name = table_name(&r.name)?;
        let view = if r.view == 0 {
            pb::table::View::SchemaView as i32
        } else {
            r.view
        };
        let table = self
            .engine
            .run(move |e| {
                let schema = e.schema(&name).map_err(status)?;
                Ok(table_message(name, &schema, view))
            })
            .await?;
        Ok(Response::new(table))
    }

    async fn delete_table(
        &self,
        request: Request<pb::DeleteTableRequest>,
    ) -> Result<Response<Empty>, Status> {
        let name = table_name(&request.into_inner().name)?;
        self.engine
            .run(move |e| e.drop_table(&name).map_err(status))
            .await?;
        Ok(Response::new(()))
    }

    async fn modify_column_families(
        &self,
        request: Request<pb::ModifyColumnFamiliesRequest>,
    ) -> Result<Response<pb::Table>, Status> {
        let r = request.into_inner();
        let name = table_name(&r.name)?;
        let modifications = r.modifications;
        let table = self
            .engine
            .run(move |e| {
                let mut schema = e.schema(&name).map_err(status)?;
                modify(&mut schema, modifications)?;
                e.set_schema(&name, schema.clone()).map_err(status)?;
                Ok(table_message(
                    name,
                    &schema,
                    pb::table::View::SchemaView as i32,
                ))
            })
            .await?;
        Ok(Response::new(table))
    }

    async fn drop_row_range(
        &self,
        request: Request<pb::DropRowRangeRequest>,
    ) -> Result<Response<Empty>, Status> {
        use pb::drop_row_range_request::Target;
        let r = request.into_inner();
        let name = table_name(&r.name)?;
        let range = match r.target.ok_or_else(|| invalid("no rows to drop named"))? {
            Target::RowKeyPrefix(prefix) if prefix.is_empty() => {
                return Err(invalid("row key prefix must not be empty"))
            }
            Target::RowKeyPrefix(prefix) => prefix_range(&prefix),
            Target::DeleteAllDataFromTable(true) => RowRange::all(),
            Target::DeleteAllDataFromTable(false) => {
                return Err(invalid("delete_all_data_from_table must be true"))
            }
        };
        self.engine
            .run(move |e| drop_rows(e, &name, range).map_err(status))
            .await?;
        Ok(Response::new(()))
    }

    async fn generate_consistency_token(
        &self,
        request: Request<pb::GenerateConsistencyTokenRequest>,
    ) -> Result<Response<pb::GenerateConsistencyTokenResponse>, Status> {
        let name = table_name(&request.into_inner().name)?;
        self.engine
            .run(move |e| e.schema(&name).map_err(status))
            .await?;
        // One copy of the data: every write acknowledged before the token is visible.
        Ok(Response::new(pb::GenerateConsistencyTokenResponse {
            consistency_token: "consistent".into(),
        }))
    }

    async fn check_consistency(
        &self,
        request: Request<pb::CheckConsistencyRequest>,
    ) -> Result<Response<pb::CheckConsistencyResponse>, Status> {
        let name = table_name(&request.into_inner().name)?;
        self.engine
            .run(move |e| e.schema(&name).map_err(status))
            .await?;
        Ok(Response::new(pb::CheckConsistencyResponse {
            consistent: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_end_at_the_next_prefix() {
        assert_eq!(
            prefix_range(b"ab"),
            RowRange {
                start: Bound::Included(b"ab".to_vec()),
                end: Bound::Excluded(b"ac".to_vec())
            }
        );
        assert_eq!(prefix_range(&[0x61, 0xFF]).end, Bound::Excluded(vec![0x62]));
        assert_eq!(prefix_range(&[0xFF]).end, Bound::Unbounded);
    }
}
