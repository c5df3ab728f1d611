//! `megastore-bench` as a person runs it: a short run on a given directory reports its
//! figures in one line and leaves the replicas' data there; bad flags get a clear error.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

fn bench(args: &[&str]) -> (bool, String, String) {
    common::run(env!("CARGO_BIN_EXE_megastore-bench"), args)
}

#[test]
fn a_short_run_reports_one_line_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cluster");
    let (ok, out, err) = bench(&[
        "--replicas",
        "full,full,witness",
        "--threads",
        "2",
        "--counter",
        "per-thread",
        "--writers",
        "one",
        "--commits",
        "40",
        "--dir",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let line = out.trim();
    assert!(line.starts_with("40 commits in "), "{line}");
    for part in [
        "commits/s",
        "latency p50",
        "p99",
        "conflicts per commit",
        "commits per log entry",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    for replica in 0..3 {
        assert!(data.join(format!("replica-{replica}")).is_dir());
    }
    // The directory now holds a cluster: a second run refuses to mix into it.
    let (ok, _, err) = bench(&["--commits", "5", "--dir", data.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("is not empty"), "{err}");
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let (ok, _, err) = bench(&["--replicas", "witness,witness"]);
    assert!(!ok);
    assert!(err.contains("at least one replica must be full"), "{err}");
    let (ok, _, err) = bench(&["--threads", "0"]);
    assert!(!ok);
    assert!(err.contains("at least 1"), "{err}");
    let (ok, _, err) = bench(&["--replicas", "fast"]);
    assert!(!ok);
    assert!(err.contains("invalid value"), "{err}");
}
