//! Installing RALF packages: what step 3 checks of a `.ralf` (its
//! signature against the configured CA roots, every blob, its config, that
//! it is the app version asked for and built for this box), and the
//! dependencies it is layered on, resolved against installed packages and
//! installed first from the same source when they are missing.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bundlegen_protocol::probe::Abi;
use bundlegen_protocol::ralf::config::{PLATFORM_KEY, PackageConfig};
use bundlegen_protocol::ralf::package::{self, PackageError, PackageFile, Verified};
use bundlegen_protocol::ralf::signature::Trust;
use bundlegen_protocol::ralf::{ContentKind, certificate, verity};
use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};

use super::fetch::ServiceBundle;
use super::{InstallRequest, Source};
use crate::agent::{Agent, InstallError, check_app, check_version};
use crate::download::discard;
use crate::ralf::dependencies::{self, MAX_LAYERS};
use crate::store::PackageRecord;

/// A package that passed step 3.
#[derive(Debug, Clone)]
pub(super) struct VerifiedPackage {
    pub config: PackageConfig,
    pub content: ContentKind,
    /// Its record, dependencies not yet resolved.
    pub record: PackageRecord,
}

/// What a package is checked against.
pub(super) struct PackagePolicy {
    pub ca_roots: PathBuf,
    pub allow_unsigned: bool,
    pub box_abi: Option<Abi>,
}

/// Whether a file is a RALF package: a ZIP, or a tar holding an OCI
/// layout (bundles are compressed tars, ipks or plain tars without one).
pub fn is_package(path: &Path) -> bool {
    let mut head = [0u8; 4];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    if file.read_exact(&mut head).is_err() {
        return false;
    }
    if head == [b'P', b'K', 3, 4] {
        return true;
    }
    PackageFile::open(path).is_ok_and(|p| p.location("oci-layout").is_some())
}

/// The id and version a package's config says, for pushes (nothing is
/// trusted here: the install verifies it all).
pub fn package_identity(path: &Path) -> Result<(String, String), PackageError> {
    let layout = package::read_layout(&PackageFile::open(path)?)?;
    Ok((layout.config.id, layout.config.version))
}

/// Every certificate in the PEM files of `dir` (libpackage trusts each
/// one in its certificate directory).
pub fn load_roots(dir: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut roots = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| certificate::from_pem(&pem))
        {
            Ok(certificates) => roots.extend(certificates),
            Err(e) => tracing::warn!("{}: not used as a CA root: {e}", path.display()),
        }
    }
    Ok(roots)
}

/// Step 3 for a package: verified in ralfpack's order (signature, then
/// every blob), then checked to be `app` `version` and for this box. EROFS
/// content is checked against its hash tree later, when it is mounted.
pub(super) fn verify_package(
    archive: &Path,
    app: &str,
    version: &str,
    policy: &PackagePolicy,
) -> Result<VerifiedPackage, InstallError> {
    let failed = |source: PackageError| InstallError::Package {
        archive: archive.to_path_buf(),
        source,
    };
    let file = PackageFile::open(archive).map_err(failed)?;
    let layout = package::read_layout(&file).map_err(failed)?;
    let verified = if layout.signature.is_none() {
        if !policy.allow_unsigned {
            return Err(failed(PackageError::Unsigned));
        }
        file.check_blob(&layout.manifest.config).map_err(failed)?;
        file.check_blob(&layout.content).map_err(failed)?;
        Verified { layout, signer: None }
    } else {
        let roots = load_roots(&policy.ca_roots)
            .map_err(|e| InstallError::Signature(format!("the CA roots (packages.ca_roots): {e}")))?;
        if roots.is_empty() {
            return Err(InstallError::Signature(format!(
                "no CA certificates in {} (packages.ca_roots) to check the package's signer against",
                policy.ca_roots.display()
            )));
        }
        let trust = Trust::Roots {
            roots,
            check_time: true,
        };
        package::verify(&file, &trust, UnixTime::now(), false).map_err(failed)?
    };
    let config = verified.layout.config;
    for (field, expected, actual) in [("id", app, &config.id), ("version", version, &config.version)] {
        if expected != actual {
            return Err(InstallError::PackageMismatch {
                archive: archive.to_path_buf(),
                field,
                expected: expected.to_string(),
                actual: actual.clone(),
            });
        }
    }
    let problems = config.installable_problems();
    if !problems.is_empty() {
        let problems: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.path, p.reason)).collect();
        return Err(InstallError::PackageConfig {
            archive: archive.to_path_buf(),
            problems: problems.join("; "),
        });
    }
    check_platform(archive, &config, policy.box_abi)?;
    let content = verified.layout.content_kind;
    if content.is_erofs() {
        check_mountable(&file, &verified.layout.content).map_err(failed)?;
    }
    Ok(VerifiedPackage {
        record: PackageRecord {
            package_type: config.package_type.clone(),
            content: content_name(content),
            dependencies: BTreeMap::new(),
            signer: verified.signer.map(|s| s.subject).unwrap_or_default(),
            manifest: verified.layout.manifest_descriptor.digest.to_string(),
        },
        config,
        content,
    })
}

