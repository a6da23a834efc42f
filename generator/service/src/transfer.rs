//! `bundlegen service export` and `import`: a deployment's records and
//! signing key in one file, to move it to another database or host. The
//! file holds token hashes and the private key: it is written 0600.

use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::signing::Signer;
use crate::store::{Records, Store};
use crate::{ServiceConfig, ServiceError};

/// What an export file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    pub records: Records,
    /// The signing key (PKCS#8, base64), so boxes keep trusting bundles.
    pub signing_key: Option<String>,
}

/// What an import brought in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub platforms: usize,
    pub versions: usize,
    pub apps: usize,
    pub tokens: usize,
    pub key_written: bool,
}

/// Reads the deployment `config` describes (its database must exist).
pub async fn export(config: &ServiceConfig) -> Result<Deployment, ServiceError> {
    if config.database.is_none() && !config.data_dir.join("bundlegen.db").exists() {
        return Err(ServiceError::Config(format!(
            "no database in {} (give --data-dir, or --database)",
            config.data_dir.display()
        )));
    }
    let store = Store {
        db: Db::open(&config.database_url()).await?,
    };
    let key_path = config.signing_key_path();
    let signing_key = match key_path.exists() {
        true => {
            let bytes = std::fs::read(&key_path).map_err(|source| ServiceError::Io {
                what: key_path.display().to_string(),
                source,
            })?;
            // Checked, so an export never carries a key that would not load.
            Signer::load(&key_path)?;
            Some(bundlegen_protocol::signature::base64_encode(&bytes))
        }
        false => None,
    };
    Ok(Deployment {
        records: store.export_records().await?,
        signing_key,
    })
}

/// Writes `deployment` into the (empty) deployment `config` describes, and
/// its key where `config` keeps one (an existing key must be the same).
pub async fn import(config: &ServiceConfig, deployment: &Deployment) -> Result<Imported, ServiceError> {
    if deployment.records.format != crate::store::RECORDS_FORMAT {
        return Err(ServiceError::Config(format!(
            "not an export this version reads: format {:?}",
            deployment.records.format
        )));
    }
    let key = match &deployment.signing_key {
        Some(text) => Some(
            bundlegen_protocol::signature::base64_decode(text)
                .ok_or_else(|| ServiceError::Config("signingKey: not base64".into()))?,
        ),
        None => None,
    };
    let key_path = config.signing_key_path();
    if let Some(key) = &key
        && key_path.exists()
        && std::fs::read(&key_path).ok().as_deref() != Some(key.as_slice())
    {
        return Err(ServiceError::Config(format!(
            "{} holds another signing key: move it away first (boxes trust the exported one)",
            key_path.display()
        )));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServiceError::Io {
        what: config.data_dir.display().to_string(),
        source,
    })?;
    let store = Store {
        db: Db::open(&config.database_url()).await?,
    };
    if !store.is_empty().await? {
        return Err(ServiceError::Config(
            "the database already holds platforms, apps or tokens: import into a new one".into(),
        ));
    }
    store.import_records(&deployment.records).await?;
    let key_written = match &key {
        Some(key) if !key_path.exists() => {
            bundlegen_protocol::fsutil::write_file_atomic(&key_path, key, 0o600).map_err(|source| {
                ServiceError::Io {
                    what: key_path.display().to_string(),
                    source,
                }
            })?;
            Signer::load(&key_path)?;
            true
        }
        _ => false,
    };
    let records = &deployment.records;
    Ok(Imported {
        platforms: records.platforms.len(),
        versions: records.platforms.iter().map(|p| p.versions.len()).sum(),
        apps: records.apps.len(),
        tokens: records.tokens.len(),
        key_written,
    })
}
