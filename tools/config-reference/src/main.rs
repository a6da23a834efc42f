//! `cargo run -p config-reference`: rewrites `docs/reference/`.

use std::fs;
use std::path::Path;

use bundlegen_protocol::fsutil::write_file_atomic;

fn main() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference");
    fs::create_dir_all(&dir)?;
    for reference in config_reference::references() {
        let markdown = dir.join(format!("{}.md", reference.name));
        write_file_atomic(&markdown, reference.markdown().as_bytes(), 0o644)?;
        let schema = dir.join(format!("{}.schema.json", reference.name));
        write_file_atomic(&schema, reference.schema_json().as_bytes(), 0o644)?;
        println!("docs/reference/{}.md", reference.name);
    }
    Ok(())
}
