//! What the dynamic loader and library matching need from an ELF file:
//! its ABI, SONAME, DT_NEEDED, RPATH/RUNPATH, interpreter and symbol versions.

use std::collections::{BTreeMap, BTreeSet};

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::Elf;
use goblin::elf::dynamic::{DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM};
use goblin::elf::header::{EM_ARM, ET_DYN, ET_EXEC};
use goblin::elf::program_header::PT_LOAD;
use goblin::elf::section_header::{SHT_GNU_VERDEF, SHT_GNU_VERNEED, SectionHeader};
use goblin::elf::symver::{VerdefSection, VerneedSection};

/// `e_flags` bits of 32-bit ARM objects.
const EF_ARM_ABI_FLOAT_SOFT: u32 = 0x200;
const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;
/// `DT_FLAGS_1` bit of position-independent executables.
const DF_1_PIE: u64 = 0x0800_0000;
/// Dynamic tags of filter libraries (goblin has no names for them).
const DT_AUXILIARY: u64 = 0x7fff_fffd;
const DT_FILTER: u64 = 0x7fff_ffff;
/// `vd_flags` of a file's own (base) version definition.
const VER_FLG_BASE: u16 = 1;

/// Whether bytes start like an ELF file.
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

pub use bundlegen_protocol::probe::{Abi, FloatAbi};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ElfKind {
    /// `ET_EXEC`, or `ET_DYN` with an interpreter (a PIE executable).
    Executable,
    /// `ET_DYN` without an interpreter.
    SharedObject,
    Other,
}

/// Versions needed, by library name (`libc.so.6` -> `GLIBC_2.34`, ...).
pub type VersionNeeds = BTreeMap<String, BTreeSet<String>>;

/// The facts of one ELF file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ElfInfo {
    pub abi: Abi,
    pub kind: ElfKind,
    pub interpreter: Option<String>,
    pub soname: Option<String>,
    pub needed: Vec<String>,
    /// DT_FILTER and DT_AUXILIARY names: libraries loaded on its behalf.
    pub filters: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    /// Version definitions (`GLIBC_2.4`, ...) in file order, without the
    /// base definition.
    pub version_definitions: Vec<String>,
    pub version_needs: VersionNeeds,
    /// False when the file declares version data that cannot be read, so
    /// what it defines or needs is unknown.
    pub versions_known: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("not a readable ELF file: {0}")]
pub struct ElfError(String);

