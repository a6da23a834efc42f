//! The bundle generator: OCI image → device-specific OCI bundle.
//!
//! The data flows through one module per step: [`image`] reads an image from
//! any source, [`unpack`] applies its layers into a rootfs, [`runtime_config`]
//! derives the base `config.json`, and [`output`] writes the bundle directory
//! and its archives.

pub mod bundle;
pub mod erofs;
pub mod generate;
pub mod image;

pub mod output;
pub mod package;
pub mod pipeline;
pub mod push;
pub mod rootfs;
pub mod runtime_config;
pub mod stream;
mod time;
pub mod unpack;
