//! `bt`: a command line for people, against any Cloud Bigtable API server (ours by
//! default at 127.0.0.1:8086, or whatever `BIGTABLE_EMULATOR_HOST` names).
//!
//! ```text
//! bt create-table users cf:max-versions=3 meta
//! bt set users alice cf:name=Alice cf:city=Paris
//! bt get users alice
//! bt scan users --prefix a --limit 10
//! bt count users
//! bt tablets users
//! ```

use std::process::ExitCode;
use std::time::Duration;

use bigtable::server::row_merger::RowMerger;
use bigtable::Row;
use clap::{Parser, Subcommand};
use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as admin;
use googleapis_tonic_google_bigtable_v2::google::bigtable::v2 as pb;
use tonic::transport::Channel;

use admin::bigtable_table_admin_client::BigtableTableAdminClient;
use pb::bigtable_client::BigtableClient;

#[derive(Parser)]
#[command(about = "Tables and rows of a Cloud Bigtable API server, for people")]
struct Cli {
    /// Server address (default: $BIGTABLE_EMULATOR_HOST, else 127.0.0.1:8086).
    #[arg(long)]
    server: Option<String>,
    #[arg(long, default_value = "p")]
    project: String,
    #[arg(long, default_value = "i")]
    instance: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the instance's tables.
    Tables,
    /// Create a table; families as NAME or NAME:max-versions=N or NAME:max-age=SECONDS.
    CreateTable {
        table: String,
        families: Vec<String>,
    },
    /// Delete a table and all its data.
    DeleteTable { table: String },
    /// Show a table's column families and their GC rules.
    Families { table: String },
    /// Add a column family (same syntax as create-table).
    CreateFamily { table: String, family: String },
    /// Drop a column family.
    DeleteFamily { table: String, family: String },
    /// Write cells: FAMILY:QUALIFIER=VALUE ...
    Set {
        table: String,
        row: String,
        cells: Vec<String>,
    },
    /// Show one row.
    Get { table: String, row: String },
    /// Show rows in key order.
    Scan {
        table: String,
        #[arg(long)]
        start: Option<String>,
        /// Exclusive.
        #[arg(long)]
        end: Option<String>,
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        limit: Option<i64>,
        #[arg(long)]
        reverse: bool,
    },
    /// Count rows.
    Count {
        table: String,
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Delete a row.
    DeleteRow { table: String, row: String },
    /// Show the table's tablets: the row ranges it is split into, with their sizes.
    Tablets { table: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bt: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bt: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Target {
    data: BigtableClient<Channel>,
    admin: BigtableTableAdminClient<Channel>,
    instance: String,
}

impl Target {
    fn table(&self, id: &str) -> String {
        format!("{}/tables/{id}", self.instance)
    }
}

fn status(e: tonic::Status) -> String {
    format!("{:?}: {}", e.code(), e.message())
}

async fn run(cli: Cli) -> Result<(), String> {
    let server = cli
        .server
        .or_else(|| std::env::var("BIGTABLE_EMULATOR_HOST").ok())
        .unwrap_or_else(|| "127.0.0.1:8086".into());
    let channel = Channel::from_shared(format!("http://{server}"))
        .map_err(|e| format!("bad server address {server}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("cannot reach {server}: {e}"))?;
    let mut t = Target {
        data: BigtableClient::new(channel.clone()).max_decoding_message_size(usize::MAX),
        admin: BigtableTableAdminClient::new(channel),
        instance: format!("projects/{}/instances/{}", cli.project, cli.instance),
    };
    match cli.command {
        Command::Tables => {
            let request = admin::ListTablesRequest {
                parent: t.instance.clone(),
                ..Default::default()
            };
            let tables = t
                .admin
                .list_tables(request)
                .await
                .map_err(status)?
                .into_inner()
                .tables;
            for table in tables {
                println!("{}", table.name.rsplit('/').next().unwrap_or(&table.name));
            }
        }
        Command::CreateTable { table, families } => {
            let mut column_families = std::collections::HashMap::new();
            for spec in &families {
                let (name, family) = family_spec(spec)?;
                column_families.insert(name, family);
            }
            let request = admin::CreateTableRequest {
                parent: t.instance.clone(),
                table_id: table.clone(),
                table: Some(admin::Table {
                    column_families,
                    ..Default::default()
                }),
                initial_splits: Vec::new(),
            };
            t.admin.create_table(request).await.map_err(status)?;
            println!("created table {table}");
        }
        Command::DeleteTable { table } => {
            t.admin
                .delete_table(admin::DeleteTableRequest {
                    name: t.table(&table),
                })
                .await
                .map_err(status)?;
            println!("deleted table {table}");
        }
        Command::Families { table } => {
            let request = admin::GetTableRequest {
                name: t.table(&table),
                view: admin::table::View::SchemaView as i32,
            };
            let got = t
                .admin
                .get_table(request)
                .await
                .map_err(status)?
                .into_inner();
            let mut families: Vec<_> = got.column_families.into_iter().collect();
            families.sort_by(|a, b| a.0.cmp(&b.0));
            println!("{:<20} GC rule", "family");
            for (name, family) in families {
                println!("{name:<20} {}", describe_rule(family.gc_rule.as_ref()));
            }
        }
        Command::CreateFamily { table, family } => {
            let (id, cf) = family_spec(&family)?;
            modify_family(
                &mut t,
                &table,
                id.clone(),
                admin::modify_column_families_request::modification::Mod::Create(cf),
            )
            .await?;
            println!("created family {id} in {table}");
        }
        Command::DeleteFamily { table, family } => {
            modify_family(
                &mut t,
                &table,
                family.clone(),
                admin::modify_column_families_request::modification::Mod::Drop(true),
            )
            .await?;
            println!("deleted family {family} from {table}");
        }
        Command::Set { table, row, cells } => {
            let mut mutations = Vec::new();
            for cell in &cells {
                let (column, value) = cell
                    .split_once('=')
                    .ok_or_else(|| format!("{cell:?}: want FAMILY:QUALIFIER=VALUE"))?;
                let (family, qualifier) = column
                    .split_once(':')
                    .ok_or_else(|| format!("{cell:?}: want FAMILY:QUALIFIER=VALUE"))?;
                mutations.push(pb::Mutation {
                    mutation: Some(pb::mutation::Mutation::SetCell(pb::mutation::SetCell {
                        family_name: family.into(),
                        column_qualifier: qualifier.as_bytes().to_vec(),
                        timestamp_micros: -1,
                        value: value.as_bytes().to_vec(),
                    })),
                });
            }
            let request = pb::MutateRowRequest {
                table_name: t.table(&table),
                row_key: row.into_bytes(),
                mutations,
                ..Default::default()
            };
            t.data.mutate_row(request).await.map_err(status)?;
        }
        Command::Get { table, row } => {
            let rows = pb::RowSet {
                row_keys: vec![row.clone().into_bytes()],
                row_ranges: Vec::new(),
            };
            let found = read(&mut t, &table, Some(rows), 0, false, true).await?;
            if found == 0 {
                println!("no row {row:?}");
            }
        }
        Command::Scan {
            table,
            start,
            end,
            prefix,
            limit,
            reverse,
        } => {
            let range = key_range(start, end, prefix)?;
            read(&mut t, &table, range, limit.unwrap_or(0), reverse, true).await?;
        }
        Command::Count { table, prefix } => {
            let range = key_range(None, None, prefix)?;
            println!("{}", read(&mut t, &table, range, 0, false, false).await?);
        }
        Command::DeleteRow { table, row } => {
            let delete = pb::Mutation {
                mutation: Some(pb::mutation::Mutation::DeleteFromRow(
                    pb::mutation::DeleteFromRow {},
                )),
            };
            let request = pb::MutateRowRequest {
                table_name: t.table(&table),
                row_key: row.into_bytes(),
                mutations: vec![delete],
                ..Default::default()
            };
            t.data.mutate_row(request).await.map_err(status)?;
        }
        Command::Tablets { table } => {
            let request = pb::SampleRowKeysRequest {
                table_name: t.table(&table),
                ..Default::default()
            };
            let mut stream = t
                .data
                .sample_row_keys(request)
                .await
                .map_err(status)?
                .into_inner();
            let mut start = String::new();
            let mut previous = 0;
            println!("{:<24} {:<24} {:>12}", "start", "end", "bytes");
            while let Some(sample) = stream.message().await.map_err(status)? {
                let end = String::from_utf8_lossy(&sample.row_key).into_owned();
                let shown = |k: &str| {
                    if k.is_empty() {
                        "(table edge)".to_string()
                    } else {
                        format!("{k:?}")
                    }
                };
                println!(
                    "{:<24} {:<24} {:>12}",
                    shown(&start),
                    shown(&end),
                    sample.offset_bytes - previous
                );
                previous = sample.offset_bytes;
                start = end;
            }
        }
    }
    Ok(())
}

fn family_spec(spec: &str) -> Result<(String, admin::ColumnFamily), String> {
    use admin::gc_rule::Rule;
    let (name, rule) = match spec.split_once(':') {
        None => (spec, None),
        Some((name, rule)) => {
            let (key, value) = rule.split_once('=').ok_or_else(|| {
                format!("{spec:?}: want NAME:max-versions=N or NAME:max-age=SECONDS")
            })?;
            let n: i64 = value
                .parse()
                .map_err(|_| format!("{spec:?}: {value:?} is not a number"))?;
            let rule = match key {
                "max-versions" => Rule::MaxNumVersions(
                    i32::try_from(n).map_err(|_| format!("{n} versions is too many"))?,
                ),
                "max-age" => Rule::MaxAge(prost_types::Duration {
                    seconds: n,
                    nanos: 0,
                }),
                other => return Err(format!("unknown GC rule {other:?} (max-versions, max-age)")),
            };
            (name, Some(admin::GcRule { rule: Some(rule) }))
        }
    };
    Ok((
        name.to_string(),
        admin::ColumnFamily {
            gc_rule: rule,
            value_type: None,
        },
    ))
}

fn describe_rule(rule: Option<&admin::GcRule>) -> String {
    use admin::gc_rule::Rule;
    let Some(rule) = rule.and_then(|r| r.rule.as_ref()) else {
        return "keep everything".into();
    };
    let list = |rules: &[admin::GcRule], op: &str| {
        rules
            .iter()
            .map(|r| describe_rule(Some(r)))
            .collect::<Vec<_>>()
            .join(op)
    };
    match rule {
        Rule::MaxNumVersions(n) => format!("newest {n} versions"),
        Rule::MaxAge(d) => format!("younger than {}s", d.seconds),
        Rule::Union(u) => format!("({})", list(&u.rules, " and ")),
        Rule::Intersection(i) => format!("({})", list(&i.rules, " or ")),
    }
}

async fn modify_family(
    t: &mut Target,
    table: &str,
    id: String,
    change: admin::modify_column_families_request::modification::Mod,
) -> Result<(), String> {
    let modification = admin::modify_column_families_request::Modification {
        id,
        update_mask: None,
        r#mod: Some(change),
    };
    let request = admin::ModifyColumnFamiliesRequest {
        name: t.table(table),
        modifications: vec![modification],
        ignore_warnings: false,
    };
    t.admin
        .modify_column_families(request)
        .await
        .map_err(status)?;
    Ok(())
}

fn key_range(
    start: Option<String>,
    end: Option<String>,
    prefix: Option<String>,
) -> Result<Option<pb::RowSet>, String> {
    use pb::row_range::{EndKey, StartKey};
    let (start, end) = match prefix {
        Some(p) if start.is_some() || end.is_some() => {
            return Err(format!(
                "--prefix {p:?} cannot be combined with --start/--end"
            ))
        }
        Some(p) => {
            let mut next = p.clone().into_bytes();
            while next.last() == Some(&0xFF) {
                next.pop();
            }
            if let Some(last) = next.last_mut() {
                *last += 1;
            }
            (Some(p.into_bytes()), (!next.is_empty()).then_some(next))
        }
        None => (start.map(String::into_bytes), end.map(String::into_bytes)),
    };
    if start.is_none() && end.is_none() {
        return Ok(None);
    }
    Ok(Some(pb::RowSet {
        row_keys: Vec::new(),
        row_ranges: vec![pb::RowRange {
            start_key: start.map(StartKey::StartKeyClosed),
            end_key: end.map(EndKey::EndKeyOpen),
        }],
    }))
}

/// Reads rows, printing them when `show`; returns how many.
async fn read(
    t: &mut Target,
    table: &str,
    rows: Option<pb::RowSet>,
    limit: i64,
    reversed: bool,
    show: bool,
) -> Result<u64, String> {
    let request = pb::ReadRowsRequest {
        table_name: t.table(table),
        rows,
        rows_limit: limit,
        reversed,
        ..Default::default()
    };
    let mut stream = t
        .data
        .read_rows(request)
        .await
        .map_err(status)?
        .into_inner();
    let mut merger = RowMerger::new();
    let mut count = 0;
    while let Some(response) = stream.message().await.map_err(status)? {
        for chunk in response.chunks {
            if let Some(row) = merger
                .push(chunk)
                .map_err(|e| format!("malformed response: {e}"))?
            {
                count += 1;
                if show {
                    print_row(&row);
                }
            }
        }
    }
    Ok(count)
}

fn print_row(row: &Row) {
    println!("{}", "-".repeat(40));
    println!("{}", String::from_utf8_lossy(&row.key));
    for cell in &row.cells {
        println!(
            "  {}:{:<30} @ {}",
            String::from_utf8_lossy(&cell.family),
            String::from_utf8_lossy(&cell.qualifier),
            utc(cell.timestamp)
        );
        println!("    {:?}", String::from_utf8_lossy(&cell.value));
    }
}

/// A cell timestamp (microseconds since the epoch) as `YYYY-MM-DD hh:mm:ss.ffffff UTC`.
fn utc(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since the epoch to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06} UTC",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        micros.rem_euclid(1_000_000)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_read_as_utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000000 UTC");
        assert_eq!(
            super::utc(951_782_400_000_001),
            "2000-02-29 00:00:00.000001 UTC"
        );
        assert_eq!(
            super::utc(1_795_531_336_687_022),
            "2026-11-24 14:42:16.687022 UTC"
        );
    }
}
