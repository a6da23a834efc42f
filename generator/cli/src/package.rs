//! `bundlegen package`, `verify-package` and `package-info`: RALF packages
//! from images, and checking and reading them.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bundlegen_core::image::{ImageReference, TargetPlatform};
use bundlegen_core::package::config::Overrides;
use bundlegen_core::package::{self, ContentChoice, PackageFormat, SigningFiles, SigningIdentity};
use bundlegen_protocol::digest::from_hex;
use bundlegen_protocol::ralf::ContentKind;
use bundlegen_protocol::ralf::certificate::{self, CertificateInfo};
use bundlegen_protocol::ralf::config::PACKAGE_TYPES;
use bundlegen_protocol::ralf::package::{PackageFile, read_layout, verify, verity_annotations};
use bundlegen_protocol::ralf::signature::Trust;
use clap::{Args, ValueEnum};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{SubjectPublicKeyInfoDer, UnixTime};

use crate::Failure;
use crate::args::{SourceArgs, layer_progress, runtime, unpack_options, warn_all};

fn content_kind(name: &str) -> Result<ContentKind, String> {
    ContentKind::from_name(name).ok_or_else(|| format!("{name:?}: use one of {}", ContentKind::NAMES.join(", ")))
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Zip,
    Tar,
}

#[derive(Args)]
pub struct PackageArgs {
    /// Image reference (see `generate`).
    pub image: String,
    /// The package file to write (`NAME.ralf`).
    pub output: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    /// App metadata (BundleGen's); default: the image's /appmetadata.json.
    #[arg(short = 'a', long = "appmetadata", value_name = "FILE")]
    pub app_metadata: Option<PathBuf>,
    /// Package id instead of the metadata's.
    #[arg(short = 'x', long = "appid", value_name = "ID")]
    pub app_id: Option<String>,
    /// The package config (package spec schema v1), used as it is.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Package type.
    #[arg(long = "type", default_value = "application", value_parser = clap::builder::PossibleValuesParser::new(PACKAGE_TYPES))]
    pub package_type: String,
    /// Package version (1 to 4 numbers); default: the metadata's, else 1.0.0.
    #[arg(long = "package-version", value_name = "VERSION")]
    pub version: Option<String>,
    /// Package name shown to people.
    #[arg(long)]
    pub name: Option<String>,
    /// Content layer: tar, tar+gzip, tar+zstd, erofs.lz4, erofs.zstd or
    /// erofs.nocmpr; default: erofs.lz4 over 1 MiB of content, else tar.
    #[arg(long, value_parser = content_kind, value_name = "KIND")]
    pub content: Option<ContentKind>,
    /// Label lz4 EROFS content with the deprecated `…erofs+dmverity` type,
    /// the only one libralf 1.2 (RDK's reader) mounts.
    #[arg(long)]
    pub legacy_erofs_media_type: bool,
    /// The container: zip (as ralfpack) or tar.
    #[arg(long, value_enum, default_value = "zip")]
    pub package_format: FormatArg,
    /// dm-verity salt in hex (default: derived from the image).
    #[arg(long, value_name = "HEX")]
    pub verity_salt: Option<String>,
    /// Private key (PEM; ECDSA P-256 or RSA) to sign with.
    #[arg(long, value_name = "PEM")]
    pub sign_key: Option<PathBuf>,
    /// The key's certificate (PEM); boxes check it against their CA roots.
    #[arg(long, value_name = "PEM", requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
    /// Intermediate certificates (PEM), repeatable.
    #[arg(long, value_name = "PEM", requires = "sign_cert")]
    pub sign_chain: Vec<PathBuf>,
    /// A PKCS#12 file holding the key, its certificate and the chain
    /// (instead of --sign-key, --sign-cert and --sign-chain; needs `openssl`).
    #[arg(long, visible_alias = "pkcs12", value_name = "P12", conflicts_with = "sign_key")]
    pub sign_pkcs12: Option<PathBuf>,
    /// The PKCS#12 file's passphrase: `env://VAR` (from the environment),
    /// `-` (the first line of stdin) or the passphrase itself (shown to
    /// anyone who lists processes); default: empty.
    #[arg(long, value_name = "X|-|env://VAR", requires = "sign_pkcs12")]
    pub passphrase: Option<String>,
    /// Sign with the key alone, no certificate (verifiable with --key only;
    /// RDK's libralf refuses such packages).
    #[arg(long, requires = "sign_key", conflicts_with = "sign_cert")]
    pub bare_key: bool,
    /// Sign with a certificate that expires within 3 years.
    #[arg(long)]
    pub skip_certificate_expiry_check: bool,
    /// A package this one is layered on (base, runtime; repeatable): what it
    /// provides is left out, and it becomes a dependency.
    #[arg(long, value_name = "PKG.ralf")]
    pub depends_on: Vec<PathBuf>,
    /// The constraint written for each dependency: ^ (^MAJOR.MINOR), ~, =, >= or *.
    #[arg(long, default_value = "^", value_name = "FORM")]
    pub dep_constraint: bundlegen_core::package::dependency::ConstraintForm,
    /// Operating system to pick from a multi-platform image.
    #[arg(long, default_value = "linux")]
    pub os: String,
    /// Architecture to pick (aarch64, arm64, armv7, arm, x86_64, ...); default: this machine's.
    #[arg(long)]
    pub arch: Option<String>,
    /// Architecture variant (v7, v8, ...).
    #[arg(long)]
    pub variant: Option<String>,
    /// Replace the output if it exists.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Unpack the image here instead of next to the output.
    #[arg(long, value_name = "DIR", env = "BUNDLEGEN_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Compression threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `--passphrase` as ralfpack reads it: `env://VAR`, `-` for stdin, or itself.
fn passphrase(given: Option<&str>) -> anyhow::Result<String> {
    match given {
        None => Ok(String::new()),
        Some("-") => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("--passphrase -: reading stdin")?;
            Ok(line.trim_end_matches(['\n', '\r']).to_owned())
        }
        Some(given) => match given.strip_prefix("env://") {
            Some(variable) => std::env::var(variable)
                .with_context(|| format!("--passphrase env://{variable}: not set in the environment")),
            None => Ok(given.to_owned()),
        },
    }
}

