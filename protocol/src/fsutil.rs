//! Small file-writing helpers every component needs: a file is either
//! complete or absent, never half-written.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `contents` to `path` through a temporary file in the same
/// directory: written, synced, renamed over `path`, then the directory synced.
pub fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut partial = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempfile_in(parent)?;
    partial.write_all(contents)?;
    partial.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    partial.as_file().sync_all()?;
    partial.persist(path).map_err(|e| e.error)?;
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_file_atomic(&path, b"first", 0o600).unwrap();
        write_file_atomic(&path, b"second", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no/such/dir/file");
        assert!(write_file_atomic(&missing, b"x", 0o644).is_err());
    }
}
