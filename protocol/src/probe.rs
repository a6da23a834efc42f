//! What `platform-probe` finds on a box (or in a box's rootfs image): every
//! shared library the loader could use and every device node. The generator
//! prefers this report to BundleGen's `NAME_libs.json` when it has one, and
//! the agent uploads it to the generator service.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::libs::{LibEntry, LibsFile};
use crate::config::{Problem, Validate, check_absolute, field};

/// Version of this report's format; readers refuse newer major versions.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// `e_machine` values of the architectures set-top boxes and build hosts use.
pub mod machine {
    pub const EM_386: u16 = 3;
    pub const EM_MIPS: u16 = 8;
    pub const EM_PPC64: u16 = 21;
    pub const EM_ARM: u16 = 40;
    pub const EM_X86_64: u16 = 62;
    pub const EM_AARCH64: u16 = 183;
    pub const EM_RISCV: u16 = 243;
}

/// The ARM floating-point calling convention (hard-float objects cannot load
/// soft-float libraries and the other way round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum FloatAbi {
    Hard,
    Soft,
    /// Not ARM, or the object does not say.
    Unspecified,
}

/// What must be equal for one ELF object to load another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(into = "AbiWire", try_from = "AbiWire")]
pub struct Abi {
    pub is_64: bool,
    pub little_endian: bool,
    /// `e_machine` (see [`machine`]).
    pub machine: u16,
    pub float: FloatAbi,
}

/// Maps the names people write (`aarch64`, `armv7`, `x86_64`, ...) to OCI's
/// architecture and variant; an explicit variant wins over one implied by the name.
pub fn normalize_arch(architecture: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = architecture.trim().to_ascii_lowercase();
    let variant = variant.map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty());
    let (arch, implied): (&str, Option<&str>) = match arch.as_str() {
        "aarch64" | "arm64" | "armv8" | "arm64v8" => ("arm64", None),
        "armv7" | "armv7l" | "armv7a" | "armhf" | "arm32v7" => ("arm", Some("v7")),
        "armv6" | "armv6l" | "armel" | "arm32v6" => ("arm", Some("v6")),
        "armv5" | "armv5l" | "arm32v5" => ("arm", Some("v5")),
        "x86_64" | "x86-64" | "amd64" => ("amd64", None),
        "i386" | "i486" | "i586" | "i686" | "x86" | "386" => ("386", None),
        other => (other, None),
    };
    let variant = variant.or(implied.map(str::to_string));
    // arm64's only variant is v8; treat it as unset so both spellings match.
    let variant = if arch == "arm64" && variant.as_deref() == Some("v8") {
        None
    } else {
        variant
    };
    (arch.to_string(), variant)
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

    /// The ABI of an architecture as people write it (`aarch64`, `armv7`,
    /// `x86_64`, OCI's names, ...) and a variant.
    pub fn for_arch(arch: &str, variant: Option<&str>) -> Option<Abi> {
        Abi::for_oci_arch(&normalize_arch(arch, variant).0)
    }

    /// The ABI of the machine this program was built for.
    pub fn of_this_program() -> Option<Abi> {
        Abi::for_arch(std::env::consts::ARCH, None)
    }

    /// The ABI an ELF file's header (its first 64 bytes) says; `None` for
    /// anything else.
    pub fn from_elf_header(header: &[u8]) -> Option<Abi> {
        if header.len() < 52 || !header.starts_with(b"\x7fELF") {
            return None;
        }
        let is_64 = match header[4] {
            1 => false,
            2 if header.len() >= 64 => true,
            _ => return None,
        };
        let little_endian = match header[5] {
            1 => true,
            2 => false,
            _ => return None,
        };
        let half = |at: usize| {
            let bytes = [header[at], header[at + 1]];
            if little_endian {
                u16::from_le_bytes(bytes)
            } else {
                u16::from_be_bytes(bytes)
            }
        };
        let word = |at: usize| {
            let bytes = [header[at], header[at + 1], header[at + 2], header[at + 3]];
            if little_endian {
                u32::from_le_bytes(bytes)
            } else {
                u32::from_be_bytes(bytes)
            }
        };
        let machine = half(18);
        let flags = word(if is_64 { 48 } else { 36 });
        const EF_ARM_ABI_FLOAT_SOFT: u32 = 0x200;
        const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;
        let float = match machine {
            machine::EM_ARM if flags & EF_ARM_ABI_FLOAT_HARD != 0 => FloatAbi::Hard,
            machine::EM_ARM if flags & EF_ARM_ABI_FLOAT_SOFT != 0 => FloatAbi::Soft,
            _ => FloatAbi::Unspecified,
        };
        Some(Abi {
            is_64,
            little_endian,
            machine,
            float,
        })
    }

    /// The ABI of an OCI architecture name (`amd64`, `arm64`, `arm`, ...); the
    /// ARM float ABI is left unspecified.
    pub fn for_oci_arch(arch: &str) -> Option<Abi> {
        use machine::*;
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
        use machine::*;
        match (self.machine, self.is_64, self.little_endian) {
            (EM_X86_64, _, _) => "amd64".into(),
            (EM_386, _, _) => "386".into(),
            (EM_AARCH64, _, _) => "arm64".into(),
            (EM_ARM, _, _) => "arm".into(),
            (EM_MIPS, true, true) => "mips64le".into(),
            (EM_MIPS, true, false) => "mips64".into(),
            (EM_MIPS, false, true) => "mipsle".into(),
            (EM_MIPS, false, false) => "mips".into(),
            (EM_PPC64, _, true) => "ppc64le".into(),
            (EM_PPC64, _, false) => "ppc64".into(),
            (EM_RISCV, _, _) => "riscv64".into(),
            (other, _, _) => format!("machine {other}"),
        }
    }
}