/// A content kind as records and `GetPackageInfo` show it (`erofs.lz4+dmverity`, `tar+gzip`).
pub fn content_name(kind: ContentKind) -> String {
    let media_type = kind.media_type();
    match media_type.strip_prefix(bundlegen_protocol::ralf::media::CONTENT_PREFIX) {
        Some(name) => name.to_string(),
        None => "empty".to_string(),
    }
}

/// Refuses a package built for an ABI this box cannot run (its config's
/// `urn:rdk:config:platform`).
fn check_platform(archive: &Path, config: &PackageConfig, box_abi: Option<Abi>) -> Result<(), InstallError> {
    let (Some(platform), Some(this_box)) = (config.configuration.get(PLATFORM_KEY), box_abi) else {
        return Ok(());
    };
    let Some(arch) = platform["architecture"].as_str() else {
        return Ok(());
    };
    let Some(abi) = Abi::for_arch(arch, platform["variant"].as_str()) else {
        return Ok(());
    };
    if this_box.can_load(&abi) {
        return Ok(());
    }
    Err(InstallError::OtherArchitecture {
        archive: archive.to_path_buf(),
        bundle: abi.arch_name(),
        from: format!("{arch}, from its package config"),
        this_box: this_box.arch_name(),
    })
}

/// EROFS content is mounted where it lies: stored, 4096-aligned, with
/// sound dm-verity annotations.
fn check_mountable(
    file: &PackageFile,
    content: &bundlegen_protocol::ralf::layout::Descriptor,
) -> Result<(), PackageError> {
    package::verity_annotations(content)?;
    let location = file
        .location(&content.blob_path())
        .ok_or_else(|| PackageError::Content("missing from the package".into()))?;
    if !location.stored || !location.offset.is_multiple_of(verity::BLOCK) {
        return Err(PackageError::Content(
            "EROFS content must be stored uncompressed at a 4096-byte boundary to be mounted in place".into(),
        ));
    }
    Ok(())
}

impl Agent {
    pub(super) fn package_policy(&self) -> PackagePolicy {
        PackagePolicy {
            ca_roots: self.config.packages.ca_roots.clone(),
            allow_unsigned: self.config.allow_unsigned,
            box_abi: self.box_abi,
        }
    }

