//! A test PKI made with `openssl`: a root CA, an intermediate, and signing
//! certificates with chosen keys, dates and uses (`openssl ca` sets dates,
//! so expired and short-lived certificates can be made).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::run;

pub struct Pki {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub intermediate: PathBuf,
}

/// A key and its certificate.
pub struct Signer {
    pub key: PathBuf,
    pub certificate: PathBuf,
}

#[derive(Clone, Copy)]
pub enum Key {
    EcP256,
    Rsa,
}

const CA_CONFIG: &str = "[ ca ]\ndefault_ca = test\n[ test ]\ndir = .\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = any\ncopy_extensions = none\n[ any ]\ncommonName = supplied\norganizationName = optional\n[ ca_ext ]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n[ signer ]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = codeSigning\n[ server ]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n";

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

fn new_key(dir: &Path, name: &str, key: Key) -> PathBuf {
    let file = format!("{name}.key");
    match key {
        Key::EcP256 => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &file,
            ],
        ),
        Key::Rsa => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &file,
            ],
        ),
    }
    dir.join(file)
}

/// `YYYYMMDDHHMMSSZ` for `years` from now (negative: ago).
pub fn years_from_now(years: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let seconds = now + years * 365 * 86_400;
    let (year, month, day) = bundlegen_protocol::civil::civil_from_days(seconds.div_euclid(86_400));
    format!("{year:04}{month:02}{day:02}000000Z")
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("ca.cnf"), CA_CONFIG).unwrap();
        fs::write(dir.join("index.txt"), "").unwrap();
        fs::write(dir.join("serial"), "1000\n").unwrap();
        let root_key = new_key(dir, "root", Key::EcP256);
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                root_key.to_str().unwrap(),
                "-subj",
                "/CN=Test Root CA",
                "-days",
                "7300",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                "root.pem",
            ],
        );
        let pki = Pki {
            dir: dir.to_path_buf(),
            root: dir.join("root.pem"),
            intermediate: dir.join("intermediate.pem"),
        };
        pki.issue(
            "intermediate",
            Key::EcP256,
            "ca_ext",
            ("root.pem", "root.key"),
            &years_from_now(-1),
            &years_from_now(15),
        );
        pki
    }

    fn issue(&self, name: &str, key: Key, extensions: &str, issuer: (&str, &str), start: &str, end: &str) -> Signer {
        let key_path = new_key(&self.dir, name, key);
        let csr = format!("{name}.csr");
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-key",
                key_path.to_str().unwrap(),
                "-subj",
                &format!("/CN={name}/O=Example"),
                "-out",
                &csr,
            ],
        );
        let certificate = format!("{name}.pem");
        openssl(
            &self.dir,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-extensions",
                extensions,
                "-cert",
                issuer.0,
                "-keyfile",
                issuer.1,
                "-startdate",
                start,
                "-enddate",
                end,
                "-in",
                &csr,
                "-out",
                &certificate,
            ],
        );
        Signer {
            key: key_path,
            certificate: self.dir.join(certificate),
        }
    }

    /// A code-signing certificate from the intermediate, valid 10 years.
    pub fn signer(&self, name: &str, key: Key) -> Signer {
        self.signer_between(name, key, &years_from_now(-1), &years_from_now(10))
    }

    pub fn signer_between(&self, name: &str, key: Key, start: &str, end: &str) -> Signer {
        self.issue(
            name,
            key,
            "signer",
            ("intermediate.pem", "intermediate.key"),
            start,
            end,
        )
    }

    /// A certificate for TLS servers only (its uses exclude code signing).
    pub fn server(&self, name: &str) -> Signer {
        self.issue(
            name,
            Key::EcP256,
            "server",
            ("intermediate.pem", "intermediate.key"),
            &years_from_now(-1),
            &years_from_now(10),
        )
    }

    /// Another root, which nothing here chains to.
    pub fn other_root(dir: &Path) -> PathBuf {
        Pki::new(dir).root
    }
}
