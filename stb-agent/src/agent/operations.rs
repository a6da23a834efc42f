//! Long operations (install, uninstall): a handle each, progress, cancel,
//! and `Status`/`Progress` events. Operations on different apps run at once
//! (up to the configured number); two on the same app wait for each other.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Agent, BoxFuture, Event, HandleError, OperationError, random_handle};

/// Operations kept after they end, for GetProgress.
const FINISHED_KEPT: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Progress,
    Success,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "Queued",
            Status::Progress => "Progress",
            Status::Success => "Success",
            Status::Failed => "Failed",
            Status::Cancelled => "Cancelled",
        }
    }

    fn has_ended(self) -> bool {
        matches!(self, Status::Success | Status::Failed | Status::Cancelled)
    }
}

/// An operation's state, for GetProgress.
#[derive(Debug, Clone)]
pub struct Operation {
    pub kind: &'static str,
    pub app: String,
    pub version: String,
    pub status: Status,
    pub percent: u32,
    pub stage: String,
    pub error: Option<Arc<OperationError>>,
    cancel: watch::Sender<bool>,
}

/// How an operation ends, for a caller that waits for it.
pub type OperationResult = tokio::sync::oneshot::Receiver<Result<String, Arc<OperationError>>>;

/// The operations by handle.
pub type Registry = BTreeMap<String, Operation>;

impl Agent {
    fn update(&self, handle: &str, change: impl FnOnce(&mut Operation)) -> Option<Operation> {
        let mut operations = self.operations.lock().unwrap_or_else(|e| e.into_inner());
        let operation = operations.get_mut(handle)?;
        change(operation);
        Some(operation.clone())
    }

    /// Reports how far an operation is; an event only when it changed.
    pub(super) fn progress(&self, handle: &str, percent: u32, stage: &str) {
        let (mut changed, mut new_stage) = (false, false);
        let Some(op) = self.update(handle, |op| {
            changed = op.percent != percent || op.stage != stage;
            new_stage = op.stage != stage;
            op.percent = percent;
            op.stage = stage.to_string();
            op.status = Status::Progress;
        }) else {
            return;
        };
        if new_stage {
            tracing::info!(
                handle,
                operation = op.kind,
                app = op.app,
                version = op.version,
                "{stage}"
            );
        }
        if changed {
            tracing::debug!(handle, "{percent}% {stage}");
            self.emit(Event::Progress {
                handle: handle.to_string(),
                percent,
                stage: stage.to_string(),
            });
        }
    }

    fn finish(&self, handle: &str, result: Result<String, Arc<OperationError>>) {
        let status = match &result {
            Ok(_) => Status::Success,
            Err(e) if e.kind() == super::ErrorKind::Cancelled => Status::Cancelled,
            Err(_) => Status::Failed,
        };
        let Some(op) = self.update(handle, |op| {
            op.status = status;
            if status == Status::Success {
                op.percent = 100;
            }
            op.error = result.as_ref().err().cloned();
        }) else {
            return;
        };
        match &result {
            Ok(details) => tracing::info!(
                handle,
                operation = op.kind,
                app = op.app,
                version = op.version,
                "{}: {details}",
                status.as_str()
            ),
            Err(e) => tracing::warn!(
                handle,
                operation = op.kind,
                app = op.app,
                version = op.version,
                "{}: {}: {}",
                status.as_str(),
                e.kind().as_str(),
                bundlegen_protocol::error_chain(e.as_ref())
            ),
        }
        self.emit(Event::Status {
            handle: handle.to_string(),
            operation: op.kind.to_string(),
            app: op.app,
            version: op.version,
            status,
            result,
        });
        let mut operations = self.operations.lock().unwrap_or_else(|e| e.into_inner());
        let finished: Vec<String> = operations
            .iter()
            .filter(|(_, op)| op.status.has_ended())
            .map(|(h, _)| h.clone())
            .collect();
        for old in finished.iter().take(finished.len().saturating_sub(FINISHED_KEPT)) {
            operations.remove(old);
        }
    }

    /// Starts an operation: registers it and runs `work` in the background;
    /// its result also goes to the returned receiver (if kept).
    pub(super) fn start_operation<F>(
        self: &Arc<Self>,
        kind: &'static str,
        app: &str,
        version: &str,
        work: F,
    ) -> (String, OperationResult)
    where
        F: FnOnce(Arc<Agent>, String, watch::Receiver<bool>) -> BoxFuture<'static, Result<String, OperationError>>
            + Send
            + 'static,
    {
        let handle = random_handle("op");
        let (cancel, cancelled) = watch::channel(false);
        self.operations.lock().unwrap_or_else(|e| e.into_inner()).insert(
            handle.clone(),
            Operation {
                kind,
                app: app.to_string(),
                version: version.to_string(),
                status: Status::Queued,
                percent: 0,
                stage: "queued".into(),
                error: None,
                cancel,
            },
        );
        tracing::info!(handle, operation = kind, app, version, "queued");
        self.emit(Event::Status {
            handle: handle.clone(),
            operation: kind.to_string(),
            app: app.to_string(),
            version: version.to_string(),
            status: Status::Queued,
            result: Ok(String::new()),
        });
        let (agent, app, id) = (self.clone(), app.to_string(), handle.clone());
        let (sender, receiver) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let app_lock = agent.app_lock(&app);
            let _same_app = app_lock.lock().await;
            let _slot = agent.slots.clone().acquire_owned().await.expect("never closed");
            let result = work(agent.clone(), id.clone(), cancelled).await.map_err(Arc::new);
            agent.finish(&id, result.clone());
            let _ = sender.send(result);
        });
        (handle, receiver)
    }

    pub fn operation(&self, handle: &str) -> Result<Operation, HandleError> {
        self.operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(handle)
            .cloned()
            .ok_or_else(|| HandleError::Unknown(handle.to_string()))
    }

    /// Cancels an install still downloading or verifying.
    pub fn cancel(&self, handle: &str) -> Result<(), HandleError> {
        let operation = self.operation(handle)?;
        if operation.status.has_ended() {
            return Err(HandleError::Ended(handle.to_string()));
        }
        let _ = operation.cancel.send(true);
        Ok(())
    }
}
