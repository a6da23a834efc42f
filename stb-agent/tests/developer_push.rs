//! The developer push endpoint (`bundlegen push`): installing and launching
//! as `dev`, and what it refuses: wrong tokens, junk, bodies that do not fit
//! the box, more pushes at once than it takes.

mod support;

use std::path::Path;
use std::time::Duration;

use bundlegen_core::push::{PushError, PushRequest};
use bundlegen_protocol::http::HttpError;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A push's request head sent by hand (`headers` end with the blank line
/// only when given); the open connection.
async fn push_head(port: u16, headers: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /v1/push?app=com.example.raw HTTP/1.1\r\nhost: box\r\nauthorization: Bearer {TOKEN}\r\n{headers}"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// The answer on `stream`: its status line and body.
async fn answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buffer[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "an answer came");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Files left in the agent's downloads directory.
fn downloads(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("downloads"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn developer_push_installs_and_launches_as_dev() {
    let dir = tempfile::tempdir().unwrap();
    let (setup, port) = developer_box(dir.path(), false, |_| {}).await;
    let agent = setup.proxy().await;
    let archive = dir.path().join("com.example.pushed.tar.gz");
    std::fs::write(&archive, bundle_archive("com.example.pushed", 4096)).unwrap();
    let request = PushRequest {
        device: format!("http://127.0.0.1:{port}"),
        token: TOKEN.into(),
        archive: archive.clone(),
        app: None,
        launch: true,
        ca_file: None,
    };
    let pushed = bundlegen_core::push::push(&request).await.unwrap();
    assert_eq!(
        (pushed.app.as_str(), pushed.version.as_str()),
        ("com.example.pushed", "dev")
    );
    assert!(pushed.descriptor.is_some_and(|d| d > 0), "{pushed:?}");
    assert_eq!(agent.list("com.example.pushed").await.unwrap()[0].1, "dev");

    // Pushing again replaces the running dev version and launches it again.
    let again = bundlegen_core::push::push(&request).await.unwrap();
    assert!(again.descriptor.is_some());

    // A wrong token with a large archive: the box's 401, not a broken pipe.
    let large = dir.path().join("com.example.large.tar.gz");
    std::fs::write(&large, bundle_archive("com.example.large", 16 << 20)).unwrap();
    let wrong_token = PushRequest {
        token: "guess".into(),
        archive: large,
        ..request.clone()
    };
    match bundlegen_core::push::push(&wrong_token).await {
        Err(PushError::Http(HttpError::Refused { status: 401, .. })) => {}
        other => panic!("a wrong token is refused: {other:?}"),
    }
    let not_a_bundle = dir.path().join("junk.tar.gz");
    std::fs::write(&not_a_bundle, gzip(b"not a tar archive at all")).unwrap();
    let junk = PushRequest {
        archive: not_a_bundle,
        launch: false,
        ..request.clone()
    };
    match bundlegen_core::push::push(&junk).await {
        Err(PushError::Http(HttpError::Refused { status: 422, code, .. })) => assert_eq!(code, "BadArchive"),
        other => panic!("junk is refused: {other:?}"),
    }
    assert_eq!(agent.list("junk").await.unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_must_fit_the_box_and_are_limited_in_number() {
    let dir = tempfile::tempdir().unwrap();
    // 16 MiB of bundles, archives unpacking to 3 times their size.
    let (setup, port) = developer_box(dir.path(), false, |c| {
        c.quota = bundlegen_protocol::config::size::Size(16 << 20);
        c.unpack_factor = 3;
    })
    .await;

    // A stated size that cannot fit is refused before a byte of the body.
    let mut stated = push_head(port, "content-length: 104857600\r\n\r\n").await;
    let refused = answer(&mut stated).await;
    assert!(refused.starts_with("HTTP/1.1 507"), "{refused}");
    assert!(refused.contains("QuotaExceeded"), "{refused}");

    // No size stated, and no end: cut off once it outgrows the quota.
    let mut endless = push_head(port, "transfer-encoding: chunked\r\n\r\n").await;
    let chunk = [
        format!("{:x}\r\n", 64 << 10).into_bytes(),
        vec![0u8; 64 << 10],
        b"\r\n".to_vec(),
    ]
    .concat();
    let mut sent = 0usize;
    while endless.write_all(&chunk).await.is_ok() && sent < 256 << 20 {
        sent += 64 << 10;
    }
    assert!(sent < 64 << 20, "the agent stopped reading after {sent} bytes");
    let refused = answer(&mut endless).await;
    assert!(refused.starts_with("HTTP/1.1 507"), "{refused}");
    assert!(refused.contains("QuotaExceeded"), "{refused}");
    assert!(
        downloads(&setup.root).is_empty(),
        "nothing left: {:?}",
        downloads(&setup.root)
    );

    // Two pushes in progress (bodies still coming) take every slot: a
    // third is told to come back.
    let mut holding = Vec::new();
    for _ in 0..2 {
        let mut stream = push_head(port, "transfer-encoding: chunked\r\n\r\n").await;
        stream.write_all(b"4\r\nabcd\r\n").await.unwrap();
        holding.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = push_head(port, "content-length: 4\r\n\r\nabcd").await;
    let busy = answer(&mut third).await;
    assert!(busy.starts_with("HTTP/1.1 429"), "{busy}");
    assert!(busy.to_ascii_lowercase().contains("retry-after: 5"), "{busy}");

    // Once they hang up, pushes are taken again, and what they left is gone.
    drop(holding);
    let archive = dir.path().join("fits.tar.gz");
    std::fs::write(&archive, bundle_archive("com.example.fits", 4096)).unwrap();
    let request = PushRequest {
        device: format!("http://127.0.0.1:{port}"),
        token: TOKEN.into(),
        archive,
        app: None,
        launch: false,
        ca_file: None,
    };
    let mut pushed = None;
    for _ in 0..50 {
        match bundlegen_core::push::push(&request).await {
            Err(PushError::Http(HttpError::Refused { status: 429, .. })) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => {
                pushed = Some(other.unwrap());
                break;
            }
        }
    }
    assert_eq!(pushed.expect("a slot came free").version, "dev");
    assert!(
        downloads(&setup.root).is_empty(),
        "nothing left: {:?}",
        downloads(&setup.root)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_package_installs_as_its_own_version_and_runs() {
    use support::packages::*;
    let dir = tempfile::tempdir().unwrap();
    let signing = Signing::new(&dir.path().join("pki"));
    let mut programs = host_closure("/bin/sh");
    programs.push("/usr/bin/sleep".into());
    let mut files = host_files(&programs);
    files.push((
        "/app/run.sh".into(),
        b"#!/bin/sh\necho pushed > /data/out\nexec sleep 30\n".to_vec(),
        0o755,
    ));
    let package = make_package(
        &image(&dir.path().join("image"), &[&files], "/app/run.sh"),
        &package_config("com.example.pushed", "1.4.0", "application", "app/run.sh"),
        &dir.path().join("pushed.ralf"),
        bundlegen_protocol::ralf::ContentKind::Tar,
        &[],
        Some(&signing.identity()),
    )
    .await;
    let (ca_roots, base_spec) = (signing.ca_roots(&dir.path().join("certs")), crun_base_spec(dir.path()));
    let (setup, port) = developer_box(dir.path(), true, |c| {
        c.allow_unsigned = false;
        c.packages.ca_roots = ca_roots;
        c.packages.base_spec = Some(base_spec);
    })
    .await;
    let request = PushRequest {
        device: format!("http://127.0.0.1:{port}"),
        token: TOKEN.into(),
        archive: package.clone(),
        app: None,
        launch: is_root(),
        ca_file: None,
    };
    let pushed = bundlegen_core::push::push(&request).await.unwrap();
    assert_eq!(
        (pushed.app.as_str(), pushed.version.as_str()),
        ("com.example.pushed", "1.4.0")
    );
    let agent = setup.proxy().await;
    let packages = agent.list_packages("com.example.pushed").await.unwrap();
    assert_eq!(packages[0].2, "application");
    if is_root() {
        assert!(pushed.descriptor.is_some_and(|d| d > 0), "{pushed:?}");
        let out = setup.root.join("data/com.example.pushed/out");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&out).unwrap_or_default() != "pushed\n" {
            assert!(std::time::Instant::now() < deadline, "the pushed app did not run");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent.stop("com.example.pushed", true).await.unwrap();
    }

    // A package is installed as what it says it is, never under another id.
    let other = PushRequest {
        app: Some("com.example.other".into()),
        launch: false,
        ..request
    };
    match bundlegen_core::push::push(&other).await {
        Err(PushError::Http(HttpError::Refused {
            status, code, message, ..
        })) => {
            assert_eq!((status, code.as_str()), (422, "BadArchive"), "{message}");
            assert!(message.contains("id is \"com.example.pushed\""), "{message}");
        }
        other => panic!("a package pushed as another app: {other:?}"),
    }
    assert!(downloads(&setup.root).is_empty(), "{:?}", downloads(&setup.root));
}
