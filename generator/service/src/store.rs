//! The service's records, over [`Db`]: API tokens, platform versions, apps,
//! jobs and bundles. Every change is one statement, so two API processes and
//! any number of workers can share a PostgreSQL database.

use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError, Row, Value};

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
}

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppRecord {
    pub app_id: String,
    pub version: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub options: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> JobState {
        match text {
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            _ => JobState::Queued,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: String,
    pub key: String,
    pub state: JobState,
    pub request: String,
    pub platform: String,
    pub platform_version: i64,
    pub app_id: Option<String>,
    pub app_version: Option<String>,
    /// Thousandths done.
    pub progress: i64,
    pub stage: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub attempts: i64,
    pub worker: Option<String>,
    pub bundle_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const JOB_COLUMNS: &str = "id, key, state, request, platform, platform_version, app_id, app_version, progress, \
                           stage, error_code, error, attempts, worker, bundle_id, created_at, updated_at";

fn job(row: &Row) -> JobRecord {
    JobRecord {
        id: row.text(0),
        key: row.text(1),
        state: JobState::parse(&row.text(2)),
        request: row.text(3),
        platform: row.text(4),
        platform_version: row.int(5),
        app_id: row.opt_text(6),
        app_version: row.opt_text(7),
        progress: row.int(8),
        stage: row.opt_text(9),
        error_code: row.opt_text(10),
        error: row.opt_text(11),
        attempts: row.int(12),
        worker: row.opt_text(13),
        bundle_id: row.opt_text(14),
        created_at: row.int(15),
        updated_at: row.int(16),
    }
}

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

/// A job to insert.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub key: &'a str,
    pub request: &'a str,
    pub platform: &'a str,
    pub platform_version: i64,
    pub app_id: Option<&'a str>,
    pub app_version: Option<&'a str>,
}

/// Typed access to the records.
#[derive(Clone)]
pub struct Store {
    pub db: Db,
}

impl Store {
    // Tokens.

    pub async fn add_token(&self, id: &str, name: &str, role: &str, hash: &str) -> Result<(), DbError> {
        self.db
            .execute(
                "INSERT INTO tokens (id, name, role, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
                vec![id.into(), name.into(), role.into(), hash.into(), now().into()],
            )
            .await
            .map(drop)
    }

    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, DbError> {
        let rows = self
            .db
            .query("SELECT id, name, role FROM tokens WHERE hash = $1", vec![hash.into()])
            .await?;
        Ok(rows.first().map(|r| TokenRecord {
            id: r.text(0),
            name: r.text(1),
            role: r.text(2),
        }))
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, DbError> {
        let rows = self
            .db
            .query("SELECT id, name, role FROM tokens ORDER BY id", vec![])
            .await?;
        Ok(rows
            .iter()
            .map(|r| TokenRecord {
                id: r.text(0),
                name: r.text(1),
                role: r.text(2),
            })
            .collect())
    }

    pub async fn delete_token(&self, id: &str) -> Result<bool, DbError> {
        Ok(self
            .db
            .execute("DELETE FROM tokens WHERE id = $1", vec![id.into()])
            .await?
            > 0)
    }

    pub async fn count_tokens(&self, role: &str) -> Result<i64, DbError> {
        let rows = self
            .db
            .query("SELECT COUNT(*) FROM tokens WHERE role = $1", vec![role.into()])
            .await?;
        Ok(rows.first().map_or(0, |r| r.int(0)))
    }

    // Platforms.

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

    // Apps.

    pub async fn put_app(&self, app: &AppRecord) -> Result<(), DbError> {
        let metadata = app.metadata.as_ref().map(|m| m.to_string());
        self.db
            .execute(
                "INSERT INTO apps (app_id, version, image, metadata, options, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (app_id, version) DO UPDATE \
                 SET image = $3, metadata = $4, options = $5",
                vec![
                    app.app_id.as_str().into(),
                    app.version.as_str().into(),
                    app.image.as_str().into(),
                    metadata.into(),
                    app.options.to_string().into(),
                    now().into(),
                ],
            )
            .await
            .map(drop)
    }

    pub async fn app(&self, app_id: &str, version: &str) -> Result<Option<AppRecord>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT app_id, version, image, metadata, options FROM apps WHERE app_id = $1 AND version = $2",
                vec![app_id.into(), version.into()],
            )
            .await?;
        Ok(rows.first().map(|r| AppRecord {
            app_id: r.text(0),
            version: r.text(1),
            image: r.text(2),
            metadata: r.opt_text(3).and_then(|m| serde_json::from_str(&m).ok()),
            options: serde_json::from_str(&r.text(4)).unwrap_or_default(),
        }))
    }

    pub async fn apps(&self) -> Result<Vec<AppRecord>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT app_id, version, image, metadata, options FROM apps ORDER BY app_id, version",
                vec![],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AppRecord {
                app_id: r.text(0),
                version: r.text(1),
                image: r.text(2),
                metadata: r.opt_text(3).and_then(|m| serde_json::from_str(&m).ok()),
                options: serde_json::from_str(&r.text(4)).unwrap_or_default(),
            })
            .collect())
    }

    // Jobs.

    /// Inserts a queued job unless one with the same key exists; returns the
    /// job with that key, and whether it is the new one. A failed job with
    /// the key is queued again (its inputs may work now: an image pushed
    /// since, a registry back up).
    pub async fn insert_or_get_job(&self, new: &NewJob<'_>) -> Result<(JobRecord, bool), DbError> {
        let now = now();
        let inserted = self
            .db
            .execute(
                "INSERT INTO jobs (id, key, state, request, platform, platform_version, app_id, app_version, \
                 progress, attempts, created_at, updated_at) VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, 0, 0, \
                 $8, $8) ON CONFLICT (key) DO NOTHING",
                vec![
                    new.id.into(),
                    new.key.into(),
                    new.request.into(),
                    new.platform.into(),
                    new.platform_version.into(),
                    new.app_id.into(),
                    new.app_version.into(),
                    now.into(),
                ],
            )
            .await?;
        let requeued = if inserted == 0 {
            self.db
                .execute(
                    "UPDATE jobs SET state = 'queued', attempts = 0, progress = 0, stage = NULL, error_code = NULL, \
                     error = NULL, worker = NULL, updated_at = $1 WHERE key = $2 AND state = 'failed'",
                    vec![now.into(), new.key.into()],
                )
                .await?
        } else {
            0
        };
        let job = self
            .job_by_key(new.key)
            .await?
            .ok_or_else(|| DbError::Query(format!("job {} vanished", new.key)))?;
        Ok((job, inserted > 0 || requeued > 0))
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, DbError> {
        let rows = self
            .db
            .query(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
                vec![id.into()],
            )
            .await?;
        Ok(rows.first().map(job))
    }

    pub async fn job_by_key(&self, key: &str) -> Result<Option<JobRecord>, DbError> {
        let rows = self
            .db
            .query(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE key = $1"),
                vec![key.into()],
            )
            .await?;
        Ok(rows.first().map(job))
    }

    /// Jobs in a state, oldest first.
    pub async fn jobs_in(&self, state: JobState) -> Result<Vec<JobRecord>, DbError> {
        let rows = self
            .db
            .query(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state = $1 ORDER BY created_at, id"),
                vec![state.as_str().into()],
            )
            .await?;
        Ok(rows.iter().map(job).collect())
    }

    pub async fn recent_jobs(&self, limit: i64) -> Result<Vec<JobRecord>, DbError> {
        let rows = self
            .db
            .query(
                &format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id LIMIT $1"),
                vec![limit.into()],
            )
            .await?;
        Ok(rows.iter().map(job).collect())
    }

    /// Claims a job for `worker`: a queued one, or (`take_over`) one whose
    /// worker died. `None` if someone else has it or it is finished.
    pub async fn claim_job(&self, id: &str, worker: &str, take_over: bool) -> Result<Option<JobRecord>, DbError> {
        let states = if take_over {
            "('queued', 'running')"
        } else {
            "('queued')"
        };
        let rows = self
            .db
            .query(
                &format!(
                    "UPDATE jobs SET state = 'running', worker = $1, attempts = attempts + 1, progress = 0, \
                     stage = 'starting', updated_at = $2 WHERE id = $3 AND state IN {states} RETURNING {JOB_COLUMNS}"
                ),
                vec![worker.into(), now().into(), id.into()],
            )
            .await?;
        Ok(rows.first().map(job))
    }

    /// Claims the oldest queued job (the embedded worker pool's way).
    pub async fn claim_next_job(&self, worker: &str) -> Result<Option<JobRecord>, DbError> {
        loop {
            let rows = self
                .db
                .query(
                    "SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at, id LIMIT 1",
                    vec![],
                )
                .await?;
            let Some(row) = rows.first() else { return Ok(None) };
            if let Some(job) = self.claim_job(&row.text(0), worker, false).await? {
                return Ok(Some(job));
            }
        }
    }

    pub async fn job_progress(&self, id: &str, worker: &str, progress: i64, stage: &str) -> Result<(), DbError> {
        self.db
            .execute(
                "UPDATE jobs SET progress = $1, stage = $2, updated_at = $3 WHERE id = $4 AND worker = $5 \
                 AND state = 'running'",
                vec![progress.into(), stage.into(), now().into(), id.into(), worker.into()],
            )
            .await
            .map(drop)
    }

    /// Marks a running job finished; false if the job is no longer this
    /// worker's (it was taken over).
    pub async fn finish_job(
        &self,
        id: &str,
        worker: &str,
        outcome: Result<&str, (&str, &str)>,
    ) -> Result<bool, DbError> {
        let (state, bundle, code, error) = match outcome {
            Ok(bundle) => ("succeeded", Some(bundle), None, None),
            Err((code, error)) => ("failed", None, Some(code), Some(error)),
        };
        let changed = self
            .db
            .execute(
                "UPDATE jobs SET state = $1, bundle_id = $2, error_code = $3, error = $4, progress = $5, \
                 stage = NULL, updated_at = $6 WHERE id = $7 AND worker = $8 AND state = 'running'",
                vec![
                    state.into(),
                    bundle.into(),
                    code.into(),
                    error.into(),
                    if state == "succeeded" { 1000 } else { 0 }.into(),
                    now().into(),
                    id.into(),
                    worker.into(),
                ],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Puts a running job back in the queue (its worker stopped or will retry).
    pub async fn requeue_job(&self, id: &str) -> Result<(), DbError> {
        self.db
            .execute(
                "UPDATE jobs SET state = 'queued', worker = NULL, progress = 0, stage = NULL, updated_at = $1 \
                 WHERE id = $2 AND state = 'running'",
                vec![now().into(), id.into()],
            )
            .await
            .map(drop)
    }

    // Bundles.

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

    /// The newest bundle of an app version for a platform version.
    pub async fn find_bundle(
        &self,
        app_id: &str,
        app_version: &str,
        platform: &str,
        platform_version: i64,
    ) -> Result<Option<BundleRecord>, DbError> {
        let rows = self
            .db
            .query(
                &format!(
                    "SELECT {BUNDLE_COLUMNS} FROM bundles WHERE app_id = $1 AND app_version = $2 AND platform = $3 \
                     AND platform_version = $4 ORDER BY created_at DESC LIMIT 1"
                ),
                vec![
                    app_id.into(),
                    app_version.into(),
                    platform.into(),
                    platform_version.into(),
                ],
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

impl From<Option<i64>> for Value {
    fn from(value: Option<i64>) -> Value {
        Value::Int(value)
    }
}
