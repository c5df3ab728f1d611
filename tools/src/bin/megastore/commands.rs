//! The client commands: each connects to one replica's client API, reads the schema
//! to type the values given, and prints entities as JSON lines.

use megastore::api::client::{Client, ClientOptions};
use megastore::schema::{parse, IndexScope, Schema};
use megastore::tls::TlsFiles;
use megastore::{ReadMode, ValueRange};
use serde_json::json;

use crate::values::{
    entity, group_of, key, key_prefix, parse_value, table, to_json, values_to_json,
};
use crate::Command;

fn mode(text: &str) -> Result<ReadMode, String> {
    match text {
        "current" => Ok(ReadMode::Current),
        "snapshot" => Ok(ReadMode::Snapshot),
        "inconsistent" => Ok(ReadMode::Inconsistent),
        other => Err(format!(
            "unknown read mode {other:?} (current, snapshot, inconsistent)"
        )),
    }
}

fn schema_of(client: &Client) -> Result<Schema, String> {
    let info = client.schema().map_err(|e| e.to_string())?;
    parse(&info.text).map_err(|e| format!("the server's schema does not parse: {e}"))
}

pub fn run(
    address: &str,
    token: Option<String>,
    tls: &TlsFiles,
    command: &Command,
) -> Result<(), String> {
    let options = ClientOptions {
        token,
        tls: tls.client().map_err(|e| e.to_string())?,
        ..ClientOptions::default()
    };
    let client = Client::connect(address, &options).map_err(|e| e.to_string())?;
    let e = |e: megastore::Error| e.to_string();
    match command {
        Command::Serve(_) => unreachable!("handled by main"),
        Command::Status => {
            let s = client.status().map_err(e)?;
            let members: Vec<_> = s
                .members
                .iter()
                .map(|m| json!({"id": m.id, "kind": m.kind}))
                .collect();
            println!(
                "{}",
                json!({"replica": s.replica, "members": members, "schema": s.schema,
                    "schema_version": s.schema_version, "commits": s.commits,
                    "conflicts": s.conflicts, "entries": s.entries,
                    "entries_applied": s.entries_applied})
            );
        }
        Command::Schema => {
            let info = client.schema().map_err(e)?;
            println!(
                "-- schema {} version {}\n{}",
                info.name,
                info.version,
                info.text.trim()
            );
        }
        Command::UpdateSchema { file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|err| format!("cannot read {}: {err}", file.display()))?;
            let info = client.update_schema(&text).map_err(e)?;
            println!("{}", json!({"schema": info.name, "version": info.version}));
        }
        Command::Put {
            table: name,
            values,
        } => {
            let schema = schema_of(&client)?;
            let t = table(&schema, name)?;
            let entity = entity(t, values)?;
            let group = group_of(t, &key(t, values)?)?;
            let (_, committed) = client
                .transact(&group, options.max_attempts, |tx| {
                    tx.put(&entity);
                    Ok(())
                })
                .map_err(e)?;
            println!(
                "{}",
                json!({"committed": committed.position, "timestamp": committed.timestamp})
            );
        }
        Command::Get {
            table: name,
            key: k,
            mode: m,
        } => {
            let schema = schema_of(&client)?;
            let t = table(&schema, name)?;
            let key = key(t, k)?;
            let found = client
                .get(&group_of(t, &key)?, name, &key, mode(m)?)
                .map_err(e)?;
            match found {
                Some(entity) => println!("{}", to_json(&entity)),
                None => return Err(format!("no {name} with that key")),
            }
        }
        Command::Delete {
            table: name,
            key: k,
        } => {
            let schema = schema_of(&client)?;
            let t = table(&schema, name)?;
            let key = key(t, k)?;
            let (_, committed) = client
                .transact(&group_of(t, &key)?, options.max_attempts, |tx| {
                    tx.delete(name, &key);
                    Ok(())
                })
                .map_err(e)?;
            println!("{}", json!({"committed": committed.position}));
        }
        Command::Scan {
            table: name,
            prefix,
            mode: m,
        } => {
            let schema = schema_of(&client)?;
            let t = table(&schema, name)?;
            let prefix = key_prefix(t, prefix)?;
            let group = group_of(t, &prefix)?;
            for entity in client.scan(&group, name, &prefix, mode(m)?).map_err(e)? {
                println!("{}", to_json(&entity));
            }
        }
        Command::Query {
            index,
            values,
            group,
        } => {
            let schema = schema_of(&client)?;
            let def = schema
                .indexes
                .iter()
                .find(|i| &i.name == index)
                .ok_or_else(|| format!("no index {index} in schema {}", schema.name))?;
            let t = table(&schema, &def.table)?;
            let typed = values
                .iter()
                .zip(&def.columns)
                .map(|(v, column)| {
                    let p = t
                        .properties
                        .iter()
                        .find(|p| &p.name == column)
                        .ok_or_else(|| format!("{} has no property {column}", t.name))?;
                    parse_value(p.kind, v)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let range = ValueRange::prefix(typed);
            let hits = if def.scope == IndexScope::Global {
                let stale = client.query_global(index, &range).map_err(e)?;
                eprintln!("(reflects commits up to timestamp {})", stale.watermark);
                stale.value
            } else {
                let root = match &t.role {
                    megastore::schema::GroupRole::Root => t,
                    megastore::schema::GroupRole::Child { root, .. } => table(&schema, root)?,
                };
                let group = group_of(root, &key(root, group)?)?;
                client
                    .query_local(&group, index, &range, ReadMode::Current)
                    .map_err(e)?
            };
            for hit in hits {
                println!(
                    "{}",
                    json!({"values": values_to_json(&hit.values), "key": values_to_json(&hit.key)})
                );
            }
        }
    }
    Ok(())
}
