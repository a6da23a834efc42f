//! PKCS#12 signing files, decrypted by `openssl pkcs12` (on every build
//! host; a native reader would need a dozen cipher and KDF crates for the
//! legacy and current encryptions alike). The passphrase goes in on stdin
//! and the key comes back on stdout: neither touches the disk nor shows in
//! the process list.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The key and certificates in `path` as PEM, in memory.
pub(crate) fn to_pem(path: &Path, passphrase: &str) -> Result<Vec<u8>, String> {
    if passphrase.contains(['\n', '\r']) {
        return Err("the passphrase has a line break, which openssl cannot be given".into());
    }
    match openssl(path, passphrase, false)? {
        Ok(pem) => Ok(pem),
        // OpenSSL 3 reads RC2/3DES-encrypted files (OpenSSL 1.x's default)
        // only with its legacy provider.
        Err(stderr) if stderr.contains("unsupported") => openssl(path, passphrase, true)?.map_err(|e| explain(&e)),
        Err(stderr) => Err(explain(&stderr)),
    }
}

/// Runs openssl: its output, or what it said when it failed.
fn openssl(path: &Path, passphrase: &str, legacy: bool) -> Result<Result<Vec<u8>, String>, String> {
    let mut command = Command::new("openssl");
    command.args(["pkcs12", "-nodes", "-passin", "stdin", "-in"]).arg(path);
    if legacy {
        command.arg("-legacy");
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running openssl, which reads PKCS#12 files: {e}"))?;
    // A short write into an empty pipe: it cannot block on openssl.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{passphrase}");
    }
    let output = child.wait_with_output().map_err(|e| format!("running openssl: {e}"))?;
    Ok(if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    })
}

fn explain(stderr: &str) -> String {
    if stderr.contains("mac verify") || stderr.contains("Mac verify") {
        return "wrong passphrase (the file's MAC does not verify with it)".into();
    }
    let said = stderr
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("no reason given");
    format!("not a PKCS#12 file openssl can read: {said}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_failures_are_explained() {
        for (stderr, expected) in [
            ("Mac verify error: invalid password?\n", "wrong passphrase"),
            (
                "\n40F7:error:0680007B:asn1 encoding routines:ASN1_get_object:header too long\n",
                "not a PKCS#12 file openssl can read: 40F7:error:0680007B",
            ),
            ("", "no reason given"),
        ] {
            assert!(explain(stderr).contains(expected), "{stderr:?} -> {}", explain(stderr));
        }
    }

    #[test]
    fn a_passphrase_with_a_line_break_is_refused_before_openssl_runs() {
        let error = to_pem(Path::new("/nonexistent.p12"), "one\ntwo").unwrap_err();
        assert!(error.contains("line break"), "{error}");
    }
}