    /// The installed versions a package is layered on; missing ones are
    /// installed first when the source `offered` them.
    pub(super) async fn resolve_dependencies(
        self: &Arc<Self>,
        handle: &str,
        request: &InstallRequest,
        package: &VerifiedPackage,
        offered: &[ServiceBundle],
        cancel: &watch::Receiver<bool>,
        depth: usize,
    ) -> Result<BTreeMap<String, String>, InstallError> {
        let wanted = &package.config.dependencies;
        let mut resolution = dependencies::resolve(wanted, &self.store.package_versions());
        if resolution.missing.is_empty() {
            return Ok(resolution.pinned);
        }
        let name = format!("{} {}", request.app, request.version);
        let unavailable = |missing: Vec<String>, reason: &str| InstallError::MissingDependencies {
            package: name.clone(),
            missing,
            reason: reason.to_string(),
        };
        if depth >= MAX_LAYERS {
            return Err(unavailable(resolution.missing, "is more than layers go deep"));
        }
        let missing: Vec<(String, String)> = wanted
            .iter()
            .filter(|(id, _)| !resolution.pinned.contains_key(*id))
            .map(|(id, range)| (id.clone(), range.clone()))
            .collect();
        let installs = match &request.source {
            Source::Registry(reference) => {
                let reference = reference.parse().map_err(crate::agent::InvalidParams)?;
                self.registry_dependencies(&reference, &missing).await?
            }
            _ if !offered.is_empty() => {
                // The service offers exactly the versions it resolved.
                let server = self.http.server().unwrap_or_default().to_string();
                let wanted_ids: Vec<&String> = missing.iter().map(|(id, _)| id).collect();
                offered
                    .iter()
                    .filter(|o| {
                        o.dependency
                            .as_deref()
                            .and_then(|d| d.split_once('@'))
                            .is_some_and(|(app, _)| wanted_ids.iter().any(|id| *id == app))
                    })
                    .map(|o| {
                        o.request(&server)
                            .ok_or_else(|| InstallError::Service("a dependency that is not APP@VERSION".into()))
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            Source::Service => return Err(unavailable(resolution.missing, "the service did not offer")),
            Source::Url(_) => {
                return Err(unavailable(
                    resolution.missing,
                    "is not installed (install it first: a URL gives no dependencies)",
                ));
            }
            Source::File(_) => {
                return Err(unavailable(
                    resolution.missing,
                    "is not installed (push or install it first)",
                ));
            }
        };
        for dependency in installs {
            self.install_dependency(handle, dependency, offered, cancel, depth + 1)
                .await?;
        }
        resolution = dependencies::resolve(wanted, &self.store.package_versions());
        if !resolution.missing.is_empty() {
            return Err(unavailable(
                resolution.missing,
                "its source does not have in a version that satisfies",
            ));
        }
        Ok(resolution.pinned)
    }

    /// Installs a package another one is layered on, inside that one's
    /// operation (its handle and slot; the dependency's own app lock).
    async fn install_dependency(
        self: &Arc<Self>,
        handle: &str,
        request: InstallRequest,
        offered: &[ServiceBundle],
        cancel: &watch::Receiver<bool>,
        depth: usize,
    ) -> Result<(), InstallError> {
        check_app(&request.app)?;
        check_version(&request.version)?;
        let app_lock = self.app_lock(&request.app);
        let _same_app = app_lock.lock().await;
        let installed = |agent: &Agent| {
            agent
                .store
                .app(&request.app)
                .is_some_and(|r| r.versions.contains_key(&request.version))
        };
        if installed(self) {
            return Ok(());
        }
        tracing::info!(handle, "installing {} {}, a dependency", request.app, request.version);
        let result = Box::pin(self.install_steps(handle, &request, cancel, offered, depth)).await;
        let download_dir = self.store.download_dir(&request.app, &request.version);
        self.blocking(move |_| discard(&download_dir)).await;
        result.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_are_told_from_bundles_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("renamed.tar.gz");
        std::fs::write(&zip, b"PK\x03\x04rest").unwrap();
        assert!(is_package(&zip), "a ZIP whatever its name");
        let gz = dir.path().join("app.ralf");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(!is_package(&gz));
        let bundle_tar = dir.path().join("bundle.tar");
        std::fs::write(
            &bundle_tar,
            bundlegen_fixtures::tar::archive(&[bundlegen_fixtures::tar::RawEntry::file("config.json", b"{}")]),
        )
        .unwrap();
        assert!(!is_package(&bundle_tar), "a plain tar without oci-layout is a bundle");
        let package_tar = dir.path().join("package.tar");
        std::fs::write(
            &package_tar,
            bundlegen_fixtures::tar::archive(&[bundlegen_fixtures::tar::RawEntry::file(
                "oci-layout",
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )]),
        )
        .unwrap();
        assert!(is_package(&package_tar));
    }
}