/// How an [`Abi`] is written: names a person can read.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
struct AbiWire {
    /// 32 or 64.
    bits: u8,
    /// `little` or `big`.
    endian: String,
    /// ELF `e_machine` (40 ARM, 183 AArch64, 62 x86-64).
    machine: u16,
    /// ARM float ABI.
    float_abi: FloatAbi,
}

impl From<Abi> for AbiWire {
    fn from(abi: Abi) -> AbiWire {
        AbiWire {
            bits: if abi.is_64 { 64 } else { 32 },
            endian: if abi.little_endian { "little" } else { "big" }.into(),
            machine: abi.machine,
            float_abi: abi.float,
        }
    }
}

impl TryFrom<AbiWire> for Abi {
    type Error = String;

    fn try_from(wire: AbiWire) -> Result<Abi, String> {
        let is_64 = match wire.bits {
            32 => false,
            64 => true,
            other => return Err(format!("bits must be 32 or 64, not {other}")),
        };
        let little_endian = match wire.endian.as_str() {
            "little" => true,
            "big" => false,
            other => return Err(format!("endian must be \"little\" or \"big\", not {other:?}")),
        };
        Ok(Abi {
            is_64,
            little_endian,
            machine: wire.machine,
            float: wire.float_abi,
        })
    }
}

/// The whole probe result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    /// Format of this report; readers refuse newer ones.
    pub format_version: u32,
    /// `platform-probe VERSION`.
    pub tool: String,
    /// Facts about the box as a whole.
    pub system: SystemInfo,
    /// Sorted by real path.
    pub libraries: Vec<Library>,
    /// Sorted by path.
    pub devices: Vec<DeviceNode>,
    /// Programs of the box that bundles run inside their containers
    /// (Dobby's init), with what they need from the container's libraries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<HostProgram>,
    /// Device nodes a platform template expects that the box lacks or has
    /// with other numbers (only when the probe was given a template).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_mismatches: Vec<DeviceMismatch>,
    /// What could not be read or resolved; the rest of the report is complete.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl ProbeReport {
    /// BundleGen's library list: one entry per name (real files and the
    /// symlinks to them), dependencies as the paths the loader finds,
    /// versions in file order, sorted by name.
    pub fn libs_file(&self) -> LibsFile {
        let mut entries: BTreeMap<String, LibEntry> = BTreeMap::new();
        for library in &self.libraries {
            let deps: BTreeSet<String> = library.deps.iter().filter_map(|d| d.path.clone()).collect();
            for name in &library.names {
                entries.entry(name.clone()).or_insert_with(|| LibEntry {
                    name: name.clone(),
                    apiversions: library.versions.clone(),
                    deps: deps.iter().cloned().collect(),
                });
            }
        }
        // Programs too, so a platform with only BundleGen's list still
        // tells the generator what Dobby's init needs.
        for program in &self.programs {
            entries.entry(program.path.clone()).or_insert_with(|| LibEntry {
                name: program.path.clone(),
                apiversions: Vec::new(),
                deps: program.deps.iter().filter_map(|d| d.path.clone()).collect(),
            });
        }
        LibsFile {
            libs: entries.into_values().collect(),
        }
    }
}

