//! Platform versions: every change is a new version.

use serde::Serialize;

use super::{Store, now};
use crate::db::DbError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformSummary {
    pub name: String,
    pub current_version: i64,
    pub updated_at: i64,
}

/// One version of a platform: the hand-written template and the generated
/// parts (a probe report, or a BundleGen library list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformVersion {
    pub platform: String,
    pub version: i64,
    pub template: String,
    pub libs: Option<String>,
    pub probe: Option<String>,
    /// What this version changed: `template`, `probe` or `libs`.
    pub change: String,
    pub created_by: String,
    pub created_at: i64,
}

impl Store {
    pub async fn platforms(&self) -> Result<Vec<PlatformSummary>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT name, current_version, updated_at FROM platforms ORDER BY name",
                vec![],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| PlatformSummary {
                name: r.text(0),
                current_version: r.int(1),
                updated_at: r.int(2),
            })
            .collect())
    }

    /// A version of a platform; the current one when `version` is `None`.
    pub async fn platform_version(&self, name: &str, version: Option<i64>) -> Result<Option<PlatformVersion>, DbError> {
        let rows = match version {
            Some(version) => {
                self.db
                    .query(
                        "SELECT platform, version, template, libs, probe, change, created_by, created_at \
                         FROM platform_versions WHERE platform = $1 AND version = $2",
                        vec![name.into(), version.into()],
                    )
                    .await?
            }
            None => {
                self.db
                    .query(
                        "SELECT v.platform, v.version, v.template, v.libs, v.probe, v.change, v.created_by, \
                         v.created_at FROM platform_versions v JOIN platforms p ON p.name = v.platform \
                         AND p.current_version = v.version WHERE p.name = $1",
                        vec![name.into()],
                    )
                    .await?
            }
        };
        Ok(rows.first().map(|r| PlatformVersion {
            platform: r.text(0),
            version: r.int(1),
            template: r.text(2),
            libs: r.opt_text(3),
            probe: r.opt_text(4),
            change: r.text(5),
            created_by: r.text(6),
            created_at: r.int(7),
        }))
    }

    /// Every version of a platform, oldest first (without their documents).
    pub async fn platform_history(&self, name: &str) -> Result<Vec<PlatformVersion>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT platform, version, change, created_by, created_at FROM platform_versions \
                 WHERE platform = $1 ORDER BY version",
                vec![name.into()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| PlatformVersion {
                platform: r.text(0),
                version: r.int(1),
                template: String::new(),
                libs: None,
                probe: None,
                change: r.text(2),
                created_by: r.text(3),
                created_at: r.int(4),
            })
            .collect())
    }

    /// Adds the next version of a platform and makes it current. Two writers
    /// racing for the same number: one insert fails on the primary key and
    /// retries with the next number.
    pub async fn add_platform_version(
        &self,
        name: &str,
        template: &str,
        libs: Option<&str>,
        probe: Option<&str>,
        change: &str,
        created_by: &str,
    ) -> Result<i64, DbError> {
        for _ in 0..10 {
            let rows = self
                .db
                .query(
                    "SELECT COALESCE(MAX(version), 0) FROM platform_versions WHERE platform = $1",
                    vec![name.into()],
                )
                .await?;
            let version = rows.first().map_or(0, |r| r.int(0)) + 1;
            let inserted = self
                .db
                .execute(
                    "INSERT INTO platform_versions (platform, version, template, libs, probe, change, created_by, \
                     created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (platform, version) DO NOTHING",
                    vec![
                        name.into(),
                        version.into(),
                        template.into(),
                        libs.into(),
                        probe.into(),
                        change.into(),
                        created_by.into(),
                        now().into(),
                    ],
                )
                .await?;
            if inserted == 0 {
                continue;
            }
            self.db
                .execute(
                    "INSERT INTO platforms (name, current_version, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET current_version = $2, updated_at = $3 \
                     WHERE platforms.current_version < $2",
                    vec![name.into(), version.into(), now().into()],
                )
                .await?;
            return Ok(version);
        }
        Err(DbError::Query(format!("platform {name}: too many concurrent updates")))
    }
}
