//! What the agent's tests run against: a private system-type `dbus-daemon`
//! with the agent's shipped policy, the Dobby test double, an HTTP server
//! with ranges and throttling, bundle archives, and the agent itself (in
//! this process or as its real binary).

#![allow(dead_code)] // Each test file uses a part.

pub mod packages;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stb_agent::config::AgentConfig;
use stb_agent::dbus::{LockInfo, PackageRow};
use zbus::Variant;

/// A private bus configured like a box's system bus: everything denied but
/// what the shipped policies allow.
pub struct Bus {
    child: Child,
    pub address: String,
    dir: tempfile::TempDir,
}

impl Bus {
    pub fn start() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        // Other users may reach the socket; the policy decides what they may do.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.rdk.dac.BundleAgent.conf");
        let dobby_policy = dir.path().join("dobby.conf");
        // Dobby's own policy, as its package installs it.
        std::fs::write(
            &dobby_policy,
            r#"<busconfig><policy user="root"><allow own="org.rdk.dobby"/>
               <allow send_destination="org.rdk.dobby"/></policy></busconfig>"#,
        )
        .unwrap();
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"/>
  </policy>
  <include>{policy}</include>
  <include>{dobby}</include>
</busconfig>
"#,
                socket = dir.path().join("system_bus_socket").display(),
                policy = policy.display(),
                dobby = dobby_policy.display(),
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("bus.log")).unwrap())
            .spawn()
            .expect("dbus-daemon runs (tests/install-peers installs it)");
        let mut address = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        assert!(address.starts_with("unix:"), "dbus-daemon printed {address:?}");
        Bus {
            child,
            address: address.trim().to_string(),
            dir,
        }
    }

    /// What dbus-daemon wrote to stderr: problems with the policy files are
    /// only logged there, never fatal.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bus.log")).unwrap_or_default()
    }

    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .unwrap()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's interface, as a client sees it.
