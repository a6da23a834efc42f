//! Packages from an OCI registry: `docker://HOST/REPOSITORY:TAG` (or
//! `@sha256:HEX`), laid out as `bundlegen package-push` leaves them: the
//! package manifest, its config and content blobs, and the signature
//! manifest under the cosign tag `sha256-<hex>.sig`. Each blob is checked
//! against its digest as it arrives (the content resumes with a range after
//! an interruption), then written into a `.ralf` that the install verifies
//! as any package. What a package is layered on is looked for beside it:
//! repository `<its namespace>/<id>`, tagged by version.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bundlegen_protocol::digest::Sha256Digest;
use bundlegen_protocol::ralf::layout::{Descriptor, Index, Manifest, to_json};
use bundlegen_protocol::ralf::version::{Constraint, Version};
use bundlegen_protocol::ralf::zip::ZipWriter;
use bundlegen_protocol::ralf::{ContentKind, OCI_LAYOUT, media};
use bundlegen_protocol::registry::{Access, RegistryError, RepositoryClient, normalize_host, read_limited};
use reqwest::header;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::{InstallRequest, Source};
use crate::agent::{Agent, InstallError};
use crate::download::ROOM_CHECK_INTERVAL;

/// Largest manifest, config or signature document read.
const MAX_DOCUMENT: u64 = 1 << 20;
/// Largest tag list read.
const MAX_TAGS: u64 = 4 << 20;
const PARTIAL_CONTENT: &str = "content.part";
const PULLED: &str = "package.ralf";

/// What to do about TLS trouble with a registry, in agent.toml's terms.
const REMEDIES: bundlegen_protocol::tls::Remedies = bundlegen_protocol::tls::Remedies {
    plain_http: "the registry speaks plain HTTP: list its host in packages.insecure_registries",
    trust_ca: "set ca_file in agent.toml to the CA that signed the registry's certificate",
};

/// `docker://HOST/REPOSITORY:TAG` or `...@sha256:HEX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageReference {
    pub host: String,
    pub repository: String,
    /// A tag, or `sha256:HEX`.
    pub reference: String,
}

impl FromStr for PackageReference {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("{input:?}: {why} (docker://HOST/REPOSITORY:TAG or @sha256:DIGEST)");
        let rest = input.strip_prefix("docker://").ok_or_else(|| bad("not docker://"))?;
        let (host, path) = rest.split_once('/').ok_or_else(|| bad("no repository"))?;
        // A box names its registry: no Docker Hub shorthand.
        let explicit = host.contains('.') || host.contains(':') || host == "localhost";
        if !explicit || host.contains('@') {
            return Err(bad("the registry's host must be given"));
        }
        let (repository, reference) = match path.split_once('@') {
            Some((repository, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("only sha256 digests"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                    return Err(bad("a digest is 64 lowercase hex digits"));
                }
                (repository, digest.to_string())
            }
            None => {
                let (repository, tag) = path.rsplit_once(':').ok_or_else(|| bad("no tag"))?;
                let tag_ok = (1..=128).contains(&tag.len())
                    && tag
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                    && !tag.starts_with(['.', '-']);
                if !tag_ok {
                    return Err(bad("not a tag"));
                }
                (repository, tag.to_string())
            }
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad("not a repository name"));
        }
        Ok(PackageReference {
            host: host.to_string(),
            repository: repository.to_string(),
            reference,
        })
    }
}

impl std::fmt::Display for PackageReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let separator = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "docker://{}/{}{separator}{}",
            self.host, self.repository, self.reference
        )
    }
}

impl PackageReference {
    /// The repository of package `id` beside this one.
    fn sibling(&self, id: &str, tag: &str) -> PackageReference {
        let repository = match self.repository.rsplit_once('/') {
            Some((namespace, _)) => format!("{namespace}/{id}"),
            None => id.to_string(),
        };
        PackageReference {
            host: self.host.clone(),
            repository,
            reference: tag.to_string(),
        }
    }
}

fn failed(reference: &PackageReference, message: impl std::fmt::Display) -> InstallError {
    InstallError::Registry {
        reference: reference.to_string(),
        message: message.to_string(),
    }
}

fn registry_error(reference: &PackageReference) -> impl Fn(RegistryError) -> InstallError + '_ {
    move |e| match e {
        RegistryError::NotFound(what) => failed(reference, format!("not found: {what}")),
        other => failed(reference, other),
    }
}

