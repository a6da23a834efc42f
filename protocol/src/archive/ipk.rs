//! `.ipk` packages (what opkg installs): an `ar` archive holding
//! `debian-binary`, `control.tar.gz` and `data.tar.gz` (the bundle archive).

use std::io::{self, Read, Write};

use super::ArchiveError;

pub const AR_MAGIC: &[u8; 8] = b"!<arch>\n";

/// The `control` file's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpkControl {
    pub package: String,
    pub version: String,
    /// opkg architecture name, e.g. `armv7`, `arm64`, `amd64`.
    pub architecture: String,
    pub description: String,
    pub priority: String,
    pub depends: Vec<String>,
}

impl IpkControl {
    /// The `control` file text; fails on values that would break its format.
    pub fn render(&self) -> Result<String, ArchiveError> {
        let mut fields = vec![
            ("Package", self.package.clone()),
            ("Version", self.version.clone()),
            ("Architecture", self.architecture.clone()),
            ("Priority", self.priority.clone()),
            ("Description", self.description.clone()),
        ];
        if !self.depends.is_empty() {
            fields.push(("Depends", self.depends.join(", ")));
        }
        let mut text = String::new();
        for (name, value) in fields {
            if value.is_empty() || value.contains(['\n', '\r']) {
                return Err(ArchiveError::Ipk(format!(
                    "control field {name} must be one non-empty line, got {value:?}"
                )));
            }
            if matches!(name, "Package" | "Version" | "Architecture") && value.contains(char::is_whitespace) {
                return Err(ArchiveError::Ipk(format!(
                    "control field {name} must not contain spaces, got {value:?}"
                )));
            }
            text.push_str(&format!("{name}: {value}\n"));
        }
        Ok(text)
    }
}

/// Writes a member header and data; `ar` pads members to an even size.
fn write_member<W: Write>(out: &mut W, name: &str, mtime: i64, size: u64, data: &mut dyn Read) -> io::Result<()> {
    let header = format!(
        "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
        name,
        mtime.max(0),
        0,
        0,
        "100644",
        size
    );
    debug_assert_eq!(header.len(), 60);
    out.write_all(header.as_bytes())?;
    let copied = io::copy(&mut data.take(size), out)?;
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("ipk member {name} is shorter than {size} bytes"),
        ));
    }
    if !size.is_multiple_of(2) {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes an ipk whose `data.tar.gz` is `data` (`data_size` bytes).
pub fn write_ipk<W: Write>(
    control: &IpkControl,
    data: &mut dyn Read,
    data_size: u64,
    mtime: i64,
    mut out: W,
) -> Result<W, ArchiveError> {
    let control_text = control.render()?;
    let control_tar = control_tar_gz(&control_text, mtime).map_err(ArchiveError::io("write", "control.tar.gz"))?;
    let failed = ArchiveError::io("write", "ipk");
    (|| -> io::Result<()> {
        out.write_all(AR_MAGIC)?;
        write_member(&mut out, "debian-binary", mtime, 4, &mut &b"2.0\n"[..])?;
        write_member(
            &mut out,
            "control.tar.gz",
            mtime,
            control_tar.len() as u64,
            &mut control_tar.as_slice(),
        )?;
        write_member(&mut out, "data.tar.gz", mtime, data_size, data)?;
        out.flush()
    })()
    .map_err(failed)?;
    Ok(out)
}

fn control_tar_gz(control: &str, mtime: i64) -> io::Result<Vec<u8>> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    let mut file = tar::Header::new_gnu();
    file.set_entry_type(tar::EntryType::Regular);
    file.set_mode(0o644);
    file.set_mtime(mtime.max(0) as u64);
    file.set_size(control.len() as u64);
    tar.append_data(&mut file, "control", control.as_bytes())?;
    tar.into_inner()?.finish()
}

/// Skips to the `data.tar.*` member of an ipk and returns a reader over it.
pub fn data_member<R: Read>(mut input: R) -> Result<io::Take<R>, ArchiveError> {
    let bad = |reason: String| ArchiveError::Ipk(reason);
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic).map_err(ArchiveError::io("read", "ipk"))?;
    if &magic != AR_MAGIC {
        return Err(bad("not an ar archive".into()));
    }
    loop {
        let mut header = [0u8; 60];
        match input.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(bad("no data.tar member".into())),
            Err(e) => return Err(ArchiveError::io("read", "ipk")(e)),
        }
        if &header[58..60] != b"`\n" {
            return Err(bad("corrupt member header".into()));
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = String::from_utf8_lossy(&header[48..58])
            .trim()
            .parse()
            .map_err(|_| bad(format!("member {name} has a bad size")))?;
        if name.starts_with("data.tar") {
            return Ok(input.take(size));
        }
        let skip = size + size % 2;
        let skipped =
            io::copy(&mut (&mut input).take(skip), &mut io::sink()).map_err(ArchiveError::io("read", "ipk"))?;
        if skipped != skip {
            return Err(bad(format!("member {name} is truncated")));
        }
    }
}
