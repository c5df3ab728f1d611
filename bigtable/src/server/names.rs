//! Resource names. A table is stored in the engine under its full name,
//! `projects/{project}/instances/{instance}/tables/{table}`, so instances are separate
//! namespaces as in the service.

use tonic::Status;

fn segments_ok(parts: &[&str], labels: &[&str]) -> bool {
    parts.len() == labels.len() * 2
        && parts
            .chunks(2)
            .zip(labels)
            .all(|(pair, label)| pair[0] == *label && !pair[1].is_empty())
}

/// Checks `projects/{p}/instances/{i}`.
pub fn instance_name(parent: &str) -> Result<String, Status> {
    let parts: Vec<&str> = parent.split('/').collect();
    if segments_ok(&parts, &["projects", "instances"]) {
        Ok(parent.to_string())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid instance name {parent:?}: want projects/{{project}}/instances/{{instance}}"
        )))
    }
}

/// Checks `projects/{p}/instances/{i}/tables/{t}`.
pub fn table_name(name: &str) -> Result<String, Status> {
    let parts: Vec<&str> = name.split('/').collect();
    if segments_ok(&parts, &["projects", "instances", "tables"]) {
        Ok(name.to_string())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid table name {name:?}: want projects/{{project}}/instances/{{instance}}/tables/{{table}}"
        )))
    }
}

/// Checks a table id as the service does: `[_a-zA-Z0-9][-_.a-zA-Z0-9]*`, at most 50.
pub fn table_id(id: &str) -> Result<&str, Status> {
    let mut chars = id.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c == '-' || c == '_' || c == '.' || c.is_ascii_alphanumeric());
    if first_ok && rest_ok && id.len() <= 50 {
        Ok(id)
    } else {
        Err(Status::invalid_argument(format!("invalid table id {id:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(table_name("projects/p/instances/i/tables/t").is_ok());
        assert!(table_name("projects/p/instances/i/tables/").is_err());
        assert!(table_name("projects/p/instances/i").is_err());
        assert!(instance_name("projects/p/instances/i").is_ok());
        assert!(instance_name("projects/p").is_err());
        assert!(table_id("my-table_1.x").is_ok());
        assert!(table_id("-bad").is_err());
        assert!(table_id(&"x".repeat(51)).is_err());
    }
}
