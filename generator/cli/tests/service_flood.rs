//! `bundlegen serve` under a connection flood: silent connections past
//! what its file descriptors allow must neither make it spin on `accept`
//! nor lock others out: the idlest make room for new ones.

mod support;

use std::time::Duration;

use support::service::{Server, client};

/// CPU seconds (user and system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100);
    ticks as f64 / per_second as f64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_silent_connections_neither_spins_nor_locks_others_out() {
    let dir = tempfile::tempdir().unwrap();
    // The default idle limit (60 s): room is made by closing the idlest.
    let server = Server::start(dir.path(), &[]);
    let pid = server.child.id();
    // Few descriptors, so the flood runs the process out of them.
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=128:128"])
        .status()
        .expect("prlimit runs (util-linux)");
    assert!(limited.success());
    let address = server.url.trim_start_matches("http://").to_string();

    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    // Out of descriptors with connections waiting: it must wait, not spin.
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(pid) - before;
    assert!(used < 1.0, "{used:.2} CPU seconds in 3 seconds of a flood");

    // A real client gets in, long before anyone idles out.
    let health = client()
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("/healthz answers through the flood");
    assert!(health.status().is_success(), "{}", health.status());
    let mut byte = [0u8; 1];
    let first = &mut silent[0];
    let read = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(first, &mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent connection was closed: {read:?}"
    );
}