impl Validate for ProbeReport {
    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if self.format_version > REPORT_FORMAT_VERSION {
            problems.push(Problem {
                path: field(path, "formatVersion"),
                reason: format!(
                    "version {} is newer than this program reads ({REPORT_FORMAT_VERSION}); update it",
                    self.format_version
                ),
            });
        }
        for (i, library) in self.libraries.iter().enumerate() {
            let at = field(path, &format!("libraries[{i}]"));
            check_absolute(&library.path, &field(&at, "path"), problems);
            for (j, name) in library.names.iter().enumerate() {
                check_absolute(name, &field(&at, &format!("names[{j}]")), problems);
            }
        }
    }
}

/// Facts about the box as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SystemInfo {
    /// The OCI architecture name of the box's C library (`arm`, `arm64`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// ABI of the C library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi: Option<Abi>,
    /// The C library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libc: Option<Libc>,
    /// The dynamic loader programs are linked against (`/lib/ld-linux-armhf.so.3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loader: Option<String>,
    /// Kernel release (`uname -r` on a live box; `/lib/modules/*` in an image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<String>,
    /// Selected `/etc/os-release` fields (`ID`, `VERSION_ID`, `BUILD_ID`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub os_release: BTreeMap<String, String>,
    /// RDK's firmware image name (`imagename:` of `/version.txt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// sha256 over every library's names and content hash: equal
    /// fingerprints mean equal library sets.
    pub libraries_fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Libc {
    /// `glibc`, `musl` or `uclibc`.
    pub flavour: String,
    /// glibc's release (`2.31`, from the banner in the library; failing
    /// that, its newest `GLIBC_2.x` version definition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The C library's real path.
    pub path: String,
}

/// One shared library file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Library {
    /// Where the file really is, every symlink followed.
    pub path: String,
    /// Every name in the library directories that leads to it (symlinks,
    /// and the path itself), sorted.
    pub names: Vec<String>,
    /// DT_SONAME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soname: Option<String>,
    /// ELF class, byte order, machine and float ABI.
    pub abi: Abi,
    /// DT_NEEDED, then DT_FILTER/DT_AUXILIARY, in file order.
    pub needed: Vec<String>,
    /// Each needed name and the path the loader would find it at, if any.
    pub deps: Vec<Dependency>,
    /// DT_RPATH entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpath: Vec<String>,
    /// DT_RUNPATH entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runpath: Vec<String>,
    /// Symbol version definitions in file order, without the base entry.
    pub versions: Vec<String>,
    /// False when the file has no section headers, so its versions are unknown.
    #[serde(default = "yes")]
    pub versions_known: bool,
    /// Bytes.
    pub size: u64,
    /// Hash of the content.
    pub sha256: String,
}

fn yes() -> bool {
    true
}

/// One needed library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// As written in DT_NEEDED.
    pub name: String,
    /// The name the loader finds (`/lib/libc.so.6`), not its real path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A program of the box that runs inside containers: it is bind-mounted
/// into them, so the libraries it loads must be there too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct HostProgram {
    /// Its path on the box (and in the container).
    pub path: String,
    /// ELF class, byte order, machine and float ABI.
    pub abi: Abi,
    /// PT_INTERP: the loader it is started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// Each needed library and the path the box's loader finds it at.
    pub deps: Vec<Dependency>,
    /// Symbol versions it needs, by library name (`libstdc++.so.6` →
    /// `GLIBCXX_3.4.21`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version_needs: BTreeMap<String, Vec<String>>,
    /// False when the file has no section headers, so its needs are unknown.
    #[serde(default = "yes")]
    pub versions_known: bool,
    /// Hash of the content.
    pub sha256: String,
}

/// What a device node is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    /// 3D/2D graphics: DRM nodes, Mali, VideoCore, vendor GPU drivers.
    Gpu,
    /// Video decode/encode: V4L2 memory-to-memory, media controllers, codec drivers.
    Vpu,
    /// Display output: framebuffers, HDMI-CEC.
    Display,
    /// Buffers shared between GPU, VPU and display (dma-heap, ion).
    Memory,
    Input,
    Sound,
    Other,
}

