//! The client side of Dobby (`org.rdk.dobby` on the system bus,
//! `/org/rdk/dobby`, `org.rdk.dobby.ctrl1`), with the care its quirks need:
//! containers are keyed on their id (descriptors are recycled and repeat
//! after a Dobby restart) and mapped with `List`; `-1` carries no reason;
//! calls wait at least 25 s (a start runs crun and every hook first);
//! GetInfo is never called (it crashes Dobby on plugin-less containers).

use std::path::Path;

use futures_util::StreamExt;

use crate::agent::{BoxFuture, ContainerError, Containers, Event};

#[zbus::proxy(
    interface = "org.rdk.dobby.ctrl1",
    default_service = "org.rdk.dobby",
    default_path = "/org/rdk/dobby"
)]
pub trait DobbyCtrl {
    /// The 3-argument form: id, absolute bundle path, no file descriptors.
    fn start_from_bundle(&self, id: &str, bundle_path: &str, files: Vec<zbus::Fd<'_>>) -> zbus::Result<i32>;
    fn stop(&self, descriptor: i32, force: bool) -> zbus::Result<bool>;
    fn get_state(&self, descriptor: i32) -> zbus::Result<i32>;
    fn list(&self) -> zbus::Result<(Vec<i32>, Vec<String>)>;
    #[zbus(signal)]
    fn started(&self, descriptor: i32, id: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn stopped_with_status(&self, descriptor: i32, id: String, status: i32) -> zbus::Result<()>;
}

/// Dobby, over a D-Bus connection.
pub struct Dobby {
    proxy: DobbyCtrlProxy<'static>,
}

impl Dobby {
    pub async fn new(connection: &zbus::Connection) -> Result<Dobby, ContainerError> {
        Ok(Dobby {
            proxy: DobbyCtrlProxy::new(connection).await.map_err(ContainerError::Dobby)?,
        })
    }

    /// Forwards Dobby's Started and StoppedWithStatus signals as events.
    pub async fn forward_signals(&self, emit: impl Fn(Event) + Send + 'static) -> Result<(), ContainerError> {
        let mut started = self.proxy.receive_started().await.map_err(ContainerError::Dobby)?;
        let mut stopped = self
            .proxy
            .receive_stopped_with_status()
            .await
            .map_err(ContainerError::Dobby)?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(signal) = started.next() => {
                        if let Ok(args) = signal.args() {
                            emit(Event::Started { app: args.id, descriptor: args.descriptor });
                        }
                    }
                    Some(signal) = stopped.next() => {
                        if let Ok(args) = signal.args() {
                            emit(Event::Stopped { app: args.id, status: args.status });
                        }
                    }
                    else => break,
                }
            }
        });
        Ok(())
    }

    async fn descriptor_of(&self, id: &str) -> Result<Option<i32>, ContainerError> {
        let (descriptors, ids) = self.proxy.list().await.map_err(ContainerError::Dobby)?;
        Ok(descriptors.into_iter().zip(ids).find(|(_, i)| i == id).map(|(d, _)| d))
    }
}

impl Containers for Dobby {
    fn start<'a>(&'a self, id: &'a str, bundle: &'a Path) -> BoxFuture<'a, Result<i32, ContainerError>> {
        Box::pin(async move {
            let path = bundle
                .to_str()
                .ok_or_else(|| ContainerError::BundlePath(bundle.to_path_buf()))?;
            self.proxy
                .start_from_bundle(id, path, Vec::new())
                .await
                .map_err(ContainerError::Dobby)
        })
    }

    fn stop<'a>(&'a self, id: &'a str, force: bool) -> BoxFuture<'a, Result<bool, ContainerError>> {
        Box::pin(async move {
            match self.descriptor_of(id).await? {
                Some(descriptor) => self.proxy.stop(descriptor, force).await.map_err(ContainerError::Dobby),
                None => Ok(false),
            }
        })
    }

    fn running(&self) -> BoxFuture<'_, Result<Vec<(i32, String)>, ContainerError>> {
        Box::pin(async move {
            let (descriptors, ids) = self.proxy.list().await.map_err(ContainerError::Dobby)?;
            Ok(descriptors.into_iter().zip(ids).collect())
        })
    }
}
