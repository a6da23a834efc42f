//! What the dynamic loader and library matching need from an ELF file:
//! its ABI, SONAME, DT_NEEDED, RPATH/RUNPATH, interpreter and symbol versions.

use std::collections::{BTreeMap, BTreeSet};

use goblin::elf::Elf;
use goblin::elf::header::{EM_ARM, ET_DYN, ET_EXEC};

/// `e_flags` bits of 32-bit ARM objects.
const EF_ARM_ABI_FLOAT_SOFT: u32 = 0x200;
const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;
/// `DT_FLAGS_1` bit of position-independent executables.
const DF_1_PIE: u64 = 0x0800_0000;
/// `vd_flags` of a file's own (base) version definition.
const VER_FLG_BASE: u16 = 1;

/// Whether bytes start like an ELF file.
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

/// The ARM floating-point calling convention (hard-float objects cannot load
/// soft-float libraries and the other way round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FloatAbi {
    Hard,
    Soft,
    /// Not ARM, or the object does not say.
    Unspecified,
}

/// What must be equal for one object to load another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Abi {
    pub is_64: bool,
    pub little_endian: bool,
    /// `e_machine` (`EM_ARM` 40, `EM_AARCH64` 183, `EM_X86_64` 62, ...).
    pub machine: u16,
    pub float: FloatAbi,
}

impl Abi {
    /// Whether an object of `self` can load a library of `other`.
    pub fn can_load(&self, other: &Abi) -> bool {
        self.is_64 == other.is_64
            && self.little_endian == other.little_endian
            && self.machine == other.machine
            && (self.float == other.float
                || self.float == FloatAbi::Unspecified
                || other.float == FloatAbi::Unspecified)
    }

    /// The ABI of an OCI architecture name (`amd64`, `arm64`, `arm`, ...); the
    /// ARM float ABI is left unspecified.
    pub fn for_oci_arch(arch: &str) -> Option<Abi> {
        use goblin::elf::header::*;
        let (machine, is_64, little_endian) = match arch {
            "amd64" => (EM_X86_64, true, true),
            "386" => (EM_386, false, true),
            "arm64" => (EM_AARCH64, true, true),
            "arm" => (EM_ARM, false, true),
            "mipsle" => (EM_MIPS, false, true),
            "mips" => (EM_MIPS, false, false),
            "riscv64" => (EM_RISCV, true, true),
            "ppc64le" => (EM_PPC64, true, true),
            _ => return None,
        };
        Some(Abi {
            is_64,
            little_endian,
            machine,
            float: FloatAbi::Unspecified,
        })
    }

    /// The name of the architecture, as in OCI platforms.
    pub fn arch_name(&self) -> String {
        use goblin::elf::header::*;
        match self.machine {
            EM_X86_64 => "amd64".into(),
            EM_386 => "386".into(),
            EM_AARCH64 => "arm64".into(),
            EM_ARM => "arm".into(),
            EM_MIPS if self.is_64 => "mips64".into(),
            EM_MIPS => "mips".into(),
            EM_PPC64 => "ppc64".into(),
            EM_RISCV => "riscv64".into(),
            other => format!("machine {other}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfKind {
    /// `ET_EXEC`, or `ET_DYN` with an interpreter (a PIE executable).
    Executable,
    /// `ET_DYN` without an interpreter.
    SharedObject,
    Other,
}

/// The facts of one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub abi: Abi,
    pub kind: ElfKind,
    pub interpreter: Option<String>,
    pub soname: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    /// Version definitions (`GLIBC_2.4`, ...), without the base definition.
    pub version_definitions: BTreeSet<String>,
    /// Versions needed, by library name (`libc.so.6` -> `GLIBC_2.34`, ...).
    pub version_needs: BTreeMap<String, BTreeSet<String>>,
    /// Whether the file has no section headers (stripped with `sstrip`), so
    /// its symbol versions are unknown.
    pub sections_stripped: bool,
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
        let mut version_definitions = BTreeSet::new();
        if let Some(verdef) = &elf.verdef {
            for definition in verdef.iter() {
                if definition.vd_flags & VER_FLG_BASE != 0 {
                    continue;
                }
                if let Some(name) = definition
                    .iter()
                    .next()
                    .and_then(|aux| elf.dynstrtab.get_at(aux.vda_name))
                {
                    version_definitions.insert(name.to_string());
                }
            }
        }
        let mut version_needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if let Some(verneed) = &elf.verneed {
            for need in verneed.iter() {
                let Some(file) = elf.dynstrtab.get_at(need.vn_file) else {
                    continue;
                };
                let versions = version_needs.entry(file.to_string()).or_default();
                for aux in need.iter() {
                    if let Some(name) = elf.dynstrtab.get_at(aux.vna_name) {
                        versions.insert(name.to_string());
                    }
                }
            }
        }
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
            rpath: split_paths(&elf.rpaths),
            runpath: split_paths(&elf.runpaths),
            version_definitions,
            version_needs,
            sections_stripped: header.e_shnum == 0 && elf.dynamic.is_some(),
        })
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
    fn readelf_versions(path: &str) -> (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) {
        let output = Command::new("readelf")
            .args(["-V", "-W", path])
            .output()
            .expect("binutils readelf");
        let text = String::from_utf8_lossy(&output.stdout);
        let mut defs = BTreeSet::new();
        let mut needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
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
                defs.insert(
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
        assert!(info.version_definitions.contains("GLIBC_2.2.5"));
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