/// Checks bytes against a descriptor's size and digest.
fn check(bytes: &[u8], descriptor: &Descriptor) -> Result<(), String> {
    if bytes.len() as u64 != descriptor.size || Sha256Digest::of(bytes) != descriptor.digest {
        return Err(format!("blob {} is not what its descriptor says", descriptor.digest));
    }
    Ok(())
}

impl Agent {
    fn registry_client(&self, reference: &PackageReference) -> Result<RepositoryClient, InstallError> {
        let host = normalize_host(&reference.host);
        let plain_http = self
            .config
            .packages
            .insecure_registries
            .iter()
            .any(|h| normalize_host(h) == host);
        let access = Access {
            credentials: None,
            plain_http,
            token_realms: Vec::new(),
            ca_file: self.config.ca_file.clone(),
            user_agent: concat!("stb-agent/", env!("CARGO_PKG_VERSION")),
            remedies: REMEDIES,
            credentials_hint: "the agent pulls without credentials: the repository must allow anonymous pulls",
        };
        RepositoryClient::new(&reference.host, &reference.repository, access).map_err(registry_error(reference))
    }

    async fn document(
        &self,
        client: &RepositoryClient,
        reference: &PackageReference,
        tail: &str,
        accept: Option<&str>,
    ) -> Result<Vec<u8>, InstallError> {
        let url = client.url(tail);
        let response = client.get(&url, accept).await.map_err(registry_error(reference))?;
        let response = client
            .check_status(&url, response, tail)
            .await
            .map_err(registry_error(reference))?;
        read_limited(response, MAX_DOCUMENT)
            .await
            .map_err(|m| failed(reference, format!("{url}: {m}")))
    }

    async fn blob(
        &self,
        client: &RepositoryClient,
        reference: &PackageReference,
        descriptor: &Descriptor,
    ) -> Result<Vec<u8>, InstallError> {
        if descriptor.size > MAX_DOCUMENT {
            return Err(failed(reference, format!("blob {} is too large", descriptor.digest)));
        }
        let bytes = self
            .document(client, reference, &format!("blobs/{}", descriptor.digest), None)
            .await?;
        check(&bytes, descriptor).map_err(|m| failed(reference, m))?;
        Ok(bytes)
    }

