//! Fuzzes the layer applier: whatever layers contain (raw bytes, or entries
//! built from names full of `..`, `/`, whiteouts and links), applying them
//! must never panic and never touch anything outside the rootfs, and the
//! rootfs in memory must take or refuse each layer as the one on disk does.
#![no_main]

use std::fs;
use std::io::Cursor;
use std::path::Path;

use arbitrary::Arbitrary;
use bundlegen_core::rootfs::MemoryRootfs;
use bundlegen_core::unpack::{DeviceNodes, Limits, UnpackOptions, UnpackState, apply_layer};
use bundlegen_protocol::root::{RootDir, Symlinks};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Part {
    A,
    B,
    Dot,
    DotDot,
    Empty,
    Whiteout,
    Opaque,
    Host,
}

impl Part {
    fn text(self) -> &'static str {
        match self {
            Part::A => "a",
            Part::B => "b",
            Part::Dot => ".",
            Part::DotDot => "..",
            Part::Empty => "",
            Part::Whiteout => ".wh.a",
            Part::Opaque => ".wh..wh..opq",
            Part::Host => "HOST",
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Fifo,
}

#[derive(Arbitrary, Debug)]
struct Entry {
    absolute: bool,
    name: Vec<Part>,
    kind: Kind,
    target_absolute: bool,
    target: Vec<Part>,
    data: u8,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<Vec<u8>>),
    Layers(Vec<Vec<Entry>>),
}

fn join(parts: &[Part], absolute: bool, host: &str) -> String {
    let joined = parts.iter().map(|p| p.text()).collect::<Vec<_>>().join("/").replace("HOST", host);
    if absolute { format!("/{joined}") } else { joined }
}

fn tar_of(entries: &[Entry], host: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries.iter().take(32) {
        let name = join(&entry.name, entry.absolute, host);
        let target = join(&entry.target, entry.target_absolute, host);
        if name.len() > 99 || target.len() > 99 {
            continue;
        }
        let (kind, data): (tar::EntryType, Vec<u8>) = match entry.kind {
            Kind::File => (tar::EntryType::Regular, vec![entry.data; usize::from(entry.data % 7)]),
            Kind::Dir => (tar::EntryType::Directory, Vec::new()),
            Kind::Symlink => (tar::EntryType::Symlink, Vec::new()),
            Kind::HardLink => (tar::EntryType::Link, Vec::new()),
            Kind::Fifo => (tar::EntryType::Fifo, Vec::new()),
        };
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o755);
        header.set_size(data.len() as u64);
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend([0u8; 1024]);
    out
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap_or_default();
        out.push((path.display().to_string(), data));
    }
    out.sort();
    out
}

fuzz_target!(|input: Input| {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("a"), b"host file").unwrap();
    let before = snapshot(&host);
    let host_text = host.display().to_string();
    let layers: Vec<Vec<u8>> = match &input {
        Input::Raw(layers) => layers.iter().take(4).cloned().collect(),
        Input::Layers(layers) => layers.iter().take(4).map(|l| tar_of(l, &host_text)).collect(),
    };
    let mut root = RootDir::create(&tmp.path().join("rootfs"), Symlinks::FollowInRoot).unwrap();
    let mut memory = MemoryRootfs::new(&tmp.path().join("rootfs"), tmp.path()).unwrap();
    let mut state = UnpackState::default();
    let mut memory_state = UnpackState::default();
    let options = UnpackOptions {
        limits: Limits { max_bytes: 1 << 20, max_entries: 10_000 },
        device_nodes: DeviceNodes::Record,
    };
    for layer in &layers {
        let on_disk = apply_layer(&mut root, &mut state, &mut Cursor::new(layer), "fuzz", &options);
        let in_memory = apply_layer(&mut memory, &mut memory_state, &mut Cursor::new(layer), "fuzz", &options);
        let (on_disk, in_memory) = (on_disk.map_err(|e| e.to_string()), in_memory.map_err(|e| e.to_string()));
        assert_eq!(on_disk, in_memory, "the rootfs in memory disagrees");
        if on_disk.is_err() {
            break;
        }
    }
    let _ = state.finish(&mut root);
    let _ = memory_state.finish(&mut memory);
    assert_eq!(state.manifest, memory_state.manifest, "the manifests differ");
    assert_eq!(snapshot(&host), before, "the host directory changed");
    let mut names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["host", "rootfs"], "something was created outside the rootfs");
});
