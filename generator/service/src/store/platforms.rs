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
    /// `accepted`, or `held` for review (never current until accepted).
    pub state: String,
}

/// How a platform takes the reports its devices upload, and how many
/// versions it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlatformPolicy {
    /// Use a device's report that changes libc, the loader or the graphics
    /// libraries without review.
    #[serde(default)]
    pub auto_accept: bool,
    /// Versions kept; older ones (never the current one) are deleted.
    #[serde(default = "default_keep")]
    pub keep_versions: i64,
}

fn default_keep() -> i64 {
    20
}

impl Default for PlatformPolicy {
    fn default() -> Self {
        PlatformPolicy {
            auto_accept: false,
            keep_versions: default_keep(),
        }
    }
}

/// A version to add.
pub struct NewVersion<'a> {
    pub template: &'a str,
    pub libs: Option<&'a str>,
    pub probe: Option<&'a str>,
    /// `template`, `probe`, `libs`, `import`, `accepted`.
    pub change: &'a str,
    pub created_by: &'a str,
    /// Kept for review, not made current.
    pub held: bool,
}

const VERSION_COLUMNS: &str = "v.platform, v.version, v.template, v.libs, v.probe, v.change, v.created_by, \
                               v.created_at, v.state";

fn platform_version(r: &crate::db::Row) -> PlatformVersion {
    PlatformVersion {
        platform: r.text(0),
        version: r.int(1),
        template: r.text(2),
        libs: r.opt_text(3),
        probe: r.opt_text(4),
        change: r.text(5),
        created_by: r.text(6),
        created_at: r.int(7),
        state: r.text(8),
    }
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
    /// The number of a platform's current version, without its documents
    /// (what a lookup needs: templates, library lists and probe reports are
    /// large).
    pub async fn current_version_number(&self, name: &str) -> Result<Option<i64>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT current_version FROM platforms WHERE name = $1",
                vec![name.into()],
            )
            .await?;
        Ok(rows.first().map(|r| r.int(0)))
    }

    pub async fn platform_version(&self, name: &str, version: Option<i64>) -> Result<Option<PlatformVersion>, DbError> {
        let rows =
            match version {
                Some(number) => self
                    .db
                    .query(
                        &format!(
                            "SELECT {VERSION_COLUMNS} FROM platform_versions v WHERE v.platform = $1 AND v.version = $2"
                        ),
                        vec![name.into(), number.into()],
                    )
                    .await?,
                None => self
                    .db
                    .query(
                        &format!(
                            "SELECT {VERSION_COLUMNS} FROM platform_versions v JOIN platforms p ON p.name = v.platform \
                             AND p.current_version = v.version WHERE p.name = $1"
                        ),
                        vec![name.into()],
                    )
                    .await?,
            };
        Ok(rows.first().map(platform_version))
    }

    /// Every version of a platform, oldest first (without their documents).
    pub async fn platform_history(&self, name: &str) -> Result<Vec<PlatformVersion>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT platform, version, change, created_by, created_at, state FROM platform_versions \
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
                state: r.text(5),
            })
            .collect())
    }

    /// Adds the next version of a platform and makes it current, unless
    /// `held` (for review); then prunes old versions by the platform's
    /// policy. Two writers racing for the same number: one insert fails on
    /// the primary key and retries with the next number.
    pub async fn add_platform_version(&self, name: &str, new: &NewVersion<'_>) -> Result<i64, DbError> {
        let held = new.held;
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
                     created_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (platform, version) DO NOTHING",
                    vec![
                        name.into(),
                        version.into(),
                        new.template.into(),
                        new.libs.into(),
                        new.probe.into(),
                        new.change.into(),
                        new.created_by.into(),
                        now().into(),
                        if held { "held" } else { "accepted" }.into(),
                    ],
                )
                .await?;
            if inserted == 0 {
                continue;
            }
            if !held {
                self.db
                    .execute(
                        "INSERT INTO platforms (name, current_version, updated_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (name) DO UPDATE SET current_version = $2, updated_at = $3 \
                         WHERE platforms.current_version < $2",
                        vec![name.into(), version.into(), now().into()],
                    )
                    .await?;
            }
            self.prune_platform_versions(name).await?;
            return Ok(version);
        }
        Err(DbError::Query(format!("platform {name}: too many concurrent updates")))
    }

    /// Deletes the versions beyond the newest `keep_versions`, never the
    /// current one.
    async fn prune_platform_versions(&self, name: &str) -> Result<(), DbError> {
        let policy = self.platform_policy(name).await?.unwrap_or_default();
        self.db
            .execute(
                "DELETE FROM platform_versions WHERE platform = $1 \
                 AND version <= (SELECT MAX(version) FROM platform_versions WHERE platform = $1) - $2 \
                 AND version <> COALESCE((SELECT current_version FROM platforms WHERE name = $1), 0)",
                vec![name.into(), policy.keep_versions.max(1).into()],
            )
            .await
            .map(drop)
    }

    /// A platform's policy; `None` for a platform that does not exist.
    pub async fn platform_policy(&self, name: &str) -> Result<Option<PlatformPolicy>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT auto_accept, keep_versions FROM platforms WHERE name = $1",
                vec![name.into()],
            )
            .await?;
        Ok(rows.first().map(|r| PlatformPolicy {
            auto_accept: r.int(0) != 0,
            keep_versions: r.int(1),
        }))
    }

    pub async fn set_platform_policy(&self, name: &str, policy: &PlatformPolicy) -> Result<bool, DbError> {
        Ok(self
            .db
            .execute(
                "UPDATE platforms SET auto_accept = $1, keep_versions = $2 WHERE name = $3",
                vec![
                    i64::from(policy.auto_accept).into(),
                    policy.keep_versions.into(),
                    name.into(),
                ],
            )
            .await?
            > 0)
    }

    /// Marks a held version as accepted; false if it was not held.
    pub async fn mark_accepted(&self, name: &str, version: i64) -> Result<bool, DbError> {
        Ok(self
            .db
            .execute(
                "UPDATE platform_versions SET state = 'accepted' WHERE platform = $1 AND version = $2 \
                 AND state = 'held'",
                vec![name.into(), version.into()],
            )
            .await?
            > 0)
    }
}
