//! What the agent writes to the journal: every state-changing call with
//! what it was about and, when refused, why; every operation's steps and
//! outcome with its handle, app and version; every refused push.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_journal_says_what_was_asked_what_happened_and_why() {
    let bus = Bus::start();
    let _dobby = dobby_double::serve(&bus.address, dobby_double::Dobby::new(false))
        .await
        .unwrap();
    let files = FileServer::start();
    let app = "com.example.logged";
    let archive = bundle_archive(app, 4096);
    let sha = sha256(&archive);
    let url = files.add("logged.tar.gz", archive);

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("dev-token");
    std::fs::write(&token_file, "the-dev-token\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config_file = dir.path().join("agent.toml");
    std::fs::write(
        &config_file,
        format!(
            "storage_root = \"{}\"\ndbus_address = \"{}\"\nprobe = false\nallow_unsigned = true\n\
             [developer]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
            dir.path().join("dac").display(),
            bus.address,
            token_file.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("journal");
    let _process = AgentProcess::start_logging_to(&config_file, &log);
    let client = bus.connect().await;
    wait_for_name(&client, "org.rdk.dac.BundleAgent", Duration::from_secs(20)).await;
    let agent = BundleAgent1Proxy::new(&client).await.unwrap();

    // Refused at the call, installed, launched.
    let _ = agent.install("../etc", "1.0", &url, &sha, HashMap::new()).await;
    let handle = agent.install(app, "1.0", &url, &sha, HashMap::new()).await.unwrap();
    assert_eq!(finished(&agent, &handle).await.0, "Success");
    agent.launch(app, "").await.unwrap();
    // A push with the wrong token.
    let refused = reqwest_like_push(port, "not-the-token").await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let journal = std::fs::read_to_string(&log).unwrap();
    let operation = format!("handle=\"{handle}\" operation=\"Installing\" app=\"{app}\" version=\"1.0\"");
    let expected: Vec<Vec<&str>> = vec![
        vec![
            "refused: org.rdk.dac.BundleAgent1.Error.WrongParams: app id \"../etc\"",
            "method=\"Install\" subject=\"../etc 1.0 from",
        ],
        vec!["accepted:", &handle, "method=\"Install\""],
        vec!["queued", &operation],
        vec!["downloading", &operation],
        vec!["unpacking", &operation],
        vec!["Success: installed at", &operation],
        vec!["launching", "app=\"com.example.logged\" version=\"1.0\""],
        vec!["accepted:", "method=\"Launch\""],
        vec![
            "push refused: a developer token is required",
            "status=401 code=\"unauthorized\"",
        ],
    ];
    for parts in &expected {
        assert!(
            journal.lines().any(|line| parts.iter().all(|part| line.contains(part))),
            "the journal has a line with {parts:?}:\n{journal}"
        );
    }
}

/// A push by hand: the request head only, as a client with a wrong token
/// sends it before its body; the answer's head.
async fn reqwest_like_push(port: u16, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /v1/push?app=com.example.logged HTTP/1.1\r\nhost: box\r\nauthorization: Bearer {token}\r\n\
         content-length: 4\r\n\r\nabcd"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}