fn split_paths(list: &[&str]) -> Vec<String> {
    list.iter()
        .flat_map(|entry| entry.split(':'))
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// The version sections as the dynamic segment locates them, for files whose
/// section headers were stripped (`sstrip`): goblin finds version data
/// through section headers only, so these stand in for the missing ones.
fn version_headers_from_dynamic(elf: &Elf, file_len: usize) -> Vec<SectionHeader> {
    let Some(dynamic) = &elf.dynamic else {
        return Vec::new();
    };
    let value = |tag: u64| dynamic.dyns.iter().find(|d| d.d_tag == tag).map(|d| d.d_val);
    let mut headers = Vec::new();
    for (table, count, kind) in [
        (DT_VERDEF, DT_VERDEFNUM, SHT_GNU_VERDEF),
        (DT_VERNEED, DT_VERNEEDNUM, SHT_GNU_VERNEED),
    ] {
        let (Some(address), Some(count)) = (value(table), value(count)) else {
            continue;
        };
        let Some(offset) = elf
            .program_headers
            .iter()
            .filter(|p| p.p_type == PT_LOAD)
            .find(|p| p.p_vaddr <= address && address < p.p_vaddr + p.p_filesz)
            .map(|p| address - p.p_vaddr + p.p_offset)
        else {
            continue;
        };
        let offset = offset as usize;
        if offset < file_len {
            headers.push(SectionHeader {
                sh_type: kind,
                sh_offset: offset as u64,
                sh_size: (file_len - offset) as u64,
                sh_info: count as u32,
                ..Default::default()
            });
        }
    }
    headers
}

/// Collects version definitions and needs from goblin's parsed sections;
/// `None` if they are malformed.
fn read_versions(
    elf: &Elf,
    verdef: Option<&VerdefSection>,
    verneed: Option<&VerneedSection>,
) -> Option<(Vec<String>, VersionNeeds)> {
    let mut definitions = Vec::new();
    if let Some(verdef) = verdef {
        for definition in verdef.iter() {
            if definition.vd_flags & VER_FLG_BASE != 0 {
                continue;
            }
            let aux = definition.iter().next()?;
            let name = elf.dynstrtab.get_at(aux.vda_name)?;
            definitions.push(name.to_string());
        }
    }
    let mut needs = VersionNeeds::new();
    if let Some(verneed) = verneed {
        for need in verneed.iter() {
            let file = elf.dynstrtab.get_at(need.vn_file)?;
            let versions = needs.entry(file.to_string()).or_default();
            for aux in need.iter() {
                versions.insert(elf.dynstrtab.get_at(aux.vna_name)?.to_string());
            }
        }
    }
    Some((definitions, needs))
}

impl ElfInfo {
    pub fn parse(bytes: &[u8]) -> Result<ElfInfo, ElfError> {
        let elf = Elf::parse(bytes).map_err(|e| ElfError(e.to_string()))?;
        let header = &elf.header;
        let float = if header.e_machine == EM_ARM {
            if header.e_flags & EF_ARM_ABI_FLOAT_HARD != 0 {
                FloatAbi::Hard
            } else if header.e_flags & EF_ARM_ABI_FLOAT_SOFT != 0 {
                FloatAbi::Soft
            } else {
                FloatAbi::Unspecified
            }
        } else {
            FloatAbi::Unspecified
        };
        let interpreter = elf.interpreter.map(|i| i.trim_end_matches('\0').to_string());
        // A PIE is ET_DYN with an interpreter; so is glibc's libc.so.6 (it
        // runs), but that one has a SONAME and no DF_1_PIE flag.
        let pie_flag = elf.dynamic.as_ref().is_some_and(|d| d.info.flags_1 & DF_1_PIE != 0);
        let kind = match header.e_type {
            ET_EXEC => ElfKind::Executable,
            ET_DYN if interpreter.is_some() && (pie_flag || elf.soname.is_none()) => ElfKind::Executable,
            ET_DYN => ElfKind::SharedObject,
            _ => ElfKind::Other,
        };
        let versions = if elf.section_headers.is_empty() {
            let headers = version_headers_from_dynamic(&elf, bytes.len());
            let ctx = Ctx::new(
                if elf.is_64 { Container::Big } else { Container::Little },
                if elf.little_endian { Endian::Little } else { Endian::Big },
            );
            let verdef = VerdefSection::parse(bytes, &headers, ctx).ok().flatten();
            let verneed = VerneedSection::parse(bytes, &headers, ctx).ok().flatten();
            read_versions(&elf, verdef.as_ref(), verneed.as_ref())
        } else {
            read_versions(&elf, elf.verdef.as_ref(), elf.verneed.as_ref())
        };
        let versions_known = versions.is_some();
        let (version_definitions, version_needs) = versions.unwrap_or_default();
        let filters = elf
            .dynamic
            .iter()
            .flat_map(|d| &d.dyns)
            .filter(|d| d.d_tag == DT_FILTER || d.d_tag == DT_AUXILIARY)
            .filter_map(|d| elf.dynstrtab.get_at(d.d_val as usize))
            .map(str::to_string)
            .collect();
        Ok(ElfInfo {
            abi: Abi {
                is_64: elf.is_64,
                little_endian: elf.little_endian,
                machine: header.e_machine,
                float,
            },
            kind,
            interpreter,
            soname: elf.soname.map(str::to_string),
            needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
            filters,
            rpath: split_paths(&elf.rpaths),
            runpath: split_paths(&elf.runpaths),
            version_definitions,
            version_needs,
            versions_known,
        })
    }

    /// The version definitions as a set, for comparisons.
    pub fn version_set(&self) -> BTreeSet<String> {
        self.version_definitions.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;

    fn parse_file(path: &str) -> ElfInfo {
        ElfInfo::parse(&std::fs::read(path).unwrap()).unwrap()
    }

    /// `readelf` is the peer: our versions must be its versions.
    fn readelf_versions(path: &str) -> (Vec<String>, VersionNeeds) {
        let output = Command::new("readelf")
            .args(["-V", "-W", path])
            .output()
            .expect("binutils readelf");
        let text = String::from_utf8_lossy(&output.stdout);
        let mut defs = Vec::new();
        let mut needs = VersionNeeds::new();
        let mut section = "";
        let mut file = String::new();
        for line in text.lines() {
            if line.starts_with("Version definition section") {
                section = "def";
            } else if line.starts_with("Version needs section") {
                section = "need";
            } else if line.starts_with("Version symbols section") {
                section = "";
            } else if section == "def" && line.contains("Name: ") && !line.contains("BASE") {
                defs.push(
                    line.split("Name: ")
                        .nth(1)
                        .unwrap()
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .to_string(),
                );
            } else if section == "need" && line.contains("File: ") {
                file = line
                    .split("File: ")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string();
            } else if section == "need" && line.contains("Name: ") {
                let name = line
                    .split("Name: ")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string();
                needs.entry(file.clone()).or_default().insert(name);
            }
        }
        (defs, needs)
    }

    #[test]
    fn agrees_with_readelf_on_this_machines_libraries() {
        let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("a glibc");
        for path in [libc, "/bin/ls", "/usr/bin/tar"] {
            let info = parse_file(path);
            let (defs, needs) = readelf_versions(path);
            assert_eq!(info.version_definitions, defs, "{path}");
            assert_eq!(info.version_needs, needs, "{path}");
        }
        let info = parse_file(libc);
        assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
        assert_eq!(info.kind, ElfKind::SharedObject);
        assert!(info.version_definitions.contains(&"GLIBC_2.2.5".to_string()));
        let ls = parse_file("/bin/ls");
        assert_eq!(ls.kind, ElfKind::Executable);
        assert!(ls.needed.contains(&"libc.so.6".to_string()));
        assert!(ls.interpreter.unwrap().starts_with("/lib"));
        assert_eq!(
            ls.abi.arch_name(),
            std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64")
        );
    }

    /// readelf's DT_NEEDED, DT_FILTER, SONAME and RUNPATH of a file.
    fn readelf_dynamic(path: &Path) -> Vec<(String, String)> {
        let output = Command::new("readelf").args(["-d", "-W"]).arg(path).output().unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let tag = line.split('(').nth(1)?.split(')').next()?.to_string();
                let value = line.split('[').nth(1)?.split(']').next()?.to_string();
                Some((tag, value))
            })
            .collect()
    }

    #[test]
    fn synthetic_arm_libraries_read_like_readelf_reads_them() {
        use bundlegen_fixtures::elf::ElfSpec;
        let dir = tempfile::tempdir().unwrap();
        let mut spec = ElfSpec::arm_library("libwidget.so.2")
            .needs(&["libc.so.6", "libm.so.6"])
            .defines(&["WIDGET_1.0", "WIDGET_1.10", "WIDGET_1.2"])
            .needs_versions("libc.so.6", &["GLIBC_2.4", "GLIBC_2.28"]);
        spec.filters = vec!["libwidget-impl.so.2".into()];
        spec.runpath = Some("$ORIGIN/../lib:/opt/widget".into());
        let path = dir.path().join("libwidget.so.2.0");
        std::fs::write(&path, spec.build()).unwrap();
        let info = parse_file(path.to_str().unwrap());
        let (defs, needs) = readelf_versions(path.to_str().unwrap());
        assert_eq!(info.version_definitions, defs);
        assert_eq!(info.version_definitions, ["WIDGET_1.0", "WIDGET_1.10", "WIDGET_1.2"]);
        assert_eq!(info.version_needs, needs);
        let dynamic = readelf_dynamic(&path);
        let of = |tag: &str| -> Vec<String> {
            dynamic
                .iter()
                .filter(|(t, _)| t == tag)
                .map(|(_, v)| v.clone())
                .collect()
        };
        assert_eq!(info.needed, of("NEEDED"));
        assert_eq!(info.filters, of("FILTER"));
        assert_eq!(info.soname.iter().cloned().collect::<Vec<_>>(), of("SONAME"));
        assert_eq!(info.runpath.join(":"), of("RUNPATH").join(":"));
        assert_eq!(info.abi.float, FloatAbi::Hard);
        assert_eq!(info.abi.arch_name(), "arm");
        assert_eq!(info.kind, ElfKind::SharedObject);

        // Without section headers (sstrip), readelf sees no versions; we
        // still find them through the dynamic segment.
        spec.strip_sections = true;
        let stripped = ElfInfo::parse(&spec.build()).unwrap();
        assert!(stripped.versions_known);
        assert_eq!(stripped.version_definitions, info.version_definitions);
        assert_eq!(stripped.version_needs, info.version_needs);

        let program = ElfSpec::arm_library("unused")
            .executable("/lib/ld-linux-armhf.so.3")
            .build();
        let program = ElfInfo::parse(&program).unwrap();
        assert_eq!(program.kind, ElfKind::Executable);
        assert_eq!(program.interpreter.as_deref(), Some("/lib/ld-linux-armhf.so.3"));
    }

    #[test]
    fn broken_files_are_errors_not_panics() {
        let ls = std::fs::read("/bin/ls").unwrap();
        for cut in [4, 16, 64, 200, ls.len() / 2] {
            let _ = ElfInfo::parse(&ls[..cut]);
        }
        assert!(ElfInfo::parse(b"\x7fELF garbage").is_err());
        assert!(!is_elf(b"#!/bin/sh"));
    }

    #[test]
    fn arm_float_abi_decides_loadability() {
        let hard = Abi {
            is_64: false,
            little_endian: true,
            machine: EM_ARM,
            float: FloatAbi::Hard,
        };
        let soft = Abi {
            float: FloatAbi::Soft,
            ..hard
        };
        let unknown = Abi {
            float: FloatAbi::Unspecified,
            ..hard
        };
        let arm64 = Abi {
            is_64: true,
            machine: goblin::elf::header::EM_AARCH64,
            float: FloatAbi::Unspecified,
            ..hard
        };
        assert!(hard.can_load(&hard));
        assert!(!hard.can_load(&soft));
        assert!(hard.can_load(&unknown));
        assert!(!hard.can_load(&arm64));
    }
}
