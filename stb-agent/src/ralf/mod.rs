//! Running RALF packages (docs/stb-agent.md, "RALF packages"): what the
//! agent does with a verified `.ralf` once it is installed, apart from the
//! agent's own state.
//!
//! - [`dependencies`]: which installed packages a package is layered on,
//!   and in which order;
//! - [`spec`]: the container's `config.json`, from a base spec and the
//!   packages' configs;
//! - [`instance`]: a running instance's mounts (layers, scratch, overlay)
//!   and bundle, set up and taken down;
//! - [`host`]: the kernel boundary ([`host::Mounter`]): loop devices,
//!   dm-verity, EROFS, tmpfs and overlay mounts; [`loopdev`] and
//!   [`mounts`] are its kernel side;
//! - [`gpu`]: the GPU layer.

pub mod dependencies;
pub mod gpu;
pub mod host;
pub mod instance;
mod loopdev;
mod mounts;
pub mod spec;

/// The file a package is stored as in its version's directory.
pub const PACKAGE_FILE: &str = "package.ralf";
/// Where a package's tar content is extracted, beside it.
pub const CONTENT_DIR: &str = "content";
