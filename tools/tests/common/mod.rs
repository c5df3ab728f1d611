//! What the tools' tests share.

#![allow(dead_code)] // each test binary uses a different part

pub mod processes;

/// Self-signed certificates, made as Megastore's own tests make them.
#[path = "../../../megastore/tests/common/certs.rs"]
pub mod certs;

use std::process::Command;

/// Runs `program` with `args`; returns (success, stdout, stderr).
pub fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