impl DeviceClass {
    pub fn name(self) -> &'static str {
        match self {
            DeviceClass::Gpu => "gpu",
            DeviceClass::Vpu => "vpu",
            DeviceClass::Display => "display",
            DeviceClass::Memory => "memory",
            DeviceClass::Input => "input",
            DeviceClass::Sound => "sound",
            DeviceClass::Other => "other",
        }
    }
}

/// One character or block device node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// Path in `/dev`.
    pub path: String,
    /// `c` or `b`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The name its major is registered under (`/proc/devices`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The driver bound to the device in sysfs (`vc4-drm`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_driver: Option<String>,
    /// The kernel subsystem (`drm`, `sound`, `video4linux`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsystem: Option<String>,
    /// What it is for.
    pub class: DeviceClass,
    /// The major (or misc minor) is handed out at boot and may change.
    pub dynamic: bool,
    /// Symlinks in `/dev` that lead to this node (`/dev/dri/by-path/...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
}

/// A node a template names that the box does not have as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceMismatch {
    /// The node's path.
    pub path: String,
    /// `absent`, `type`, `numbers` (different major/minor on a node the
    /// template does not mark dynamic) or `dynamic` (the box's major is
    /// dynamic but the template does not say so).
    pub problem: String,
    /// What the template says and what the box has.
    pub detail: String,
}

/// glibc's libraries by SONAME, wherever they live (BundleGen only knew
/// `/lib` and `/usr/lib`, not multiarch directories).
pub fn is_glibc_soname(name: &str) -> bool {
    const MEMBERS: [&str; 16] = [
        "libc.so.6",
        "libm.so.6",
        "libmvec.so.1",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libresolv.so.2",
        "libutil.so.1",
        "libanl.so.1",
        "libnsl.so.1",
        "libBrokenLocale.so.1",
        "libthread_db.so.1",
        "libc_malloc_debug.so.0",
        "ld.so.1",
        "ld64.so.1",
        "ld64.so.2",
    ];
    // glibc's own name service modules (not systemd's libnss_myhostname and kin).
    const NSS: [&str; 7] = ["files", "dns", "compat", "db", "hesiod", "nis", "nisplus"];
    let nss = name
        .strip_prefix("libnss_")
        .and_then(|rest| rest.strip_suffix(".so.2"))
        .is_some_and(|module| NSS.contains(&module));
    MEMBERS.contains(&name) || name.starts_with("ld-linux") || nss
}

#[cfg(test)]
mod tests {
    use bundlegen_fixtures::elf::ElfSpec;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn elf_headers_say_their_abi() {
        let arm = Abi::from_elf_header(&ElfSpec::arm_library("libx.so").build()).unwrap();
        assert_eq!(
            arm,
            Abi {
                is_64: false,
                little_endian: true,
                machine: machine::EM_ARM,
                float: FloatAbi::Hard
            }
        );
        assert!(Abi::for_arch("armv7", None).unwrap().can_load(&arm));
        let big = ElfSpec {
            big_endian: true,
            machine: machine::EM_MIPS,
            flags: 0,
            ..ElfSpec::arm_library("libm.so")
        };
        let mips = Abi::from_elf_header(&big.build()).unwrap();
        assert_eq!((mips.machine, mips.little_endian), (machine::EM_MIPS, false));
        assert!(Abi::for_oci_arch("mips").unwrap().can_load(&mips));
        let x86 = Abi::from_elf_header(&ElfSpec::x86_64_library("liby.so").build()).unwrap();
        assert!(Abi::for_arch("x86_64", None).unwrap().can_load(&x86));
        assert!(!Abi::for_arch("aarch64", None).unwrap().can_load(&x86));
        // This machine's shell is of this program's ABI.
        let sh = std::fs::read("/bin/sh").unwrap();
        let sh = Abi::from_elf_header(&sh[..64]).unwrap();
        assert!(Abi::of_this_program().unwrap().can_load(&sh));
        for junk in [&b""[..], b"#!/bin/sh\n", &[0x7f, b'E', b'L', b'F', 9, 1, 1, 0][..]] {
            assert_eq!(Abi::from_elf_header(junk), None);
        }
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut header = bytes.clone();
            if header.len() >= 4 {
                header[..4].copy_from_slice(b"\x7fELF");
            }
            let _ = Abi::from_elf_header(&bytes);
            let _ = Abi::from_elf_header(&header);
        }
    }
}
