//! What runs containers: Dobby on a box ([`crate::dobby::Dobby`]), a
//! recording fake in the agent's unit tests ([`fake::RecordingContainers`]).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use super::error::ContainerError;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Containers: Send + Sync {
    /// Starts the bundle at `bundle` (absolute) as container `id`; returns
    /// its descriptor (negative: refused).
    fn start<'a>(&'a self, id: &'a str, bundle: &'a Path) -> BoxFuture<'a, Result<i32, ContainerError>>;
    /// Asks the container to stop; false if it is not known.
    fn stop<'a>(&'a self, id: &'a str, force: bool) -> BoxFuture<'a, Result<bool, ContainerError>>;
    /// Running containers: (descriptor, id).
    fn running(&self) -> BoxFuture<'_, Result<Vec<(i32, String)>, ContainerError>>;
}

#[cfg(test)]
pub mod fake {
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::*;

    /// A call the agent made.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Start { id: String, bundle: PathBuf },
        Stop { id: String, force: bool },
    }

    /// Starts and stops nothing: records the calls and keeps a list of
    /// "running" containers. `refuse` makes every start answer -1, as Dobby
    /// does when crun fails.
    #[derive(Default)]
    pub struct RecordingContainers {
        pub calls: Mutex<Vec<Call>>,
        pub running: Mutex<Vec<(i32, String)>>,
        pub refuse: Mutex<bool>,
    }

    impl RecordingContainers {
        pub fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Containers for RecordingContainers {
        fn start<'a>(&'a self, id: &'a str, bundle: &'a Path) -> BoxFuture<'a, Result<i32, ContainerError>> {
            Box::pin(async move {
                self.calls.lock().unwrap().push(Call::Start {
                    id: id.to_string(),
                    bundle: bundle.to_path_buf(),
                });
                if *self.refuse.lock().unwrap() {
                    return Ok(-1);
                }
                let mut running = self.running.lock().unwrap();
                let descriptor = running.iter().map(|(d, _)| *d).max().unwrap_or(0) + 1;
                running.push((descriptor, id.to_string()));
                Ok(descriptor)
            })
        }

        fn stop<'a>(&'a self, id: &'a str, force: bool) -> BoxFuture<'a, Result<bool, ContainerError>> {
            Box::pin(async move {
                self.calls.lock().unwrap().push(Call::Stop {
                    id: id.to_string(),
                    force,
                });
                let mut running = self.running.lock().unwrap();
                let before = running.len();
                running.retain(|(_, running_id)| running_id != id);
                Ok(running.len() != before)
            })
        }

        fn running(&self) -> BoxFuture<'_, Result<Vec<(i32, String)>, ContainerError>> {
            Box::pin(async move { Ok(self.running.lock().unwrap().clone()) })
        }
    }
}