pub fn run(args: &PackageArgs) -> Result<(), Failure> {
    let platform = match &args.arch {
        Some(arch) => TargetPlatform::new(&args.os, arch, args.variant.as_deref()),
        None => TargetPlatform {
            os: args.os.clone(),
            ..TargetPlatform::host()
        },
    };
    let reference: ImageReference = args.image.parse()?;
    let signer = match (&args.sign_key, &args.sign_pkcs12) {
        (Some(key), _) => {
            if args.sign_cert.is_none() && !args.bare_key {
                return Err(anyhow::anyhow!(
                    "--sign-key needs --sign-cert (boxes check certificates), or --bare-key to sign without one"
                )
                .into());
            }
            let files = SigningFiles {
                key: key.clone(),
                certificate: args.sign_cert.clone(),
                chain: args.sign_chain.clone(),
                skip_expiry_check: args.skip_certificate_expiry_check,
            };
            Some(SigningIdentity::load(&files, now())?)
        }
        (None, Some(pkcs12)) => {
            let passphrase = passphrase(args.passphrase.as_deref())?;
            Some(SigningIdentity::load_pkcs12(
                pkcs12,
                &passphrase,
                args.skip_certificate_expiry_check,
                now(),
            )?)
        }
        (None, None) => None,
    };
    let verity_salt = match &args.verity_salt {
        Some(hex) => Some(
            from_hex(hex)
                .filter(|salt| salt.len() <= 256)
                .context("--verity-salt: at most 256 bytes in hex")?,
        ),
        None => None,
    };
    let request = package::Request {
        image: &reference,
        platform: &platform,
        output: &args.output,
        work_dir: args.work_dir.as_deref(),
        app_metadata: args.app_metadata.as_deref(),
        app_id: args.app_id.as_deref(),
        config: args.config.as_deref(),
        overrides: Overrides {
            version: args.version.clone(),
            package_type: args.package_type.clone(),
            name: args.name.clone(),
        },
        content: args.content.map_or(ContentChoice::Auto, ContentChoice::Kind),
        legacy_erofs_media_type: args.legacy_erofs_media_type,
        format: match args.package_format {
            FormatArg::Zip => PackageFormat::Zip,
            FormatArg::Tar => PackageFormat::Tar,
        },
        verity_salt,
        signer: signer.as_ref(),
        depends_on: &args.depends_on,
        dependency_constraint: args.dep_constraint,
        registry: &args.source.registry.options(reference.registry_host())?,
        unpack: &unpack_options(&args.source),
        replace: args.yes,
        threads: args.threads,
    };
    let packaged = runtime()?.block_on(package::package(&request, layer_progress()))?;
    warn_all(&packaged.warnings);
    if let Some(dedup) = &packaged.dedup {
        for note in &dedup.notes {
            tracing::debug!("{note}");
        }
        let dependencies: Vec<String> = packaged
            .config
            .dependencies
            .iter()
            .map(|(id, range)| format!("{id} {range}"))
            .collect();
        println!(
            "left out {} files and {} libraries the dependencies provide ({} bytes); depends on {}",
            dedup.files,
            dedup.libraries,
            dedup.bytes,
            dependencies.join(", ")
        );
    }
    println!(
        "{} {} {} bytes",
        packaged.path.display(),
        packaged.sha256,
        packaged.size
    );
    println!(
        "{} {} ({}), {} content of {} bytes, {}",
        packaged.config.id,
        packaged.config.version,
        packaged.config.package_type,
        content_name(packaged.content),
        packaged.content_size,
        if packaged.signed { "signed" } else { "unsigned" }
    );
    Ok(())
}

