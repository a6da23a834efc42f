//! Facts about the box as a whole: its C library, loader, kernel and
//! firmware identity.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use bundlegen_protocol::probe::{Libc, Library, SystemInfo};
use bundlegen_protocol::root::RootDir;

use crate::elf::{Abi, ElfInfo};
use crate::libraries::LibraryScan;
use crate::loader::ConfFiles;

/// Programs every box has, whose interpreter is the box's main loader.
const PROGRAMS: &[&str] = &["/bin/sh", "/sbin/init", "/usr/bin/env", "/bin/busybox"];
/// `/etc/os-release` fields worth recording.
const OS_RELEASE_KEYS: &[&str] = &["ID", "VERSION_ID", "VERSION", "BUILD_ID", "VARIANT_ID", "PRETTY_NAME"];
/// Small text files are all this module reads whole.
const MAX_TEXT_BYTES: u64 = 1 << 20;

fn read_text(root: &mut RootDir, path: &str) -> Option<String> {
    let (file, _) = root.open_file_follow(Path::new(path.trim_start_matches('/'))).ok()?;
    let mut text = String::new();
    file.take(MAX_TEXT_BYTES).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The ABI and interpreter of the box's own programs.
fn main_program(root: &mut RootDir) -> Option<ElfInfo> {
    PROGRAMS.iter().find_map(|program| {
        let (file, _) = root.open_file_follow(Path::new(program.trim_start_matches('/'))).ok()?;
        let mut bytes = Vec::new();
        file.take(64 << 20).read_to_end(&mut bytes).ok()?;
        let info = ElfInfo::parse(&bytes).ok()?;
        info.interpreter.is_some().then_some(info)
    })
}

/// The ABI of the box's own programs under `root` (`/` on a box): what
/// its bundles must be built for.
pub fn box_abi(root: &Path) -> Option<Abi> {
    let mut root = RootDir::open(root, bundlegen_protocol::root::Symlinks::FollowInRoot).ok()?;
    main_program(&mut root).map(|program| program.abi)
}

/// `2.31` from `GLIBC_2.31`; the newest of a libc's version definitions.
fn glibc_version(versions: &[String]) -> Option<String> {
    versions
        .iter()
        .filter_map(|v| {
            let number = v.strip_prefix("GLIBC_")?;
            let parts: Option<Vec<u32>> = number.split('.').map(|p| p.parse().ok()).collect();
            Some((parts?, number.to_string()))
        })
        .max()
        .map(|(_, number)| number)
}

/// glibc's release (`2.31`) as `gnu_get_libc_version` reports it: from the
/// banner the library carries ("... release version 2.31.").
fn glibc_release(root: &mut RootDir, path: &str) -> Option<String> {
    let file = root.open_file(Path::new(path.trim_start_matches('/'))).ok()?;
    let mut bytes = Vec::new();
    file.take(64 << 20).read_to_end(&mut bytes).ok()?;
    const BANNER: &[u8] = b"release version ";
    let at = bytes.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
    let version: String = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .map(|&b| b as char)
        .collect();
    let version = version.trim_end_matches('.');
    (!version.is_empty()).then(|| version.to_string())
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The C library: glibc (`libc.so.6`), musl (`ld-musl-*.so.1`, which is its
/// own loader) or uClibc (`libc.so.0`), of the box's main ABI.
fn find_libc<'a>(scan: &'a LibraryScan, abi: Option<Abi>) -> Option<(Libc, &'a Library)> {
    let usable = |library: &&Library| abi.is_none_or(|abi| abi.can_load(&library.abi));
    let pick = |found: Vec<&'a Library>| {
        found
            .into_iter()
            .min_by_key(|l| (std::cmp::Reverse(l.names.len()), l.path.clone()))
    };
    let libraries = || scan.libraries.values().filter(usable);
    let glibc = pick(
        libraries()
            .filter(|l| l.soname.as_deref() == Some("libc.so.6") && glibc_version(&l.versions).is_some())
            .collect(),
    );
    if let Some(library) = glibc {
        return Some((
            Libc {
                flavour: "glibc".into(),
                version: glibc_version(&library.versions),
                path: library.path.clone(),
            },
            library,
        ));
    }
    let musl = pick(
        libraries()
            .filter(|l| l.names.iter().any(|n| file_name(n).starts_with("ld-musl-")))
            .collect(),
    );
    if let Some(library) = musl {
        return Some((
            Libc {
                flavour: "musl".into(),
                version: None,
                path: library.path.clone(),
            },
            library,
        ));
    }
    let uclibc = pick(
        libraries()
            .filter(|l| l.soname.as_deref() == Some("libc.so.0"))
            .collect(),
    );
    uclibc.map(|library| {
        (
            Libc {
                flavour: "uclibc".into(),
                version: None,
                path: library.path.clone(),
            },
            library,
        )
    })
}

/// Describes the box under `root`. `live` is true when `root` is the
/// running system's `/` (then the running kernel is the box's kernel).
pub fn describe(root: &mut RootDir, scan: &LibraryScan, live: bool) -> SystemInfo {
    let program = main_program(root);
    let program_abi = program.as_ref().map(|p| p.abi);
    let mut libc = find_libc(scan, program_abi);
    if let Some((libc, _)) = libc.as_mut().filter(|(l, _)| l.flavour == "glibc")
        && let Some(release) = glibc_release(root, &libc.path)
    {
        libc.version = Some(release);
    }
    let abi = program_abi.or(libc.as_ref().map(|(_, l)| l.abi));
    let loader = program.as_ref().and_then(|p| p.interpreter.clone()).or_else(|| {
        let (libc, library) = libc.as_ref()?;
        if libc.flavour == "musl" {
            return library
                .names
                .iter()
                .find(|n| file_name(n).starts_with("ld-musl-"))
                .cloned();
        }
        scan.elf.get(&library.path)?.interpreter.clone().or_else(|| {
            library
                .deps
                .iter()
                .find(|d| d.name.starts_with("ld-"))
                .and_then(|d| d.path.clone())
        })
    });
    let kernels = if live {
        vec![nix::sys::utsname::uname().map_or(String::new(), |u| u.release().to_string_lossy().into_owned())]
    } else {
        ConfFiles::list(root, "/lib/modules")
    };
    let os_release = read_text(root, "/etc/os-release")
        .or_else(|| read_text(root, "/usr/lib/os-release"))
        .map(|text| parse_os_release(&text))
        .unwrap_or_default();
    let firmware = read_text(root, "/version.txt").and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("imagename:").map(|v| v.trim().to_string()))
    });
    SystemInfo {
        arch: abi.map(|a| a.arch_name()),
        abi,
        libc: libc.map(|(libc, _)| libc),
        loader,
        kernels: kernels.into_iter().filter(|k| !k.is_empty()).collect(),
        os_release,
        firmware,
        libraries_fingerprint: String::new(),
    }
}

fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| OS_RELEASE_KEYS.contains(&key.trim()))
        .map(|(key, value)| {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            (key.trim().to_string(), value.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_versions_compare_as_numbers() {
        let versions: Vec<String> = ["GLIBC_2.4", "GLIBC_2.30", "GLIBC_2.9", "GLIBC_PRIVATE", "GLIBC_2.30.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(glibc_version(&versions).as_deref(), Some("2.30.1"));
        assert_eq!(glibc_version(&["ZLIB_1.2".to_string()]), None);
    }

    #[test]
    fn os_release_values_lose_their_quotes() {
        let fields = parse_os_release("ID=rdk\nVERSION_ID=\"2024.1\"\nNAME='RDK'\nBUILD_ID='b42'\n# x\n");
        assert_eq!(fields["ID"], "rdk");
        assert_eq!(fields["VERSION_ID"], "2024.1");
        assert_eq!(fields["BUILD_ID"], "b42");
        assert!(!fields.contains_key("NAME"));
    }
}
