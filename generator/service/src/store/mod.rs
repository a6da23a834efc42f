//! The service's records, over [`Db`]: API tokens, platform versions, apps,
//! jobs and bundles. Every change is one statement, so two API processes and
//! any number of workers can share a PostgreSQL database.
//!
//! One file per kind of record: [`tokens`], [`platforms`], [`apps`],
//! [`jobs`], [`bundles`]; [`transfer`] moves them all to another database.

use crate::db::{Db, Value};

mod apps;
mod bundles;
mod jobs;
mod platforms;
mod tokens;
mod transfer;

pub use apps::AppRecord;
pub use bundles::BundleRecord;
pub use jobs::{JobRecord, JobState, NewJob};
pub use platforms::{NewVersion, PlatformPolicy, PlatformSummary, PlatformVersion};
pub use tokens::{LAST_USE_GRANULARITY, NewToken, TokenRecord};
pub use transfer::{FORMAT as RECORDS_FORMAT, PlatformRecords, Records, TokenRow, VersionRow};

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Typed access to the records.
#[derive(Clone)]
pub struct Store {
    pub db: Db,
}

impl From<Option<i64>> for Value {
    fn from(value: Option<i64>) -> Value {
        Value::Int(value)
    }
}
