//! Bundle jobs: queued, claimed by one worker, taken over when it dies, finished.

use serde::{Deserialize, Serialize};

use super::{Store, now};
use crate::db::{DbError, Row};

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

impl Store {
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
}