#[zbus::proxy(
    interface = "org.rdk.dac.BundleAgent1",
    default_service = "org.rdk.dac.BundleAgent",
    default_path = "/org/rdk/dac/BundleAgent"
)]
pub trait BundleAgent1 {
    fn install(
        &self,
        app: &str,
        version: &str,
        source: &str,
        sha256: &str,
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<String>;
    fn uninstall(&self, app: &str, version: &str, mode: &str) -> zbus::Result<String>;
    fn cancel(&self, handle: &str) -> zbus::Result<()>;
    fn get_progress(&self, handle: &str) -> zbus::Result<(String, u32, String, String)>;
    fn list(&self, app: &str) -> zbus::Result<Vec<(String, String, bool, String, u64, u32)>>;
    fn get_metadata(&self, app: &str, version: &str) -> zbus::Result<HashMap<String, String>>;
    fn set_metadata(&self, app: &str, version: &str, key: &str, value: &str) -> zbus::Result<()>;
    fn clear_metadata(&self, app: &str, version: &str, key: &str) -> zbus::Result<()>;
    fn get_storage_details(&self) -> zbus::Result<(u64, u64, u64)>;
    fn lock(&self, app: &str, version: &str, reason: &str, owner: &str) -> zbus::Result<String>;
    fn unlock(&self, handle: &str) -> zbus::Result<()>;
    fn get_lock_info(&self, app: &str, version: &str) -> zbus::Result<LockInfo>;
    fn launch(&self, app: &str, version: &str) -> zbus::Result<i32>;
    fn list_packages(&self, app: &str) -> zbus::Result<Vec<PackageRow>>;
    fn get_package_info(&self, app: &str, version: &str) -> zbus::Result<HashMap<String, zbus::OwnedVariant>>;
    fn stop(&self, app: &str, force: bool) -> zbus::Result<()>;
    #[zbus(signal)]
    fn operation_status(
        &self,
        handle: &str,
        operation: &str,
        app: &str,
        version: &str,
        status: &str,
        details: &str,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn progress(&self, handle: &str, percent: u32, stage: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    fn app_started(&self, app: &str, descriptor: i32) -> zbus::Result<()>;
    #[zbus(signal)]
    fn app_stopped(&self, app: &str, status: i32) -> zbus::Result<()>;
}

/// The D-Bus error name's last part and its message.
pub fn dbus_error<T: std::fmt::Debug>(result: zbus::Result<T>) -> (String, String) {
    match result {
        Err(zbus::Error::MethodError(name, message, _)) => (
            name.rsplit('.').next().unwrap_or_default().to_string(),
            message.unwrap_or_default(),
        ),
        other => panic!("expected a D-Bus error, got {other:?}"),
    }
}

/// Polls an operation until it ends: (status, error).
pub async fn finished(agent: &BundleAgent1Proxy<'_>, handle: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, _, _, error) = agent.get_progress(handle).await.unwrap();
        if matches!(status.as_str(), "Success" | "Failed" | "Cancelled") {
            return (status, error);
        }
        assert!(Instant::now() < deadline, "{handle} did not finish: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `name` has an owner on the bus.
pub async fn wait_for_name(connection: &zbus::Connection, name: &str, limit: Duration) {
    let dbus = zbus::fdo::DBusProxy::new(connection).await.unwrap();
    let deadline = Instant::now() + limit;
    while !dbus.name_has_owner(name.try_into().unwrap()).await.unwrap_or(false) {
        assert!(Instant::now() < deadline, "nobody owns {name}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Files served over HTTP/1.1 with `ETag`, single ranges and `If-Range`,
/// as a CDN serves bundles; optionally throttled, and failing the next
/// requests with 503 + `Retry-After` on demand.
pub struct FileServer {
    pub url: String,
    state: Arc<Mutex<ServerState>>,
}

#[derive(Default)]
struct ServerState {
    files: HashMap<String, Vec<u8>>,
    bytes_per_second: Option<u64>,
    unavailable: u32,
    /// The start offset of every request with a `Range` header.
    range_starts: Vec<u64>,
    requests: usize,
    /// Paths answered with zeros, chunked, until the client hangs up.
    endless: HashSet<String>,
    /// Bytes of endless bodies written.
    endless_sent: u64,
}

impl FileServer {
    pub fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ServerState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve_one(stream, &state);
                });
            }
        });
        FileServer { url, state }
    }

    /// Serves `data` at `/name`; returns its URL.
    pub fn add(&self, name: &str, data: Vec<u8>) -> String {
        self.state.lock().unwrap().files.insert(format!("/{name}"), data);
        format!("{}/{name}", self.url)
    }

    /// Serves an endless body at `/name`, chunked with no size given (a
    /// hostile or broken server); returns its URL.
    pub fn add_endless(&self, name: &str) -> String {
        self.state.lock().unwrap().endless.insert(format!("/{name}"));
        format!("{}/{name}", self.url)
    }

    /// Bytes of endless bodies written so far.
    pub fn endless_sent(&self) -> u64 {
        self.state.lock().unwrap().endless_sent
    }

    pub fn throttle(&self, bytes_per_second: Option<u64>) {
        self.state.lock().unwrap().bytes_per_second = bytes_per_second;
    }

    /// The next `count` requests get 503 with `Retry-After: 1`.
    pub fn fail_next(&self, count: u32) {
        self.state.lock().unwrap().unavailable = count;
    }

    pub fn range_starts(&self) -> Vec<u64> {
        self.state.lock().unwrap().range_starts.clone()
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }
}

fn serve_one(mut stream: TcpStream, state: &Mutex<ServerState>) -> std::io::Result<()> {
    let shared = state;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let asked_start = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<u64>().ok());
    let (data, throttle) = {
        let mut state = state.lock().unwrap();
        state.requests += 1;
        if state.unavailable > 0 {
            state.unavailable -= 1;
            drop(state);
            return stream
                .write_all(b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
        if let Some(start) = asked_start {
            state.range_starts.push(start);
        }
        if state.endless.contains(&path) {
            drop(state);
            return serve_endless(stream, shared);
        }
        (state.files.get(&path).cloned(), state.bytes_per_second)
    };
    let Some(data) = data else {
        return stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    let etag = format!("\"{}\"", bundlegen_protocol::digest::Sha256Digest::of(&data).hex());
    let range_start = asked_start
        .filter(|_| headers.get("if-range").is_none_or(|tag| *tag == etag))
        .filter(|start| *start < data.len() as u64);
    let (status, body, extra) = match range_start {
        Some(start) => (
            "206 Partial Content",
            &data[start as usize..],
            format!("Content-Range: bytes {start}-{}/{}\r\n", data.len() - 1, data.len()),
        ),
        None => ("200 OK", &data[..], String::new()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )?;
    let chunk = 16 * 1024;
    for piece in body.chunks(chunk) {
        stream.write_all(piece)?;
        if let Some(rate) = throttle {
            std::thread::sleep(Duration::from_secs_f64(piece.len() as f64 / rate as f64));
        }
    }
    Ok(())
}

/// Zeros in 64 KiB chunks until the client hangs up.
fn serve_endless(mut stream: TcpStream, state: &Mutex<ServerState>) -> std::io::Result<()> {
    stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")?;
    let zeros = vec![0u8; 64 << 10];
    loop {
        write!(stream, "{:x}\r\n", zeros.len())?;
        stream.write_all(&zeros)?;
        stream.write_all(b"\r\n")?;
        state.lock().unwrap().endless_sent += zeros.len() as u64;
    }
}

/// A small deterministic generator (xorshift64); a seed replays a run.
pub struct Random(pub u64);

impl Random {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// Seeded from `CRASH_SEED`, else from the clock; the seed is printed
    /// so that a failing run can be replayed.
    pub fn for_crash_test(test: &str) -> Random {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{test} seed: CRASH_SEED={seed}");
        Random(seed)
    }
}

/// Bytes that do not compress (so a bundle's archive is as large as asked).
pub fn noise(length: usize, seed: u64) -> Vec<u8> {
    let mut random = Random(seed | 1);
    (0..length).map(|_| random.next() as u8).collect()
}

/// A bundle archive (tar.gz) Dobby accepts: a `1.0.2-dobby` config.json
/// with a logging plugin, and a rootfs with `/app/payload` of `payload` bytes.
pub fn bundle_archive(app: &str, payload: usize) -> Vec<u8> {
    let config = serde_json::json!({
        "ociVersion": "1.0.2-dobby",
        "process": {"args": ["/app/run"], "cwd": "/", "user": {"uid": 1000, "gid": 1000}},
        "root": {"path": "rootfs", "readonly": true},
        "hostname": app,
        "rdkPlugins": {"logging": {"required": true, "data": {"sink": "devnull"}}},
    });
    let config = serde_json::to_vec_pretty(&config).unwrap();
    let run = b"#!/bin/sh\necho hello\n";
    let data = noise(payload, app.len() as u64 + payload as u64);
    let tar = bundlegen_fixtures::tar::archive(&[
        bundlegen_fixtures::tar::RawEntry::file("config.json", &config),
        bundlegen_fixtures::tar::RawEntry::dir("rootfs/"),
        bundlegen_fixtures::tar::RawEntry::dir("rootfs/app/"),
        bundlegen_fixtures::tar::RawEntry::file("rootfs/app/run", run).mode(0o755),
        bundlegen_fixtures::tar::RawEntry::file("rootfs/app/payload", &data),
    ]);
    gzip(&tar)
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    bundlegen_protocol::digest::Sha256Digest::of(data).hex()
}

/// A configuration for a test: storage in `root`, the private bus, no
/// probe, unsigned bundles allowed (tests of signatures set keys).
pub fn config(bus: &Bus, root: &Path) -> AgentConfig {
    let mut config = AgentConfig {
        storage_root: root.to_path_buf(),
        dbus_address: Some(bus.address.clone()),
        probe: false,
        allow_unsigned: true,
        ..AgentConfig::default()
    };
    config.packages.runtime_dir = root.join("run");
    config
}

/// What most tests run: a private bus, the Dobby test double, the agent in
/// this process (storage under `root`), a client connection, and an HTTP
/// server for bundles.
pub struct TestBox {
    pub bus: Bus,
    pub root: PathBuf,
    pub client: zbus::Connection,
    pub files: FileServer,
    _dobby: zbus::Connection,
    _agent: stb_agent::Running,
    _dir: Option<tempfile::TempDir>,
}

impl TestBox {
    /// With storage in a new temporary directory.
    pub async fn start(change: impl FnOnce(&mut AgentConfig)) -> TestBox {
        let dir = tempfile::tempdir().unwrap();
        let mut started = TestBox::start_at(dir.path(), false, change).await;
        started._dir = Some(dir);
        started
    }

    /// With storage in `root`; `crun`: the double runs crun-mode bundles with real crun.
    pub async fn start_at(root: &Path, crun: bool, change: impl FnOnce(&mut AgentConfig)) -> TestBox {
        let bus = Bus::start();
        let dobby = dobby_double::serve(&bus.address, dobby_double::Dobby::new(crun))
            .await
            .unwrap();
        let mut config = config(&bus, root);
        change(&mut config);
        let agent = stb_agent::start(config).await.unwrap();
        TestBox {
            client: bus.connect().await,
            root: root.to_path_buf(),
            files: FileServer::start(),
            bus,
            _dobby: dobby,
            _agent: agent,
            _dir: None,
        }
    }

    pub async fn proxy(&self) -> BundleAgent1Proxy<'static> {
        BundleAgent1Proxy::new(&self.client).await.unwrap()
    }

    /// Serves a bundle of `app` with `payload` bytes; returns (url, sha256).
    pub fn serve(&self, name: &str, app: &str, payload: usize) -> (String, String) {
        let archive = bundle_archive(app, payload);
        let sha = sha256(&archive);
        (self.files.add(name, archive), sha)
    }
}

/// The real `stb-agent` binary with a configuration file; killed on drop.
pub struct AgentProcess {
    child: Child,
    config_file: PathBuf,
}

impl AgentProcess {
    pub fn start(config_file: &Path) -> AgentProcess {
        AgentProcess::spawn(config_file, "warn", Stdio::inherit())
    }

    /// Logging at info into `log` (what the journal would hold).
    pub fn start_logging_to(config_file: &Path, log: &Path) -> AgentProcess {
        let log = std::fs::File::create(log).unwrap();
        AgentProcess::spawn(config_file, "info", Stdio::from(log))
    }

    fn spawn(config_file: &Path, level: &str, stderr: Stdio) -> AgentProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_stb-agent"))
            .arg("--config")
            .arg(config_file)
            .env("STB_AGENT_LOG", level)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("stb-agent runs");
        AgentProcess {
            child,
            config_file: config_file.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a power cut would end it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    pub fn restart(&mut self) {
        self.kill();
        *self = AgentProcess::start(&self.config_file.clone());
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The developer token of [`developer_box`].
pub const TOKEN: &str = "s3cret-dev-token";

/// A box in developer mode (token [`TOKEN`]) listening on a free loopback
/// port, its storage in `dir`; its port.
pub async fn developer_box(
    dir: &Path,
    crun: bool,
    change: impl FnOnce(&mut stb_agent::config::AgentConfig),
) -> (TestBox, u16) {
    let token_file = dir.join("dev-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let setup = TestBox::start_at(&dir.join("dac"), crun, |c| {
        c.developer.enabled = true;
        c.developer.token_file = Some(token_file);
        c.developer.listen = ([127, 0, 0, 1], port).into();
        change(c);
    })
    .await;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return (setup, port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the developer endpoint did not come up");
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Starts the generator service in this process (embedded database,
/// `configure`d); returns its URL and admin token.
pub async fn service(
    data_dir: &Path,
    configure: impl FnOnce(&mut bundlegen_service::ServiceConfig),
) -> (String, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = bundlegen_service::ServiceConfig::embedded(data_dir, ([127, 0, 0, 1], port).into());
    config.bootstrap_token = Some(data_dir.join("admin.token"));
    configure(&mut config);
    tokio::spawn(async move {
        if let Err(e) = bundlegen_service::serve(config).await {
            panic!("the service stopped: {e}");
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http()
        .get(format!("{url}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "the service did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = std::fs::read_to_string(data_dir.join("admin.token")).unwrap();
    (url, admin.trim().to_string())
}

/// A new device token of the service for boxes of `platform`.
pub async fn device_token(url: &str, admin: &str, name: &str, platform: &str) -> String {
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{url}/v1/tokens"),
        admin,
        Some(serde_json::json!({"name": name, "role": "device", "platform": platform}).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// A call to the service: (status, JSON body).
pub async fn call(method: reqwest::Method, url: String, token: &str, body: Option<String>) -> (u16, serde_json::Value) {
    let mut request = http().request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}
