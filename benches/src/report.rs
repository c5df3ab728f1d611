//! How the benchmark drivers report: latency percentiles and how they are printed,
//! progress lines for long runs, and the result line or error at the end.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The `p` quantile of sorted `latencies`.
pub fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
    latencies.get(i).copied().unwrap_or_default()
}

pub fn micros(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

/// The value of `done` that tells [`report_progress`] to stop.
pub const STOP: u64 = u64::MAX;

/// Prints on standard error how many `what` are done, every second, until `done` is
/// [`STOP`].
pub fn report_progress(done: &AtomicU64, total: u64, what: &str) {
    let started = Instant::now();
    let mut last = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let n = done.load(Ordering::Relaxed);
        if n == STOP {
            return;
        }
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            eprintln!(
                "{n} of {total} {what} in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Prints `result` (the result line on standard output, or `program: error` on
/// standard error) and the exit code to end with.
pub fn finish(program: &str, result: Result<String, String>) -> ExitCode {
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where a benchmark keeps its data: the directory asked for (which must be empty or
/// absent), or a new one under the system's temporary directory, removed when this
/// is dropped.
pub struct DataDir {
    pub path: std::path::PathBuf,
    temporary: bool,
}

impl DataDir {
    pub fn new(asked: Option<&std::path::Path>, program: &str) -> Result<DataDir, String> {
        let temporary = asked.is_none();
        let path = asked.map(std::path::Path::to_path_buf).unwrap_or_else(|| {
            std::env::temp_dir().join(format!("{program}-{}", std::process::id()))
        });
        if path.exists() && std::fs::read_dir(&path).map_or(true, |mut d| d.next().is_some()) {
            return Err(format!("{} exists and is not empty", path.display()));
        }
        Ok(DataDir { path, temporary })
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_micros(51));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_micros(99));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_micros(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
