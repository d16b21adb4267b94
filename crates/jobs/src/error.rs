//! Errors of the job stores.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The queue holds `jobs.max_queued` jobs already.
    #[error("the job queue is full ({0} jobs waiting or running)")]
    Full(usize),
    /// The store cannot be reached (Redis down, disk error).
    #[error("the job store is unavailable: {0}")]
    Unavailable(String),
    /// A stored value cannot be read.
    #[error("a stored job is unreadable: {0}")]
    Corrupt(String),
    /// No such job.
    #[error("no such job")]
    NotFound,
    /// The job is not in a state that allows this.
    #[error("the job is {0}")]
    WrongState(&'static str),
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Unavailable(e.to_string())
            }
        }
    )*};
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
