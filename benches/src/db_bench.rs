//! LevelDB/RocksDB `db_bench` workloads over any [`Store`]: the same flags, keys, values
//! and output lines, so a command line can be run against `db_bench` itself too.
//!
//! Keys are the operation's number printed as `key_size` decimal digits (zero padded);
//! random keys are uniform over `[0, num)`. Values are half random, half repeated bytes
//! (db_bench's default compression ratio of 0.5).

use std::path::PathBuf;
use std::time::Instant;

use wal::rng::SplitMix64;

/// A key-value store under test.
pub trait Store {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String>;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
    /// Visits every entry in key order; returns how many.
    fn scan(&self) -> Result<u64, String>;
    /// Finds the first key `>= key`; returns it.
    fn seek(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
    /// After a fill, outside the timing: lets background work finish and describes it.
    fn after_fill(&self) -> Result<Option<String>, String> {
        Ok(None)
    }
}

/// Opens a store at the path; `fresh` means delete what is there first.
pub type Opener<'a> = dyn Fn(&std::path::Path, bool) -> Result<Box<dyn Store>, String> + 'a;

#[derive(Debug, Clone)]
pub struct Config {
    pub benchmarks: Vec<String>,
    pub num: u64,
    /// Operations of the read benchmarks (default: `num`).
    pub reads: Option<u64>,
    pub key_size: usize,
    pub value_size: usize,
    pub sync: bool,
    pub db: PathBuf,
    pub seed: u64,
}

/// One benchmark's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub ops: u64,
    pub seconds: f64,
    pub found: Option<u64>,
    /// What the store reported after a fill.
    pub note: Option<String>,
}

impl Outcome {
    pub fn micros_per_op(&self) -> f64 {
        self.seconds * 1e6 / self.ops.max(1) as f64
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }

    /// The db_bench report line.
    pub fn line(&self) -> String {
        let found = self
            .found
            .map(|f| format!(" ({f} of {} found)", self.ops))
            .unwrap_or_default();
        format!(
            "{:<12} : {:>10.3} micros/op {:.0} ops/sec;{found}",
            self.name,
            self.micros_per_op(),
            self.ops_per_sec()
        )
    }
}

fn key(n: u64, size: usize) -> Vec<u8> {
    let digits = format!("{n:0size$}");
    let bytes = digits.into_bytes();
    bytes[bytes.len().saturating_sub(size)..].to_vec()
}

/// A buffer to cut values from: 50% compressible.
fn value_pool(rng: &mut SplitMix64, value_size: usize) -> Vec<u8> {
    let piece = value_size.max(1);
    let mut pool = Vec::with_capacity(1 << 20);
    while pool.len() < (1 << 20) + piece {
        let random = piece.div_ceil(2);
        for _ in 0..random {
            pool.push(b' ' + rng.below(95) as u8);
        }
        let fill = pool[pool.len() - 1];
        pool.resize(pool.len() + (piece - random), fill);
    }
    pool
}

/// Runs the configured benchmarks in order; each fill starts from an empty store.
pub fn run(config: &Config, open: &Opener<'_>) -> Result<Vec<Outcome>, String> {
    let mut rng = SplitMix64::new(config.seed);
    let pool = value_pool(&mut rng, config.value_size);
    let mut store: Option<Box<dyn Store>> = None;
    let mut outcomes = Vec::new();
    for name in &config.benchmarks {
        let fresh = name.starts_with("fill");
        if fresh || store.is_none() {
            drop(store.take()); // close the old store before its directory is reused
            store = Some(open(&config.db, fresh)?);
        }
        let Some(s) = store.as_deref() else {
            return Err("no store".into());
        };
        let reads = config.reads.unwrap_or(config.num);
        let start = Instant::now();
        let (ops, found) = match name.as_str() {
            "fillseq" => (fill(s, config, &pool, None)?, None),
            "fillrandom" => (fill(s, config, &pool, Some(&mut rng))?, None),
            "readrandom" => {
                let mut found = 0;
                for _ in 0..reads {
                    let k = key(rng.below(config.num.max(1)), config.key_size);
                    found += u64::from(s.get(&k)?.is_some());
                }
                (reads, Some(found))
            }
            "seekrandom" => {
                let mut found = 0;
                for _ in 0..reads {
                    let k = key(rng.below(config.num.max(1)), config.key_size);
                    found += u64::from(s.seek(&k)?.is_some_and(|got| got == k));
                }
                (reads, Some(found))
            }
            "readseq" => (s.scan()?, None),
            other => return Err(format!("unknown benchmark {other:?}")),
        };
        let seconds = start.elapsed().as_secs_f64();
        let note = if fresh { s.after_fill()? } else { None };
        outcomes.push(Outcome {
            name: name.clone(),
            ops,
            seconds,
            found,
            note,
        });
    }
    Ok(outcomes)
}

fn fill(
    store: &dyn Store,
    config: &Config,
    pool: &[u8],
    mut random: Option<&mut SplitMix64>,
) -> Result<u64, String> {
    let window = pool.len() - config.value_size;
    for i in 0..config.num {
        let n = match random.as_deref_mut() {
            Some(rng) => rng.below(config.num.max(1)),
            None => i,
        };
        let at = (i as usize * 97) % window.max(1);
        store.put(&key(n, config.key_size), &pool[at..at + config.value_size])?;
    }
    Ok(config.num)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct MapStore(RefCell<BTreeMap<Vec<u8>, Vec<u8>>>);

    impl Store for MapStore {
        fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
            self.0.borrow_mut().insert(key.to_vec(), value.to_vec());
            Ok(())
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.borrow().get(key).cloned())
        }
        fn scan(&self) -> Result<u64, String> {
            Ok(self.0.borrow().len() as u64)
        }
        fn seek(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
            Ok(self
                .0
                .borrow()
                .range(key.to_vec()..)
                .next()
                .map(|(k, _)| k.clone()))
        }
    }

    #[test]
    fn workloads_do_what_db_bench_does() {
        let config = Config {
            benchmarks: ["fillseq", "readrandom", "readseq", "seekrandom"]
                .map(String::from)
                .to_vec(),
            num: 500,
            reads: None,
            key_size: 16,
            value_size: 100,
            sync: false,
            db: PathBuf::from("unused"),
            seed: 1,
        };
        let open = |_: &std::path::Path, _: bool| -> Result<Box<dyn Store>, String> {
            Ok(Box::new(MapStore::default()))
        };
        let out = run(&config, &open).unwrap();
        assert_eq!(out[0].ops, 500);
        assert_eq!(out[1].found, Some(500), "every key of a fillseq is found");
        assert_eq!(out[2].ops, 500);
        assert_eq!(out[3].found, Some(500));
        assert_eq!(key(42, 16), b"0000000000000042".to_vec());
        assert!(out[0].line().starts_with("fillseq      :"));
    }
}
