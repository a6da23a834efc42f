//! Inventories the shared libraries (and, later, device nodes) of a set-top
//! box or of any root filesystem, so nobody writes library lists by hand.
//!
//! The generator uses the same code to inventory an app image, so both sides
//! of library matching are read by one set of rules.

pub mod elf;
pub mod loader;
