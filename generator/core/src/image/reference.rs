//! Image references in skopeo's transport syntax, which BundleGen users type.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use oci_spec::image::Digest;

use super::ImageError;

/// Default tag when a reference names none.
pub const DEFAULT_TAG: &str = "latest";

/// A tag or a digest inside a repository or layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Tag(String),
    Digest(Digest),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Tag(tag) => write!(f, ":{tag}"),
            Selector::Digest(digest) => write!(f, "@{digest}"),
        }
    }
}

/// Which image of a `docker save` archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveImage {
    /// The only image in the archive.
    Only,
    /// The image tagged `name:tag`.
    Named(String),
    /// The n-th image of the archive's manifest (skopeo's `@N`).
    Index(usize),
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageReference {
    /// `oci:DIR[:TAG|@DIGEST]`: an OCI image layout directory.
    OciLayout { dir: PathBuf, selector: Selector },
    /// `oci-archive:FILE[:TAG]`: a tar of an OCI image layout.
    OciArchive { file: PathBuf, selector: Selector },
    /// `docker-archive:FILE[:NAME:TAG|:@N]`: the output of `docker save`.
    DockerArchive { file: PathBuf, image: ArchiveImage },
    /// `docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]`: a registry.
    Registry {
        /// Host (and port) as written, `docker.io` for Docker Hub.
        host: String,
        repository: String,
        selector: Selector,
    },
}

impl ImageReference {
    /// The registry host (and port) of a `docker://` reference.
    pub fn registry_host(&self) -> Option<&str> {
        match self {
            ImageReference::Registry { host, .. } => Some(host),
            _ => None,
        }
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageReference::OciLayout { dir, selector } => write!(f, "oci:{}{selector}", dir.display()),
            ImageReference::OciArchive { file, selector } => write!(f, "oci-archive:{}{selector}", file.display()),
            ImageReference::DockerArchive { file, image } => match image {
                ArchiveImage::Only => write!(f, "docker-archive:{}", file.display()),
                ArchiveImage::Named(name) => write!(f, "docker-archive:{}:{name}", file.display()),
                ArchiveImage::Index(n) => write!(f, "docker-archive:{}:@{n}", file.display()),
            },
            ImageReference::Registry {
                host,
                repository,
                selector,
            } => write!(f, "docker://{host}/{repository}{selector}"),
        }
    }
}

fn invalid(input: &str, reason: impl Into<String>) -> ImageError {
    ImageError::Reference {
        input: input.to_string(),
        reason: reason.into(),
    }
}

/// Splits `PATH[:TAG]` / `PATH@DIGEST` as skopeo's `oci:` transport does (the
/// path ends at the first `:`, unless the reference is a digest).
fn split_path_selector(input: &str, rest: &str) -> Result<(PathBuf, Selector), ImageError> {
    if let Some(at) = rest.rfind('@') {
        let digest = &rest[at + 1..];
        if digest.contains(':') {
            let digest = Digest::from_str(digest).map_err(|e| invalid(input, format!("bad digest {digest:?}: {e}")))?;
            return Ok((non_empty_path(input, &rest[..at])?, Selector::Digest(digest)));
        }
    }
    match rest.split_once(':') {
        Some((path, tag)) => {
            let tag = if tag.is_empty() { DEFAULT_TAG } else { tag };
            Ok((non_empty_path(input, path)?, Selector::Tag(tag.to_string())))
        }
        None => Ok((non_empty_path(input, rest)?, Selector::Tag(DEFAULT_TAG.to_string()))),
    }
}

fn non_empty_path(input: &str, path: &str) -> Result<PathBuf, ImageError> {
    if path.is_empty() {
        return Err(invalid(input, "no path given"));
    }
    Ok(PathBuf::from(path))
}

fn valid_repository(repository: &str) -> bool {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    !repository.is_empty() && repository.split('/').all(component_ok)
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !tag.starts_with(['.', '-'])
}

fn parse_registry(input: &str, rest: &str) -> Result<ImageReference, ImageError> {
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| invalid(input, "expected docker://HOST/REPOSITORY"))?;
    let (name, digest) = match rest.split_once('@') {
        Some((name, digest)) => {
            let digest = Digest::from_str(digest).map_err(|e| invalid(input, format!("bad digest {digest:?}: {e}")))?;
            (name, Some(digest))
        }
        None => (rest, None),
    };
    // The tag is after the last ':' of the last path component (a ':' before
    // the first '/' is a registry port).
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name[last_slash..].rfind(':') {
        Some(colon) => (&name[..last_slash + colon], Some(&name[last_slash + colon + 1..])),
        None => (name, None),
    };
    let (host, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let repository = if host == "docker.io" && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    if !valid_repository(&repository) {
        return Err(invalid(
            input,
            format!("repository {repository:?} must be lowercase letters, digits and . _ - separated by /"),
        ));
    }
    let selector = match (digest, tag) {
        (Some(digest), _) => Selector::Digest(digest),
        (None, Some(tag)) if valid_tag(tag) => Selector::Tag(tag.to_string()),
        (None, Some(tag)) => return Err(invalid(input, format!("tag {tag:?} is not valid"))),
        (None, None) => Selector::Tag(DEFAULT_TAG.to_string()),
    };
    Ok(ImageReference::Registry {
        host,
        repository,
        selector,
    })
}

