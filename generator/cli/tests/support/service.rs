//! Running `bundlegen serve` and `bundlegen worker` as real processes, and an
//! HTTP client for their API.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A `bundlegen serve` process; killed on drop.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT` (or https).
    pub url: String,
    pub admin: String,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
}

/// reqwest needs a crypto provider; ring is the workspace's.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// Waits for the line a server prints once it listens; returns its URL.
fn listening_url(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = sender.send(line);
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect("the server printed where it listens");
    line.split("listening on ")
        .nth(1)
        .expect("a listening line")
        .trim()
        .to_string()
}

impl Server {
    /// Starts `bundlegen serve` on a free loopback port with `data_dir`;
    /// an admin token is bootstrapped into `data_dir/admin.token`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--bootstrap-token".into(),
            data_dir.join("admin.token").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::spawn(data_dir, args)
    }

    fn spawn(data_dir: &Path, args: Vec<String>) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bundlegen"))
            .args(&args)
            .env("BUNDLEGEN_LOG", "bundlegen=info,warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bundlegen runs");
        let url = listening_url(&mut child);
        let admin = std::fs::read_to_string(data_dir.join("admin.token"))
            .unwrap_or_default()
            .trim()
            .to_string();
        Server {
            child,
            url,
            admin,
            data_dir: data_dir.to_path_buf(),
            args,
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same command again (after [`Server::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let mut args = self.args.clone();
        // The same port may still be in TIME_WAIT: take a new one.
        if let Some(at) = args.iter().position(|a| a == "--listen") {
            args[at + 1] = "127.0.0.1:0".into();
        }
        let fresh = Server::spawn(&self.data_dir, args);
        *self = fresh;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// `METHOD path` with `token`, after `with` adds a body or headers.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        with: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> reqwest::Response {
        with(client().request(method, self.url(path)).bearer_auth(token))
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, token, |r| r).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> reqwest::Response {
        self.send(reqwest::Method::DELETE, path, token, |r| r).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, token: &str, body: &impl serde::Serialize) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, token, |r| r.json(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put_json(&self, path: &str, token: &str, body: &impl serde::Serialize) -> reqwest::Response {
        self.send(reqwest::Method::PUT, path, token, |r| r.json(body)).await
    }

    /// `METHOD path` with `body` as it is (a template's text, a probe
    /// report), sent as JSON.
    pub async fn send_body(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.send(method, path, token, |r| {
            r.header(reqwest::header::CONTENT_TYPE, "application/json").body(body)
        })
        .await
    }

    /// A new token with `role`, made by the admin.
    /// A new token of `role` (not `device`: see [`Server::device_token`]).
    pub async fn token(&self, role: &str) -> String {
        self.new_token(json!({"name": format!("test {role}"), "role": role}))
            .await
    }

    /// A new device token of `platform`.
    pub async fn device_token(&self, platform: &str) -> String {
        self.new_token(json!({"name": format!("box of {platform}"), "role": "device", "platform": platform}))
            .await
    }

    async fn new_token(&self, body: Value) -> String {
        let response = self.post_json("/v1/tokens", &self.admin, &body).await;
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `bundlegen worker` process; killed on drop.
pub struct Worker {
    pub child: Child,
}

impl Worker {
    pub fn start(args: &[String]) -> Worker {
        let child = Command::new(env!("CARGO_BIN_EXE_bundlegen"))
            .arg("worker")
            .args(args)
            .env("BUNDLEGEN_LOG", "bundlegen=info,warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bundlegen runs");
        Worker { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls a job until it leaves queued/running; panics after `limit`.
pub async fn wait_for_job(server_url: &str, token: &str, job: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let job: Value = client()
            .get(format!("{server_url}/v1/jobs/{job}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let state = job["state"].as_str().unwrap_or_default().to_string();
        if state == "succeeded" || state == "failed" {
            return job;
        }
        assert!(Instant::now() < deadline, "job still {state}: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Throwaway scale-out backends for one test: a PostgreSQL database and a
/// RabbitMQ virtual host of their own (so tests do not see each other's
/// jobs). `BUNDLEGEN_TEST_POSTGRES` (a URL of the `postgres` database for a
/// role that may create databases) and `BUNDLEGEN_TEST_AMQP_HOST` override
/// the local defaults `tests/install-peers` sets up.
pub struct Backends {
    pub database: String,
    pub queue: String,
    vhost: String,
}

impl Backends {
    pub async fn create() -> Backends {
        let admin = std::env::var("BUNDLEGEN_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://bundlegen:bundlegen@127.0.0.1:5432/postgres".into());
        let name = format!("bg_test_{}_{}", std::process::id(), unique_suffix());
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL runs (tests/install-peers starts it)");
        tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let database = admin.rsplit_once('/').unwrap().0.to_string() + "/" + &name;
        let vhost = name.clone();
        for args in [
            vec!["add_vhost", &vhost],
            vec!["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"],
        ] {
            let status = Command::new("rabbitmqctl")
                .arg("-q")
                .args(&args)
                .status()
                .expect("rabbitmqctl (RabbitMQ runs; tests/install-peers starts it)");
            assert!(status.success(), "rabbitmqctl {args:?}");
        }
        let host = std::env::var("BUNDLEGEN_TEST_AMQP_HOST").unwrap_or_else(|_| "127.0.0.1:5672".into());
        Backends {
            database,
            queue: format!("amqp://guest:guest@{host}/{vhost}"),
            vhost,
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.vhost])
            .status();
    }
}

/// Unique among this process's calls (tests run on parallel threads,
/// which can read the same clock value) and unlikely to repeat across runs.
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{nanos:x}_{}", CALLS.fetch_add(1, Ordering::Relaxed))
}

/// An arm/v7 image whose bundle takes a few seconds to build: one layer of
/// incompressible data.
pub fn slow_image(dir: &Path, megabytes: usize) -> PathBuf {
    let mut data = vec![0u8; megabytes << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let layer = super::LayerBuilder::default()
        .dir("data", 0o755)
        .file("data/blob", &data, 0o644)
        .file(
            "appmetadata.json",
            br#"{"id": "com.example.slow", "type": "application/vnd.rdk-app.dac.native", "version": "1.0.0",
                "graphics": false, "network": {"type": "open"}, "storage": {}, "resources": {"ram": "64M"}}"#,
            0o644,
        )
        .tar();
    let layout_dir = dir.join("slow-image");
    let layout = super::LayoutBuilder::new(&layout_dir);
    let image = layout.image(
        &[(layer, super::Compress::Gzip)],
        "arm",
        Some("v7"),
        json!({"Cmd": ["/bin/app"]}),
    );
    layout.tag(image, "latest");
    layout_dir
}
