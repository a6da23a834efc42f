//! Access to the files of a local image store: an OCI layout directory, or a
//! tar archive of a layout or of `docker save` output (read in place, never
//! extracted).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use bundlegen_protocol::root::{RootDir, Symlinks, clean_path};
use bundlegen_protocol::tar_read::{TarKind, TarReader};

use super::ImageError;

/// A readable file of an image store, with its size.
pub type StoreFile = (Box<dyn Read + Send>, u64);

/// Files of an image store, addressed by their path inside it.
pub trait ImageFiles: Send + Sync {
    /// Opens `path` (e.g. `index.json`, `blobs/sha256/<hex>`).
    fn open(&self, path: &str) -> Result<StoreFile, ImageError>;
    /// Whether `path` exists.
    fn exists(&self, path: &str) -> bool {
        self.open(path).is_ok()
    }
    /// What this store is, for messages.
    fn describe(&self) -> String;
}

/// A directory (an OCI image layout). Paths are resolved inside it, so a
/// symlink planted in a layout cannot make us read other host files.
pub struct DirFiles {
    dir: PathBuf,
}

impl DirFiles {
    pub fn new(dir: &Path) -> Result<DirFiles, ImageError> {
        if !dir.is_dir() {
            return Err(ImageError::NotFound(format!("{} is not a directory", dir.display())));
        }
        Ok(DirFiles { dir: dir.to_path_buf() })
    }
}

impl ImageFiles for DirFiles {
    fn open(&self, path: &str) -> Result<StoreFile, ImageError> {
        let what = || format!("{}/{path}", self.dir.display());
        let mut root =
            RootDir::open(&self.dir, Symlinks::FollowInRoot).map_err(|e| ImageError::Store(e.to_string()))?;
        let file = match root.open_file(Path::new(path)) {
            Ok(file) => file,
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => return Err(ImageError::NotFound(what())),
            Err(e) => return Err(ImageError::Store(e.to_string())),
        };
        let size = file
            .metadata()
            .map_err(|source| ImageError::Io { what: what(), source })?
            .len();
        Ok((Box::new(BufReader::with_capacity(256 * 1024, file)), size))
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

#[derive(Debug, Clone)]
enum Member {
    Data { offset: u64, size: u64 },
    Link(PathBuf),
}

/// A tar archive read in place: an index of its members, and reads that seek
/// to a member's data.
pub struct TarFiles {
    file: PathBuf,
    members: HashMap<PathBuf, Member>,
}

/// Most symlinks followed between archive members.
const MAX_MEMBER_LINKS: usize = 8;

impl TarFiles {
    pub fn index(file: &Path) -> Result<TarFiles, ImageError> {
        let what = || file.display().to_string();
        let handle = File::open(file).map_err(|source| ImageError::Io { what: what(), source })?;
        let mut reader = TarReader::new(BufReader::with_capacity(256 * 1024, handle));
        let mut members = HashMap::new();
        while let Some(entry) = reader
            .next_entry()
            .map_err(|e| ImageError::Store(format!("{}: {e}", what())))?
        {
            let path = clean_path(&entry.path).map_err(|e| ImageError::Store(format!("{}: {e}", what())))?;
            let member = match entry.kind {
                TarKind::File => Member::Data {
                    offset: entry.data_offset,
                    size: entry.size,
                },
                // Hardlink targets are archive paths; symlink targets are relative to the member.
                TarKind::HardLink => Member::Link(PathBuf::from("/").join(entry.link_target.unwrap_or_default())),
                TarKind::Symlink => Member::Link(entry.link_target.unwrap_or_default()),
                _ => continue,
            };
            members.insert(path, member);
        }
        Ok(TarFiles {
            file: file.to_path_buf(),
            members,
        })
    }

    fn lookup(&self, path: &str) -> Option<(u64, u64)> {
        let mut current = clean_path(Path::new(path)).ok()?;
        for _ in 0..=MAX_MEMBER_LINKS {
            match self.members.get(&current)? {
                Member::Data { offset, size } => return Some((*offset, *size)),
                Member::Link(target) => {
                    let base = if target.has_root() {
                        Path::new("")
                    } else {
                        current.parent().unwrap_or(Path::new(""))
                    };
                    current = join_within(base, target)?;
                }
            }
        }
        None
    }
}

/// Joins a link target to a base path, resolving `..` without leaving the archive.
fn join_within(base: &Path, target: &Path) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    for component in target.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

impl ImageFiles for TarFiles {
    fn open(&self, path: &str) -> Result<StoreFile, ImageError> {
        let (offset, size) = self
            .lookup(path)
            .ok_or_else(|| ImageError::NotFound(format!("{} in archive {}", path, self.file.display())))?;
        let what = || format!("{} in {}", path, self.file.display());
        let mut file = File::open(&self.file).map_err(|source| ImageError::Io { what: what(), source })?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|source| ImageError::Io { what: what(), source })?;
        Ok((Box::new(BufReader::with_capacity(256 * 1024, file.take(size))), size))
    }

    fn exists(&self, path: &str) -> bool {
        self.lookup(path).is_some()
    }

    fn describe(&self) -> String {
        self.file.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_members_are_read_in_place_and_links_followed_inside_only() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.tar");
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "./blobs/sha256/abc", &b"hello"[..])
            .unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        builder
            .append_link(&mut link, "layer1/layer.tar", "../blobs/sha256/abc")
            .unwrap();
        builder
            .append_link(&mut link, "escape/layer.tar", "../../../etc/passwd")
            .unwrap();
        builder.append_link(&mut link, "loop/a", "b").unwrap();
        builder.append_link(&mut link, "loop/b", "a").unwrap();
        builder.finish().unwrap();
        drop(builder);

        let files = TarFiles::index(&path).unwrap();
        let read = |p: &str| {
            let (mut reader, size) = files.open(p).unwrap();
            let mut out = String::new();
            reader.read_to_string(&mut out).unwrap();
            (out, size)
        };
        assert_eq!(read("blobs/sha256/abc"), ("hello".to_string(), 5));
        assert_eq!(read("layer1/layer.tar"), ("hello".to_string(), 5));
        assert!(matches!(files.open("escape/layer.tar"), Err(ImageError::NotFound(_))));
        assert!(matches!(files.open("loop/a"), Err(ImageError::NotFound(_))));
        assert!(!files.exists("missing"));
    }

    #[test]
    fn dir_files_do_not_follow_links_out_of_the_layout() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("layout/blobs/sha256")).unwrap();
        std::fs::write(tmp.path().join("secret"), b"host").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), tmp.path().join("layout/blobs/sha256/x")).unwrap();
        let files = DirFiles::new(&tmp.path().join("layout")).unwrap();
        assert!(files.open("blobs/sha256/x").is_err());
    }
}
