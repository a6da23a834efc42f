//! The image → bundle library stays a library: whoever embeds it (the fuzz
//! target, the agent's tests, another tool) builds no HTTP server, database,
//! queue, command-line or logging-setup crate. HTTP comes only as reqwest's
//! client.

use std::process::Command;

/// Crates that belong to the service or the CLI, never to the library.
const FORBIDDEN: &[&str] = &[
    "axum",
    "rusqlite",
    "tokio-postgres",
    "lapin",
    "clap",
    "indicatif",
    "tracing-subscriber",
    "anyhow",
];

#[test]
fn the_library_depends_on_no_server_database_queue_or_cli_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--offline", "-p", "bundlegen-core", "-e", "normal"])
        .args(["--prefix", "none", "--format", "{p} [{f}]"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    let packages: Vec<(&str, &str)> = tree
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(' ')?;
            Some((name, rest.split_once('[').map_or("", |(_, features)| features)))
        })
        .collect();
    assert!(
        packages.iter().any(|(name, _)| *name == "bundlegen-core"),
        "the tree lists the crate itself:\n{tree}"
    );
    let forbidden: Vec<&str> = packages
        .iter()
        .filter(|(name, _)| FORBIDDEN.contains(name))
        .map(|(name, _)| *name)
        .collect();
    assert!(forbidden.is_empty(), "bundlegen-core pulls in {forbidden:?}:\n{tree}");
    let servers: Vec<&str> = packages
        .iter()
        .filter(|(name, features)| name.starts_with("hyper") && features.split(',').any(|f| f.contains("server")))
        .map(|(name, _)| *name)
        .collect();
    assert!(
        servers.is_empty(),
        "an HTTP server in bundlegen-core: {servers:?}:\n{tree}"
    );
}