    /// Pulls the package into the install's download directory as a
    /// `.ralf`; returns its path. Progress 0-80 % follows the content.
    pub(super) async fn pull_package(
        &self,
        handle: &str,
        request: &InstallRequest,
        reference: &PackageReference,
        cancel: &watch::Receiver<bool>,
    ) -> Result<PathBuf, InstallError> {
        let dir = self.store.download_dir(&request.app, &request.version);
        let pulled = dir.join(PULLED);
        if pulled.exists() {
            return Ok(pulled);
        }
        let client = self.registry_client(reference)?;
        let manifest_bytes = self
            .document(
                &client,
                reference,
                &format!("manifests/{}", reference.reference),
                Some(media::MANIFEST),
            )
            .await?;
        let manifest_digest = Sha256Digest::of(&manifest_bytes);
        if reference.reference.starts_with("sha256:") && manifest_digest.to_string() != reference.reference {
            return Err(failed(
                reference,
                format!("the registry sent manifest {manifest_digest}"),
            ));
        }
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| failed(reference, format!("not an image manifest: {e}")))?;
        let [content] = &manifest.layers[..] else {
            return Err(failed(reference, "not a package: a package has one layer"));
        };
        if manifest.config.media_type != media::CONFIG || ContentKind::from_media_type(&content.media_type).is_none() {
            return Err(failed(
                reference,
                "not a RALF package (its config or layer is of another type)",
            ));
        }
        let config = self.blob(&client, reference, &manifest.config).await?;
        let mut blobs = vec![
            (manifest.config.clone(), config),
            (Descriptor::of(media::MANIFEST, &manifest_bytes), manifest_bytes),
        ];
        let mut manifests = vec![blobs[1].0.clone()];
        let signature_tag = format!("manifests/sha256-{}.sig", manifest_digest.hex());
        match self
            .document(&client, reference, &signature_tag, Some(media::MANIFEST))
            .await
        {
            Ok(bytes) => {
                let signature: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| failed(reference, format!("the signature manifest: {e}")))?;
                for descriptor in std::iter::once(&signature.config).chain(&signature.layers) {
                    let bytes = self.blob(&client, reference, descriptor).await?;
                    blobs.push((descriptor.clone(), bytes));
                }
                let descriptor = Descriptor::of(media::MANIFEST, &bytes);
                manifests.push(descriptor.clone());
                blobs.push((descriptor, bytes));
            }
            // Unsigned: the install decides whether that will do.
            Err(InstallError::Registry { message, .. }) if message.starts_with("not found") => {}
            Err(other) => return Err(other),
        }
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| failed(reference, format!("{}: {e}", dir.display())))?;
        let content_file = self
            .pull_content(handle, &client, reference, content, &dir, cancel)
            .await?;
        let index = to_json(&Index {
            schema_version: 2,
            media_type: Some(media::INDEX.into()),
            manifests,
            annotations: Default::default(),
        });
        let (staged, target) = (dir.join(format!("{PULLED}.partial")), pulled.clone());
        let content = content.clone();
        let written = self
            .blocking(move |_| -> std::io::Result<()> {
                let mut zip = ZipWriter::new(std::io::BufWriter::new(std::fs::File::create(&staged)?))?;
                zip.add_stored("oci-layout", &mut &OCI_LAYOUT[..], OCI_LAYOUT.len() as u64, 1)?;
                zip.add_stored("index.json", &mut &index[..], index.len() as u64, 1)?;
                for (descriptor, bytes) in &blobs {
                    zip.add_stored(&descriptor.blob_path(), &mut &bytes[..], descriptor.size, 1)?;
                }
                let mut data = std::fs::File::open(&content_file)?;
                // EROFS content is mounted in place: block-aligned.
                zip.add_stored(&content.blob_path(), &mut data, content.size, 4096)?;
                let file = zip.finish()?.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                std::fs::rename(&staged, &target)?;
                std::fs::remove_file(&content_file)
            })
            .await;
        written.map_err(|e| failed(reference, format!("writing the package: {e}")))?;
        Ok(pulled)
    }

    /// The content blob into `dir`, checked against its digest as it
    /// arrives; what an interrupted pull left is resumed with a range.
    async fn pull_content(
        &self,
        handle: &str,
        client: &RepositoryClient,
        reference: &PackageReference,
        content: &Descriptor,
        dir: &Path,
        cancel: &watch::Receiver<bool>,
    ) -> Result<PathBuf, InstallError> {
        let path = dir.join(PARTIAL_CONTENT);
        let io = |e: std::io::Error| failed(reference, format!("{}: {e}", path.display()));
        // Hash what is there already (from an earlier attempt).
        let mut hasher = sha2::Sha256::new();
        let mut have = 0u64;
        if let Ok(mut existing) = std::fs::File::open(&path) {
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let n = existing.read(&mut buffer).map_err(io)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                have += n as u64;
            }
        }
        if have > content.size {
            std::fs::remove_file(&path).map_err(io)?;
            (hasher, have) = (sha2::Sha256::new(), 0);
        }
        let room = self.store.room(self.config.quota.bytes(), 1);
        room.check(have, content.size - have).map_err(InstallError::NoRoom)?;
        let url = client.url(&format!("blobs/{}", content.digest));
        let mut headers = header::HeaderMap::new();
        if have > 0 && have < content.size {
            headers.insert(
                header::RANGE,
                header::HeaderValue::from_str(&format!("bytes={have}-")).expect("a valid header"),
            );
        }
        if have < content.size {
            let response = client
                .send(reqwest::Method::GET, &url, headers, None)
                .await
                .map_err(registry_error(reference))?;
            let mut response = client
                .check_status(&url, response, "the content blob")
                .await
                .map_err(registry_error(reference))?;
            if have > 0 && response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
                // No range: from the start.
                (hasher, have) = (sha2::Sha256::new(), 0);
            }
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(have > 0)
                .write(true)
                .truncate(have == 0)
                .open(&path)
                .await
                .map_err(io)?;
            let mut next_check = have + ROOM_CHECK_INTERVAL;
            let mut cancelled = cancel.clone();
            loop {
                let chunk = tokio::select! {
                    chunk = response.chunk() => chunk.map_err(|e| failed(reference, format!("{url}: {e}")))?,
                    Ok(_) = cancelled.wait_for(|c| *c) => {
                        return Err(InstallError::Cancelled("cancelled while downloading"));
                    }
                };
                let Some(chunk) = chunk else { break };
                have += chunk.len() as u64;
                if have > content.size {
                    return Err(failed(
                        reference,
                        format!("{url}: more than the {} bytes announced", content.size),
                    ));
                }
                if have >= next_check {
                    room.check(have, content.size - have).map_err(InstallError::NoRoom)?;
                    next_check = have + ROOM_CHECK_INTERVAL;
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io)?;
                self.progress(handle, (have * 80 / content.size.max(1)) as u32, "downloading");
            }
            file.flush().await.map_err(io)?;
            file.sync_all().await.map_err(io)?;
        }
        if have != content.size || <[u8; 32]>::from(hasher.finalize()) != *content.digest.as_bytes() {
            // Not worth resuming: start over next time.
            let _ = std::fs::remove_file(&path);
            return Err(InstallError::Integrity {
                what: "the registry's content blob",
                expected: content.digest.to_string(),
                actual: format!("{have} bytes of something else"),
            });
        }
        Ok(path)
    }

    /// Installs of what `reference`'s package needs (`id` → constraint):
    /// each from its repository beside it, the highest tag satisfying.
    pub(super) async fn registry_dependencies(
        &self,
        reference: &PackageReference,
        missing: &[(String, String)],
    ) -> Result<Vec<InstallRequest>, InstallError> {
        let mut requests = Vec::new();
        for (id, range) in missing {
            let sibling = reference.sibling(id, "latest");
            let client = self.registry_client(&sibling)?;
            let tags = match client.tags(MAX_TAGS).await {
                Ok(tags) => tags,
                Err(RegistryError::NotFound(_)) => continue,
                Err(e) => return Err(registry_error(&sibling)(e)),
            };
            let Ok(constraint) = range.parse::<Constraint>() else {
                continue;
            };
            let versions: Vec<(Version, String)> = tags
                .into_iter()
                .filter_map(|tag| Some((tag.parse().ok()?, tag)))
                .collect();
            let Some(best) = constraint.best(versions.iter().map(|(v, _)| v)) else {
                continue;
            };
            let tag = versions
                .iter()
                .find(|(v, _)| v == best)
                .map(|(_, t)| t.clone())
                .expect("found");
            requests.push(InstallRequest {
                app: id.clone(),
                version: tag.clone(),
                source: Source::Registry(reference.sibling(id, &tag).to_string()),
                sha256: None,
                signature: None,
                format: None,
                reinstall: false,
            });
        }
        Ok(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_host_repository_and_tag_or_digest() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        /// (input, Some((host, repository, reference)) if it parses).
        type Case<'a> = (String, Option<(&'a str, &'a str, String)>);
        let table: Vec<Case> = vec![
            (
                "docker://registry.example/rdk/packages/com.example.app:1.0.0".into(),
                Some(("registry.example", "rdk/packages/com.example.app", "1.0.0".into())),
            ),
            (
                format!("docker://127.0.0.1:5000/app@{digest}"),
                Some(("127.0.0.1:5000", "app", digest.clone())),
            ),
            (
                "docker://localhost/app:v1".into(),
                Some(("localhost", "app", "v1".into())),
            ),
            ("docker://library/app:1".into(), None),
            ("docker://registry.example/app".into(), None),
            ("docker://registry.example/App:1".into(), None),
            ("docker://registry.example/app:-x".into(), None),
            ("docker://registry.example/app@sha256:abc".into(), None),
            ("https://registry.example/app:1".into(), None),
        ];
        for (input, expected) in table {
            let parsed = input.parse::<PackageReference>();
            match expected {
                Some((host, repository, reference)) => {
                    let parsed = parsed.unwrap();
                    assert_eq!(
                        (
                            parsed.host.as_str(),
                            parsed.repository.as_str(),
                            parsed.reference.clone()
                        ),
                        (host, repository, reference),
                        "{input}"
                    );
                    assert_eq!(parsed.to_string(), input);
                }
                None => assert!(parsed.is_err(), "{input}"),
            }
        }
        let app: PackageReference = "docker://r.example/rdk/com.example.app:2.0".parse().unwrap();
        assert_eq!(
            app.sibling("os.base", "1.2").to_string(),
            "docker://r.example/rdk/os.base:1.2"
        );
    }
}
