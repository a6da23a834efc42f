//! `cargo run -p config-reference`: rewrites `docs/reference/`.

use std::fs;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference");
    fs::create_dir_all(&dir)?;
    for reference in config_reference::references() {
        fs::write(dir.join(format!("{}.md", reference.name)), reference.markdown())?;
        fs::write(
            dir.join(format!("{}.schema.json", reference.name)),
            reference.schema_json(),
        )?;
        println!("docs/reference/{}.md", reference.name);
    }
    Ok(())
}
