//! Finished bundles, recorded once stored complete.

use super::Store;
use crate::db::{DbError, Row};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRecord {
    pub id: String,
    pub job_id: String,
    pub key: String,
    pub app_id: String,
    pub app_version: Option<String>,
    pub platform: String,
    pub platform_version: i64,
    /// `tar.gz`, `tar.zst` or `ipk`.
    pub format: String,
    pub size: i64,
    pub sha256: String,
    /// Base64 ed25519 signature (see [`crate::signing`]).
    pub signature: String,
    /// Where the blob store keeps it.
    pub location: String,
    pub created_at: i64,
}

const BUNDLE_COLUMNS: &str = "id, job_id, key, app_id, app_version, platform, platform_version, format, size, \
                              sha256, signature, location, created_at";

fn bundle(row: &Row) -> BundleRecord {
    BundleRecord {
        id: row.text(0),
        job_id: row.text(1),
        key: row.text(2),
        app_id: row.text(3),
        app_version: row.opt_text(4),
        platform: row.text(5),
        platform_version: row.int(6),
        format: row.text(7),
        size: row.int(8),
        sha256: row.text(9),
        signature: row.text(10),
        location: row.text(11),
        created_at: row.int(12),
    }
}

impl Store {
    pub async fn add_bundle(&self, record: &BundleRecord) -> Result<(), DbError> {
        self.db
            .execute(
                &format!(
                    "INSERT INTO bundles ({BUNDLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                     $12, $13) ON CONFLICT (id) DO NOTHING"
                ),
                vec![
                    record.id.as_str().into(),
                    record.job_id.as_str().into(),
                    record.key.as_str().into(),
                    record.app_id.as_str().into(),
                    record.app_version.clone().into(),
                    record.platform.as_str().into(),
                    record.platform_version.into(),
                    record.format.as_str().into(),
                    record.size.into(),
                    record.sha256.as_str().into(),
                    record.signature.as_str().into(),
                    record.location.as_str().into(),
                    record.created_at.into(),
                ],
            )
            .await
            .map(drop)
    }

    pub async fn bundle(&self, id: &str) -> Result<Option<BundleRecord>, DbError> {
        let rows = self
            .db
            .query(
                &format!("SELECT {BUNDLE_COLUMNS} FROM bundles WHERE id = $1"),
                vec![id.into()],
            )
            .await?;
        Ok(rows.first().map(bundle))
    }

    /// The bundle made from exactly these inputs (a job key), if any.
    pub async fn bundle_by_key(&self, key: &str) -> Result<Option<BundleRecord>, DbError> {
        let rows = self
            .db
            .query(
                &format!("SELECT {BUNDLE_COLUMNS} FROM bundles WHERE key = $1 ORDER BY created_at DESC LIMIT 1"),
                vec![key.into()],
            )
            .await?;
        Ok(rows.first().map(bundle))
    }

    pub async fn bundles(&self, limit: i64) -> Result<Vec<BundleRecord>, DbError> {
        let rows = self
            .db
            .query(
                &format!("SELECT {BUNDLE_COLUMNS} FROM bundles ORDER BY created_at DESC, id LIMIT $1"),
                vec![limit.into()],
            )
            .await?;
        Ok(rows.iter().map(bundle).collect())
    }

    pub async fn count_jobs(&self) -> Result<Vec<(String, i64)>, DbError> {
        let rows = self
            .db
            .query("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state", vec![])
            .await?;
        Ok(rows.iter().map(|r| (r.text(0), r.int(1))).collect())
    }
}
