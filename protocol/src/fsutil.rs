//! Small file-writing helpers every component needs: a file is either
//! complete or absent, never half-written.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `contents` to `path` through a temporary file in the same
/// directory: written, synced, renamed over `path`, then the directory synced.
/// A symlink at `path` keeps pointing at the new file. A device, FIFO or
/// terminal there (`/dev/null`, `/dev/stdout`) is written into instead: it
/// cannot be replaced, and must not be.
pub fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    if fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return OpenOptions::new().write(true).open(path)?.write_all(contents);
    }
    let path: Cow<Path> = if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        Cow::Owned(fs::canonicalize(path)?)
    } else {
        Cow::Borrowed(path)
    };
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
    partial.persist(&path).map_err(|e| e.error)?;
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, symlink};

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

    #[test]
    fn symlinks_keep_pointing_at_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.json");
        fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.json");
        symlink("real.json", &link).unwrap();
        write_file_atomic(&link, b"new", 0o644).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"new");
    }

    /// `-o /dev/null` must not replace the device node with a file.
    #[test]
    fn special_files_are_written_into_not_replaced() {
        write_file_atomic(Path::new("/dev/null"), b"discarded", 0o644).unwrap();
        assert!(fs::metadata("/dev/null").unwrap().file_type().is_char_device());
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(fifo).unwrap())
        };
        write_file_atomic(&fifo, b"through the pipe", 0o644).unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }
}
