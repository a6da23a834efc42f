//! Writes an EROFS image of a directory, with a dm-verity tree appended:
//! the package content step alone, for benchmarks against `mkfs.erofs` and
//! `veritysetup format` on the same tree (`tests/bench/package_bench.py`).
//!
//! `cargo run --release -p bundlegen-core --example erofs_image -- DIR OUT [lz4[:DEPTH]|zstd|none]`

use std::fs::File;

use bundlegen_core::erofs::{Compression, Options, Tree, write_image};
use bundlegen_protocol::ralf::verity;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, source, output, rest @ ..] = &args[..] else {
        return Err("usage: erofs_image DIR OUT [lz4[:DEPTH]|zstd|none]".into());
    };
    let compression = match rest.first().map(String::as_str) {
        None | Some("lz4") => Compression::LZ4HC,
        Some(name) if name.starts_with("lz4:") => Compression::Lz4 {
            depth: name[4..].parse()?,
        },
        Some("zstd") => Compression::Zstd { level: 3 },
        Some("none") => Compression::None,
        Some(other) => return Err(format!("unknown compression {other}").into()),
    };
    let tree = Tree::from_dir(source.as_ref())?;
    let out = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(output)?;
    let options = Options {
        compression,
        build_time: 0,
        threads: 0,
    };
    let written = write_image(&tree, &options, &out)?;
    let tree = verity::append_tree(&out, written.size, &[0x5a; 32], [0; 16])?;
    println!(
        "image {} bytes, with tree {} bytes",
        written.size,
        written.size + tree.tree_size
    );
    Ok(())
}
