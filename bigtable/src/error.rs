use std::io;
use std::path::PathBuf;

/// Errors of the storage engine. Bad bytes on disk are a [`Error::Corruption`] naming
/// the file, never a panic and never wrong data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error ({context}): {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("corrupt file {path}: {detail}")]
    Corruption { path: PathBuf, detail: String },
    #[error(transparent)]
    Log(#[from] wal::Error),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// Writes cannot proceed: compaction stayed behind too long, or failed.
    #[error("writes stalled: {0}")]
    Stalled(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

pub(crate) fn corruption(path: impl Into<PathBuf>, detail: impl Into<String>) -> Error {
    Error::Corruption {
        path: path.into(),
        detail: detail.into(),
    }
}
