//! The job lifecycle on a worker: claim a job, run it, record how it ended;
//! in-process workers (embedded) or RabbitMQ consumers (scale-out).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::db::DbError;
use crate::jobs::{self, JobOutcome};
use crate::queue::{self, Queue};
use crate::store::{self, JobRecord};
use crate::{Service, ServiceError};

/// How recording a job's outcome went.
#[derive(Debug, PartialEq, Eq)]
enum Recorded {
    Yes,
    /// The job is no longer this worker's: another took it over.
    TakenOver,
    /// The database kept failing; the job stays running until recovered.
    Failed,
}

/// Attempts at recording an outcome while the database is busy, waiting
/// 0.1 s, 0.2 s, ... (about a minute in all).
const RECORD_ATTEMPTS: u32 = 10;

impl Service {
    /// Records a job's outcome, trying again while the database is busy
    /// (a job left "running" would wait for recovery).
    async fn record(&self, job: &JobRecord, outcome: &JobOutcome, last_attempt: bool) -> Recorded {
        let mut wait = Duration::from_millis(100);
        for attempt in 1..=RECORD_ATTEMPTS {
            match self.record_once(job, outcome, last_attempt).await {
                Ok(true) => return Recorded::Yes,
                Ok(false) => return Recorded::TakenOver,
                Err(e) if e.is_transient() && attempt < RECORD_ATTEMPTS => {
                    tracing::warn!("job {}: recording its outcome: {e}; trying again in {wait:?}", job.id);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(15));
                }
                Err(e) => {
                    tracing::error!("job {}: cannot record its outcome: {e}", job.id);
                    return Recorded::Failed;
                }
            }
        }
        Recorded::Failed
    }

    /// One attempt at [`Service::record`]; false if another worker took the
    /// job over.
    async fn record_once(&self, job: &JobRecord, outcome: &JobOutcome, last_attempt: bool) -> Result<bool, DbError> {
        match outcome {
            JobOutcome::Succeeded(bundle) => self.store.finish_job(&job.id, &self.worker_id, Ok(bundle)).await,
            JobOutcome::Transient { code, message } if last_attempt => {
                let message = format!("{message} (gave up after {} attempts)", job.attempts);
                self.store
                    .finish_job(&job.id, &self.worker_id, Err((code, &message)))
                    .await
            }
            JobOutcome::Transient { .. } => self.store.requeue_job(&job.id).await.map(|()| true),
            JobOutcome::Failed { code, message } => {
                self.store
                    .finish_job(&job.id, &self.worker_id, Err((code, message)))
                    .await
            }
        }
    }

    /// Runs one claimed job and records how it ended; true if it should be
    /// offered again (a transient failure with attempts left).
    pub async fn run_claimed(&self, job: JobRecord) -> bool {
        tracing::info!("job {}: attempt {} on {}", job.id, job.attempts, self.worker_id);
        let outcome = jobs::run(self, &job).await;
        let last_attempt = job.attempts >= self.config.max_attempts;
        let retry = matches!(outcome, JobOutcome::Transient { .. }) && !last_attempt;
        if self.record(&job, &outcome, last_attempt).await == Recorded::TakenOver {
            tracing::warn!("job {}: taken over by another worker; this outcome is dropped", job.id);
        }
        match &outcome {
            JobOutcome::Succeeded(bundle) => tracing::info!("job {}: bundle {bundle}", job.id),
            other => tracing::warn!("job {}: {}", job.id, other.code()),
        }
        retry
    }

    /// Embedded mode after a restart: jobs that were running when the
    /// process stopped go back to the queue (or fail, out of attempts).
    pub async fn recover_interrupted_jobs(&self) -> Result<(), ServiceError> {
        for job in self.store.jobs_in(store::JobState::Running).await? {
            if job.attempts >= self.config.max_attempts {
                let worker = job.worker.clone().unwrap_or_default();
                self.store
                    .finish_job(
                        &job.id,
                        &worker,
                        Err(("interrupted", "the service stopped during every attempt of this job")),
                    )
                    .await?;
            } else {
                self.store.requeue_job(&job.id).await?;
            }
        }
        let _ = std::fs::remove_dir_all(self.config.data_dir.join("work"));
        Ok(())
    }

    /// The embedded worker pool: `workers` loops claiming queued jobs.
    pub fn spawn_local_workers(&self) {
        for _ in 0..self.config.workers.max(1) {
            let service = self.clone();
            tokio::spawn(async move {
                loop {
                    match service.store.claim_next_job(&service.worker_id).await {
                        Ok(Some(job)) => {
                            if service.run_claimed(job).await {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                        Ok(None) => service.queue.wait_local().await,
                        Err(e) => {
                            tracing::error!("claiming jobs: {e}");
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                    }
                }
            });
        }
    }

    /// A worker process: consumes job ids from RabbitMQ and runs them,
    /// `workers` at a time, until the connection ends.
    pub async fn consume_amqp_jobs(&self) -> Result<(), ServiceError> {
        let Queue::Amqp(amqp) = &self.queue else {
            return Err(ServiceError::Config("a worker needs --queue amqp://...".into()));
        };
        let workers = self.config.workers.max(1);
        let messages = queue::consume_jobs(amqp, workers as u16).await?;
        let permits = Arc::new(tokio::sync::Semaphore::new(workers));
        let mut messages = std::pin::pin!(messages);
        while let Some(message) = messages.next().await {
            let permit = permits.clone().acquire_owned().await.expect("never closed");
            let service = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match service
                    .store
                    .claim_job(&message.job_id, &service.worker_id, message.redelivered)
                    .await
                {
                    Ok(Some(job)) => {
                        if service.run_claimed(job).await {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            message.requeue().await;
                        } else {
                            message.ack().await;
                        }
                    }
                    // Finished already, or running on a live worker.
                    Ok(None) => message.ack().await,
                    Err(e) => {
                        tracing::error!("job {}: {e}", message.job_id);
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        message.requeue().await;
                    }
                }
            });
        }
        Err(ServiceError::Config("the job queue's connection closed".into()))
    }

    /// Scale-out API start: announces jobs still queued (their message may
    /// have been lost with a process that stopped between the database
    /// write and the publish; a second message for a job is harmless).
    pub async fn announce_queued_jobs(&self) -> Result<(), ServiceError> {
        for job in self.store.jobs_in(store::JobState::Queued).await? {
            self.queue.announce(&job.id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceConfig;
    use crate::store::{JobState, NewJob};

    /// Another process holding SQLite's write lock for longer than the busy
    /// timeout must not leave a finished job "running".
    #[tokio::test(flavor = "multi_thread")]
    async fn an_outcome_is_recorded_once_the_database_is_free_again() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServiceConfig::embedded(dir.path(), "127.0.0.1:0".parse().unwrap());
        let service = Service::start(config).await.unwrap();
        let new = NewJob {
            id: "j-locked",
            key: "k-locked",
            request: "{}",
            platform: "p",
            platform_version: 1,
            app_id: None,
            app_version: None,
        };
        service.store.insert_or_get_job(&new).await.unwrap();
        let job = service
            .store
            .claim_job("j-locked", &service.worker_id, false)
            .await
            .unwrap()
            .expect("claimed");

        // Held past the 10 s busy timeout, so the first attempt fails.
        let database = dir.path().join("bundlegen.db");
        let (locked, is_locked) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let other = rusqlite::Connection::open(database).unwrap();
            other.execute_batch("BEGIN EXCLUSIVE").unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(11));
            other.execute_batch("COMMIT").unwrap();
        });
        is_locked.recv().unwrap();
        let outcome = JobOutcome::Failed {
            code: "invalid_image",
            message: "no such image".into(),
        };
        assert_eq!(service.record(&job, &outcome, true).await, Recorded::Yes);
        holder.join().unwrap();
        let job = service.store.job("j-locked").await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.error_code.as_deref(), Some("invalid_image"));
    }
}
