//! The agent's errors, as D-Bus errors (`org.rdk.dac.BundleAgent1.Error.*`)
//! with a message, and with LISA's numeric codes where LISA has one.

/// D-Bus error names end with the variant name.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.rdk.dac.BundleAgent1.Error")]
pub enum AgentError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// A parameter is invalid (LISA 1001).
    WrongParams(String),
    /// Too many operations at once (LISA 1002).
    TooManyRequests(String),
    /// That version is installed already (LISA 1003).
    AlreadyInstalled(String),
    NotInstalled(String),
    /// No operation or lock with that handle (LISA 1007).
    WrongHandle(String),
    /// The version is locked (LISA 1009).
    AppLocked(String),
    /// The app is running.
    AppRunning(String),
    /// The app is not running.
    NotRunning(String),
    /// The download failed.
    Download(String),
    /// The archive's sha256 is not the expected one.
    Integrity(String),
    /// The signature is missing or does not verify with a trusted key.
    Signature(String),
    NoSpace(String),
    QuotaExceeded(String),
    /// The archive is not a bundle, or tries to escape, or is too large.
    BadArchive(String),
    /// The generator service refused or failed.
    Service(String),
    /// Dobby refused the bundle or is not there.
    Dobby(String),
    Cancelled(String),
    /// The agent's own storage failed.
    Storage(String),
}

impl AgentError {
    /// LISA's error code (`Executor.h`), or 1 (general) where it has none.
    pub fn code(&self) -> u32 {
        match self {
            AgentError::WrongParams(_) => 1001,
            AgentError::TooManyRequests(_) => 1002,
            AgentError::AlreadyInstalled(_) => 1003,
            AgentError::WrongHandle(_) => 1007,
            AgentError::AppLocked(_) => 1009,
            _ => 1,
        }
    }

    /// The variant's name, as at the end of the D-Bus error name. (Not
    /// `name`: an inherent `name` would shadow `DBusError::name` in the
    /// derived reply, which then sends "AppLocked" as the error name.)
    pub fn kind(&self) -> &'static str {
        match self {
            AgentError::ZBus(_) => "ZBus",
            AgentError::WrongParams(_) => "WrongParams",
            AgentError::TooManyRequests(_) => "TooManyRequests",
            AgentError::AlreadyInstalled(_) => "AlreadyInstalled",
            AgentError::NotInstalled(_) => "NotInstalled",
            AgentError::WrongHandle(_) => "WrongHandle",
            AgentError::AppLocked(_) => "AppLocked",
            AgentError::AppRunning(_) => "AppRunning",
            AgentError::NotRunning(_) => "NotRunning",
            AgentError::Download(_) => "Download",
            AgentError::Integrity(_) => "Integrity",
            AgentError::Signature(_) => "Signature",
            AgentError::NoSpace(_) => "NoSpace",
            AgentError::QuotaExceeded(_) => "QuotaExceeded",
            AgentError::BadArchive(_) => "BadArchive",
            AgentError::Service(_) => "Service",
            AgentError::Dobby(_) => "Dobby",
            AgentError::Cancelled(_) => "Cancelled",
            AgentError::Storage(_) => "Storage",
        }
    }

    pub fn message(&self) -> String {
        match self {
            AgentError::ZBus(e) => e.to_string(),
            AgentError::WrongParams(m)
            | AgentError::TooManyRequests(m)
            | AgentError::AlreadyInstalled(m)
            | AgentError::NotInstalled(m)
            | AgentError::WrongHandle(m)
            | AgentError::AppLocked(m)
            | AgentError::AppRunning(m)
            | AgentError::NotRunning(m)
            | AgentError::Download(m)
            | AgentError::Integrity(m)
            | AgentError::Signature(m)
            | AgentError::NoSpace(m)
            | AgentError::QuotaExceeded(m)
            | AgentError::BadArchive(m)
            | AgentError::Service(m)
            | AgentError::Dobby(m)
            | AgentError::Cancelled(m)
            | AgentError::Storage(m) => m.clone(),
        }
    }
}

impl From<crate::store::StoreError> for AgentError {
    fn from(error: crate::store::StoreError) -> AgentError {
        AgentError::Storage(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_reply_with_their_dbus_names() {
        let call = zbus::message::Message::method_call("/org/rdk/dac/BundleAgent", "Install")
            .destination("org.rdk.dac.BundleAgent")
            .build(&())
            .unwrap();
        let error = AgentError::AppLocked("com.example.app 1.0 is locked".into());
        let reply = zbus::DBusError::create_reply(&error, &call.header()).unwrap();
        let header = reply.header();
        assert_eq!(
            header.error_name().map(|n| n.as_str()),
            Some("org.rdk.dac.BundleAgent1.Error.AppLocked")
        );
        assert_eq!(error.kind(), "AppLocked");
        assert_eq!(error.code(), 1009);
    }
}
