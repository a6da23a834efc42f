//! A deployment's records in one document, to move it (embedded SQLite to
//! PostgreSQL, one host to another): every platform version with its
//! policy, every app version, every token (hashes only, revoked ones too,
//! so none comes back). Jobs and bundles are not moved: a lookup makes a
//! bundle again, signed with the same key.

use serde::{Deserialize, Serialize};

use super::{AppRecord, PlatformPolicy, Store};
use crate::db::{DbError, Row};

/// Written at the top of every export.
pub const FORMAT: &str = "bundlegen-records-v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Records {
    pub format: String,
    pub platforms: Vec<PlatformRecords>,
    pub apps: Vec<AppRecord>,
    pub tokens: Vec<TokenRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlatformRecords {
    pub name: String,
    pub current_version: i64,
    pub updated_at: i64,
    pub policy: PlatformPolicy,
    pub versions: Vec<VersionRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionRow {
    pub version: i64,
    pub template: String,
    pub libs: Option<String>,
    pub probe: Option<String>,
    pub change: String,
    pub created_by: String,
    pub created_at: i64,
    pub state: String,
}

/// A token as stored: its hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub hash: String,
    pub platform: Option<String>,
    pub device: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

fn version_row(r: &Row) -> VersionRow {
    VersionRow {
        version: r.int(0),
        template: r.text(1),
        libs: r.opt_text(2),
        probe: r.opt_text(3),
        change: r.text(4),
        created_by: r.text(5),
        created_at: r.int(6),
        state: r.text(7),
    }
}

impl Store {
    /// Every record worth moving.
    pub async fn export_records(&self) -> Result<Records, DbError> {
        let mut platforms = Vec::new();
        for row in self
            .db
            .query(
                "SELECT name, current_version, updated_at, auto_accept, keep_versions FROM platforms ORDER BY name",
                vec![],
            )
            .await?
        {
            let name = row.text(0);
            let versions = self
                .db
                .query(
                    "SELECT version, template, libs, probe, change, created_by, created_at, state \
                     FROM platform_versions WHERE platform = $1 ORDER BY version",
                    vec![name.as_str().into()],
                )
                .await?
                .iter()
                .map(version_row)
                .collect();
            platforms.push(PlatformRecords {
                name,
                current_version: row.int(1),
                updated_at: row.int(2),
                policy: PlatformPolicy {
                    auto_accept: row.int(3) != 0,
                    keep_versions: row.int(4),
                },
                versions,
            });
        }
        let tokens = self
            .db
            .query(
                "SELECT id, name, role, hash, platform, device, created_at, last_used_at, expires_at, revoked_at \
                 FROM tokens ORDER BY id",
                vec![],
            )
            .await?
            .iter()
            .map(|r| TokenRow {
                id: r.text(0),
                name: r.text(1),
                role: r.text(2),
                hash: r.text(3),
                platform: r.opt_text(4),
                device: r.opt_text(5),
                created_at: r.int(6),
                last_used_at: r.opt_int(7),
                expires_at: r.opt_int(8),
                revoked_at: r.opt_int(9),
            })
            .collect();
        Ok(Records {
            format: FORMAT.into(),
            platforms,
            apps: self.apps().await?,
            tokens,
        })
    }

    /// Whether the database holds no platform, app or token.
    pub async fn is_empty(&self) -> Result<bool, DbError> {
        let rows = self
            .db
            .query(
                "SELECT (SELECT COUNT(*) FROM platforms) + (SELECT COUNT(*) FROM apps) + \
                 (SELECT COUNT(*) FROM tokens)",
                vec![],
            )
            .await?;
        Ok(rows.first().is_none_or(|r| r.int(0) == 0))
    }

    /// Writes `records` as they are (numbers, times and states kept); the
    /// caller checks the database is empty first.
    pub async fn import_records(&self, records: &Records) -> Result<(), DbError> {
        for platform in &records.platforms {
            for v in &platform.versions {
                self.db
                    .execute(
                        "INSERT INTO platform_versions (platform, version, template, libs, probe, change, \
                         created_by, created_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        vec![
                            platform.name.as_str().into(),
                            v.version.into(),
                            v.template.as_str().into(),
                            v.libs.as_deref().into(),
                            v.probe.as_deref().into(),
                            v.change.as_str().into(),
                            v.created_by.as_str().into(),
                            v.created_at.into(),
                            v.state.as_str().into(),
                        ],
                    )
                    .await?;
            }
            self.db
                .execute(
                    "INSERT INTO platforms (name, current_version, updated_at, auto_accept, keep_versions) \
                     VALUES ($1, $2, $3, $4, $5)",
                    vec![
                        platform.name.as_str().into(),
                        platform.current_version.into(),
                        platform.updated_at.into(),
                        i64::from(platform.policy.auto_accept).into(),
                        platform.policy.keep_versions.into(),
                    ],
                )
                .await?;
        }
        for app in &records.apps {
            self.put_app(app).await?;
        }
        for t in &records.tokens {
            self.db
                .execute(
                    "INSERT INTO tokens (id, name, role, hash, platform, device, created_at, last_used_at, \
                     expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    vec![
                        t.id.as_str().into(),
                        t.name.as_str().into(),
                        t.role.as_str().into(),
                        t.hash.as_str().into(),
                        t.platform.as_deref().into(),
                        t.device.as_deref().into(),
                        t.created_at.into(),
                        t.last_used_at.into(),
                        t.expires_at.into(),
                        t.revoked_at.into(),
                    ],
                )
                .await?;
        }
        Ok(())
    }
}
