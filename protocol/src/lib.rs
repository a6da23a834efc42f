//! Types and wire formats shared by the bundle generator, the platform probe
//! and the on-box agent. Kept small: the agent links it on the set-top box.

pub mod archive;
pub mod digest;
pub mod idmap;
pub mod manifest;
pub mod root;
pub mod runtime;
pub mod tar_read;