fn content_name(kind: ContentKind) -> String {
    kind.media_type()
        .trim_start_matches(bundlegen_protocol::ralf::media::CONTENT_PREFIX)
        .to_string()
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The package.
    pub package: PathBuf,
    /// CA roots (PEM) the signer's certificate must chain to.
    #[arg(long, value_name = "PEM", required_unless_present = "key", conflicts_with = "key")]
    pub ca_roots: Option<PathBuf>,
    /// Check validity periods at the signer's certificate's start, not now.
    #[arg(long, requires = "ca_roots")]
    pub no_check_time: bool,
    /// A public key (PEM) to check the signature with instead of certificates.
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
}

pub fn verify_package(args: &VerifyArgs) -> Result<(), Failure> {
    let trust = match (&args.ca_roots, &args.key) {
        (Some(roots), _) => {
            let text = std::fs::read(roots).with_context(|| roots.display().to_string())?;
            Trust::Roots {
                roots: certificate::from_pem(&text).map_err(|e| anyhow::anyhow!("{}: {e}", roots.display()))?,
                check_time: !args.no_check_time,
            }
        }
        (None, Some(key)) => Trust::Key(
            SubjectPublicKeyInfoDer::from_pem_file(key)
                .map_err(|e| anyhow::anyhow!("{}: not a PEM public key: {e}", key.display()))?,
        ),
        (None, None) => return Err(anyhow::anyhow!("pass --ca-roots PEM or --key PEM").into()),
    };
    let package = PackageFile::open(&args.package)?;
    let verified = verify(&package, &trust, UnixTime::now(), true)
        .with_context(|| format!("{}: verification failed", args.package.display()))?;
    warn_all(&verified.layout.warnings);
    let by = verified
        .signer
        .map_or_else(|| "the given key".to_string(), |s| format!("{:?}", s.subject));
    println!(
        "{}: {} {} verified, signed by {by}",
        args.package.display(),
        verified.layout.config.id,
        verified.layout.config.version
    );
    Ok(())
}