impl FromStr for ImageReference {
    type Err = ImageError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (transport, rest) = input.split_once(':').ok_or_else(|| {
            invalid(input, "expected TRANSPORT:REFERENCE, e.g. oci:DIR:TAG, oci-archive:FILE, docker-archive:FILE, docker://REPO:TAG")
        })?;
        match transport {
            "oci" => {
                let (dir, selector) = split_path_selector(input, rest)?;
                Ok(ImageReference::OciLayout { dir, selector })
            }
            "oci-archive" => {
                let (file, selector) = split_path_selector(input, rest)?;
                Ok(ImageReference::OciArchive { file, selector })
            }
            "docker-archive" => {
                let (file, image) = match rest.split_once(':') {
                    None => (rest, ArchiveImage::Only),
                    Some((file, index)) if index.starts_with('@') => {
                        let n = index[1..]
                            .parse()
                            .map_err(|_| invalid(input, format!("{index:?} is not @N, an image index")))?;
                        (file, ArchiveImage::Index(n))
                    }
                    Some((file, name)) if name.contains(':') => (file, ArchiveImage::Named(name.to_string())),
                    Some((file, name)) => (file, ArchiveImage::Named(format!("{name}:{DEFAULT_TAG}"))),
                };
                Ok(ImageReference::DockerArchive {
                    file: non_empty_path(input, file)?,
                    image,
                })
            }
            "docker" => parse_registry(input, rest),
            other => Err(invalid(
                input,
                format!("unknown transport {other:?}; use oci:, oci-archive:, docker-archive: or docker://"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(t: &str) -> Selector {
        Selector::Tag(t.to_string())
    }

    const DIGEST: &str = "sha256:f24166511455d8e6a5951aca0e3a2b26a046cbd1aa510320decdb9c7955eadd9";

    #[test]
    fn parses_every_transport() {
        let digest = Selector::Digest(Digest::from_str(DIGEST).unwrap());
        let cases = [
            (
                "oci:img",
                ImageReference::OciLayout {
                    dir: "img".into(),
                    selector: tag("latest"),
                },
            ),
            (
                "oci:../x/img:v1",
                ImageReference::OciLayout {
                    dir: "../x/img".into(),
                    selector: tag("v1"),
                },
            ),
            (
                "oci:/abs/img:",
                ImageReference::OciLayout {
                    dir: "/abs/img".into(),
                    selector: tag("latest"),
                },
            ),
            (
                &format!("oci:/abs/img@{DIGEST}"),
                ImageReference::OciLayout {
                    dir: "/abs/img".into(),
                    selector: digest.clone(),
                },
            ),
            (
                "oci-archive:/a/b.tar",
                ImageReference::OciArchive {
                    file: "/a/b.tar".into(),
                    selector: tag("latest"),
                },
            ),
            (
                "oci-archive:b.tar:2.0",
                ImageReference::OciArchive {
                    file: "b.tar".into(),
                    selector: tag("2.0"),
                },
            ),
            (
                "docker-archive:/abs/file.tar",
                ImageReference::DockerArchive {
                    file: "/abs/file.tar".into(),
                    image: ArchiveImage::Only,
                },
            ),
            (
                "docker-archive:f.tar:app:1",
                ImageReference::DockerArchive {
                    file: "f.tar".into(),
                    image: ArchiveImage::Named("app:1".into()),
                },
            ),
            (
                "docker-archive:f.tar:app",
                ImageReference::DockerArchive {
                    file: "f.tar".into(),
                    image: ArchiveImage::Named("app:latest".into()),
                },
            ),
            (
                "docker-archive:f.tar:@1",
                ImageReference::DockerArchive {
                    file: "f.tar".into(),
                    image: ArchiveImage::Index(1),
                },
            ),
            (
                "docker://hello-world",
                ImageReference::Registry {
                    host: "docker.io".into(),
                    repository: "library/hello-world".into(),
                    selector: tag("latest"),
                },
            ),
            (
                "docker://registry:5000/img",
                ImageReference::Registry {
                    host: "registry:5000".into(),
                    repository: "img".into(),
                    selector: tag("latest"),
                },
            ),
            (
                "docker://localhost/a/b:v2",
                ImageReference::Registry {
                    host: "localhost".into(),
                    repository: "a/b".into(),
                    selector: tag("v2"),
                },
            ),
            (
                "docker://127.0.0.1:5000/rdk/app:1.0",
                ImageReference::Registry {
                    host: "127.0.0.1:5000".into(),
                    repository: "rdk/app".into(),
                    selector: tag("1.0"),
                },
            ),
            (
                &format!("docker://quay.io/org/app:1@{DIGEST}"),
                ImageReference::Registry {
                    host: "quay.io".into(),
                    repository: "org/app".into(),
                    selector: digest.clone(),
                },
            ),
            (
                "docker://user/app",
                ImageReference::Registry {
                    host: "docker.io".into(),
                    repository: "user/app".into(),
                    selector: tag("latest"),
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<ImageReference>().unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn rejects_bad_references_with_a_reason() {
        for input in [
            "img",
            "oci:",
            "ftp://x",
            "docker:x",
            "docker://UPPER/case",
            "docker://host:5000/app:bad/tag",
            "docker://app@sha256:123",
            "docker-archive:f.tar:@x",
        ] {
            let err = input.parse::<ImageReference>().unwrap_err();
            assert!(err.to_string().contains(input), "{input}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "oci:/a:v1",
            "oci-archive:b.tar:latest",
            "docker-archive:f.tar:app:1",
            "docker://h:5000/r/a:t",
        ] {
            let parsed: ImageReference = input.parse().unwrap();
            assert_eq!(parsed.to_string().parse::<ImageReference>().unwrap(), parsed);
        }
    }
}
