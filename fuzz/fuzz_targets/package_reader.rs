//! Fuzzes the RALF package reader: whatever a `.ralf` file holds (a ZIP or
//! tar of any shape, layout documents of any content), opening it, reading
//! its layout and verifying it must never panic, hang or read outside the
//! file. Inputs that start as a valid package mutate into hostile ones.
#![no_main]

use std::io::Write;

use bundlegen_protocol::ralf::package::{PackageFile, check_content_verity, read_layout, verify};
use bundlegen_protocol::ralf::signature::Trust;
use libfuzzer_sys::fuzz_target;
use rustls::pki_types::UnixTime;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(data).unwrap();
    let Ok(package) = PackageFile::from_file(file) else {
        return;
    };
    for name in package.names().map(String::from).collect::<Vec<_>>() {
        let _ = package.read(&name, 1 << 20);
    }
    if let Ok(layout) = read_layout(&package) {
        let _ = check_content_verity(&package, &layout);
        let _ = package.check_blob(&layout.content);
    }
    let trust = Trust::Roots {
        roots: Vec::new(),
        check_time: true,
    };
    let _ = verify(&package, &trust, UnixTime::now(), true);
});