#[derive(Args)]
pub struct InfoArgs {
    /// The package.
    pub package: PathBuf,
    /// Print JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

fn describe_signer(pem: Option<&str>) -> Option<CertificateInfo> {
    let der = certificate::from_pem(pem?.as_bytes()).ok()?.into_iter().next()?;
    certificate::describe(&der).ok()
}

pub fn package_info(args: &InfoArgs) -> Result<(), Failure> {
    let package = PackageFile::open(&args.package)?;
    let layout = read_layout(&package).with_context(|| args.package.display().to_string())?;
    let signer = layout
        .signature
        .as_ref()
        .and_then(|(_, m)| m.layers.first())
        .and_then(|l| describe_signer(l.annotation(bundlegen_protocol::ralf::media::CERTIFICATE)));
    let verity = layout
        .content_kind
        .is_erofs()
        .then(|| verity_annotations(&layout.content))
        .transpose()?;
    if args.json {
        let info = serde_json::json!({
            "config": layout.config,
            "manifest": layout.manifest_descriptor.digest,
            "content": {
                "mediaType": layout.content.media_type,
                "digest": layout.content.digest,
                "size": layout.content.size,
                "verity": verity.as_ref().map(|v| serde_json::json!({
                    "rootHash": bundlegen_protocol::digest::to_hex(&v.root_hash),
                    "offset": v.offset,
                })),
            },
            "signed": layout.signature.is_some(),
            "signer": signer.as_ref().map(|s| serde_json::json!({
                "subject": s.subject, "issuer": s.issuer, "notBefore": s.not_before, "notAfter": s.not_after,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&info).expect("JSON"));
        return Ok(());
    }
    let config = &layout.config;
    println!("{} {} ({})", config.id, config.version, config.package_type);
    if let Some(name) = &config.version_name {
        println!("  version name: {name}");
    }
    println!("  entry point: {} {}", config.entry_point, config.entry_args.join(" "));
    for (id, range) in &config.dependencies {
        println!("  depends on: {id} {range}");
    }
    for permission in &config.permissions {
        println!("  permission: {permission}");
    }
    println!(
        "  content: {} bytes, {}",
        layout.content.size, layout.content.media_type
    );
    if let Some(verity) = &verity {
        println!(
            "  dm-verity: root hash {}, tree at {}",
            bundlegen_protocol::digest::to_hex(&verity.root_hash),
            verity.offset
        );
    }
    println!("  manifest: {}", layout.manifest_descriptor.digest);
    match (&layout.signature, &signer) {
        (None, _) => println!("  unsigned"),
        (Some(_), Some(signer)) => println!(
            "  signed by {} (issued by {}; valid until {})",
            signer.subject,
            signer.issuer,
            bundlegen_protocol::civil::format_utc(signer.not_after)
        ),
        (Some(_), None) => println!("  signed with a bare key (no certificate)"),
    }
    warn_all(&layout.warnings);
    Ok(())
}

/// A `docker://HOST/REPO:TAG` (or `@sha256:...`) reference: host, repository, tag or digest.
fn registry_reference(text: &str) -> Result<(ImageReference, String, String, String), Failure> {
    let reference: ImageReference = text.parse()?;
    let ImageReference::Registry {
        host,
        repository,
        selector,
    } = &reference
    else {
        return Err(anyhow::anyhow!("{text}: packages go to registries: give docker://HOST/REPO:TAG").into());
    };
    let tag = match selector {
        bundlegen_core::image::Selector::Tag(tag) => tag.clone(),
        bundlegen_core::image::Selector::Digest(digest) => digest.to_string(),
    };
    let (host, repository) = (host.clone(), repository.clone());
    Ok((reference, host, repository, tag))
}

#[derive(Args)]
pub struct PushArgs {
    /// The package.
    pub package: PathBuf,
    /// Where: docker://HOST[:PORT]/REPO:TAG.
    pub destination: String,
    #[command(flatten)]
    pub registry: crate::args::RegistryArgs,
}

pub fn package_push(args: &PushArgs) -> Result<(), Failure> {
    let (reference, host, repository, tag) = registry_reference(&args.destination)?;
    let options = args.registry.options(reference.registry_host())?;
    let pushed = runtime()?.block_on(bundlegen_core::package::registry::push(
        &args.package,
        &host,
        &repository,
        &tag,
        &options,
    ))?;
    println!(
        "{} {} pushed as {}",
        args.package.display(),
        pushed.manifest,
        args.destination
    );
    if let Some(signature) = pushed.signature_tag {
        println!("signature: docker://{host}/{repository}:{signature}");
    }
    Ok(())
}

#[derive(Args)]
pub struct PullArgs {
    /// What: docker://HOST[:PORT]/REPO:TAG or @sha256:DIGEST.
    pub source: String,
    /// The package file to write.
    pub output: PathBuf,
    #[command(flatten)]
    pub registry: crate::args::RegistryArgs,
    /// The container: zip or tar.
    #[arg(long, value_enum, default_value = "zip")]
    pub package_format: FormatArg,
    /// Replace the output if it exists.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

pub fn package_pull(args: &PullArgs) -> Result<(), Failure> {
    let (reference, host, repository, tag) = registry_reference(&args.source)?;
    let options = args.registry.options(reference.registry_host())?;
    let format = match args.package_format {
        FormatArg::Zip => PackageFormat::Zip,
        FormatArg::Tar => PackageFormat::Tar,
    };
    let pulled = runtime()?.block_on(bundlegen_core::package::registry::pull(
        &host,
        &repository,
        &tag,
        &args.output,
        format,
        args.yes,
        &options,
    ))?;
    println!(
        "{} {} {} bytes ({}; manifest {})",
        args.output.display(),
        pulled.sha256,
        pulled.size,
        if pulled.signed { "signed" } else { "unsigned" },
        pulled.manifest
    );
    Ok(())
}
