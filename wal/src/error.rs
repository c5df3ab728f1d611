use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the log. Bad bytes on disk are always a
/// [`Error::Corruption`] naming the file and offset, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error ({context}): {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("corrupt log segment {path} at offset {offset}: {reason}")]
    Corruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the log stopped accepting writes after an I/O failure: {0}")]
    Poisoned(String),
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge { size: usize, limit: usize },
    #[error("invalid log options: {0}")]
    InvalidOptions(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a human-readable context to an I/O error.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}
